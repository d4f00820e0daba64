"""The objective of Gatys, Ecker & Bethge (CVPR 2016): pure functions of one image.

Conventions that make tools disagree, settled here:
- A layer name means its *rectified* response (conv + ReLU), as in the paper.
- Gram normalisation is the paper's: E_l = sum((G - A)^2) / (4 N_l^2 M_l^2) with G = F F^T
  unnormalised, N_l filters and M_l = h * w positions (eq. 4) -- not 1/(N M) or a mean.
- L_content = 1/2 sum((F - P)^2) (eq. 1), summed over the content layers.
- L_style = sum_l w_l E_l (eq. 5); L_total = alpha L_content + beta L_style (+ tv L_tv) (eq. 7).
- Video (Ruder, Dosovitskiy & Brox 2016): + gamma L_temporal, L_temporal = sum_j (1/D)
  sum c_j (x - omega_j)^2 over the neighbours' stylised frames omega_j warped onto this frame,
  with reliability weights c_j, D = h * w * 3 (pixels in [0, 1]).
- Several style images are blended in their Gram targets: A_l = sum_s b_s A_l^s (as the classic
  Lua implementation does); one image's own style loss is the special case b = (1,).

Spatial control (Gatys, Ecker, Bethge, Hertzmann & Shechtman, CVPR 2017, sec. 4) uses guided Gram
matrices (eq. 6): the features weighted by region r's mask T^r at each layer, F^r = F * T^r_l,
G^r = (F^r)^T F^r (the masks themselves come from ``jaxnst.guidance``). Each side is normalised
by its *own* area M^r = sum(T_l^2), its (soft) number of positions:

    E_l^r = sum((G^r / M^r - A^r / M_s^r)^2) / (4 N^2)

with G^r from the output under the content-side mask and A^r from the style image under the
style-side mask. Keeping M = h * w instead would scale each region's loss with the square of its
area and compare Grams of regions of different sizes; per-area normalisation compares
per-position statistics, so regions of any size are balanced and the style region need not be as
large as the output region. With all-ones masks on equal-sized images it is exactly
``style_layer_loss``; a region with zero area at a layer contributes 0. The layer's loss sums the
regions weighted by the share of the layer each covers, E_l = sum_r (M^r / (h_l w_l)) E_l^r, so
that beta means the same with and without masks.

What the loss needs besides the image is explicit: ``Objective`` (static: layers, pooling, dtype,
remat), ``Targets`` (arrays, with the fields that differ per example named in
``Targets.per_example``) and ``LossWeights`` (traced numbers). A driver that is not an image
optimisation (a network trainer, a video pass) builds these three and calls ``loss_parts``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnst.config import PAPER_STYLE_LAYERS, LossWeights, StyleConfig
from jaxnst.vgg import Params, extract_features

HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class Objective:
    """The static part of the objective: hashable, so it keys the compiled programs.

    ``remat`` recomputes each VGG block in the backward pass (``jax.checkpoint``): the engine
    decides it from the memory plan (``StyleConfig.remat`` may say "auto").
    """

    content_layers: tuple[str, ...] = ("conv4_2",)
    style_layers: tuple[str, ...] = PAPER_STYLE_LAYERS
    pooling: str = "max"
    dtype: str = "float32"  # compute dtype of the network: float32 or bfloat16
    remat: bool = False

    @classmethod
    def from_config(cls, cfg: StyleConfig, remat: bool | None = None) -> Objective:
        """The objective of ``cfg``; ``remat`` as planned (default: only when cfg says "on")."""
        return cls(
            content_layers=tuple(cfg.content_layers),
            style_layers=tuple(cfg.style_layers),
            pooling=cfg.pooling,
            dtype=cfg.dtype,
            remat=cfg.remat == "on" if remat is None else bool(remat),
        )

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers the loss reads: content layers then style layers, without repeats."""
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


TARGET_FIELDS = ("content", "style", "masks", "temporal")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=list(TARGET_FIELDS),
    meta_fields=["per_example"],
)
@dataclass(frozen=True)
class Targets:
    """What the generated image is compared with, computed once before the loop.

    content: {layer: P (h, w, c)}; style: {layer: A (c, c)} (blended over style images).
    With spatial control (``masks`` set) style is {layer: (R, c, c)}, region r's target
    A^r / M_s^r, and masks {layer: (R, h_l, w_l)} are the regions' guidance channels on the
    image being optimised. ``temporal`` (video) holds the neighbours' stylised frames warped
    onto this one, {"warped": (J, h, w, 3), "weights": (J, h, w)}, c in [0, 1]. ``per_example``
    names the fields that carry a leading example axis (n, ...), one entry per variant or frame
    (each frame its own content and temporal targets, say); the others are shared by all.
    """

    content: dict[str, jax.Array]
    style: dict[str, jax.Array]
    masks: dict[str, jax.Array] | None = None
    temporal: dict[str, jax.Array] | None = None
    per_example: tuple[str, ...] = ()

    def in_axes(self) -> Targets:
        """The ``vmap`` in_axes of these targets: 0 for the per-example fields, else None."""
        axes = {n: 0 if n in self.per_example else None for n in TARGET_FIELDS}
        return Targets(**axes, per_example=self.per_example)

    def example(self, i: int) -> Targets:
        """The targets of example ``i`` alone (per-example fields sliced, no example axis)."""
        if not self.per_example:
            return self
        sliced = {n: jax.tree.map(lambda a: a[i], getattr(self, n)) for n in self.per_example}
        return dataclasses.replace(self, per_example=(), **sliced)

    def padded(self, n: int) -> Targets:
        """Per-example fields padded to ``n`` examples by repeating the last one."""
        if not self.per_example:
            return self

        def pad(a: jax.Array) -> jax.Array:
            return jnp.concatenate([a, jnp.repeat(a[-1:], n - a.shape[0], 0)]) if n > len(a) else a

        padded = {k: jax.tree.map(pad, getattr(self, k)) for k in self.per_example}
        return dataclasses.replace(self, **padded)

    def examples(self) -> int | None:
        """The number of examples of the per-example fields (None when all are shared)."""
        for name in self.per_example:
            leaves = jax.tree.leaves(getattr(self, name))
            if leaves:
                return int(leaves[0].shape[0])
        return None


