"""A site's own record of everything it sends: ``OutgoingAudit``.

Last in the client's ``task_result_filters`` (after the privacy filter), it sees each task result exactly as it
leaves the site and appends one JSON line per result to ``<site workspace>/<job id>/outgoing_audit.jsonl``. The
file stays at the site, for its IT and privacy officers:

    {"time": ..., "task": "train", "round": 3, "return_code": "OK", "data_kind": "WEIGHT_DIFF",
     "arrays": {"model.0.conv.unit0.conv.weight": [[16, 1, 3, 3], "float32"], ...},
     "num_arrays": 62, "num_values": 485817, "payload_bytes": 1943268, "serialized_bytes": 1951234,
     "meta": {"NUM_STEPS_CURRENT_ROUND": 150, ...}, "headers": {...}, "strings": [...]}

A SCAFFOLD result (a COLLECTION of the weight difference and the control-variate difference) lists the arrays of
both parts as ``<part>/<name>`` and each part's kind and meta under ``parts``.

``strings`` lists every text value found anywhere in the result outside the weight names (headers, meta, metric
names), so a reader (or a test) can check that no file path or case identifier leaves the site.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReservedHeaderKey, Shareable
from nvflare.app_common.app_constant import AppConstants

__all__ = ["OutgoingAudit", "describe_result", "AUDIT_FILE"]

AUDIT_FILE = "outgoing_audit.jsonl"


def _scalar(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)) and len(v) <= 16:
        return [_scalar(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _scalar(x) for k, x in v.items()}
    return f"<{type(v).__name__}>"


def _strings(obj: Any, skip_keys: bool = False) -> set[str]:
    """Every str inside ``obj`` (dict keys included unless ``skip_keys``), arrays excluded."""
    found: set[str] = set()
    if isinstance(obj, str):
        found.add(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and not skip_keys:
                found.add(k)
            found |= _strings(v)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            found |= _strings(v)
    return found


def describe_result(shareable: Shareable) -> dict[str, Any]:
    """What a task result carries: its arrays (name → [shape, dtype]), sizes, meta, headers and all its strings."""
    headers = {k: v for k, v in shareable.get(ReservedHeaderKey.HEADERS, {}).items() if k != ReservedHeaderKey.PEER_CTX}
    out: dict[str, Any] = {"return_code": shareable.get_return_code(), "headers": _scalar(headers)}
    strings = _strings(headers)
    try:
        dxo = from_shareable(shareable)
    except Exception:
        dxo = None
    if dxo is not None:
        out["data_kind"] = dxo.data_kind
        parts = {"": dxo}
        if dxo.data_kind == DataKind.COLLECTION and isinstance(dxo.data, dict):  # SCAFFOLD: weights + controls
            parts = {name: part for name, part in dxo.data.items() if isinstance(part, DXO)}
            out["parts"] = {name: {"data_kind": part.data_kind, "meta": _scalar(part.meta)}
                            for name, part in parts.items()}
            out["data"] = {k: _scalar(v) for k, v in dxo.data.items() if k not in parts}
            strings |= _strings(out["data"]) | _strings({name: part.meta for name, part in parts.items()})
        arrays, other = {}, {}
        for name, part in parts.items():
            data = part.data if isinstance(part.data, dict) else {}
            prefix = f"{name}/" if name else ""
            for k, v in data.items():
                if isinstance(v, (np.ndarray, np.generic, list)) or hasattr(v, "shape"):
                    arrays[prefix + k] = np.asarray(v)
                else:
                    other[prefix + k] = v
        out["arrays"] = {k: [list(a.shape), str(a.dtype)] for k, a in arrays.items()}
        out["num_arrays"] = len(arrays)
        out["num_values"] = int(sum(a.size for a in arrays.values()))
        out["payload_bytes"] = int(sum(a.nbytes for a in arrays.values()))
        out.setdefault("data", {}).update({k: _scalar(v) for k, v in other.items()})
        out["meta"] = _scalar(dxo.meta)
        strings |= _strings(other) | _strings(dxo.meta)
    out["strings"] = sorted(strings)
    try:
        from nvflare.app_common.decomposers import common_decomposers
        from nvflare.fuel.utils import fobs

        common_decomposers.register()  # numpy arrays (already registered in a FLARE process)
        out["serialized_bytes"] = len(fobs.dumps(shareable))
    except Exception as e:  # the size is informative only
        out["serialized_bytes"] = f"unavailable ({type(e).__name__})"
    return out


class OutgoingAudit(Filter):
    """Appends ``describe_result`` of every outgoing task result to the site's ``outgoing_audit.jsonl``."""

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "site": fl_ctx.get_identity_name(),
                      "task": fl_ctx.get_prop(FLContextKey.TASK_NAME),
                      "round": shareable.get_header(AppConstants.CURRENT_ROUND),
                      **describe_result(shareable)}
            run_dir = Path(fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id()))
            with open(run_dir / AUDIT_FILE, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        except Exception as e:  # auditing must never change or block what is sent
            self.log_error(fl_ctx, f"outgoing audit failed: {type(e).__name__}: {e}")
        return shareable
