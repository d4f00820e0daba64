"""Solvers: L-BFGS never goes uphill, batches equal lone runs, loops agree, chunks never recompile.

One tiny problem (24 px, random-init VGG19 up to conv3_1) shared by every test; each ``StyleRun``
costs one compilation, so the runs are module fixtures that record what the tests assert on.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnst import engine
from jaxnst.config import LossWeights, StyleConfig, static_config
from jaxnst.losses import Objective, Targets
from jaxnst.problem import make_problem
from jaxnst.solvers import make_step, make_value_and_grad
from jaxnst.stylize import StyleRun
from jaxnst.vgg import extract_features

CFG = StyleConfig(
    size=24,
    iterations=10,
    chunk=4,
    content_layers=("conv2_1",),
    style_layers=("conv1_1", "conv2_1", "conv3_1"),
    loop="python",
    variants=3,
)
ADAM = CFG.replace(optimizer="adam", iterations=20, chunk=5)
SINGLE = 2  # the variant compared with a lone run: seed 2, not the config's seed 0
# Batched and lone (or while_loop and Python-loop) programs round differently in float32 and
# L-BFGS amplifies it: after 10 iterations pixels differ by up to ~1.3e-4 (the sweep; ~6e-6 for
# the others) and losses by ~3e-6 relative.
XS_ATOL, LOSS_RTOL = 1e-3, 1e-4
MAX_ADVANCES = 12  # a run that needs more chunks than this is stuck (see the stationary test)


# ------------------------------------------------------------------ recording runs


@contextlib.contextmanager
def captured_compiles():
    """Yield a list that collects one message per program JAX lowers and compiles meanwhile."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Compiling"):
                messages.append(record.getMessage())

    logger = logging.getLogger("jax._src.interpreters.pxla")  # where jax 0.10 logs compiles
    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield messages
    finally:
        logger.removeHandler(handler)


@dataclass
class Record:
    """A StyleRun driven to the end, and what was seen after each ``advance``."""

    run: StyleRun
    max_calls: list[int | None] = field(default_factory=list)  # asked of each advance
    calls: list[int] = field(default_factory=list)  # returned by each advance
    compiles: list[int] = field(default_factory=list)  # programs compiled during it
    lows: list[float] = field(default_factory=list)  # smallest pixel afterwards
    highs: list[float] = field(default_factory=list)  # largest pixel afterwards

    def advance(self, max_calls: int | None = None) -> None:
        with captured_compiles() as compiled:
            self.calls.append(self.run.advance(max_calls))
        xs = np.asarray(self.run.xs)
        self.max_calls.append(max_calls)
        self.compiles.append(len(compiled))
        self.lows.append(float(xs.min()))
        self.highs.append(float(xs.max()))

    def finish(self) -> Record:
        while not self.run.done() and len(self.calls) < MAX_ADVANCES:
            self.advance()
        return self

    @property
    def history(self) -> list[dict[str, np.ndarray]]:
        return self.run.history()


@pytest.fixture(scope="module")
def problem(random_params):
    rng = np.random.default_rng(0)
    content = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    style = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    return make_problem(content, style, CFG, random_params)


# Each fixture first empties JAX's in-memory caches: with batching each, every variant runs the
# one-image program, which another test file may have compiled for the same shapes already, and
# test_a_second_chunk_compiles_nothing needs to see the first chunk compile.
@pytest.fixture(scope="module")
def lbfgs(problem):
    jax.clear_caches()
    return Record(StyleRun(problem, CFG)).finish()


@pytest.fixture(scope="module")
def adam(problem):
    jax.clear_caches()
    return Record(StyleRun(problem, ADAM)).finish()


@pytest.fixture(scope="module")
def scan(problem):
    jax.clear_caches()
    record = Record(StyleRun(problem, CFG.replace(loop="scan")))
    record.advance()
    record.advance()
    record.advance(max_calls=1)  # scan mode must honour max_calls too
    return record.finish()


def assert_monotone(totals: np.ndarray) -> None:
    steps = np.diff(totals)
    assert np.all(steps <= 0), f"the loss rose by up to {steps.max():.3g}: {totals}"


# ------------------------------------------------------------------ L-BFGS and Adam behave


