"""Colour control: Gatys, Ecker, Bethge, Hertzmann & Shechtman (CVPR 2017), section 5.

"Controlling Perceptual Factors in Neural Style Transfer" keeps the content image's colours in
two ways, both built from the pure functions here:

- **Luminance-only transfer** (sec. 5.1): run the ordinary algorithm on luminance images,
  ``to_luminance_image(luminance(content))`` and ``to_luminance_image(match_luminance(...))``,
  then put the result's luminance under the content's chroma with ``combine_luminance``.
- **Colour histogram matching** (sec. 5.2): before the run, map the style image's pixels
  x -> A (x - mu_s) + mu_c so that their mean and covariance equal the content's
  (``match_color_histogram``), then stylise with the recoloured style image as usual.

``color_control`` prepares a run's content and style images for ``cfg.color_mode``.
``color_swap`` is the cheap post-process of the classic tools ("original colors"): the result's
luminance with the content's chroma, the same operation as ``combine_luminance``.

The colour space is NTSC YIQ (as in the paper): Y = 0.299 R + 0.587 G + 0.114 B. The I and Q rows
sum to zero, so a grey pixel has I = Q = 0 and the luminance swap reduces to
``content + (Y_result - Y_content)`` on every channel; that is also what full-range BT.601 YCbCr
gives, since its chroma rows sum to zero as well (only LAB-like non-linear spaces would differ).

Images are float (..., h, w, 3) RGB in [0, 1]. The colour-space functions (``rgb_to_yiq``,
``yiq_to_rgb``, ``luminance``, ``to_luminance_image``, ``combine_luminance``, ``color_swap``)
work on NumPy arrays (computed in float64, returned as float32) and on JAX arrays, so they can run
under ``jit``/``vmap``/``grad``. The statistics-matching functions (``match_luminance``,
``match_color_histogram``) run once on the host before the optimisation: NumPy, float64 inside.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.config import HISTOGRAM_BASES, StyleConfig

Array = Any  # np.ndarray or jax.Array

# NTSC (FCC 1953) RGB -> YIQ. Rows: Y, I, Q. The I and Q rows sum to exactly 0.
RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    np.float64,
)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)  # the exact inverse, not the rounded textbook matrix


def _is_jax(x: Array) -> bool:
    return isinstance(x, jax.Array)  # concrete arrays and tracers alike


def _mix(image: Array, matrix: np.ndarray) -> Array:
    """A 3x3 colour matrix on the last axis: out[..., i] = sum_j matrix[i, j] image[..., j]."""
    if _is_jax(image):
        m = jnp.asarray(matrix, image.dtype)
        return jnp.einsum("...j,ij->...i", image, m, precision=jax.lax.Precision.HIGHEST)
    out = np.einsum("...j,ij->...i", np.asarray(image, np.float64), matrix)
    return out.astype(np.float32)


def _check_rgb(image: Array, name: str) -> None:
    if image.ndim < 3 or image.shape[-1] != 3:
        raise ValueError(f"{name}: expected an RGB image (..., h, w, 3), not shape {image.shape}")


def rgb_to_yiq(image: Array) -> Array:
    """RGB (..., 3) in [0, 1] -> YIQ (..., 3): Y in [0, 1], I in ~[-0.6, 0.6], Q in ~[-0.5, 0.5]."""
    return _mix(image, RGB_TO_YIQ)


def yiq_to_rgb(yiq: Array) -> Array:
    """YIQ (..., 3) -> RGB (..., 3), the exact inverse of ``rgb_to_yiq`` (not clipped)."""
    return _mix(yiq, YIQ_TO_RGB)


def luminance(image: Array) -> Array:
    """Y = 0.299 R + 0.587 G + 0.114 B: RGB (..., h, w, 3) -> (..., h, w), in [0, 1]."""
    _check_rgb(image, "image")
    if _is_jax(image):
        w = jnp.asarray(RGB_TO_YIQ[0], image.dtype)
        return jnp.einsum("...j,j->...", image, w, precision=jax.lax.Precision.HIGHEST)
    return (np.asarray(image, np.float64) @ RGB_TO_YIQ[0]).astype(np.float32)


def to_luminance_image(image: Array) -> Array:
    """A grey (..., h, w, 3) image whose three channels all hold Y (VGG needs three channels).

    ``image`` is a luminance (h, w), or RGB (..., h, w, 3) whose luminance is taken.
    """
    y = image if image.ndim == 2 else luminance(image)
    if _is_jax(y):
        return jnp.repeat(y[..., None], 3, axis=-1)
    return np.repeat(np.asarray(y, np.float32)[..., None], 3, axis=-1)


def combine_luminance(result_y: Array, content_rgb: Array, clip: bool = True) -> Array:
    """The result's luminance with the content's chroma (I, Q): RGB (..., h, w, 3), float32.

    ``result_y`` is a luminance (..., h, w) (for an RGB result, use ``color_swap``, which takes
    its luminance first); ``content_rgb`` is (h, w, 3) with the same h, w, and a leading batch
    axis of results broadcasts against it. Clipped to [0, 1] unless ``clip=False`` (a bright Y
    under a saturated chroma leaves the RGB cube).
    """
    _check_rgb(content_rgb, "content")
    if result_y.ndim < 2 or result_y.shape[-2:] != content_rgb.shape[-3:-1]:
        raise ValueError(
            f"luminance {tuple(result_y.shape)} does not fit content {tuple(content_rgb.shape)}"
        )
    xp = jnp if _is_jax(result_y) or _is_jax(content_rgb) else np
    iq = rgb_to_yiq(content_rgb)[..., 1:]
    y = xp.asarray(result_y, iq.dtype)[..., None]
    yiq = xp.concatenate([y, xp.broadcast_to(iq, y.shape[:-1] + (2,))], axis=-1)
    rgb = yiq_to_rgb(yiq)
    return xp.clip(rgb, 0.0, 1.0) if clip else rgb


def color_swap(result_rgb: Array, content_rgb: Array, clip: bool = True) -> Array:
    """Keep the content's colours after the run: the result's Y with the content's I and Q.

    result_rgb (..., h, w, 3) and content_rgb (h, w, 3) in [0, 1] -> float32 (..., h, w, 3).
    The classic "original colors" post-process (neural-style ``-original_colors 1``), done in YIQ;
    identical to doing it in BT.601 YCbCr (see the module docstring). Unlike luminance-only
    transfer the style's colours still shape the optimisation; only the output is recoloured.
    """
    _check_rgb(result_rgb, "result")
    return combine_luminance(luminance(result_rgb), content_rgb, clip)


def match_luminance(
    style_y: Array, content_y: Array, eps: float = 1e-8, clip: bool = True
) -> np.ndarray:
    """The style's luminance linearly mapped to the content's mean and standard deviation.

    L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c (Gatys et al. 2017, sec. 5.1). Inputs are
    luminances (h, w) in [0, 1] (the two sizes may differ); returns float32 (h_s, w_s), clipped to
    [0, 1] unless ``clip=False`` (clipping breaks the exact moments). A flat style (sigma_s <= eps)
    is only shifted to the content's mean.
    """
    s = np.asarray(style_y, np.float64)
    c = np.asarray(content_y, np.float64)
    mu_s, sd_s, mu_c, sd_c = s.mean(), s.std(), c.mean(), c.std()
    scale = sd_c / sd_s if sd_s > eps else 0.0
    out = scale * (s - mu_s) + mu_c
    return (np.clip(out, 0.0, 1.0) if clip else out).astype(np.float32)


def _mean_cov(image: Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and population covariance (3, 3), 1/n, of an image's pixels, in float64."""
    x = np.asarray(image, np.float64).reshape(-1, 3)
    mu = x.mean(axis=0)
    d = x - mu
    return mu, d.T @ d / len(x)


