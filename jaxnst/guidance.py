"""Spatial control on the host: Gatys, Ecker, Bethge, Hertzmann & Shechtman (CVPR 2017), sec. 4.

A *guidance channel* (mask) T^r in [0, 1] marks region r of an image. This module turns the masks
a user gives (files or arrays, read by ``jaxnst.image.load_mask`` / ``load_color_masks``) into
what the guided style loss (``jaxnst.losses.guided_style_losses``) needs, in NumPy, once:

- one mask per style image: ``region_masks`` (greyscale masks, "all", or a colour-coded map),
  and ``background_mask`` (the part no region covers);
- each mask at every layer's resolution: ``mask_pyramid`` ("simple", "inside" or "all");
- ``drop_empty_layers`` and ``stack_regions`` arrange the pyramids for the loss;
- ``gate_mask``: where the image may change at all, so that the photo stays outside the masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.config import MASK_LAYERS
from jaxnst.errors import ImageError
from jaxnst.image import MaskLike, load_color_masks, load_mask, source_name
from jaxnst.layers import LAYER_INDEX, LAYER_NAMES, check_layers

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
        name = source_name(sources[0], None)
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


def _sliding(mask: np.ndarray, size: int, reduce) -> np.ndarray:
    """A ``size`` x ``size`` max or mean filter, separable, the border pixels repeated."""
    r = size // 2
    for axis in (0, 1):
        padded = np.pad(mask, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        n = mask.shape[axis]
        shifted = [np.take(padded, range(i, i + n), axis=axis) for i in range(size)]
        mask = reduce(np.stack(shifted), axis=0)
    return mask


def gate_mask(masks: Sequence[np.ndarray], radius: int) -> np.ndarray:
    """Where spatial control lets the image change: (h, w, 1) float32 in [0, 1].

    1 on every pixel a region touches (mask > 0), falling linearly to 0 at 2 * ``radius`` px
    from it (the union grown by ``radius``, then a box blur of the same radius): 0 further out,
    where the image is the photograph by construction (``losses.gate_image``).
    """
    union = (np.max(np.stack(masks), axis=0) > 0).astype(np.float32)
    r = max(0, int(radius))
    if r == 0:
        return union[..., None]
    grown = _sliding(union, 2 * r + 1, np.max)
    return np.clip(_sliding(grown, 2 * r + 1, np.mean), 0.0, 1.0).astype(np.float32)[..., None]


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
    if mode not in MASK_LAYERS:
        raise ValueError(f"mode must be one of {MASK_LAYERS}, not {mode!r}")
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
