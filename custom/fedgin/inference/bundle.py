"""``fedgin export-bundle``: a fedgin model file → a MONAI bundle (MONAI's bundle specification).

The bundle folder::

    configs/metadata.json   versions, task, intended use, labels, training spacing/size, network_data_format
    configs/inference.json  `python -m monai.bundle run --config_file configs/inference.json`: NIfTI scans in
                            ``dataset_dir`` → ``<name>_seg.nii.gz`` label maps in ``output_dir``, each in its scan's
                            own geometry (shape and affine)
    configs/logging.conf    the logging setup ``monai.bundle run`` reads
    models/model.pt         state_dict of ``network_def`` (a ``monai.networks.nets.UNet`` for plain MONAI U-Nets)
    models/model.ts         TorchScript of the same network (when it scripts or traces), with the metadata inside
    docs/README.md          what the model is, inputs, outputs, how to run it, preprocessing, limits, training
    LICENSE                 Apache-2.0 notice

``inference.json`` is fedgin's prediction (``fedgin.inference.predict``) in MONAI transforms: RAS (``Orientationd``),
the training grid (:class:`FedginSpacingd`: the one fedgin transform, see below), centre crop, the percentile clip and
z-score on the field of view, centre pad with the normalised minimum, the network on every axial slice
(``SliceInferer``), argmax (or logit > 0 for one class), then ``Invertd`` undoes pad, crop, grid and orientation
(nearest neighbour, background outside the model's field of view) and ``SaveImaged`` writes uint8 labels.

Why one fedgin transform: fedgin resamples with the first voxel's *outer corner* fixed and ``n' = round(n d / d')``
voxels (``fedgin.data.preprocess``); MONAI's ``Spacingd`` keeps the first voxel's *centre* (``scale_extent=False``:
a shift of (d' - d) / 2 mm against the training grid), or (``scale_extent=True``) takes the offset's sign from the
world coordinates, off by up to a target voxel where the scan's corner lies within half a voxel of world 0. And the
labels' way back must round as fedgin does where a scan voxel lies exactly between two grid voxels (2 mm slices on a
3 mm grid: every third slice), which only the same computation (``labels_onto``) guarantees.

What still differs from ``fedgin predict``: float rounding of the intensity statistics (float32 here, float64 in
fedgin: ~1e-6), which can flip a voxel whose logits tie; and scan voxels more than half a model voxel beyond the
last grid voxel of a padded axis (at most half a model voxel at the far edge), which ``fedgin predict`` labels from
the network's output on the padding and the bundle labels background (``SpatialPadd``'s inverse drops the padding).

Writing: the bundle is built in ``<output>.building`` and renamed into place once complete and validated (the
metadata against the shipped schema ``bundle_schema.json``, the network in ``inference.json`` against the model
file's network on a test batch); an existing folder is replaced only when it is a bundle (``configs/metadata.json``
and ``models/model.pt``) or empty. Errors (:class:`BundleError`, ``ModelFileError``, ``OutputPathError``: all
``ValueError``) name the file and the problem, and leave nothing behind.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys

__all__ = ["BundleError", "FedginSpacingd", "SCHEMA_FILE", "export_bundle", "bundle_metadata", "inference_config",
           "validate_metadata"]

#: the metadata schema shipped with fedgin (a local copy: ``monai.bundle.verify_metadata`` downloads its own)
SCHEMA_FILE = Path(__file__).with_name("bundle_schema.json")
#: the schema a MONAI model-zoo bundle names (``verify_metadata`` fetches it where there is a network)
MONAI_SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                    "meta_schema_20240725.json")
_MODALITIES = {"ct": "CT", "mri": "MR"}
_BUNDLE_FILES = ("configs/metadata.json", "models/model.pt")


class BundleError(ValueError):
    """A bundle cannot be exported (model file, output folder, or a check of the written bundle); the message names
    the file."""


class FedginSpacingd(MapTransform, InvertibleTransform):
    """Resample to fedgin's training grid with fedgin's own code (``fedgin.data.preprocess.resample``), tracked
    and invertible like a MONAI spatial transform (``Invertd``).

    Input: channel-first MetaTensor (C, X, Y, Z) in RAS voxel order (after ``Orientationd``), affine in mm. Output:
    float32 (C, X', Y', Z') on the grid of spacing ``(spacing, spacing, z)`` mm, z kept unless below ``z_min`` (then
    ``z_target``); the first voxel's outer corner stays where it was, ``n' = round(n d / d')`` (an axis whose spacing
    is already the target within 1e-6 is kept). Linear interpolation, edge values outside (scipy ``order=1``,
    ``mode="nearest"``).

    Inverse: back onto the input grid, linear; with ``Invertd(nearest_interp=True)`` nearest neighbour from the
    ``size`` x ``size`` grid the model saw (this grid centre padded/cropped as by ``CenterSpatialCropd`` +
    ``SpatialPadd``, whose inverses ran before), 0 outside it: ``fedgin.data.preprocess.labels_onto`` with the
    matrices ``fedgin predict`` uses, so a scan voxel up to half a model voxel beyond the outermost grid voxel takes
    that voxel's label where the grid was padded, as in ``fedgin predict`` (the padding itself comes back as 0).
    """

    def __init__(self, keys: KeysCollection, spacing: float, size: int | None = None, z_min: float = 2.5,
                 z_target: float = 3.0, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if spacing <= 0:
            raise ValueError(f"FedginSpacingd: spacing must be > 0 mm, got {spacing}")
        self.spacing, self.size = float(spacing), (int(size) if size else None)
        self.z_min, self.z_target = float(z_min), float(z_target)

    @staticmethod
    def _like(img: Any, array: np.ndarray, affine: np.ndarray) -> MetaTensor:
        """``array`` as a MetaTensor with ``img``'s meta and applied operations, on ``affine``."""
        out = MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), meta=dict(img.meta),
                         applied_operations=list(img.applied_operations))
        out.affine = torch.as_tensor(affine, dtype=torch.float64)
        return out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        from fedgin.data.nifti import voxel_spacing
        from fedgin.data.preprocess import resample, target_spacing

        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            affine = np.asarray(img.affine, dtype=np.float64)  # type: ignore[attr-defined]
            target = target_spacing(voxel_spacing(affine), self.spacing, self.z_min, self.z_target)
            channels = [resample(np.asarray(c, dtype=np.float32), affine, target, order=1)
                        for c in img.detach().cpu().numpy()]
            out = self._like(img, np.stack([c for c, _ in channels]), channels[0][1])
            self.push_transform(out, orig_size=list(img.shape[1:]),
                                extra_info={"src_affine": affine.tolist(), "mode": "bilinear"})
            d[key] = out
        return d

    def _labels_back(self, labels: np.ndarray, grid: np.ndarray, shape: list[int], src: np.ndarray) -> np.ndarray:
        from fedgin.data.preprocess import center_pad_crop, labels_onto

        if self.size is not None:
            labels, grid = center_pad_crop(labels, grid, self.size, pad_value=0)
        return labels_onto(labels, grid, shape, src)

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        from scipy import ndimage

        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            op = self.pop_transform(img)
            shape, src = [int(n) for n in op[TraceKeys.ORIG_SIZE]], np.asarray(op[TraceKeys.EXTRA_INFO]["src_affine"])
            grid = np.asarray(img.affine, dtype=np.float64)  # type: ignore[attr-defined]
            array = img.detach().cpu().numpy()
            if op[TraceKeys.EXTRA_INFO]["mode"] == "nearest":
                back = [self._labels_back(c, grid, shape, src) for c in array]
            else:
                m = np.linalg.inv(grid) @ src
                back = [ndimage.affine_transform(c, m[:3, :3], offset=m[:3, 3], output_shape=shape, order=1,
                                                 mode="nearest", prefilter=False) for c in array]
            d[key] = self._like(img, np.stack(back), src)
        return d


