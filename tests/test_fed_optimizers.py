"""FedProx, FedOpt and SCAFFOLD (``method: <name>+fedprox|fedopt|scaffold``): each one's defining property at the
site or on the server, then each end to end in NVFlare's simulator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedgin.engine import TrainConfig
from fedgin.engine.methods import get_method, method_names
from fedgin.engine.site import Site

CLASSES = ["disc", "square"]
MODEL = {"channels": [4, 8], "strides": [2]}


def _site(datalist, method: str, **train) -> Site:
    cfg = TrainConfig.from_dict({"method": method, "batch_size": 4, "amp": False, "model": MODEL, **train})
    return Site(datalist, CLASSES, cfg, device="cpu")


def _distance(a: dict, b: dict, keys) -> float:
    return float(sum(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2) for k in keys))


def test_method_names_carry_a_federated_optimiser():
    m = get_method("gin+fedprox")
    assert (m.name, m.augmentation, m.optimizer, m.batch_norm) == ("gin+fedprox", "gin", "fedprox", "shared")
    assert get_method("gin").optimizer == "fedavg" and not get_method("gin").needs_federation
    assert all(get_method(f"gin+{o}").needs_federation for o in ("fedprox", "fedopt", "scaffold"))
    assert get_method("fedbn+fedprox").batch_norm == "local"
    with pytest.raises(ValueError, match="unknown federated optimiser 'fedsgd'"):
        get_method("gin+fedsgd")
    with pytest.raises(ValueError, match="SCAFFOLD .* keeps batch norm at the sites"):
        get_method("dsbn+scaffold")
    assert "dsbn+scaffold" not in method_names() and "gin+scaffold" in method_names()
    with pytest.raises(ValueError, match="fedprox_mu"):
        TrainConfig.from_dict({"fedprox_mu": -1.0})


def test_the_proximal_term_is_nvflares_fedprox_loss():
    """Our term, computed in the engine, equals NVFlare's ``PTFedProxLoss`` on the same two networks."""
    from nvflare.app_opt.pt.fedproxloss import PTFedProxLoss

    from fedgin.engine.federated_optim import proximal_term
    from fedgin.engine.model import build_model
    from fedgin.engine.config import ModelConfig

    model = build_model(2, ModelConfig.from_dict(MODEL))
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = proximal_term(model, ref, 0.3)
    theirs = PTFedProxLoss(mu=0.3)(model, ref)
    assert ours.item() > 0
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    ours.backward()  # gradients reach the trained network only
    assert all(p.grad is not None for p in model.parameters()) and all(p.grad is None for p in ref.parameters())


def test_fedprox_with_mu_zero_is_fedavg_and_mu_pulls_towards_the_global_model(toy_sites):
    """μ = 0: bit for bit the FedAvg round; a large μ keeps the local model closer to the global one."""
    dl = toy_sites["site-ct"]
    plain = _site(dl, "gin")
    global_weights = plain.engine.get_weights()
    keys = [k for k, _ in plain.engine.model.named_parameters()]
    rounds = {}
    for name, method, mu in (("fedavg", "gin", 0.01), ("mu0", "gin+fedprox", 0.0), ("mu1", "gin+fedprox", 1.0),
                             ("mu50", "gin+fedprox", 50.0)):
        site = _site(dl, method, fedprox_mu=mu)
        rounds[name] = site.train_round(global_weights, steps=4)["weights"]
    for k in rounds["fedavg"]:
        np.testing.assert_array_equal(rounds["mu0"][k], rounds["fedavg"][k], err_msg=k)
    d = {name: _distance(w, global_weights, keys) for name, w in rounds.items()}
    assert d["mu50"] < d["mu1"] < d["fedavg"], d


def test_a_federated_optimiser_is_refused_outside_a_federation(toy_sites, tmp_path):
    from fedgin.engine.training import train

    with pytest.raises(ValueError, match="federated optimiser: it trains in a federation only"):
        train([toy_sites["site-ct"]], tmp_path / "run", TrainConfig.from_dict({"method": "gin+fedprox"}), steps=1)


