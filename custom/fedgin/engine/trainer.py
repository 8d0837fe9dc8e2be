"""The one training/evaluation engine used by ``fedgin train``, ``fedgin evaluate`` and the FLARE Executor.

An ``Engine`` owns the model, loss, AdamW optimizer, ReduceLROnPlateau scheduler, AMP scaler and the augmentation
(applied on the training device to every training batch, without gradients). It knows nothing about FLARE: a
federated round is ``set_weights`` → ``train_epochs`` → ``get_weights`` (FedProx also keeps the round's global
model, ``set_global_reference``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from fedgin.augment import build_augmentation
from fedgin.engine.methods import get_method
from fedgin.engine.config import TrainConfig
from fedgin.engine.data import CaseSlices, SliceSet
from fedgin.engine.loss import SegmentationLoss
from fedgin.engine.metrics import dice_per_class, summarise
from fedgin.engine.surface import NSD_TOLERANCE_MM, surface_metrics
from fedgin.engine.model import build_model
from fedgin.engine.precision import autocast_dtype
from fedgin.engine.norm import set_domain

__all__ = ["Engine", "TrainStats", "NonFiniteLossError", "resolve_device", "consistency_loss", "logits_to_labels"]


def consistency_loss(logits: torch.Tensor, views: int) -> torch.Tensor:
    """KL(p̄ ‖ p_view) averaged over views, samples, classes and pixels; p̄ = the views' mean class probabilities.

    As the original GIN-IPA code (Ouyang et al., ``models/exp_trainer.py``): ``KLDivLoss()`` (reduction "mean", so
    also averaged over the classes) of ``(log p_view, p̄)``, with gradients through p̄ as well.
    logits: (views·B, C_out, H, W); one channel means sigmoid (the two classes [1 − p, p]), several mean softmax.
    Returns a scalar; 0 when the views agree.
    """
    if logits.shape[1] == 1:
        log_p1, log_p0 = F.logsigmoid(logits), F.logsigmoid(-logits)
        log_probs = torch.cat([log_p0, log_p1], 1)
    else:
        log_probs = torch.log_softmax(logits, 1)
    log_probs = log_probs.reshape(views, -1, *log_probs.shape[1:])
    mean = log_probs.exp().mean(0, keepdim=True)
    return (mean * (mean.clamp_min(1e-12).log() - log_probs)).mean()


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, C_out, H, W) → label ids (B, H, W) uint8 (sigmoid > 0.5 or argmax)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def load_weights(model: torch.nn.Module, weights: dict[str, Any], strict: bool = True) -> None:
    """Load numpy arrays or tensors into ``model`` (each cast to the model's dtype); shapes must match, and with
    ``strict`` the keys too (without it, keys the model lacks are ignored)."""
    state = model.state_dict()
    if strict:
        missing = sorted(set(state) - set(weights))
        unexpected = sorted(set(weights) - set(state))
        if missing or unexpected:
            raise ValueError(f"weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    new = {}
    for k, v in weights.items():
        if k not in state:
            continue
        t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        if tuple(t.shape) != tuple(state[k].shape):
            raise ValueError(f"weight {k}: shape {tuple(t.shape)} != model {tuple(state[k].shape)}")
        new[k] = t.to(state[k].dtype)
    model.load_state_dict(new, strict=strict)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the weights must not be used."""


@dataclass
class TrainStats:
    """What one call of ``train_epochs``/``train_steps`` did."""

    steps: int
    samples: int  # slices seen (with repetition)
    mean_loss: float
    seconds: float
    aborted: bool = False


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: an unknown device name, CUDA asked of a torch without CUDA (a CPU build) or of a machine
            without a GPU, or a GPU index the machine does not have.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: fedgin runs on cpu or cuda, not {dev.type}")
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"--device {device}: this torch ({torch.__version__}) is built without CUDA; "
                             "use --device cpu or auto")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"--device {device}: no CUDA GPU is visible; use --device cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return dev


