"""What a site's data looks like, in sums and counts only: the inputs of federated statistics (``fedgin stats``).

Per prepared site (its ``datalist.json``), over the cases of the chosen splits:

- dataset ``intensity``, feature ``raw``: intensities of each case's source scan (HU for CT, scanner units for MRI)
  inside the body; feature ``normalised``: the cached, normalised slices the network trains on, inside the body (two
  features, not two datasets: NVFlare fixes one histogram range per feature name);
- dataset ``organs``, one feature per class: the fraction of the body's voxels (cached grid) that carry it, as a mean of 0/1
  indicators over the body voxels (count = body voxels, sum = organ voxels).

"Inside the body" is each volume's Otsu threshold (the level that best splits its intensity histogram into two
classes: air or background against tissue), computed on that volume alone (``body_mask``): CT air and MRI's
dark background and the in-plane padding of the cache fall below it. A histogram is an array of counts over bins
the server fixes for every site; nothing else about a voxel leaves the site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["body_mask", "otsu_threshold", "Moments", "SiteStats", "site_stats", "DATASETS"]

DATASETS = ("intensity", "organs")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape, finite): the bin edge maximising the between-class variance (the
    middle of the empty bins between two separated modes)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = counts.sum() - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # an empty gap between the modes: its middle
    return float((edges[1:-1][best[0]] + edges[1:-1][best[-1]]) / 2)


def body_mask(volume: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels above the volume's Otsu threshold (non-finite voxels excluded)."""
    v = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(v)
    if not finite.any():
        return finite
    return finite & (v > otsu_threshold(v[finite]))


@dataclass
class Moments:
    """count, Σx, Σx², min and max of a feature, accumulated case by case (float64)."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = np.inf
    high: float = -np.inf

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return
        self.count += int(x.size)
        self.total += float(x.sum())
        self.squares += float(np.square(x).sum())
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def variance_about(self, mean: float, count: float) -> float:
        """Σ(x − mean)² / (count − 1): this site's share of a global variance (NVFlare's ``variance_with_mean``)."""
        return (self.squares - 2 * mean * self.total + self.count * mean * mean) / max(count - 1, 1)

    @property
    def stddev(self) -> float:
        return float(np.sqrt(max(self.variance_about(self.mean, self.count), 0.0))) if self.count > 1 else 0.0


@dataclass
class SiteStats:
    """A site's moments per (dataset, feature) and how to read the voxels again for a histogram."""

    datalist: dict
    splits: tuple[str, ...]
    moments: dict[tuple[str, str], Moments] = field(default_factory=dict)

    def features(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for dataset, feature in self.moments:
            names.setdefault(dataset, []).append(feature)
        return names

    def values(self, feature: str) -> Iterator[np.ndarray]:
        """Per case, the body voxels of intensity ``feature`` (``raw`` or ``normalised``)."""
        for entry in _cases(self.datalist, self.splits):
            image = _raw(self.datalist, entry) if feature == "raw" else _cached(self.datalist, entry)[0]
            yield image[body_mask(image)]

    def histogram(self, dataset: str, feature: str, bins: int, low: float,
                  high: float) -> tuple[np.ndarray, np.ndarray]:
        """(counts (bins,), edges (bins + 1,)) of ``feature``'s body voxels over [low, high]; values outside the
        range go to the first or last bin (the server's range comes from noisy minima and maxima). An organ's
        histogram is of its 0/1 indicator: the body voxels without it and those with it."""
        edges = np.linspace(low, high, bins + 1)
        counts = np.zeros(bins, dtype=np.int64)
        if dataset == "organs":
            m = self.moments[(dataset, feature)]
            for value, n in ((0.0, m.count - int(m.total)), (1.0, int(m.total))):
                counts[min(max(int(np.searchsorted(edges, np.clip(value, low, high), "right")) - 1, 0), bins - 1)] += n
            return counts, edges
        for x in self.values(feature):
            counts += np.histogram(np.clip(x, low, high), bins=edges)[0]
        return counts, edges


def _cases(datalist: dict, splits: tuple[str, ...]) -> list[dict]:
    return [c for s in splits for c in datalist.get(s, [])]


def _root(datalist: dict) -> Path:
    return Path(datalist["path"]).parent


def _cached(datalist: dict, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    root = _root(datalist)
    return (np.load(root / entry["image"], mmap_mode="r").astype(np.float32),
            np.load(root / entry["label"], mmap_mode="r"))


def _raw(datalist: dict, entry: dict) -> np.ndarray:
    import nibabel as nib

    from fedgin.data.datalist import DatalistError

    path = entry.get("source_image")
    if not path:
        raise DatalistError(f"{datalist['path']}: case {entry['case_id']} names no source_image (a cache prepared "
                            "before it was recorded, or a DICOM source): prepare the site again")
    path = Path(path) if Path(path).is_absolute() else _root(datalist) / path
    try:
        return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DatalistError(f"{path}: cannot read the source scan of case {entry['case_id']}: {e}") from e


def site_stats(datalist_path: str | Path, splits: tuple[str, ...] = ("training", "validation"),
               raw: bool = True) -> SiteStats:
    """Moments of every feature of a prepared site (one pass over its cases).

    ``raw``: also the source scans' intensities (False when the sources are not at hand, e.g. DICOM).

    Raises:
        DatalistError: an unreadable datalist, no case in ``splits``, or an unreadable source scan.
    """
    from fedgin.data.datalist import DatalistError, load_datalist, task_labels

    dl = load_datalist(datalist_path)
    cases = _cases(dl, splits)
    if not cases:
        raise DatalistError(f"{dl['path']}: no case in the splits {list(splits)}")
    classes = task_labels(dl)
    out = SiteStats(dl, tuple(splits))
    for feature in (("raw",) if raw else ()) + ("normalised",):
        out.moments[("intensity", feature)] = Moments()
    for name in classes:
        out.moments[("organs", name)] = Moments()
    for entry in cases:
        image, label = _cached(dl, entry)
        body = body_mask(image)
        out.moments[("intensity", "normalised")].add(image[body])
        inside = np.asarray(label)[body]
        for k, name in enumerate(classes, 1):
            m = out.moments[("organs", name)]
            m.count += int(inside.size)
            hits = int(np.count_nonzero(inside == k))
            m.total += hits
            m.squares += hits  # x ∈ {0, 1}: x² = x
            m.low, m.high = 0.0, 1.0
        if raw:
            source = _raw(dl, entry)
            out.moments[("intensity", "raw")].add(source[body_mask(source)])
    return out