def test_scaffold_corrects_every_step_and_updates_the_site_control(toy_sites):
    """c = c_k = 0: the steps are FedAvg's, and c_k⁺ = (θ_global − θ)/(K·η), sent as Δc_k. c ≠ c_k: a step moves
    θ by −η·(c − c_k) beyond FedAvg's step."""
    dl = toy_sites["site-ct"]
    fedavg, scaffold = _site(dl, "gin"), _site(dl, "gin+scaffold")
    g = fedavg.engine.get_weights()
    params = [k for k, _ in scaffold.engine.model.named_parameters()]
    zeros = {k: np.zeros_like(v) for k, v in g.items()}  # the server's c covers every key; buffers are ignored
    steps = 3
    a = fedavg.train_round(g, steps=steps)
    b = scaffold.train_round(g, steps=steps, global_controls=zeros)
    assert "control_diff" not in a and sorted(b["control_diff"]) == sorted(params)
    lr = scaffold.engine.lr
    for k in params:
        np.testing.assert_allclose(b["weights"][k], a["weights"][k], rtol=0, atol=1e-6, err_msg=k)
        expected = (np.asarray(g[k], np.float64) - b["weights"][k]) / (steps * lr)
        np.testing.assert_allclose(b["control_diff"][k], expected, rtol=1e-3, atol=1e-4, err_msg=k)
        np.testing.assert_allclose(scaffold.scaffold.local_controls()[k], b["control_diff"][k], atol=1e-6)
    assert max(np.abs(v).max() for v in b["control_diff"].values()) > 0
    with pytest.raises(ValueError, match="SCAFFOLD needs the server's control variate"):
        scaffold.train_round(g, steps=1)
    with pytest.raises(ValueError, match="does not use them"):
        fedavg.train_round(g, steps=1, global_controls=zeros)
    # c = δ, c_k = 0 on fresh sites: one step lands at FedAvg's step − η·δ
    fedavg, scaffold = _site(dl, "gin"), _site(dl, "gin+scaffold")
    delta = {k: np.full_like(v, 0.05) for k, v in g.items()}
    a = fedavg.train_round(g, steps=1)
    b = scaffold.train_round(g, steps=1, global_controls=delta)
    for k in params:
        np.testing.assert_allclose(b["weights"][k], a["weights"][k] - lr * 0.05, rtol=0, atol=1e-6, err_msg=k)


class _Engine:
    """What ``PTFedOptModelShareableGenerator`` asks of the server engine at start: to build its optimiser."""

    @staticmethod
    def build_component(config):
        from nvflare.fuel.utils.class_utils import instantiate_class

        return instantiate_class(config["path"], config["args"])


def _fedopt_rounds(optimizer: dict, global_weights: dict, diffs: list[dict]) -> list[dict]:
    """The global model after each of ``diffs`` (averaged updates), through FedOpt's server step."""
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.apis.event_type import EventType
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.abstract.model import ModelLearnableKey, make_model_learnable
    from nvflare.app_common.app_constant import AppConstants

    from fedgin.engine.config import ModelConfig
    from fedgin.engine.model import build_model
    from fedgin.flare.server_optim import FedOptGenerator

    # a network of fresh weights: the generator must step from the global model, not from its own copy
    gen = FedOptGenerator(optimizer_args=optimizer, source_model=build_model(2, ModelConfig.from_dict(MODEL)),
                          device="cpu")
    ctx = FLContext()
    ctx.set_prop(ReservedKey.ENGINE, _Engine, private=True, sticky=False)
    gen.handle_event(EventType.START_RUN, ctx)
    out, current = [], global_weights
    for d in diffs:
        ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(current, {}), private=True, sticky=False)
        learnable = gen.shareable_to_learnable(DXO(DataKind.WEIGHT_DIFF, d).to_shareable(), ctx)
        current = {k: np.asarray(v, np.float32) for k, v in learnable[ModelLearnableKey.WEIGHTS].items()}
        out.append(current)
    return out


