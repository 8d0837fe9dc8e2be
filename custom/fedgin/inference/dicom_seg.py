"""DICOM Segmentation (SEG) objects for ``fedgin predict --format seg|both``, written with highdicom.

A SEG written here:

* references its source series: the SEG is in the source's study, on its frame of reference, its
  ReferencedSeriesSequence names the source series and every frame's DerivationImageSequence /
  SourceImageSequence names the source slice (SOP Instance UID) it lies on;
* is BINARY, one frame per source slice and segment that holds a voxel (empty frames omitted; an all-background
  prediction keeps every frame, as highdicom does), on the source slice's own grid: frame row ``r``, column ``c``
  is pixel ``(r, c)`` of that slice;
* has one segment per model class, numbered like the label map (class ``k`` = segment ``k``), labelled with the
  class name and coded (:data:`ANATOMY`): SegmentedPropertyCategory *Anatomical Structure* (SCT 91723000) and the
  organ's SNOMED CT SegmentedPropertyType from ``pydicom.sr.codedict.codes``; the side of a kidney is a
  SegmentedPropertyTypeModifier (Left / Right / Bilateral). A class name the table does not know gets the generic
  code :data:`GENERIC` (category and type *Tissue*, SCT 85756007, as 3D Slicer labels an unnamed segment), and the
  prediction's report says so;
* identifies the algorithm (name ``fedgin``, version ``fedgin.__version__``, family *Artificial Intelligence*, the
  model file's SHA-256 as a parameter), manufacturer ``fedgin``, model name ``fedgin predict``, the first 16 hex
  digits of the model file's SHA-256 as device serial number.

Anonymised exports sometimes blank the identifying UIDs. A slice's empty SOPClassUID / SOPInstanceUID is taken from
its file meta information (MediaStorageSOPClassUID / MediaStorageSOPInstanceUID: the same instance, PS3.10); an
empty StudyInstanceUID or SeriesInstanceUID is replaced by a UID derived from the slices' SOP Instance UIDs (the
same on every run), and :func:`build_seg` returns a note saying so: such a SEG references a study/series UID that
no archive knows, but its per-frame references and frame of reference are the source's own.

``highdicom`` is imported only when a SEG is built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["ANATOMY", "GENERIC", "SEG_SUFFIX", "SegError", "SegmentCode", "segment_code", "build_seg",
           "source_datasets"]

SEG_SUFFIX = "_seg.dcm"


class SegError(ValueError):
    """A DICOM SEG cannot be built for a series (a source header highdicom refuses, a label map of the wrong shape);
    the message names the series or file."""


@dataclass(frozen=True)
class SegmentCode:
    """How a class is coded: ``(value, scheme, meaning)`` triples of its category, type and type modifier."""

    category: tuple[str, str, str]
    type: tuple[str, str, str]
    modifier: tuple[str, str, str] | None = None


def _sct(name: str) -> tuple[str, str, str]:
    from pydicom.sr.codedict import codes

    c = getattr(codes.SCT, name)
    return (c.value, c.scheme_designator, c.meaning)


_ANATOMICAL = ("91723000", "SCT", "Anatomical Structure")
_TISSUE = ("85756007", "SCT", "Tissue")


def _organ(type_name: str, side: str | None = None) -> SegmentCode:
    return SegmentCode(_ANATOMICAL, _sct(type_name), _sct(side) if side else None)


#: class name -> codes (pydicom's SNOMED CT codes): the project's abdominal organs and whole-heart substructures
#: (``fedgin.data.labels``), and the stomach. A blood cavity (la, lv, ra, rv) is coded by its chamber.
ANATOMY: Mapping[str, SegmentCode] = MappingProxyType({
    "liver": _organ("Liver"),                       # 10200004
    "spleen": _organ("Spleen"),                     # 78961009
    "kidney_right": _organ("Kidney", "Right"),      # 64033007 + 24028007
    "kidney_left": _organ("Kidney", "Left"),        # 64033007 + 7771000
    "kidneys": _organ("Kidney", "Bilateral"),       # 64033007 + 51440002
    "gallbladder": _organ("Gallbladder"),           # 28231008
    "pancreas": _organ("Pancreas"),                 # 15776009
    "stomach": _organ("Stomach"),                   # 69695003
    "heart": _organ("Heart"),                       # 80891009
    "myo": _organ("LeftVentricleMyocardium"),       # 49848007
    "la": _organ("LeftAtrium"),                     # 82471001
    "lv": _organ("LeftVentricle"),                  # 87878005
    "ra": _organ("RightAtrium"),                    # 73829009
    "rv": _organ("RightVentricle"),                 # 53085002
    "ao": _organ("AscendingAorta"),                 # 54247002
    "pa": _organ("PulmonaryArtery"),                # 81040000
})
#: the code of a class name :data:`ANATOMY` does not know
GENERIC = SegmentCode(_TISSUE, _TISSUE)


def segment_code(name: str) -> tuple[SegmentCode, bool]:
    """The codes of class ``name`` (case, ``-`` and spaces ignored) and whether it is a known organ (``False``:
    :data:`GENERIC`)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return (ANATOMY[key], True) if key in ANATOMY else (GENERIC, False)