# --- the model file -> the bundle's network ------------------------------------------------------------------------


def _read_model(model_file: Path, modality: str | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model file's network (eval mode, CPU; a DSBN model's ``modality`` branch selected) and its meta."""
    from fedgin.engine import load_model_file
    from fedgin.engine.norm import set_domain

    model, meta = load_model_file(model_file, "cpu")
    missing = [k for k in ("size_px", "spacing_mm") if not meta.get(k)]
    if missing:
        raise BundleError(f"{model_file}: the model file lacks {missing}: it cannot say how to preprocess")
    domains = list(meta["model_config"].get("domains") or [])
    if modality is not None and modality not in _MODALITIES:
        raise BundleError(f"--modality must be one of {sorted(_MODALITIES)}, got {modality!r}")
    if domains:
        if modality not in domains:
            raise BundleError(f"{model_file}: a DSBN model (one batch-norm branch per modality): give the modality "
                              f"the bundle is for (--modality {'|'.join(domains)})")
        set_domain(model, modality)
    return model, meta


def _plain_state(model: torch.nn.Module, domain: str | None) -> dict[str, torch.Tensor]:
    """``model``'s state_dict with a DSBN model's ``domain`` branch as the plain batch norm (keys
    ``...branches.<domain>.weight`` → ``...weight``; the other branches dropped)."""
    state = model.state_dict()
    if domain is None:
        return {k: v.detach().clone() for k, v in state.items()}
    out = {}
    for k, v in state.items():
        if ".branches." not in k:
            out[k] = v.detach().clone()
        elif f".branches.{domain}." in k:
            out[k.replace(f".branches.{domain}.", ".")] = v.detach().clone()
    return out


def network_def(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``network_def`` of inference.json: ``monai.networks.nets.UNet`` when the model is MONAI's U-Net without a
    test-time input filter (SegUNet holds it as ``.model``, so the state_dict keys are MONAI's), else fedgin's
    ``SegUNet`` (the authors' U-Net, or an input filter); DSBN models become their chosen branch's plain network."""
    from fedgin.engine.model import num_outputs

    cfg = dict(meta["model_config"])
    num_classes = len(meta["classes"])
    if cfg.get("arch", "monai") == "monai" and cfg.get("test_input", "raw") == "raw":
        return {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": num_outputs(num_classes),
                "channels": list(cfg["channels"]), "strides": list(cfg["strides"]),
                "num_res_units": int(cfg["num_res_units"]), "norm": cfg["norm"], "dropout": float(cfg["dropout"])}
    cfg["domains"] = []
    return {"_target_": "fedgin.engine.model.SegUNet", "num_classes": num_classes, **cfg}


