"""A run's examples on their devices: variant k is the lone run with its seed, byte for byte
(issue 13, defect 13), and the stacked views of per-example arrays round-trip.

Tiny runs: 24 px, random-init VGG19 up to conv3_1. Sharded runs over forced CPU devices are in
test_engine.py and test_video.py, several processes in test_multihost.py.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxnst.batch import Examples, Stacked
from jaxnst.config import StyleConfig
from jaxnst.problem import make_problem
from jaxnst.stylize import StyleRun

CFG = StyleConfig(size=24, iterations=10, chunk=4, content_layers=("conv2_1",),
                  style_layers=("conv1_1", "conv2_1", "conv3_1"), loop="python")  # fmt: skip


@pytest.fixture(scope="module")
def problem(random_params):
    rng = np.random.default_rng(0)
    content = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    style = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    return make_problem(content, style, CFG, random_params)


def finish(run: StyleRun) -> StyleRun:
    for _ in range(20):
        if run.done():
            break
        run.advance()
    assert run.done()
    return run


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_variant_k_is_the_lone_run_with_its_seed_bit_for_bit(problem, optimizer):
    """Before: the batch ran jit(vmap(step)), the lone run jit(step); XLA:CPU compiles them
    differently (the operand order of the Gram derivative's dot, a reduction's order) and
    L-BFGS grows the last bits (10/255 at 96 px after 40 iterations). With the CPU default
    (batching auto = each) every variant runs the lone run's program."""
    cfg = CFG.replace(optimizer=optimizer)
    many = finish(StyleRun(problem, cfg.replace(variants=3)))
    lone = finish(StyleRun(problem, cfg, seeds=[2]))
    assert isinstance(many.batch, Examples) and jax.default_backend() == "cpu"
    np.testing.assert_array_equal(np.asarray(many.xs)[2], np.asarray(lone.xs)[0])
    np.testing.assert_array_equal(many.history()[2]["total"], lone.history()[0]["total"])
    assert many.final_loss()[2] == lone.final_loss()[0]


def test_one_variant_in_while_loop_chunks_is_the_python_loop(problem):
    """Before: --loop scan always ran vmap(step), even for one variant (50/255 apart at 96 px)."""
    python = finish(StyleRun(problem, CFG, seeds=[1]))
    scan = finish(StyleRun(problem, CFG.replace(loop="scan"), seeds=[1]))
    np.testing.assert_array_equal(np.asarray(scan.xs), np.asarray(python.xs))
    np.testing.assert_array_equal(scan.history()[0]["total"], python.history()[0]["total"])


def test_vmap_batching_is_one_program_equal_to_rounding(problem):
    each = finish(StyleRun(problem, CFG.replace(variants=2)))
    vmap = finish(StyleRun(problem, CFG.replace(variants=2, batching="vmap")))
    assert isinstance(vmap.batch, Stacked)
    np.testing.assert_allclose(np.asarray(vmap.xs), np.asarray(each.xs), atol=1e-3)
    np.testing.assert_array_equal(vmap.iterations(), each.iterations())


def test_stacked_views_of_the_examples_round_trip(problem):
    run = StyleRun(problem, CFG.replace(variants=3, optimizer="adam"))
    examples = run.batch
    assert examples.local == [0, 1, 2] and len(examples.fns) == 0
    xs = np.asarray(run.xs)
    assert xs.shape == (3, 24, 24, 3)
    run.xs = xs[::-1].copy()  # the setter splits into the examples' own arrays
    np.testing.assert_array_equal(np.asarray(examples._xs[0]), xs[2])
    np.testing.assert_array_equal(examples.host_xs(), xs[::-1])
    states = run.states
    assert np.asarray(states.iteration).shape == (3,)
    run.states = states
    np.testing.assert_array_equal(run.iterations(), [0, 0, 0])
    assert run.batch.leaf("converged") is None  # Adam has no such field
    run.advance(2)
    assert len(examples.fns) == 1 and run.executable is next(iter(examples.fns.values()))
    np.testing.assert_array_equal(run.iterations(), [2, 2, 2])
