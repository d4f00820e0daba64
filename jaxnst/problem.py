"""Inputs to a frozen ``Problem``: images at their sizes, masks, targets, and starting images.

``make_problem`` loads and resizes the content and style images, applies colour control, checks
that the deepest layer keeps a position, reads the masks of spatial control, and computes the
targets once (jitted, params as arguments): P at the content layers, and per style layer the
Gram target A (blended over style images, or one image's per layer under scale control, or one
per region under spatial control). ``initial_images`` gives the starting batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst import guidance
from jaxnst.color import color_control
from jaxnst.config import StyleConfig
from jaxnst.engine import targets_fns
from jaxnst.errors import ConfigError
from jaxnst.image import ImageLike, MaskLike, load_image, resize
from jaxnst.layers import deepest, min_side, positions
from jaxnst.losses import Objective, Targets, blend_grams
from jaxnst.memory import release_host_memory
from jaxnst.solvers import project
from jaxnst.vgg import Params
from jaxnst.weights import load_params

GATE_RADIUS = 0.02  # spatial control: the free band around the masks, a share of the long side


@dataclass(frozen=True)
class Problem:
    """Everything fixed during a run: resized images, network params and the targets."""

    content: np.ndarray  # (h, w, 3) float32 [0, 1] in its own colours; a clip: (n, h, w, 3)
    styles: tuple[np.ndarray, ...]  # each (h_s, w_s, 3), as the targets saw them (recoloured/grey)
    params: Params
    targets: Targets
    work_content: np.ndarray  # the content the loss sees (grey in luminance mode)
    masks: tuple[np.ndarray, ...] = ()  # spatial control: a region (h, w) per style image


def make_problem(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    cfg: StyleConfig,
    params: Params | None = None,
    *,
    masks: Sequence[MaskLike] | None = None,
    style_masks: Sequence[MaskLike] | None = None,
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
) -> Problem:
    """Load and resize the images and compute the targets P and A once (jitted, params as args).

    ``masks`` / ``style_masks`` (paths or arrays) stand in for ``cfg.masks`` / ``cfg.style_masks``
    (spatial control, see ``guided_targets``); ``variant_masks`` gives one such ``masks`` list
    per variant instead. ``content`` may be a clip, float (n, h, w, 3) frames in [0, 1] already
    at their size (``jaxnst.video``): its content targets are then per frame (the example axis),
    and ``variant_masks`` gives each frame its own regions.
    """
    cfg.validate()
    if variant_masks is not None:
        if not variant_masks or masks is not None:
            raise ConfigError("variant masks: give one masks list per variant, and no masks")
        masks = variant_masks[0]
    masks = list(cfg.masks if masks is None else masks)
    style_masks = list(cfg.style_masks if style_masks is None else style_masks)
    cfg.check_masks(masks, style_masks)
    if not isinstance(styles, list | tuple):
        styles = [styles]
    if not styles:
        raise ConfigError("at least one style image is needed")
    blend = cfg.blend_weights(len(styles))
    clip = is_clip(content)
    content_img = (
        np.asarray(content, np.float32) if clip else load_image(content, cfg.size, "content")
    )
    style_side = max(16, round(cfg.size * cfg.style_scale))
    style_imgs = [load_image(s, style_side, f"style {i + 1}") for i, s in enumerate(styles)]
    work_content, style_imgs = color_control(content_img, style_imgs, cfg)
    check_min_side(content_img, "content", cfg)
    for i, s in enumerate(style_imgs):
        check_min_side(s, f"style {i + 1}", cfg)
    if params is None:
        params = load_params(cfg.weights, cfg.normalize_network, cfg.pooling)
    objective = Objective.from_config(cfg)
    content_fn, style_fn, _ = targets_fns(objective, cfg.precision)
    if not cfg.content_layers:
        p = {}
    elif clip:  # one compiled program, frame by frame: the targets of every frame, stacked
        frames = [content_fn(params, jnp.asarray(f)) for f in work_content]
        p = {k: jnp.stack([f[k] for f in frames]) for k in frames[0]}
    else:
        p = content_fn(params, jnp.asarray(work_content))
    regions: list[np.ndarray] = []
    if masks:  # guided Grams per region instead of the whole images' Grams
        targets, regions = guided_targets(
            params, content_img, style_imgs, cfg, masks, style_masks, variant_masks
        )
        targets = dataclasses.replace(targets, content=p)
        if cfg.background == "content" and cfg.gate:  # keep the photo outside every mask
            targets = _gated(targets, regions, len(style_imgs), work_content, clip, cfg)
    else:
        out_hw = content_img.shape[-3:-1]
        grams = []
        for s in style_imgs:
            # G grows with the number of positions M_l: a style image of another size is brought
            # to the output's M_l, so E_l compares like with like (identical when sizes match).
            ratio = {k: positions(out_hw, k) / positions(s.shape[:2], k) for k in cfg.style_layers}
            grams.append({k: g * ratio[k] for k, g in style_fn(params, jnp.asarray(s)).items()})
        targets = Targets(p, _style_targets(grams, blend, cfg))
    if clip:
        per_example = ("content",) + targets.per_example
        targets = dataclasses.replace(targets, per_example=per_example)
    release_host_memory()
    return Problem(content_img, tuple(style_imgs), params, targets, work_content, tuple(regions))


def _gated(targets: Targets, regions: list[np.ndarray], n_styles: int, work: np.ndarray,
           clip: bool, cfg: StyleConfig) -> Targets:  # fmt: skip
    """``targets`` with the gate of spatial control: per variant (or frame) when the masks are."""
    radius = max(1, round(GATE_RADIUS * max(work.shape[-3:-1])))
    sets = [regions[k : k + n_styles] for k in range(0, len(regions), n_styles)]
    gates = [guidance.gate_mask(r, radius) for r in sets]
    per_example = list(targets.per_example)
    gate = jnp.asarray(gates[0])
    if "masks" in targets.per_example:
        gate = jnp.asarray(np.stack(gates))
        per_example.append("gate")
    if clip:
        per_example.append("anchor")
    return dataclasses.replace(targets, gate=gate, anchor=jnp.asarray(work),
                               per_example=tuple(per_example))  # fmt: skip


def is_clip(content: object) -> bool:
    """Whether ``content`` is a clip of frames (n, h, w, 3), not one image."""
    return isinstance(content, np.ndarray | jax.Array) and np.ndim(content) == 4


def _style_targets(grams: list[dict], blend: np.ndarray, cfg: StyleConfig) -> dict:
    """A per style layer: the blend of the images' Grams, or scale control's chosen image's."""
    if not cfg.style_layers:
        return {}
    if not cfg.style_layer_images:
        return blend_grams(grams, jnp.asarray(blend))
    if max(cfg.style_layer_images) > len(grams):
        raise ConfigError(
            f"style-layer-images names image {max(cfg.style_layer_images)} but there "
            f"{'is' if len(grams) == 1 else 'are'} {len(grams)} style image(s)"
        )
    return {
        k: grams[i - 1][k] for k, i in zip(cfg.style_layers, cfg.style_layer_images, strict=True)
    }


