"""Beyond one device and one resolution: sharding, coarse-to-fine, remat, the memory estimate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.config import LossWeights
from jaxnst.losses import Targets
from jaxnst.memory import estimate_memory, largest_fitting_size
from jaxnst.solvers import make_value_and_grad
from jaxnst.stylize import StyleRun, make_problem
from jaxnst.vgg import extract_features

ROOT = Path(__file__).resolve().parent.parent

SMALL = StyleConfig(size=24, iterations=3, chunk=2, style_layers=("conv1_1", "conv2_1"),
                    content_layers=("conv2_1",))  # fmt: skip


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)


SHARDED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax, jaxnst
    rng = np.random.default_rng(1)
    c, s = rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)
    cfg = jaxnst.StyleConfig(size=24, iterations=3, chunk=2, variants=5,
                             style_layers=("conv1_1", "conv2_1"), content_layers=("conv2_1",))
    out = {"devices": len(jax.devices())}
    for opt in ("adam", "lbfgs"):
        sharded = jaxnst.stylize(c, s, cfg, optimizer=opt)
        single = jaxnst.stylize(c, s, cfg, optimizer=opt, devices=1)
        run = jaxnst.StyleRun(jaxnst.make_problem(c, s, cfg), cfg)
        out[opt] = {
            "mesh": run.mesh.size if run.mesh is not None else 1,
            "padded": int(run.xs.shape[0]),
            "pixels": int(np.abs(sharded.images.astype(int) - single.images.astype(int)).max()),
            "loss": [[h["total"][-1] for h in r.history] for r in (sharded, single)],
        }
    masks = [np.zeros((24, 19), np.float32) for _ in range(5)]  # 5 variants, 5 regions
    for k, m in enumerate(masks):
        m[:, : 4 * (k + 1)] = 1.0
    vm = [[m] for m in masks]
    sharded = jaxnst.stylize(c, s, cfg, optimizer="adam", variant_masks=vm)
    single = jaxnst.stylize(c, s, cfg, optimizer="adam", variant_masks=vm, devices=1)
    out["masks"] = {
        "pixels": int(np.abs(sharded.images.astype(int) - single.images.astype(int)).max()),
        "loss": [[h["total"][-1] for h in r.history] for r in (sharded, single)],
    }
    print(json.dumps(out))
    """
)


def test_sharded_variants_equal_single_device_variants():
    """5 variants over 4 forced CPU devices (padded to 8) match the one-device run, one by one."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=str(ROOT))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    for opt in ("adam", "lbfgs"):
        res = out[opt]
        assert res["mesh"] == 4 and res["padded"] == 8  # 5 variants padded to 2 per device
        assert res["pixels"] <= 1  # uint8 images equal up to float32 rounding
        np.testing.assert_allclose(res["loss"][0], res["loss"][1], rtol=1e-4)
    # each variant its own regions (padded by repeating the last variant's masks)
    assert out["masks"]["pixels"] <= 1
    np.testing.assert_allclose(out["masks"]["loss"][0], out["masks"]["loss"][1], rtol=1e-4)
    assert len(set(np.round(out["masks"]["loss"][0], 3))) == 5  # the regions differ


def test_coarse_to_fine_runs_each_scale_from_the_last(images):
    content, style = images
    cfg = SMALL.replace(size=48, scales=(24, 48), scale_iterations=(3, 2), variants=2)
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


def test_remat_gives_the_same_features_and_gradients(vgg_params):
    x = jax.random.uniform(jax.random.key(0), (32, 32, 3))
    layers = ("conv1_1", "conv3_1", "conv5_1")

    def loss(x, remat):
        feats = extract_features(vgg_params, x, layers, remat=remat)
        return sum(jnp.sum(f**2) for f in feats.values())

    plain, remat = jax.grad(loss)(x, False), jax.grad(loss)(x, True)
    np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-3 * float(jnp.abs(plain).max()))
    text = str(jax.make_jaxpr(lambda x: jax.grad(loss)(x, True))(x))
    assert "remat" in text or "checkpoint" in text  # the backward pass really recomputes


@pytest.mark.parametrize("size", [64, 256])
def test_memory_estimate_tracks_xla_plan(images, vgg_params, size):
    """The estimate is within 10% of XLA's compiled memory plan for one step (CPU): at 64 px
    the parameters dominate, at 256 px the activations."""
    content, style = images
    for optimizer in ("adam", "lbfgs"):
        cfg = StyleConfig(size=size, optimizer=optimizer)
        problem = make_problem(content, style, cfg, params=vgg_params)
        run = StyleRun(problem, cfg)
        m = run.step.lower(*run._args()).compile().memory_analysis()
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


def test_a_second_run_of_the_same_shapes_compiles_nothing(images, vgg_params):
    content, style = images
    problem = make_problem(content, style, SMALL, params=vgg_params)
    first = StyleRun(problem, SMALL)
    first.compile()
    second = StyleRun(problem, SMALL)
    assert second.compile() < 0.5 * first.timings["compile"] + 0.05
    assert second.step is first.step


def test_value_and_grad_is_float64_under_x64(x64, vgg_params):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), vgg_params)
    cfg = SMALL.replace(style_layers=(), style_weight=0.0)
    x = jnp.asarray(np.random.default_rng(0).random((16, 16, 3)))
    feats = extract_features(params, x, ("conv2_1",))
    targets = Targets({"conv2_1": feats["conv2_1"] * 0.5}, {})
    weights = LossWeights.from_config(cfg)
    (total, _), g = make_value_and_grad(cfg)(x, params, targets, weights)
    assert total.dtype == jnp.float64 and g.dtype == jnp.float64


def test_style_grams_are_brought_to_the_outputs_positions(images, vgg_params):
    """A style image of another size: A_l = G_l(style) * M_l(output) / M_l(style)."""
    from jaxnst.losses import features, gram
    from jaxnst.stylize import layer_positions

    content, style = images
    cfg = SMALL.replace(size=32, style_scale=1.5)
    problem = make_problem(content, style, cfg, params=vgg_params)
    (style_img,) = problem.styles
    assert max(style_img.shape[:2]) == 48
    feats = features(vgg_params, jnp.asarray(style_img), cfg)
    m_out = layer_positions(problem.content.shape[:2], cfg)
    for layer in cfg.style_layers:
        h, w, _ = feats[layer].shape
        assert layer_positions(style_img.shape[:2], cfg)[layer] == h * w
        want = gram(feats[layer]) * m_out[layer] / (h * w)
        atol = 1e-5 * float(jnp.abs(want).max())  # jit vs eager rounding
        np.testing.assert_allclose(problem.targets.style[layer], want, rtol=1e-4, atol=atol)


def test_a_run_with_other_loss_weights_or_seed_compiles_nothing(images, vgg_params):
    """Weights, seed and iterations are traced: they never change the compiled program."""
    content, style = images
    problem = make_problem(content, style, SMALL, params=vgg_params)
    first = StyleRun(problem, SMALL)
    first.compile()
    other = SMALL.replace(style_weight=7.0, content_weight=0.5, seed=9, iterations=5)
    second = StyleRun(problem, other)
    second.compile()
    assert second.step is first.step


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