def test_lbfgs_never_increases_the_loss(lbfgs):
    assert lbfgs.run.done() and not lbfgs.run.nonfinite
    for hist in lbfgs.history:
        assert np.all(np.isfinite(np.stack(list(hist.values()))))
        assert_monotone(hist["total"])
        assert hist["total"][-1] < 0.5 * hist["total"][0]
    assert np.all(np.isfinite(np.asarray(lbfgs.run.xs)))


def test_lbfgs_survives_a_hostile_start(problem):
    """Variants 0 and 1 start far outside [0, 1] (no projection); variants 1 and 2 have beta 1e12.

    Variant 1 fails today: its loss (~5e22) and gradient (entries up to ~4e20) are finite, but
    ``vdot(g, g)`` overflows float32 (above ~1.8e19 per entry), so optax's first-step scale
    1/||g|| and the steepest-descent fallback ``-g * min(1, 1/||g||)`` are both 0: every trial is
    x itself, nothing is ever accepted, and the run never ends (nor is it flagged). Variant 2
    (beta 1e12 from noise in [0, 1], entries up to ~4e16) shows that the weight alone is fine.
    """
    betas = [CFG.style_weight, 1e12, 1e12]
    cfg = CFG.replace(range_mode="clip")
    run = StyleRun(problem, cfg, seeds=[0, 0, 0], sweep={"style_weight": betas})
    noise = jax.random.uniform(jax.random.key(7), run.xs.shape, jnp.float32)
    run.xs = run.xs.at[:2].set(6.0 * noise[:2] - 2.5)  # [-2.5, 3.5]: VGG inputs -900..+800
    record = Record(run).finish()
    assert not run.nonfinite, run.nonfinite
    assert record.lows[-1] < 0 or record.highs[-1] > 1  # "clip" really left the range alone
    assert np.all(np.isfinite(np.asarray(run.xs)))
    assert np.all(np.isfinite([v for r in run.final_loss() for v in r.values()]))
    stuck = []
    for k, hist in enumerate(record.history):
        assert np.all(np.isfinite(np.stack(list(hist.values())))), hist
        assert_monotone(hist["total"])
        if run.iterations()[k] < cfg.iterations or hist["total"][-1] > 0.5 * hist["total"][0]:
            stuck.append(
                f"variant {k} (beta {betas[k]:g}) at iteration {run.iterations()[k]} after "
                f"{run.evaluations()[k]} evaluations, loss {hist['total'][0]:.3g} -> "
                f"{hist['total'][-1]:.3g}"
            )
    assert not stuck, "; ".join(stuck)


def test_adam_decreases_the_loss_over_20_steps(adam):
    for hist in adam.history:
        assert len(hist["total"]) == 20
        assert np.all(np.isfinite(hist["total"]))
        assert hist["total"][-1] < 0.7 * hist["total"][0], hist["total"]


def test_lbfgs_beats_adam_at_equal_evaluations(lbfgs, adam):
    for k in range(CFG.variants):
        lb, ad = lbfgs.history[k], adam.history[k]
        n = int(min(lb["evaluations"][-1], ad["evaluations"][-1]))
        best_lbfgs = lb["total"][lb["evaluations"] <= n].min()
        last_adam = ad["total"][ad["evaluations"] == n][0]
        print(f"\nvariant {k}, {n} evaluations from {lb['total'][0]:.4g}: "
              f"L-BFGS {best_lbfgs:.4g}, Adam {last_adam:.4g}")  # fmt: skip
        assert best_lbfgs < last_adam


def test_lbfgs_stops_at_a_stationary_point(problem):
    """From the content image with beta = 0 the gradient is exactly 0: the run must still end.

    Fails today: no step is ever accepted, so ``iteration`` never reaches the limit and
    ``stylize()``'s ``while not run.done()`` loops forever. The same happens whenever L-BFGS
    converges (to float32 rounding) before ``iterations``.
    """
    cfg = CFG.replace(init="content", style_weight=0.0, variants=1)
    record = Record(StyleRun(problem, cfg)).finish()
    hist = record.history[0]
    assert hist["total"][0] == 0.0  # really stationary: x is the content image
    assert np.all(np.asarray(record.run.xs) == problem.content)
    assert record.run.done(), (
        f"still running after {record.run.evaluations()} evaluations, "
        f"{record.run.iterations()} iterations"
    )


