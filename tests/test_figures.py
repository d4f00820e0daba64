"""Pictures of a run: the loss plot, the evolution GIF, the contact sheet."""

from __future__ import annotations

import numpy as np
from PIL import Image

from jaxnst import figures
from jaxnst.config import StyleConfig
from jaxnst.image import save_image


def frames(n: int, h: int = 24, w: int = 32) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(10 * i, rng.integers(0, 255, (2, h, w, 3), np.uint8)) for i in range(n)]


def test_plot_draws_the_weighted_terms(tmp_path):
    hist = {"iteration": np.arange(5), "total": np.linspace(5, 1, 5), "content": np.ones(5),
            "style": np.linspace(2, 1, 5), "tv": np.zeros(5)}  # fmt: skip
    path = figures.write_plot(tmp_path / "l.png", [hist, hist], [0, 1], StyleConfig())
    with Image.open(path) as img:
        assert img.size == (700, 450)
        assert len(np.unique(np.asarray(img.convert("L")))) > 10  # something is drawn


def test_gif_has_a_frame_per_snapshot_and_holds_the_last(tmp_path):
    snaps = [(i, imgs[0]) for i, imgs in frames(4)]
    path = figures.write_gif(tmp_path / "e.gif", snaps)
    with Image.open(path) as img:
        assert img.n_frames == 4 and img.size == (32, 24)
        img.seek(3)
        assert img.info["duration"] == 1000


def test_sheet_is_a_row_per_variant_and_a_column_per_snapshot(tmp_path):
    path = figures.write_sheet(tmp_path / "s.png", frames(3), [0, 1])
    with Image.open(path) as img:
        assert img.size == (4 + 3 * (32 + 4), 4 + 2 * (24 + 14 + 4))


def test_read_frames_skips_snapshots_that_are_gone(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    save_image(a, np.zeros((4, 4, 3), np.uint8))
    got = figures.read_frames(
        [{"iteration": 5, "paths": [str(a)]}, {"iteration": 9, "paths": [str(b)]}]
    )
    assert [i for i, _ in got] == [5] and got[0][1].shape == (1, 4, 4, 3)
