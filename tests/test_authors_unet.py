"""The authors' U-Net option (``ModelConfig.arch = "authors"``): its size and shape, the authors' defaults, and the
places a network has to work in (a model file, DSBN, FedDA's bottleneck)."""

from __future__ import annotations

import pytest
import torch

from fedgin.engine import ModelConfig, TrainConfig
from fedgin.engine.model import SegUNet, build_model


def test_the_authors_unet_has_their_size_and_keeps_the_input_size():
    """32-64-128 + 256 bottleneck, batch norm, dropout 0.3: 1.93 M parameters (the reference note's count); an
    input not divisible by 8 still comes back at its own size (the bilinear resizes)."""
    cfg = ModelConfig.from_dict({"arch": "authors"})
    assert (cfg.channels, cfg.strides, cfg.dropout) == ((32, 64, 128, 256), (2, 2, 2), 0.3)
    net = build_model(1, cfg)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(1.93e6, rel=0.005)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in net.modules())
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in net.modules())
    net.eval()
    assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    assert net(torch.zeros(1, 1, 60, 52)).shape == (1, 1, 60, 52)
    assert build_model(3, cfg)(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)  # softmax over 3 + background
    monai = build_model(1, ModelConfig.from_dict({}))
    assert monai.arch == "monai" and set(monai.state_dict()) != set(net.state_dict())


def test_given_values_win_over_the_authors_defaults_and_bad_ones_are_refused():
    cfg = ModelConfig.from_dict({"arch": "authors", "channels": [8, 16, 32], "strides": [2, 2], "dropout": 0.0})
    assert (cfg.channels, cfg.dropout) == ((8, 16, 32), 0.0)
    with pytest.raises(ValueError, match="strides"):
        ModelConfig.from_dict({"arch": "authors", "channels": [8, 16], "strides": [3]})
    with pytest.raises(ValueError, match="arch"):
        ModelConfig.from_dict({"arch": "resnet"})


def test_a_model_file_rebuilds_the_authors_unet(tmp_path):
    from fedgin.engine.checkpoint import load_model_file, save_model_file

    net = SegUNet(num_classes=1, channels=(8, 16, 32), strides=(2, 2), arch="authors", dropout=0.3)
    path = save_model_file(tmp_path / "m.pt", net, {"classes": ["liver"], "model_config": net.model_config()})
    model, meta = load_model_file(path)
    assert meta["model_config"]["arch"] == "authors" and model.arch == "authors"
    x = torch.randn(1, 1, 32, 32)
    net.eval()
    assert torch.equal(model(x), net(x))


def test_dsbn_and_fedda_work_on_the_authors_unet(toy_sites, tmp_path):
    """DSBN turns its batch norms into per-domain ones; FedDA finds its bottleneck (32 channels); one step of each
    trains."""
    from fedgin.engine.data import SliceSet
    from fedgin.engine.norm import DomainBatchNorm
    from fedgin.engine.trainer import Engine

    model = {"arch": "authors", "channels": [8, 16, 32], "strides": [2, 2]}
    data = SliceSet(list(toy_sites.values()), "training")
    for method in ("dsbn", "fedda"):
        from fedgin.engine.methods import model_domains

        cfg = TrainConfig.from_dict({"method": method, "batch_size": 4,
                                     "model": {**model, "domains": model_domains(method)}})
        engine = Engine(data.classes, cfg, device="cpu")
        if method == "dsbn":
            assert any(isinstance(m, DomainBatchNorm) for m in engine.model.modules())
        else:
            engine.adversary.set_reference(engine.get_weights())  # a federation's global model
        stats = engine.train_steps(data, 1)
        assert stats.steps == 1 and stats.mean_loss > 0
        if method == "fedda":
            assert engine.adversary._features["source"].shape[1] == 32
