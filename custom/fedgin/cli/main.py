"""``fedgin``: the command line. Each subcommand is a thin shell over an importable function."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from fedgin.common.options import (MAX_SIZE_PX, OptionError, bounded_int, check_dataclass_values, fraction, int_list,
                                   name_list, nonnegative_int, positive_float, positive_int, seed_list, set_item,
                                   set_values)

TEST_INPUT_CHOICES = ["raw", "reference", "freesdg-hfc", "raffesdg-butterworth"]
NONFINITE_HELP = ("what to do with NaN/Inf voxels in a scan: error (default: refuse, naming the file, the count and "
                  "where) or repair (NaN/-Inf -> the volume's minimum, +Inf -> its maximum, with a warning)")
TEST_INPUT_HELP = ("network input at test time: raw slice (default), 'reference' = the method's reference pipeline "
                   "filter (fmaug: freesdg-hfc, raffesdg: raffesdg-butterworth, others raw), or a filter by name")


def add_nonfinite_option(s: argparse.ArgumentParser) -> None:
    """``--nonfinite error|repair`` (``fedgin.data.finite``), the same for every command that reads scans."""
    from fedgin.data.finite import NONFINITE_POLICIES

    s.add_argument("--nonfinite", choices=NONFINITE_POLICIES, default="error", help=NONFINITE_HELP)


def method_names() -> list[str]:
    """Names of the methods (``fedgin.engine.methods.method_names``: augmentations, ``fedbn``, ``dsbn``, ...,
    each optionally with a federated optimiser: ``gin+fedprox``)."""
    from fedgin.engine.methods import method_names as names

    return names()


def check_methods(methods: list[str]) -> list[str]:
    """``methods`` if every one is a method (``get_method``), else ``ValueError`` naming the first bad one."""
    from fedgin.engine.methods import get_method

    for m in methods:
        get_method(m)
    return methods


def layout_names() -> list[str]:
    """Names of the dataset layouts of ``fedgin prepare`` (``fedgin.data.prepare.LAYOUTS``)."""
    from fedgin.data.prepare import LAYOUTS

    return list(LAYOUTS)


def _organs(text: str) -> list[str]:
    """argparse type of ``--organs`` (``fedgin.common.options.name_list``)."""
    try:
        return name_list(text, "--organs")
    except OptionError:
        raise argparse.ArgumentTypeError("give at least one organ") from None


#: argparse type of every slice size option
size_px = bounded_int(1, MAX_SIZE_PX, " pixels (a larger slice does not fit in memory)")


def _read_json_file(path: str, option: str):
    """A JSON file given on the command line, with errors naming the option and the file."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"{option} {p}: no such file")
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"{option} {p}: cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise OptionError(f"{option} {p}: not valid JSON ({e})") from e


def _cmd_phantom(a: argparse.Namespace) -> int:
    from fedgin.phantom import generate_dataset

    from fedgin.phantom.ct import CT_PROTOCOLS
    from fedgin.phantom.mri import MR_PROTOCOLS

    known = [p for p in (CT_PROTOCOLS if a.modality == "ct" else MR_PROTOCOLS) if p]
    if a.protocol is not None and a.protocol not in known:
        raise OptionError(f"--protocol {a.protocol}: not a {a.modality} protocol; {a.modality} has {known}")
    ids = generate_dataset(a.output, a.modality, a.cases, a.seed, mri_sequence=a.sequence, protocol=a.protocol,
                           val_fraction=a.val_fraction, test_fraction=a.test_fraction)
    print(f"wrote {len(ids)} {a.modality} phantom cases to {a.output}")
    return 0


#: prepare flag (argparse dest) -> (the layout it applies to, its layout option name)
PREPARE_LAYOUT_FLAGS = {
    "amos_split": ("amos", "split"),
    "sequence": ("chaos", "sequence"),
    "label_map": ("generic", "label_map"),
    "pairing": ("generic", "pairing"),
    "unlisted": ("generic", "unlisted"),
}


def _prepare_layout_options(a: argparse.Namespace) -> dict:
    """The layout options given on the command line; a flag of another layout is an error."""
    options = {}
    for dest, (layout, option) in PREPARE_LAYOUT_FLAGS.items():
        value = getattr(a, dest, None)
        if value is None:
            continue
        if a.layout != layout:
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag} applies to --layout {layout} only (this run: --layout {a.layout})")
        options[option] = value
    return options


