"""The paper's experiments, one command each: ``fedgin experiment abdomen-crossmodality | abdomen-mri-scarce | heart``.

Each prepares its sites from a recorded partition (phantoms by default, real datasets with ``--source``), runs the
federated runs in the real ``nvflare simulator`` and the local and centralized baselines with the same engine,
and writes its tables (markdown, in the layout of the paper's Tables II/III, IV/V) and plots (PNG). Re-running a
command resumes: finished runs and unchanged preparation stages are reused.

Also the building blocks every experiment shares: one run and its evaluation with resume (``runs``), the
methods x settings grid of ``fedgin compare`` (``compare``), the main job on the phantom (``demo``) and the
sources of data (``sources``).

May import every stage below it (``common`` ... ``inference``); never ``cli``.
"""

from __future__ import annotations

from fedgin.experiments.abdomen import AbdomenConfig, crossmodality, mri_scarce
from fedgin.experiments.heart import HeartConfig, heart
from fedgin.experiments.sources import Source, parse_source

__all__ = ["EXPERIMENTS", "AbdomenConfig", "HeartConfig", "Source", "parse_source"]

#: name -> (config class, runner, what it reproduces, the experiment's own defaults over the config class's)
EXPERIMENTS = {
    "abdomen-crossmodality": (AbdomenConfig, crossmodality, "Table III: methods x settings, binary per organ, "
                                                            "tested on unseen CT and MRI", {}),
    "abdomen-mri-scarce": (AbdomenConfig, mri_scarce, "Table II / Fig. 3: few MRI cases joined by 0..n CT cases",
                           {"organs": ["liver"], "methods": ["gin"]}),
    "heart": (HeartConfig, heart, "Tables IV / V: 3 training sites + a held-out MRI site selecting the model", {}),
}
