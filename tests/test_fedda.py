"""FedDA-style alignment (our reimplementation): the discriminator stays local, learns, and pulls features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgin.engine import Engine, SliceSet, TrainConfig
from fedgin.engine.site import Site

CFG = {"method": "fedda", "batch_size": 4, "model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}}
CLASSES = ["disc", "square"]


def test_discriminator_never_leaves_the_site_and_trains(toy_sites):
    site = Site(toy_sites["site-ct"], CLASSES, TrainConfig.from_dict(CFG), device="cpu")
    adv = site.engine.adversary
    d_before = [p.detach().clone() for p in adv.discriminator.parameters()]
    glob = site.engine.get_weights()
    res = site.train_round(glob, epochs=1, validate_global=False)
    assert set(res["weights"]) == set(site.engine.model.state_dict())  # the segmentation model only
    assert not any("discriminator" in k for k in res["weights"])
    assert any(not torch.equal(a, b) for a, b in zip(d_before, adv.discriminator.parameters()))
    assert np.isfinite(adv.last["d_loss"]) and np.isfinite(adv.last["adv_loss"])
    assert adv.reference is not None and not any(p.requires_grad for p in adv.reference.parameters())


def test_source_and_target_features_come_from_the_two_models(toy_sites):
    site = Site(toy_sites["site-ct"], CLASSES, TrainConfig.from_dict(CFG), device="cpu")
    adv = site.engine.adversary
    glob = {k: v * 0 if v.dtype.kind == "f" else v for k, v in site.engine.get_weights().items()}
    adv.set_reference(glob)
    images, _ = SliceSet([toy_sites["site-ct"]], "training").batch(np.arange(4))
    site.engine.model.train()
    site.engine.model(images)
    adv.generator_loss(images)
    src, tgt = adv._features["source"], adv._features["target"]
    assert src.shape == tgt.shape and src.shape[1] == 32
    assert not torch.allclose(src, tgt)  # a zeroed reference gives other features than the local model


def test_fedda_needs_a_federation(toy_sites):
    engine = Engine(CLASSES, TrainConfig.from_dict(CFG), device="cpu")
    with pytest.raises(ValueError, match="federation"):
        engine.train_steps(SliceSet([toy_sites["site-ct"]], "training"), 1)
