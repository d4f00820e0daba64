"""How far a result is from what it was asked to be: a content measure and a style measure.

The numbers the size, video and network benchmarks report, on the plain VGG19 (max pooling)
whatever the run used, so that runs of different options compare:

- content: ||F - P|| / ||P|| at ``conv4_2``, F the result's activations, P the photograph's;
- style: per style layer ||G_l / M_l - A_l / M_s|| / ||A_l / M_s||, per-position Grams of the
  result and the style image (so images of any size compare), and their mean over the layers;
- layout: the content measure at one reference size (512 px): the result resized to it against
  the photograph at it. At 128 px conv4_2 has 16x12 positions and the content measure is about 1
  whether or not the town can be made out; seen at 512 px, where VGG resolves the photo's
  objects, a small picture that lost them scores worse than one that kept them (measured in
  docs/benchmarks.md, "The same look at every size").

Lower is closer. Images are float (h, w, 3) in [0, 1] (uint8 is converted).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.config import PAPER_STYLE_LAYERS
from jaxnst.image import resize
from jaxnst.terms import gram
from jaxnst.vgg import Params, extract_features

CONTENT_LAYER = "conv4_2"


@functools.partial(jax.jit, static_argnames="layers")
def _statistics(params: Params, image: jax.Array, layers: tuple[str, ...]) -> dict:
    feats = extract_features(params, image, (*layers, CONTENT_LAYER), "max")
    out = {k: gram(feats[k]) / (feats[k].shape[0] * feats[k].shape[1]) for k in layers}
    out[CONTENT_LAYER] = feats[CONTENT_LAYER]
    return out


def _float(image: Any) -> jax.Array:
    a = np.asarray(image)
    return jnp.asarray(a / 255.0 if a.dtype == np.uint8 else a, jnp.float32)


def statistics(params: Params, image: Any, layers: tuple[str, ...] = PAPER_STYLE_LAYERS) -> dict:
    """{layer: per-position Gram (N, N)} for ``layers``, and the content layer's activations."""
    return jax.device_get(_statistics(params, _float(image), tuple(layers)))


def content_error(params: Params, result: Any, content: Any) -> float:
    """||F - P|| / ||P|` at conv4_2 (the two images of one size)."""
    f = statistics(params, result, ())[CONTENT_LAYER]
    p = statistics(params, content, ())[CONTENT_LAYER]
    return float(np.linalg.norm(f - p) / np.linalg.norm(p))


def layout_error(params: Params, result: Any, content: Any) -> float:
    """The content measure of ``result`` resized to ``content``'s size (the reference, e.g. the
    photograph at 512 px)."""
    r = np.asarray(_float(result))
    return content_error(params, resize(r, content.shape[:2]), content)


def style_errors(
    params: Params, result: Any, style: Any, layers: tuple[str, ...] = PAPER_STYLE_LAYERS
) -> dict[str, float]:
    """Per style layer, the relative distance of the result's per-position Gram to the style's."""
    g, a = statistics(params, result, layers), statistics(params, style, layers)
    return {k: float(np.linalg.norm(g[k] - a[k]) / np.linalg.norm(a[k])) for k in layers}


def measures(params: Params, result: Any, content: Any, style: Any) -> dict[str, float]:
    """{"content": ..., "style": mean over the layers, "style/<layer>": ...}."""
    per_layer = style_errors(params, result, style)
    return {
        "content": content_error(params, result, content),
        "style": float(np.mean(list(per_layer.values()))),
        **{f"style/{k}": v for k, v in per_layer.items()},
    }
