"""Coarse to fine (jaxnst.scales and the run loop): the plan, the hand-over between scales, one
history across them, and runs that go through several scales."""

from __future__ import annotations

import numpy as np
import pytest

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.stylize import StyleRun

SMALL = StyleConfig(size=24, iterations=3, chunk=2, style_layers=("conv1_1", "conv2_1"),
                    content_layers=("conv2_1",))  # fmt: skip


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)


def test_coarse_to_fine_runs_each_scale_from_the_last(images):
    content, style = images
    # the literal objective: its first, style-dominated losses make the hand-over plain to see
    cfg = SMALL.replace(size=48, scales=(24, 48), scale_iterations=(3, 2), variants=2,
                        objective="paper")  # fmt: skip
    result = stylize(content, style, cfg)
    assert result.images.shape == (2, 48, 38, 3)
    h = result.history[0]
    np.testing.assert_array_equal(np.unique(h["scale"]), [24, 48])
    assert h["iteration"][-1] == 5 and list(result.iterations) == [5, 5]
    # the second scale starts from the upsampled first result, not from noise: its first loss
    # is far below a fresh noise start at that size
    fresh = stylize(content, style, cfg.replace(scales=(), scale_iterations=(), iterations=1))
    first_fine = h["total"][h["scale"] == 48][0]
    assert first_fine < 0.5 * fresh.history[0]["total"][0]


def test_scales_are_validated():
    with pytest.raises(ConfigError, match="must equal size"):
        StyleConfig(size=64, scales=(32, 48)).validate()
    with pytest.raises(ConfigError, match="increasing"):
        StyleConfig(size=32, scales=(64, 32)).validate()
    with pytest.raises(ConfigError, match="scale-iterations"):
        StyleConfig(size=64, scales=(32, 64), scale_iterations=(5,)).validate()


def test_coarse_to_fine_in_luminance_mode_continues_from_the_grey_image(images, monkeypatch):
    """Each finer scale starts from what the loss optimised (grey), not the recoloured output."""
    content, style = images
    seen = []
    original = StyleRun.__init__

    def spy(self, problem, cfg, seeds=None, sweep=None, init=None):
        seen.append(None if init is None else np.asarray(init))
        original(self, problem, cfg, seeds=seeds, sweep=sweep, init=init)

    monkeypatch.setattr(StyleRun, "__init__", spy)
    cfg = SMALL.replace(size=32, scales=(16, 32), scale_iterations=(2, 1), color_mode="luminance")
    stylize(content, style, cfg)
    assert seen[0] is None and seen[1] is not None
    np.testing.assert_allclose(seen[1][..., 0], seen[1][..., 2], atol=1e-6)  # grey


class _FakeRun:
    """What jaxnst.scales reads of a StyleRun: two variants, rows and counters."""

    def __init__(self, its, rows):
        self.n, self.rows, self._its = 2, rows, np.asarray(its)

    def iterations(self):
        return self._its

    def evaluations(self):
        return self._its + 1

    def raw_images(self):
        return np.zeros((2, 4, 6, 3), np.float32)


def test_scales_plan_hand_over_and_one_history():
    """The plan, the resized start and per-variant iteration offsets (jaxnst.scales)."""
    from jaxnst.scales import CoarseToFine

    cfg = StyleConfig(size=64, scales=(16, 32, 64), iterations=10)
    scales = CoarseToFine(cfg)
    assert [(s.size, s.iterations) for s in scales.stages] == [(16, 10), (32, 5), (64, 5)]
    assert scales.config().size == 16 and scales.config().scales == ()
    assert scales.initial_images((8, 12)) is None
    row = lambda i: {"iteration": i, "evaluations": i, "total": 1.0}  # noqa: E731
    # variant 1 converged after 3 iterations: its next scale counts on from 3, not 10
    scales.next(_FakeRun([10, 3], [[row(0), row(10)], [row(0), row(3)]]))
    assert scales.initial_images((8, 12)).shape == (2, 8, 12, 3)
    second = _FakeRun([1, 1], [[row(1)], [row(1)]])
    assert list(scales.iterations(second)) == [11, 4]
    assert list(scales.evaluations(second)) == [13, 6]
    history = scales.history(second)
    assert list(history[1]["iteration"]) == [0, 3, 4] and list(history[1]["scale"]) == [16, 16, 32]
    assert scales.start == 10 and scales.total == 20 and not scales.last
    # a checkpoint from before past_iterations were kept: the planned offsets
    scales.past_iterations = []
    assert list(scales.iterations(second)) == [11, 11]