def guided_targets(
    params: Params,
    content: np.ndarray,
    styles: list[np.ndarray],
    cfg: StyleConfig,
    masks: Sequence[MaskLike],
    style_masks: Sequence[MaskLike] = (),
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
) -> tuple[Targets, list[np.ndarray]]:
    """Spatial control (Gatys et al. 2017, sec. 4): region r of the content gets style image r.

    ``masks``: a greyscale mask per style image, or one colour-coded map with
    ``cfg.region_colors``; ``style_masks``: per style image the part to learn from (default:
    all of it). With ``cfg.background == "style"`` the uncovered rest of the content is one
    more region styled by the blend of all style images; otherwise it gets no style loss and
    keeps its content. ``variant_masks``, one such ``masks`` list per variant, gives each
    variant its own regions in one run (the masks are then per example; the style side is
    computed once). Returns the style part of the Targets (``content`` left empty) and the
    content-side masks at the content's size (every variant's, in order).
    """
    hw = content.shape[-3:-1]
    n = len(styles)
    if style_masks and len(style_masks) != n:
        raise ConfigError(
            f"style-masks: {len(style_masks)} mask(s) for {n} style image(s); give one per style "
            f"image ({guidance.WHOLE_IMAGE!r} for the whole image)"
        )
    layers = cfg.style_layers
    _, _, region_fn = targets_fns(Objective.from_config(cfg), cfg.precision)
    grams, style_pyramids, whole = [], [], []
    for i, style in enumerate(styles):
        src = style_masks[i] if style_masks else guidance.WHOLE_IMAGE
        is_whole = isinstance(src, str) and src == guidance.WHOLE_IMAGE
        side = guidance.region_masks([src], 1, style.shape[:2], side=f"style-masks {i + 1}")[0]
        style_pyramids.append(guidance.mask_pyramid(side, layers, cfg.mask_layers))
        grams.append(region_fn(params, jnp.asarray(style), style_pyramids[-1]))
        if cfg.background == "style":  # the whole image's Grams, for the uncovered rest
            ones = guidance.mask_pyramid(np.ones(style.shape[:2], np.float32), layers, "simple")
            whole.append(grams[-1] if is_whole else region_fn(params, jnp.asarray(style), ones))
    if whole:  # the uncovered rest: the blend of the whole style images
        grams.append(blend_grams(whole, jnp.asarray(cfg.blend_weights(n))))

    def content_side(mask_set: Sequence[MaskLike], side: str) -> tuple[dict, list[np.ndarray]]:
        regions = guidance.region_masks(mask_set, n, hw, cfg.region_colors, side=side)
        pyramids = [
            guidance.drop_empty_layers(guidance.mask_pyramid(r, layers, cfg.mask_layers), sp)
            for r, sp in zip(regions, style_pyramids, strict=True)
        ]
        if cfg.background == "style":
            rest = guidance.background_mask(regions)
            pyramids.append(guidance.mask_pyramid(rest, layers, cfg.mask_layers))
        return guidance.stack_regions(pyramids), regions

    style = guidance.stack_regions(grams)
    if variant_masks is None:
        stacked, regions = content_side(masks, "masks")
        return Targets({}, style, stacked), regions
    sides = [content_side(m, f"variant {k} masks") for k, m in enumerate(variant_masks)]
    stacked = {k: jnp.stack([s[0][k] for s in sides]) for k in sides[0][0]}
    regions = [r for s in sides for r in s[1]]
    return Targets({}, style, stacked, per_example=("masks",)), regions


