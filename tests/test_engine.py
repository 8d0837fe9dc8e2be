"""The one engine: training, 3D evaluation, model files, and a site's round."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedgin.data.datalist import DatalistError
from fedgin.engine import Engine, ModelFileError, SliceSet, TrainConfig, load_model_file
from fedgin.engine.metrics import dice_per_class, summarise
from fedgin.engine.site import Site
from fedgin.engine.training import train

from fedgin.engine.evaluation import evaluate, format_dice_table

SMALL = {"model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}, "batch_size": 4}


def test_dice_per_class_values_and_empty_truth():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[1:3, 2:6, 2:6] = 1  # 32 voxels of class 1, class 2 absent
    pred = np.zeros_like(truth)
    pred[1:3, 2:6, 2:4] = 1  # 16 voxels inside
    pred[0, 0, 0] = 2  # a false positive of the absent class
    r = dice_per_class(pred, truth, 2)
    assert r[0]["dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert r[1]["dice"] is None and r[1]["pred_voxels"] == 1
    s = summarise([{"modality": "ct", "dice": {"a": r[0]["dice"], "b": None}},
                   {"modality": "mri", "dice": {"a": 1.0, "b": 0.5}}], ["a", "b"])
    assert s["per_class"]["b"]["n"] == 1 and s["per_class"]["b"]["mean"] == 0.5
    assert s["mean_dice"] == pytest.approx(np.mean([2 / 3, 1.0, 0.5]))
    assert s["per_modality"]["ct"]["mean_dice"] == pytest.approx(2 / 3)


def test_slice_set_pools_sites_and_checks_classes(toy_sites, tmp_path):
    data = SliceSet(list(toy_sites.values()), "training")
    assert data.num_cases == 5 and len(data) == 5 * 6
    images, labels = data.batch(np.array([0, 7, 29]))
    assert images.shape == (3, 1, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.uint8
    from conftest import write_toy_site

    other = write_toy_site(tmp_path / "o", "site-x", "ct", ["liver"], {"training": 1})
    with pytest.raises(DatalistError, match="classes"):
        SliceSet([toy_sites["site-ct"], other], "training")


def test_engine_learns_and_evaluates_per_volume(toy_sites):
    cfg = TrainConfig.from_dict({**SMALL, "method": "none", "lr": 3e-3})
    data = SliceSet([toy_sites["site-ct"]], "training")
    engine = Engine(["disc", "square"], cfg, device="cpu")
    first = engine.train_steps(data, 3)
    later = engine.train_steps(data, 40)
    assert np.isfinite(first.mean_loss) and later.mean_loss < first.mean_loss
    res = engine.evaluate(SliceSet([toy_sites["site-ct"]], "test"))
    assert [c["case"] for c in res["cases"]] == ["ctte00"]
    assert set(res["cases"][0]["dice"]) == {"disc", "square"}
    assert res["mean_dice"] > 0.5  # the toy task is easy: a model that learned nothing scores ~0


def test_gin_engine_trains_and_augmentation_is_not_in_state(toy_sites):
    cfg = TrainConfig.from_dict({**SMALL, "method": "gin"})
    engine = Engine(["disc", "square"], cfg, device="cpu")
    stats = engine.train_epochs(SliceSet([toy_sites["site-mri"]], "training"), 1)
    assert stats.steps == (2 * 6) // 4 and np.isfinite(stats.mean_loss)
    assert not any("augment" in k for k in engine.model.state_dict())


def test_non_finite_loss_is_an_error(toy_sites):
    from fedgin.engine import NonFiniteLossError

    engine = Engine(["disc", "square"], TrainConfig.from_dict({**SMALL, "method": "none"}), device="cpu")
    images, labels = SliceSet([toy_sites["site-ct"]], "training").batch(np.arange(4))
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError):
        engine.train_batch(images, labels)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"methd": "gin"})
    with pytest.raises(ValueError, match="strides"):
        TrainConfig.from_dict({"model": {"channels": [8, 16], "strides": [2, 2]}})


def test_train_writes_models_and_evaluate_reads_them(toy_sites, tmp_path):
    cfg = TrainConfig.from_dict({**SMALL, "method": "gin"})
    res = train(list(toy_sites.values()), tmp_path / "run", cfg, steps=6, eval_every=3, progress=False)
    assert len(res["history"]) == 2 and "val_dice" in res["history"][0]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    model, meta = load_model_file(res["best_model"])
    assert meta["classes"] == ["disc", "square"] and meta["size_px"] == [32, 32]
    out = evaluate(res["model"], list(toy_sites.values()), "test", progress=False)
    assert {c["modality"] for c in out["cases"]} == {"ct", "mri"}
    assert 0.0 <= out["mean_dice"] <= 1.0
    assert "ct" in format_dice_table(out) and "square" in format_dice_table(out)
    json.dumps(out)  # serialisable


def test_model_file_errors(toy_sites, tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model_file(bad)
    from conftest import write_toy_site

    cfg = TrainConfig.from_dict({**SMALL, "method": "none"})
    res = train([toy_sites["site-ct"]], tmp_path / "run", cfg, steps=1, progress=False)
    liver = write_toy_site(tmp_path / "l", "site-l", "ct", ["liver"], {"test": 1})
    with pytest.raises(ModelFileError, match="classes"):
        evaluate(res["model"], [liver], "test", progress=False)


def test_one_site_round_equals_local_training(toy_sites):
    """A federated round is the engine's local training: same seed, same steps → same weights."""
    cfg = TrainConfig.from_dict({**SMALL, "method": "gin", "seed": 3})
    site = Site(toy_sites["site-ct"], ["disc", "square"], cfg, device="cpu")
    start = Engine(["disc", "square"], cfg, device="cpu").get_weights()
    res = site.train_round(start, epochs=1, validate_global=False)
    local = Engine(["disc", "square"], cfg, device="cpu")
    local.set_weights(start)
    local.train_epochs(SliceSet([toy_sites["site-ct"]], "training"), 1)
    assert res["num_samples"] == 18
    for k, v in local.get_weights().items():
        np.testing.assert_allclose(res["weights"][k], v, rtol=1e-5, atol=1e-6)
    diff = site.weight_diff(res["weights"], start)
    assert any(np.abs(d).max() > 0 for d in diff.values())


