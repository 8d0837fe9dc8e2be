"""Reference test-time input filters (FreeSDG HFC, RaffeSDG Butterworth) and their place in the network."""

from __future__ import annotations

import pytest
import torch

from fedgin.augment.eval_input import EVAL_INPUTS, eval_input_filter
from fedgin.augment.frequency import gaussian_blur
from fedgin.engine.config import ModelConfig
from fedgin.engine.model import SegUNet
from fedgin.engine.methods import eval_input_for


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = 3.0 * xx + 2.0 * yy ** 2  # a low-frequency ramp the filters must remove
    return (smooth + torch.randn(64, 64, generator=g)).view(1, 1, 64, 64).repeat(2, 1, 1, 1)


def test_raw_is_no_filter_and_unknown_names_are_refused():
    assert eval_input_filter("raw") is None and set(EVAL_INPUTS) >= {"freesdg-hfc", "raffesdg-butterworth"}
    with pytest.raises(ValueError, match="unknown test input"):
        eval_input_filter("hfc")
    with pytest.raises(ValueError, match="test_input"):
        ModelConfig.from_dict({"test_input": "bogus"})


def test_freesdg_filter_is_the_zscored_27_9_high_frequency_component():
    x = _image()
    y = eval_input_filter("freesdg-hfc")(x)
    hfc = x - gaussian_blur(x, 27, 9.0)
    ref = (hfc - hfc.mean(dim=(1, 2, 3), keepdim=True)) / hfc.std(dim=(1, 2, 3), correction=0, keepdim=True)
    assert torch.allclose(y, ref, atol=1e-4)
    # an added constant or a smooth ramp barely changes it
    assert torch.allclose(eval_input_filter("freesdg-hfc")(x + 100.0), y, atol=1e-3)


def test_raffesdg_filter_is_nonnegative_magnitude_rescaled_and_zscored():
    x = _image()
    y = eval_input_filter("raffesdg-butterworth")(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
    assert torch.allclose(y.std(dim=(1, 2, 3), correction=0), torch.ones(2), atol=1e-3)
    # the magnitude rectifies: a sign flip of the input leaves the output unchanged
    assert torch.allclose(eval_input_filter("raffesdg-butterworth")(-x), y, atol=1e-4)


def test_the_network_filters_its_input_in_eval_mode_only():
    torch.manual_seed(0)
    net = SegUNet(num_classes=1, channels=(4, 8), strides=(2,), test_input="freesdg-hfc")
    plain = SegUNet(num_classes=1, channels=(4, 8), strides=(2,))
    plain.load_state_dict(net.state_dict())  # same weights: the filter adds no parameter
    x = _image()
    net.eval(), plain.eval()
    with torch.no_grad():
        filtered = eval_input_filter("freesdg-hfc")(x)
        assert torch.allclose(net(x), plain(filtered), atol=1e-5)
        assert not torch.allclose(net(x), plain(x), atol=1e-3)
    net.train(), plain.train()
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(1)
    b = plain(x)
    assert torch.allclose(a, b, atol=1e-5)  # training sees the (augmented) input itself


def test_methods_know_their_reference_test_input():
    assert eval_input_for("fmaug", "reference") == "freesdg-hfc"
    assert eval_input_for("raffesdg", "reference") == "raffesdg-butterworth"
    assert eval_input_for("gin", "reference") == "raw" and eval_input_for("fmaug") == "raw"
