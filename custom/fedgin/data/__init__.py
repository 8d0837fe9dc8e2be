"""Data side of fedgin: source datasets -> the per-site slice cache described in ``fedgin.data.datalist``."""

from fedgin.data.datalist import FORMAT, SPLITS, DatalistError, case_paths, load_datalist, task_labels
from fedgin.data.errors import LayoutError, NiftiError, PrepareError
from fedgin.data.prepare import LAYOUTS, prepare_site

__all__ = [
    "FORMAT",
    "SPLITS",
    "DatalistError",
    "load_datalist",
    "case_paths",
    "task_labels",
    "PrepareError",
    "NiftiError",
    "LayoutError",
    "LAYOUTS",
    "prepare_site",
]