def _cmd_prepare(a: argparse.Namespace) -> int:
    from fedgin.data import prepare_site

    path = prepare_site(layout=a.layout, input_dir=a.input, output_dir=a.output, site=a.site, modality=a.modality,
                        organs=a.organs, spacing=a.spacing, size=a.size, seed=a.seed,
                        val_fraction=a.val_fraction, test_fraction=a.test_fraction,
                        layout_options=_prepare_layout_options(a), nonfinite=a.nonfinite,
                        skip_bad_cases=a.skip_bad_cases)
    d = json.loads(Path(path).read_text())
    n = {s: len(d[s]) for s in ("training", "validation", "test")}
    print(f"site {a.site}: {n['training']} training, {n['validation']} validation, {n['test']} test cases -> {path}")
    for s in d.get("skipped", []):
        print(f"skipped case {s['case_id']}: {s['reason']}", file=sys.stderr)
    return 0


def _train_config(a: argparse.Namespace):
    from fedgin.engine import TrainConfig

    values = _read_json_file(a.config, "--config") if a.config else {}
    if not isinstance(values, dict):
        raise OptionError(f"--config {a.config}: expected a JSON object of TrainConfig values, got "
                          f"{type(values).__name__}")
    if a.method is not None:
        values["method"] = a.method
    for key in ("batch_size", "lr", "seed"):
        if getattr(a, key) is not None:
            values[key] = getattr(a, key)
    if a.channels:
        values.setdefault("model", {})["channels"] = a.channels
        values["model"]["strides"] = [2] * (len(a.channels) - 1)
    from fedgin.engine.methods import get_method

    source = f"--config {a.config}" if a.config else "options"
    try:
        method = get_method(values.get("method", "gin"))
    except ValueError as e:
        raise OptionError(f"{source}: method: {e}") from None
    if method.domains:
        values.setdefault("model", {}).setdefault("domains", method.domains)
    if a.test_input is not None:
        values.setdefault("model", {})["test_input"] = method.test_input(a.test_input)
    return TrainConfig.from_dict(values, source=source)


