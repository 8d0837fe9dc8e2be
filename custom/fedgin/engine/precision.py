"""Mixed precision where the hardware has it: which autocast dtype a device trains the U-Net in.

* CUDA: float16 autocast with a ``GradScaler`` (the usual AMP).
* CPU: bfloat16 autocast when the CPU has bf16 matrix units (``amx_bf16`` or ``avx512_bf16`` in its flags: oneDNN
  then runs the convolutions natively in bf16), no scaler (bf16 has float32's range). Detected from
  ``/proc/cpuinfo``, never assumed: a CPU without these flags (or another OS) trains in float32, where bf16 would
  be emulated and slower.
* ``amp=False`` (``TrainConfig.amp``, job variable ``amp``): float32 everywhere.

Only the network runs under autocast: the augmentation (GIN draws and renormalisation), the loss and the metrics
are computed in float32 on float32 logits.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["cpu_bf16_flags", "autocast_dtype", "precision_name"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 matrix-unit flags this CPU reports (empty when none, or when ``/proc/cpuinfo`` is unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return tuple(f for f in BF16_FLAGS if f in flags)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """float16 on CUDA, bfloat16 on a CPU with bf16 units, ``None`` (float32) otherwise or when ``amp`` is off."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_bf16_flags() and torch.backends.mkldnn.is_available():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.float16: "fp16 autocast", torch.bfloat16: "bf16 autocast"}.get(dtype, "fp32")
