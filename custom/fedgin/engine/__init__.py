"""The one engine: model, loss, training loop, 3D evaluation and model files."""

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
