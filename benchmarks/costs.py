"""What FedGIN costs, measured side by side in one run (these machines are noisy: only ratios are compared).

    python benchmarks/costs.py [--device auto] [--output runs/benchmarks] [--skip-federated]

1. GIN's cost as a fraction of one training step, batch 8, 4 classes, at the demo size (96x96, U-Net 16-32-64-128)
   and the paper's (256x256, 5-level U-Net 32-64-128-256-512); GIN timed alone and the step with and without GIN,
   interleaved.
2. Engine throughput (slices/s) against a bare PyTorch loop with the same model, loss, optimiser, batch and
   in-memory data (demo size: 96x96, U-Net 16-32-64-128, batch 8), interleaved; and the slice cache's loading rate
   (memory-mapped files, the slower path) against the rate training consumes slices.
3. One federated round in ``nvflare simulator`` (demo phantom, 2 sites) against the local work it contains (each
   site's task: validating the incoming global model + one local epoch), and the bytes each site sends per round.
4. Peak memory of a site (resident set size of a process doing one round at demo size; on CUDA also the peak
   allocated GPU memory).
5. Precision: one training step (no augmentation) in fp32, fp32 + channels-last, and the device's mixed precision
   (bf16 autocast on CPUs with bf16 matrix units, fp16 on CUDA) with and without channels-last, at the demo size
   (96x96, U-Net 16-32-64-128) and the paper's (256x256, 5-level U-Net), batch 8, interleaved.

Everything trains in the engine's default precision (mixed where the hardware has it, channels-last); the bare
loop of 2. runs in the same precision and memory format, so that the ratio measures the engine's own overhead.

Prints a table and writes ``costs.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

DEMO_ORGANS = ["liver", "spleen", "kidney_left", "kidney_right"]
#: slice size -> U-Net channels: the demo's and the paper's configuration
PRECISION_SIZES = {96: [16, 32, 64, 128], 256: [32, 64, 128, 256, 512]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def gin_fraction(device: str, repeats: int) -> dict:
    """GIN alone against one training step with and without GIN, interleaved, at the demo size (96², U-Net
    16-32-64-128) and the paper's (256², 5-level U-Net), batch 8, in the engine's default precision."""
    from fedgin.augment import build_augmentation
    from fedgin.engine import Engine, TrainConfig
    from fedgin.engine.precision import precision_name

    out = {}
    for size, channels in PRECISION_SIZES.items():
        model = {"channels": channels, "strides": [2] * (len(channels) - 1)}
        engines = {m: Engine(DEMO_ORGANS, TrainConfig.from_dict({"method": m, "batch_size": 8, "model": model}),
                             device) for m in ("none", "gin")}
        dev = engines["none"].device
        gin = build_augmentation("gin").to(dev)
        x = torch.randn(8, 1, size, size, device=dev)
        y = torch.randint(0, 5, (8, size, size), device=dev)
        g = torch.Generator(device=dev.type).manual_seed(0)
        for e in engines.values():  # warm-up
            e.train_batch(x, y)
        gin(x, generator=g)
        rows = {"gin_alone": [], "step_none": [], "step_gin": []}
        for _ in range(repeats):
            rows["gin_alone"].append(_timed(lambda: gin(x, generator=g), dev))
            rows["step_none"].append(_timed(lambda: engines["none"].train_batch(x, y), dev))
            rows["step_gin"].append(_timed(lambda: engines["gin"].train_batch(x, y), dev))
        med = {k: statistics.median(v) for k, v in rows.items()}
        out[str(size)] = {"seconds": med, "gin_over_step": med["gin_alone"] / med["step_none"],
                          "step_gin_over_step_none": med["step_gin"] / med["step_none"],
                          "precision": precision_name(engines["none"].autocast_dtype)}
    return {"device": str(dev), "sizes": out, "repeats": repeats}


def _toy_datalist(root: Path, slices: int, size: int) -> Path:
    """A site of random slices in the datalist contract (cases of 20 slices), for throughput only."""
    rng = np.random.default_rng(0)
    (root / "cases").mkdir(parents=True)
    entries = []
    for c in range(slices // 20):
        img = rng.normal(size=(20, size, size)).astype(np.float32)
        lbl = rng.integers(0, 5, (20, size, size)).astype(np.uint8)
        np.save(root / "cases" / f"c{c}_image.npy", img)
        np.save(root / "cases" / f"c{c}_label.npy", lbl)
        entries.append({"case_id": f"c{c}", "modality": "ct", "image": f"cases/c{c}_image.npy",
                        "label": f"cases/c{c}_label.npy", "num_slices": 20, "spacing_mm": [4, 4, 4],
                        "affine": np.eye(4).tolist()})
    dl = {"format": "fedgin-slices/1", "site": "bench", "modality": "ct", "layout": "toy", "source": "toy",
          "labels": {"0": "background", **{str(i + 1): c for i, c in enumerate(DEMO_ORGANS)}},
          "spacing_mm": [4.0, 4.0], "size_px": [size, size], "normalization": "toy", "seed": 0,
          "training": entries, "validation": [], "test": []}
    (root / "datalist.json").write_text(json.dumps(dl))
    return root / "datalist.json"


def engine_vs_bare(device: str, steps: int, repeats: int) -> dict:
    from fedgin.engine import Engine, SliceSet, TrainConfig
    from fedgin.engine.loss import SegmentationLoss
    from fedgin.engine.model import build_model
    from fedgin.engine.config import ModelConfig

    cfg = TrainConfig.from_dict({"method": "none", "batch_size": 8, "model": {"channels": [16, 32, 64, 128],
                                                                              "strides": [2, 2, 2]}})
    with tempfile.TemporaryDirectory() as tmp:
        path = _toy_datalist(Path(tmp), 400, 96)
        memory = SliceSet([path], "training", in_memory=True)
        mapped = SliceSet([path], "training", in_memory=False)
        engine = Engine(DEMO_ORGANS, cfg, device)
        dev = engine.device
        model = build_model(len(DEMO_ORGANS), ModelConfig.from_dict(cfg.to_dict()["model"])).to(
            dev, memory_format=engine.memory_format)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = SegmentationLoss(len(DEMO_ORGANS), cfg.lambda_dice, cfg.lambda_focal, cfg.focal_gamma,
                                   cfg.loss_variant)
        images = torch.from_numpy(np.concatenate([np.asarray(c.image) for c in memory.cases]))[:, None].to(dev)
        images = images.contiguous(memory_format=engine.memory_format)
        amp = dict(device_type=dev.type, dtype=engine.autocast_dtype or torch.float32, enabled=engine.amp)
        labels = torch.from_numpy(np.concatenate([np.asarray(c.label) for c in memory.cases])).long().to(dev)
        rng = np.random.default_rng(0)

        def bare():
            model.train()
            for _ in range(steps):
                idx = torch.from_numpy(rng.choice(len(images), 8, replace=False)).to(dev)
                with torch.autocast(**amp):
                    logits = model(images[idx])
                loss = loss_fn(logits.float(), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        engine.train_steps(memory, 3)  # warm-up both
        bare()
        t_engine, t_bare = [], []
        for _ in range(repeats):
            t_engine.append(_timed(lambda: engine.train_steps(memory, steps), dev))
            t_bare.append(_timed(bare, dev))
        rate_engine = steps * 8 / statistics.median(t_engine)
        rate_bare = steps * 8 / statistics.median(t_bare)
        # loading: memory-mapped cache, shuffled batches, as training draws them
        batches = [b for _ in range(3) for b in mapped.epoch(8, np.random.default_rng(1))]
        t0 = time.perf_counter()
        for b in batches:
            mapped.batch(b)
        load_rate = len(batches) * 8 / (time.perf_counter() - t0)
    return {"device": str(dev), "engine_slices_per_s": rate_engine, "bare_slices_per_s": rate_bare,
            "engine_over_bare": rate_engine / rate_bare, "cache_load_slices_per_s": load_rate,
            "load_over_consumption": load_rate / rate_engine, "steps": steps, "repeats": repeats}


def precision_speedup(device: str, repeats: int) -> dict:
    """Seconds per training step (median of interleaved repetitions) per precision variant and size."""
    from fedgin.engine import Engine, TrainConfig
    from fedgin.engine.precision import precision_name

    out: dict = {}
    for size, channels in PRECISION_SIZES.items():
        model = {"channels": channels, "strides": [2] * (len(channels) - 1)}
        variants = {}
        for amp in (False, True):
            for cl in (False, True):
                e = Engine(DEMO_ORGANS, TrainConfig.from_dict({"method": "none", "batch_size": 8, "amp": amp,
                                                               "channels_last": cl, "model": model}), device)
                if amp and not e.amp:
                    continue  # no mixed precision on this device: nothing to compare
                variants[f"{precision_name(e.autocast_dtype)}{' + channels-last' if cl else ''}"] = e
        dev = next(iter(variants.values())).device
        x = torch.randn(8, 1, size, size, device=dev)
        y = torch.randint(0, len(DEMO_ORGANS) + 1, (8, size, size), device=dev)
        for e in variants.values():  # warm-up
            e.train_batch(x, y)
            e.train_batch(x, y)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for k, e in variants.items():
                times[k].append(_timed(lambda: e.train_batch(x, y), dev))
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["fp32"]
        out[str(size)] = {"seconds": med, "speedup_over_fp32": {k: base / v for k, v in med.items()}}
    from fedgin.engine.precision import cpu_bf16_flags

    return {"device": str(dev), "cpu_bf16_flags": list(cpu_bf16_flags()), "sizes": out, "repeats": repeats}


def round_rows(ws: Path, sites: list[str]) -> list[dict]:
    """Per round after the first (which includes start-up): the server's round wall time (``Round r started`` to
    ``finished``) and the slowest site's task and training seconds (the executor's ``round r task done`` lines)."""
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"

    def when(text):
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    server = (ws / "server" / "log.txt").read_text()
    start = {int(r): when(t) for t, r in re.findall(stamp + r".*Round (\d+) started\.", server, re.M)}
    end = {int(r): when(t) for t, r in re.findall(stamp + r".*Round (\d+) finished\.", server, re.M)}
    tasks: dict[int, list[float]] = {}
    train: dict[int, list[float]] = {}
    for site in sites:
        log = (ws / site / "log.txt").read_text()
        for r, task, tr in re.findall(r"round (\d+) task done in ([\d.]+) s \(validation of the global model "
                                      r"[\d.]+ s, training ([\d.]+) s\)", log):
            tasks.setdefault(int(r) - 1, []).append(float(task))
            train.setdefault(int(r) - 1, []).append(float(tr))
    rows = []
    for r in sorted(end):
        if r == 0 or r not in tasks:
            continue
        rows.append({"round": r, "wall_s": end[r] - start[r], "max_site_task_s": max(tasks[r]),
                     "max_site_training_s": max(train[r])})
    return rows


def federated_round(work: Path, rounds: int, size: int = 96, spacing: float = 4.0, channels: list[int] | None = None,
                    cases: int = 16) -> dict:
    """Rounds of the demo federation (or another size) in ``nvflare simulator``: round wall time against the
    site work it contains, and the bytes a site sends."""
    from fedgin.experiments.demo import SITES, phantom_sites
    from fedgin.flare.job import make_recipe
    from fedgin.flare.simulate import run_simulator

    phantom_sites(work, cases, DEMO_ORGANS, spacing, size, 0)
    channels = channels or PRECISION_SIZES[96]
    job = make_recipe({"method": "gin", "num_rounds": rounds, "classes": DEMO_ORGANS,
                       "data_root": str(work / "data"), "size_px": [size, size], "spacing_mm": [spacing, spacing],
                       "channels": channels, "strides": [2] * (len(channels) - 1), "share_local_models": False})
    sim = run_simulator(job, work / "ws", list(SITES), echo=None)
    ws = sim["workspace"]
    rows = round_rows(ws, list(SITES))
    audit = [json.loads(x) for x in (ws / "site-ct" / "simulate_job" / "outgoing_audit.jsonl")
             .read_text().splitlines()]
    sent = [r["serialized_bytes"] for r in audit if r["task"] == "train"]
    wall = statistics.median(r["wall_s"] for r in rows)
    task = statistics.median(r["max_site_task_s"] for r in rows)
    training = statistics.median(r["max_site_training_s"] for r in rows)
    return {"rounds_measured": len(rows), "round_wall_s": wall, "site_task_s": task, "site_training_s": training,
            "overhead_vs_site_task": wall / task - 1, "overhead_vs_training": wall / training - 1,
            "bytes_per_site_per_round": statistics.median(sent), "simulator_seconds": sim["seconds"], "rows": rows}


PEAK_SCRIPT = """
import json, sys, time, torch
from fedgin.engine import TrainConfig
from fedgin.engine.site import Site
def hwm():  # peak resident set of this process in MiB (VmHWM; ru_maxrss would inherit the parent's peak)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rss0 = hwm()
site = Site(sys.argv[1], {organs}, TrainConfig.from_dict({{"method": "gin", "batch_size": 8,
            "model": {{"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}}}}), device=sys.argv[2])
w = site.engine.get_weights()
if site.engine.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
site.train_round(w, epochs=1)
out = {{"rss_after_imports_mib": rss0, "peak_rss_mib": hwm(),
       "training_slices": site.num_train_samples, "device": str(site.engine.device)}}
if site.engine.device.type == "cuda":
    out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps(out))
"""


def site_memory(work: Path, device: str) -> dict:
    from fedgin.experiments.demo import phantom_sites

    datalists = phantom_sites(work, 16, DEMO_ORGANS, 4.0, 96, 0)
    p = subprocess.run([sys.executable, "-c", PEAK_SCRIPT.format(organs=DEMO_ORGANS), str(datalists["site-ct"]),
                        device], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="runs/benchmarks")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--rounds", type=int, default=4, help="simulator rounds (the first is not measured)")
    p.add_argument("--skip-federated", action="store_true")
    p.add_argument("--only", choices=["precision", "gin"], help="run one measure only")
    a = p.parse_args()
    out = Path(a.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from fedgin.engine.precision import cpu_bf16_flags

    res = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "cpu_bf16_flags": list(cpu_bf16_flags()),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if a.only:
        res[a.only] = precision_speedup(a.device, a.repeats) if a.only == "precision" else gin_fraction(
            a.device, a.repeats)
        print(json.dumps(res, indent=2))
        (out / f"costs_{a.only}.json").write_text(json.dumps(res, indent=2))
        return
    print("1/5 GIN against one training step (256x256, batch 8, 5-level U-Net) ...", flush=True)
    res["gin"] = gin_fraction(a.device, a.repeats)
    print("2/5 engine against a bare PyTorch loop, and the slice cache's loading rate ...", flush=True)
    res["throughput"] = engine_vs_bare(a.device, steps=20, repeats=a.repeats)
    if not a.skip_federated:
        print("3/5 federated rounds in nvflare simulator (demo phantom, 2 sites) ...", flush=True)
        res["federated"] = federated_round(out / "federated", a.rounds)
    print("4/5 peak memory of a site ...", flush=True)
    res["memory"] = site_memory(out / "federated", a.device)
    print("5/5 precision: fp32, channels-last, mixed precision, at 96² and 256² ...", flush=True)
    res["precision"] = precision_speedup(a.device, a.repeats)
    (out / "costs.json").write_text(json.dumps(res, indent=2))

    g, t, m = res["gin"], res["throughput"], res["memory"]
    lines = ["| measure | value | target |", "|---|---|---|"]
    for size, r in g["sizes"].items():
        lines += [f"| GIN / one training step ({size}², batch 8, {g['device']}, {r['precision']}) | "
                  f"{r['gin_over_step']:.1%} ({r['seconds']['gin_alone'] * 1e3:.1f} ms / "
                  f"{r['seconds']['step_none'] * 1e3:.0f} ms) | ≤ 2 % |",
                  f"| step with GIN / step without ({size}²) | {r['step_gin_over_step_none']:.3f} | |"]
    lines += [
             f"| engine / bare PyTorch loop (slices/s, 96², batch 8) | {t['engine_over_bare']:.3f} "
             f"({t['engine_slices_per_s']:.0f} / {t['bare_slices_per_s']:.0f}) | ≥ 0.95 |",
             f"| slice cache loading / training consumption | {t['load_over_consumption']:.0f}× "
             f"({t['cache_load_slices_per_s']:.0f} / {t['engine_slices_per_s']:.0f} slices/s) | > 1 |"]
    if "federated" in res:
        f = res["federated"]
        lines += [f"| federated round / the site work it contains | {f['overhead_vs_site_task']:+.1%} "
                  f"({f['round_wall_s']:.1f} s / {f['site_task_s']:.1f} s) | ≤ +10 % |",
                  f"| federated round / local training alone | {f['overhead_vs_training']:+.1%} "
                  f"({f['site_training_s']:.1f} s training) | |",
                  f"| bytes a site sends per round | {int(f['bytes_per_site_per_round']):,} | |"]
    lines.append(f"| peak memory of a site (RSS; after imports) | {m['peak_rss_mib']:.0f} MiB "
                 f"({m['rss_after_imports_mib']:.0f} MiB) | |")
    if "peak_gpu_mib" in m:
        lines.append(f"| peak GPU memory of a site | {m['peak_gpu_mib']:.0f} MiB | |")
    for size, r in res["precision"]["sizes"].items():
        for k, v in r["speedup_over_fp32"].items():
            if k != "fp32":
                lines.append(f"| step speed-up, {k} / fp32 ({size}², batch 8) | {v:.2f}× "
                             f"({r['seconds']['fp32'] * 1e3:.0f} → {r['seconds'][k] * 1e3:.0f} ms) | |")
    print("\n" + "\n".join(lines))
    print(f"\n{out / 'costs.json'}")


if __name__ == "__main__":
    main()
