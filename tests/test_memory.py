"""The memory estimate: it tracks XLA's own plan, grows as it should, and a run that cannot fit
is refused before anything compiles, naming the largest size that fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxnst import ConfigError, StyleConfig, memory, stylize
from jaxnst.image import fit_size
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


def test_host_memory_is_read_from_linux():
    """On CPU the limit is the host's (issue 13, defect 1): /proc/meminfo, cgroups, rlimits."""
    room = memory.host_memory_available()
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    assert 0 < room <= memory._read_kv(Path("/proc/meminfo"))["MemAvailable"]


def test_on_cpu_the_plan_counts_host_memory(monkeypatch):
    """Issue 13, defect 1: --size 48 --variants 10000 ran on (the CPU limit was "unknown") until
    it was out of memory; now it is refused, naming the most variants and the largest size."""
    monkeypatch.setattr(memory, "host_memory_available", lambda: 4 * 2**30)
    cfg = StyleConfig(size=48)
    limit = memory.device_memory_limit(cfg)
    assert limit == int(0.85 * 4 * 2**30) - 2**29
    one = memory.plan_memory((36, 48), cfg, 1, 1, 1, each=True)
    assert one[1].where == "on this host" and one[2] == limit
    with pytest.raises(ConfigError) as err:
        memory.plan_memory((36, 48), cfg, 10000, 10000, 1, each=True)
    most = memory.largest_fitting_variants((36, 48), cfg, False, limit, each=True)
    message = str(err.value)
    assert "on this host" in message and f"at most {most} variant(s) fit at this size" in message
    memory.plan_memory((36, 48), cfg, most, most, 1, each=True)  # that many do fit
    assert memory.most_examples((36, 48), cfg, 1, True) == most


def test_the_largest_size_that_fits_is_exact_not_a_multiple_of_16():
    """Issue 13, defect 10: the refusal named multiples of 16 (208 px where 220 px ran)."""
    cfg = StyleConfig()
    content_hw = (768, 1024)
    for side in (220, 301):
        limit = estimate_memory(fit_size(content_hw, side), cfg, 1, False).bytes
        assert largest_fitting_size(content_hw, cfg, 1, False, limit) == side
        assert largest_fitting_size(content_hw, cfg, 1, False, limit - 1) < side
    hw = fit_size(content_hw, 128)
    for each in (False, True):
        limit = estimate_memory(hw, cfg, 7, False, each=each).bytes
        assert memory.largest_fitting_variants(hw, cfg, False, limit, each) == 7
        assert memory.largest_fitting_variants(hw, cfg, False, limit - 1, each) == 6


def test_per_example_execution_holds_the_activations_once():
    cfg = StyleConfig()
    one = estimate_memory((384, 512), cfg, 1, False).bytes
    assert estimate_memory((384, 512), cfg, 1, False, each=True).bytes == one
    assert estimate_memory((384, 512), cfg, 4, False, each=True).bytes < 0.6 * 4 * one
