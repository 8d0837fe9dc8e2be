"""What each privacy filter costs: test Dice of FedGIN on the demo phantom with ``privacy`` none / percentile / svt.

    python benchmarks/privacy_filters.py [--rounds 10] [--output runs/bench_privacy]

Every variant is the same job (same phantom sites, seed, rounds) in the real ``nvflare simulator``; only the job
variable ``privacy`` differs. Prints a table of mean 3D Dice on the held-out CT and MRI test cases and the bytes a
site sent per round (from its outgoing audit), and writes ``privacy_filters.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "none": {"filter": "none"},
    "percentile 10 (NVFlare sample)": {"filter": "percentile", "percentile": 10, "gamma": 0.02},
    "percentile 50, gamma 1e-5": {"filter": "percentile", "percentile": 50, "gamma": 1e-5},
    "svt (NVFlare sample)": {"filter": "svt", "fraction": 0.1, "epsilon": 0.2},
}


def main() -> None:
    from fedgin.experiments.demo import SITES, phantom_sites
    from fedgin.flare.job import make_recipe
    from fedgin.flare.simulate import run_simulator
    from fedgin.engine.evaluation import evaluate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--output", default="runs/bench_privacy")
    a = p.parse_args()
    out = Path(a.output).resolve()
    organs = ["liver", "spleen", "kidney_left", "kidney_right"]
    datalists = phantom_sites(out, 16, organs, 4.0, 96, 0)
    rows = {}
    for name, privacy in VARIANTS.items():
        slug = name.split(" (")[0].replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        job = make_recipe({"method": "gin", "num_rounds": a.rounds, "classes": organs,
                           "data_root": str(out / "data"), "privacy": privacy})
        sim = run_simulator(job, out / f"ws_{slug}", list(SITES), echo=None)
        res = evaluate(sim["global_model"], list(datalists.values()), "test", progress=False)
        audit = [json.loads(x) for x in (sim["workspace"] / "site-ct" / "simulate_job" /
                                         "outgoing_audit.jsonl").read_text().splitlines()]
        train = [r for r in audit if r["task"] == "train"]
        rows[name] = {"privacy": privacy, "seconds": round(time.perf_counter() - t0),
                      "dice": {m: s["mean_dice"] for m, s in res["summary"]["per_modality"].items()},
                      "bytes_per_round": train[-1]["serialized_bytes"]}
        print(f"{name:32s} CT {rows[name]['dice']['ct']:.3f}  MRI {rows[name]['dice']['mri']:.3f}  "
              f"{rows[name]['seconds']} s", flush=True)
    (out / "privacy_filters.json").write_text(json.dumps(rows, indent=2))
    print("\n| privacy | CT Dice | MRI Dice | bytes sent per round |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['dice']['ct']:.3f} | {r['dice']['mri']:.3f} | {r['bytes_per_round']:,} |")


if __name__ == "__main__":
    main()