class LossParts(NamedTuple):
    """A loss split into its parts (scalars; with a leading axis under vmap)."""

    total: jax.Array
    content: jax.Array  # L_content, unweighted
    style: jax.Array  # L_style = sum_l w_l E_l, unweighted by beta
    style_layers: jax.Array  # (L,) E_l per style layer, unweighted by w_l
    tv: jax.Array  # L_tv, unweighted
    temporal: jax.Array | None = None  # L_temporal, unweighted (video only; None elsewhere)


# ---------------------------------------------------------------------------------- the terms
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


# ---------------------------------------------------------------------------------- targets
def features(params: Params, image: jax.Array, objective: Objective) -> dict[str, jax.Array]:
    """Activations of the objective's layers for one image (h, w, 3) in [0, 1]."""
    # float32 (float64 when the image is, as in the gradient tests), or bfloat16 if asked
    if objective.dtype == "bfloat16":
        dtype = jnp.bfloat16
    else:
        dtype = jnp.promote_types(image.dtype, jnp.float32)
    return extract_features(
        params, image, objective.layers, objective.pooling, dtype, objective.remat
    )


def content_targets(params: Params, content: jax.Array, objective: Objective) -> dict:
    """P for each content layer: {layer: (h, w, c)} float32."""
    feats = features(params, content, dataclasses.replace(objective, style_layers=()))
    dtype = jnp.promote_types(content.dtype, jnp.float32)
    return {k: feats[k].astype(dtype) for k in objective.content_layers}


def style_grams(params: Params, style: jax.Array, objective: Objective) -> dict[str, jax.Array]:
    """A for each style layer, from one style image (h, w, 3): {layer: (N, N)}."""
    feats = features(params, style, dataclasses.replace(objective, content_layers=()))
    return {k: gram(feats[k]) for k in objective.style_layers}


def region_style_grams(
    params: Params, style: jax.Array, pyramid: Mapping[str, jax.Array], objective: Objective
) -> dict[str, jax.Array]:
    """Region targets A^r / M_s^r of one style image (h, w, 3) under its style-side mask
    pyramid ({layer: (h_l, w_l)}, ``guidance.mask_pyramid``): {layer: (N, N)}."""
    feats = features(params, style, dataclasses.replace(objective, content_layers=()))
    return guided_style_grams({k: feats[k] for k in objective.style_layers}, pyramid)


def blend_grams(grams: list[Mapping[str, jax.Array]], blend: jax.Array) -> dict[str, jax.Array]:
    """Blend per-style-image Gram targets: A_l = sum_s b_s A_l^s."""
    return {k: sum(b * g[k] for b, g in zip(blend, grams, strict=True)) for k in grams[0]}


# ---------------------------------------------------------------------------------- the loss
def loss_parts(
    image: jax.Array,
    params: Params,
    targets: Targets,
    weights: LossWeights,
    objective: Objective,
) -> LossParts:
    """All parts of the loss for one image (h, w, 3) in [0, 1]; ``total`` is what is minimised."""
    feats = features(params, image, objective)
    zero = jnp.zeros((), jnp.promote_types(image.dtype, jnp.float32))
    content = sum(
        (content_loss(feats[k], targets.content[k]) for k in objective.content_layers), zero
    )
    if targets.masks:  # spatial control: guided Grams, summed over the regions
        per_layer = guided_style_losses(feats, targets.style, targets.masks, objective.style_layers)
    else:
        per_layer = jnp.stack(
            [style_layer_loss(feats[k], targets.style[k]) for k in objective.style_layers]
            or [zero]  # keeps the shape (L,) >= (1,) when no style layer is set
        )[: len(objective.style_layers)]
    style = jnp.sum(weights.style_layers * per_layer)
    tv = tv_loss(image)  # always: cheap, and a per-variant tv sweep may start from tv_weight 0
    total = weights.content * content + weights.style * style + weights.tv * tv
    temporal = None
    if targets.temporal is not None:  # video: the warped neighbours' stylised frames
        temporal = long_term_loss(image, targets.temporal["warped"], targets.temporal["weights"])
        total = total + weights.temporal * temporal
    return LossParts(total, content, style, per_layer, tv, temporal)


def total_loss(
    image: jax.Array, params: Params, targets: Targets, weights: LossWeights, objective: Objective
) -> jax.Array:
    """L_total = alpha L_content + beta L_style (+ tv L_tv) for one image (h, w, 3)."""
    return loss_parts(image, params, targets, weights, objective).total


def parts_dict(parts: LossParts, objective: Objective) -> dict[str, Any]:
    """Flatten LossParts into named columns: total, content, style, style/<layer>, tv (and
    temporal, for video)."""
    out = {"total": parts.total, "content": parts.content, "style": parts.style, "tv": parts.tv}
    if parts.temporal is not None:
        out["temporal"] = parts.temporal
    for i, layer in enumerate(objective.style_layers):
        out[f"style/{layer}"] = parts.style_layers[..., i]
    return out
