"""Mixed precision where the hardware has it: detected, switchable, the network only; channels-last is invisible to
the weights that leave a site or a model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedgin.engine.precision as precision
from fedgin.engine import Engine, TrainConfig
from fedgin.engine.checkpoint import load_model_file, save_model_file

SMALL = {"method": "gin", "batch_size": 4, "model": {"channels": [8, 16, 32], "strides": [2, 2]}}


def test_the_autocast_dtype_follows_the_hardware_and_the_switch(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precision.autocast_dtype(cpu, True) == (torch.bfloat16 if torch.backends.mkldnn.is_available() else None)
    assert precision.autocast_dtype(cpu, False) is None
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision.autocast_dtype(cpu, True) is None  # no bf16 units: fp32, never emulated bf16
    assert precision.autocast_dtype(cuda, True) == torch.float16
    assert precision.autocast_dtype(cuda, False) is None


def test_cpu_flags_are_read_not_assumed(tmp_path, monkeypatch):
    real = precision.cpu_bf16_flags()
    assert set(real) <= set(precision.BF16_FLAGS)
    text = open("/proc/cpuinfo").read() if real else ""
    for flag in real:
        assert f" {flag}" in text


@pytest.mark.parametrize("amp", [True, False])
def test_training_keeps_gin_loss_and_metrics_in_fp32(amp, monkeypatch):
    engine = Engine(["disc", "square"], TrainConfig.from_dict({**SMALL, "amp": amp}), device="cpu")
    assert engine.amp == (amp and precision.autocast_dtype(torch.device("cpu"), True) is not None)
    seen = {}
    augment = engine.augment.forward

    def spy(x, generator=None):
        out = augment(x, generator=generator)
        seen["gin"] = (torch.is_autocast_enabled("cpu"), out.dtype)
        return out

    monkeypatch.setattr(engine.augment, "forward", spy)
    loss_fn = engine.loss_fn.forward

    def loss_spy(logits, labels):
        seen["loss"] = (torch.is_autocast_enabled("cpu"), logits.dtype)
        return loss_fn(logits, labels)

    monkeypatch.setattr(engine.loss_fn, "forward", loss_spy)
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 3, (4, 32, 32))
    loss = engine.train_batch(x, y)
    assert np.isfinite(loss)
    assert seen["gin"] == (False, torch.float32) and seen["loss"] == (False, torch.float32)
    assert engine.predict_logits(x).dtype == torch.float32


def test_channels_last_weights_leave_as_plain_arrays_and_files(tmp_path):
    """What FedAvg averages and what a model file holds do not depend on the memory format."""
    cl = Engine(["disc"], TrainConfig.from_dict({**SMALL, "channels_last": True, "amp": False}), device="cpu")
    plain = Engine(["disc"], TrainConfig.from_dict({**SMALL, "channels_last": False, "amp": False}), device="cpu")
    weights = cl.get_weights()
    assert all(v.flags.c_contiguous for v in weights.values())
    plain.set_weights(weights)
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(cl.predict_logits(x), plain.predict_logits(x), atol=1e-5)
    path = save_model_file(tmp_path / "m.pt", cl.model, {"classes": ["disc"], "model_config": cl.config.to_dict()["model"]})
    model, _ = load_model_file(path)
    with torch.no_grad():
        assert torch.allclose(model(x), plain.predict_logits(x), atol=1e-5)
