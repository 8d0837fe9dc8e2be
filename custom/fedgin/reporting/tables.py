"""Markdown tables for the experiments' reports: the best value per column in bold, a collapsed model's values
marked ∅ and explained in a footnote."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["markdown_table", "fmt"]


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]], values: list[list[float]] | None = None,
                   first_value_column: int = 1, path: Path | None = None,
                   marks: list[list[bool]] | None = None) -> str:
    """A markdown table; with ``values`` (one row of numbers per row, aligned with the columns from
    ``first_value_column``), the best (highest) value of each column is bold. ``marks`` (same shape as ``values``):
    values of a collapsed model (``fedgin.engine.metrics.empty_classes``), shown with ∅, never bold, and explained
    in a footnote."""
    from fedgin.engine.metrics import EMPTY_MARK, EMPTY_NOTE

    rows = [list(r) for r in rows]
    marked = marks or [[False] * len(v) for v in (values or [])]
    if values:
        for j in range(len(values[0])):
            col = [v[j] for v, k in zip(values, marked) if v[j] is not None and math.isfinite(v[j]) and not k[j]]
            if not col:
                continue
            best = max(col)
            for r, v, k in zip(rows, values, marked):
                if v[j] is not None and math.isfinite(v[j]) and v[j] == best and not k[j]:
                    r[first_value_column + j] = f"**{r[first_value_column + j]}**"
    for r, k in zip(rows, marked):
        for j, flag in enumerate(k):
            if flag:
                r[first_value_column + j] = f"{r[first_value_column + j]} {EMPTY_MARK}"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if any(any(k) for k in marked):
        lines += ["", EMPTY_NOTE + "."]
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
