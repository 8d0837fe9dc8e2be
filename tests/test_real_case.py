"""Geometry sanity check on the real TotalSegmentator CT case: prepare → train (liver) → evaluate ≥ 0.9 Dice.

A model overfitted to one case scores high on that case only if orientation, spacing and the slice-to-volume
stacking are right. Skips when ../shared is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SHARED_CT

pytestmark = pytest.mark.slow


def _fedgin(*args: str) -> str:
    # one thread: the float reduction order, and so the trained model, is the same on every machine and xdist layout
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "fedgin", *args], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.skipif(not SHARED_CT.is_dir(), reason="../shared/data/totalseg-ct-example is absent")
def test_real_ct_liver_overfits_to_high_dice(tmp_path):
    data = tmp_path / "site-ct"
    _fedgin("prepare", "--layout", "totalseg", "--input", str(SHARED_CT), "--output", str(data), "--site", "site-ct",
            "--modality", "ct", "--organs", "liver", "--spacing", "3.0", "--size", "128")
    # a geometry check, not a loss comparison: MONAI's unweighted loss, with which 250 steps reach 0.98 on one thread
    # (150 steps reached only 0.87 there: too close to the bar; a flipped or mis-stacked volume scores near 0)
    (tmp_path / "train.json").write_text(json.dumps({"loss_variant": "monai"}))
    _fedgin("train", "--data", str(data / "datalist.json"), "--method", "none", "--steps", "250", "--lr", "2e-3",
            "--channels", "16,32,64,128", "--output", str(tmp_path / "run"), "--config", str(tmp_path / "train.json"))
    _fedgin("evaluate", "--model", str(tmp_path / "run" / "model.pt"), "--data", str(data / "datalist.json"),
            "--split", "training", "--output", str(tmp_path / "dice.json"))
    res = json.loads((tmp_path / "dice.json").read_text())
    assert [c["case"] for c in res["cases"]] == ["s0001"]
    assert res["mean_dice"] >= 0.9, res["mean_dice"]
