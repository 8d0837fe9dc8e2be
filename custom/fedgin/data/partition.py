"""Partitions as data: which cases of which source dataset each site gets, and in which split.

A partition is drawn once from a seed and written to a JSON file anyone can read and re-use::

    {"format": "fedgin-partition/1", "seed": 0, "description": "...",
     "sources": {"ct": {"modality": "ct", "cases": 40}, ...},
     "sites": {"site-ct": {"source": "ct", "modality": "ct",
                           "training": ["ct0003", ...], "validation": [...], "test": [...]}, ...}}

Drawing rule (``draw_partition``): for each source, one permutation of its sorted case ids from
``numpy.random.default_rng([seed, k])`` (``k`` = the source's index in sorted order); the sites that use that source
take consecutive blocks of it in the order of the plan, each site first its test cases, then validation, then
training. So, with the same seed, growing one site's training count only appends cases: the CT sets of the
MRI-scarce series (20 ⊂ 40 ⊂ 100 cases) are nested, and every other site's cases stay the same. A site's counts
are integers, or ``"rest"`` for training (every case of the source not taken by an earlier site).
``fedgin.data.prepare_site(case_splits=site_case_splits(partition, site))`` prepares exactly those cases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "PartitionError", "draw_partition", "write_partition", "load_partition", "site_case_splits"]

FORMAT = "fedgin-partition/1"
SPLIT_ORDER = ("test", "validation", "training")  # order in which a site takes its block of a source


class PartitionError(ValueError):
    """A plan that cannot be drawn, or a partition file that is malformed."""


def draw_partition(pools: dict[str, dict[str, Any]], plan: dict[str, dict[str, Any]], seed: int,
                   description: str = "") -> dict[str, Any]:
    """Draw a partition.

    Args:
        pools: source name → ``{"modality": "ct"|"mri", "cases": [case ids]}``.
        plan: site name → ``{"source": name, "training": int|"rest", "validation": int, "test": int}``.
        seed: the seed of every permutation.
        description: free text stored in the file.

    Raises:
        PartitionError: unknown source, negative counts, or more cases asked of a source than it holds.
    """
    order: dict[str, list[str]] = {}
    for k, name in enumerate(sorted(pools)):
        ids = sorted(str(c) for c in pools[name]["cases"])
        if len(set(ids)) != len(ids):
            raise PartitionError(f"source {name!r} lists a case twice")
        order[name] = [ids[i] for i in np.random.default_rng([int(seed), k]).permutation(len(ids))]
    taken = {name: 0 for name in pools}
    sites: dict[str, dict[str, Any]] = {}
    for site, want in plan.items():
        source = want.get("source")
        if source not in pools:
            raise PartitionError(f"site {site!r}: unknown source {source!r}; sources: {sorted(pools)}")
        entry: dict[str, Any] = {"source": source, "modality": pools[source]["modality"]}
        for split in SPLIT_ORDER:
            n = want.get(split, 0)
            left = len(order[source]) - taken[source]
            if n == "rest" and split == "training":
                n = left
            if not isinstance(n, int) or n < 0:
                raise PartitionError(f"site {site!r}: {split} must be a count >= 0 (or 'rest' for training), got {n!r}")
            if n > left:
                raise PartitionError(f"site {site!r}: asks {n} {split} case(s) of source {source!r}, but only {left} "
                                     f"of its {len(order[source])} are left")
            entry[split] = sorted(order[source][taken[source]:taken[source] + n])
            taken[source] += n
        sites[site] = entry
    return {
        "format": FORMAT,
        "seed": int(seed),
        "description": description,
        "sources": {name: {"modality": pools[name]["modality"], "cases": len(order[name])} for name in sorted(pools)},
        "plan": plan,
        "sites": sites,
    }


def write_partition(path: str | Path, partition: dict[str, Any]) -> Path:
    """Write ``partition`` as indented JSON (atomically); returns the path."""
    _check(partition, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(partition, indent=1) + "\n")
    tmp.replace(path)
    return path


def load_partition(path: str | Path) -> dict[str, Any]:
    """Read and check a partition file (format, splits, no case used twice within a source)."""
    path = Path(path)
    try:
        partition = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PartitionError(f"{path}: cannot read partition: {e}") from e
    _check(partition, str(path))
    return partition


def site_case_splits(partition: dict[str, Any], site: str) -> dict[str, str]:
    """``{case_id: split}`` of one site (what ``prepare_site(case_splits=...)`` takes)."""
    if site not in partition["sites"]:
        raise PartitionError(f"site {site!r} not in the partition; sites: {sorted(partition['sites'])}")
    entry = partition["sites"][site]
    return {cid: split for split in SPLIT_ORDER for cid in entry[split]}


def _check(partition: dict[str, Any], where: str) -> None:
    if not isinstance(partition, dict) or partition.get("format") != FORMAT:
        raise PartitionError(f"{where}: not a partition (format must be {FORMAT!r})")
    used: dict[tuple[str, str], str] = {}
    for site, entry in partition.get("sites", {}).items():
        for split in SPLIT_ORDER:
            if not isinstance(entry.get(split), list):
                raise PartitionError(f"{where}: site {site!r} has no {split} list")
            for cid in entry[split]:
                key = (entry.get("source"), cid)
                if key in used:
                    raise PartitionError(f"{where}: case {cid!r} of source {entry.get('source')!r} is given to both "
                                         f"{used[key]} and {site}/{split}")
                used[key] = f"{site}/{split}"
