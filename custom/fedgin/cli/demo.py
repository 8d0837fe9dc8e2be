"""``fedgin demo``'s options (the run itself is ``fedgin.experiments.demo.run_demo``)."""

from __future__ import annotations

import argparse


def add_demo_arguments(s: argparse.ArgumentParser) -> None:
    from fedgin.engine.methods import METHODS
    from fedgin.experiments.demo import DEMO_ORGANS
    from fedgin.common.options import (MAX_SIZE_PX, bounded_int, int_list, nonnegative_int, positive_float,
                                       positive_int)

    s.add_argument("--workdir", default="runs/demo", help="work folder (default runs/demo)")
    s.add_argument("--method", default="gin", choices=sorted(METHODS), help="gin = FedGIN, none = plain FedAvg")
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
    s.add_argument("--tracking", choices=["tensorboard", "mlflow", "both"], default="tensorboard",
                   help="where the sites' metrics go: TensorBoard (default), MLflow (NVFlare's MLflowReceiver; a "
                        "file store in the run folder unless --tracking-uri), or both")
    s.add_argument("--tracking-uri", default="", help="an MLflow tracking server (with --tracking mlflow|both)")