def test_fedopt_is_fedavg_with_plain_sgd_at_rate_one_and_carries_server_momentum():
    """SGD(lr=1, momentum=0): θ + Δ, FedAvg's global model. With momentum β the second round adds β·Δ₁ to the
    parameters (not to the buffers, which FedOpt averages as FedAvg does)."""
    from fedgin.engine.config import ModelConfig
    from fedgin.engine.model import build_model

    torch.manual_seed(3)
    model = build_model(2, ModelConfig.from_dict(MODEL))
    g = {k: v.numpy().astype(np.float32) + 0.1 for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    d1, d2 = ({k: rng.normal(0, 0.01, v.shape).astype(np.float32) for k, v in g.items()} for _ in range(2))
    params = {k for k, _ in model.named_parameters()}
    (plain,) = _fedopt_rounds({"path": "torch.optim.SGD", "args": {"lr": 1.0}}, g, [d1])
    for k in g:
        np.testing.assert_allclose(plain[k], g[k] + d1[k], rtol=0, atol=1e-6, err_msg=k)
    first, second = _fedopt_rounds({"path": "torch.optim.SGD", "args": {"lr": 1.0, "momentum": 0.9}}, g, [d1, d2])
    for k in g:
        momentum = 0.9 * d1[k] if k in params else 0.0
        np.testing.assert_allclose(second[k], first[k] + d2[k] + momentum, rtol=0, atol=1e-5, err_msg=k)


@pytest.fixture(scope="module")
def toy_federation(tmp_path_factory):
    """Two toy sites (ct, mri) under one data root, and the job values of a 2-round federation on them."""
    from conftest import write_toy_site

    root = tmp_path_factory.mktemp("fedopt") / "data"
    for site, modality, seed in (("site-ct", "ct", 0), ("site-mri", "mri", 1)):
        write_toy_site(root, site, modality, CLASSES, {"training": 2, "validation": 1, "test": 1}, seed=seed)
    return {"classes": CLASSES, "data_root": str(root), "channels": [4, 8], "strides": [2], "local_steps": 2,
            "size_px": [32, 32], "spacing_mm": [4.0, 4.0], "num_rounds": 2, "batch_size": 4}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, server_says", [
    ("fedprox", "ScatterAndGather"),
    ("fedopt", "FedOpt (torch.optim.SGD"),
    ("scaffold", "Beginning ScatterAndGatherScaffold training phase"),
])
def test_each_federated_optimiser_runs_in_the_simulator(toy_federation, tmp_path, optimizer, server_says):
    """``gin+<optimiser>``, 2 sites × 2 rounds in NVFlare's simulator: the server runs the optimiser's components,
    no update is rejected, both rounds reach the global model, and what left each site (its own audit) is the weight
    difference, plus for SCAFFOLD the control-variate difference of every parameter."""
    from nvflare.app_common.app_constant import AlgorithmConstants, AppConstants

    from fedgin.flare.job import make_recipe
    from fedgin.flare.simulate import run_simulator

    CTRL, WEIGHTS = AlgorithmConstants.SCAFFOLD_CTRL_DIFF, AppConstants.MODEL_WEIGHTS
    values = {**toy_federation, "method": f"gin+{optimizer}", "fedprox_mu": 0.1}
    res = run_simulator(make_recipe(values, name=optimizer), tmp_path / "ws", ["site-ct", "site-mri"], echo=None,
                        timeout=480)  # raises on a failed run or a Traceback
    server_log = (res["workspace"] / "server" / "log.txt").read_text()
    assert server_says in server_log and "REJECTED" not in server_log
    assert res["global_model"].is_file() and res["cross_site"].is_file()
    from fedgin.flare.persistor import read_round

    assert read_round(res["global_model"])["round"] == 1
    for site in ("site-ct", "site-mri"):
        log = (res["workspace"] / site / "log.txt").read_text()
        assert f"method gin+{optimizer}" in log and "round 2/2" in log
        import json

        sent = [json.loads(line) for line in
                (res["workspace"] / site / "simulate_job" / "outgoing_audit.jsonl").read_text().splitlines()]
        train = [r for r in sent if r["task"] == "train"]
        assert len(train) == 2
        for r in train:
            if optimizer == "scaffold":
                assert r["data_kind"] == "COLLECTION"
                assert {p["data_kind"] for p in r["parts"].values()} == {"WEIGHT_DIFF"}
                controls = {k.split("/", 1)[1] for k in r["arrays"] if k.startswith(f"{CTRL}/")}
                weights = {k.split("/", 1)[1] for k in r["arrays"] if k.startswith(f"{WEIGHTS}/")}
                assert controls and controls < weights  # every parameter, no buffer
                assert not any(k.endswith(("running_mean", "running_var")) for k in controls)
                assert r["parts"][CTRL]["meta"]["NUM_STEPS_CURRENT_ROUND"] == 1  # uniform
            else:
                assert r["data_kind"] == "WEIGHT_DIFF"
