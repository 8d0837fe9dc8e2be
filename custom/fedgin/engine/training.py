"""Local and centralized training on prepared datalists (what ``fedgin train`` does, and the local and centralized
runs of the experiments): a thin loop around :class:`fedgin.engine.trainer.Engine` that validates, keeps the best
model and writes model files that carry everything evaluation and prediction need (``model_meta``).

FLARE trains with the same engine, one round at a time, through :class:`fedgin.engine.site.Site`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from fedgin.data.datalist import load_datalist
from fedgin.engine.checkpoint import save_model_file
from fedgin.engine.config import TrainConfig
from fedgin.engine.data import SliceSet
from fedgin.engine.trainer import Engine

__all__ = ["train", "model_meta", "clip_percentiles_of"]


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
    from fedgin.engine.methods import get_method
    from fedgin.engine.trainer import resolve_device
    from fedgin.common.outputs import check_output_dir

    optimizer = get_method(config.method).optimizer
    if optimizer != "fedavg":
        raise ValueError(f"method {config.method}: {optimizer} is a federated optimiser: it trains in a federation "
                         f"only (use the method without +{optimizer} here)")
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
