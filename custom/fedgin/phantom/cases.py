"""What the abdominal and the whole-heart phantom do the same way for every case, after their own anatomy and
before their own renderer: seeded random streams, parameter overrides, the written voxel order, the geometry draw
(anatomy -> scan grid -> fine tissue labels, redrawn until every class is present) and the common meta.csv fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .anatomy import Anatomy
from .grid import Grid, orientation_affine, plan_grid

__all__ = ["GeneratedCase", "case_rng", "meta_number", "apply_overrides", "written_orientation", "sample_geometry", "grid_meta"]

#: geometry attempts before a case whose anatomy leaves a class empty is an error (never observed)
ATTEMPTS = 5


@dataclass(kw_only=True)
class GeneratedCase:
    """What every generated phantom case holds, in memory (the abdominal and heart cases add their own fields).

    image: RAS voxel order (nx, ny, nz); int16 HU (CT) or uint16 arbitrary units (MRI).
    tissues: uint8 (nx, ny, nz) tissue codes at the slice centres.
    affine: 4x4 RAS voxel -> RAS world (mm). orientation: voxel order used when writing ("RAS" | "LPS").
    params: the sampled acquisition parameters. meta: the case's meta.csv row (without split).
    """

    case_id: str
    modality: str
    image: np.ndarray
    tissues: np.ndarray
    affine: np.ndarray
    orientation: str
    grid: Grid
    params: Any
    anatomy: Anatomy = field(repr=False)
    meta: dict[str, object] = field(default_factory=dict)

    def written_affine(self) -> np.ndarray:
        """The affine of the case's written voxel order."""
        return orientation_affine(self.affine, self.image.shape, self.orientation)


def case_rng(seed: int, modality_code: int, index: int, *key: int, stream: int | None = None) -> np.random.Generator:
    """The random stream of one purpose (``key``) of case ``index``: ``SeedSequence(entropy=[seed, modality_code,
    index(, stream)], spawn_key=key)``; ``stream`` keeps one phantom's cases apart from another's."""
    entropy = [int(seed), int(modality_code), int(index)] + ([int(stream)] if stream is not None else [])
    return np.random.default_rng(np.random.SeedSequence(entropy=entropy, spawn_key=tuple(key)))


def meta_number(x: Any, nd: int = 2) -> str:
    """A meta.csv number: a float to ``nd`` decimals without trailing zeros, anything else as ``str``."""
    return f"{x:.{nd}f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def apply_overrides(params: Any, overrides: dict[str, object] | None) -> None:
    """Set the sampled acquisition ``params`` fields named in ``overrides`` (tests, experiments); an unknown name
    is a ``ValueError``."""
    for k, v in (overrides or {}).items():
        if not hasattr(params, k):
            raise ValueError(f"unknown {type(params).__name__} field {k!r}")
        setattr(params, k, v)


def written_orientation(start_rng: np.random.Generator, index: int) -> str:
    """``RAS`` or ``LPS``, alternating from case to case from a seeded start (``start_rng``: the same for every
    case of a dataset), so that any two consecutive cases cover both voxel orders."""
    return ("RAS", "LPS")[(int(index) + int(start_rng.integers(2))) % 2]


def sample_geometry(anatomy_rng: Callable[[int], np.random.Generator], grid_rng: Callable[[int], np.random.Generator],
                    sample_anatomy: Callable[[np.random.Generator], Anatomy], build_labels: Callable[..., np.ndarray],
                    inplane: tuple[float, float], slices: tuple[float, ...],
                    complete: Callable[[np.ndarray], bool], what: str) -> tuple[Anatomy, Grid, np.ndarray, np.ndarray]:
    """Draw an anatomy and its scan grid, and label the tissues, until ``complete(tissues)`` (every class present).

    Args:
        anatomy_rng, grid_rng: attempt number -> the random stream of that attempt's anatomy / grid.
        build_labels: ``(anatomy, patient_axes) -> fine`` uint8 tissue codes on the grid's sub-sampled z axis.
        inplane, slices: the ranges of in-plane spacing and slice thickness (mm) the grid is drawn from.

    Returns:
        (anatomy, grid, fine tissue codes (nx, ny, nz * sub), tissue codes at the slice centres (nx, ny, nz)).
    """
    for attempt in range(ATTEMPTS):
        anat = sample_anatomy(anatomy_rng(attempt))
        grid = plan_grid(grid_rng(attempt), anat.x_range, anat.y_range, anat.z_range, inplane, slices)
        fine = build_labels(anat, grid.patient_axes())
        tissues = np.ascontiguousarray(fine[:, :, grid.sub // 2::grid.sub])
        if complete(tissues):
            return anat, grid, fine, tissues
    raise RuntimeError(f"{what}: a class stayed empty after {ATTEMPTS} attempts")  # pragma: no cover - never seen


def grid_meta(case_id: str, modality: str, grid: Grid, anat: Anatomy, orientation: str, seed: int,
              generator: str) -> dict[str, object]:
    """The meta.csv fields every phantom case has: id, modality, voxel size and shape, written voxel order, body
    scale, seed and generator."""
    return {"image_id": case_id, "modality": modality, "spacing": "x".join(meta_number(s, 3) for s in grid.spacing),
            "slice_thickness": meta_number(grid.spacing[2]), "shape": "x".join(str(n) for n in grid.shape),
            "orientation": orientation, "body_scale": meta_number(anat.scale, 3), "seed": int(seed),
            "generator": generator}
