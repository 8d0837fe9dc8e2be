"""``fedgin preview``: the slice and its augmented views as a PNG grid."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_toy_site
from fedgin.cli import main
from fedgin.reporting.preview import augmented_views, slices_from_datalist


def test_views_change_the_slice_only_for_augmenting_methods(tmp_path):
    dl = write_toy_site(tmp_path, "site-ct", "ct", ["disc"], {"training": 1}, size=32, slices=6)
    s = slices_from_datalist(dl)
    assert s.stack.shape == (4, 32, 32)
    label = np.load(tmp_path / "site-ct" / "cases" / "cttr00_label.npy")
    assert (label[int(s.title.rsplit(" ", 1)[1])] > 0).sum() == (label > 0).sum(axis=(1, 2)).max()
    assert all(np.array_equal(v, s.stack[0]) for v in augmented_views(s, "none", 2))
    gin = augmented_views(s, "gin", 3, seed=1)
    assert not np.allclose(gin[0], s.stack[0]) and not np.allclose(gin[0], gin[1])
    # GIN keeps the image's Frobenius norm (renormalisation): same energy, other intensities
    assert np.linalg.norm(gin[0]) == pytest.approx(np.linalg.norm(s.stack[0]), rel=1e-3)
    assert np.array_equal(gin[2], augmented_views(s, "gin", 3, seed=1)[2])  # seeded


def test_preview_command_writes_the_grid(tmp_path, capsys):
    out = tmp_path / "fig2.png"
    assert main(["preview", "--output", str(out), "--methods", "gin,rc", "--views", "2"]) == 0
    from PIL import Image

    w, h = Image.open(out).size
    assert w > 3 * 150 and h > 4 * 150  # 4 rows (CT, MRI x 2 methods), 3 columns
    assert "2 slice(s) x 2 method(s) x 2 views" in capsys.readouterr().out
    assert main(["preview", "--output", str(out), "--methods", "blur"]) == 2
