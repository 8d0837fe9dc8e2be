"""Federated statistics of the sites, NVFlare 2.9 style: ``python jobs/fedstats/job.py`` runs NVFlare's
``FedStatsRecipe`` with fedgin's ``SiteStatistics`` in ``SimEnv``; ``--export --export-dir DIR`` writes the job
folder for ``nvflare job submit`` (every participant runs its installed fedgin, see ``provisioning/README.md``).

    python jobs/fedstats/job.py --data-root data/sites
    python jobs/fedstats/job.py --data-root data/sites --export --export-dir workspace/jobs

``fedgin stats`` runs the same recipe and draws ``site_statistics.png`` from its result.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

importlib.import_module("nvflare.recipe")  # strips --export/--export-dir from sys.argv; execute() reads them

from fedgin.flare.simulate import run_in_simenv
from fedgin.flare.stats import stats_recipe


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="", help="folder holding <site>/datalist.json (a site's own "
                                                   "local/fedgin_site.json wins)")
    p.add_argument("--clients", default="site-ct,site-mri", help="comma-separated site names (default %(default)s)")
    p.add_argument("--name", default="fedgin-stats", help="job name (default %(default)s)")
    p.add_argument("--workspace", default="workspace/simenv", help="SimEnv workspace root (default %(default)s)")
    p.add_argument("--bins", type=int, default=60, help="histogram bins (default %(default)s)")
    p.add_argument("--min-count", type=int, default=10, help="NVFlare's minimum records per feature (default 10)")
    a = p.parse_args()
    clients = [c for c in a.clients.split(",") if c]
    root = str(Path(a.data_root).resolve()) if a.data_root else ""
    recipe = stats_recipe(clients, data_root=root, bins=a.bins, min_count=a.min_count, name=a.name)
    run = run_in_simenv(recipe, clients, a.workspace)
    print(f"job {run.get_job_id()} finished; statistics under {run.get_result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
