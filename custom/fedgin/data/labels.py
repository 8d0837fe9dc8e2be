"""The project's canonical class names: abdominal organs and whole-heart substructures, in one place.

Every dataset adapter maps its own label values onto these names; a task is a list of names and label id ``k`` of the
prepared cache is the ``k``-th name of that list (see ``fedgin.data.prepare``).

Abdominal organs (FedGIN's binary tasks; ``kidneys`` merges the two kidneys)::

    liver, spleen, kidney_right, kidney_left, gallbladder, pancreas, kidneys

Whole heart (MM-WHS 2017 / CARE WHS), in this order, which is also the order of ascending raw value and therefore the
usual remapped ids 1..7 (``heart`` is the binary union of all seven)::

    name  raw  id  structure
    myo   205  1   left-ventricle myocardium
    la    420  2   left-atrium blood cavity
    lv    500  3   left-ventricle blood cavity
    ra    550  4   right-atrium blood cavity
    rv    600  5   right-ventricle blood cavity
    ao    820  6   ascending aorta
    pa    850  7   pulmonary artery
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "ABDOMINAL_ORGANS",
    "KIDNEYS",
    "ABDOMINAL_CLASSES",
    "MERGED_CLASSES",
    "HEART_CLASSES",
    "HEART",
    "HEART_RAW_VALUES",
    "HEART_CLASS_IDS",
    "HEART_STRUCTURES",
    "HEART_LABEL_NAMES",
    "heart_values",
]

#: single abdominal organs, canonical names
ABDOMINAL_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "pancreas")
#: the merged class of both kidneys
KIDNEYS = "kidneys"
#: every abdominal class name an adapter may offer
ABDOMINAL_CLASSES = (*ABDOMINAL_ORGANS, KIDNEYS)
#: merged class -> the organs it unites
MERGED_CLASSES = MappingProxyType({KIDNEYS: ("kidney_right", "kidney_left")})

#: whole-heart substructures, canonical order (remapped id = position + 1)
HEART_CLASSES = ("myo", "la", "lv", "ra", "rv", "ao", "pa")
#: the binary whole-heart class (union of the seven substructures)
HEART = "heart"
#: raw MM-WHS / CARE label value of each substructure
HEART_RAW_VALUES = MappingProxyType({"myo": 205, "la": 420, "lv": 500, "ra": 550, "rv": 600, "ao": 820, "pa": 850})
#: remapped id (1..7) of each substructure
HEART_CLASS_IDS = MappingProxyType({name: i for i, name in enumerate(HEART_CLASSES, start=1)})
#: what each substructure is
HEART_STRUCTURES = MappingProxyType({
    "myo": "left-ventricle myocardium",
    "la": "left-atrium blood cavity",
    "lv": "left-ventricle blood cavity",
    "ra": "right-atrium blood cavity",
    "rv": "right-ventricle blood cavity",
    "ao": "ascending aorta",
    "pa": "pulmonary artery",
})
#: every heart class name an adapter may offer
HEART_LABEL_NAMES = (*HEART_CLASSES, HEART)


def heart_values(raw: bool) -> dict[str, frozenset[int]]:
    """Label values of every heart class name (the seven substructures and ``heart``) in one value scheme.

    Args:
        raw: ``True`` for the raw MM-WHS values (205 ... 850), ``False`` for the remapped ids 1..7.

    Returns:
        ``{name: values}`` with ``heart`` holding all seven values.
    """
    table = HEART_RAW_VALUES if raw else HEART_CLASS_IDS
    out = {name: frozenset({int(table[name])}) for name in HEART_CLASSES}
    out[HEART] = frozenset(int(table[name]) for name in HEART_CLASSES)
    return out