# ------------------------------------------------------------------ batches, sweeps and loops


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_batched_variant_equals_a_lone_run(request, problem, optimizer):
    batched = request.getfixturevalue(optimizer)
    cfg = batched.run.cfg
    lone = Record(StyleRun(problem, cfg.replace(variants=1), seeds=[SINGLE])).finish()
    assert batched.run.seeds == [0, 1, 2] and lone.run.seeds == [SINGLE]
    np.testing.assert_allclose(lone.run.xs[0], batched.run.xs[SINGLE], atol=XS_ATOL)
    want, got = batched.history[SINGLE], lone.history[0]
    np.testing.assert_array_equal(got["evaluations"], want["evaluations"])
    np.testing.assert_allclose(got["total"], want["total"], rtol=LOSS_RTOL)
    assert lone.run.iterations()[0] == batched.run.iterations()[SINGLE] == cfg.iterations
    # The variants really differ: each has its own seed.
    assert np.abs(batched.run.xs[0] - batched.run.xs[SINGLE]).max() > 0.1


def test_sweep_variant_equals_a_lone_run_with_that_weight(problem):
    betas = [1e2, 1e4, 1e6]
    sweep = Record(StyleRun(problem, CFG, seeds=[0, 0, 0], sweep={"style_weight": betas})).finish()
    lone = Record(StyleRun(problem, CFG.replace(style_weight=betas[2], variants=1))).finish()
    np.testing.assert_allclose(lone.run.xs[0], sweep.run.xs[2], atol=XS_ATOL)
    np.testing.assert_allclose(lone.history[0]["total"], sweep.history[2]["total"], rtol=LOSS_RTOL)
    for k, beta in enumerate(betas):
        hist = sweep.history[k]
        total = CFG.content_weight * hist["content"] + beta * hist["style"]
        np.testing.assert_allclose(hist["total"], total, rtol=1e-5)
    assert np.abs(sweep.run.xs[0] - sweep.run.xs[2]).max() > 0.05  # same seed, other weight


def test_sweep_over_tv_weight_takes_effect(problem):
    """A tv_weight sweep from a config with tv_weight 0 must add the tv term.

    Fails today: loss_parts decides statically on ``cfg.tv_weight > 0`` whether to compute tv, so
    with the default tv_weight 0 the swept (traced) weights multiply a constant 0.
    """
    cfg = ADAM.replace(iterations=2, variants=2)
    run = StyleRun(problem, cfg, seeds=[0, 0], sweep={"tv_weight": [0.0, 1e-3]})
    hist = Record(run).finish().history
    assert hist[1]["tv"][0] > 0, hist[1]
    assert hist[1]["total"][0] > hist[0]["total"][0]


def test_scan_loop_gives_the_python_loops_images(lbfgs, scan):
    assert scan.run.scan and not lbfgs.run.scan
    np.testing.assert_allclose(scan.run.xs, lbfgs.run.xs, atol=XS_ATOL)
    np.testing.assert_array_equal(scan.run.iterations(), lbfgs.run.iterations())
    np.testing.assert_array_equal(scan.run.evaluations(), lbfgs.run.evaluations())
    for got, want in zip(scan.history, lbfgs.history, strict=True):
        np.testing.assert_allclose(got["total"], want["total"], rtol=LOSS_RTOL)


def test_scan_advance_honours_max_calls(scan):
    """Fails today: in scan mode ``advance(max_calls)`` ignores max_calls and runs a chunk."""
    assert scan.max_calls[2] == 1
    assert scan.calls[2] == 1, f"advance(max_calls=1) made {scan.calls[2]} calls"


@pytest.mark.parametrize("loop", ["lbfgs", "adam", "scan"])
def test_a_second_chunk_compiles_nothing(request, loop):
    record = request.getfixturevalue(loop)
    assert record.compiles[0] >= 1  # the capture works: the first chunk compiled the step
    assert len(record.compiles) >= 3
    later = [c for c, m in zip(record.compiles[1:], record.max_calls[1:], strict=True) if m is None]
    assert later and all(c == 0 for c in later), record.compiles