def test_site_refuses_other_classes(toy_sites):
    with pytest.raises(DatalistError, match="differ from the job"):
        Site(toy_sites["site-ct"], ["liver"], TrainConfig.from_dict(SMALL), device="cpu")


def test_datalist_entry_with_missing_file_names_it(toy_sites):
    import os

    victim = toy_sites["site-ct"].parent / "cases" / "cttr01_label.npy"
    os.remove(victim)
    with pytest.raises(DatalistError, match="cttr01_label.npy"):
        SliceSet([toy_sites["site-ct"]], "training")


def test_slice_set_memory_maps_large_splits(toy_sites, monkeypatch):
    monkeypatch.setattr(SliceSet, "MEMORY_LIMIT_BYTES", 1)
    mapped = SliceSet([toy_sites["site-ct"]], "training")
    assert not mapped.in_memory and isinstance(mapped.cases[0].image, np.memmap)
    loaded = SliceSet([toy_sites["site-ct"]], "training", in_memory=True)
    idx = np.array([0, 5, 11])
    for a, b in zip(mapped.batch(idx), loaded.batch(idx)):
        assert torch.equal(a, b)


def test_loss_variants():
    from fedgin.engine.loss import SegmentationLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    labels = (torch.rand(2, 8, 8) > 0.7).to(torch.uint8)
    y = labels.unsqueeze(1).float()
    p = torch.sigmoid(logits)
    dice = (1 - (2 * (p * y).sum((1, 2, 3)) + 1e-5) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1e-5)).mean()
    bce = -(3.0 * y * torch.log(p) + (1 - y) * torch.log(1 - p))
    focal = (0.25 * (1 - torch.exp(-bce)) ** 2 * bce).mean()
    authors = SegmentationLoss(1, variant="authors")(logits, labels)
    torch.testing.assert_close(authors, 0.5 * focal + 0.5 * dice, rtol=1e-4, atol=1e-5)
    monai = SegmentationLoss(1, variant="monai")(logits, labels)
    assert not torch.isclose(monai, authors)
    torch.testing.assert_close(SegmentationLoss(1)(logits, labels), authors)  # auto: one class -> the authors'
    assert SegmentationLoss(3).variant == "monai"  # auto: several classes -> MONAI's DiceFocalLoss
    multi = SegmentationLoss(3)(torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8)))
    assert torch.isfinite(multi)
    with pytest.raises(ValueError, match="binary only"):
        SegmentationLoss(3, variant="authors")


def test_training_stops_when_asked(toy_sites):
    engine = Engine(["disc", "square"], TrainConfig.from_dict({**SMALL, "method": "none"}), device="cpu")
    calls = iter(range(100))
    stats = engine.train_steps(SliceSet([toy_sites["site-ct"]], "training"), 10, should_stop=lambda: next(calls) >= 2)
    assert stats.aborted and stats.steps == 2


@pytest.mark.parametrize("method", sorted(__import__("fedgin.augment", fromlist=["AUGMENTATIONS"]).AUGMENTATIONS))
def test_every_registered_method_trains_in_the_engine(toy_sites, method):
    engine = Engine(["disc", "square"], TrainConfig.from_dict({**SMALL, "method": method}), device="cpu")
    stats = engine.train_steps(SliceSet([toy_sites["site-ct"]], "training"), 2)
    assert stats.steps == 2 and np.isfinite(stats.mean_loss)
    assert not list(engine.augment.parameters()) and not list(engine.augment.buffers())