def _derived_uid(kind: str, sop_uids: Sequence[str]) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None, entropy_srcs=[f"fedgin {kind}", *sop_uids]))


def source_datasets(files: Sequence[Path]) -> tuple[list[Any], list[str]]:
    """The headers (no pixel data) of a series' slices, in the given order, made referenceable (module docstring).

    Returns:
        (the pydicom datasets, notes on UIDs that had to be filled in).

    Raises:
        SegError: an unreadable file, or a slice without any SOP Instance UID.
    """
    import pydicom

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 - the file changed since it was read
            raise SegError(f"{f}: cannot read DICOM ({type(e).__name__}: {e})") from e
        meta = getattr(ds, "file_meta", None)
        for key, fallback in (("SOPClassUID", "MediaStorageSOPClassUID"),
                              ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(getattr(ds, key, "") or "").strip():
                value = str(getattr(meta, fallback, "") or "").strip()
                if not value:
                    raise SegError(f"{f}: no {key} (nor {fallback}): a DICOM SEG cannot reference this slice")
                setattr(ds, key, value)
        out.append(ds)
    notes = []
    sops = [str(ds.SOPInstanceUID) for ds in out]
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not all(str(getattr(ds, key, "") or "").strip() for ds in out):
            uid = _derived_uid(key, sops)
            for ds in out:
                setattr(ds, key, uid)
            notes.append(f"the source has no {key} (blanked by anonymisation?): the SEG uses the derived {uid}")
    return out, notes


def _code(triple: tuple[str, str, str]):
    import highdicom as hd

    return hd.sr.CodedConcept(*triple)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_seg(files: Sequence[Path], labels: np.ndarray, classes: Sequence[str], *, model_file: Path,
              series_description: str = "") -> tuple[Any, list[str]]:
    """A DICOM SEG of the label map ``labels`` of one series (module docstring).

    Args:
        files: the series' slices in stack order (``DicomSeries.files``).
        labels: uint8 ``(columns, rows, slices)``, voxel ``(i, j, k)`` = column ``i``, row ``j`` of ``files[k]``
            (the label map ``fedgin predict`` writes for the series); 0 background, ``k`` = ``classes[k - 1]``.
        classes: the model's class names.
        model_file: the model that predicted (its SHA-256 identifies it in the SEG).
        series_description: the source's SeriesDescription (the SEG's is ``fedgin <classes> of <it>``).

    Returns:
        (the highdicom ``Segmentation``, notes: derived UIDs, classes given the generic code).

    Raises:
        SegError: naming the first file.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import fedgin

    datasets, notes = source_datasets(files)
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    if labels.shape != (columns, rows, len(files)):
        raise SegError(f"{files[0]}: label map of shape {labels.shape} for a series of {len(files)} slice(s) of "
                       f"{rows} x {columns} (columns, rows, slices expected)")
    sha = _sha256(model_file)
    algorithm = hd.AlgorithmIdentificationSequence(name="fedgin", family=codes.cid7162.ArtificialIntelligence,
                                                   version=fedgin.__version__, parameters={"model_sha256": sha})
    segments, generic = [], []
    for number, name in enumerate(classes, start=1):
        code, known = segment_code(name)
        if not known:
            generic.append(name)
        seg = hd.seg.SegmentDescription(number, name, _code(code.category), _code(code.type),
                                        hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm)
        if code.modifier:
            seg.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _code(code.modifier)]
        segments.append(seg)
    if generic:
        notes.append(f"no SNOMED CT code known for {', '.join(generic)}: coded as the generic "
                     f"{GENERIC.type[2]} ({GENERIC.type[1]} {GENERIC.type[0]})")
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)).astype(np.uint8))  # (slices, rows, columns)
    number = getattr(datasets[0], "SeriesNumber", None)
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=hd.UID(),
            series_number=1000 + int(number) if number not in (None, "") else 1000, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="fedgin", manufacturer_model_name="fedgin predict",
            software_versions=fedgin.__version__, device_serial_number=sha[:16], content_label="FEDGIN",
            content_description=f"fedgin predict: {', '.join(classes)}"[:64])
    except Exception as e:  # noqa: BLE001 - highdicom refuses a source attribute (ValueError, KeyError, ...)
        raise SegError(f"{files[0]}: cannot build a DICOM SEG for this series ({type(e).__name__}: {e})") from e
    seg.SeriesDescription = f"fedgin {', '.join(classes)} of {series_description}"[:64] if series_description \
        else f"fedgin {', '.join(classes)}"[:64]
    return seg, notes
