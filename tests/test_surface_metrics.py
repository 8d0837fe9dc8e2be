"""HD95 and surface Dice (``fedgin.engine.surface``) against cases computed by hand, with anisotropic voxels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgin.engine.surface import surface_metrics

SPACING = (3.0, 0.8, 1.5)  # mm per axis (z, y, x): no two alike


def _box(shape, lo, hi):
    v = np.zeros(shape, np.uint8)
    v[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return v


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_box_grown_by_k_voxels_along_one_axis_is_k_spacings_away(axis):
    """The prediction is the ground-truth box grown by k voxels on both ends of one axis. Every point of the two
    grown faces (over 5 % of all boundary points) is k·spacing[axis] from the other surface and none is further,
    so HD95 = k·spacing[axis] exactly; with a tolerance just above that NSD = 1, just below it NSD < 1."""
    shape, k = (24, 40, 32), 2
    lo, hi = [6, 10, 8], [18, 30, 24]
    truth = _box(shape, lo, hi)
    glo, ghi = list(lo), list(hi)
    glo[axis] -= k
    ghi[axis] += k
    pred = _box(shape, glo, ghi)
    d = k * SPACING[axis]
    (m,) = surface_metrics(pred, truth, 1, SPACING, tolerance_mm=d + 1e-3)
    assert m["hd95_mm"] == pytest.approx(d, abs=1e-4)
    assert m["nsd"] == pytest.approx(1.0)
    (tight,) = surface_metrics(pred, truth, 1, SPACING, tolerance_mm=d - 1e-3)
    assert 0.0 < tight["nsd"] < 1.0
    (same,) = surface_metrics(truth, truth, 1, SPACING)
    assert same == {"hd95_mm": 0.0, "nsd": 1.0}


def test_missing_surfaces_follow_the_stated_rules():
    shape = (8, 10, 12)
    truth = _box(shape, [2, 2, 2], [5, 6, 7])
    empty = np.zeros(shape, np.uint8)
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, SPACING)))
    assert surface_metrics(empty, truth, 1, SPACING) == [{"hd95_mm": pytest.approx(diagonal), "nsd": 0.0}]
    assert surface_metrics(truth, empty, 1, SPACING) == [{"hd95_mm": None, "nsd": None}]  # undefined, like Dice
    assert surface_metrics(empty, empty, 1, SPACING) == [{"hd95_mm": None, "nsd": None}]
    # several classes: each on its own
    two = truth.copy()
    two[6:8, 7:9, 8:10] = 2
    per_class = surface_metrics(two, two, 2, SPACING)
    assert [c["hd95_mm"] for c in per_class] == [0.0, 0.0]
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(truth, truth, 1, (1.0, 1.0))


def test_evaluation_reports_boundary_metrics_per_case_and_class(toy_sites):
    from fedgin.engine import Engine, SliceSet, TrainConfig

    data = SliceSet([toy_sites["site-ct"]], "validation")
    cfg = TrainConfig.from_dict({"model": {"channels": [8, 16], "strides": [2], "num_res_units": 0}})
    engine = Engine(data.classes, cfg, device="cpu")
    plain = engine.evaluate(data)
    assert "hd95_mm" not in plain["cases"][0]  # opt-in: validation in every round stays as fast as before
    res = engine.evaluate(data, surface=True, tolerance_mm=4.0)
    case = res["cases"][0]
    assert set(case["hd95_mm"]) == set(case["nsd"]) == set(data.classes) and case["nsd_tolerance_mm"] == 4.0
    for name in data.classes:
        hd, nsd = case["hd95_mm"][name], case["nsd"][name]
        assert hd is None or hd >= 0.0
        assert nsd is None or 0.0 <= nsd <= 1.0
        block = res["summary"]["per_class"][name]
        assert "hd95_mm" in block and "nsd" in block


def test_the_bounding_box_crop_changes_no_distance():
    """surface_metrics crops each class to the bounding box of prediction ∪ truth (plus one voxel): its values
    equal MONAI's on the whole volume, also for masks touching the volume's border."""
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(3)
    shape = (20, 36, 30)
    zz, yy, xx = np.indices(shape)
    truth = (((zz - 9) / 6) ** 2 + ((yy - 14) / 9) ** 2 + ((xx - 12) / 8) ** 2 <= 1).astype(np.uint8)
    pred = (((zz - 11) / 6) ** 2 + ((yy - 18) / 10) ** 2 + ((xx - 10) / 9) ** 2 <= 1).astype(np.uint8)
    pred[:, :, :2] = rng.random((shape[0], shape[1], 2)) < 0.3  # specks at the border
    (m,) = surface_metrics(pred, truth, 1, SPACING, tolerance_mm=2.0)
    one_hot = [torch.from_numpy(np.stack([v == 0, v == 1])[None].astype(np.float32)) for v in (pred, truth)]
    import warnings

    with warnings.catch_warnings():  # MONAI 1.6 warns about an argument its own helpers pass
        warnings.simplefilter("ignore", FutureWarning)
        hd = float(compute_hausdorff_distance(*one_hot, percentile=95, spacing=list(SPACING)).reshape(-1)[0])
        nsd = float(compute_surface_dice(*one_hot, class_thresholds=[2.0], spacing=list(SPACING)).reshape(-1)[0])
    assert m["hd95_mm"] == pytest.approx(hd, rel=1e-6) and m["nsd"] == pytest.approx(nsd, rel=1e-6)
    assert 0 < m["nsd"] < 1 and m["hd95_mm"] > 0
