"""Training configuration: one frozen dataclass shared by centralized, local and federated runs.

Every value has the paper's default (Nagaraju et al. 2026) unless marked otherwise; a job variant is a different
value, never different code. ``TrainConfig.from_dict`` rejects unknown keys so a typo in a job file fails loudly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["TrainConfig", "ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """MONAI 2D U-Net (``monai.networks.nets.UNet``) hyper-parameters.

    The paper uses a 2D U-Net on 256×256 slices; ``channels``/``strides`` default to the common MONAI setup for that
    size. Batch norm is the default because the authors' U-Net uses it (and DSBN/FedBN need it).
    """

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    norm: str = "batch"
    dropout: float = 0.0
    domains: tuple[str, ...] = ()  # non-empty: domain-specific batch norm with one branch per domain (DSBN)
    test_input: str = "raw"  # eval-time input filter: raw | freesdg-hfc | raffesdg-butterworth (augment.eval_input)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelConfig:
        values = dict(values or {})
        _check_keys(cls, values, "model")
        for key in ("channels", "strides"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        if "domains" in values:
            values["domains"] = tuple(str(v) for v in values["domains"] or ())
        cfg = cls(**values)
        if len(cfg.strides) != len(cfg.channels) - 1:
            raise ValueError(f"model: len(strides) must be len(channels) - 1, got {cfg.strides} for {cfg.channels}")
        from fedgin.augment.eval_input import EVAL_INPUTS

        if cfg.test_input not in EVAL_INPUTS:
            raise ValueError(f"model: test_input must be one of {list(EVAL_INPUTS)}, got {cfg.test_input!r}")
        return cfg


@dataclass(frozen=True)
class TrainConfig:
    """How one site (or a centralized run) trains.

    Attributes:
        method: a ``fedgin.methods`` name: the augmentation applied to every training batch on the device
            (``gin``, ``none``, ``rc``, ...) and the batch-norm policy (``fedbn``, ``dsbn``).
        augment_args: keyword arguments of the augmentation (e.g. ``{"slope": "fixed", "per_sample": false}``).
        batch_size: slices per step (paper: 8).
        lr, weight_decay: AdamW (paper: 5e-4, 1e-4).
        plateau_factor, plateau_patience, min_lr: ReduceLROnPlateau on the validation loss, stepped once per
            epoch (centralized) or per round (federated), as the authors' clients do.
        lambda_dice, lambda_focal, focal_gamma: focal + Dice loss weights (authors: 0.5/0.5, gamma 2).
        loss_variant: ``monai`` (MONAI DiceFocalLoss, default) or ``authors`` (the FedGIN code's pos-weighted
            focal term; binary only), see ``fedgin.engine.loss``.
        consistency_weight: weight λ of the multi-view consistency loss of augmentations that return several views
            (``gin-ipa``: KL of each view's prediction to the views' mean, λ = 10 as in the reference).
        amp: automatic mixed precision; only ever active on CUDA.
        seed: seeds model init, batch order and the augmentation's generator.
        eval_batch_size: slices per forward pass in evaluation.
        model: the U-Net.
    """

    method: str = "gin"
    augment_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_lr: float = 1e-5
    lambda_dice: float = 0.5
    lambda_focal: float = 0.5
    focal_gamma: float = 2.0
    loss_variant: str = "monai"
    consistency_weight: float = 10.0
    amp: bool = True
    seed: int = 0
    eval_batch_size: int = 32
    model: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainConfig:
        """Build from plain JSON values; unknown keys raise ``ValueError``."""
        values = dict(values or {})
        _check_keys(cls, values, "train")
        values["model"] = ModelConfig.from_dict(values.get("model"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["model"].items()}
        return d

    def with_updates(self, **updates: Any) -> TrainConfig:
        return replace(self, **updates)


def _check_keys(cls: type, values: dict[str, Any], what: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{what} config: unknown key(s) {unknown}; known: {sorted(known)}")
