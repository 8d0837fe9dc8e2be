"""Evaluation and reporting beyond the training loop: statistics over seeds and cases (``statistics``), per-cell
summaries of a grid of runs (``grid_stats``), markdown tables (``tables``), training curves read back from
TensorBoard (``curves``), prediction overlays (``overlays``) and the augmentation preview of the paper's Fig. 2
(``preview``).

May import ``fedgin.common``, ``phantom``, ``data``, ``augment``, ``engine`` and ``flare``; never ``inference``,
``experiments`` or ``cli``.
"""
