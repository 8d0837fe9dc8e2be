"""The Executor's adapter logic without a FLARE runtime: where a site finds its data, and what it replies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("nvflare")

from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable  # noqa: E402
from nvflare.apis.fl_constant import ReturnCode  # noqa: E402
from nvflare.apis.signal import Signal  # noqa: E402
from nvflare.app_common.app_constant import AppConstants  # noqa: E402

from fedgin.engine import Engine, NonFiniteLossError, TrainConfig  # noqa: E402
from fedgin.flare.executor import SITE_CONFIG_FILE, FedGINExecutor  # noqa: E402

SMALL = {"model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}, "batch_size": 4}


class FakeContext:
    """The parts of FLContext the Executor reads."""

    def __init__(self, site: str, local_dir):
        self.site, self.local_dir = site, str(local_dir)

    def get_identity_name(self):
        return self.site

    def get_engine(self):
        ws = SimpleNamespace(get_site_config_dir=lambda: self.local_dir)
        return SimpleNamespace(get_workspace=lambda: ws, get_component=lambda _id: None)

    def get_job_id(self):
        return "job"


def _executor(**kw):
    ex = FedGINExecutor(classes=["disc", "square"], train={**SMALL, "method": "gin"}, analytic_sender_id="", **kw)
    ex.log_info = ex.log_error = ex.log_exception = lambda *a, **k: None
    return ex


def test_site_finds_data_by_name_site_config_first(toy_sites, tmp_path, monkeypatch):
    data_root = toy_sites["site-ct"].parents[1]
    local = tmp_path / "local"
    local.mkdir()
    monkeypatch.delenv("FEDGIN_DATA_ROOT", raising=False)
    ex = _executor(data_root=str(data_root))
    assert ex.resolve_datalist(FakeContext("site-mri", local)) == toy_sites["site-mri"]
    (local / SITE_CONFIG_FILE).write_text(json.dumps({"datalist": str(toy_sites["site-ct"])}))
    assert ex.resolve_datalist(FakeContext("site-mri", local)) == toy_sites["site-ct"]
    (local / SITE_CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=SITE_CONFIG_FILE):
        ex.resolve_datalist(FakeContext("site-mri", local))
    (local / SITE_CONFIG_FILE).unlink()
    monkeypatch.setenv("FEDGIN_DATA_ROOT", str(data_root))
    assert _executor().resolve_datalist(FakeContext("site-ct", local)) == toy_sites["site-ct"]
    monkeypatch.delenv("FEDGIN_DATA_ROOT")
    with pytest.raises(ValueError, match="FEDGIN_DATA_ROOT"):
        _executor().resolve_datalist(FakeContext("site-ct", local))


def test_site_without_data_refuses_every_task(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDGIN_DATA_ROOT", raising=False)
    ex = _executor(data_root=str(tmp_path / "nowhere"))
    ctx = FakeContext("site-ct", tmp_path)
    ex._start(ctx)
    assert ex.site is None and "datalist not found" in ex.init_error
    reply = ex.execute(AppConstants.TASK_TRAIN, DXO(DataKind.WEIGHTS, {}).to_shareable(), ctx, Signal())
    assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION


def test_train_reply_holds_weight_diff_and_sample_count(toy_sites, tmp_path):
    ex = _executor(data_root=str(toy_sites["site-ct"].parents[1]), local_steps=2)
    ctx = FakeContext("site-ct", tmp_path)
    ex._start(ctx)
    start = Engine(["disc", "square"], TrainConfig.from_dict(SMALL), device="cpu").get_weights()
    task = DXO(DataKind.WEIGHTS, start).to_shareable()
    task.set_header(AppConstants.CURRENT_ROUND, 0)
    dxo = from_shareable(ex.execute(AppConstants.TASK_TRAIN, task, ctx, Signal()))
    assert dxo.data_kind == DataKind.WEIGHT_DIFF
    assert dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND) == 18  # 3 training cases × 6 slices
    assert 0.0 <= dxo.get_meta_prop(MetaKey.INITIAL_METRICS) <= 1.0
    assert set(dxo.data) == set(start) and any(np.abs(v).max() > 0 for v in dxo.data.values())
    # cross-site validation of another model leaves the local model in place for submit_model
    local = ex.site.engine.get_weights()
    val = from_shareable(ex.execute(AppConstants.TASK_VALIDATION, DXO(DataKind.WEIGHTS, start).to_shareable(), ctx,
                                    Signal()))
    assert "val_dice" in val.data and "val_dice_disc" in val.data
    sub = from_shareable(ex.execute(AppConstants.TASK_SUBMIT_MODEL, DXO(DataKind.WEIGHTS, {}).to_shareable(), ctx,
                                    Signal()))
    for k in local:
        np.testing.assert_array_equal(sub.data[k], local[k])


def test_abort_and_non_finite_loss_send_no_weights(toy_sites, tmp_path, monkeypatch):
    ex = _executor(data_root=str(toy_sites["site-ct"].parents[1]))
    ctx = FakeContext("site-ct", tmp_path)
    ex._start(ctx)
    task = DXO(DataKind.WEIGHTS, ex.site.engine.get_weights()).to_shareable()
    signal = Signal()
    signal.trigger("stop")
    assert ex.execute(AppConstants.TASK_TRAIN, task, ctx, signal).get_return_code() == ReturnCode.TASK_ABORTED

    def explode(*a, **k):
        raise NonFiniteLossError("training loss is nan")

    monkeypatch.setattr(ex.site, "train_round", explode)
    reply = ex.execute(AppConstants.TASK_TRAIN, task, ctx, Signal())
    assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION
    with pytest.raises(Exception):
        from_shareable(reply)
