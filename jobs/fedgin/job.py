"""The FedGIN job, NVFlare 2.9 style: ``python jobs/fedgin/job.py`` runs it in ``SimEnv``; with ``--export
--export-dir DIR`` it writes the job folder ``DIR/<name>`` for ``nvflare job submit`` (or ``nvflare simulator``).

    python jobs/fedgin/job.py --data-root data/sites --set method='"none"' --set num_rounds=50
    python jobs/fedgin/job.py --data-root data/sites --export --export-dir workspace/jobs

Values are those of ``fedgin job`` (``fedgin.flare.recipe.JOB_DEFAULTS``); the recipe is
``fedgin.flare.recipe.FedGINRecipe``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nvflare.recipe import SimEnv  # strips --export/--export-dir from sys.argv; recipe.execute() reads them

from fedgin.common.options import set_item, set_values
from fedgin.flare.job import make_recipe, settable_variables, task_from_sites
from fedgin.flare.simulate import simulator_policy, threads_per_process


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True, help="folder holding <site>/datalist.json (fedgin prepare)")
    p.add_argument("--clients", default="site-ct,site-mri", help="comma-separated site names (default %(default)s)")
    p.add_argument("--name", default="fedgin", help="job name (default %(default)s)")
    p.add_argument("--workspace", default="workspace/simenv", help="SimEnv workspace root (default %(default)s)")
    p.add_argument("--code", choices=("job", "site"), default="job",
                   help="job: fedgin's code travels in the job; site: every participant runs its installed fedgin")
    p.add_argument("--set", action="append", default=[], type=set_item, metavar="KEY=JSON", help="any job value")
    a = p.parse_args()
    values = set_values(a.set, settable_variables())
    root = Path(a.data_root).resolve()
    values["data_root"] = str(root)
    clients = [c for c in a.clients.split(",") if c]
    values = task_from_sites(root, values, sites=clients)
    values.setdefault("min_clients", len(clients))
    recipe = make_recipe(values, name=a.name, code=a.code)
    workspace = Path(a.workspace).resolve()
    simulator_policy(workspace / a.name)  # the fedgin classes' allow-list (SimEnv's default names none)
    # parallel clients share the cores: without this each starts one thread per core and runs 10-30x slower
    os.environ.setdefault("OMP_NUM_THREADS", threads_per_process(len(clients)))
    run = recipe.execute(SimEnv(clients=clients, workspace_root=str(workspace)))
    print(f"job {run.get_job_id()} finished; results under {run.get_result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