def test_one_scale_has_no_scale_column():
    from jaxnst.scales import CoarseToFine

    scales = CoarseToFine(StyleConfig(size=32, iterations=7))
    assert scales.last and scales.config().iterations == 7
    history = scales.history(_FakeRun([1, 1], [[{"iteration": 1, "total": 2.0}], []]))
    assert "scale" not in history[0] and list(history[1]) == ["iteration", "evaluations", "total"]


def test_above_256_px_the_default_plan_is_coarse_to_fine():
    """The automatic plan: halve down to 256 px or less, half the iterations there and 30% at
    each finer scale (500: 250 + 150), unless scales are given or auto_scales is off."""
    assert StyleConfig(size=256).scale_list() == (256,)
    assert StyleConfig(size=512).scale_list() == (256, 512)
    assert StyleConfig(size=512).iterations_per_scale() == (250, 150)
    assert StyleConfig(size=1024, iterations=100).iterations_per_scale() == (50, 30, 30)
    assert StyleConfig(size=1024).scale_list() == (256, 512, 1024)
    assert StyleConfig(size=512, auto_scales=False).scale_list() == (512,)
    assert StyleConfig(size=512, scales=(384, 512)).scale_list() == (384, 512)
    from jaxnst.scales import CoarseToFine

    plan = CoarseToFine(StyleConfig(size=600))
    assert [(s.size, s.iterations) for s in plan.stages] == [(150, 250), (300, 150), (600, 150)]


def test_from_128_to_256_px_the_default_plan_stylises_at_256_px_then_at_the_size():
    """128 px from noise loses the photo's layout (docs/benchmarks.md): from 128 up to 256 px the
    automatic plan is 256 px (half the iterations) then the size asked for (a tenth); below
    128 px, at 256 px, with auto_scales off or with scales given a run keeps its own sizes."""
    assert StyleConfig(size=128).scale_list() == (256, 128)
    assert StyleConfig(size=128).iterations_per_scale() == (250, 50)
    assert StyleConfig(size=255, iterations=10).iterations_per_scale() == (5, 1)
    assert StyleConfig(size=127).scale_list() == (127,)
    assert StyleConfig(size=256).iterations_per_scale() == (500,)
    assert StyleConfig(size=192, auto_scales=False).scale_list() == (192,)
    assert StyleConfig(size=192, scales=(96, 192)).scale_list() == (96, 192)


def test_the_memory_check_plans_for_the_largest_scale(images, monkeypatch):
    """A 128 px run's first scale is 256 px: the check before any work plans for that."""
    import sys

    stylize_module = sys.modules[StyleRun.__module__]  # the module, not the function of its name
    seen = []

    def check(content, styles, cfg, n):
        seen.append(cfg.size)
        raise ConfigError("checked")

    monkeypatch.setattr(stylize_module, "check_memory_first", check)
    with pytest.raises(ConfigError, match="checked"):
        stylize_module.stylize(images[0], images[1], size=128, iterations=2)
    assert seen == [256]


def test_a_128_px_run_goes_through_256_px_and_ends_at_128_px():
    rng = np.random.default_rng(2)
    content, style = rng.random((96, 128, 3)).astype(np.float32), rng.random((64, 64, 3))
    result = stylize(content, style.astype(np.float32), SMALL.replace(size=128, iterations=20))
    assert result.images.shape == (1, 96, 128, 3)
    scales = result.history[0]["scale"]
    assert scales[0] == 256 and scales[-1] == 128 and list(scales) == sorted(scales, reverse=True)
    assert result.iterations[0] == result.history[0]["iteration"][-1] <= 10 + 2
