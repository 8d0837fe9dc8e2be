"""The GPU path in one short run: what FedGIN costs and whether fp16 AMP trains as well as fp32, on a CUDA machine.

    python benchmarks/gpu_check.py [--output runs/gpu_check] [--steps 300] [--rounds 3]
    python benchmarks/gpu_check.py --quick      # toy sizes: checks the script itself (any device, ~2 min on 2 CPUs)

Steps (each prints as it goes; everything lands in ``<output>/gpu_check.json``):

1. the machine: torch, CUDA, the GPU's name and memory;
2. one training step in fp32, fp32 + channels-last, fp16 AMP and fp16 AMP + channels-last, at 96² (demo U-Net) and
   256² (paper's 5-level U-Net), batch 8 (``costs.precision_speedup``);
3. GIN alone against a training step with and without it, on the device, both sizes (``costs.gin_fraction``);
4. fp16 AMP against fp32, trained side by side for ``--steps`` steps from the same seed on the same phantom CT site
   at the paper's scale (1.5 mm, 256², U-Net 32-512, GIN): validation Dice of each, slices per second and peak GPU
   memory (the check: AMP's Dice within 0.05 of fp32's);
5. ``--rounds`` federated rounds of the paper-scale configuration in ``nvflare simulator`` (2 phantom sites sharing
   the GPU, AMP, GIN on the device): round wall time against the site work it contains.

Sized to finish within a few minutes on one modern GPU (a lent GPU's time is short: run it as it is, once).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import costs  # noqa: E402  (the side-by-side measures of benchmarks/costs.py)

PAPER = {"spacing": 1.5, "size": 256, "channels": [32, 64, 128, 256, 512]}
QUICK = {"spacing": 8.0, "size": 48, "channels": [8, 16, 32]}


def machine() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
    return info


def amp_against_fp32(work: Path, scale: dict, steps: int, cases: int, device: str) -> dict:
    """The same training (seed, data, steps) in fp32 and in the device's mixed precision."""
    from fedgin.data import prepare_site
    from fedgin.engine import TrainConfig
    from fedgin.phantom import generate_dataset
    from fedgin.engine.training import train

    raw, site = work / "raw_ct", work / "site-ct"
    if not (site / "datalist.json").is_file():
        generate_dataset(raw, "ct", cases, seed=0, progress=False)
        prepare_site(layout="totalseg", input_dir=raw, output_dir=site, site="site-ct", modality="ct",
                     organs=costs.DEMO_ORGANS, spacing=scale["spacing"], size=scale["size"], progress=False)
    out = {}
    for amp in (False, True):
        cfg = TrainConfig.from_dict({"method": "gin", "seed": 0, "amp": amp, "model": {
            "channels": scale["channels"], "strides": [2] * (len(scale["channels"]) - 1)}})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = train([site / "datalist.json"], work / f"train_amp{int(amp)}", cfg, steps=steps,
                    eval_every=max(1, steps // 3), device=device, progress=False)
        seconds = time.perf_counter() - t0
        out["amp" if amp else "fp32"] = {
            "best_val_dice": res["best_val_dice"], "last_val_dice": res["history"][-1].get("val_dice"),
            "seconds": seconds, "slices_per_s": steps * cfg.batch_size / seconds,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
    out["amp_minus_fp32_dice"] = out["amp"]["best_val_dice"] - out["fp32"]["best_val_dice"]
    out["amp_trains_as_well"] = out["amp_minus_fp32_dice"] > -0.05
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="runs/gpu_check")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=300, help="training steps of each side of the AMP check")
    p.add_argument("--rounds", type=int, default=3, help="simulator rounds at paper scale (the first not measured)")
    p.add_argument("--cases", type=int, default=8, help="phantom cases per site")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="toy sizes: check the script on any machine")
    a = p.parse_args()
    scale = QUICK if a.quick else PAPER
    steps, repeats = (30, 3) if a.quick else (a.steps, a.repeats)
    if a.quick:
        costs.PRECISION_SIZES = {32: [8, 16, 32], 48: [8, 16, 32]}
    out = Path(a.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "scale": scale, "quick": a.quick}
    print(f"1/5 machine: {res['machine']}", flush=True)
    print("2/5 one training step per precision ...", flush=True)
    res["precision"] = costs.precision_speedup(a.device, repeats)
    print("3/5 GIN against a training step ...", flush=True)
    res["gin"] = costs.gin_fraction(a.device, repeats)
    print(f"4/5 mixed precision against fp32, {steps} steps each ...", flush=True)
    res["amp_check"] = amp_against_fp32(out / "amp_check", scale, steps, a.cases, a.device)
    print(f"5/5 {a.rounds} federated rounds in nvflare simulator ...", flush=True)
    res["federated"] = costs.federated_round(out / "federated", max(2, a.rounds), size=scale["size"],
                                             spacing=scale["spacing"], channels=scale["channels"], cases=a.cases)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str))

    lines = ["| measure | value |", "|---|---|"]
    for size, r in res["precision"]["sizes"].items():
        for k, v in r["speedup_over_fp32"].items():
            lines.append(f"| step {size}², {k} / fp32 | {v:.2f}× ({r['seconds'][k] * 1e3:.1f} ms) |")
    for size, r in res["gin"]["sizes"].items():
        lines.append(f"| GIN / step {size}² ({r['precision']}) | {r['gin_over_step']:.1%} |")
    c = res["amp_check"]
    for k in ("fp32", "amp"):
        gpu = f", peak GPU {c[k]['peak_gpu_mib']:.0f} MiB" if c[k]["peak_gpu_mib"] else ""
        lines.append(f"| {k}: best validation Dice after {steps} steps | {c[k]['best_val_dice']:.3f} "
                     f"({c[k]['slices_per_s']:.0f} slices/s{gpu}) |")
    lines.append(f"| AMP − fp32 Dice | {c['amp_minus_fp32_dice']:+.3f} ({'ok' if c['amp_trains_as_well'] else 'WORSE'}) |")
    f = res["federated"]
    lines.append(f"| federated round / site work it contains | {f['overhead_vs_site_task']:+.1%} "
                 f"({f['round_wall_s']:.1f} s / {f['site_task_s']:.1f} s) |")
    print("\n" + "\n".join(lines) + f"\n\n{out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
