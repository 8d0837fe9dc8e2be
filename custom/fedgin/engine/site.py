"""One site's side of a federation, free of FLARE: its data, its engine, and what a round does.

``fedgin.flare.executor.FedGINExecutor`` is a thin adapter that turns FLARE tasks into calls of this class, so
the round logic is the same engine code that ``fedgin train`` runs, and it is testable without FLARE.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fedgin.data.datalist import DatalistError, load_datalist, task_labels
from fedgin.engine import Engine, SliceSet, TrainConfig, TrainStats
from fedgin.engine.norm import batchnorm_keys, domain_keys

__all__ = ["Site", "RoundResult"]


class RoundResult(dict):
    """``{"weights": {name: ndarray}, "num_samples": int, "stats": TrainStats, "global_val": {...},
    "validation_seconds": float}``, plus ``"control_diff": {name: ndarray}`` (Δc_k) with SCAFFOLD.

    ``weights`` holds only what the site sends (``Site.sent_keys``).
    """


class Site:
    """A site's training and validation slices and its engine.

    Args:
        datalist: the site's ``datalist.json`` (from ``fedgin prepare``).
        classes: the classes the federation segments; must equal the datalist's.
        config: training configuration.
        device: torch device or ``"auto"``.
        validation_split: split used to validate models (global model each round, cross-site evaluation).

    Raises:
        DatalistError: unreadable datalist, other classes than the federation's, or no training slices.
    """

    def __init__(
        self,
        datalist: str | Path,
        classes: list[str],
        config: TrainConfig,
        device: str = "auto",
        validation_split: str = "validation",
    ) -> None:
        self.datalist = load_datalist(datalist)
        found = task_labels(self.datalist)
        if found != list(classes):
            raise DatalistError(f"{self.datalist['path']}: site classes {found} differ from the job's {list(classes)}")
        self.train_set = SliceSet([self.datalist], "training")
        if len(self.train_set) == 0:
            raise DatalistError(f"{self.datalist['path']}: the site has no training cases")
        self.val_set = SliceSet([self.datalist], validation_split)
        self.engine = Engine(list(classes), config, device=device)
        self.modality = self.datalist["modality"]
        model = self.engine.model
        every = set(model.state_dict())
        policy = self.engine.method.batch_norm
        if policy == "local":  # FedBN: batch norm never leaves the site and is never overwritten
            self.sent_keys = self.loaded_keys = every - batchnorm_keys(model)
        elif policy == "domain":  # DSBN: shared weights + this modality's branches only
            if self.modality not in self.engine.domains:
                raise DatalistError(f"{self.datalist['path']}: modality {self.modality!r} has no batch-norm branch "
                                    f"(domains {list(self.engine.domains)})")
            self.sent_keys = (every if self.engine.method.send_all_branches  # dsbn-naive: untrained ones too
                              else (every - batchnorm_keys(model)) | domain_keys(model, self.modality))
            self.loaded_keys = every
        else:
            self.sent_keys = self.loaded_keys = every
        self.scaffold = None
        if self.engine.method.optimizer == "scaffold":
            from fedgin.engine.federated_optim import ScaffoldControls

            self.scaffold = ScaffoldControls(model)

    @property
    def num_train_samples(self) -> int:
        """N_k: the number of training slices, the site's FedAvg weight."""
        return len(self.train_set)

    def load(self, weights: dict[str, Any]) -> None:
        """Load the keys of ``weights`` this site takes from the federation (FedBN keeps its own batch norm)."""
        self.engine.set_weights({k: v for k, v in weights.items() if k in self.loaded_keys}, strict=False)

    def local_weights(self) -> dict[str, Any]:
        """What this site may send: its model without the layers its method keeps local."""
        return {k: v for k, v in self.engine.get_weights().items() if k in self.sent_keys}

    def validate(self, weights: dict[str, Any] | None = None) -> dict[str, Any]:
        """3D Dice and loss of ``weights`` (or the current local model) on the validation cases."""
        if weights is not None:
            self.load(weights)
        if self.val_set.num_cases == 0:
            return {"mean_dice": float("nan"), "loss": float("nan"), "summary": None, "cases": []}
        return self.engine.evaluate(self.val_set)

    def train_round(
        self,
        global_weights: dict[str, Any],
        epochs: int = 1,
        steps: int = 0,
        should_stop: Callable[[], bool] | None = None,
        validate_global: bool = True,
        global_controls: dict[str, Any] | None = None,
    ) -> RoundResult:
        """Load the global model, validate it locally, train, and return the new local weights.

        The global model's validation loss steps ReduceLROnPlateau (the authors step on the local validation loss
        once per round; using the incoming global model's saves one evaluation pass per round).

        Args:
            global_weights: {name: array} of the whole model.
            epochs: local epochs (used when ``steps`` is 0).
            steps: exact number of local steps instead of epochs.
            should_stop: polled between steps; True aborts the round.
            global_controls: SCAFFOLD only (and required there): the server's control variate c {name: array}.
        """
        missing = sorted(self.sent_keys - set(global_weights))
        if missing:
            raise ValueError(f"the global model lacks {len(missing)} weights of this site's model, e.g. {missing[:3]}")
        optimizer = self.engine.method.optimizer
        if (global_controls is not None) != (optimizer == "scaffold"):
            raise ValueError(f"method {self.engine.method.name}: " + (
                "SCAFFOLD needs the server's control variate with the global model (the server must run "
                "ScatterAndGatherScaffold)" if global_controls is None else
                "the server sent SCAFFOLD control variates, but this site's method does not use them"))
        self.load(global_weights)
        if optimizer in ("fedprox", "scaffold"):
            self.engine.set_global_reference(global_weights)
        if self.engine.adversary is not None:
            self.engine.adversary.set_reference(global_weights)
        t0 = time.perf_counter()
        global_val = self.validate() if validate_global else {"mean_dice": float("nan"), "loss": float("nan")}
        validation_seconds = time.perf_counter() - t0
        self.engine.step_scheduler(global_val["loss"])
        on_step = None
        if self.scaffold is not None:
            self.scaffold.start_round(global_controls)
            lr = self.engine.lr  # η of the round: the plateau scheduler has stepped and steps again next round
            on_step = lambda *_: self.scaffold.after_step(lr)  # noqa: E731
        if steps:
            stats: TrainStats = self.engine.train_steps(self.train_set, steps, should_stop, on_step)
        else:
            stats = self.engine.train_epochs(self.train_set, epochs, should_stop, on_step)
        result = RoundResult(
            weights=self.local_weights(),
            num_samples=self.num_train_samples,
            stats=stats,
            global_val=global_val,
            validation_seconds=validation_seconds,
        )
        if self.scaffold is not None and not stats.aborted:
            result["control_diff"] = self.scaffold.end_round(lr, self.engine.global_model)
        return result

    @staticmethod
    def weight_diff(new: dict[str, np.ndarray], old: dict[str, Any]) -> dict[str, np.ndarray]:
        """new − old per key, in float32 (integer buffers such as BN's num_batches_tracked included)."""
        return {k: np.asarray(new[k], dtype=np.float32) - np.asarray(old[k], dtype=np.float32) for k in new}
