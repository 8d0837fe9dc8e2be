"""What may leave a site, checked on its ``outgoing_audit.jsonl`` (written by ``fedgin.flare.audit.OutgoingAudit``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

ALLOWED_META = {"NUM_STEPS_CURRENT_ROUND", "initial_metrics"}


def check_outgoing(audit_file: Path, datalist_file: Path, model_shapes: dict[str, tuple]) -> dict[str, int]:
    """Assert that every result the site sent holds only model weights (exactly the model's keys and shapes), its
    sample count and validation metrics: no image-sized array, no path, no case identifier. Returns task → count."""
    records = [json.loads(line) for line in Path(audit_file).read_text().splitlines()]
    datalist = json.loads(Path(datalist_file).read_text())
    cases = [c for split in ("training", "validation", "test") for c in datalist.get(split, [])]
    forbidden = {c["case_id"] for c in cases} | {str(Path(datalist_file).parent), str(Path(datalist_file))}
    forbidden |= {c["image"] for c in cases} | {c["label"] for c in cases}
    h, w = datalist["size_px"]
    n_train = sum(c["num_slices"] for c in datalist["training"])
    seen: dict[str, int] = {}
    for r in records:
        seen[r["task"]] = seen.get(r["task"], 0) + 1
        assert r["return_code"] == "OK", r
        for s in r["strings"]:
            assert not s.startswith("/") and "\\" not in s, f"a path leaves the site: {s!r}"
            assert not any(f in s for f in forbidden), f"a case identifier or path leaves the site: {s!r}"
        arrays = {k: tuple(v[0]) for k, v in r.get("arrays", {}).items()}
        for name, shape in arrays.items():
            assert len(shape) < 2 or shape[-2] * shape[-1] < h * w, f"image-sized array {name} {shape}"
        if r["task"] in ("train", "submit_model"):
            assert r["data_kind"] == ("WEIGHT_DIFF" if r["task"] == "train" else "WEIGHTS")
            assert arrays == model_shapes, "the sent arrays are not exactly the model's weights"
            assert r["data"] == {}
            # nothing but the weights travels: serialisation adds ~300 bytes per array (name, dtype, shape)
            assert r["serialized_bytes"] < r["payload_bytes"] + 350 * len(arrays) + 4096, r["serialized_bytes"]
        if r["task"] == "train":
            assert set(r["meta"]) <= ALLOWED_META and r["meta"]["NUM_STEPS_CURRENT_ROUND"] == n_train
        if r["task"] == "validate":
            assert r["data_kind"] == "METRICS" and not arrays and not r["meta"]
            assert r["data"] and all(k.startswith("val_dice") for k in r["data"])
            assert all(isinstance(v, float) and (math.isnan(v) or 0 <= v <= 1) for v in r["data"].values())
    return seen
