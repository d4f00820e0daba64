"""The paper's normalised VGG19: each filter rescaled so its mean activation over images is 1.

Gatys et al. (2016, sec. 2): "We normalized the network by scaling the weights such that the mean
activation of each convolutional filter over images and positions is equal to one." Because ReLU
and both poolings commute with a positive per-channel scale, dividing filter k of layer l (kernel
and bias) by its mean m_lk and multiplying the matching input channel of layer l+1 by m_lk leaves
every later pre-activation unchanged while each rectified response has mean 1. With it the paper's
alpha/beta ratios (1e-3 to 1e-4) mean what they meant there.

The means are measured once by ``scripts/compute_normalization.py`` over scikit-image's bundled
photographs (a stand-in for the paper's ImageNet) and shipped in ``weights/vgg19_means.npz``,
per pooling mode, so no image set is needed at run time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.errors import WeightsError
from jaxnst.vgg import CONV_LAYERS, Params, extract_features

DEFAULT_MEANS = Path(__file__).resolve().parent.parent / "weights" / "vgg19_means.npz"


def activation_means(params: Params, images: Iterable[np.ndarray], pooling: str) -> dict:
    """Mean rectified activation per filter of every conv layer over ``images`` and positions.

    Each image (h, w, 3) in [0, 1] counts equally. Returns {layer: (c,) float64}.
    """
    fn = jax.jit(
        lambda p, x: {
            k: jnp.mean(v, axis=(0, 1))
            for k, v in extract_features(p, x, CONV_LAYERS, pooling).items()
        }
    )
    sums, count = None, 0
    for image in images:
        means = jax.device_get(fn(params, jnp.asarray(image, jnp.float32)))
        if sums is None:
            sums = {k: np.asarray(v, np.float64) for k, v in means.items()}
        else:
            for k, v in means.items():
                sums[k] += v
        count += 1
    if not count:
        raise ValueError("no images")
    return {k: v / count for k, v in sums.items()}


def rescale(params: Params, means: dict[str, np.ndarray]) -> Params:
    """Params whose filter k of layer l is divided by means[l][k] (compensated downstream).

    Filters that never fire (mean 0) are left as they are.
    """
    out, prev = {}, None
    for name in CONV_LAYERS:
        kernel = jnp.asarray(params[name]["kernel"])
        bias = jnp.asarray(params[name]["bias"])
        m = np.asarray(means[name], np.float64)
        scale = np.where(m > 0, m, 1.0).astype(np.float32)
        if prev is not None:  # undo the previous layer's scaling on this layer's input
            kernel = kernel * prev[None, None, :, None]
        out[name] = {"kernel": kernel / scale, "bias": bias / scale}
        prev = scale
    return out


def load_means(pooling: str, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The shipped per-filter means for ``pooling`` ("max" or "avg")."""
    path = Path(path) if path else DEFAULT_MEANS
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[f"{pooling}/{k}"] for k in CONV_LAYERS}
    except (OSError, KeyError, ValueError) as err:
        raise WeightsError(f"{path}: cannot read the normalisation means ({err})") from None


def normalize_params(params: Params, pooling: str, path: str | Path | None = None) -> Params:
    """The paper's normalised network: ``rescale(params, load_means(pooling))``."""
    return rescale(params, load_means(pooling, path))
