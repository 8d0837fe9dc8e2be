"""``fedgin stats``: NVFlare's federated statistics of the prepared sites, as a table and a picture.

    fedgin stats                                   # the demo phantom's CT and MRI site
    fedgin stats --data-root data --sites site-ct,site-mri --output runs/stats

Runs NVFlare's ``FedStatsRecipe`` (``fedgin.flare.stats``) in the simulator: every site computes its counts, sums,
moments and histogram counts locally; NVFlare's privacy cleansers run on each result before it leaves the site; the
server combines them per site and globally. Writes ``site_statistics.json`` (NVFlare's output) and
``site_statistics.png`` (``fedgin.reporting.stats_figure``) into ``--output`` and prints the table.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_stats_parser(sub) -> None:
    from fedgin.common.options import bounded_int, nonnegative_int

    s = sub.add_parser("stats", help="federated statistics of the sites (NVFlare FedStats): intensity histograms "
                                     "inside the body before/after normalisation, organ volume fractions; PNG")
    s.add_argument("--data-root", help="folder with <site>/datalist.json (default: the demo phantom, made in "
                                       "--output)")
    s.add_argument("--sites", help="comma-separated site folders under --data-root (default: every one)")
    s.add_argument("--output", default="runs/stats", help="folder for site_statistics.json/.png (default runs/stats)")
    s.add_argument("--bins", type=bounded_int(2, 1000, " bins"), default=60, help="histogram bins (default 60)")
    s.add_argument("--min-count", type=nonnegative_int, default=10,
                   help="NVFlare's privacy cleanser: a feature with fewer records at a site is not sent (default 10)")
    s.add_argument("--splits", default="training,validation", help="splits whose cases are counted")
    s.add_argument("--no-raw", action="store_true", help="skip the source scans (when they are not at hand)")
    s.add_argument("--cases", type=bounded_int(3, 100000, ""), default=8, help="phantom cases per site (default 8)")
    s.set_defaults(func=stats_command)


def stats_command(a: argparse.Namespace) -> int:
    from fedgin.common.options import OptionError, name_list
    from fedgin.flare.simulate import run_simulator
    from fedgin.flare.stats import STATS_FILE, stats_recipe
    from fedgin.reporting.stats_figure import read_stats, stats_png, stats_table

    out = Path(a.output).resolve()
    if a.data_root:
        root = Path(a.data_root).resolve()
        sites = name_list(a.sites, "--sites") if a.sites else sorted(p.parent.name for p in
                                                                     root.glob("*/datalist.json"))
        missing = [s for s in sites if not (root / s / "datalist.json").is_file()]
        if not sites or missing:
            raise OptionError(f"--data-root {root}: no datalist.json for {missing or 'any site'} (prepare the sites "
                              "with fedgin prepare)")
    else:
        from fedgin.experiments.demo import DEMO_ORGANS, phantom_sites

        datalists = phantom_sites(out / "phantom", a.cases, list(DEMO_ORGANS), 4.0, 96, 0, step="phantom data: ")
        root, sites = Path(next(iter(datalists.values()))).parents[1], list(datalists)
    recipe = stats_recipe(sites, data_root=str(root), bins=a.bins, min_count=a.min_count, raw=not a.no_raw,
                          splits=name_list(a.splits, "--splits"))
    print(f"federated statistics of {', '.join(sites)} ({root}) in NVFlare's simulator ...", flush=True)
    res = run_simulator(recipe, out / "workspace", sites, echo=None, expect=(STATS_FILE,))
    json_file = out / "site_statistics.json"
    shutil.copyfile(res["workspace"] / "server" / "simulate_job" / STATS_FILE, json_file)
    stats = read_stats(json_file)
    png = stats_png(stats, out / "site_statistics.png", f"federated statistics of {', '.join(sites)}")
    print(stats_table(stats))
    print(f"statistics: {json_file}\npicture: {png}")
    return 0
