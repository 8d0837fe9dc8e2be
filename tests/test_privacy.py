"""The privacy filter switch (NVFlare's own filters) and the server's checks of updates."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("nvflare")

from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402

from conftest import write_toy_site  # noqa: E402
from fedgin.flare.aggregator import update_problems  # noqa: E402
from fedgin.flare.job import build_job, make_recipe  # noqa: E402
from fedgin.flare.privacy import PrivacyFilter, check_privacy, excluded_pattern  # noqa: E402


def _update(kind=DataKind.WEIGHT_DIFF, n=8):
    rng = np.random.default_rng(0)
    data = {"enc.conv.weight": rng.normal(0, 0.01, (4, 1, 3, 3)).astype(np.float32),
            "enc.bn.weight": rng.normal(0, 0.01, 4).astype(np.float32),
            "head.weight": rng.normal(0, 0.01, (2, 4, 1, 1)).astype(np.float32)}
    return DXO(kind, data, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: n})


def test_privacy_values_are_checked():
    assert check_privacy(None) == ("none", {})
    assert check_privacy({"filter": "percentile", "percentile": 20, "gamma": 0.01})[0] == "percentile"
    with pytest.raises(ValueError, match="unknown"):
        check_privacy({"filter": "blur"})
    with pytest.raises(ValueError, match="exclude_vars"):
        check_privacy({"filter": "exclude"})
    with pytest.raises(ValueError, match="without a filter"):
        check_privacy({"percentile": 10})
    with pytest.raises(ValueError, match="unknown"):  # build_job refuses it before anything is written
        build_job("/nonexistent/job", {"privacy": {"filter": "blur"}})


def test_percentile_filter_sends_only_large_clipped_changes_and_leaves_submitted_models_alone():
    f = PrivacyFilter({"filter": "percentile", "percentile": 50, "gamma": 0.005})
    dxo = _update()
    out = from_shareable(f.process(dxo.to_shareable(), FLContext())).data
    for k, v in dxo.data.items():
        assert out[k].shape == v.shape
        # NVFlare clips Δθ / NUM_STEPS_CURRENT_ROUND (FedGIN: N_k = 8 here) to ±gamma
        assert np.abs(out[k]).max() <= 0.005 * 8 + 1e-7
    sent = np.concatenate([out[k].ravel() for k in out])
    assert 0.3 < np.mean(sent == 0) < 0.7  # about half the entries (those below the median |Δ|) are zeroed
    weights = _update(DataKind.WEIGHTS)  # cross-site evaluation's submit_model: untouched
    same = from_shareable(f.process(weights.to_shareable(), FLContext())).data
    assert all(np.array_equal(same[k], weights.data[k]) for k in weights.data)


def test_exclude_filter_keeps_layers_home_and_the_server_accepts_updates_without_them():
    privacy = {"filter": "exclude", "exclude_vars": r"\.bn\."}
    out = from_shareable(PrivacyFilter(privacy).process(_update().to_shareable(), FLContext()))
    assert set(out.data) == {"enc.conv.weight", "head.weight"}
    global_weights = {k: np.zeros_like(v) for k, v in _update().data.items()}
    optional = {k for k in global_weights if excluded_pattern(privacy).search(k)}
    assert update_problems(out, global_weights, optional) == []
    assert "missing" in update_problems(out, global_weights)[0]  # without the privacy setting it is refused


def test_update_problems_names_each_fault():
    g = {k: np.zeros_like(v) for k, v in _update().data.items()}
    assert update_problems(_update(), g) == []
    bad = _update()
    bad.data["enc.conv.weight"][0, 0, 0, 0] = np.nan
    assert re.search(r"non-finite.*enc\.conv\.weight \(1 NaN, 0 Inf\)", update_problems(bad, g)[0])
    assert "positive integer" in update_problems(_update(n=0), g)[0]
    assert "exceeds max_num_samples" in update_problems(_update(n=1000), g, max_num_samples=500)[0]
    assert "data kind" in update_problems(_update(DataKind.WEIGHTS), g)[0]


@pytest.mark.slow
def test_excluded_layers_never_leave_a_site_in_the_simulator(tmp_path):
    from fedgin.flare.simulate import run_simulator

    for i, (site, modality) in enumerate({"site-ct": "ct", "site-mri": "mri"}.items()):
        write_toy_site(tmp_path / "data", site, modality, ["disc"], {"training": 2, "validation": 1}, seed=i)
    privacy = {"filter": "exclude", "exclude_vars": r"^model\.2\."}  # the output block stays at each site
    job = make_recipe({"classes": ["disc"], "channels": [8, 16, 32], "strides": [2, 2], "local_steps": 2,
                       "size_px": [32, 32], "num_rounds": 2, "data_root": str(tmp_path / "data"),
                       "privacy": privacy})
    res = run_simulator(job, tmp_path / "ws", ["site-ct", "site-mri"], echo=None, timeout=600)
    log = (res["workspace"] / "server" / "log.txt").read_text()
    assert log.count("ACCEPTED by the aggregator") == 4 and "REJECTED" not in log
    for site in ("site-ct", "site-mri"):
        records = [json.loads(x) for x in
                   (res["workspace"] / site / "simulate_job" / "outgoing_audit.jsonl").read_text().splitlines()]
        train = [r for r in records if r["task"] == "train"]
        assert len(train) == 2
        for r in train:
            assert r["arrays"] and not any(k.startswith("model.2.") for k in r["arrays"])
    assert res["global_model"].is_file()