def _cmd_train(a: argparse.Namespace) -> int:
    from fedgin.engine.trainer import resolve_device
    from fedgin.engine.training import train

    cfg = _train_config(a)
    resolve_device(a.device)  # a missing GPU fails before the data are read
    res = train(a.data, a.output, cfg, epochs=a.epochs, steps=a.steps, eval_every=a.eval_every, device=a.device)
    best = res["best_val_dice"]
    best_text = f"{best:.4f}" if best > float("-inf") else "n/a (no validation cases)"
    print(f"trained {cfg.method} in {res['seconds']:.0f} s; best validation Dice {best_text}")
    print(f"model: {res['model']}\nbest model: {res['best_model']}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from fedgin.engine.evaluation import evaluate, format_dice_table

    from fedgin.engine.trainer import resolve_device
    from fedgin.common.outputs import check_output_file, write_text_atomic

    resolve_device(a.device)
    if a.output:
        check_output_file(a.output, "--output")
    res = evaluate(a.model, a.data, a.split, device=a.device, surface=a.surface, geometry=a.geometry)
    where = "each source volume's grid" if a.geometry == "source" else "the cached grid"
    print(format_dice_table(res, title=f"3D Dice per case on {where}, mean over {a.split} cases ({a.model})"))
    if a.surface:
        for name, block in res["summary"]["per_class"].items():
            print(f"{name}: HD95 {block['hd95_mm']:.1f} mm, NSD {block['nsd']:.3f} (tolerance "
                  f"{res['cases'][0]['nsd_tolerance_mm']:g} mm), mean over {block['n']} cases")
    if a.output:
        write_text_atomic(a.output, json.dumps(res, indent=2, default=str))
        print(f"per-case results: {a.output}")
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    from fedgin.inference.predict import run_predictions

    report = run_predictions(a.model, a.input, a.output, modality=a.modality, device=a.device, overlay=a.overlay,
                             nonfinite=a.nonfinite, allow_output_in_input=a.allow_output_in_input,
                             output_format=a.format)
    for s in report["skipped"]:
        print(f"fedgin predict: note: skipped {s['input']}: {s['reason']}", file=sys.stderr)
    for r in report["predictions"]:
        found = ", ".join(f"{c} {n}" for c, n in r["voxels"].items())
        written = " + ".join(r[k] for k in ("output", "seg") if r.get(k))
        print(f"{written}: {found} voxels" + (f"; overlay {r['overlay']}" if r.get("overlay") else "")
              + (f"; repaired {r['repaired']}" if r.get("repaired") else ""))
        for note in r.get("notes", []):
            print(f"fedgin predict: note: {r['input']}: {note}", file=sys.stderr)
    for r in report["failed"]:
        print(f"fedgin predict: error: {r['error']}", file=sys.stderr)
    counts = [(len(report["failed"]), "failed"), (len(report["skipped"]), "skipped"),
              (sum(1 for r in report["predictions"] if r.get("repaired")), "repaired")]
    extra = "".join(f", {n} {what}" for n, what in counts if n)
    what = {"nifti": "label map(s)", "seg": "DICOM SEG(s)", "both": "label map(s) (+ DICOM SEG)"}[a.format]
    print(f"{len(report['predictions'])} {what} in {a.output}{extra} "
          f"(summary: {Path(a.output) / 'predictions.json'})")
    return 1 if report["failed"] else 0


def _cmd_export_bundle(a: argparse.Namespace) -> int:
    from fedgin.inference.bundle import export_bundle

    res = export_bundle(a.model, a.output, modality=a.modality)
    print(f"MONAI bundle in {res['bundle']}: network {res['network']}, TorchScript {res['torchscript']}")
    print(f"run it: cd {res['bundle']} && python -m monai.bundle run --config_file configs/inference.json "
          "--dataset_dir SCANS --output_dir LABELS")
    return 0


def _cmd_preview(a: argparse.Namespace) -> int:
    from fedgin.engine.methods import get_method
    from fedgin.reporting.preview import phantom_slices, preview_png, slices_from_datalist, slices_from_nifti

    methods = name_list(a.methods, "--methods")
    for m in methods:
        get_method(m)  # an unknown method fails before any work
    slices = [slices_from_datalist(d, a.case) for d in a.data or []]
    slices += [slices_from_nifti(f, a.spacing, a.size, nonfinite=a.nonfinite) for f in a.input or []]
    if not slices:
        print("no --data or --input: a phantom CT and a phantom MRI slice")
        slices = phantom_slices(seed=a.seed)
    out = preview_png(slices, methods, a.views, a.output, seed=a.seed)
    print(f"{len(slices)} slice(s) x {len(methods)} method(s) x {a.views} views: {out}")
    return 0


def _cmd_job(a: argparse.Namespace) -> int:
    import os

    from fedgin.flare.job import build_job, settable_variables, task_from_sites

    values = set_values(a.set, settable_variables())
    if a.method:
        values["method"] = a.method
    if a.rounds is not None:
        values["num_rounds"] = a.rounds
    if a.organs:
        values["classes"] = a.organs
    if "channels" in values and "strides" not in values:
        values["strides"] = [2] * (len(values["channels"]) - 1)
    root = a.data_root or values.get("data_root") or ""
    if not root and a.code == "job" and not os.environ.get("FEDGIN_DATA_ROOT"):
        raise OptionError("--data-root: give the folder holding <site>/datalist.json (or set $FEDGIN_DATA_ROOT); "
                          "a simulator job needs its sites' data")
    if root:
        if not Path(root).is_dir():
            raise OptionError(f"--data-root {root}: no such folder")
        if not sorted(Path(root).glob("*/datalist.json")):
            raise OptionError(f"--data-root {root}: no <site>/datalist.json inside (make them with fedgin prepare)")
        values["data_root"] = str(Path(root).resolve())
        values = task_from_sites(Path(root), values)
    job = build_job(a.output, values, name=a.name, code=a.code, resume_from=a.resume_from)
    print(f"job written to {job}")
    if a.code == "job":
        print(f"run it with: nvflare simulator {job} -w <workspace> -c site-ct,site-mri -t 2  (or, without a job "
              "folder: python jobs/fedgin/job.py --data-root <data root>)")
    else:
        print(f"submit it with: nvflare job submit -j {job}  (sites run their installed fedgin; see provisioning/)")
    return 0


TRAIN_HELP = ("any TrainConfig value of every run, e.g. --train sampler=organ --train loss_variant=authors "
              "--train consistency_weight=2 --train 'augment_args={\"per_sample\":false}'")


def _train_values(items: list[tuple[str, str]] | None) -> dict:
    """``--train KEY=JSON`` items -> checked ``TrainConfig`` values (any field but method and seed, which have
    their own options; ``model`` takes a JSON object of ``ModelConfig`` fields)."""
    from fedgin.engine import TrainConfig

    template = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("method", "seed")}
    values = set_values(items, template, "--train")
    TrainConfig.from_dict(values, source="--train")
    return values


