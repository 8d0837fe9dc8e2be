"""Training configuration: one frozen dataclass shared by centralized, local and federated runs.

Every value has the paper's default (Nagaraju et al. 2026) unless marked otherwise; a job variant is a different
value, never different code. ``TrainConfig.from_dict`` rejects unknown keys, wrong types and values out of range
(``fedgin.common.options.OptionError``, naming where the values came from and the field), so a typo in a job file, a
``--config`` file or a model file's metadata fails loudly and where it was made, not deep inside training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fedgin.common.options import OptionError, check_range, check_type

__all__ = ["TrainConfig", "ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """2D U-Net hyper-parameters (``fedgin.engine.model.SegUNet``).

    The paper uses "a 2D U-Net" on 256×256 slices. ``arch`` ``"monai"`` (default, a documented choice):
    ``monai.networks.nets.UNet``, ``channels``/``strides`` the common MONAI setup for that size. ``"authors"``: the
    authors' U-Net (``fedgin.engine.authors_unet``); given without ``channels``/``strides``/``dropout`` it takes
    the authors' values (32-64-128 + a 256 bottleneck, dropout 0.3). Batch norm is the default because the
    authors' U-Net uses it (and DSBN/FedBN need it).
    """

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    norm: str = "batch"
    dropout: float = 0.0
    domains: tuple[str, ...] = ()  # non-empty: domain-specific batch norm with one branch per domain (DSBN)
    test_input: str = "raw"  # eval-time input filter: raw | freesdg-hfc | raffesdg-butterworth (augment.eval_input)
    arch: str = "monai"  # monai | authors

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "") -> ModelConfig:
        """Build from JSON values; ``source`` (a file, an option) prefixes every message."""
        where = f"{source}: model" if source else "model"
        values = dict(check_type(where, values, "dict") if values is not None else {})
        _check_keys(cls, values, where)
        _check_fields(cls, values, where, _MODEL_FIELDS)
        if values.get("arch") == "authors":  # the authors' values for what is not given
            values = {**AUTHORS_MODEL, **values}
        for key in ("channels", "strides", "domains"):
            if key in values:
                values[key] = tuple(values[key])
        cfg = cls(**values)
        from fedgin.engine.model import ARCHS

        if cfg.arch not in ARCHS:
            raise OptionError(f"{where}.arch: must be one of {list(ARCHS)}, got {cfg.arch!r}")
        if cfg.arch == "authors" and any(s != 2 for s in cfg.strides):
            raise OptionError(f"{where}.strides: the authors' U-Net pools by 2 at every level, got {list(cfg.strides)}")
        if not cfg.channels:
            raise OptionError(f"{where}.channels: give at least one level, e.g. [16, 32, 64, 128]")
        if len(cfg.strides) != len(cfg.channels) - 1:
            raise OptionError(f"{where}: len(strides) must be len(channels) - 1, got {list(cfg.strides)} for "
                              f"{list(cfg.channels)}")
        if cfg.norm not in ("batch", "instance"):
            raise OptionError(f"{where}.norm: must be 'batch' or 'instance', got {cfg.norm!r}")
        from fedgin.augment.eval_input import EVAL_INPUTS

        if cfg.test_input not in EVAL_INPUTS:
            raise OptionError(f"{where}.test_input: must be one of {list(EVAL_INPUTS)}, got {cfg.test_input!r}")
        return cfg


@dataclass(frozen=True)
class TrainConfig:
    """How one site (or a centralized run) trains.

    Attributes:
        method: a ``fedgin.engine.methods`` name: the augmentation applied to every training batch on the device
            (``gin``, ``none``, ``rc``, ...) and the batch-norm policy (``fedbn``, ``dsbn``).
        augment_args: keyword arguments of the augmentation (e.g. ``{"slope": "fixed", "per_sample": false}``).
        batch_size: slices per step (paper: 8).
        lr, weight_decay: AdamW (paper: 5e-4, 1e-4).
        plateau_factor, plateau_patience, min_lr: ReduceLROnPlateau on the validation loss, stepped once per
            epoch (centralized) or per round (federated), as the authors' clients do.
        lambda_dice, lambda_focal, focal_gamma: focal + Dice loss weights (authors: 0.5/0.5, gamma 2).
        loss_variant: ``auto`` (default: ``authors`` for one class, ``monai`` for several), ``monai`` (MONAI
            DiceFocalLoss) or ``authors`` (the FedGIN code's pos-weighted
            focal term; binary only), see ``fedgin.engine.loss``.
        consistency_weight: weight λ of the multi-view consistency loss of augmentations that return several views
            (``gin-ipa``: KL(p̄ ‖ p_view) averaged over views, pixels and classes, λ = 10, as in the original code).
        sampler: which slices make a training batch. ``uniform``: a shuffled pass over all slices. ``organ`` (the
            FedGIN authors' ``clients/sampler.py``): each batch draws its number of slices showing any class from a
            binomial with their share of the data, then holds at least one slice with and one without, drawn
            without replacement from pools refilled when they run out; ``len // batch_size`` batches per epoch.
        amp: mixed precision where the hardware has it (``fedgin.engine.precision``): fp16 autocast with a grad
            scaler on CUDA, bf16 autocast on CPUs with bf16 matrix units (AMX / AVX512-BF16), fp32 elsewhere; only
            the network runs in it (augmentation, loss and metrics stay fp32). False: fp32 everywhere.
        channels_last: keep the network's weights and activations in channels-last memory order (faster
            convolutions in oneDNN and cuDNN; the weights' values and shapes are unchanged).
        fedprox_mu: μ of FedProx's proximal term (μ/2)·‖θ − θ_global‖² (methods ``<name>+fedprox``); 0.01 as
            NVFlare's ``PTFedProxLoss`` (Li et al. tune μ in {0.001, 0.01, 0.1, 1}); unused by other methods.
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
    loss_variant: str = "auto"
    consistency_weight: float = 10.0
    sampler: str = "uniform"
    amp: bool = True
    channels_last: bool = True
    fedprox_mu: float = 0.01
    seed: int = 0
    eval_batch_size: int = 32
    model: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "") -> TrainConfig:
        """Build from plain JSON values; unknown keys, wrong types and out-of-range values raise
        ``fedgin.common.options.OptionError`` (a ``ValueError``) naming ``source`` (a file, an option) and the field."""
        where = source or "train config"
        values = dict(check_type(where, values, "dict") if values is not None else {})
        _check_keys(cls, values, where)
        _check_fields(cls, values, where, _TRAIN_FIELDS)
        if "method" in values:
            from fedgin.engine.methods import get_method

            try:
                get_method(values["method"])
            except ValueError as e:
                raise OptionError(f"{where}: method: {e}") from None
        if values.get("sampler", "uniform") not in SAMPLERS:
            raise OptionError(f"{where}: sampler: must be one of {list(SAMPLERS)}, got {values['sampler']!r}")
        if values.get("loss_variant", "auto") not in ("auto", "monai", "authors"):
            raise OptionError(f"{where}: loss_variant: must be 'auto', 'monai' or 'authors', got "
                              f"{values['loss_variant']!r}")
        values["model"] = ModelConfig.from_dict(values.get("model"), source)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["model"].items()}
        return d

    def with_updates(self, **updates: Any) -> TrainConfig:
        return replace(self, **updates)


