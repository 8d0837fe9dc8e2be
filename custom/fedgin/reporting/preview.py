"""``fedgin preview``: what an augmentation does to a slice, as the paper's Fig. 2: a PNG grid, one row per input
slice and method, the slice itself then ``views`` augmented views of it.

Inputs are slices as the network sees them in training (resampled, cropped, z-scored): from a prepared site
(``--data datalist.json``: the slice with the most foreground of a case), from a NIfTI volume (``--input``,
preprocessed as ``fedgin prepare`` does), or, by default, from a phantom CT and a phantom MRI case made on the fly.
Each view is one call of the method's training augmentation with its own seed, on a batch made of the slice and
its neighbours (frequency methods mix amplitude spectra within a batch); the first image of the output is shown.

Non-finite voxels (NaN, Inf): a NIfTI input is refused or repaired (``nonfinite``, ``fedgin.data.finite``); cached
slices of a prepared site are refused (the site must be prepared again). The PNG is written through a temporary
file and a rename, so an error never leaves a partial picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedgin.augment import build_augmentation
from fedgin.data.finite import NonFiniteError, nonfinite_summary
from fedgin.engine.methods import get_method
from fedgin.reporting.overlays import radiological

__all__ = ["Slice", "slices_from_datalist", "slices_from_nifti", "phantom_slices", "augmented_views", "preview_png"]

BATCH = 4  # slices per augmentation call: the chosen one and its neighbours


class Slice:
    """A chosen slice with neighbours: ``stack`` (K, H, W) float32, ``stack[0]`` the slice shown; ``title``."""

    def __init__(self, stack: np.ndarray, title: str) -> None:
        self.stack = np.ascontiguousarray(stack, dtype=np.float32)
        self.title = title


def _pick(volume: np.ndarray, label: np.ndarray | None, title: str) -> Slice:
    """(Z, H, W) volume → the slice with the most foreground (the middle one without labels) and neighbours."""
    z = int(np.argmax((label > 0).sum(axis=(1, 2)))) if label is not None and label.any() else volume.shape[0] // 2
    order = [z] + [i for i in sorted(range(volume.shape[0]), key=lambda i: abs(i - z)) if i != z][: BATCH - 1]
    return Slice(volume[order], f"{title}, slice {z}")


def slices_from_datalist(path: str | Path, case: str | None = None) -> Slice:
    """The foreground-richest slice of ``case`` (default: the first training case) of a prepared site."""
    dl = json.loads(Path(path).read_text())
    entries = [e for split in ("training", "validation", "test") for e in dl.get(split, [])]
    if not entries:
        raise ValueError(f"{path}: no cases")
    entry = next((e for e in entries if e["case_id"] == case), None) if case else entries[0]
    if entry is None:
        raise ValueError(f"{path}: no case {case!r}; cases: {[e['case_id'] for e in entries][:10]}")
    root = Path(path).parent
    image = np.asarray(np.load(root / entry["image"], mmap_mode="r"))
    label = np.load(root / entry["label"], mmap_mode="r")
    bad = nonfinite_summary(image)
    if bad:
        raise NonFiniteError(f"{root / entry['image']}: the cached slices of case {entry['case_id']} hold non-finite "
                             f"values: {bad}. Prepare the site again (fedgin prepare refuses or repairs them)")
    return _pick(image, np.asarray(label), f"{dl.get('site', '')} {entry['case_id']} ({entry['modality']})")


def slices_from_nifti(path: str | Path, spacing: float = 1.5, size: int = 256, nonfinite: str = "error") -> Slice:
    """The middle axial slice of a NIfTI volume, preprocessed as ``fedgin prepare`` does (``spacing`` in mm,
    ``size`` in pixels); ``nonfinite``: ``error`` refuses NaN/Inf voxels, ``repair`` replaces them
    (``fedgin.data.finite.finite_volume``). Stack: (min(4, Z), size, size) float32, Z the axial slices."""
    from fedgin.data.nifti import read_nifti_ras
    from fedgin.data.preprocess import preprocess_image, to_slices
    from fedgin.data.finite import finite_volume

    vol, _ = finite_volume(read_nifti_ras(path, dtype=np.float32), nonfinite)
    image, _ = preprocess_image(vol.data, vol.affine, spacing=spacing, size=size)
    return _pick(to_slices(image), None, Path(path).name)


def phantom_slices(size: int = 160, spacing: float = 2.5, seed: int = 0) -> list[Slice]:
    """One phantom CT and one phantom MRI slice through liver and spleen, made in memory (a few seconds)."""
    from fedgin.data.preprocess import preprocess_case, to_slices
    from fedgin.phantom.dataset import generate_case

    out = []
    for modality in ("ct", "mri"):
        case = generate_case(modality, seed, 0)
        masks = case.organ_masks()
        label = (masks["liver"] + 2 * masks["spleen"] * (masks["liver"] == 0)).astype(np.uint8)
        prep = preprocess_case(case.image, label, case.affine, spacing=spacing, size=size)
        seq = str(case.meta.get("sequence") or "")
        title = f"phantom {modality.upper()}" + (f" {seq}" if seq and seq.lower() != modality else "")
        out.append(_pick(to_slices(prep.image), to_slices(prep.label), title))
    return out


def augmented_views(s: Slice, method: str, views: int, seed: int = 0) -> list[np.ndarray]:
    """``views`` training augmentations of ``s`` by ``method`` (each with its own seed): (H, W) arrays."""
    aug = build_augmentation(get_method(method).augmentation)
    x = torch.from_numpy(s.stack)[:, None]  # (K, 1, H, W)
    out = []
    with torch.no_grad():
        for v in range(views):
            g = torch.Generator().manual_seed(seed + v)
            out.append(aug(x, generator=g)[0, 0].numpy())
    return out


def preview_png(slices: list[Slice], methods: list[str], views: int, output: str | Path, seed: int = 0) -> Path:
    """Write the grid: rows = slices × methods, columns = the slice, then ``views`` augmented views."""
    from fedgin.reporting.figures import pyplot, save_png

    plt = pyplot()

    rows = [(s, m) for s in slices for m in methods]
    fig, axes = plt.subplots(len(rows), views + 1, figsize=(2.1 * (views + 1), 2.3 * len(rows)), squeeze=False)
    for r, (s, method) in enumerate(rows):
        images = [s.stack[0]] + augmented_views(s, method, views, seed)
        for c, img in enumerate(images):
            ax = axes[r][c]
            lo, hi = np.percentile(img, [1, 99])
            ax.imshow(radiological(img), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("input" if c == 0 else f"view {c}", fontsize=9)
        axes[r][0].set_ylabel(f"{s.title}\n{method}", fontsize=8)
    return save_png(fig, output, dpi=90)
