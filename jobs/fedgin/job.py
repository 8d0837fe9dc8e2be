"""The FedGIN job, NVFlare 2.9 style: ``python jobs/fedgin/job.py`` runs it in ``SimEnv``; with ``--startup-kit
KIT`` it submits it to a running POC or production federation through ``ProdEnv`` (signed by that admin kit's
person), waits for it and downloads the server's result; with ``--export --export-dir DIR`` it writes the job folder
``DIR/<name>`` for ``nvflare job submit`` (or ``nvflare simulator``).

    python jobs/fedgin/job.py --data-root data/sites --set method='"none"' --set num_rounds=50
    python jobs/fedgin/job.py --startup-kit <kits>/researcher@hospital-a.example.org --code site --set num_rounds=50 \
        --classes liver,spleen,kidney_left,kidney_right
    python jobs/fedgin/job.py --data-root data/sites --export --export-dir workspace/jobs

Values are those of ``fedgin job`` (``fedgin.flare.recipe.JOB_DEFAULTS``); the recipe is
``fedgin.flare.recipe.FedGINRecipe``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nvflare.recipe import ProdEnv  # nvflare.recipe strips --export/--export-dir from sys.argv at import

from fedgin.common.options import set_item, set_values
from fedgin.flare.job import make_recipe, settable_variables, task_from_sites
from fedgin.flare.simulate import run_in_simenv


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="folder holding <site>/datalist.json (fedgin prepare); the task (classes, "
                                       "slice size, spacing) is read from them. Production: omit it (each site's "
                                       "local/fedgin_site.json names its data) and give --set values")
    p.add_argument("--startup-kit", help="an admin startup kit of a running federation: submit there through "
                                         "ProdEnv instead of running SimEnv")
    p.add_argument("--timeout", type=float, default=0, help="with --startup-kit: seconds to wait for the result "
                                                            "(default 0: until the job ends)")
    p.add_argument("--clients", default="site-ct,site-mri", help="comma-separated site names (default %(default)s)")
    p.add_argument("--name", default="fedgin", help="job name (default %(default)s)")
    p.add_argument("--workspace", default="workspace/simenv", help="SimEnv workspace root (default %(default)s)")
    p.add_argument("--code", choices=("job", "site"), default="job",
                   help="job: fedgin's code travels in the job; site: every participant runs its installed fedgin")
    p.add_argument("--resume-from", help="the last FL_global_model.pt of a stopped or crashed run: this job starts at "
                                          "the round after the one it records (num_rounds = the total)")
    p.add_argument("--set", action="append", default=[], type=set_item, metavar="KEY=JSON", help="any job value")
    a = p.parse_args()
    values = set_values(a.set, settable_variables())
    clients = [c for c in a.clients.split(",") if c]
    if a.data_root:
        root = Path(a.data_root).resolve()
        values["data_root"] = str(root)
        values = task_from_sites(root, values, sites=clients)
    elif not a.startup_kit:
        p.error("--data-root is needed to run in SimEnv")
    values.setdefault("min_clients", len(clients))
    if a.startup_kit:  # production: the job names its sites, so a connected site it does not name never gets it
        values.setdefault("sites", clients)
    recipe = make_recipe(values, name=a.name, code=a.code, resume_from=a.resume_from)
    if a.startup_kit:
        kit = Path(a.startup_kit).resolve()
        run = recipe.execute(ProdEnv(startup_kit_location=str(kit), username=kit.name))
        print(f"submitted job {run.get_job_id()} as {kit.name}; waiting for it ...", flush=True)
        result = run.get_result(timeout=a.timeout)
        print(f"job {run.get_job_id()}: {run.get_status()}; the server's result: {result}")
        return 0 if result else 1
    run = run_in_simenv(recipe, clients, a.workspace)  # fedgin's allow-list; the cores shared among the clients
    print(f"job {run.get_job_id()} finished; results under {run.get_result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
