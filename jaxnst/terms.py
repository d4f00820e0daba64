"""The terms of the objective, one image and one layer at a time: the paper's formulas.

Gram matrices (with a derivative that reverse mode turns into one product), the content loss
(Gatys et al. 2016, eq. 1), a layer's style loss (eq. 4), guided Grams and the guided style
loss of spatial control (Gatys et al. 2017, eq. 6), total variation, and the temporal loss of
video (Ruder et al. 2016). Pure JAX: jit, vmap, grad and forward mode work on all of them.
``jaxnst.losses`` assembles them into the objective.


"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


@jax.custom_jvp
def gram_2d(f: jax.Array) -> jax.Array:
    """f (M, N) -> f^T f (N, N), at full precision.

    Reverse-mode autodiff of ``f.T @ f`` transposes the tangent ``df^T f + f^T df`` term by term
    into two (M, N) x (N, N) products. The custom JVP writes the tangent as ``s + s^T`` with
    ``s = f^T df``: the same value, and its transpose is one product, ``f @ (g + g^T)``. Forward
    mode and higher orders keep working. On the 2-core CPU machine the style losses' value and
    gradient at 256 px took 53 instead of 96 ms (``docs/benchmarks.md``).
    """
    return jnp.matmul(f.T, f, precision=HIGHEST)


@gram_2d.defjvp
def _gram_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]):
    (f,), (df,) = primals, tangents
    s = jnp.matmul(f.T, df, precision=HIGHEST)
    return gram_2d(f), s + s.T


def gram(feats: jax.Array) -> jax.Array:
    """G = F F^T for feats (h, w, N) -> (N, N), accumulated in float32 at full precision."""
    f = feats.reshape(-1, feats.shape[-1]).astype(jnp.promote_types(feats.dtype, jnp.float32))
    return gram_2d(f)


def content_loss(feats: jax.Array, target: jax.Array) -> jax.Array:
    """L_content = 1/2 sum((F - P)^2), Gatys et al. 2016 eq. 1. feats, target: (h, w, c)."""
    dtype = jnp.promote_types(feats.dtype, jnp.float32)  # float64 under x64 (gradient tests)
    return 0.5 * jnp.sum((feats.astype(dtype) - target) ** 2)


def style_layer_loss(feats: jax.Array, target_gram: jax.Array) -> jax.Array:
    """E_l = sum((G - A)^2) / (4 N^2 M^2), Gatys et al. 2016 eq. 4. feats: (h, w, N)."""
    h, w, n = feats.shape
    return jnp.sum((gram(feats) - target_gram) ** 2) / (4.0 * n**2 * (h * w) ** 2)


def temporal_loss(x: jax.Array, warped: jax.Array, weights: jax.Array) -> jax.Array:
    """L_temporal = (1/D) sum_k c_k (x_k - omega_k)^2, D = h * w * channels (Ruder et al. 2016).

    x: the image being optimised (h, w, 3); warped: a neighbour's stylised frame warped onto
    x's grid, (h, w, 3); weights: c (h, w) in [0, 1], shared by the channels. Pixels in [0, 1]:
    the reference implementation measured on 0..256, a factor 256^2 larger.
    """
    return jnp.sum(weights[..., None] * (x - warped) ** 2) / x.size


def long_term_loss(x: jax.Array, warped: jax.Array, weights: jax.Array) -> jax.Array:
    """sum_j L_temporal(x, warped[j], weights[j]): warped (J, h, w, 3), weights (J, h, w) (for
    long-term consistency already combined by ``flow.long_term_weights``)."""
    return jnp.sum(jax.vmap(temporal_loss, in_axes=(None, 0, 0))(x, warped, weights))


def tv_loss(image: jax.Array) -> jax.Array:
    """Total variation: sum of squared neighbour differences of an (h, w, 3) image on 0..255."""
    x = image * 255.0
    return jnp.sum((x[1:, :, :] - x[:-1, :, :]) ** 2) + jnp.sum((x[:, 1:, :] - x[:, :-1, :]) ** 2)


def mask_area(mask: jax.Array) -> jax.Array:
    """M^r = sum(T^2): the (soft) number of positions a guided Gram weighs. (h, w) -> scalar."""
    m = jnp.asarray(mask, jnp.float32)
    return jnp.sum(m * m)


def guided_gram(feats: jax.Array, mask: jax.Array) -> jax.Array:
    """G^r = (F * T)^T (F * T), Gatys et al. 2017 eq. 6. feats (h, w, N), mask (h, w) -> (N, N).

    Unnormalised, float32 at full precision; with an all-ones mask it is ``gram(feats)``.
    """
    f = feats.astype(jnp.float32) * jnp.asarray(mask, jnp.float32)[..., None]
    return gram_2d(f.reshape(-1, f.shape[-1]))


def normalized_guided_gram(feats: jax.Array, mask: jax.Array) -> jax.Array:
    """G^r / M^r with M^r = sum(mask^2) (``mask_area``); all zeros for an empty mask. -> (N, N)."""
    area = mask_area(mask)
    return guided_gram(feats, mask) / jnp.where(area > 0, area, 1.0)


def guided_style_grams(
    feats: Mapping[str, jax.Array], pyramid: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    """Targets for one region: {layer: A^r / M_s^r (N, N)} for each layer of ``pyramid``.

    ``feats`` are the style image's activations ({layer: (h_l, w_l, N)}, e.g. from
    ``features``); ``pyramid`` is ``mask_pyramid`` of the style-side mask at the style
    image's size. The Grams are normalised by their region's area (see the module docstring);
    compare them with ``guided_style_layer_loss``, never with ``style_layer_loss``.
    """
    return {k: normalized_guided_gram(feats[k], m) for k, m in pyramid.items()}


def guided_style_layer_loss(feats: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """E_l^r = sum((G^r / M^r - target)^2) / (4 N^2); 0 when the mask is empty.

    feats (h, w, N) of the image being optimised, ``target`` (N, N) from ``guided_style_grams``,
    mask (h, w) its content-side mask at this layer. The gradient with respect to ``feats`` is
    exactly zero wherever the mask is zero. For all-ones masks and target = gram(P) / (h * w) of
    an equal-sized style layer P this equals ``style_layer_loss(feats, gram(P))``.
    """
    n = feats.shape[-1]
    loss = jnp.sum((normalized_guided_gram(feats, mask) - target) ** 2) / (4.0 * n**2)
    return jnp.where(mask_area(mask) > 0, loss, 0.0)


def guided_style_losses(
    feats: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    masks: Mapping[str, jax.Array],
    layers: Sequence[str],
) -> jax.Array:
    """Per-layer guided style losses over the regions: (L,) with E_l = sum_r (M^r / M) E_l^r.

    feats {layer: (h_l, w_l, N)} of the image being optimised; targets {layer: (R, N, N)} and
    masks {layer: (R, h_l, w_l)}: R regions stacked (``guidance.stack_regions`` of
    per-region ``guided_style_grams`` and content-side ``guidance.mask_pyramid`` results). A
    drop-in for the (L,) per-layer unguided losses in ``loss_parts``: L_style = sum_l w_l E_l
    (eq. 5).

    Each region's E_l^r compares per-position statistics (see the module docstring); weighting
    it by the share of the layer it covers, M^r / M with M = h_l * w_l, keeps beta's meaning:
    regions that partition the image weigh as much, in total, as one unguided loss, and a
    small region is styled as strongly per pixel as a large one, relative to its content loss
    (which sums over its pixels).
    """
    if not layers:
        return jnp.zeros((0,), jnp.float32)

    def region(f, target, mask):
        share = mask_area(mask) / (mask.shape[0] * mask.shape[1])
        return share * guided_style_layer_loss(f, target, mask)

    per_region = jax.vmap(region, in_axes=(None, 0, 0))
    return jnp.stack([jnp.sum(per_region(feats[k], targets[k], masks[k])) for k in layers])
