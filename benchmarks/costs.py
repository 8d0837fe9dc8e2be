"""What FedGIN costs, measured side by side in one run (these machines are noisy: only ratios are compared).

    python benchmarks/costs.py [--device auto] [--output runs/benchmarks] [--skip-federated]

1. GIN's cost as a fraction of one training step: 256x256 slices, batch 8, the paper's 5-level U-Net
   (32-64-128-256-512), 4 classes; GIN timed alone and the step with and without GIN, interleaved.
2. Engine throughput (slices/s) against a bare PyTorch loop with the same model, loss, optimiser, batch and
   in-memory data (demo size: 96x96, U-Net 16-32-64-128, batch 8), interleaved; and the slice cache's loading rate
   (memory-mapped files, the slower path) against the rate training consumes slices.
3. One federated round in ``nvflare simulator`` (demo phantom, 2 sites) against the local work it contains (each
   site's task: validating the incoming global model + one local epoch), and the bytes each site sends per round.
4. Peak memory of a site (resident set size of a process doing one round at demo size; on CUDA also the peak
   allocated GPU memory).

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
    from fedgin.augment import build_augmentation
    from fedgin.engine import Engine, TrainConfig

    model = {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2]}
    engines = {m: Engine(DEMO_ORGANS, TrainConfig.from_dict({"method": m, "batch_size": 8, "model": model}), device)
               for m in ("none", "gin")}
    dev = engines["none"].device
    gin = build_augmentation("gin").to(dev)
    x = torch.randn(8, 1, 256, 256, device=dev)
    y = torch.randint(0, 5, (8, 256, 256), device=dev)
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
    return {"device": str(dev), "seconds": med, "gin_over_step": med["gin_alone"] / med["step_none"],
            "step_gin_over_step_none": med["step_gin"] / med["step_none"], "repeats": repeats}


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
        model = build_model(len(DEMO_ORGANS), ModelConfig.from_dict(cfg.to_dict()["model"])).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = SegmentationLoss(len(DEMO_ORGANS), cfg.lambda_dice, cfg.lambda_focal, cfg.focal_gamma,
                                   cfg.loss_variant)
        images = torch.from_numpy(np.concatenate([np.asarray(c.image) for c in memory.cases]))[:, None].to(dev)
        labels = torch.from_numpy(np.concatenate([np.asarray(c.label) for c in memory.cases])).long().to(dev)
        rng = np.random.default_rng(0)

        def bare():
            model.train()
            for _ in range(steps):
                idx = torch.from_numpy(rng.choice(len(images), 8, replace=False)).to(dev)
                loss = loss_fn(model(images[idx]), labels[idx])
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


def federated_round(work: Path, rounds: int) -> dict:
    from fedgin.demo import SITES, phantom_sites
    from fedgin.flare.job import build_job
    from fedgin.flare.simulate import run_simulator

    phantom_sites(work, 16, DEMO_ORGANS, 4.0, 96, 0)
    job = build_job(work / "job", {"method": "gin", "num_rounds": rounds, "classes": DEMO_ORGANS,
                                   "data_root": str(work / "data"), "size_px": [96, 96], "spacing_mm": [4.0, 4.0],
                                   "share_local_models": False})
    sim = run_simulator(job, work / "ws", list(SITES), echo=None)
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"

    def when(text):
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    server = (work / "ws" / "server" / "log.txt").read_text()
    start = {int(r): when(t) for t, r in re.findall(stamp + r".*Round (\d+) started\.", server, re.M)}
    end = {int(r): when(t) for t, r in re.findall(stamp + r".*Round (\d+) finished\.", server, re.M)}
    tasks: dict[int, list[float]] = {}
    train: dict[int, list[float]] = {}
    for site in SITES:
        log = (work / "ws" / site / "log.txt").read_text()
        for r, task, tr in re.findall(r"round (\d+) task done in ([\d.]+) s \(validation of the global model "
                                      r"[\d.]+ s, training ([\d.]+) s\)", log):
            tasks.setdefault(int(r) - 1, []).append(float(task))
            train.setdefault(int(r) - 1, []).append(float(tr))
    rows = []
    for r in sorted(end):
        if r == 0 or r not in tasks:
            continue  # round 0 includes start-up (data loading, first forward passes)
        wall = end[r] - start[r]
        rows.append({"round": r, "wall_s": wall, "max_site_task_s": max(tasks[r]), "max_site_training_s": max(train[r])})
    audit = [json.loads(x) for x in (work / "ws" / "site-ct" / "simulate_job" / "outgoing_audit.jsonl")
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
from fedgin.site import Site
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
    from fedgin.demo import phantom_sites

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
    a = p.parse_args()
    out = Path(a.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    res = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print("1/4 GIN against one training step (256x256, batch 8, 5-level U-Net) ...", flush=True)
    res["gin"] = gin_fraction(a.device, a.repeats)
    print("2/4 engine against a bare PyTorch loop, and the slice cache's loading rate ...", flush=True)
    res["throughput"] = engine_vs_bare(a.device, steps=20, repeats=a.repeats)
    if not a.skip_federated:
        print("3/4 federated rounds in nvflare simulator (demo phantom, 2 sites) ...", flush=True)
        res["federated"] = federated_round(out / "federated", a.rounds)
    print("4/4 peak memory of a site ...", flush=True)
    res["memory"] = site_memory(out / "federated", a.device)
    (out / "costs.json").write_text(json.dumps(res, indent=2))

    g, t, m = res["gin"], res["throughput"], res["memory"]
    lines = ["| measure | value | target |", "|---|---|---|",
             f"| GIN / one training step (256², batch 8, {g['device']}) | {g['gin_over_step']:.1%} "
             f"({g['seconds']['gin_alone'] * 1e3:.0f} ms / {g['seconds']['step_none'] * 1e3:.0f} ms) | ≤ 3 % |",
             f"| step with GIN / step without | {g['step_gin_over_step_none']:.3f} | |",
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
    print("\n" + "\n".join(lines))
    print(f"\n{out / 'costs.json'}")


if __name__ == "__main__":
    main()
