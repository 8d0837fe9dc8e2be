"""Methods: what a site does beyond plain training, selected by one configuration value (``method``).

A method is an augmentation (``fedgin.augment``) plus a batch-norm policy:

- ``shared``: every weight is averaged by the federation (FedAvg, FedGIN and the augmentation baselines);
- ``local`` (``fedbn``, Li et al. ICLR 2021): batch-norm layers never leave a site and are never overwritten by
  the global model; the site's model is its local BN + the federation's other weights;
- ``domain`` (``dsbn``, Chang et al. CVPR 2019, federated as in the reference note §7.3): every batch-norm layer
  has one branch per modality; a site trains and sends only its modality's branch, so the server's per-key
  sample-weighted average mixes a branch only among the sites of that modality; at test time the branch is chosen
  by the volume's modality; ``dsbn-naive`` sends every branch, the ones it never trained too, so the N_k/N
  average moves a branch only by its sites' share of the samples (the plain FedAvg of both branches that the
  paper's collapsed federated DSBN suggests, see the README's decisions);
- ``fedda``: adversarial alignment of each site's bottleneck features with the global model's, with a
  discriminator that never leaves the site (our reimplementation, see ``fedgin.engine.adversarial``).

A method can also name a federated optimiser after ``+`` (``gin+fedprox``, ``none+scaffold``; plain ``gin`` is
``gin+fedavg``), one of ``FED_OPTIMIZERS``:

- ``fedavg``: the server averages the sites' updates with N_k/N (the paper's aggregation);
- ``fedprox`` (Li et al., MLSys 2020): each site adds (μ/2)·‖θ − θ_global‖² over the network's parameters to its
  loss, μ = ``TrainConfig.fedprox_mu`` (``fedgin.engine.federated_optim``);
- ``fedopt`` (Reddi et al., ICLR 2021): the server treats the N_k/N-averaged update as a negative gradient and
  steps a server optimiser (job values ``server_optimizer``, ``server_lr_scheduler``; NVFlare's
  ``PTFedOptModelShareableGenerator``); the sites train as in FedAvg;
- ``scaffold`` (Karimireddy et al., ICML 2020): control variates correct every local step for the site's drift
  (NVFlare's ``PTScaffoldHelper`` at the site, ``ScatterAndGatherScaffold`` on the server).

These are federated only (``needs_federation``). SCAFFOLD needs every weight shared (not with fedbn/dsbn).

``reference_test_input`` names the test-time input filter of a method's reference pipeline (FreeSDG, RaffeSDG);
it is used only when asked for (``--test-input reference``), the default test input being the raw slice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedgin.augment import AUGMENTATIONS

__all__ = ["Method", "METHODS", "FED_OPTIMIZERS", "get_method", "method_names", "model_domains", "eval_input_for",
           "DOMAINS"]

#: modality domains of the ``dsbn`` method (a case's ``modality`` selects its branch)
DOMAINS = ("ct", "mri")
#: federated optimisers a method can name after "+" (``gin+fedprox``); ``fedavg`` is the default
FED_OPTIMIZERS = ("fedavg", "fedprox", "fedopt", "scaffold")


@dataclass(frozen=True)
class Method:
    """``augmentation``: registered augmentation name; ``batch_norm``: ``shared``, ``local`` or ``domain``."""

    name: str
    augmentation: str = "none"
    batch_norm: str = "shared"
    adversarial: bool = False  # FedDA-style feature alignment to the global model (fedgin.engine.adversarial)
    reference_test_input: str = "raw"  # the reference pipeline's eval-time filter (fedgin.augment.eval_input)
    send_all_branches: bool = False  # DSBN: also send the other modalities' (untrained) branches
    optimizer: str = "fedavg"  # the federated optimiser (FED_OPTIMIZERS)

    @property
    def domains(self) -> list[str]:
        """Batch-norm domains the method's model needs: the modalities for DSBN, none otherwise."""
        return list(DOMAINS) if self.batch_norm == "domain" else []

    @property
    def needs_federation(self) -> bool:
        """FedBN, FedDA and the federated optimisers other than FedAvg are defined against a global model: no local
        or centralized run."""
        return self.batch_norm == "local" or self.adversarial or self.optimizer != "fedavg"

    @property
    def federation_only(self) -> bool:
        """Only its federated run is a distinct experiment: ``needs_federation``, or a DSBN variant that differs
        from ``dsbn`` only in what it sends (``send_all_branches``)."""
        return self.needs_federation or self.send_all_branches

    def test_input(self, choice: str = "raw") -> str:
        """The model's ``test_input``: ``choice`` itself, or with ``choice="reference"`` the method's
        ``reference_test_input`` (``"raw"`` for methods whose reference tests on the raw image)."""
        return self.reference_test_input if choice == "reference" else choice


METHODS: dict[str, Method] = {name: Method(name, augmentation=name) for name in AUGMENTATIONS}
METHODS["fmaug"] = Method("fmaug", augmentation="fmaug", reference_test_input="freesdg-hfc")
METHODS["raffesdg"] = Method("raffesdg", augmentation="raffesdg", reference_test_input="raffesdg-butterworth")
METHODS["fedbn"] = Method("fedbn", augmentation="none", batch_norm="local")
METHODS["dsbn"] = Method("dsbn", augmentation="none", batch_norm="domain")
METHODS["dsbn-naive"] = Method("dsbn-naive", augmentation="none", batch_norm="domain", send_all_branches=True)
METHODS["fedda"] = Method("fedda", augmentation="none", adversarial=True)


def get_method(name: str) -> Method:
    """The method registered as ``name``, or ``<registered>+<federated optimiser>`` (``gin+scaffold``).

    Raises:
        ValueError: an unknown method or optimiser (listing the known ones), or SCAFFOLD with a method that keeps
            batch norm at the sites.
    """
    if not isinstance(name, str):
        raise ValueError(f"a method is a name, got {name!r}")
    base, plus, optimizer = name.partition("+")
    if base not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}, each optionally followed by "
                         f"+{'/+'.join(FED_OPTIMIZERS)} (e.g. gin+fedprox)")
    if not plus:
        return METHODS[base]
    if optimizer not in FED_OPTIMIZERS:
        raise ValueError(f"method {name!r}: unknown federated optimiser {optimizer!r}; known: {list(FED_OPTIMIZERS)}")
    method = METHODS[base]
    if optimizer == "scaffold" and method.batch_norm != "shared":
        raise ValueError(f"method {name!r}: SCAFFOLD corrects every shared weight with the federation's control "
                         f"variate; {base} keeps batch norm at the sites (use fedprox or fedopt with it)")
    return replace(method, name=name, optimizer=optimizer)


def method_names() -> list[str]:
    """Every valid method name: the registered ones, then each with every federated optimiser but FedAvg."""
    return sorted(METHODS) + [f"{m}+{o}" for m in sorted(METHODS) for o in FED_OPTIMIZERS[1:]
                              if not (o == "scaffold" and METHODS[m].batch_norm != "shared")]


def model_domains(name: str) -> list[str]:
    """Batch-norm domains the model of method ``name`` needs: the modalities for DSBN, none otherwise."""
    return get_method(name).domains


def eval_input_for(name: str, choice: str = "raw") -> str:
    """The model's ``test_input`` for method ``name`` (:meth:`Method.test_input`)."""
    return get_method(name).test_input(choice)