def test_params_are_arguments_not_constants(problem, lbfgs):
    run = lbfgs.run
    args = (run.xs, run.states, problem.params, problem.targets, run.weights, jnp.int32(10))
    n_params = len(jax.tree.leaves(problem.params))
    for make, extra in ((engine.batched_step, ()), (engine.run_chunk, (jnp.int32(5),))):
        lowered = make(static_config(CFG), Objective.from_config(CFG), None).lower(*args, *extra)
        assert len(jax.tree.leaves(lowered.args_info)) >= n_params + 2
        size = len(lowered.as_text())
        assert size < 1_000_000, f"{make.__name__}: {size} characters of HLO"
    # The check bites: the same step with the params closed over bakes them in (~4.5 MB here).
    step = jax.vmap(make_step(CFG), in_axes=(0, 0, None, None, 0, None))
    baked = jax.jit(lambda xs, st, t, w, n: step(xs, st, problem.params, t, w, n))
    size = len(baked.lower(*args[:2], *args[3:]).as_text())
    assert size > 1_000_000, size


# ------------------------------------------------------------------ counting and the pixel range


def test_iterations_and_evaluations_are_counted(lbfgs, adam):
    for k in range(CFG.variants):
        hist = lbfgs.history[k]
        its, evs = lbfgs.run.iterations()[k], lbfgs.run.evaluations()[k]
        assert its == CFG.iterations and evs >= its + 1
        np.testing.assert_array_equal(hist["iteration"], np.arange(CFG.iterations + 1))
        assert hist["evaluations"][0] == 1 and hist["evaluations"][-1] == evs
        assert np.all(np.diff(hist["evaluations"]) >= 1)
    for k in range(ADAM.variants):
        hist = adam.history[k]
        assert adam.run.iterations()[k] == adam.run.evaluations()[k] == ADAM.iterations
        np.testing.assert_array_equal(hist["iteration"], np.arange(ADAM.iterations))
        np.testing.assert_array_equal(hist["evaluations"], np.arange(1, ADAM.iterations + 1))
    assert sum(adam.calls) == ADAM.iterations  # Adam stops exactly at the limit


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_project_keeps_pixels_in_the_unit_range(request, optimizer):
    record = request.getfixturevalue(optimizer)
    assert record.run.cfg.range_mode == "project"
    assert len(record.lows) >= 3
    assert min(record.lows) >= 0.0 and max(record.highs) <= 1.0
    # Not vacuous: the optimiser pushes pixels onto the bounds.
    assert min(record.lows) == 0.0 or max(record.highs) == 1.0


def test_value_and_grad_is_float64_under_x64(x64, vgg_params):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), vgg_params)
    cfg = StyleConfig(size=24, content_layers=("conv2_1",), style_layers=(), style_weight=0.0)
    x = jnp.asarray(np.random.default_rng(0).random((16, 16, 3)))
    feats = extract_features(params, x, ("conv2_1",))
    targets = Targets({"conv2_1": feats["conv2_1"] * 0.5}, {})
    weights = LossWeights.from_config(cfg)
    (total, _), g = make_value_and_grad(Objective.from_config(cfg))(x, params, targets, weights)
    assert total.dtype == jnp.float64 and g.dtype == jnp.float64


def test_adam_makes_progress_at_a_huge_style_weight(random_params):
    """Issue 13, defect 4: at beta 1e20 the gradient's entries passed 1.8e19, g^2 overflowed
    float32, Adam's v became Inf and every update 0: the starting noise came back unchanged,
    the same bytes for beta 1e17 to 1e25. A power of two fixed at the first step scales such a
    gradient down (and leaves ordinary ones alone, bit for bit)."""
    from jaxnst import stylize

    rng = np.random.default_rng(0)
    content = rng.uniform(size=(24, 32, 3)).astype(np.float32)
    style = rng.uniform(size=(32, 32, 3)).astype(np.float32)
    cfg = ADAM.replace(size=32, iterations=5, variants=1, style_weight=1e20)
    result = stylize(content, style, cfg, params=random_params)
    start = StyleRun(make_problem(content, style, cfg, random_params), cfg).images()[0]
    total = result.history[0]["total"]
    assert np.isfinite(total).all() and total[-1] < 0.5 * total[0]
    assert np.abs(result.images[0].astype(int) - np.round(start * 255)).max() > 2
