"""What every PNG the package draws does the same way: matplotlib without a display, the Dice axis, and an atomic
write (a crash or a full disk leaves the previous picture or none, never half of one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["pyplot", "dice_axis", "save_png"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only: works on servers without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_axis(ax: Any, title: str, legend_fontsize: float = 8) -> None:
    """A Dice axis: 0 to 1, a light grid, the legend and the title."""
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize)
    ax.set_title(title)


def save_png(fig: Any, path: str | Path, dpi: int = 120, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay ``fig`` out (within ``rect``, figure fractions), write it to ``path`` through a temporary file beside it
    and close it; returns ``path``."""
    plt = pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial{out.suffix}")  # same extension: matplotlib picks the format by it
    try:
        fig.tight_layout(**({"rect": rect} if rect else {}))
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