class Engine:
    """Model + optimisation for one task.

    Args:
        classes: foreground class names (1 → binary sigmoid output, K > 1 → K+1-way softmax).
        config: training configuration.
        device: torch device or ``"auto"``.
    """

    def __init__(self, classes: list[str], config: TrainConfig | None = None, device: str | None = "auto") -> None:
        self.classes = list(classes)
        self.config = config or TrainConfig()
        self.device = resolve_device(device)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = build_model(len(self.classes), cfg.model).to(self.device, memory_format=self.memory_format)
        self.loss_fn = SegmentationLoss(
            len(self.classes), cfg.lambda_dice, cfg.lambda_focal, cfg.focal_gamma, cfg.loss_variant
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
        self.autocast_dtype = autocast_dtype(self.device, cfg.amp)  # fp16 on CUDA, bf16 on CPUs with bf16 units
        self.amp = self.autocast_dtype is not None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.method = get_method(cfg.method)
        if self.method.batch_norm == "domain" and not cfg.model.domains:
            raise ValueError(f"method {cfg.method!r} needs model.domains, e.g. {{'domains': ['ct', 'mri']}}")
        self.domains = cfg.model.domains
        self.augment = build_augmentation(self.method.augmentation, **cfg.augment_args).to(self.device)
        self.adversary = None
        if self.method.adversarial:
            from fedgin.engine.adversarial import FeatureAdversary

            self.adversary = FeatureAdversary(self.model, cfg.model.channels[-1])
        self.global_model: torch.nn.Module | None = None  # the round's global model (FedProx, SCAFFOLD)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.total_steps = 0

    # ---------------------------------------------------------------- weights
    def get_weights(self) -> dict[str, np.ndarray]:
        """Model state (parameters and buffers) as numpy arrays on the CPU."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: dict[str, Any], strict: bool = True) -> None:
        """Load numpy arrays or tensors (e.g. the global model); shapes must match."""
        load_weights(self.model, weights, strict)

    def set_global_reference(self, weights: dict[str, Any]) -> None:
        """Keep a frozen copy of the model holding ``weights`` (the round's global model): FedProx's proximal
        term pulls towards it, SCAFFOLD's control update measures the round's drift from it."""
        if self.global_model is None:
            import copy

            self.global_model = copy.deepcopy(self.model).requires_grad_(False)
        load_weights(self.global_model, weights, strict=False)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------- training
    def train_epochs(
        self, data: SliceSet, epochs: int, should_stop: Callable[[], bool] | None = None, on_step=None
    ) -> TrainStats:
        """``epochs`` shuffled passes over ``data`` (``len(data) // batch_size`` steps each)."""
        batches = (idx for _ in range(epochs) for idx in self._epoch(data))
        return self._run(data, batches, should_stop, on_step)

    def train_steps(
        self, data: SliceSet, steps: int, should_stop: Callable[[], bool] | None = None, on_step=None
    ) -> TrainStats:
        """Exactly ``steps`` optimisation steps, reshuffling whenever a pass ends."""

        def gen():
            n = 0
            while n < steps:
                for idx in self._epoch(data):
                    if n >= steps:
                        return
                    n += 1
                    yield idx

        return self._run(data, gen(), should_stop, on_step)

    def _epoch(self, data: SliceSet):
        """Shuffled batches; single-modality batches when the model has domain-specific batch norm."""
        return data.epoch(self.config.batch_size, self.rng, by_modality=bool(self.domains),
                          sampler=self.config.sampler)

    def _run(self, data: SliceSet, batches: Iterable[np.ndarray], should_stop, on_step) -> TrainStats:
        if len(data) == 0:
            raise ValueError(f"no training slices in split {data.split!r}")
        self.model.train()
        t0 = time.perf_counter()
        steps = samples = 0
        loss_sum = 0.0
        aborted = False
        for idx in batches:
            if should_stop is not None and should_stop():
                aborted = True
                break
            images, labels = data.batch(idx)
            if self.domains:
                set_domain(self.model, data.modality_of(idx))
            loss = self.train_batch(images, labels)
            steps += 1
            samples += len(idx)
            loss_sum += loss
            if on_step is not None:
                on_step(self.total_steps, loss)
        return TrainStats(steps, samples, loss_sum / max(steps, 1), time.perf_counter() - t0, aborted)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One step on images (B, 1, H, W) float and labels (B, H, W) int; returns the loss.

        Raises:
            NonFiniteLossError: the loss is NaN or Inf (the step is not applied).
        """
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        images = self.augment(images, generator=self.generator)  # float32: GIN's draws and renormalisation
        images = images.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.amp):
            logits = self.model(images)
            adversarial = self.adversary.generator_loss(images) if self.adversary is not None else None
        logits = logits.float()  # the loss in float32
        views = getattr(self.augment, "views", 1)
        b = labels.shape[0]
        loss = self.loss_fn(logits[:b], labels)  # multi-view: segmentation loss on the first view
        if views > 1:
            loss = loss + self.config.consistency_weight * consistency_loss(logits, views)
        if adversarial is not None:
            loss = loss + adversarial.float()
        if self.method.optimizer == "fedprox":
            if self.global_model is None:
                raise ValueError(f"method {self.method.name}: FedProx pulls towards the round's global model; "
                                 "call set_global_reference first (it trains in a federation only)")
            from fedgin.engine.federated_optim import proximal_term

            loss = loss + proximal_term(self.model, self.global_model, self.config.fedprox_mu)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"training loss is {loss.item()} at step {self.total_steps}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.adversary is not None:
            self.adversary.discriminator_step()
        self.total_steps += 1
        return float(loss.detach())

    def step_scheduler(self, validation_loss: float) -> None:
        """ReduceLROnPlateau step on a validation loss (once per epoch or round)."""
        if np.isfinite(validation_loss):
            self.scheduler.step(validation_loss)

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C_out, H, W) float32 for images (B, 1, H, W), eval mode, no augmentation."""
        self.model.eval()
        images = images.to(self.device).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.amp):
            return self.model(images).float()

    def to_labels(self, logits: torch.Tensor) -> torch.Tensor:
        return logits_to_labels(logits)

    def evaluate(self, data: SliceSet, progress: bool = False, surface: bool = False,
                 tolerance_mm: float = NSD_TOLERANCE_MM, geometry: str = "cache") -> dict[str, Any]:
        """Per-case, per-class 3D Dice over every case of ``data``, plus the mean loss per slice.

        ``surface``: also HD95 (mm) and NSD at ``tolerance_mm`` per case and class (``fedgin.engine.surface``); slower.
        ``geometry``: where the scores are computed: ``"cache"``, the cached grid and its voxel size (training
        curves); ``"source"``, each case's source volume: the slice predictions are stacked into the cached volume,
        mapped back onto the source grid (nearest neighbour, as ``fedgin predict`` writes them) and scored against
        the source label map with the source voxel size, as the paper scores reconstructed volumes.

        Returns:
            ``{"cases": [{"case", "site", "modality", "geometry", "dice": {class: float|None}, "voxels": {...}}],
            "summary": fedgin.engine.metrics.summarise(...), "mean_dice": float, "loss": float}``.

        Raises:
            DatalistError: ``geometry="source"`` on a cache without source label maps (prepared before they were
                kept: prepare it again).
        """
        if geometry not in ("cache", "source"):
            raise ValueError(f"geometry must be 'cache' or 'source', got {geometry!r}")
        cases = []
        loss_sum, n_slices = 0.0, 0
        bs = self.config.eval_batch_size
        it = range(data.num_cases)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"evaluate {data.split}", unit="case")
        for ci in it:
            case = data.cases[ci]
            if self.domains:
                set_domain(self.model, case.modality)  # DSBN: the branch of the volume's modality
            preds = []
            for images, labels in data.case_batches(ci, bs):
                logits = self.predict_logits(images)
                labels_d = labels.to(self.device)
                loss_sum += float(self.loss_fn(logits, labels_d)) * images.shape[0]
                n_slices += images.shape[0]
                preds.append(self.to_labels(logits).cpu().numpy())
            pred = np.concatenate(preds)  # (S, X, Y): the cached volume, slices stacked back along z
            if geometry == "source":
                pred, truth, spacing = source_geometry(case, pred)
            else:
                sx, sy, sz = case.meta["spacing_mm"]
                truth, spacing = np.asarray(case.label), (sz, sx, sy)  # stack[z] == volume[:, :, z]
            per_class = dice_per_class(pred, truth, len(self.classes))
            record = {
                "case": case.case_id,
                "site": case.site,
                "modality": case.modality,
                "geometry": geometry,
                "dice": {n: r["dice"] for n, r in zip(self.classes, per_class)},
                "voxels": {n: {"truth": r["truth_voxels"], "pred": r["pred_voxels"]}
                           for n, r in zip(self.classes, per_class)},
            }
            if surface:
                sm = surface_metrics(pred, truth, len(self.classes), spacing, tolerance_mm)
                record["hd95_mm"] = {n: r["hd95_mm"] for n, r in zip(self.classes, sm)}
                record["nsd"] = {n: r["nsd"] for n, r in zip(self.classes, sm)}
                record["nsd_tolerance_mm"] = float(tolerance_mm)
            cases.append(record)
        summary = summarise(cases, self.classes)
        return {
            "cases": cases,
            "summary": summary,
            "mean_dice": summary["mean_dice"],
            "loss": loss_sum / max(n_slices, 1),
        }


def source_geometry(case: CaseSlices, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A cached-grid prediction ``pred`` (S, X, Y) of ``case`` on its source volume's grid.

    Returns:
        (prediction (X0, Y0, Z0) uint8, source label map (X0, Y0, Z0) uint8, voxel size (mm) per axis), the source
        grid in RAS voxel order.
    """
    import nibabel as nib

    from fedgin.data.datalist import DatalistError, source_label_path
    from fedgin.data.nifti import voxel_spacing
    from fedgin.data.preprocess import labels_onto

    dl = case.datalist or {}
    path = source_label_path(dl, case.meta)
    if path is None:
        raise DatalistError(f"{dl.get('path', case.site)}: case {case.case_id} has no source label map (a cache prepared before "
                            "they were kept): prepare the site again to score in the source geometry")
    try:
        img = nib.load(str(path))
        truth = np.asarray(img.dataobj, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DatalistError(f"{path}: cannot read the source label map: {e}") from e
    on_source = labels_onto(np.moveaxis(pred.astype(np.uint8), 0, 2), np.asarray(case.meta["affine"]),
                            truth.shape, img.affine)
    return on_source, truth, tuple(float(s) for s in voxel_spacing(img.affine))
