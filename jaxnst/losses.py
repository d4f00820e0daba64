"""The objective of Gatys, Ecker & Bethge (CVPR 2016), assembled for one image.

Conventions that make tools disagree, settled here (the formulas are ``jaxnst.terms``):
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
- Spatial control (Gatys et al. 2017, sec. 4) uses guided Grams normalised per region, and a
  gate that keeps the photo outside every mask (``gate_image``).

The normalised objective (``Objective.normalize == "normalized"``, the default; departure from
the paper): L_content and L_tv are sums over positions while E_l is per position, so the
style's pull on a pixel falls as 1/M against the content's and alpha/beta means something else
at every size. Each content term is scaled by M_ref / M_l, M_l = h_l * w_l the layer's positions
and M_ref the positions the layer has in an image of 512 x 384 pixels (any aspect), and L_tv by
(512 * 384) / (h * w): the per-pixel balance is the same at every size and aspect, and a 512 x
384 px image (the project's reference photographs at 512 px) has exactly the paper's objective.
``"paper"`` keeps the sums as written (what the reference and gradient tests check).
Under scale control (``style_norm == "target"``) each E_l is divided by its target's magnitude
T_l = sum(A_l^2) / (4 N_l^2 M_l^2) (E_l of an all-zero image) and L_style rescaled by
sum_k w_k T_k / sum_k w_k, so every layer counts and beta keeps its meaning.

What the loss needs besides the image is explicit: ``Objective`` (static: layers, pooling, dtype,
remat, normalisation), ``Targets`` (arrays, with the fields that differ per example named in
``Targets.per_example``) and ``LossWeights`` (traced numbers). A driver that is not an image
optimisation (a network trainer, a video pass) builds these three and calls ``loss_parts``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnst.config import PAPER_STYLE_LAYERS, LossWeights, StyleConfig
from jaxnst.layers import pools_before
from jaxnst.terms import (
    content_loss,
    gram,
    guided_style_grams,
    guided_style_losses,
    long_term_loss,
    style_layer_loss,
    tv_loss,
)
from jaxnst.vgg import Params, extract_features


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
    normalize: str = "normalized"  # or "paper": the content and TV sums as written
    style_norm: str = "none"  # or "target": each E_l relative to its target's magnitude

    @classmethod
    def from_config(cls, cfg: StyleConfig, remat: bool | None = None) -> Objective:
        """The objective of ``cfg``; ``remat`` as planned (default: only when cfg says "on")."""
        return cls(
            content_layers=tuple(cfg.content_layers),
            style_layers=tuple(cfg.style_layers),
            pooling=cfg.pooling,
            dtype=cfg.dtype,
            remat=cfg.remat == "on" if remat is None else bool(remat),
            normalize=cfg.objective,
            style_norm=cfg.style_layer_norm if cfg.style_layer_norm != "auto" else (
                "target" if cfg.style_layer_images else "none"),
        )  # fmt: skip

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers the loss reads: content layers then style layers, without repeats."""
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


TARGET_FIELDS = ("content", "style", "masks", "temporal", "gate", "anchor")
REFERENCE_PIXELS = 512 * 384  # the normalised objective's anchor: a 512 px 4:3 photograph


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
    onto this one, {"warped": (J, h, w, 3), "weights": (J, h, w)}, c in [0, 1]. ``gate``
    (h, w, 1) and ``anchor`` (h, w, 3): spatial control keeps the photo ``anchor`` wherever the
    gate is 0 (``gate_image``). ``per_example``
    names the fields that carry a leading example axis (n, ...), one entry per variant or frame
    (each frame its own content and temporal targets, say); the others are shared by all.
    """

    content: dict[str, jax.Array]
    style: dict[str, jax.Array]
    masks: dict[str, jax.Array] | None = None
    temporal: dict[str, jax.Array] | None = None
    gate: jax.Array | None = None
    anchor: jax.Array | None = None
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


# ---------------------------------------------------------------------------------- the parts
def size_factor(layer: str, hw: tuple[int, int], objective: Objective) -> float:
    """M_ref / M for a sum over the positions of ``layer`` (or "pixels") of an (h, w) image:
    static, from shapes; 1 under the paper's objective (see the module docstring)."""
    if objective.normalize == "paper":
        return 1.0
    pools = 0 if layer == "pixels" else pools_before(layer)
    h, w = hw[0] >> pools, hw[1] >> pools
    return REFERENCE_PIXELS / 4.0**pools / max(1, h * w)


def target_magnitudes(targets: Targets, feats: Mapping[str, jax.Array], layers) -> jax.Array:
    """T_l = sum(A_l^2) / (4 N^2 M^2): E_l of an image whose features are all zero, (L,).

    A_l is already brought to the output's M_l; guided targets (R, N, N) are per area already:
    T_l = the mean over regions of sum(A_r^2) / (4 N^2)."""
    out = []
    for k in layers:
        a = targets.style[k].astype(jnp.float32)
        n = a.shape[-1]
        if a.ndim == 3:
            out.append(jnp.mean(jnp.sum(a * a, axis=(1, 2))) / (4.0 * n**2))
        else:
            m = feats[k].shape[0] * feats[k].shape[1]
            out.append(jnp.sum(a * a) / (4.0 * n**2 * m**2))
    return jnp.stack(out)


def gate_image(image: jax.Array, targets: Targets) -> jax.Array:
    """x = c + g (y - c): the image the loss sees, from the optimised y, with g (h, w, 1) the
    grown union of the masks (``guidance.gate_mask``) and c the photo: wherever g is 0 the image
    is the photo by construction, from any start, and no gradient reaches there."""
    if targets.gate is None:
        return image
    c = targets.anchor.astype(image.dtype)
    return c + targets.gate.astype(image.dtype) * (image - c)


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
    image = gate_image(image, targets)  # spatial control: outside the masks stays the photo
    feats = features(params, image, objective)
    hw = image.shape[:2]
    zero = jnp.zeros((), jnp.promote_types(image.dtype, jnp.float32))
    content = sum(
        (
            size_factor(k, hw, objective) * content_loss(feats[k], targets.content[k])
            for k in objective.content_layers
        ),
        zero,
    )
    if targets.masks:  # spatial control: guided Grams, summed over the regions
        per_layer = guided_style_losses(feats, targets.style, targets.masks, objective.style_layers)
    else:
        per_layer = jnp.stack(
            [style_layer_loss(feats[k], targets.style[k]) for k in objective.style_layers]
            or [zero]  # keeps the shape (L,) >= (1,) when no style layer is set
        )[: len(objective.style_layers)]
    layer_weights = weights.style_layers
    if objective.style_norm == "target" and objective.style_layers:
        t = jax.lax.stop_gradient(target_magnitudes(targets, feats, objective.style_layers))
        mean = jnp.sum(layer_weights * t) / jnp.maximum(jnp.sum(layer_weights), 1e-30)
        layer_weights = layer_weights * mean / jnp.maximum(t, 1e-30)
    style = jnp.sum(layer_weights * per_layer)
    # TV always: cheap, and a per-variant tv sweep may start from tv_weight 0
    tv = size_factor("pixels", hw, objective) * tv_loss(image)
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