def _cmd_compare(a: argparse.Namespace) -> int:
    from fedgin.experiments.compare import default_methods, run_grid
    from fedgin.experiments.demo import phantom_sites
    from fedgin.experiments.compare import SETTINGS

    methods = check_methods(name_list(a.methods, "--methods") if a.methods is not None else default_methods())
    settings = name_list(a.settings, "--settings")
    train = _train_values(a.train)
    if set(settings) - set(SETTINGS):
        raise ValueError(f"unknown setting(s) {sorted(set(settings) - set(SETTINGS))}; known: {list(SETTINGS)}")
    out = Path(a.output).resolve()
    if a.data_root:
        root = Path(a.data_root)
        datalists = {s: root / s / "datalist.json" for s in ("site-ct", "site-mri")}
        missing = [str(p) for p in datalists.values() if not p.is_file()]
        if missing:
            raise OptionError(f"--data-root {root}: no {', '.join(missing)} (compare needs site-ct and site-mri)")
    else:  # the arguments are checked before any phantom is made
        datalists = phantom_sites(out / "phantom_data", a.cases, name_list(a.organs, "--organs"), a.spacing,
                                  a.size, a.seed, step="phantom data: ")
    from fedgin.cli.demo import tracking_values
    from fedgin.flare.job import settable_variables

    job = {**set_values(a.job, settable_variables(), "--job"), **tracking_values(a)}
    run_grid(datalists, out, methods, settings, a.rounds, a.channels, a.seeds, test_input=a.test_input, train=train,
             job=job)
    print(f"report: {out / 'table.md'}, {out / 'stats.csv'}, {out / 'boundary.md'}, {out / 'dice.csv'}, "
          f"{out / 'ratios.csv'}, {out / 'dice.png'}")
    return 0


