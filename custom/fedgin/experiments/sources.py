"""Where an experiment's cases come from (phantoms or datasets on disk) and how its sites are prepared.

A *source* is one dataset of one modality in a layout that ``fedgin prepare`` reads. On the command line a real
dataset is given as ``NAME=LAYOUT:MODALITY:PATH`` (e.g. ``ts-ct=totalseg:ct:/data/TotalSegmentator``); without
it an experiment generates a seeded phantom for that name. Sites are drawn from the sources by a partition
(``fedgin.data.partition``) written to ``<experiment>/partition.json`` before anything is prepared, then each site's
slice cache is built with exactly its cases. Every stage is reused when its inputs are unchanged, so a
re-run resumes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Source", "parse_source", "phantom_source", "prepare_sites", "stage"]


@dataclass(frozen=True)
class Source:
    """One dataset of one modality: ``layout`` (a key of ``fedgin.data.prepare.LAYOUTS``), ``path`` on disk."""

    name: str
    layout: str
    modality: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def case_ids(self) -> list[str]:
        """The ids of this source's cases of its modality, sorted (nothing decoded)."""
        from fedgin.data.prepare import LAYOUTS

        if self.layout not in LAYOUTS:
            raise ValueError(f"source {self.name}: unknown layout {self.layout!r}; known: {sorted(LAYOUTS)}")
        cases = LAYOUTS[self.layout].list_cases(self.path, self.modality, dict(self.options))
        if not cases:
            raise ValueError(f"source {self.name}: no {self.modality} case in {self.path} (layout {self.layout})")
        return sorted(c.case_id for c in cases)


def parse_source(text: str) -> Source:
    """``NAME=LAYOUT:MODALITY:PATH`` → ``Source`` (the path may itself contain ':')."""
    try:
        name, rest = text.split("=", 1)
        layout, modality, path = rest.split(":", 2)
    except ValueError:
        raise ValueError(f"--source {text!r}: expected NAME=LAYOUT:MODALITY:PATH, "
                         f"e.g. ts-ct=totalseg:ct:/data/TotalSegmentator") from None
    if modality not in ("ct", "mri"):
        raise ValueError(f"--source {text!r}: modality must be ct or mri")
    if not Path(path).expanduser().is_dir():
        raise ValueError(f"--source {text!r}: {path} is not a folder")
    return Source(name.strip(), layout.strip(), modality, Path(path).expanduser().resolve(), description=text)


def stage(folder: Path, params: dict[str, Any], build: Callable[[Path], Any], echo: bool = False) -> Path:
    """Run ``build(folder)`` unless ``folder`` already holds the result for ``params`` (``.fedgin_stage.json``);
    ``echo``: say so when it is reused."""
    stamp = folder / ".fedgin_stage.json"
    params = json.loads(json.dumps(params, default=str))
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        if echo:
            print(f"  reusing {folder}")
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    build(folder)
    stamp.write_text(json.dumps(params))
    return folder


def phantom_source(work: Path, name: str, kind: str, modality: str, cases: int, seed: int,
                   protocol: str | None = None) -> Source:
    """A seeded phantom dataset standing in for a real one (``kind``: ``abdomen`` or ``heart``; ``protocol``: the
    acquisition protocol of its centre, ``fedgin.phantom.generate_dataset`` / ``generate_heart_dataset``)."""
    from fedgin import phantom

    params = {"kind": kind, "modality": modality, "cases": cases, "seed": seed, "protocol": protocol}
    folder = work / "sources" / name
    if kind == "abdomen":
        stage(folder, params, lambda out: phantom.generate_dataset(out, modality, cases, seed, protocol=protocol,
                                                                   progress=False))
        layout = "totalseg"
    elif kind == "heart":
        stage(folder, params, lambda out: phantom.generate_heart_dataset(out, modality, cases, seed,
                                                                         protocol=protocol, progress=False))
        layout = "whs"
    else:
        raise ValueError(f"unknown phantom kind {kind!r}")
    what = f"phantom {kind} {modality.upper()}" + (f" ({protocol})" if protocol else "")
    return Source(name, layout, modality, folder, description=f"{what}, {cases} cases, seed {seed}")


def prepare_sites(work: Path, partition: dict[str, Any], sources: dict[str, Source], classes: list[str],
                  spacing: float, size: int, sites: list[str] | None = None) -> dict[str, Path]:
    """Slice caches of the partition's ``sites`` (default all) under ``work/data/<task>/<site>``; returns
    ``{site: datalist path}``. A site whose cases, classes and geometry are unchanged is reused."""
    from fedgin.data import prepare_site
    from fedgin.data.prepare import CACHE_REVISION
    from fedgin.data.partition import site_case_splits

    task = "-".join(classes) if len(classes) <= 3 else f"{len(classes)}classes"
    out: dict[str, Path] = {}
    for site in sites or list(partition["sites"]):
        entry = partition["sites"][site]
        src = sources[entry["source"]]
        splits = site_case_splits(partition, site)
        params = {"source": src.description or str(src.path), "layout": src.layout, "options": src.options,
                  "cases": splits, "classes": classes, "spacing": spacing, "size": size, "cache_revision": CACHE_REVISION}
        folder = work / "data" / task / site
        stage(folder, params, lambda f, src=src, splits=splits, site=site: prepare_site(
            layout=src.layout, input_dir=src.path, output_dir=f, site=site, modality=src.modality, organs=classes,
            spacing=spacing, size=size, progress=False, case_splits=splits, **_layout_kwargs(src)))
        out[site] = folder / "datalist.json"
    return out


def _layout_kwargs(src: Source) -> dict[str, Any]:
    return {"layout_options": src.options} if src.options else {}
