"""Federated statistics (``fedgin stats``): the site's sums and counts, then NVFlare's FedStats in the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgin.data.site_stats import Moments, body_mask, otsu_threshold, site_stats

CLASSES = ["disc", "square"]


def test_otsu_separates_air_from_tissue():
    rng = np.random.default_rng(0)
    air, tissue = rng.normal(-1000, 20, 5000), rng.normal(40, 30, 3000)
    t = otsu_threshold(np.concatenate([air, tissue]))
    assert -900 < t < -100
    volume = np.concatenate([air, tissue]).reshape(80, 100)
    assert body_mask(volume).sum() == pytest.approx(3000, abs=5)
    assert not body_mask(np.full((4, 4), np.nan)).any()


def test_moments_give_the_global_variance_of_pooled_sites():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 500), rng.normal(3, 2, 700)
    ma, mb = Moments(), Moments()
    for x in np.array_split(a, 3):
        ma.add(x)
    mb.add(b)
    pooled = np.concatenate([a, b])
    mean, n = pooled.mean(), pooled.size
    assert ma.mean == pytest.approx(a.mean()) and ma.stddev == pytest.approx(a.std(ddof=1))
    assert ma.variance_about(mean, n) + mb.variance_about(mean, n) == pytest.approx(pooled.var(ddof=1))
    assert (ma.low, ma.high) == (a.min(), a.max())


def test_site_stats_count_the_body_and_the_organ_fractions(toy_sites):
    from fedgin.data.datalist import DatalistError

    dl = json.loads(toy_sites["site-ct"].read_text())
    st = site_stats(toy_sites["site-ct"], raw=False)
    assert st.features() == {"intensity": ["normalised"], "organs": CLASSES}
    body = inside = 0
    hits = np.zeros(2)
    for entry in dl["training"] + dl["validation"]:
        img = np.load(toy_sites["site-ct"].parent / entry["image"])
        lbl = np.load(toy_sites["site-ct"].parent / entry["label"])
        mask = body_mask(img)
        body += mask.sum()
        inside += lbl[mask].size
        hits += [(lbl[mask] == k).sum() for k in (1, 2)]
    assert st.moments[("intensity", "normalised")].count == body
    for k, name in enumerate(CLASSES):
        assert st.moments[("organs", name)].mean == pytest.approx(hits[k] / inside)
        assert 0 < st.moments[("organs", name)].mean < 1
    counts, edges = st.histogram("intensity", "normalised", 20, -1.0, 1.0)
    assert counts.sum() == body and len(edges) == 21  # out-of-range voxels land in the end bins
    counts, _ = st.histogram("organs", "disc", 2, 0.0, 1.0)
    assert counts.tolist() == [inside - hits[0], hits[0]]
    with pytest.raises(DatalistError, match="names no source_image"):
        site_stats(toy_sites["site-ct"], raw=True)
    with pytest.raises(DatalistError, match="no case in the splits"):
        site_stats(toy_sites["site-ct"], splits=("nosuchsplit",))


@pytest.mark.slow
def test_fedgin_stats_runs_nvflare_fedstats_and_draws_the_sites(tmp_path, capsys):
    """Two prepared phantom sites (CT, MRI): per-site and global counts, means and histograms of the source and
    normalised intensities inside the body and the organ fractions come back from NVFlare's FedStats; the counts
    are each site's own (the cleansers noise only the histogram range); the raw CT/MRI shift shows, the
    normalisation removes most of it; the picture is drawn."""
    from fedgin.cli.main import main
    from fedgin.data import prepare_site
    from fedgin.phantom import generate_dataset

    grid = dict(spacing=8.0, size=48, organs=["liver", "spleen"], progress=False)
    for site, modality in (("site-ct", "ct"), ("site-mri", "mri")):
        generate_dataset(tmp_path / "raw" / modality, modality, 3, seed=1, progress=False)
        prepare_site(layout="totalseg", input_dir=tmp_path / "raw" / modality, output_dir=tmp_path / "data" / site,
                     site=site, modality=modality, **grid)
    out = tmp_path / "stats"
    assert main(["stats", "--data-root", str(tmp_path / "data"), "--output", str(out), "--bins", "30"]) == 0
    stats = json.loads((out / "site_statistics.json").read_text())
    assert set(stats) == {"raw", "normalised", "liver", "spleen"}
    assert all(set(stats[f]) <= {"count", "sum", "mean", "stddev", "histogram"} for f in stats)
    for site in ("site-ct", "site-mri"):
        local = site_stats(tmp_path / "data" / site / "datalist.json")
        for f in ("raw", "normalised"):
            n = local.moments[("intensity", f)].count
            assert stats[f]["count"][site]["intensity"] == n
            hist = stats[f]["histogram"][site]["intensity"]
            assert len(hist) == 30 and sum(b[2] for b in hist) == n
        assert stats["liver"]["mean"][site]["organs"] == pytest.approx(local.moments[("organs", "liver")].mean,
                                                                      abs=1e-4)
    # one histogram range per feature: the normalised one is not stretched over the raw intensities
    assert stats["normalised"]["histogram"]["site-ct"]["intensity"][-1][1] < 50
    assert stats["raw"]["count"]["Global"]["intensity"] == sum(stats["raw"]["count"][s]["intensity"]
                                                               for s in ("site-ct", "site-mri"))
    mean = {f: {s: stats[f]["mean"][s]["intensity"] for s in ("site-ct", "site-mri")} for f in ("raw", "normalised")}
    assert abs(mean["raw"]["site-ct"] - mean["raw"]["site-mri"]) > 5 * abs(mean["normalised"]["site-ct"] -
                                                                           mean["normalised"]["site-mri"])
    png = out / "site_statistics.png"
    assert png.stat().st_size > 20_000
    text = capsys.readouterr().out
    assert "| site-ct | raw |" in text and "liver % of body" in text and "removed" not in text