def _instantiate(definition: dict[str, Any]) -> torch.nn.Module:
    """The network a bundle config item instantiates (MONAI's own parser, as ``monai.bundle run`` does)."""
    from monai.bundle import ConfigParser

    return ConfigParser({"network_def": definition}).get_parsed_content("network_def")


def _check_same(reference: torch.nn.Module, other: torch.nn.Module, size: int, what: str) -> None:
    """``other`` gives ``reference``'s logits on a fixed random batch (2, 1, size, size); else a ``BundleError``."""
    x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = reference(x), other(x)
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-5):
        diff = (a - b).abs().max().item() if a.shape == b.shape else f"shape {tuple(b.shape)} != {tuple(a.shape)}"
        raise BundleError(f"{what} does not reproduce the model file's network (max difference {diff})")


def _torchscript(net: torch.nn.Module, size: int) -> tuple[Any | None, str]:
    """(TorchScript module or None, how: ``"torch.jit.script"``, ``"torch.jit.trace"`` or why neither worked)."""
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer warnings
        for how in ("script", "trace"):
            try:
                if how == "script":
                    ts = torch.jit.script(net)
                else:
                    ts = torch.jit.trace(net, torch.zeros(1, 1, size, size), check_trace=False)
                _check_same(net, ts, size, f"torch.jit.{how}")
                return ts, f"torch.jit.{how}"
            except Exception as e:  # noqa: BLE001 - any failure means: no TorchScript, say why
                errors.append(f"torch.jit.{how}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    return None, "not exported (" + "; ".join(errors) + ")"


# --- configs ---------------------------------------------------------------------------------------------------------


def inference_config(meta: dict[str, Any], net: dict[str, Any]) -> dict[str, Any]:
    """inference.json (a MONAI bundle config) for a model file's ``meta`` and its ``network_def``."""
    from fedgin.data.preprocess import Z_MIN_MM, Z_TARGET_MM

    size = int(meta["size_px"][0])
    spacing = float(meta["spacing_mm"][0])
    clip = meta.get("clip_percentiles", [0.5, 99.5])
    binary = len(meta["classes"]) == 1
    intensity: list[dict[str, Any]] = []
    if clip is not None:
        intensity.append({"_target_": "ClipIntensityPercentilesd", "keys": "image", "lower": float(clip[0]),
                          "upper": float(clip[1]), "_desc_": "clip to the field of view's percentiles"})
    intensity.append({"_target_": "NormalizeIntensityd", "keys": "image",
                      "_desc_": "z-score: mean and population std of the field of view"})
    preprocessing = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
        {"_target_": "fedgin.inference.bundle.FedginSpacingd", "keys": "image", "spacing": "@spacing_mm",
         "size": "@size_px", "z_min": Z_MIN_MM, "z_target": Z_TARGET_MM,
         "_desc_": "fedgin's training grid: in-plane spacing_mm, z kept unless < 2.5 mm (then 3 mm), first voxel "
                   "corner fixed, linear interpolation"},
        {"_target_": "CenterSpatialCropd", "keys": "image", "roi_size": ["@size_px", "@size_px", -1]},
        *intensity,
        {"_target_": "SpatialPadd", "keys": "image", "spatial_size": ["@size_px", "@size_px", -1],
         "method": "symmetric", "mode": "constant", "value": "$float('nan')",
         "_desc_": "centre pad; the padding is marked NaN, then set to the normalised minimum"},
        {"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x.nan_to_num(float(x[~x.isnan()].min()))"},
    ]
    discrete = {"_target_": "AsDiscreted", "keys": "pred", **({"threshold": 0.0} if binary else {"argmax": True})}
    postprocessing = [
        {**discrete, "_desc_": "label ids: logit > 0 (one class) or argmax over background + classes"},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": True, "to_tensor": True,
         "_desc_": "undo pad, crop, resampling (nearest neighbour, background outside the model's field of view) "
                   "and orientation: the labels on the scan's own grid"},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
         "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False,
         "print_log": False},
    ]
    scans = ("$sorted(f for f in glob.glob(os.path.join(@dataset_dir, '*.nii*')) "
             "if f.endswith(('.nii', '.nii.gz')) and not os.path.basename(f).startswith('.'))")
    return {
        "imports": ["$import glob", "$import os", "$import numpy"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "spacing_mm": spacing,
        "size_px": size,
        "sw_batch_size": 16,
        "datalist": scans,
        "network_def": net,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f} for f in @datalist]", "transform": "@preprocessing"},
        "inferer": {"_target_": "SliceInferer", "roi_size": ["@size_px", "@size_px"], "spatial_dim": 2,
                    "sw_batch_size": "@sw_batch_size", "progress": False},
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "segment": "$lambda d: @postprocessing({**d, 'pred': @inferer(d['image'][None].to(@device), @network)[0]})",
        "initialize": [
            "$@datalist or exec('raise FileNotFoundError(%r)' % ('no .nii/.nii.gz scan in dataset_dir ' + "
            "@dataset_dir))",
            "$torch.set_grad_enabled(False)",
            "$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))",
            "$@network.eval()",
        ],
        "run": ["$print(str(sum(1 for d in @dataset if @segment(d))) + ' label map(s) written to ' + @output_dir)"],
    }


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

