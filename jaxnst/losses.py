"""The objective of Gatys, Ecker & Bethge (CVPR 2016): pure functions of one image.

Conventions that make tools disagree, settled here:
- A layer name means its *rectified* response (conv + ReLU), as in the paper.
- Gram normalisation is the paper's: E_l = sum((G - A)^2) / (4 N_l^2 M_l^2) with G = F F^T
  unnormalised, N_l filters and M_l = h * w positions (eq. 4) -- not 1/(N M) or a mean.
- L_content = 1/2 sum((F - P)^2) (eq. 1), summed over the content layers.
- L_style = sum_l w_l E_l (eq. 5); L_total = alpha L_content + beta L_style (+ tv L_tv) (eq. 7).
- Several style images are blended in their Gram targets: A_l = sum_s b_s A_l^s (as the classic
  Lua implementation does); one image's own style loss is the special case b = (1,).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnst.config import LossWeights, StyleConfig
from jaxnst.gram import gram_2d
from jaxnst.guidance import guided_style_grams, guided_style_losses
from jaxnst.vgg import Params, extract_features


class Targets(NamedTuple):
    """What the generated image is compared with, computed once before the loop.

    content: {layer: P (h, w, c)}; style: {layer: A (c, c)} (blended over style images).
    With spatial control (``masks`` set) style is {layer: (R, c, c)}, region r's target
    A^r / M_s^r, and masks {layer: (R, h_l, w_l)} are the regions' guidance channels on the
    image being optimised (``jaxnst.guidance``).
    """

    content: dict[str, jax.Array]
    style: dict[str, jax.Array]
    masks: dict[str, jax.Array] | None = None


class LossParts(NamedTuple):
    """A loss split into its parts (scalars; with a leading axis under vmap)."""

    total: jax.Array
    content: jax.Array  # L_content, unweighted
    style: jax.Array  # L_style = sum_l w_l E_l, unweighted by beta
    style_layers: jax.Array  # (L,) E_l per style layer, unweighted by w_l
    tv: jax.Array  # L_tv, unweighted


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


def tv_loss(image: jax.Array) -> jax.Array:
    """Total variation: sum of squared neighbour differences of an (h, w, 3) image on 0..255."""
    x = image * 255.0
    return jnp.sum((x[1:, :, :] - x[:-1, :, :]) ** 2) + jnp.sum((x[:, 1:, :] - x[:, :-1, :]) ** 2)


def feature_layers(cfg: StyleConfig) -> tuple[str, ...]:
    """The layers the loss reads: content layers then style layers, without repeats."""
    return tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))


def features(params: Params, image: jax.Array, cfg: StyleConfig) -> dict[str, jax.Array]:
    """Activations of the loss's layers for one image (h, w, 3) in [0, 1]."""
    # float32 (float64 when the image is, as in the gradient tests), or bfloat16 if asked
    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.promote_types(image.dtype, jnp.float32)
    remat = cfg.remat == "on"  # StyleRun resolves "auto" before tracing
    return extract_features(params, image, feature_layers(cfg), cfg.pooling, dtype, remat)


def content_targets(params: Params, content: jax.Array, cfg: StyleConfig) -> dict[str, jax.Array]:
    """P for each content layer: {layer: (h, w, c)} float32."""
    feats = features(params, content, cfg.replace(style_layers=()))
    dtype = jnp.promote_types(content.dtype, jnp.float32)
    return {k: feats[k].astype(dtype) for k in cfg.content_layers}


def style_grams(params: Params, style: jax.Array, cfg: StyleConfig) -> dict[str, jax.Array]:
    """A for each style layer, from one style image (h, w, 3): {layer: (N, N)}."""
    feats = features(params, style, cfg.replace(content_layers=()))
    return {k: gram(feats[k]) for k in cfg.style_layers}


def region_style_grams(
    params: Params, style: jax.Array, pyramid: Mapping[str, jax.Array], cfg: StyleConfig
) -> dict[str, jax.Array]:
    """Region targets A^r / M_s^r of one style image (h, w, 3) under its style-side mask
    pyramid ({layer: (h_l, w_l)}, ``guidance.mask_pyramid``): {layer: (N, N)}."""
    feats = features(params, style, cfg.replace(content_layers=()))
    return guided_style_grams({k: feats[k] for k in cfg.style_layers}, pyramid)


def blend_grams(grams: list[Mapping[str, jax.Array]], blend: jax.Array) -> dict[str, jax.Array]:
    """Blend per-style-image Gram targets: A_l = sum_s b_s A_l^s."""
    return {k: sum(b * g[k] for b, g in zip(blend, grams, strict=True)) for k in grams[0]}


def loss_parts(
    image: jax.Array,
    params: Params,
    targets: Targets,
    weights: LossWeights,
    cfg: StyleConfig,
) -> LossParts:
    """All parts of the loss for one image (h, w, 3) in [0, 1]; ``total`` is what is minimised."""
    feats = features(params, image, cfg)
    zero = jnp.zeros((), jnp.promote_types(image.dtype, jnp.float32))
    content = sum((content_loss(feats[k], targets.content[k]) for k in cfg.content_layers), zero)
    if targets.masks:  # spatial control: guided Grams, summed over the regions
        per_layer = guided_style_losses(feats, targets.style, targets.masks, cfg.style_layers)
    else:
        per_layer = jnp.stack(
            [style_layer_loss(feats[k], targets.style[k]) for k in cfg.style_layers]
            or [zero]  # keeps the shape (L,) >= (1,) when no style layer is set
        )[: len(cfg.style_layers)]
    style = jnp.sum(weights.style_layers * per_layer)
    tv = tv_loss(image)  # always: cheap, and a per-variant tv sweep may start from tv_weight 0
    total = weights.content * content + weights.style * style + weights.tv * tv
    return LossParts(total, content, style, per_layer, tv)


def total_loss(
    image: jax.Array, params: Params, targets: Targets, weights: LossWeights, cfg: StyleConfig
) -> jax.Array:
    """L_total = alpha L_content + beta L_style (+ tv L_tv) for one image (h, w, 3)."""
    return loss_parts(image, params, targets, weights, cfg).total


def parts_dict(parts: LossParts, cfg: StyleConfig) -> dict[str, Any]:
    """Flatten LossParts into named columns: total, content, style, style/<layer>, tv."""
    out = {"total": parts.total, "content": parts.content, "style": parts.style, "tv": parts.tv}
    for i, layer in enumerate(cfg.style_layers):
        out[f"style/{layer}"] = parts.style_layers[..., i]
    return out