def check_min_side(image: np.ndarray, name: str, cfg: StyleConfig) -> None:
    """Raise ConfigError unless the deepest loss layer keeps at least one position."""
    layer = deepest(cfg.content_layers + cfg.style_layers)
    need = min_side(layer)
    if min(image.shape[-3:-1]) < need:
        h, w = image.shape[-3:-1]
        raise ConfigError(
            f"the {name} image is {w}x{h} px after resizing; {layer} needs a short side of at "
            f"least {need} px ({need.bit_length() - 1} poolings): raise size or style-scale"
        )


def initial_images(problem: Problem, cfg: StyleConfig, seeds: Sequence[int]) -> jax.Array:
    """(n, h, w, 3) starting images: ``cfg.init_image`` if given, else uniform white noise per
    seed, or the content or style image (``cfg.init``)."""
    h, w, _ = problem.content.shape[-3:]
    if cfg.init_image:  # a start of the user's, resized to the output
        one = jnp.asarray(resize(load_image(cfg.init_image, max(h, w), "init image"), (h, w)))
        one = project(one, cfg) if cfg.color_mode == "luminance" else one
        return jnp.broadcast_to(one, (len(seeds), h, w, 3))
    if cfg.init == "content" and is_clip(problem.content):  # a clip starts from its frames
        return jnp.asarray(problem.work_content)
    if cfg.init == "content":
        one = jnp.asarray(problem.work_content)
    elif cfg.init == "style":
        one = jnp.asarray(resize(problem.styles[0], (h, w)))
    else:
        keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
        noise = jax.vmap(
            lambda k: jax.random.uniform(jax.random.wrap_key_data(k), (h, w, 3), jnp.float32)
        )(keys)
        return project(noise, cfg) if cfg.color_mode == "luminance" else noise
    one = project(one, cfg) if cfg.color_mode == "luminance" else one
    return jnp.broadcast_to(one, (len(seeds), h, w, 3))
