"""Centralized/local training and evaluation runs on prepared datalists (what ``fedgin train``/``evaluate`` do).

Both are thin loops around ``fedgin.engine.Engine``; FLARE uses the same engine through ``fedgin.flare``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from fedgin.data.datalist import load_datalist, task_labels
from fedgin.engine import Engine, SliceSet, TrainConfig, load_model_file, save_model_file
from fedgin.engine.checkpoint import ModelFileError

__all__ = ["train", "evaluate", "model_meta", "format_dice_table"]


def clip_percentiles_of(datalist: dict) -> list[float] | None:
    """The z-score clip a datalist was prepared with (``clip_percentiles``; older datalists: read from the
    ``normalization`` text; prepare's default (0.5, 99.5) when neither says)."""
    if "clip_percentiles" in datalist:
        return datalist["clip_percentiles"]
    import re

    m = re.search(r"clip to the volume's ([\d.]+)-([\d.]+) percentiles", datalist.get("normalization", ""))
    if m:
        return [float(m.group(1)), float(m.group(2))]
    return None if datalist.get("normalization", "").startswith("per-volume z-score: subtract") else [0.5, 99.5]


def model_meta(engine: Engine, datalists: Sequence[dict], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a model file must carry so that evaluation and prediction need no training configuration."""
    first = datalists[0]
    return {
        "classes": engine.classes,
        "model_config": engine.config.to_dict()["model"],
        "size_px": list(first["size_px"]),
        "spacing_mm": list(first.get("spacing_mm", [])),
        "normalization": first.get("normalization", ""),
        "clip_percentiles": clip_percentiles_of(first),
        "train_config": engine.config.to_dict(),
        "provenance": {"datalists": [d["path"] for d in datalists], **(extra or {})},
    }


def train(
    datalists: Sequence[str | Path],
    output: str | Path,
    config: TrainConfig,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train one model on the pooled training slices of ``datalists`` (one datalist = local/single-site training).

    Validation (3D Dice on the pooled validation cases) runs after every epoch, or every ``eval_every`` steps in
    step mode; it steps ReduceLROnPlateau and keeps the best model.

    Writes into ``output``: ``model.pt`` (last), ``best_model.pt`` (best validation Dice; the last when there is no
    validation case), ``config.json``, ``history.json``, TensorBoard events in ``tb/``.

    Returns:
        ``{"model": path, "best_model": path, "best_val_dice": float, "history": [...], "seconds": float}``.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    for name, value in (("epochs", epochs), ("steps", steps), ("eval_every", eval_every)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}: a run that trains nothing is "
                             "refused")
    from fedgin.engine.trainer import resolve_device
    from fedgin.outputs import check_output_dir

    resolve_device(device)
    output = check_output_dir(output)
    dls = [load_datalist(d) for d in datalists]
    output.mkdir(parents=True, exist_ok=True)
    try:
        return _train(dls, output, config, epochs, steps, eval_every, device, progress)
    except OSError as e:  # TensorBoard's writer names no file: say which run folder could not be written
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(output)) from e


def _train(dls: list[dict], output: Path, config: TrainConfig, epochs: int | None, steps: int | None,
           eval_every: int | None, device: str, progress: bool) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    train_set = SliceSet(dls, "training")
    val_set = SliceSet(dls, "validation")
    if len(train_set) == 0:
        raise ValueError(f"no training cases in {[d['path'] for d in dls]}")
    engine = Engine(train_set.classes, config, device=device)
    (output / "config.json").write_text(json.dumps({"train": config.to_dict(), "datalists": [d["path"] for d in dls],
                                                    "epochs": epochs, "steps": steps}, indent=2))
    writer = SummaryWriter(str(output / "tb"))
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    total = steps if steps is not None else epochs * steps_per_epoch
    chunk = eval_every or steps_per_epoch
    history: list[dict[str, Any]] = []
    best = -math.inf
    meta = model_meta(engine, dls)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"train {config.method}", unit="step")

    def on_step(step: int, loss: float) -> None:
        writer.add_scalar("train/loss", loss, step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

    done = 0
    last_empty: list[str] = []
    while done < total:
        n = min(chunk, total - done)
        stats = engine.train_steps(train_set, n, on_step=on_step)
        done += stats.steps
        record: dict[str, Any] = {"step": done, "train_loss": stats.mean_loss, "lr": engine.lr,
                                  "slices_per_s": stats.samples / max(stats.seconds, 1e-9)}
        if val_set.num_cases:
            res = engine.evaluate(val_set)
            engine.step_scheduler(res["loss"])
            last_empty = res["summary"]["empty"]
            pred_voxels = {n: sum(c["voxels"][n]["pred"] for c in res["cases"]) for n in engine.classes}
            record.update(val_loss=res["loss"], val_dice=res["mean_dice"], val_pred_voxels=pred_voxels)
            writer.add_scalar("val/loss", res["loss"], done)
            writer.add_scalar("val/dice", res["mean_dice"], done)
            for n, v in pred_voxels.items():  # 0 for a class on every case: the model predicts nothing of it
                writer.add_scalar(f"val/pred_voxels/{n}", v, done)
            if res["mean_dice"] > best:
                best = res["mean_dice"]
                save_model_file(output / "best_model.pt", engine.model, {**meta, "step": done, "val_dice": best})
        writer.add_scalar("train/lr", engine.lr, done)
        history.append(record)
        if bar is not None:
            bar.set_postfix(loss=f"{stats.mean_loss:.3f}", val_dice=f"{record.get('val_dice', float('nan')):.3f}")
    if bar is not None:
        bar.close()
    writer.close()
    model_path = save_model_file(output / "model.pt", engine.model, {**meta, "step": done})
    if not val_set.num_cases:
        save_model_file(output / "best_model.pt", engine.model, {**meta, "step": done})
    (output / "history.json").write_text(json.dumps(history, indent=2))
    if last_empty:
        print(f"WARNING: the final model predicts no voxel of {', '.join(last_empty)} on any validation case: a "
              f"collapsed model (see val/pred_voxels in {output / 'tb'}); for a small organ try more epochs, "
              'a --config with {"sampler": "organ"} or a weaker GIN, {"augment_args": {"alpha_range": [0, 0.5]}}',
              flush=True)
    return {"model": str(model_path), "best_model": str(output / "best_model.pt"), "best_val_dice": best,
            "empty_classes": last_empty,
            "history": history, "seconds": time.perf_counter() - t0}


def evaluate(
    model_file: str | Path,
    datalists: Sequence[str | Path],
    split: str = "test",
    *,
    device: str = "auto",
    progress: bool = True,
    surface: bool = False,
    geometry: str = "cache",
) -> dict[str, Any]:
    """Per-case, per-class 3D Dice of a model file on one split of ``datalists`` (``surface``: also HD95 in mm
    and NSD, ``fedgin.engine.surface``); ``geometry``: ``"cache"`` (the cached grid) or ``"source"`` (each
    prediction mapped back onto its source volume and scored there with the source voxel size,
    ``fedgin.engine.Engine.evaluate``).

    Returns:
        ``{"model", "split", "classes", "cases": [...], "summary": {...}, "mean_dice": float}``; ``mean_dice`` is the
        mean over foreground classes and cases (classes absent from a case's ground truth excluded).

    Raises:
        ModelFileError: unreadable model, or a model for other classes or another slice size than the data.
    """
    model, meta = load_model_file(model_file)
    dls = [load_datalist(d) for d in datalists]
    for d in dls:
        if task_labels(d) != list(meta["classes"]):
            raise ModelFileError(
                f"{model_file}: model classes {meta['classes']} do not match {d['path']} classes {task_labels(d)}"
            )
        if meta.get("size_px") and list(meta["size_px"]) != list(d["size_px"]):
            raise ModelFileError(f"{model_file}: model made for {meta['size_px']} px slices, {d['path']} has "
                                 f"{d['size_px']} (prepare the data with the model's --size/--spacing)")
    config = TrainConfig.from_dict({"method": "none", "model": meta["model_config"]})
    engine = Engine(list(meta["classes"]), config, device=device)
    engine.model.load_state_dict(model.state_dict())
    data = SliceSet(dls, split)
    if data.num_cases == 0:
        raise ValueError(f"no {split} cases in {[d['path'] for d in dls]}")
    res = engine.evaluate(data, progress=progress, surface=surface, geometry=geometry)
    return {"model": str(model_file), "split": split, "classes": engine.classes, **res}


def format_dice_table(result: dict[str, Any], title: str | None = None) -> str:
    """A plain-text table: one row per modality (and 'all'), one column per class, plus the mean."""
    classes = result["classes"]
    summary = result["summary"]
    rows = [(m, s) for m, s in summary["per_modality"].items()] + [("all", summary)]
    width = max(10, *(len(c) + 2 for c in classes))
    lines = []
    if title:
        lines.append(title)
    header = f"{'test set':<10}" + "".join(f"{c:>{width}}" for c in classes) + f"{'mean':>{width}}"
    lines += [header, "-" * len(header)]
    for name, s in rows:
        n = max((s["per_class"][c]["n"] for c in classes), default=0)
        cells = "".join(f"{_fmt(s['per_class'][c]['mean']):>{width}}" for c in classes)
        lines.append(f"{name + f' ({n})':<10}" + cells + f"{_fmt(s['mean_dice']):>{width}}")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
