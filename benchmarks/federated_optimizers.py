"""What the federated optimisers cost against FedGIN's FedAvg, run side by side in NVFlare's simulator.

    python benchmarks/federated_optimizers.py [--rounds 6] [--cases 8] [--size 64] [--output runs/bench_fedopt]

The same demo phantom (CT + MRI site), model and rounds for ``gin``, ``gin+fedprox``, ``gin+fedopt`` and
``gin+scaffold``, one after the other (these machines are noisy: compare the ratios, and rerun to see their spread).
Per method: the simulator's wall time, the median round (server ``Round r started`` → ``finished``, rounds after the
first), the slowest site's local training per round, the bytes a site sends per round (its own audit), and the
final global model's mean test Dice on both sites' test cases. Writes ``federated_optimizers.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from costs import DEMO_ORGANS, round_rows  # noqa: E402

METHODS = ("gin", "gin+fedprox", "gin+fedopt", "gin+scaffold")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--spacing", type=float, default=6.0)
    p.add_argument("--output", default="runs/bench_fedopt")
    a = p.parse_args()
    from fedgin.engine.evaluation import evaluate
    from fedgin.experiments.demo import SITES, phantom_sites
    from fedgin.flare.job import job_name, make_recipe
    from fedgin.flare.simulate import run_simulator

    out = Path(a.output).resolve()
    datalists = phantom_sites(out / "phantom", a.cases, DEMO_ORGANS, a.spacing, a.size, 0)
    root = Path(next(iter(datalists.values()))).parents[1]
    results = {}
    for method in METHODS:
        values = {"method": method, "num_rounds": a.rounds, "classes": DEMO_ORGANS, "data_root": str(root),
                  "size_px": [a.size, a.size], "spacing_mm": [a.spacing, a.spacing], "share_local_models": False}
        print(f"{method}: {a.rounds} rounds ...", flush=True)
        sim = run_simulator(make_recipe(values, name=job_name(method)), out / "ws" / job_name(method), list(SITES),
                            echo=None)
        rows = round_rows(sim["workspace"], list(SITES))
        audit = [json.loads(x) for x in (sim["workspace"] / "site-ct" / "simulate_job" / "outgoing_audit.jsonl")
                 .read_text().splitlines()]
        score = evaluate(sim["global_model"], [datalists[s] for s in SITES], "test", progress=False)
        results[method] = {
            "simulator_s": sim["seconds"], "round_s": statistics.median(r["wall_s"] for r in rows),
            "site_training_s": statistics.median(r["max_site_training_s"] for r in rows),
            "bytes_per_round": statistics.median(r["serialized_bytes"] for r in audit if r["task"] == "train"),
            "test_dice": score["mean_dice"]}
    base = results["gin"]
    print(f"\n{a.rounds} rounds, {a.cases} cases per site, {a.size} px; ratios against gin (FedAvg)")
    print(f"{'method':<14}{'simulator s':>12}{'ratio':>7}{'round s':>9}{'ratio':>7}{'training s':>11}{'ratio':>7}"
          f"{'MB/round':>10}{'ratio':>7}{'test Dice':>10}")
    for m, r in results.items():
        print(f"{m:<14}{r['simulator_s']:>12.1f}{r['simulator_s'] / base['simulator_s']:>7.2f}{r['round_s']:>9.2f}"
              f"{r['round_s'] / base['round_s']:>7.2f}{r['site_training_s']:>11.2f}"
              f"{r['site_training_s'] / base['site_training_s']:>7.2f}{r['bytes_per_round'] / 1e6:>10.2f}"
              f"{r['bytes_per_round'] / base['bytes_per_round']:>7.2f}{r['test_dice']:>10.3f}")
    print("(one run each: a test Dice difference between methods at this size is inside the seed-to-seed noise "
          "unless fedgin compare --seeds shows otherwise)")
    (out / "federated_optimizers.json").write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
