"""``fedgin poc ...``: POC mode in one command per step (see ``fedgin.flare.poc`` and ``poc/README.md``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedgin.common.options import (MAX_SIZE_PX, bounded_int, int_list, name_list, nonnegative_int, port, positive_float,
                                   positive_int, set_item)

__all__ = ["add_poc_parser"]


def _poc(a: argparse.Namespace):
    from fedgin.flare.poc import Poc

    return Poc(a.workspace)


def _datalists(a: argparse.Namespace) -> dict[str, Path]:
    """{site: datalist} from --site, --data-root, or the demo phantom (site-ct, site-mri)."""
    if a.site:
        out = {}
        for item in a.site:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--site {item!r}: expected NAME=PATH_OF_DATALIST_JSON")
            if name in out:
                raise ValueError(f"--site {name}: given twice")
            if Path(path).resolve() in out.values():
                other = next(k for k, v in out.items() if v == Path(path).resolve())
                raise ValueError(f"--site {name}: {path} is already the data of {other}; its cases would count twice")
            out[name] = Path(path).resolve()
        return out
    if a.data_root:
        root = Path(a.data_root).resolve()
        found = {p.parent.name: p for p in sorted(root.glob("*/datalist.json"))}
        if not found:
            raise ValueError(f"--data-root {root}: no <site>/datalist.json inside")
        return found
    from fedgin.experiments.demo import phantom_sites

    organs = name_list(a.organs, "--organs")
    print(f"no --data-root or --site: demo phantom sites in {a.phantom_dir}")
    return phantom_sites(Path(a.phantom_dir).resolve(), a.cases, organs, a.spacing, a.size, a.seed,
                         step="  [{i}/2] ")


def _build_job(a: argparse.Namespace, datalists: dict[str, str]):
    """The job to submit: ``--job`` (a folder, submitted with ``nvflare job submit``), else the FedGIN recipe of these
    values (submitted through ``ProdEnv``), its folder also exported to ``--job-dir`` as a record of what ran."""
    from fedgin.flare.job import export_recipe, job_name, make_recipe, task_from_datalists

    if a.job:
        return Path(a.job)
    from fedgin.flare.job import settable_variables
    from fedgin.common.options import set_values

    values = set_values(a.set, settable_variables())
    values.update({"method": a.method, "num_rounds": a.rounds, "local_epochs": a.local_epochs})
    channels = a.channels
    values.update({"channels": channels, "strides": [2] * (len(channels) - 1)})
    values = task_from_datalists([Path(p) for p in datalists.values()], values)
    values["min_clients"] = len(datalists)
    name = job_name(f"fedgin_{a.method}")
    out = Path(a.job_dir or Path(a.workspace or "workspace/poc").resolve().parent / "poc_jobs" / name)
    recipe = make_recipe(values, name=name, code="site")
    export_recipe(recipe, out)
    return recipe


def _print_cross_site(path: Path) -> None:
    cross = json.loads(path.read_text())
    models = sorted({m for site in cross.values() for m in site})
    print(f"cross-site validation Dice ({path}):")
    print("  site        " + "  ".join(f"{m:>26}" for m in models))
    for site, row in sorted(cross.items()):
        print(f"  {site:<10}  " + "  ".join(f"{row.get(m, {}).get('val_dice', float('nan')):>26.4f}" for m in models))


def _cmd_prepare(a):
    poc = _poc(a)
    poc.check("prepare")  # before any demo data is made
    poc.prepare(_datalists(a), project=a.project, port=a.port, heartbeat_timeout=a.heartbeat_timeout)
    print("next: fedgin poc start")
    return 0


def _cmd_start(a):
    _poc(a).start(timeout=a.timeout)
    print("next: fedgin poc submit")
    return 0


def _cmd_submit(a):
    poc = _poc(a)
    job_id = poc.submit(_build_job(a, poc.state()["datalists"]), kit_id=a.kit_id)
    print(job_id)
    print(f"next: fedgin poc wait {job_id}")
    return 0


def _cmd_wait(a):
    print(_poc(a).wait(a.job_id, timeout=a.timeout))
    return 0


def _cmd_download(a):
    res = _poc(a).download(a.job_id, a.output)
    print(f"global model: {res['global_model']}")
    if res["best_model"].is_file():
        print(f"best model:   {res['best_model']}")
    if res["cross_site"].is_file():
        _print_cross_site(res["cross_site"])
    return 0


def _cmd_stop(a):
    _poc(a).stop(timeout=a.timeout)
    return 0


def _cmd_clean(a):
    _poc(a).clean()
    return 0


def _cmd_run(a):
    """Everything: data → kits → start → submit → wait → download → stop → Dice on the test cases."""
    from fedgin.engine.evaluation import evaluate, format_dice_table

    t0 = time.perf_counter()
    poc = _poc(a)
    poc.check("prepare")  # before any demo data is made
    datalists = _datalists(a)
    poc.prepare(datalists, project=a.project, port=a.port, heartbeat_timeout=a.heartbeat_timeout)
    job = _build_job(a, {k: str(v) for k, v in datalists.items()})
    try:
        poc.start(timeout=a.timeout_start)
        job_id = poc.submit(job, kit_id=a.kit_id)
        poc.wait(job_id, timeout=a.timeout)
        res = poc.download(job_id, a.output)
    finally:
        if not a.keep_running:
            poc.stop()
    if res["cross_site"].is_file():
        _print_cross_site(res["cross_site"])
    test = evaluate(res["global_model"], list(datalists.values()), "test", progress=False, geometry="source")
    print()
    print(format_dice_table(test, title=f"POC job {job_id} ({a.method}): final global model, 3D Dice per organ"))
    print(f"global model: {res['global_model']}")
    print(f"POC run: {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


def _data_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--project", help="project file (default provisioning/project.yml)")
    s.add_argument("--port", type=port, help="server port instead of the project's (default 8002)")
    s.add_argument("--heartbeat-timeout", type=positive_float,
                   help="seconds after which the server drops a silent (crashed) site (NVFlare default 600)")
    s.add_argument("--site", action="append", metavar="NAME=DATALIST", help="a site's prepared datalist.json")
    s.add_argument("--data-root", help="folder with <site>/datalist.json for every site of the project")
    s.add_argument("--phantom-dir", default="runs/poc_data", help="where demo phantom sites go (no data given)")
    s.add_argument("--cases", type=bounded_int(3, 100000, " (train, validation and test need one each)"),
                   default=16)
    s.add_argument("--organs", default="liver,spleen,kidney_left,kidney_right")
    s.add_argument("--spacing", type=positive_float, default=4.0)
    s.add_argument("--size", type=bounded_int(1, MAX_SIZE_PX, " pixels"), default=96)
    s.add_argument("--seed", type=nonnegative_int, default=0)


def _job_args(s: argparse.ArgumentParser) -> None:
    from fedgin.engine.methods import method_names

    s.add_argument("--job", help="a job folder written by `fedgin job --code site` (else one is built)")
    s.add_argument("--job-dir", help="where the built job goes")
    s.add_argument("--method", default="gin", choices=method_names(), metavar="METHOD")
    s.add_argument("--rounds", type=positive_int, default=30)
    s.add_argument("--local-epochs", type=positive_int, default=1)
    s.add_argument("--channels", type=int_list, default=[16, 32, 64, 128])
    s.add_argument("--set", action="append", type=set_item, metavar="KEY=JSON", help="any job variable")
    s.add_argument("--kit-id", help="submit as this admin (e.g. researcher@hospital-a.example.org); "
                                    "default: the project admin")


def add_poc_parser(sub) -> None:
    p = sub.add_parser("poc", help="POC mode: the provisioned federation on this workstation",
                       description="POC mode with NVFlare's own CLI; see poc/README.md.")
    p.add_argument("--workspace", help="POC workspace (default $NVFLARE_POC_WORKSPACE or workspace/poc)")
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")

    s = steps.add_parser("prepare", help="provision the POC kits and point each site at its data")
    _data_args(s)
    s.set_defaults(func=_cmd_prepare)
    s = steps.add_parser("start", help="start the server and the sites")
    s.add_argument("--timeout", type=positive_float, default=90)
    s.set_defaults(func=_cmd_start)
    s = steps.add_parser("submit", help="build (or take) a FedGIN job and submit it; prints the job id")
    _job_args(s)
    s.set_defaults(func=_cmd_submit)
    s = steps.add_parser("wait", help="wait for a job to finish")
    s.add_argument("job_id")
    s.add_argument("--timeout", type=positive_float, default=3600)
    s.set_defaults(func=_cmd_wait)
    s = steps.add_parser("download", help="download a job's result (global model, cross-site Dice)")
    s.add_argument("job_id")
    s.add_argument("--output", default="runs/poc_results")
    s.set_defaults(func=_cmd_download)
    s = steps.add_parser("stop", help="stop the server and the sites (only processes of this fedgin workspace)")
    s.add_argument("--timeout", type=positive_float, default=60,
                   help="seconds to wait for `nvflare poc stop` before killing what fedgin started")
    s.set_defaults(func=_cmd_stop)
    s = steps.add_parser("clean", help="remove the POC workspace (only one made by `fedgin poc prepare`)")
    s.set_defaults(func=_cmd_clean)
    s = steps.add_parser("run", help="all steps: prepare, start, submit, wait, download, stop, test Dice")
    _data_args(s)
    _job_args(s)
    s.add_argument("--output", default="runs/poc_results")
    s.add_argument("--timeout", type=positive_float, default=3600, help="seconds the job may take")
    s.add_argument("--timeout-start", type=positive_float, default=90)
    s.add_argument("--keep-running", action="store_true", help="leave the system running afterwards")
    s.set_defaults(func=_cmd_run)
