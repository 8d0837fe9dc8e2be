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

``reference_test_input`` names the test-time input filter of a method's reference pipeline (FreeSDG, RaffeSDG);
it is used only when asked for (``--test-input reference``), the default test input being the raw slice.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedgin.augment import AUGMENTATIONS

__all__ = ["Method", "METHODS", "get_method", "model_domains", "eval_input_for", "DOMAINS"]

#: modality domains of the ``dsbn`` method (a case's ``modality`` selects its branch)
DOMAINS = ("ct", "mri")


@dataclass(frozen=True)
class Method:
    """``augmentation``: registered augmentation name; ``batch_norm``: ``shared``, ``local`` or ``domain``."""

    name: str
    augmentation: str = "none"
    batch_norm: str = "shared"
    adversarial: bool = False  # FedDA-style feature alignment to the global model (fedgin.engine.adversarial)
    reference_test_input: str = "raw"  # the reference pipeline's eval-time filter (fedgin.augment.eval_input)
    send_all_branches: bool = False  # DSBN: also send the other modalities' (untrained) branches

    @property
    def domains(self) -> list[str]:
        """Batch-norm domains the method's model needs: the modalities for DSBN, none otherwise."""
        return list(DOMAINS) if self.batch_norm == "domain" else []

    @property
    def needs_federation(self) -> bool:
        """FedBN and FedDA are defined against a global model: no local or centralized run."""
        return self.batch_norm == "local" or self.adversarial

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
    """The method registered as ``name``; unknown → ``ValueError`` listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}") from None


def model_domains(name: str) -> list[str]:
    """Batch-norm domains the model of method ``name`` needs: the modalities for DSBN, none otherwise."""
    return get_method(name).domains


def eval_input_for(name: str, choice: str = "raw") -> str:
    """The model's ``test_input`` for method ``name`` (:meth:`Method.test_input`)."""
    return get_method(name).test_input(choice)
