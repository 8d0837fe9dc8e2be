"""FedGIN for NVIDIA FLARE."""

__version__ = "0.1.0"
