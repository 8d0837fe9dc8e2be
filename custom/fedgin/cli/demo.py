"""``fedgin demo``'s options (the run itself is ``fedgin.experiments.demo.run_demo``)."""

from __future__ import annotations

import argparse


def add_demo_arguments(s: argparse.ArgumentParser) -> None:
    from fedgin.engine.methods import method_names
    from fedgin.experiments.demo import DEMO_ORGANS
    from fedgin.common.options import (MAX_SIZE_PX, bounded_int, int_list, nonnegative_int, positive_float,
                                       positive_int)

    s.add_argument("--workdir", default="runs/demo", help="work folder (default runs/demo)")
    s.add_argument("--method", default="gin", choices=method_names(), metavar="METHOD",
                   help="gin = FedGIN, none = plain FedAvg, gin+fedprox / +fedopt / +scaffold: another optimiser")
    s.add_argument("--rounds", type=positive_int, default=25, help="federated rounds (default 25; paper 100)")
    s.add_argument("--cases", type=bounded_int(3, 100000, " (train, validation and test need one each)"),
                   default=16, help="phantom cases per site (default 16)")
    s.add_argument("--organs", default=",".join(DEMO_ORGANS), help="comma-separated classes")
    s.add_argument("--spacing", type=positive_float, default=4.0, help="in-plane mm (default 4.0; paper 1.5)")
    s.add_argument("--size", type=bounded_int(1, MAX_SIZE_PX, " pixels"), default=96,
                   help="in-plane pixels (default 96; paper 256)")
    s.add_argument("--channels", type=int_list, default=[16, 32, 64, 128],
                   help="U-Net channels (default 16,32,64,128)")
    s.add_argument("--local-epochs", type=positive_int, default=1, help="local epochs per round (default 1)")
    s.add_argument("--seed", type=nonnegative_int, default=0, help="phantom and training seed")
    s.add_argument("--precision", choices=["auto", "fp32"], default="auto",
                   help="auto (default): mixed precision where the hardware has it (bf16 on CPUs with bf16 units, "
                        "fp16 on CUDA); fp32: full precision everywhere")
    s.add_argument("--threads", type=bounded_int(1, 64, " threads"), default=2,
                   help="clients run in parallel by the simulator")
    add_tracking_arguments(s)


def add_tracking_arguments(s: argparse.ArgumentParser, default: str | None = "tensorboard") -> None:
    """``--tracking`` and ``--tracking-uri`` (the job values ``tracking``, ``tracking_uri``) of the federated runs."""
    s.add_argument("--tracking", choices=["tensorboard", "mlflow", "both"], default=default,
                   help="where the federated runs' site metrics go: TensorBoard (default), MLflow (NVFlare's "
                        "MLflowReceiver; a file store in each run's server folder unless --tracking-uri), or both")
    s.add_argument("--tracking-uri", default="", help="an MLflow tracking server (with --tracking mlflow|both)")


def tracking_values(a: argparse.Namespace) -> dict:
    """The job values of ``--tracking``/``--tracking-uri`` that were given."""
    out = {"tracking": a.tracking} if a.tracking else {}
    if a.tracking_uri:
        out["tracking_uri"] = a.tracking_uri
    return out
