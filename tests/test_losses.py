"""Losses: each formula against independent NumPy, gradients against finite differences in float64.

The float64 gradient checks run through the real VGG19 on 16 px images. Each analytic directional
derivative <grad, d> is compared with the central difference (f(x + eps d) - f(x - eps d)) / 2 eps
along a few random directions and a few single pixels; ``fd_rel_error`` is the checker, and the same
checker is shown to reject deliberately wrong gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import np_content_loss, np_gram, np_style_layer_loss, np_tv_loss

from jaxnst import losses
from jaxnst.config import LossWeights, StyleConfig
from jaxnst.losses import Objective, Targets, loss_parts
from jaxnst.terms import content_loss, gram

obj = Objective.from_config

EPS = 1e-6  # in [0, 1] pixel units; 1e-4..1e-5 straddle ReLU/max-pool kinks (STYLE.md snippet 8)
FD_TOL = 1e-6  # relative error of <grad, d> that float64 reaches through the real VGG19
FD_SIZE = 16  # px: conv5_1 is 1 x 1 here, so every paper layer is still exercised
# the paper's layers and its literal objective, a tv term to check too
FD_CFG = StyleConfig(size=FD_SIZE, tv_weight=1e-2, objective="paper")
SHALLOW = StyleConfig(size=16, content_layers=("conv2_1",), objective="paper",
                      style_layers=("conv1_1", "conv2_1", "conv3_1"))  # fmt: skip


# ------------------------------------------------------------------ the finite-difference checker


def fd_rel_error(f, grads, x, directions, eps: float = EPS) -> np.ndarray:
    """Worst relative error of <grad, d> against a central difference, over ``directions``.

    ``f(x)`` returns a scalar or a vector of P values; ``grads`` is then x-shaped or (P, *x.shape).
    Returns (P,) errors |fd - <g, d>| / max(|fd|, |<g, d>|).
    """
    grads = np.asarray(grads, np.float64).reshape(-1, *np.shape(x))
    worst = np.zeros(grads.shape[0])
    for d in directions:
        d = np.asarray(d, np.float64)
        plus = np.atleast_1d(np.asarray(f(x + eps * d), np.float64))
        minus = np.atleast_1d(np.asarray(f(x - eps * d), np.float64))
        fd = (plus - minus) / (2.0 * eps)
        analytic = np.tensordot(grads, d, axes=d.ndim)
        scale = np.maximum(np.maximum(np.abs(fd), np.abs(analytic)), np.finfo(np.float64).tiny)
        worst = np.maximum(worst, np.abs(fd - analytic) / scale)
    return worst


def fd_directions(shape, rng, n_random: int = 3, n_pixels: int = 4) -> list[np.ndarray]:
    """A few Gaussian directions and a few single-pixel (single-channel) ones."""
    out = [rng.standard_normal(shape) for _ in range(n_random)]
    for _ in range(n_pixels):
        d = np.zeros(shape)
        d[tuple(rng.integers(s) for s in shape)] = 1.0
        out.append(d)
    return out


# ------------------------------------------------------------------ formulas against NumPy


def test_losses_honour_float64_under_x64(x64, random_params, rng):
    """Under x64, float64 features give float64 losses (snippet 8 checks gradients in float64).

    Fails today: losses.gram and losses.content_loss cast to float32 and losses.features runs the
    network in float32, so a float64 gradient check can only see float32 rounding.
    """
    feats = rng.standard_normal((5, 4, 3))
    target = rng.standard_normal((5, 4, 3))
    g = gram(jnp.asarray(feats))
    np.testing.assert_allclose(np.asarray(g), np_gram(feats), rtol=1e-12, atol=1e-12)
    c = content_loss(jnp.asarray(feats), jnp.asarray(target))
    np.testing.assert_allclose(float(c), np_content_loss(feats, target), rtol=1e-12)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), random_params)
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)))
    feats = losses.features(params, image, obj(SHALLOW))
    assert {k: v.dtype for k, v in feats.items()} == {k: jnp.float64 for k in feats}


# ------------------------------------------------------------------ float64 gradients, real VGG19

_FD_CACHE: dict[str, tuple] = {}


def _fd_problem(vgg_params, pooling: str):
    """Jitted parts(x) -> (total, content, tv, E_l...) and its Jacobian, in float64 (cached)."""
    if pooling in _FD_CACHE:
        return _FD_CACHE[pooling]
    cfg = FD_CFG.replace(pooling=pooling)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), vgg_params)
    content = jnp.asarray(rng.uniform(size=(FD_SIZE, FD_SIZE, 3)))
    style = jnp.asarray(rng.uniform(size=(FD_SIZE, FD_SIZE, 3)))
    targets = Targets(
        jax.jit(losses.content_targets, static_argnums=2)(params, content, obj(cfg)),
        jax.jit(losses.style_grams, static_argnums=2)(params, style, obj(cfg)),
    )
    weights = jax.tree.map(lambda a: a.astype(jnp.float64), LossWeights.from_config(cfg))

    def parts(x, params, targets, weights):
        p = loss_parts(x, params, targets, weights, obj(cfg))
        return jnp.concatenate([jnp.stack([p.total, p.content, p.tv]), p.style_layers])

    fn, jac = jax.jit(parts), jax.jit(jax.jacrev(parts))
    seen: dict[bytes, np.ndarray] = {}

    def f(y):  # memoised: the wrong-gradient test reuses the same finite differences
        key = np.asarray(y, np.float64).tobytes()
        if key not in seen:
            seen[key] = np.asarray(fn(jnp.asarray(y), params, targets, weights))
        return seen[key]

    x = jnp.asarray(rng.uniform(0.05, 0.95, (FD_SIZE, FD_SIZE, 3)))
    grads = np.asarray(jac(x, params, targets, weights))
    names = ["total", "content", "tv", *(f"style/{k}" for k in cfg.style_layers)]
    out = (f, grads, np.asarray(x), names, cfg, params, targets)
    _FD_CACHE[pooling] = out
    return out


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_gradients_match_finite_differences(x64, vgg_params, pooling):
    f, grads, x, names, _, _, _ = _fd_problem(vgg_params, pooling)
    assert grads.dtype == np.float64
    values = np.asarray(f(x))
    assert np.all(values > 0), dict(zip(names, values, strict=True))
    directions = fd_directions(x.shape, np.random.default_rng(2))
    errors = fd_rel_error(f, grads, x, directions)
    report = ", ".join(f"{n} {e:.1e}" for n, e in zip(names, errors, strict=True))
    print(f"\n{pooling} pooling, eps {EPS:g}: relative errors {report}")
    assert np.all(errors < FD_TOL), report


def test_checker_rejects_wrong_gradients(x64, vgg_params):
    f, grads, x, names, cfg, params, _ = _fd_problem(vgg_params, "max")
    directions = fd_directions(x.shape, np.random.default_rng(2))
    wrong = grads.copy()
    # The content gradient without the 1/2 of eq. 1: twice too large.
    wrong[names.index("content")] *= 2.0

    # A style loss on the Gram over positions (F F^T, M x M) instead of over filters (F^T F).
    layer = "conv2_1"
    one = cfg.replace(content_layers=(), style_layers=(layer,))
    style_image = jnp.asarray(np.random.default_rng(1).uniform(size=x.shape))

    def position_style_loss(y):
        feats = losses.features(params, y, obj(one))[layer]
        ref = losses.features(params, style_image, obj(one))[layer]
        h, w, n = feats.shape
        fm, rm = feats.reshape(h * w, n), ref.reshape(h * w, n)
        return jnp.sum((fm @ fm.T - rm @ rm.T) ** 2) / (4.0 * n**2 * (h * w) ** 2)

    wrong[names.index(f"style/{layer}")] = jax.jit(jax.grad(position_style_loss))(jnp.asarray(x))
    errors = dict(zip(names, fd_rel_error(f, wrong, x, directions), strict=True))
    assert errors["content"] > 0.4, errors  # exactly 0.5 for a factor of 2
    assert errors[f"style/{layer}"] > 0.1, errors
    assert all(e < FD_TOL for n, e in errors.items() if n not in ("content", f"style/{layer}"))

    # The right formulas through the wrong network: avg-pool gradients for a max-pool loss.
    _, avg_grads, _, avg_names, _, _, _ = _fd_problem(vgg_params, "avg")
    assert avg_names == names
    pooled = dict(zip(names, fd_rel_error(f, avg_grads, x, directions), strict=True))
    assert pooled["style/conv1_1"] < FD_TOL  # before the first pooling the networks agree
    assert all(e > 1e-2 for n, e in pooled.items() if n not in ("tv", "style/conv1_1")), pooled
    style_error, total_error = errors[f"style/{layer}"], pooled["total"]
    print(
        f"\nwrong gradients rejected: 2x content {errors['content']:.2f}, "
        f"position Gram {style_error:.2f}, avg-pool for max-pool (total) {total_error:.2f}"
    )


# ------------------------------------------------------------------ jax.test_util.check_grads


# ------------------------------------------------------------------ how the parts combine


@pytest.fixture(scope="module")
def shallow_targets(random_params):
    rng = np.random.default_rng(3)
    content = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    style = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    cfg = SHALLOW.replace(tv_weight=1.0)
    return Targets(
        losses.content_targets(random_params, content, obj(cfg)),
        losses.style_grams(random_params, style, obj(cfg)),
    )


def test_loss_parts_combine_as_in_the_paper(random_params, shallow_targets, rng):
    cfg = SHALLOW.replace(
        content_weight=2.0, style_weight=30.0, tv_weight=0.5, style_layer_weights=(1.0, 0.25, 3.0)
    ).validate()
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    weights = LossWeights.from_config(cfg)
    parts = loss_parts(image, random_params, shallow_targets, weights, obj(cfg))
    assert parts._fields == ("total", "content", "style", "style_layers", "tv", "temporal")
    assert parts.temporal is None  # no temporal targets: no temporal term
    assert parts.style_layers.shape == (3,)
    feats = {k: np.asarray(v) for k, v in losses.features(random_params, image, obj(cfg)).items()}
    want_layers = [
        np_style_layer_loss(feats[k], shallow_targets.style[k]) for k in cfg.style_layers
    ]
    np.testing.assert_allclose(parts.style_layers, want_layers, rtol=1e-4)
    want_content = np_content_loss(feats["conv2_1"], shallow_targets.content["conv2_1"])
    np.testing.assert_allclose(parts.content, want_content, rtol=1e-4)
    np.testing.assert_allclose(parts.tv, np_tv_loss(np.asarray(image)), rtol=1e-5)
    style = 1.0 * want_layers[0] + 0.25 * want_layers[1] + 3.0 * want_layers[2]
    np.testing.assert_allclose(parts.style, style, rtol=1e-4)
    total = 2.0 * want_content + 30.0 * style + 0.5 * np_tv_loss(np.asarray(image))
    np.testing.assert_allclose(parts.total, total, rtol=1e-4)
    assert all(float(v) > 0 for v in (parts.content, parts.tv, *parts.style_layers))


def test_style_layer_weights_default_to_one_over_l(random_params, shallow_targets, rng):
    cfg = SHALLOW.validate()
    np.testing.assert_allclose(cfg.layer_weights(), [1 / 3] * 3, rtol=1e-7)
    np.testing.assert_allclose(StyleConfig().layer_weights(), [0.2] * 5, rtol=1e-7)  # paper 1/5
    weights = LossWeights.from_config(cfg)
    np.testing.assert_allclose(weights.style_layers, [1 / 3] * 3, rtol=1e-7)
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    parts = loss_parts(image, random_params, shallow_targets, weights, obj(cfg))
    np.testing.assert_allclose(parts.style, np.mean(np.asarray(parts.style_layers)), rtol=1e-6)
    # tv_weight is 0 by default: tv is reported (unweighted) but adds nothing to the total
    assert float(parts.tv) > 0.0
    np.testing.assert_allclose(
        parts.total, weights.content * parts.content + weights.style * parts.style, rtol=1e-6
    )


# ----------------------------------------------------------------------------- guided Grams


# ------------------------------------------------------------------ the normalised objective
def test_normalized_content_and_tv_are_per_position_times_a_512x384_image(random_params, rng):
    """The content and TV sums scale with M_ref / M: the same per-pixel balance at any size,
    and exactly the paper's objective for a 512 x 384 px image."""
    norm = obj(SHALLOW.replace(objective="normalized"))
    assert losses.size_factor("conv2_1", (384, 512), norm) == 1.0
    assert losses.size_factor("pixels", (384, 512), norm) == 1.0
    assert losses.size_factor("conv4_2", (192, 256), norm) == 4.0  # a quarter of the positions
    assert losses.size_factor("conv4_2", (512, 384), norm) == 1.0  # the area counts, not aspect
    assert losses.size_factor("conv4_2", (192, 256), obj(SHALLOW)) == 1.0  # paper: as written
    content = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    targets = Targets(losses.content_targets(random_params, content, norm), {
        k: jnp.zeros((w, w)) for k, w in (("conv1_1", 64), ("conv2_1", 128), ("conv3_1", 256))
    })  # fmt: skip
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    weights = LossWeights.from_config(SHALLOW)
    paper = loss_parts(image, random_params, targets, weights, obj(SHALLOW))
    normed = loss_parts(image, random_params, targets, weights, norm)
    np.testing.assert_allclose(normed.content, paper.content * 512 * 384 / 4 / 64, rtol=1e-6)
    np.testing.assert_allclose(normed.tv, paper.tv * 512 * 384 / 256, rtol=1e-6)
    np.testing.assert_allclose(normed.style_layers, paper.style_layers, rtol=1e-6)  # per position


