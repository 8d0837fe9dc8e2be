"""Sources and preparation: NIfTI/DICOM reading, one adapter per dataset layout, preprocessing, partitions (which
cases each site gets) and the per-site slice cache described in ``fedgin.data.datalist``.

May import ``fedgin.common`` and nothing else of fedgin: every later stage reads what this one writes.
"""

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
