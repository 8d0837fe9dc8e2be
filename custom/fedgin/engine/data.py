"""Axial slices of one or more prepared sites, served as batches straight from the slice cache.

No NIfTI is decoded here: the cache holds one ``(S, H, W)`` array per case (see ``fedgin.data.datalist``).
Arrays are memory-mapped, so a site larger than RAM works, and a batch is a handful of slice reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from fedgin.data.datalist import DatalistError, case_paths, load_datalist, task_labels
from fedgin.data.finite import nonfinite_summary

__all__ = ["CaseSlices", "SliceSet", "organ_batches"]


@dataclass
class CaseSlices:
    """One cached volume: ``image`` float32 (S, H, W), ``label`` uint8 (S, H, W)."""

    key: str  # "<site>/<case_id>", unique across pooled datalists
    case_id: str
    modality: str
    site: str
    image: np.ndarray
    label: np.ndarray
    meta: dict
    datalist: dict | None = None  # the loaded datalist the case comes from (its "root" and "path")


class SliceSet:
    """The slices of one split of one or more datalists (pooled, as for centralized training).

    Args:
        datalists: datalist paths or loaded datalist dicts; all must describe the same classes and slice size.
        split: ``training``, ``validation`` or ``test``.
        in_memory: load arrays into RAM (fast) instead of memory-mapping them; ``None`` (default) loads them when
            the split's cached files total less than ``MEMORY_LIMIT_BYTES``, and memory-maps them otherwise.

    Raises:
        DatalistError: unreadable datalist, class or size mismatch between datalists, a datalist given twice or a
            case pooled twice, a cache file whose shape or dtype disagrees with the datalist, or cached slices
            with NaN/Inf values.
    """

    MEMORY_LIMIT_BYTES = 4 * 1024**3

    def __init__(self, datalists: Sequence[str | dict], split: str, in_memory: bool | None = None) -> None:
        if split not in ("training", "validation", "test"):
            raise ValueError(f"split must be training, validation or test, got {split!r}")
        self.split = split
        self.datalists = [d if isinstance(d, dict) else load_datalist(d) for d in datalists]
        if not self.datalists:
            raise DatalistError("no datalist given")
        first = self.datalists[0]
        self.classes = task_labels(first)
        self.size = tuple(first["size_px"])
        for d in self.datalists[1:]:
            if task_labels(d) != self.classes:
                raise DatalistError(
                    f"{d['path']}: classes {task_labels(d)} differ from {self.classes} in {first['path']}"
                )
            if tuple(d["size_px"]) != self.size:
                raise DatalistError(f"{d['path']}: slice size {d['size_px']} differs from {list(self.size)}")
        if in_memory is None:
            total = sum(p.stat().st_size for d in self.datalists for c in d[split] for p in case_paths(d, c))
            in_memory = total < self.MEMORY_LIMIT_BYTES
        self.in_memory = in_memory
        paths = [d.get("path") for d in self.datalists]
        twice = sorted({q for q in paths if q and paths.count(q) > 1})
        if twice:
            raise DatalistError(f"{twice[0]}: the same datalist is given twice; its cases would count twice")
        self.cases: list[CaseSlices] = []
        keys: dict[str, str] = {}
        for d in self.datalists:
            for case in d[split]:
                c = self._load_case(d, case, in_memory)
                if c.key in keys:
                    raise DatalistError(f"{d['path']}: case {c.case_id!r} of site {c.site!r} is also in "
                                        f"{keys[c.key]}; a case may be pooled once")
                keys[c.key] = d["path"]
                self.cases.append(c)
        offsets = np.cumsum([0] + [c.image.shape[0] for c in self.cases])
        self._offsets = offsets
        # (case index, slice index) of every slice
        self._index = np.concatenate(
            [np.stack([np.full(c.image.shape[0], i), np.arange(c.image.shape[0])], 1) for i, c in enumerate(self.cases)]
        ) if self.cases else np.zeros((0, 2), dtype=np.int64)
        self._foreground: np.ndarray | None = None

    @staticmethod
    def _load_case(datalist: dict, case: dict, in_memory: bool) -> CaseSlices:
        img_path, lbl_path = case_paths(datalist, case)
        mode = None if in_memory else "r"
        try:
            image = np.load(img_path, mmap_mode=mode)
            label = np.load(lbl_path, mmap_mode=mode)
        except (OSError, ValueError) as e:
            raise DatalistError(f"{img_path}: cannot read cached slices: {e}") from e
        expected = (int(case["num_slices"]), *datalist["size_px"])
        for arr, path in ((image, img_path), (label, lbl_path)):
            if arr.shape != expected:
                raise DatalistError(f"{path}: shape {arr.shape} but the datalist says {expected}")
        if image.dtype != np.float32 or label.dtype != np.uint8:
            raise DatalistError(f"{img_path}: cached slices must be float32 images and uint8 labels, got "
                                f"{image.dtype} and {label.dtype}")
        summary = nonfinite_summary(image, slice_axis=0)
        if summary:
            raise DatalistError(f"{img_path}: the cached slices hold non-finite values ({summary}); prepare the "
                                "site again (fedgin prepare refuses or repairs them: --nonfinite)")
        site = datalist.get("site", "site")
        return CaseSlices(
            key=f"{site}/{case['case_id']}",
            case_id=case["case_id"],
            modality=case.get("modality", datalist["modality"]),
            site=site,
            image=image,
            label=label,
            meta=case,
            datalist=datalist,
        )

    def __len__(self) -> int:
        """Number of slices."""
        return int(self._index.shape[0])

    @property
    def num_cases(self) -> int:
        return len(self.cases)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Slices by global index -> (images (B, 1, H, W) float32, labels (B, H, W) uint8), CPU tensors."""
        pairs = self._index[indices]
        images = np.stack([self.cases[c].image[s] for c, s in pairs])
        labels = np.stack([self.cases[c].label[s] for c, s in pairs])
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)

    def epoch(self, batch_size: int, rng: np.random.Generator, by_modality: bool = False,
              sampler: str = "uniform") -> Iterator[np.ndarray]:
        """One pass: ``len(self) // batch_size`` index batches (at least one when non-empty).

        ``sampler``: ``uniform`` cuts one shuffled permutation into batches; ``organ`` composes each batch from
        slices with and without any labelled class (``organ_batches``). With ``by_modality`` every batch holds
        slices of one modality only (for domain-specific batch norm): each modality's slices are batched apart and
        the batches are shuffled together.
        """
        if len(self) == 0:
            return
        if sampler not in ("uniform", "organ"):
            raise ValueError(f"sampler must be 'uniform' or 'organ', got {sampler!r}")
        if by_modality:
            modality = np.array([self.cases[c].modality for c in self._index[:, 0]])
            groups = [np.flatnonzero(modality == m) for m in sorted(set(modality))]
        else:
            groups = [np.arange(len(self))]
        batches = []
        for pool in groups:
            if sampler == "organ":
                batches += organ_batches(pool, self.foreground[pool], batch_size, rng)
            else:
                order = rng.permutation(pool)
                n = max(1, len(order) // batch_size)
                batches += [order[i * batch_size : (i + 1) * batch_size] for i in range(n)]
        if len(groups) == 1:
            yield from batches
            return
        for i in rng.permutation(len(batches)):
            yield batches[i]

    @property
    def foreground(self) -> np.ndarray:
        """(N,) bool: slice i shows at least one labelled class (computed once)."""
        if self._foreground is None:
            flags = np.zeros(len(self), dtype=bool)
            for i, c in enumerate(self.cases):
                lo = self._offsets[i]
                flags[lo : lo + c.label.shape[0]] = np.asarray(c.label).reshape(c.label.shape[0], -1).any(1)
            self._foreground = flags
        return self._foreground

    def modality_of(self, indices: np.ndarray) -> str:
        """The one modality of the slices ``indices``; ``ValueError`` if they mix modalities."""
        found = {self.cases[c].modality for c in self._index[indices, 0]}
        if len(found) != 1:
            raise ValueError(f"a batch mixes modalities {sorted(found)}")
        return found.pop()

    def case_batches(self, case_index: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All slices of one case in order, as (images (b,1,H,W), labels (b,H,W)) chunks."""
        case = self.cases[case_index]
        for start in range(0, case.image.shape[0], batch_size):
            img = np.ascontiguousarray(case.image[start : start + batch_size])
            lbl = np.ascontiguousarray(case.label[start : start + batch_size])
            yield torch.from_numpy(img).unsqueeze(1), torch.from_numpy(lbl)


def organ_batches(pool: np.ndarray, foreground: np.ndarray, batch_size: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """The FedGIN authors' organ-aware batches (``clients/sampler.py``) over the slice indices ``pool`` (P,).

    ``max(1, P // batch_size)`` batches of ``min(batch_size, P)`` distinct slices. Each draws its number of
    foreground slices (``foreground`` (P,) bool: the slice shows a class) from Binomial(batch, share of
    foreground slices), then keeps at least one foreground and one background slice when both exist; slices are
    taken without replacement from shuffled pools, reshuffled when one runs out.
    """
    pool = np.asarray(pool)
    fg, bg = pool[foreground], pool[~foreground]
    size = min(batch_size, len(pool))
    share = len(fg) / len(pool)
    queues = {"fg": [fg, 0, rng.permutation(len(fg))], "bg": [bg, 0, rng.permutation(len(bg))]}

    def take(name: str, k: int) -> list[int]:
        items, pos, order = queues[name]
        out: list[int] = []
        while len(out) < k:
            if pos == len(order):  # the pool ran out: refill it
                order, pos = rng.permutation(len(items)), 0
            candidate = int(items[order[pos]])
            pos += 1
            if candidate not in out or len(items) < k:
                out.append(candidate)
        queues[name][1:] = [pos, order]
        return out

    batches = []
    for _ in range(max(1, len(pool) // batch_size)):
        k = int(rng.binomial(size, share))
        if len(fg) and len(bg) and size >= 2:
            k = min(max(k, 1), size - 1)
        k = min(k, len(fg))
        k = max(k, size - len(bg))
        batch = np.array(take("fg", k) + take("bg", size - k), dtype=np.int64)
        batches.append(batch[rng.permutation(size)])
    return batches