LICENSE_TEXT = """Copyright (c) the fedgin-flare authors

Licensed under the Apache License, Version 2.0 (the "License"); you may not use this bundle (its configs, weights
and documents) except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License is distributed on
an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the License for the
specific language governing permissions and limitations under the License.

The model is for research only and not for clinical use (see docs/README.md).
"""


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("nibabel", "scipy", "fire", "fedgin-flare"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _recorded(meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(what the model was trained on, its recorded metrics): from the model file's meta, or ``not recorded``."""
    prov = meta.get("provenance") or {}
    datalists = prov.get("datalists")
    if datalists:
        data = "fedgin slice caches (datalist.json): " + ", ".join(str(d) for d in datalists)
    elif prov.get("flare_job_config"):
        data = f"a FedGIN federation (job config {prov['flare_job_config']}); the sites' data are not recorded"
    elif meta.get("fedgin_round"):
        rnd = meta["fedgin_round"]
        data = (f"a FedGIN federation (global model after round {int(rnd.get('round', -1)) + 1}, job "
                f"{rnd.get('job_id', '?')}); the sites' data are not recorded")
    else:
        data = "not recorded"
    metrics: dict[str, Any] = {}
    if isinstance(meta.get("val_dice"), (int, float)):
        metrics["val_mean_dice"] = float(meta["val_dice"])
        metrics["note"] = "mean 3D Dice on the training run's validation cases (fedgin train, best_model.pt)"
    else:
        metrics["val_mean_dice"] = "not recorded"
    return data, metrics


def bundle_metadata(meta: dict[str, Any], model_file: Path, *, modality: str | None, network: str,
                    torchscript: str, version: str = "0.1.0") -> dict[str, Any]:
    """metadata.json: MONAI's mandatory keys, ``network_data_format`` and fedgin's training facts."""
    import monai

    classes = list(meta["classes"])
    size = int(meta["size_px"][0])
    spacing = [float(s) for s in meta["spacing_mm"]]
    clip = meta.get("clip_percentiles", [0.5, 99.5])
    labels = {"0": "background", **{str(i + 1): c for i, c in enumerate(classes)}}
    binary = len(classes) == 1
    mod = _MODALITIES[modality] if modality else "CT or MR"
    data, metrics = _recorded(meta)
    packages = _versions()
    train = meta.get("train_config") or {}
    out_channels = {"0": f"{classes[0]} logit: label 1 where > 0, else 0 (background)"} if binary else labels
    slice_shape = [size, size]
    z_rule = "z spacing kept unless below 2.5 mm, then 3.0 mm"
    return {
        "schema": MONAI_SCHEMA_URL,
        "version": version,
        "changelog": {version: f"exported by fedgin export-bundle from {model_file.name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": packages,
        "required_packages_version": packages,
        "name": "fedgin " + ", ".join(classes) + " segmentation",
        "task": f"Segmentation of {', '.join(classes)} in {mod} volumes, slice by slice (axial 2D U-Net)",
        "description": (f"A 2D U-Net ({network}) trained with fedgin (FedGIN: federated cross-modality CT + MRI "
                        f"segmentation with GIN augmentation) on axial slices resampled to {spacing[0]:g} mm in-plane "
                        f"({z_rule}) and centre padded/cropped to {size}x{size}. It segments every axial slice of a "
                        "NIfTI volume and writes a label map in the volume's own geometry."),
        "authors": "fedgin-flare (exported by fedgin export-bundle)",
        "copyright": "Copyright (c) the fedgin-flare authors; Apache-2.0 (see LICENSE)",
        "intended_use": "Research only: not for clinical use, diagnosis or treatment decisions.",
        "data_source": data,
        "data_type": "nifti",
        "image_classes": (f"single channel {mod} volume (any orientation and spacing), reoriented to RAS, resampled, "
                          "clipped and z-scored by the bundle"),
        "label_classes": ", ".join(f"{k} = {v}" for k, v in labels.items()),
        "pred_classes": ("uint8 label map: " + ", ".join(f"{k} = {v}" for k, v in labels.items())
                         + "; in the input scan's shape and affine"),
        "eval_metrics": metrics,
        "labels": labels,
        "training_spacing_mm": {"in_plane": spacing[0], "z": z_rule},
        "training_slice_size_px": slice_shape,
        "preprocessing": {
            "orientation": "RAS",
            "spacing_mm": spacing[0],
            "z_rule": z_rule,
            "grid": "first voxel's outer corner fixed, n' = round(n * d / d'), linear interpolation, edge values",
            "pad_crop": f"centre crop/pad to {size}x{size}; padding = the normalised minimum",
            "clip_percentiles": clip,
            "normalization": meta.get("normalization") or "per-volume z-score of the field of view",
        },
        "training": {"method": train.get("method", "not recorded"), "steps": meta.get("step", "not recorded"),
                     "model_config": meta["model_config"], "classes": classes, "model_file": model_file.name,
                     "modality": mod},
        "network": network,
        "torchscript": torchscript,
        "requires_fedgin": "the preprocessing step fedgin.inference.bundle.FedginSpacingd (pip package fedgin-flare)"
        + ("" if network.startswith("monai") else " and the network fedgin.engine.model.SegUNet"),
        "references": ["Nagaraju et al., 2026, Federated Learning for Cross-Modality Medical Image Segmentation via "
                       "Augmentation-Driven Generalization (FedGIN)"],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": mod, "num_channels": 1,
                "spatial_shape": slice_shape, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {"0": "image: one axial slice of the preprocessed volume (z-scored)"}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation" if binary else "labels",
                "num_channels": 1 if binary else len(labels), "spatial_shape": slice_shape, "dtype": "float32",
                "value_range": [], "is_patch_data": True, "channel_def": out_channels}},
        },
    }