def _check_keys(cls: type, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise OptionError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


#: ``TrainConfig.sampler`` values (``fedgin.engine.data.SliceSet.epoch``)
SAMPLERS = ("uniform", "organ")

#: field -> (JSON kind of ``fedgin.common.options.check_type``, check_range keyword arguments)
_TRAIN_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "method": ("str", {}),
    "augment_args": ("dict", {}),
    "batch_size": ("int", {"low": 1}),
    "lr": ("float", {"low": 0, "low_open": True}),
    "weight_decay": ("float", {"low": 0}),
    "plateau_factor": ("float", {"low": 0, "high": 1, "low_open": True, "high_open": True}),
    "plateau_patience": ("int", {"low": 0}),
    "min_lr": ("float", {"low": 0}),
    "lambda_dice": ("float", {"low": 0}),
    "lambda_focal": ("float", {"low": 0}),
    "focal_gamma": ("float", {"low": 0}),
    "loss_variant": ("str", {}),
    "consistency_weight": ("float", {"low": 0}),
    "sampler": ("str", {}),
    "amp": ("bool", {}),
    "channels_last": ("bool", {}),
    "fedprox_mu": ("float", {"low": 0}),
    "seed": ("int", {"low": 0}),
    "eval_batch_size": ("int", {"low": 1}),
}
_MODEL_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "channels": ("int_list", {"low": 1}),
    "strides": ("int_list", {"low": 1}),
    "num_res_units": ("int", {"low": 0}),
    "norm": ("str", {}),
    "dropout": ("float", {"low": 0, "high": 1, "high_open": True}),
    "domains": ("str_list", {}),
    "test_input": ("str", {}),
    "arch": ("str", {}),
}
#: the authors' U-Net as they ran it (``sachugowda/FedGIN``, ``clients/model.py``)
AUTHORS_MODEL = {"channels": [32, 64, 128, 256], "strides": [2, 2, 2], "dropout": 0.3}


def _check_fields(cls: type, values: dict[str, Any], where: str, spec: dict[str, tuple[str, dict]]) -> None:
    """Type and range of each given field (in place: integral floats become ints, lists are checked per item)."""
    for key, (kind, limits) in spec.items():
        if key not in values:
            continue
        name = f"{where}.{key}" if where.endswith("model") else f"{where}: {key}"
        value = values[key] = check_type(name, values[key], kind)
        for item in value if isinstance(value, list) else [value]:
            if limits and not isinstance(item, str):
                check_range(name, item, **limits)