def _cmd_experiment(a: argparse.Namespace) -> int:
    import dataclasses

    from fedgin.experiments import EXPERIMENTS, parse_source

    config_cls, runner, _, defaults = EXPERIMENTS[a.name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    template = {**{k: getattr(config_cls(), k) for k in fields}, **defaults}
    values = check_dataclass_values(config_cls, set_values(a.set, template), "--set")
    if a.train:
        values["train"] = {**values.get("train", {}), **_train_values(a.train)}
    for key in ("rounds", "seed", "seeds"):
        if getattr(a, key) is not None:
            values[key] = getattr(a, key)
    if a.methods is not None:
        values["methods"] = name_list(a.methods, "--methods")
    from fedgin.cli.demo import tracking_values

    tracking = tracking_values(a)
    if tracking:
        values["job"] = {**values.get("job", {}), **tracking}
    if a.organs:
        if "organs" not in fields:
            raise ValueError(f"--organs: experiment {a.name} has fixed classes")
        values["organs"] = name_list(a.organs, "--organs")
    check_methods(values.get("methods", []))
    cfg = config_cls(**{**defaults, **values})
    sources = {src.name: src for src in map(parse_source, a.source or [])}
    out = Path(a.output or f"runs/{a.name}").resolve()
    runner(out, cfg, sources)
    print(f"results: {out} (table.md, partition.json, experiment.json, plots)")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from fedgin.common.options import name_list
    from fedgin.experiments.demo import run_demo

    run_demo(a.workdir, method=a.method, rounds=a.rounds, cases=a.cases, organs=name_list(a.organs, "--organs"),
             spacing=a.spacing, size=a.size, channels=a.channels, local_epochs=a.local_epochs, seed=a.seed,
             amp=a.precision == "auto", threads=a.threads, tracking=a.tracking, tracking_uri=a.tracking_uri)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedgin", description="FedGIN: federated CT + MRI segmentation in NVIDIA FLARE.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("phantom", help="write seeded synthetic abdominal CT or MRI cases (TotalSegmentator layout)")
    s.add_argument("--output", required=True, help="folder to write (<case>/ct.nii.gz|mri.nii.gz, segmentations/)")
    s.add_argument("--modality", required=True, choices=["ct", "mri"])
    s.add_argument("--cases", type=positive_int, required=True, help="number of cases")
    s.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    s.add_argument("--sequence", default="mixed", choices=["mixed", "t1", "t2"], help="MRI weighting (default mixed)")
    s.add_argument("--protocol", choices=["arterial-lowdose", "t1-gd-3T"],
                   help="an unseen centre instead of the training centres' mix: CT arterial-lowdose (late arterial "
                        "phase, low dose) or MRI t1-gd-3T (gadolinium-enhanced fat-saturated T1w GRE at 3 T)")
    s.add_argument("--val-fraction", type=fraction, default=0.2, help="fraction of cases in the val split")
    s.add_argument("--test-fraction", type=fraction, default=0.2, help="fraction of cases in the test split")
    s.set_defaults(func=_cmd_phantom)

    s = sub.add_parser("prepare", help="preprocess one site's volumes into a slice cache + datalist.json")
    s.add_argument("--layout", default="totalseg", choices=layout_names(),
                   help="dataset layout (default totalseg): totalseg = TotalSegmentator, amos = AMOS22, whs = "
                        "MM-WHS/CARE whole heart, msd = a Decathlon task folder, chaos = CHAOS DICOM+PNG, generic = "
                        "image/label NIfTI pairs with --label-map")
    s.add_argument("--input", required=True, help="dataset folder")
    s.add_argument("--output", required=True, help="cache folder to write (datalist.json, cases/)")
    s.add_argument("--site", required=True, help="site name, e.g. site-ct")
    s.add_argument("--modality", required=True, choices=["ct", "mri"])
    s.add_argument("--organs", required=True, type=_organs,
                   help="comma-separated class names; one = binary task (abdomen: liver, spleen, kidney_right, "
                        "kidney_left, gallbladder, pancreas, kidneys; heart: myo, la, lv, ra, rv, ao, pa, heart)")
    s.add_argument("--spacing", type=positive_float, default=1.5, help="in-plane spacing in mm (paper: 1.5)")
    s.add_argument("--size", type=size_px, default=256, help="in-plane size in pixels (paper: 256)")
    s.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the split by case when the dataset defines none")
    s.add_argument("--val-fraction", type=fraction, default=0.2)
    s.add_argument("--test-fraction", type=fraction, default=0.2)
    s.add_argument("--amos-split", choices=["test", "dataset", "seeded"],
                   help="amos: test (default: every labelled case is test data, AMOS being the unseen test set), "
                        "dataset (imagesTr -> training, imagesVa -> validation) or seeded")
    s.add_argument("--sequence", choices=["t2spir", "t1dual-in", "t1dual-out"],
                   help="chaos MR sequence (default t2spir)")
    s.add_argument("--label-map", metavar="FILE",
                   help='generic: JSON {"class": [label values], ...}, e.g. {"liver": [1], "kidneys": [2, 3]}')
    s.add_argument("--pairing", choices=["auto", "folders", "suffix"],
                   help="generic: folders = images/<id>.nii.gz + labels/<id>.nii.gz, suffix = <id>_image.nii.gz + "
                        "<id>_label.nii.gz, auto (default) = folders when images/ exists")
    s.add_argument("--unlisted", choices=["error", "background"],
                   help="generic: a label value missing from --label-map is an error (default) or background")
    s.add_argument("--skip-bad-cases", action="store_true",
                   help="a case that cannot be prepared (missing or unreadable file, bad mask, ...) is named in a "
                        "warning and recorded under 'skipped' in datalist.json instead of stopping the run")
    add_nonfinite_option(s)
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("train", help="centralized (several datalists) or single-site training")
    s.add_argument("--data", nargs="+", required=True, help="datalist.json file(s); several are pooled")
    s.add_argument("--method", default=None, choices=method_names(), metavar="METHOD",
                   help="augmentation (default gin)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=positive_int, help="number of optimisation steps")
    g.add_argument("--epochs", type=positive_int, help="number of epochs over the pooled training slices")
    s.add_argument("--output", required=True, help="run folder (model.pt, best_model.pt, tb/, history.json)")
    s.add_argument("--config", help="JSON file of fedgin.engine.TrainConfig values")
    s.add_argument("--batch-size", type=positive_int, help="slices per step (default 8)")
    s.add_argument("--lr", type=positive_float, help="AdamW learning rate (default 5e-4)")
    s.add_argument("--seed", type=nonnegative_int, help="seed (default 0)")
    s.add_argument("--channels", type=int_list,
                   help="U-Net channels per level, e.g. 16,32,64,128 (default 32,64,128,256,512)")
    s.add_argument("--eval-every", type=positive_int, help="validate every N steps (default: once per epoch)")
    s.add_argument("--test-input", choices=TEST_INPUT_CHOICES, help=TEST_INPUT_HELP)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate", help="per-case, per-class 3D Dice of a model file on datalists")
    s.add_argument("--model", required=True, help="fedgin model file or FLARE FL_global_model.pt")
    s.add_argument("--data", nargs="+", required=True, help="datalist.json file(s)")
    s.add_argument("--split", default="test", choices=["training", "validation", "test"])
    s.add_argument("--output", help="JSON file for per-case results (top-level mean_dice)")
    s.add_argument("--device", default="auto")
    s.add_argument("--surface", action="store_true",
                   help="also HD95 (mm) and surface Dice (NSD, 2 mm tolerance) per case and class")
    s.add_argument("--geometry", choices=["source", "cache"], default="source",
                   help="score each prediction mapped back onto its source volume, with the source voxel size "
                        "(default, as the paper scores reconstructed volumes), or on the cached training grid")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("predict", help="segment NIfTI volumes or DICOM series with a model file; label maps in the "
                                       "inputs' geometry (NIfTI and/or DICOM SEG)")
    s.add_argument("--model", required=True, help="model file (fedgin train, or FL_global_model.pt / best_...)")
    s.add_argument("--input", required=True,
                   help="a .nii/.nii.gz volume, or a folder of them and/or of DICOM series (files grouped by "
                        "SeriesInstanceUID, sub-folders searched; localizers, series of fewer than 3 slices or with "
                        "non-uniform spacing or mixed orientation are skipped with the reason)")
    s.add_argument("--output", required=True,
                   help="folder for <name>_seg.nii.gz / <name>_seg.dcm and predictions.json (<name>: the NIfTI "
                        "file's stem, or the series description, else its SeriesInstanceUID)")
    s.add_argument("--format", choices=["nifti", "seg", "both"], default="nifti",
                   help="nifti: NIfTI label maps (default); seg: DICOM Segmentation objects referencing the source "
                        "series (DICOM inputs only: NIfTI inputs are skipped); both: both (NIfTI inputs get "
                        "their label map only)")
    s.add_argument("--modality", choices=["ct", "mri"], help="needed only by DSBN models")
    s.add_argument("--device", default="auto")
    s.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png (a few slices)")
    add_nonfinite_option(s)
    s.add_argument("--allow-output-in-input", action="store_true",
                   help="allow --output to be the input folder (inputs are never overwritten, and earlier "
                        "fedgin outputs found there are not segmented again)")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("export-bundle", help="write a MONAI bundle (configs, weights, TorchScript, docs) of a model "
                       "file, run with python -m monai.bundle run")
    s.add_argument("--model", required=True, help="model file (fedgin train, or FL_global_model.pt / best_...)")
    s.add_argument("--output", required=True,
                   help="bundle folder, written whole or not at all (an existing bundle there is replaced, any other "
                        "non-empty folder refused)")
    s.add_argument("--modality", choices=["ct", "mri"],
                   help="the modality the bundle is for (its metadata); needed by DSBN models (that branch is kept)")
    s.set_defaults(func=_cmd_export_bundle)

    s = sub.add_parser("preview", help="PNG grid: a slice and its augmented views per method (the paper's Fig. 2)")
    s.add_argument("--output", default="runs/preview.png")
    s.add_argument("--methods", default="gin", help="comma-separated methods (e.g. gin,rc,prorandconv,raffesdg)")
    s.add_argument("--views", type=bounded_int(1, 32, " views"), default=5)
    s.add_argument("--data", action="append", help="a prepared site's datalist.json (repeatable)")
    s.add_argument("--case", help="case of --data (default: the first)")
    s.add_argument("--input", action="append", help="a NIfTI volume (repeatable), preprocessed with --spacing/--size")
    s.add_argument("--spacing", type=positive_float, default=1.5)
    s.add_argument("--size", type=size_px, default=256)
    s.add_argument("--seed", type=nonnegative_int, default=0)
    add_nonfinite_option(s)
    s.set_defaults(func=_cmd_preview)

    s = sub.add_parser("job", help="export the FedGIN job (NVFlare Job API recipe with these values, plus the fedgin code)")
    s.add_argument("--output", required=True, help="job folder to write")
    s.add_argument("--method", choices=method_names(), metavar="METHOD", help="augmentation on every site")
    s.add_argument("--rounds", type=positive_int, help="federated rounds")
    s.add_argument("--organs", type=_organs, help="classes of the task (must match the sites' datalists)")
    s.add_argument("--data-root", help="folder holding <site>/datalist.json (else $FEDGIN_DATA_ROOT)")
    s.add_argument("--set", action="append", type=set_item, metavar="KEY=JSON",
                   help="any job variable, e.g. --set local_epochs=2 --set channels=[32,64,128,256]")
    s.add_argument("--name", help="job name")
    s.add_argument("--code", choices=["job", "site"], default="job",
                   help="job: copy the fedgin code into the job (simulator); site: no code in the job, every "
                        "participant runs its installed, allow-listed fedgin (POC, production)")
    s.add_argument("--resume-from", metavar="MODEL",
                   help="continue a stopped run: its FL_global_model.pt (the job starts at the round after it; "
                        "--rounds is the total)")
    s.set_defaults(func=_cmd_job)

    from fedgin.cli.demo import add_tracking_arguments

    s = sub.add_parser("compare", help="methods × settings grid (single-modality, centralized, federated)")
    s.add_argument("--output", default="runs/compare", help="grid folder (resumes what it finds there)")
    s.add_argument("--data-root", help="folder with site-ct/ and site-mri/ datalists (default: phantom)")
    s.add_argument("--methods", help="comma-separated methods (default: all)")
    s.add_argument("--settings", default="single-ct,single-mri,centralized,centralized-steps,federated",
                   help="comma-separated (centralized-steps: pooled training for as many optimiser steps as the "
                        "federation's largest site makes, the step-matched control)")
    s.add_argument("--rounds", type=positive_int, default=20,
                   help="rounds = epochs of every run (default 20: the curves have flattened; paper 100)")
    s.add_argument("--channels", type=int_list, default=[16, 32, 64, 128], help="U-Net channels, e.g. 16,32,64,128")
    s.add_argument("--cases", type=bounded_int(3, 100000, " (train, validation and test need one each)"),
                   default=16, help="phantom cases per site")
    from fedgin.experiments.demo import DEMO_ORGANS

    s.add_argument("--organs", default=",".join(DEMO_ORGANS), help="phantom task classes")
    s.add_argument("--spacing", type=positive_float, default=6.0,
                   help="phantom in-plane mm (default 6: with --size 64 the 30 cells x 3 seeds take ~2 h 20 min on "
                        "2 CPU cores)")
    s.add_argument("--size", type=size_px, default=64, help="phantom slice size (default 64)")
    s.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the phantom data (default 0)")
    s.add_argument("--seeds", type=seed_list, default=[0, 1, 2],
                   help="training seeds: every cell runs once per seed; tables give mean ± sd and a 95 %% CI over "
                        "seeds × test cases and paired tests against gin (default 0,1,2)")
    s.add_argument("--test-input", default="raw", choices=["raw", "reference"],
                   help="raw (default) or each method's reference test-time filter (FreeSDG, RaffeSDG)")
    s.add_argument("--train", action="append", type=set_item, metavar="KEY=JSON", help=TRAIN_HELP)
    s.add_argument("--job", action="append", type=set_item, metavar="KEY=JSON",
                   help="a job value of the federated cells, e.g. --job 'server_optimizer={\"path\": "
                        "\"torch.optim.Adam\", \"args\": {\"lr\": 0.01}}' (fedgin job --help lists them)")
    add_tracking_arguments(s, default=None)
    s.set_defaults(func=_cmd_compare)

    from fedgin.experiments import EXPERIMENTS

    s = sub.add_parser("experiment", help="one of the paper's experiments end to end (phantoms by default)",
                       description="\n".join(f"{k}: {v[2]}" for k, v in EXPERIMENTS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("name", choices=sorted(EXPERIMENTS))
    s.add_argument("--output", help="experiment folder (default runs/<name>; re-running resumes)")
    s.add_argument("--source", action="append", metavar="NAME=LAYOUT:MODALITY:PATH",
                   help="a real dataset instead of a phantom, e.g. ts-ct=totalseg:ct:/data/TotalSegmentator "
                        "(abdomen: ts-ct, ts-mri, amos-ct, amos-mri; heart: site-ct1, site-ct2, site-mri1, site-mri2)")
    s.add_argument("--rounds", type=positive_int, help="rounds = epochs of every run")
    s.add_argument("--methods", help="comma-separated methods")
    s.add_argument("--organs", help="abdomen: comma-separated organs (one binary model each)")
    s.add_argument("--seed", type=nonnegative_int, help="seed of the phantoms and the partition")
    s.add_argument("--seeds", type=seed_list,
                   help="training seeds (each run once per seed; abdomen-mri-scarce: each seed also draws its "
                        "own partition), e.g. 0,1,2")
    s.add_argument("--set", action="append", type=set_item, metavar="KEY=JSON",
                   help="any field of the experiment's configuration, e.g. --set 'ct_counts=[0,20,40,100]'")
    s.add_argument("--train", action="append", type=set_item, metavar="KEY=JSON", help=TRAIN_HELP)
    add_tracking_arguments(s, default=None)
    s.set_defaults(func=_cmd_experiment)

    s = sub.add_parser("demo", help="phantom CT + MRI sites, FedGIN in nvflare simulator, Dice table")
    from fedgin.cli.demo import add_demo_arguments

    add_demo_arguments(s)
    s.set_defaults(func=_cmd_demo)

    from fedgin.cli.stats import add_stats_parser

    add_stats_parser(sub)

    from fedgin.cli.poc import add_poc_parser

    add_poc_parser(sub)

    from fedgin.cli.production import add_production_parsers

    add_production_parsers(sub)
    return p


#: what a command leaves behind when the environment stops it (Ctrl-C, SIGTERM, a full or read-only disk, memory)
LEFT_BEHIND = {
    "phantom": "the cases written before it are complete; re-run the command to write them all",
    "prepare": "nothing was written: an earlier cache in --output is intact and no temporary folder is left",
    "train": "the run folder keeps best_model.pt of the best validation so far (model.pt is written at the end); "
             "training does not resume: re-run it",
    "evaluate": "no results file was written",
    "predict": "the label maps finished before it are complete; no partial file is left",
    "export-bundle": "nothing was written: an earlier bundle in --output is intact and no .building folder is left",
    "preview": "no picture was written",
    "job": "no job folder was written",
    "compare": "finished runs are kept: re-run the same command to resume",
    "experiment": "finished runs are kept: re-run the same command to resume",
    "demo": "finished stages are kept: re-run the same command to resume",
    "poc": "a started POC system may still run: `fedgin poc stop`",
    "rehearse": "its hosts (network namespaces) and every process on them were removed; --workdir keeps the kits",
    "kit": "local/resources.json or local/fedgin_site.json is written whole or not at all",
}


#: how PyTorch words an allocation that failed (CUDA and CPU allocators)
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every clean-up of an interrupted step runs."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code: 0 done, 1 done with failures it reported (predict on a folder),
    2 refused or failed with a one-line error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."""
    import threading

    args = build_parser().parse_args(argv)
    prog = f"fedgin {args.command}"
    left = LEFT_BEHIND.get(args.command, "")

    def thread_failed(h: threading.ExceptHookArgs) -> None:  # e.g. TensorBoard's writer thread on a full disk
        text = describe_os_error(h.exc_value) if isinstance(h.exc_value, OSError) else repr(h.exc_value)
        print(f"{prog}: warning: background thread {h.thread.name if h.thread else ''} failed: {text}",
              file=sys.stderr)

    from fedgin.common.outputs import describe_os_error

    hook, threading.excepthook = threading.excepthook, thread_failed
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and any(t in str(e).lower() for t in OUT_OF_MEMORY):
            print(f"{prog}: error: out of memory ({str(e).splitlines()[0]}); {left}", file=sys.stderr)
        else:
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory (a smaller --size, --batch-size or model fits); {left}",
              file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {describe_os_error(e)}; {left}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted (Ctrl-C)", 130)
        print(f"\n{prog}: {what}; {left}", file=sys.stderr)
        return code
    finally:
        threading.excepthook = hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
