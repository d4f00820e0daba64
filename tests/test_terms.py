"""The formulas of the objective (jaxnst.terms) against independent NumPy float64 references and
finite differences: Gram, content, style, TV, guided (spatial control) and temporal (video)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from reference import np_content_loss, np_gram, np_style_layer_loss, np_tv_loss

from jaxnst import guidance, terms
from jaxnst.flow import warp
from jaxnst.terms import (
    content_loss,
    gram,
    guided_style_losses,
    long_term_loss,
    style_layer_loss,
    temporal_loss,
    tv_loss,
)


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


def test_guided_gram_with_an_all_ones_mask_is_the_gram():
    feats = feats_of(0)
    ones = jnp.ones(feats.shape[:2])
    np.testing.assert_allclose(terms.guided_gram(feats, ones), gram(feats), rtol=1e-6)
    # ... and the guided loss is the unguided one, with targets normalised by the area.
    style = feats_of(1)
    target = terms.guided_style_grams({"conv1_1": style}, {"conv1_1": ones})["conv1_1"]
    np.testing.assert_allclose(target, gram(style) / 30, rtol=1e-6)
    np.testing.assert_allclose(
        terms.guided_style_layer_loss(feats, target, ones),
        style_layer_loss(feats, gram(style)),
        rtol=1e-5,
    )


def test_guided_loss_gradient_is_zero_outside_the_mask():
    feats, mask = feats_of(2), jnp.asarray(half_mask(6, 5))
    target = terms.normalized_guided_gram(feats_of(3), jnp.ones((6, 5)))
    grad = jax.grad(terms.guided_style_layer_loss)(feats, target, mask)
    assert np.all(np.asarray(grad)[:, 2:] == 0.0)  # exactly, not approximately
    assert np.all(np.abs(np.asarray(grad)[:, :2]) > 0)


def test_regions_of_different_sizes_are_balanced():
    # The output's region (left half, 4x3) repeats the whole style image's feature vectors twice:
    # the same statistics per position, twice the area, next to an unrelated right half.
    # Normalising each side by its own area sees a perfect match; M = h * w would not.
    style = feats_of(4, (2, 3, 4))
    feats = jnp.concatenate([jnp.tile(style, (2, 1, 1)), feats_of(5, (4, 3, 4))], axis=1)
    mask = jnp.asarray(half_mask(4, 6))
    target = terms.guided_style_grams({"l": style}, {"l": jnp.ones((2, 3))})["l"]
    loss = terms.guided_style_layer_loss(feats, target, mask)
    np.testing.assert_allclose(loss, 0.0, atol=1e-12)
    unbalanced = jnp.sum((terms.guided_gram(feats, mask) / 24 - target) ** 2)
    assert unbalanced > 1e-3


def test_an_empty_region_contributes_zero_and_finite_gradients():
    feats, zero = feats_of(5), jnp.zeros((6, 5))
    target = terms.normalized_guided_gram(feats_of(6), jnp.ones((6, 5)))
    loss, grad = jax.value_and_grad(terms.guided_style_layer_loss)(feats, target, zero)
    assert loss == 0.0 and np.all(np.asarray(grad) == 0.0)
    np.testing.assert_array_equal(terms.normalized_guided_gram(feats, zero), 0.0)


def test_guided_style_losses_sum_stacked_regions():
    mask = half_mask(6, 5)
    masks = [mask, 1.0 - mask]
    feats, style = {"a": feats_of(7)}, {"a": feats_of(8)}
    targets = [terms.guided_style_grams(style, {"a": m}) for m in masks]
    pairs = zip(targets, masks, strict=True)
    # each region weighs by the share of the layer it covers (both halves: 1/2 here)
    shares = [float(np.sum(m**2)) / m.size for m in masks]
    want = sum(
        s * terms.guided_style_layer_loss(feats["a"], t["a"], m)
        for s, (t, m) in zip(shares, pairs, strict=True)
    )
    stacked = guidance.stack_regions([{"a": m} for m in masks])
    got = jax.jit(terms.guided_style_losses, static_argnums=3)(
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


def test_temporal_loss_is_the_weighted_mean_square(rng):
    x, w = rng.uniform(size=(2, 5, 6, 3))
    c = (rng.uniform(size=(5, 6)) > 0.3).astype(np.float64)
    want = np.sum(c[..., None] * (x - w) ** 2) / (5 * 6 * 3)
    got = temporal_loss(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c))
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(temporal_loss(jnp.asarray(x), jnp.asarray(w), jnp.zeros((5, 6)))) == 0.0
    grad = jax.grad(temporal_loss)(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c))
    np.testing.assert_allclose(grad, 2 * c[..., None] * (x - w) / x.size, rtol=1e-5, atol=1e-7)


def test_temporal_loss_gradients_match_finite_differences(x64, rng):
    x, w = (jnp.asarray(a) for a in rng.uniform(size=(2, 4, 5, 3)))
    c = jnp.asarray(rng.uniform(size=(4, 5)))
    check_grads(lambda x: temporal_loss(x, w, c), (x,), order=2, modes=["fwd", "rev"])
    # Through the warp of the previous frame, as the driver will use it (grad in x only).
    prev, f = (
        jnp.asarray(rng.uniform(size=(4, 5, 3))),
        jnp.asarray(rng.uniform(-1.5, 1.5, (4, 5, 2))),
    )
    check_grads(lambda x: temporal_loss(x, warp(prev, f), c), (x,), 2, modes=["fwd", "rev"])


def test_long_term_loss_sums_the_temporal_losses(rng):
    x = jnp.asarray(rng.uniform(size=(5, 6, 3)))
    warped = jnp.asarray(rng.uniform(size=(3, 5, 6, 3)))
    c = jnp.asarray(rng.uniform(size=(3, 5, 6)))
    want = sum(float(temporal_loss(x, warped[j], c[j])) for j in range(3))
    assert float(jax.jit(long_term_loss)(x, warped, c)) == pytest.approx(want, rel=1e-6)
