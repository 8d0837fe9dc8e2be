"""Shared fixtures: tiny slice caches written directly in the datalist contract (no prepare; the source label
map is the cached label on the same grid); each
pytest-xdist worker's share of the cores; the slowest tests first, so that parallel workers end together."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # every worker (and the simulator, POC and CLI processes it starts) gets its share of the cores: without it
    # each process starts one OpenMP thread per core and the oversubscribed threads run ~10x slower
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

REPO = Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "totalseg-ct-example"


def write_toy_site(root: Path, site: str, modality: str, classes: list[str], cases: dict[str, int],
                   size: int = 32, slices: int = 6, seed: int = 0) -> Path:
    """A site whose cases hold bright discs (class 1) and squares (class 2) on noise.

    Args:
        cases: split → number of cases.
    Returns:
        the datalist.json path.
    """
    rng = np.random.default_rng(seed)
    out = root / site
    (out / "cases").mkdir(parents=True, exist_ok=True)
    dl = {"format": "fedgin-slices/1", "site": site, "modality": modality, "layout": "toy", "source": "toy",
          "labels": {"0": "background", **{str(i + 1): c for i, c in enumerate(classes)}},
          "spacing_mm": [4.0, 4.0], "size_px": [size, size], "normalization": "toy", "seed": seed,
          "training": [], "validation": [], "test": []}
    yy, xx = np.mgrid[:size, :size]
    for split, n in cases.items():
        for i in range(n):
            cid = f"{modality}{split[:2]}{i:02d}"
            img = rng.normal(0, 0.3, (slices, size, size)).astype(np.float32)
            lbl = np.zeros((slices, size, size), np.uint8)
            for z in range(slices):
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                r = rng.integers(size // 8, size // 5)
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
                lbl[z][disc] = 1
                if len(classes) > 1:
                    sq = (abs(yy - (size - cy)) < r // 2 + 1) & (abs(xx - (size - cx)) < r // 2 + 1) & ~disc
                    lbl[z][sq] = 2
                sign = 1.0 if modality == "ct" else -1.0
                img[z] += sign * (lbl[z] > 0) * 2.0
            np.save(out / "cases" / f"{cid}_image.npy", img)
            np.save(out / "cases" / f"{cid}_label.npy", lbl)
            # the "source volume" is the cached grid itself: (X, Y, Z) RAS, 4 mm voxels
            nib.save(nib.Nifti1Image(np.moveaxis(lbl, 0, 2).copy(), np.diag([4.0, 4, 4, 1])),
                     out / "cases" / f"{cid}_source_label.nii.gz")
            dl[split].append({"case_id": cid, "modality": modality, "image": f"cases/{cid}_image.npy",
                              "label": f"cases/{cid}_label.npy", "source_label": f"cases/{cid}_source_label.nii.gz",
                              "num_slices": slices,
                              "spacing_mm": [4.0, 4.0, 4.0], "affine": np.diag([4.0, 4, 4, 1]).tolist()})
    path = out / "datalist.json"
    path.write_text(json.dumps(dl))
    return path


@pytest.fixture
def toy_sites(tmp_path):
    """Two toy sites (ct, mri) with two classes; returns {site: datalist path}."""
    classes = ["disc", "square"]
    return {
        "site-ct": write_toy_site(tmp_path / "data", "site-ct", "ct", classes, {"training": 3, "validation": 1, "test": 1}),
        "site-mri": write_toy_site(tmp_path / "data", "site-mri", "mri", classes,
                                   {"training": 2, "validation": 1, "test": 1}, seed=1),
    }


#: tests that run longest (seconds on 2 cores), started first so that no worker is left running one at the end
_FIRST = ("test_multihost.py::test_production_rehearsal", "test_poc.py::test_poc_federation", "test_experiments.py::", "test_compare.py::test_compare_writes",
          "test_faults.py::", "test_simulator.py::")


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        hit = [i for i, key in enumerate(_FIRST) if key in item.nodeid]
        return hit[0] if hit else len(_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: the order within a rank is the collection order
