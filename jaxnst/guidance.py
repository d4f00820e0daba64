"""Spatial control: Gatys, Ecker, Bethge, Hertzmann & Shechtman (CVPR 2017), section 4.

A *guidance channel* (mask) T^r in [0, 1] marks region r of an image. The style of region r of the
output is matched to the style of region r of a style image through guided Gram matrices
(eq. 6): the features are weighted by the mask propagated to each layer, F^r = F * T^r_l, and
G^r = (F^r)^T F^r. This module holds the pieces, all pure:

- files -> masks, on the host: ``load_mask`` (a greyscale mask), ``load_color_masks`` (a
  colour-coded region map, one flat colour per region -> one mask per colour);
- masks -> per-layer masks, on the host: ``mask_pyramid`` ("simple", "inside" or "all");
- the guided style loss, in JAX (jit/vmap/grad): ``guided_gram``, ``normalized_guided_gram``,
  ``guided_style_grams`` (targets, once), ``guided_style_layer_loss`` (one layer, one region),
  ``guided_style_losses`` (all layers, regions stacked); ``stack_regions`` and
  ``drop_empty_layers`` prepare their inputs.

Normalisation, settled here: jaxnst's unguided E_l divides by 4 N^2 M^2 with M = h * w, the
number of positions. For a region, M^r = sum(T_l^2) -- its (soft) area at layer l, the weight the
guided Gram gives it -- and each side is normalised by its *own* area:

    E_l^r = sum((G^r / M^r - A^r / M_s^r)^2) / (4 N^2)

with G^r from the output under the content-side mask and A^r from the style image under the
style-side mask. Keeping M = h * w instead would scale each region's loss with the square of its
area (a region covering 10% of the image would weigh 1/100 of one covering all of it) and compare
Grams of regions of different sizes in the output and the style image; per-area normalisation
compares per-position statistics, so regions of any size are balanced and the style region need
not be as large as the output region. With all-ones masks on equal-sized images it is exactly
``jaxnst.losses.style_layer_loss``. A region with zero area at a layer contributes 0.
The layer's loss sums the regions weighted by the share of the layer each covers,
E_l = sum_r (M^r / (h_l w_l)) E_l^r (``guided_style_losses``), so that beta means the same with
and without masks: the per-pixel balance of style against content is the same everywhere.

This module does not import ``jaxnst.losses`` (which is expected to import it), hence its own
Gram product, the same as ``losses.gram``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps

from jaxnst.errors import ImageError
from jaxnst.gram import gram_2d
from jaxnst.image import as_image, fit_size, read_image
from jaxnst.vgg import LAYER_INDEX, LAYER_NAMES, check_layers

PYRAMID_MODES = ("simple", "inside", "all")  # the first is the default
MAX_COLORS = 16  # a region map with more colours is almost surely anti-aliased or a JPEG
GREY_TOLERANCE = 2.0 / 255.0  # channels this close count as grey (colour-managed PNGs wobble)

MaskLike = Any  # a path (str | Path) or an array (h, w) / (h, w, 1|3|4): bool, uint8/16, float


# ------------------------------------------------------------------------------ files -> masks


def _read_rgb(source: MaskLike, name: str) -> np.ndarray:
    """A mask source -> float32 (h, w, 3) in [0, 1], transparent pixels composited over black."""
    if isinstance(source, str | Path):
        rgb = read_image(source)  # every file problem, one line naming the file
        # Transparent means "not in the region": composite over black, not over white as
        # read_image does for photographs. The header alone tells whether there is an alpha.
        with Image.open(source) as img:
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
                img.load()
                rgba = np.asarray(ImageOps.exif_transpose(img).convert("RGBA"), np.float32)
                rgba = rgba / 255.0
                rgb = rgba[..., :3] * rgba[..., 3:]
        return rgb
    arr = np.asarray(source)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return as_image(arr[..., :3], name) * as_image(arr[..., 3], name)[..., :1]
    return as_image(arr, name)


def _fit(mask: np.ndarray, hw: tuple[int, int], strict: bool, name: str) -> np.ndarray:
    """Resize a float (h', w') mask to hw (bilinear, antialiased), or raise ImageError."""
    hw = (int(hw[0]), int(hw[1]))
    if mask.shape == hw:
        return mask.astype(np.float32)
    have, want = f"{mask.shape[1]}x{mask.shape[0]}", f"{hw[1]}x{hw[0]}"
    if strict:
        raise ImageError(f"{name}: mask is {have} pixels, the image {want}; they must be equal")
    scaled = fit_size(mask.shape, max(hw))
    if abs(scaled[0] - hw[0]) > 1 or abs(scaled[1] - hw[1]) > 1:
        raise ImageError(f"{name}: mask is {have} pixels, the image {want}: aspect ratios differ")
    # Bilinear has non-negative weights: no ringing, values stay in [0, 1], flat areas stay flat,
    # and masks that sum to 1 (a split region map) still do. Pillow antialiases when shrinking.
    img = Image.fromarray(np.ascontiguousarray(mask, np.float32))
    out = np.asarray(img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR), np.float32)
    return np.clip(out, 0.0, 1.0)


def _source_name(source: MaskLike, name: str | None) -> str:
    if name is not None:
        return name
    return str(source) if isinstance(source, str | Path) else "mask"


def load_mask(
    source: MaskLike, hw: tuple[int, int], *, strict: bool = False, name: str | None = None
) -> np.ndarray:
    """A greyscale guidance mask, float32 (h, w) in [0, 1], at the image size ``hw`` = (h, w).

    ``source`` is an image file (PNG is best: lossless) or an array. Black is outside the region,
    white inside, greys are soft weights. Accepted: 1-bit, 8-bit and 16-bit greyscale (16-bit
    keeps its precision), palette or RGB images whose pixels are grey, and transparency
    (transparent = outside: composited over black). A colour image is refused: a colour-coded
    region map goes to ``load_color_masks``.

    A mask of another size is resized (bilinear) if its aspect ratio matches the image's within
    a pixel, as for a mask drawn on the full-size content photo; ``strict=True`` refuses any size
    difference. Raises ImageError, one line naming the file: unreadable or not an image, colour,
    wrong size or aspect, or empty (all black) after resizing.
    """
    name = _source_name(source, name)
    rgb = _read_rgb(source, name)
    if np.max(np.ptp(rgb, axis=-1)) > GREY_TOLERANCE:
        raise ImageError(
            f"{name}: a mask must be greyscale (black = outside, white = inside), "
            "but this image has colours; a colour-coded region map needs region colours "
            "(--region-colors)"
        )
    mask = _fit(rgb.mean(axis=-1), hw, strict, name)
    if not np.any(mask > 0):
        raise ImageError(f"{name}: mask is empty (all black); mark the region in white")
    return mask


def load_color_masks(
    source: MaskLike,
    hw: tuple[int, int],
    *,
    strict: bool = False,
    max_colors: int = MAX_COLORS,
    name: str | None = None,
) -> dict[str, np.ndarray]:
    """Split a colour-coded region map into one mask per colour: {"#rrggbb": (h, w) float32}.

    One flat colour per region (8-bit sRGB values; transparent pixels count as black). Keys are
    lowercase hex colours, sorted; the same colours in the content's and the style's map name
    corresponding regions. At the map's own size the masks are binary and partition the image;
    resized to ``hw`` (as ``load_mask``: bilinear, aspect within a pixel unless ``strict``) they
    are soft but still sum to 1 everywhere. More than ``max_colors`` distinct colours is an
    ImageError (anti-aliased edges or JPEG compression invent colours), as is any problem
    ``load_mask`` reports about reading or size.
    """
    name = _source_name(source, name)
    rgb = np.round(_read_rgb(source, name) * 255.0).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colors, labels = np.unique(codes, return_inverse=True)
    labels = labels.reshape(codes.shape)
    if len(colors) > max_colors:
        raise ImageError(
            f"{name}: {len(colors)} distinct colours, more than {max_colors}; a region map needs "
            "flat colours (no anti-aliased edges, not saved as JPEG)"
        )
    return {
        f"#{int(c):06x}": _fit((labels == i).astype(np.float32), hw, strict, name)
        for i, c in enumerate(colors)
    }


WHOLE_IMAGE = "all"  # in a list of style-side masks: this style image's whole area


def region_masks(
    sources: Sequence[MaskLike],
    count: int,
    hw: tuple[int, int],
    colors: Sequence[str] = (),
    *,
    side: str = "masks",
) -> list[np.ndarray]:
    """One mask per style image at the image size ``hw``: float32 (h, w) each, in style order.

    ``sources`` is either ``count`` greyscale masks (paths or arrays, ``load_mask``; the string
    "all" means the whole image) or a single colour-coded region map with ``colors`` naming each
    style image's region ("#rrggbb", ``load_color_masks``). ``side`` names the option in
    errors. Raises ImageError (one line) for a wrong count, an unknown colour, or a bad mask.
    """
    sources = list(sources)
    if colors:
        if len(sources) != 1:
            raise ImageError(
                f"{side}: region colours need one colour-coded map, not {len(sources)}"
            )
        if len(colors) != count:
            raise ImageError(
                f"{side}: {len(colors)} region colours for {count} style image(s); give one each"
            )
        name = _source_name(sources[0], None)
        by_color = load_color_masks(sources[0], hw, name=name)
        out = []
        for c in colors:
            if c.lower() not in by_color:
                raise ImageError(
                    f"{name}: no region of colour {c.lower()}; the map has {', '.join(by_color)}"
                )
            out.append(by_color[c.lower()])
        return out
    if len(sources) != count:
        raise ImageError(
            f"{side}: {len(sources)} mask(s) for {count} style image(s); give one per style "
            "image, or one colour-coded map with region colours"
        )
    return [
        np.ones(tuple(hw), np.float32)
        if isinstance(src, str) and src == WHOLE_IMAGE
        else load_mask(src, hw, name=None if isinstance(src, str | Path) else f"{side} {i + 1}")
        for i, src in enumerate(sources)
    ]


def background_mask(masks: Sequence[np.ndarray]) -> np.ndarray:
    """The part of the image no region covers: 1 - min(1, sum of the masks), (h, w) float32."""
    return np.clip(1.0 - np.sum(np.stack(masks), axis=0), 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------- masks -> per layer


def _window3(mask: np.ndarray, reduce, pad: float) -> np.ndarray:
    """3x3 min/max filter, positions outside the image ignored (padded with the neutral value)."""
    h, w = mask.shape
    p = np.pad(mask, 1, constant_values=pad)
    shifted = [p[i : i + h, j : j + w] for i in range(3) for j in range(3)]
    return reduce(np.stack(shifted), axis=0)


def mask_pyramid(
    mask: np.ndarray, layers: Sequence[str], mode: str = "simple"
) -> dict[str, np.ndarray]:
    """The guidance channel at each VGG19 layer's resolution: {layer: float32 (h_l, w_l)}.

    ``mask`` is (h, w) in [0, 1] at the network's input size; ``layers`` are paper names
    (``conv3_1``, ``pool2``, ...). Each pooling halves the size with the floor, as VGG's 2x2
    stride-2 VALID pooling does (an odd last row/column is dropped), so shapes equal those of
    ``vgg.extract_features``. ``mode`` (the paper's sec. 4 offers both of the first two):

    - "simple": downsample only; each pooling takes the 2x2 mean (area downsampling), convs
      leave the mask unchanged. Cheap; features near a region's edge see both regions.
    - "inside": propagate through the receptive fields: after each 3x3 conv a 3x3 min-filter,
      after each pooling the 2x2 min. A position keeps weight only if its whole receptive field
      in the input lies inside the region (erosion; exact for binary masks, grey-scale erosion for
      soft ones), so no feature mixes in the other region. Image borders do not erode (the
      padding is not another region). Small regions vanish in deep layers: their loss there is 0.
    - "all": the dual, max instead of min (dilation): weight wherever the receptive field
      touches the region.

    Pointwise inside <= simple <= all. Computed once on the host, in NumPy.
    """
    if mode not in PYRAMID_MODES:
        raise ValueError(f"mode must be one of {PYRAMID_MODES}, not {mode!r}")
    layers = tuple(layers)
    check_layers(layers)
    m = np.asarray(mask, np.float64)
    if m.ndim != 2:
        raise ValueError(f"mask must be (h, w), not shape {m.shape}")
    out: dict[str, np.ndarray] = {}
    if not layers:
        return out
    last = max(LAYER_INDEX[k] for k in layers)
    for name in LAYER_NAMES[: last + 1]:
        if name.startswith("conv"):
            if mode == "inside":
                m = _window3(m, np.min, np.inf)
            elif mode == "all":
                m = _window3(m, np.max, -np.inf)
        else:
            h, w = m.shape[0] // 2, m.shape[1] // 2
            blocks = m[: 2 * h, : 2 * w].reshape(h, 2, w, 2)
            reduce = {"simple": np.mean, "inside": np.min, "all": np.max}[mode]
            m = reduce(blocks, axis=(1, 3))
        if name in layers:
            out[name] = m.astype(np.float32)
    return out


def mask_area(mask: jax.Array) -> jax.Array:
    """M^r = sum(T^2): the (soft) number of positions a guided Gram weighs. (h, w) -> scalar."""
    m = jnp.asarray(mask, jnp.float32)
    return jnp.sum(m * m)


def drop_empty_layers(
    content_pyramid: Mapping[str, np.ndarray], style_pyramid: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The content-side pyramid with a layer's mask zeroed where the style-side mask is empty.

    Without this, a region that erosion ("inside") wipes out in the style image at some layer
    would have a zero target there, and the loss would push the output's features to zero. A
    zero content-side mask makes ``guided_style_layer_loss`` contribute exactly 0 instead.
    Host-side, NumPy; both pyramids have the same layers.
    """
    return {
        k: m if np.any(np.asarray(style_pyramid[k]) > 0) else np.zeros_like(m)
        for k, m in content_pyramid.items()
    }


def stack_regions(per_region: Sequence[Mapping[str, Any]]) -> dict[str, jax.Array]:
    """[{layer: (...)} per region] -> {layer: (R, ...)}, for ``guided_style_losses``."""
    if not per_region:
        raise ValueError("at least one region is needed")
    return {k: jnp.stack([jnp.asarray(r[k]) for r in per_region]) for k in per_region[0]}


# ---------------------------------------------------------------------------------- the loss


def guided_gram(feats: jax.Array, mask: jax.Array) -> jax.Array:
    """G^r = (F * T)^T (F * T), Gatys et al. 2017 eq. 6. feats (h, w, N), mask (h, w) -> (N, N).

    Unnormalised, float32 at full precision; with an all-ones mask it is ``losses.gram(feats)``.
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
    ``losses.features``); ``pyramid`` is ``mask_pyramid`` of the style-side mask at the style
    image's size. The Grams are normalised by their region's area (see the module docstring);
    compare them with ``guided_style_layer_loss``, never with ``losses.style_layer_loss``.
    """
    return {k: normalized_guided_gram(feats[k], m) for k, m in pyramid.items()}


def guided_style_layer_loss(feats: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """E_l^r = sum((G^r / M^r - target)^2) / (4 N^2); 0 when the mask is empty.

    feats (h, w, N) of the image being optimised, ``target`` (N, N) from ``guided_style_grams``,
    mask (h, w) its content-side mask at this layer. The gradient with respect to ``feats`` is
    exactly zero wherever the mask is zero. For all-ones masks and target = gram(P) / (h * w) of
    an equal-sized style layer P this equals ``losses.style_layer_loss(feats, gram(P))``.
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
    masks {layer: (R, h_l, w_l)}: R regions stacked (``stack_regions`` of per-region
    ``guided_style_grams`` and content-side ``mask_pyramid`` results). A drop-in for the (L,)
    per-layer unguided losses in ``losses.loss_parts``: L_style = sum_l w_l E_l (eq. 5).

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