def test_target_normalisation_weighs_every_style_layer_by_its_target(random_params, rng):
    cfg = SHALLOW.replace(style_layer_norm="target")
    style = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    targets = Targets({"conv2_1": jnp.zeros((8, 8, 128))},
                      losses.style_grams(random_params, style, obj(cfg)))  # fmt: skip
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    weights = LossWeights.from_config(cfg)
    plain = loss_parts(image, random_params, targets, weights, obj(SHALLOW))
    normed = loss_parts(image, random_params, targets, weights, obj(cfg))
    np.testing.assert_allclose(normed.style_layers, plain.style_layers)  # E_l themselves kept
    feats = losses.features(random_params, image, obj(cfg))
    t = np.asarray(losses.target_magnitudes(targets, feats, cfg.style_layers))
    want = np.sum(np.mean(t) / t * np.asarray(plain.style_layers)) / 3
    np.testing.assert_allclose(normed.style, want, rtol=1e-5)
    zero = loss_parts(jnp.zeros_like(image), random_params, targets, weights, obj(cfg))
    assert float(zero.style) > 0  # an all-black image is far from every target


def test_the_gate_keeps_the_photo_outside_the_masks(random_params, rng):
    photo = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    gate = jnp.zeros((16, 16, 1)).at[:, :8].set(1.0)
    targets = Targets({"conv1_1": jnp.zeros((16, 16, 64))}, {}, gate=gate, anchor=photo)
    y = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    x = losses.gate_image(y, targets)
    np.testing.assert_array_equal(x[:, 8:], photo[:, 8:])
    np.testing.assert_allclose(x[:, :8], y[:, :8], atol=1e-7)  # c + 1 (y - c), rounded
    cfg = SHALLOW.replace(content_layers=("conv1_1",), tv_weight=1.0, style_layers=(),
                          style_weight=0.0)  # fmt: skip
    grad = jax.grad(lambda y: loss_parts(y, random_params, targets, LossWeights.from_config(cfg),
                                         obj(cfg)).total)(y)  # fmt: skip
    assert float(jnp.max(jnp.abs(grad[:, 9:]))) == 0.0 and float(jnp.max(jnp.abs(grad))) > 0
