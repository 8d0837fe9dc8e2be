"""Optional privacy filter on what a site sends each round, chosen by configuration: ``PrivacyFilter``.

The job variable ``privacy`` (``{"filter": NAME, ...NVFlare filter arguments}``) picks one of NVFlare's own filters
and applies it to the site's train result (the weight difference θ_k − θ_global), after the Executor and before
anything leaves the site:

- ``none`` (default): the full weight difference is sent.
- ``exclude``: ``ExcludeVars(exclude_vars=REGEX)``: matching layers never leave the site (and, all sites
  excluding them, are never averaged: they keep their initial global values on the server; the server's
  ``CheckedAggregator`` reads the same variable and accepts updates without them).
- ``percentile``: ``PercentilePrivacy(percentile=P, gamma=G)`` (Shokri and Shmatikov, CCS 2015): only the entries
  whose |Δθ| is above the P-th percentile are sent, clipped; the rest are sent as 0. NVFlare clips Δθ / n to ±G,
  n being ``NUM_STEPS_CURRENT_ROUND``, which FedGIN sets to N_k (training slices): the clip on Δθ is ±G·N_k.
- ``svt``: ``SVTPrivacy(fraction, epsilon, noise_var, gamma, tau)``: a differentially private sparse-vector
  release of a fraction of the entries, with Laplace noise.

Only ``WEIGHT_DIFF`` results are filtered: the ``submit_model`` reply of cross-site evaluation carries the site's
whole local model and is controlled by ``share_local_models`` instead. Filtering costs accuracy: the README
reports what each setting did to Dice on the phantom.
"""

from __future__ import annotations

import re
from typing import Any

from nvflare.apis.dxo import DataKind
from nvflare.apis.filter import Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.filters.exclude_vars import ExcludeVars
from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
from nvflare.app_common.filters.svt_privacy import SVTPrivacy

from fedgin.common.job_args import keep_job_args

__all__ = ["PrivacyFilter", "FILTERS", "excluded_pattern", "check_privacy"]

FILTERS = {"exclude": ExcludeVars, "percentile": PercentilePrivacy, "svt": SVTPrivacy}


def check_privacy(privacy: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(filter name, its arguments) of a ``privacy`` value; ``ValueError`` on an unknown name or argument."""
    privacy = dict(privacy or {})
    name = privacy.pop("filter", "none")
    if name != "none" and name not in FILTERS:
        raise ValueError(f"privacy filter {name!r} unknown; choose none, {', '.join(FILTERS)}")
    if name == "none" and privacy:
        raise ValueError(f"privacy arguments {sorted(privacy)} given without a filter")
    if name == "exclude":
        pattern = privacy.get("exclude_vars")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("privacy filter 'exclude' needs exclude_vars: a regular expression of layer names")
        re.compile(pattern)
    if "data_kinds" in privacy:
        raise ValueError("privacy: data_kinds is fixed to WEIGHT_DIFF (the train result)")
    return name, privacy


def excluded_pattern(privacy: dict[str, Any] | None) -> re.Pattern | None:
    """The regular expression of layers the ``exclude`` filter keeps at the sites, else None."""
    name, args = check_privacy(privacy)
    return re.compile(args["exclude_vars"]) if name == "exclude" else None


class PrivacyFilter(Filter):
    """Task-result filter wrapping the NVFlare privacy filter that ``privacy`` names (see the module docstring).

    Args:
        privacy: ``{"filter": "none" | "exclude" | "percentile" | "svt", ...that filter's arguments}``.
    """

    def __init__(self, privacy: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.kind, args = check_privacy(privacy)  # fails at job load on a bad value
        self.inner = FILTERS[self.kind](**args, data_kinds=[DataKind.WEIGHT_DIFF]) if self.kind != "none" else None
        self.description = "none" if self.inner is None else f"{self.kind} {args}"
        keep_job_args(self, privacy=privacy)

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if self.inner is None:
            return shareable
        return self.inner.process(shareable, fl_ctx)
