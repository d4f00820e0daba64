"""Losses: each formula against independent NumPy, gradients against finite differences in float64.

The float64 gradient checks run through the real VGG19 on 16 px images. Each analytic directional
derivative <grad, d> is compared with the central difference (f(x + eps d) - f(x - eps d)) / 2 eps
along a few random directions and a few single pixels; ``fd_rel_error`` is the checker, and the same
checker is shown to reject deliberately wrong gradients.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxnst import guidance, losses
from jaxnst.config import LossWeights, StyleConfig
from jaxnst.losses import (
    Objective,
    Targets,
    content_loss,
    gram,
    guided_style_losses,
    loss_parts,
    style_layer_loss,
    tv_loss,
)

obj = Objective.from_config

EPS = 1e-6  # in [0, 1] pixel units; 1e-4..1e-5 straddle ReLU/max-pool kinks (STYLE.md snippet 8)
FD_TOL = 1e-6  # relative error of <grad, d> that float64 reaches through the real VGG19
FD_SIZE = 16  # px: conv5_1 is 1 x 1 here, so every paper layer is still exercised
FD_CFG = StyleConfig(size=FD_SIZE, tv_weight=1e-2)  # the paper's layers, a tv term to check too
SHALLOW = StyleConfig(
    size=16, content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1", "conv3_1")
)


# ------------------------------------------------------------------ independent NumPy float64


def np_gram(feats: np.ndarray) -> np.ndarray:
    f = np.asarray(feats, np.float64).reshape(-1, feats.shape[-1])
    return f.T @ f


def np_style_layer_loss(feats: np.ndarray, target_gram: np.ndarray) -> float:
    h, w, n = feats.shape
    m = h * w
    return float(np.sum((np_gram(feats) - target_gram) ** 2) / (4.0 * n**2 * m**2))


def np_content_loss(feats: np.ndarray, target: np.ndarray) -> float:
    return float(0.5 * np.sum((np.asarray(feats, np.float64) - target) ** 2))


def np_tv_loss(image: np.ndarray) -> float:
    x = np.asarray(image, np.float64) * 255.0
    return float(np.sum(np.diff(x, axis=0) ** 2) + np.sum(np.diff(x, axis=1) ** 2))


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


def test_gram_is_features_transposed_times_features(rng):
    feats = rng.standard_normal((5, 7, 6)).astype(np.float32)
    g = np.asarray(gram(jnp.asarray(feats)))
    assert g.shape == (6, 6)
    np.testing.assert_allclose(g, np_gram(feats), rtol=1e-5, atol=1e-5)


def test_style_layer_loss_is_the_papers_eq4(rng):
    feats = rng.uniform(0, 3, (6, 5, 4)).astype(np.float32)
    target = np_gram(rng.uniform(0, 3, (6, 5, 4)))
    got = float(style_layer_loss(jnp.asarray(feats), jnp.asarray(target, jnp.float32)))
    # sum((G - A)^2) / (4 N^2 M^2) with N = 4 filters and M = 30 positions
    np.testing.assert_allclose(got, np_style_layer_loss(feats, target), rtol=1e-5)
    # Scaling the features by s scales G - A (with A scaled alike) by s^2, E_l by s^4.
    scaled = float(style_layer_loss(jnp.asarray(2 * feats), jnp.asarray(4 * target, jnp.float32)))
    np.testing.assert_allclose(scaled, 16 * got, rtol=1e-5)


def test_content_loss_is_half_the_squared_error(rng):
    feats = rng.standard_normal((4, 3, 8)).astype(np.float32)
    target = rng.standard_normal((4, 3, 8)).astype(np.float32)
    got = float(content_loss(jnp.asarray(feats), jnp.asarray(target)))
    np.testing.assert_allclose(got, np_content_loss(feats, target), rtol=1e-6)
    assert float(content_loss(jnp.asarray(feats), jnp.asarray(feats))) == 0.0


def test_tv_loss_matches_numpy(rng):
    image = rng.uniform(size=(9, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(float(tv_loss(jnp.asarray(image))), np_tv_loss(image), rtol=1e-5)
    assert float(tv_loss(jnp.full((9, 7, 3), 0.3))) == 0.0


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


def test_check_grads_on_each_loss(x64, rng):
    feats = jnp.asarray(rng.uniform(0, 2, (4, 5, 3)))
    other = jnp.asarray(rng.uniform(0, 2, (4, 5, 3)))
    target_gram = jnp.asarray(np_gram(np.asarray(other)))
    both = ("fwd", "rev")  # eager is cheaper than jit here, except for tv's slicing
    check_grads(gram, (feats,), order=2, modes=both)
    check_grads(lambda f: style_layer_loss(f, target_gram), (feats,), order=2, modes=both)
    check_grads(lambda f: content_loss(f, other), (feats,), order=2, modes=both)
    check_grads(jax.jit(tv_loss), (jnp.asarray(rng.uniform(size=(6, 5, 3))),), 2, modes=both)
    assert gram(feats).dtype == jnp.float64  # the checks above really ran in float64


def test_gram_gradient_is_one_product(rng):
    """The style loss's gradient through gram() costs one (M, N) x (N, N) product, where plain
    autodiff of f.T @ f makes two: counted in the compiled programs, the plain one as control."""
    feats = jnp.asarray(rng.uniform(size=(6, 5, 4)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(4, 4)), jnp.float32)

    def dots(gram_fn):
        def loss(f):
            return jnp.sum((gram_fn(f) - target) ** 2)

        text = jax.jit(jax.grad(loss)).lower(feats).compile().as_text()
        return len(re.findall(r" dot\(", text))

    def plain(f):
        f = f.reshape(-1, f.shape[-1])
        return f.T @ f

    assert dots(plain) == 3  # G, then F g and F g^T
    assert dots(gram) == 2  # G, then F (g + g^T)
    np.testing.assert_allclose(
        jax.grad(lambda f: jnp.sum((gram(f) - target) ** 2))(feats),
        jax.grad(lambda f: jnp.sum((plain(f) - target) ** 2))(feats),
        rtol=1e-5,
    )


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


def feats_of(seed: int, shape=(6, 5, 4)) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def halves(h: int = 18, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1.0
    return left, 1.0 - left


def half_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    return mask


# ----------------------------------------------------------------------------- guided Grams


def test_guided_gram_with_an_all_ones_mask_is_the_gram():
    feats = feats_of(0)
    ones = jnp.ones(feats.shape[:2])
    np.testing.assert_allclose(losses.guided_gram(feats, ones), gram(feats), rtol=1e-6)
    # ... and the guided loss is the unguided one, with targets normalised by the area.
    style = feats_of(1)
    target = losses.guided_style_grams({"conv1_1": style}, {"conv1_1": ones})["conv1_1"]
    np.testing.assert_allclose(target, gram(style) / 30, rtol=1e-6)
    np.testing.assert_allclose(
        losses.guided_style_layer_loss(feats, target, ones),
        style_layer_loss(feats, gram(style)),
        rtol=1e-5,
    )


def test_guided_loss_gradient_is_zero_outside_the_mask():
    feats, mask = feats_of(2), jnp.asarray(half_mask(6, 5))
    target = losses.normalized_guided_gram(feats_of(3), jnp.ones((6, 5)))
    grad = jax.grad(losses.guided_style_layer_loss)(feats, target, mask)
    assert np.all(np.asarray(grad)[:, 2:] == 0.0)  # exactly, not approximately
    assert np.all(np.abs(np.asarray(grad)[:, :2]) > 0)


def test_regions_of_different_sizes_are_balanced():
    # The output's region (left half, 4x3) repeats the whole style image's feature vectors twice:
    # the same statistics per position, twice the area, next to an unrelated right half.
    # Normalising each side by its own area sees a perfect match; M = h * w would not.
    style = feats_of(4, (2, 3, 4))
    feats = jnp.concatenate([jnp.tile(style, (2, 1, 1)), feats_of(5, (4, 3, 4))], axis=1)
    mask = jnp.asarray(half_mask(4, 6))
    target = losses.guided_style_grams({"l": style}, {"l": jnp.ones((2, 3))})["l"]
    loss = losses.guided_style_layer_loss(feats, target, mask)
    np.testing.assert_allclose(loss, 0.0, atol=1e-12)
    unbalanced = jnp.sum((losses.guided_gram(feats, mask) / 24 - target) ** 2)
    assert unbalanced > 1e-3


def test_an_empty_region_contributes_zero_and_finite_gradients():
    feats, zero = feats_of(5), jnp.zeros((6, 5))
    target = losses.normalized_guided_gram(feats_of(6), jnp.ones((6, 5)))
    loss, grad = jax.value_and_grad(losses.guided_style_layer_loss)(feats, target, zero)
    assert loss == 0.0 and np.all(np.asarray(grad) == 0.0)
    np.testing.assert_array_equal(losses.normalized_guided_gram(feats, zero), 0.0)


def test_guided_style_losses_sum_stacked_regions():
    mask = half_mask(6, 5)
    masks = [mask, 1.0 - mask]
    feats, style = {"a": feats_of(7)}, {"a": feats_of(8)}
    targets = [losses.guided_style_grams(style, {"a": m}) for m in masks]
    pairs = zip(targets, masks, strict=True)
    # each region weighs by the share of the layer it covers (both halves: 1/2 here)
    shares = [float(np.sum(m**2)) / m.size for m in masks]
    want = sum(
        s * losses.guided_style_layer_loss(feats["a"], t["a"], m)
        for s, (t, m) in zip(shares, pairs, strict=True)
    )
    stacked = guidance.stack_regions([{"a": m} for m in masks])
    got = jax.jit(losses.guided_style_losses, static_argnums=3)(
        feats, guidance.stack_regions(targets), stacked, ("a",)
    )
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_guided_loss_vmaps_over_per_variant_masks(random_params):
    """Composability: variants with different masks in one vmap equal one call per mask."""
    feats = {"conv1_1": jax.random.normal(jax.random.key(0), (18, 24, 64))}
    target = {"conv1_1": (gram(feats["conv1_1"]) / (18 * 24))[None] * 1.5}
    left, right = halves()
    top = np.zeros_like(left)
    top[:9] = 1.0
    masks = jnp.stack([left, right, top])[:, None]  # (variants, R=1, h, w)
    fn = jax.jit(jax.vmap(lambda m: guided_style_losses(feats, target, {"conv1_1": m},
                                                          ("conv1_1",))))  # fmt: skip
    batched = fn(masks)
    for k in range(3):
        one = guided_style_losses(feats, target, {"conv1_1": masks[k]}, ("conv1_1",))
        np.testing.assert_allclose(batched[k], one, rtol=1e-6)
    assert len(set(np.asarray(batched[:, 0]).round(6))) == 3