def validate_metadata(metadata: dict[str, Any], where: str | Path = "metadata.json") -> None:
    """Validate ``metadata`` against the shipped schema (``jsonschema``); ``BundleError`` naming ``where``."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    try:
        jsonschema.validate(instance=metadata, schema=schema)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BundleError(f"{where}: does not follow the bundle metadata schema at {path}: {e.message}") from e


# --- docs ------------------------------------------------------------------------------------------------------------


def readme(metadata: dict[str, Any]) -> str:
    """docs/README.md from the bundle's metadata."""
    pre = metadata["preprocessing"]
    size = metadata["training_slice_size_px"][0]
    clip = pre["clip_percentiles"]
    clip_text = (f"clip to the field of view's {clip[0]:g} and {clip[1]:g} percentiles (`ClipIntensityPercentilesd`), "
                 if clip is not None else "")
    labels = "\n".join(f"| {k} | {v} |" for k, v in metadata["labels"].items())
    metric = metadata["eval_metrics"]["val_mean_dice"]
    metric = f"{metric:.3f} ({metadata['eval_metrics']['note']})" if isinstance(metric, float) else metric
    fedgin_net = "" if metadata["network"].startswith("monai") else (
        " The network is fedgin's `SegUNet` (`fedgin.engine.model`), so fedgin is needed to build it too.")
    return f"""# {metadata['name']}

{metadata['description']}

**Intended use:** {metadata['intended_use']}

## Model

- Network: `{metadata['network']}` (`network_def` in `configs/inference.json`; weights `models/model.pt`, a
  state_dict).{fedgin_net}
- TorchScript `models/model.ts`: {metadata['torchscript']}.
- Trained on: {metadata['data_source']}.
- Training method: {metadata['training']['method']}, {metadata['training']['steps']} steps; model file
  `{metadata['training']['model_file']}`.
- Measured Dice: {metric}.

## Input

A folder of NIfTI volumes (`.nii`, `.nii.gz`), {metadata['network_data_format']['inputs']['image']['modality']},
one channel, any orientation (RAS, LPS, oblique) and voxel size. The network itself sees one axial slice at a time:
(1, {size}, {size}) float32, z-scored.

## Output

`<name>_seg.nii.gz` per input in `output_dir`: uint8 labels with the input's exact shape and affine.

| value | label |
|---|---|
{labels}

## Run

From this folder (it needs `monai`, `nibabel`, `fire` and, for one preprocessing step, `fedgin-flare`):

```bash
python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
    --dataset_dir /path/to/scans --output_dir /path/to/labels
```

From elsewhere add `--bundle_root /path/to/this/bundle`. Write the labels to another folder than the scans (a
second run would segment them too). `--device "\\$torch.device('cpu')"` forces the CPU.

## Preprocessing (what fedgin trained and predicts with)

1. `LoadImaged` (nibabel), `EnsureChannelFirstd`.
2. `Orientationd` to RAS voxel order (transposes and flips only).
3. `fedgin.inference.bundle.FedginSpacingd`: {pre['spacing_mm']:g} mm in-plane, {pre['z_rule']}; {pre['grid']}.
   This is the one fedgin transform (fedgin-flare must be installed): MONAI's `Spacingd` keeps the first voxel's
   centre instead of its outer corner (a shift of (d' - d) / 2 mm against the grid the model was trained on), and
   its `scale_extent=True` offset takes its sign from the world coordinates (off by up to a voxel where the scan's
   corner lies near world 0). Its inverse also gives the labels' way back exactly as `fedgin predict` computes it,
   so that scan voxels lying exactly between two grid voxels (2 mm slices on a 3 mm grid) round the same way.
4. `CenterSpatialCropd` to {size}x{size} in-plane (z untouched).
5. Per volume, on the field of view only: {clip_text}z-score (`NormalizeIntensityd`, population std).
6. `SpatialPadd` to {size}x{size}, centred; the padding takes the normalised minimum (marked NaN, then filled by
   `Lambdad`), as fedgin pads with the volume's minimum before normalising.
7. `SliceInferer`: every axial slice through the network, `sw_batch_size` slices at a time.
8. `AsDiscreted` (argmax, or logit > 0 for a single class), `Invertd` (pad, crop, grid and orientation undone,
   nearest neighbour, background outside the model's field of view), `SaveImaged` (uint8, the scan's affine).

The bundle gives the labels of `fedgin predict` on the same scans, with two exceptions: float rounding (the
percentiles and the z-score in float32 here, float64 in fedgin: about 1e-6) can flip a voxel whose logits tie; and
scan voxels more than half a model voxel beyond the last grid voxel of a padded axis (a band of at most half a model
voxel at the far edge of the field of view) are background here, where `fedgin predict` labels them from the
network's output on the padding. `tests/test_bundle.py` measures the agreement on an LPS-stored and an oblique
anisotropic scan (identical labels there) and requires at least 99.9 % of the voxels and a per-class Dice of 0.99.

## Limits

- Research only; not validated for any clinical use.
- A 2D model: each axial slice is segmented on its own, without context from its neighbours.
- Volumes whose field of view exceeds {size} x {pre['spacing_mm']:g} mm in-plane are centre-cropped: the labels
  outside are background.
- The model knows only what it was trained on (see "Trained on"); other anatomy, contrasts or scanners may fail
  silently.
- NIfTI only: convert DICOM series first (`fedgin predict` reads them).
- Scans with NaN/Inf voxels are not checked here (`fedgin predict` refuses or repairs them).
- Without a percentile clip, the padding value is the minimum of the cropped field of view (fedgin: of the whole
  resampled volume); they differ only when the crop removed the volume's minimum.

## The metadata schema

`configs/metadata.json` names MONAI's schema URL (`schema`), which `monai.bundle verify_metadata` downloads. fedgin
ships a local copy written from MONAI's bundle specification (`fedgin/inference/bundle_schema.json`) and validates
every exported bundle against it with `jsonschema`, because the export runs where no network may be reachable:
`python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath <that file>` uses the copy
without downloading.
"""