def _eigh(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending, >= 0) and eigenvectors with a canonical sign: sum(q) >= 0."""
    lam, q = np.linalg.eigh(cov)
    # A signed basis is arbitrary; fixing it keeps "pca" from flipping an axis (e.g. inverting
    # brightness). Columns with sum ~0 fall back to their largest entry being positive.
    sums = q.sum(axis=0)
    tie = np.abs(sums) < 1e-9
    key = np.where(tie, q[np.abs(q).argmax(axis=0), np.arange(3)], sums)
    return np.maximum(lam, 0.0), q * np.where(key < 0, -1.0, 1.0)


def histogram_matrix(cov_style: np.ndarray, cov_content: np.ndarray, mode: str) -> np.ndarray:
    """A (3, 3) with A cov_style A^T = cov_content (both symmetric positive definite).

    - "cholesky": A = L_c L_s^-1, with cov = L L^T (Gatys et al. 2017, sec. 5.2).
    - "pca": A = Q_c Lambda_c^1/2 Lambda_s^-1/2 Q_s^T: whiten the style in its principal axes,
      recolour along the content's, matched by rank of variance; Q_c's columns are signed to agree
      with Q_s's so no axis is flipped.
    - "sym": A = cov_c^1/2 cov_s^-1/2, symmetric square roots (Hertzmann's image analogies
      colour matching; the paper's "3D colour matching"): the least rotation of the three.
    """
    if mode == "cholesky":
        return np.linalg.cholesky(cov_content) @ np.linalg.inv(np.linalg.cholesky(cov_style))
    lam_s, q_s = _eigh(cov_style)
    lam_c, q_c = _eigh(cov_content)
    if mode == "pca":
        q_c = q_c * np.where(np.sum(q_c * q_s, axis=0) < 0, -1.0, 1.0)
        return (q_c * np.sqrt(lam_c)) @ (q_s / np.sqrt(lam_s)).T
    if mode == "sym":
        root_c = (q_c * np.sqrt(lam_c)) @ q_c.T
        inv_root_s = (q_s / np.sqrt(lam_s)) @ q_s.T
        return root_c @ inv_root_s
    raise ValueError(f"mode must be one of {HISTOGRAM_BASES}, not {mode!r}")


def match_color_histogram(
    style_rgb: Array,
    content_rgb: Array,
    mode: str = "cholesky",
    eps: float = 1e-5,
    clip: bool = True,
) -> np.ndarray:
    """The style image recoloured so its pixels' mean and covariance are the content's.

    x -> A (x - mu_s) + mu_c for every style pixel x, with A cov_s A^T = cov_c
    (``histogram_matrix``; Gatys et al. 2017, sec. 5.2). Covariances are the population ones
    (1/n) over all pixels, regularised with ``eps * I`` so a grey or flat image does not break
    the inverse; so the match is exact up to O(eps) (eps = 1e-5 is a standard deviation of
    ~0.003, under one 8-bit level; pass eps=0 for images with full-rank colour covariance).
    style_rgb (h_s, w_s, 3), content_rgb (h_c, w_c, 3) in [0, 1] -> float32 (h_s, w_s, 3),
    clipped to [0, 1] unless ``clip=False`` (clipping breaks the exact moments).
    """
    _check_rgb(style_rgb, "style")
    _check_rgb(content_rgb, "content")
    if mode not in HISTOGRAM_BASES:
        raise ValueError(f"mode must be one of {HISTOGRAM_BASES}, not {mode!r}")
    mu_s, cov_s = _mean_cov(style_rgb)
    mu_c, cov_c = _mean_cov(content_rgb)
    eye = eps * np.eye(3)
    a = histogram_matrix(cov_s + eye, cov_c + eye, mode)
    x = np.asarray(style_rgb, np.float64)
    out = (x - mu_s) @ a.T + mu_c
    return (np.clip(out, 0.0, 1.0) if clip else out).astype(np.float32)


def color_control(
    content: np.ndarray, styles: list[np.ndarray], cfg: StyleConfig
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The content and styles the loss sees under ``cfg.color_mode`` (Gatys et al. 2017, sec. 5).

    "histogram": each style recoloured to the content's colour mean and covariance.
    "luminance": both as grey luminance images, each style's luminance matched to the content's
    mean and spread; the result's luminance goes back under the content's colours at the end.
    """
    if cfg.color_mode == "histogram":
        return content, [match_color_histogram(s, content, cfg.histogram_basis) for s in styles]
    if cfg.color_mode == "luminance":
        y = luminance(content)
        grey = [to_luminance_image(match_luminance(luminance(s), y)) for s in styles]
        return np.asarray(to_luminance_image(y), np.float32), grey
    return content, styles
