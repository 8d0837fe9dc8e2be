"""``fedgin rehearse`` and ``fedgin kit setup``: production as institutions run it.

    fedgin kit setup site-ct/ --datalist /data/fedgin/site-ct/datalist.json    # a site's IT, after unpacking
    fedgin kit setup site-ct/ --gpus 1 --gpu-mem-gib 40                       # offer this machine's GPU to jobs
    fedgin kit setup fedgin.consortium.example.org/                           # the server: storage in its kit
    fedgin rehearse --workdir runs/rehearsal                                  # the whole rehearsal (root, Linux)

``rehearse`` provisions the project with distributed provisioning, puts every participant on a host of its own
(Linux network namespaces on this machine), starts every kit with its own ``start.sh`` after ``nvflare
preflight-check``, runs a FedGIN job, tries the attacks and a server crash, and prints what happened
(``fedgin.flare.rehearsal``; ``provisioning/README.md``, section Rehearsal).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_production_parsers(sub) -> None:
    from fedgin.common.options import bounded_int, nonnegative_int

    s = sub.add_parser("rehearse", help="production rehearsal: distributed-provisioned kits on namespace hosts, a "
                                        "job, attacks, a server crash (Linux, root)")
    s.add_argument("--workdir", default="runs/rehearsal", help="working folder (default runs/rehearsal)")
    s.add_argument("--project", help="project.yml (default provisioning/project.yml)")
    s.add_argument("--data-root", help="folder with <site>/datalist.json for every client of the project (default: "
                                       "a small phantom made in --workdir)")
    s.add_argument("--rounds", type=bounded_int(1, 1000, " rounds"), default=3, help="rounds of the job (default 3)")
    s.add_argument("--cases", type=bounded_int(3, 1000, ""), default=3, help="phantom cases per site (default 3)")
    s.set_defaults(func=rehearse_command)

    k = sub.add_parser("kit", help="set up a startup kit after unpacking it (fedgin kit setup KIT ...)")
    ks = k.add_subparsers(dest="kit_command", required=True)
    s = ks.add_parser("setup", help="a site's datalist and GPUs, or the server's storage, in local/")
    s.add_argument("kit", help="the startup kit folder (holds startup/ and local/)")
    s.add_argument("--datalist", help="a site: the datalist.json its fedgin prepare wrote")
    s.add_argument("--gpus", type=nonnegative_int, help="a site: GPUs this machine offers to jobs (resource_spec)")
    s.add_argument("--gpu-mem-gib", type=float, default=0.0, help="a site: memory of each offered GPU in GiB")
    s.add_argument("--storage", help="the server: folder for job storage and snapshots (default: the kit's own)")
    s.set_defaults(func=kit_setup_command)


def kit_setup_command(a: argparse.Namespace) -> int:
    from fedgin.flare.kit_setup import KitError, setup_gpus, setup_server_storage, setup_site

    kit = Path(a.kit)
    server = (kit / "startup" / "fed_server.json").is_file()
    try:
        if server:
            if a.datalist or a.gpus is not None:
                raise KitError(f"{kit} is the server's kit: --datalist and --gpus are for a site's")
            print(f"server storage: {setup_server_storage(kit, a.storage)}")
            return 0
        if a.storage:
            raise KitError(f"{kit} is not the server's kit: --storage is for the server")
        if not a.datalist and a.gpus is None:
            raise KitError("give --datalist and/or --gpus for a site's kit")
        if a.datalist:
            print(f"site data: {setup_site(kit, a.datalist)}")
        if a.gpus is not None:
            print(f"site GPUs: {setup_gpus(kit, a.gpus, a.gpu_mem_gib)}")
    except KitError as e:
        print(f"fedgin kit setup: {e}")
        return 2
    return 0


def rehearse_command(a: argparse.Namespace) -> int:
    from fedgin.common.options import OptionError
    from fedgin.flare.job import task_from_datalists
    from fedgin.flare.netns import unavailable
    from fedgin.flare.rehearsal import rehearse

    why = unavailable()
    if why:
        print(f"fedgin rehearse: cannot make the hosts here: {why}")
        return 2
    work = Path(a.workdir).resolve()
    if a.data_root:
        root = Path(a.data_root).resolve()
        datalists = {p.parent.name: p for p in sorted(root.glob("*/datalist.json"))}
        if not datalists:
            raise OptionError(f"--data-root {root}: no <site>/datalist.json (prepare the sites with fedgin prepare)")
    else:
        from fedgin.experiments.demo import phantom_sites

        datalists = phantom_sites(work / "phantom", a.cases, ["liver"], 8.0, 32, 0, step="phantom data: ")
    values = task_from_datalists(list(datalists.values()), {})
    steps = rehearse(work / "federation", datalists, a.project, values=values, rounds=a.rounds)
    report = work / "rehearsal.json"
    report.write_text(json.dumps([s.__dict__ for s in steps], indent=2, default=str) + "\n")
    width = max(len(s.name) for s in steps)
    print(f"\n{'step':<{width}}  result       time  what happened")
    for s in steps:
        mark = "refused" if s.refused else ("NOT REFUSED" if s.refused is False else ("ok" if s.ok else "FAILED"))
        print(f"{s.name:<{width}}  {mark:<11} {s.seconds:5.0f} s  {s.detail}")
    print(f"total {sum(s.seconds for s in steps) / 60:.1f} min; every step's evidence: {report}")
    return 0 if all(s.ok for s in steps) else 1