# --- writing ---------------------------------------------------------------------------------------------------------


def _check_output(out: Path) -> None:
    """An output folder that may be replaced: absent, empty, or a bundle; its ``.building`` sibling not a link,
    no ``.previous`` sibling (what an export interrupted between its two renames leaves)."""
    from fedgin.common.outputs import check_output_dir

    check_output_dir(out)
    check_output_dir(_building(out), "--output's build folder")
    old = _previous(out)
    if old.exists() or old.is_symlink():
        raise BundleError(f"{old}: left by an interrupted export; remove it (it may hold the previous bundle)")
    if out.is_dir() and any(out.iterdir()) and not all((out / f).is_file() for f in _BUNDLE_FILES):
        raise BundleError(f"--output {out}: an existing folder that is not a MONAI bundle (no "
                          f"{' and '.join(_BUNDLE_FILES)}); refusing to overwrite it: choose another --output")


def _building(out: Path) -> Path:
    return out.with_name(out.name + ".building")


def _previous(out: Path) -> Path:
    return out.with_name(out.name + ".previous")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n")


def _swap_in(built: Path, out: Path) -> None:
    """Rename ``built`` to ``out``; an existing ``out`` is moved aside first and removed once the new one is there."""
    old = _previous(out)
    if out.exists():
        os.rename(out, old)
        try:
            os.rename(built, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old)
    else:
        os.rename(built, out)


