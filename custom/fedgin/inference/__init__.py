"""Inference: a model file and NIfTI images in, label maps in each input's own geometry out (``predict``).

May import ``fedgin.common``, ``data``, ``engine`` and ``reporting`` (the overlays); never ``experiments`` or
``cli``.
"""
