"""The memory estimate: it tracks XLA's own plan, grows as it should, and a run that cannot fit
is refused before anything compiles, naming the largest size that fits."""

from __future__ import annotations

import numpy as np
import pytest

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.memory import estimate_memory, largest_fitting_size
from jaxnst.problem import make_problem
from jaxnst.stylize import StyleRun

SMALL = StyleConfig(size=24, iterations=3, chunk=2, style_layers=("conv1_1", "conv2_1"),
                    content_layers=("conv2_1",))  # fmt: skip


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)


@pytest.mark.parametrize("size", [64, 256])
def test_memory_estimate_tracks_xla_plan(images, vgg_params, size):
    """The estimate is within 10% of XLA's compiled memory plan for one step (CPU): at 64 px
    the parameters dominate, at 256 px the activations."""
    content, style = images
    for optimizer in ("adam", "lbfgs"):
        cfg = StyleConfig(size=size, optimizer=optimizer)
        problem = make_problem(content, style, cfg, params=vgg_params)
        run = StyleRun(problem, cfg)
        m = run.program.lower(*run._args()).compile().memory_analysis()
        if m is None:
            pytest.fail("XLA gave no memory analysis")
        xla = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
        xla -= m.alias_size_in_bytes
        est = estimate_memory(problem.content.shape[:2], cfg, 1, remat=False, backend="cpu")
        assert 0.9 < est.bytes / xla < 1.1, (optimizer, est.bytes, xla)


def test_estimate_grows_with_size_and_variants():
    cfg = StyleConfig()
    a = estimate_memory((256, 256), cfg, 1, False, "gpu").bytes
    b = estimate_memory((512, 512), cfg, 1, False, "gpu").bytes
    c = estimate_memory((512, 512), cfg, 4, False, "gpu").bytes
    assert a < b < c
    assert estimate_memory((512, 512), cfg, 1, True, "gpu").bytes < b  # remat keeps less
    limit = estimate_memory((1024, 768), cfg, 1, False).bytes
    best = largest_fitting_size((768, 1024), cfg, 1, False, limit)
    assert 1008 <= best <= 1024


def test_too_large_a_run_is_refused_before_compiling(images):
    content, style = images
    cfg = SMALL.replace(size=64, variants=3)
    need = estimate_memory((64, 51), cfg, 3, remat=False).bytes
    cfg = cfg.replace(memory_limit_gb=0.6 * need / 2**30)
    with pytest.raises(ConfigError, match=r"largest size that fits is (\d+) px") as err:
        stylize(content, style, cfg)
    best = int(err.value.args[0].split("fits is ")[1].split(" px")[0])
    assert 16 <= best < 64
