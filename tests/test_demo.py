"""The main job end to end at a tiny size: FedGIN in NVFlare's SimEnv, the Dice table and the two pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nvflare")


@pytest.mark.slow
def test_demo_ends_with_its_table_and_two_pictures(tmp_path, capsys):
    from PIL import Image

    from fedgin.data.nifti import read_nifti_ras
    from fedgin.experiments.demo import run_demo
    from fedgin.reporting.curves import read_scalars
    from fedgin.reporting.run_figures import SITE_DICE_TAG

    out = run_demo(tmp_path, rounds=2, cases=4, organs=["liver", "spleen"], spacing=8.0, size=48,
                   channels=[8, 16, 32], threads=2)
    printed = capsys.readouterr().out
    assert "3D Dice per organ" in printed and "dice_per_round_gin.png" in printed and "cases_gin.png" in printed
    pictures = out["pictures"]
    for key in ("dice_per_round", "cases"):
        with Image.open(pictures[key]) as im:
            assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 5  # a picture, not a blank canvas
    # what the Dice picture draws: two rounds per site, from the sites' own streamed values
    tb = tmp_path / "workspace_gin" / "fedgin_gin" / "server" / "simulate_job" / "tb_events"
    for site in ("site-ct", "site-mri"):
        steps, values = read_scalars(tb / site)[SITE_DICE_TAG]
        assert len(steps) == 2 and np.all((values >= 0) & (values <= 1))
    # the label maps the case picture shows are on each scan's own grid
    for seg in (tmp_path / "predictions_gin").glob("*_seg.nii.gz"):
        case = seg.name.split("_seg")[0]
        modality = "ct" if case.startswith("ct") else "mri"
        image = next((tmp_path / "phantom" / modality / case).glob("*.nii.gz"))
        assert read_nifti_ras(seg).data.shape == read_nifti_ras(image).data.shape
    assert len(list((tmp_path / "predictions_gin").glob("*_seg.nii.gz"))) == 2
    saved = json.loads((tmp_path / "results_gin.json").read_text())
    assert saved["pictures"] == {k: str(v) for k, v in pictures.items()}
