"""The one engine: methods (augmentation + batch-norm policy), model, loss, training loop, 3D evaluation and model
files; ``training`` and ``evaluation`` run it on prepared datalists (local and centralized runs, ``fedgin train``
/ ``evaluate``), ``site`` runs it one FLARE round at a time (free of FLARE).

May import ``fedgin.common``, ``data`` and ``augment``; never ``flare`` or a later stage.
"""

from fedgin.engine.checkpoint import ModelFileError, load_model_file, save_model_file
from fedgin.engine.config import ModelConfig, TrainConfig
from fedgin.engine.data import SliceSet
from fedgin.engine.trainer import Engine, NonFiniteLossError, TrainStats

__all__ = [
    "Engine",
    "ModelConfig",
    "ModelFileError",
    "NonFiniteLossError",
    "SliceSet",
    "TrainConfig",
    "TrainStats",
    "load_model_file",
    "save_model_file",
]