def export_bundle(model_file: str | Path, output: str | Path, *, modality: str | None = None,
                  version: str = "0.1.0") -> dict[str, Any]:
    """Write a MONAI bundle for ``model_file`` to ``output`` (module docstring: layout, checks, atomic writing).

    Args:
        model_file: a fedgin model file (``fedgin train``'s model.pt/best_model.pt, a federation's
            FL_global_model.pt).
        output: the bundle folder; replaced when it is a bundle, refused when it is another non-empty folder.
        modality: ``ct`` or ``mri``: the input modality written into the metadata; required for DSBN models (the
            bundle gets that modality's batch-norm branch).
        version: the bundle's version.

    Returns:
        ``{"bundle", "network", "torchscript", "files"}``.

    Raises:
        BundleError, ModelFileError, OutputPathError: nothing was written.
    """
    model_file, out = Path(model_file), Path(output)
    model, meta = _read_model(model_file, modality)
    _check_output(out)
    size = int(meta["size_px"][0])
    domain = modality if meta["model_config"].get("domains") else None
    definition = network_def(meta)
    net = _instantiate(definition)
    try:
        net.load_state_dict(_plain_state(model, domain))
    except RuntimeError as e:
        raise BundleError(f"{model_file}: its weights do not load into the bundle's network: {e}") from e
    net.eval()
    _check_same(model, net, size, f"the bundle network {definition['_target_']}")
    network = "monai.networks.nets.UNet" if definition["_target_"] == "UNet" else definition["_target_"]
    ts, how = _torchscript(net, size)
    config = inference_config(meta, definition)
    metadata = bundle_metadata(meta, model_file, modality=modality, network=network, torchscript=how, version=version)
    validate_metadata(metadata, f"the metadata for {model_file}")
    building = _building(out)
    if building.exists():
        shutil.rmtree(building)  # a stale build of an interrupted export (never a link: _check_output)
    try:
        for sub in ("configs", "models", "docs"):
            (building / sub).mkdir(parents=True)
        _write_json(building / "configs" / "metadata.json", metadata)
        _write_json(building / "configs" / "inference.json", config)
        (building / "configs" / "logging.conf").write_text(LOGGING_CONF)
        torch.save(net.state_dict(), building / "models" / "model.pt")
        if ts is not None:
            from monai.data import save_net_with_metadata

            buffer = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.save: "switch to torch.export"
                save_net_with_metadata(ts, buffer, include_config_vals=False, meta_values=metadata,
                                       more_extra_files={"inference.json": json.dumps(config).encode()})
            (building / "models" / "model.ts").write_bytes(buffer.getvalue())
        (building / "docs" / "README.md").write_text(readme(metadata))
        (building / "LICENSE").write_text(LICENSE_TEXT)
        validate_metadata(json.loads((building / "configs" / "metadata.json").read_text()),
                          out / "configs" / "metadata.json")
        files = sorted(str(p.relative_to(building)) for p in building.rglob("*") if p.is_file())
        _swap_in(building, out)
    except OSError as e:
        from fedgin.common.outputs import describe_os_error

        raise BundleError(f"--output {out}: {describe_os_error(e)}") from e
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return {"bundle": str(out), "network": network, "torchscript": how, "files": files}
