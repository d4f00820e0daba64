"""Optical flow for video style transfer (Ruder, Dosovitskiy & Brox 2016): estimate, trust, warp.

One convention everywhere (this module, ``jaxnst.clips``, the video driver):

- A flow is float32 ``(h, w, 2)`` in pixels, ``(dx, dy)``: dx along columns (right), dy along rows
  (down). ``flow_ab = optical_flow(a, b)`` lives on a's grid and points into b:
  ``a(p) ~ b(p + flow_ab(p))`` -- what OpenCV returns for ``calc(prev=a, next=b)``.
- ``warp(b, flow_ab)`` pulls b onto a's grid: ``warp(b, flow_ab)(p) = b(p + flow_ab(p)) ~ a(p)``.
  The stylised frame i-1 warped into frame i (Ruder's omega_{i-1}^i) is
  ``warp(x[i-1], optical_flow(frame[i], frame[i-1]))``: the *backward* flow of the pair.
- ``reliability(flow_ab, flow_ba)`` is c on a's grid: 1 where ``warp(., flow_ab)`` can be trusted.
- For a clip and a step j, ``clip_flows`` gives ``forward[k] = optical_flow(frame[k], frame[k+j])``
  (on frame k) and ``backward[k] = optical_flow(frame[k+j], frame[k])`` (on frame k+j), k < n-j.

The host part (OpenCV, the cache) returns NumPy; ``warp``, ``reliability`` and the rest are pure
JAX: jit, vmap (frames as the example axis) and grad work on them. The temporal loss itself is
``jaxnst.losses.temporal_loss``.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import as_image, atomic_write

CACHE_VERSION = 1  # bump when the grey conversion or the cache layout changes
DIS_PRESETS = ("ultrafast", "fast", "medium")
# Defaults per method; keyword options of optical_flow override them (and key the cache).
FLOW_OPTIONS = {
    # DIS (Kroeger et al., ECCV 2016): a preset, optionally more variational refinement.
    "dis": {"preset": "medium", "variational_iterations": None},
    # Farneback (SCIA 2003): a 5-level pyramid follows motions of ~30 px at 256 px.
    "farneback": {
        "pyr_scale": 0.5,
        "levels": 5,
        "winsize": 15,
        "iterations": 3,
        "poly_n": 7,
        "poly_sigma": 1.5,
    },
}
# Ruder et al. 2016, "Temporal consistency loss": the forward-backward and boundary thresholds.
DISOCCLUSION_REL, DISOCCLUSION_ABS = 0.01, 0.5
BOUNDARY_REL, BOUNDARY_ABS = 0.01, 0.002


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ConfigError("optical flow needs OpenCV: pip install 'jaxnst[video]'") from None
    return cv2


def flow_options(method: str = "dis", **overrides) -> dict:
    """The full, validated option dict of ``method`` (defaults updated by ``overrides``)."""
    if method not in FLOW_OPTIONS:
        raise ConfigError(f"unknown flow method {method!r} (use {' or '.join(FLOW_OPTIONS)})")
    unknown = sorted(set(overrides) - set(FLOW_OPTIONS[method]))
    if unknown:
        known = ", ".join(FLOW_OPTIONS[method])
        raise ConfigError(f"flow method {method!r} has no option {unknown[0]!r} (it has {known})")
    options = {**FLOW_OPTIONS[method], **overrides}
    if method == "dis" and options["preset"] not in DIS_PRESETS:
        raise ConfigError(
            f"unknown DIS preset {options['preset']!r} (use {', '.join(DIS_PRESETS)})"
        )
    return options


def to_grey(frame: np.ndarray) -> np.ndarray:
    """float (h, w, 3) RGB in [0, 1] -> uint8 (h, w) luma (BT.601), what OpenCV's flows read."""
    luma = np.asarray(frame, np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return np.round(np.clip(luma, 0.0, 1.0) * 255.0).astype(np.uint8)


def _flow_fn(method: str, options: dict):
    """A function (grey_a, grey_b) -> flow on a's grid."""
    cv2 = _cv2()
    if method == "dis":
        preset = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{options['preset'].upper()}")

        def dis(a, b):
            # A fresh object per pair: a reused one keeps state, and its second result on the
            # same pair differs (by 0.05 px at 32 px), so results would depend on the order.
            engine = cv2.DISOpticalFlow_create(preset)
            if options["variational_iterations"] is not None:
                engine.setVariationalRefinementIterations(int(options["variational_iterations"]))
            return engine.calc(a, b, None)

        return dis
    o = options
    return lambda a, b: cv2.calcOpticalFlowFarneback(
        a, b, None, o["pyr_scale"], o["levels"], o["winsize"], o["iterations"], o["poly_n"],
        o["poly_sigma"], 0,
    )  # fmt: skip


def _grey_frames(frames, name: str) -> np.ndarray:
    greys = [to_grey(as_image(f, f"{name}[{i}]")) for i, f in enumerate(frames)]
    shapes = {g.shape for g in greys}
    if len(shapes) > 1:
        raise ImageError(f"{name}: frames differ in size ({', '.join(map(str, sorted(shapes)))})")
    return np.stack(greys)


def optical_flow(frame_a, frame_b, method: str = "dis", **options) -> np.ndarray:
    """Dense flow from ``frame_a`` to ``frame_b``: float32 (h, w, 2), (dx, dy) pixels on a's grid.

    ``frame_a(p) ~ frame_b(p + flow(p))``, so ``warp(frame_b, flow) ~ frame_a``. Frames are
    images as ``jaxnst.image.as_image`` takes them (float (h, w, 3) RGB in [0, 1], uint8, ...) of
    one size; the flow is computed on their 8-bit luma. ``method``: "dis" (default; options
    ``preset`` ultrafast/fast/medium, ``variational_iterations``) or "farneback" (``pyr_scale``,
    ``levels``, ``winsize``, ``iterations``, ``poly_n``, ``poly_sigma``); ``FLOW_OPTIONS`` has the
    defaults. Needs the ``video`` extra (OpenCV).
    """
    opts = flow_options(method, **options)
    grey = _grey_frames([frame_a, frame_b], "optical_flow")
    return np.asarray(_flow_fn(method, opts)(grey[0], grey[1]), np.float32)


class ClipFlows(NamedTuple):
    """Flows between frames k and k + step of a clip of n frames, each (n - step, h, w, 2) float32.

    forward[k]: optical_flow(frame[k], frame[k+step]), on frame k's grid.
    backward[k]: optical_flow(frame[k+step], frame[k]), on frame k+step's grid.
    """

    forward: np.ndarray
    backward: np.ndarray
    step: int


def _cache_key(greys: np.ndarray, step: int, method: str, options: dict) -> str:
    cv2 = _cv2()
    head = json.dumps(
        [CACHE_VERSION, method, options, step, cv2.__version__, list(greys.shape)], sort_keys=True
    )
    digest = hashlib.sha256(head.encode())
    for grey in greys:  # one digest per frame, chained: the key changes with any frame
        digest.update(hashlib.sha256(grey.tobytes()).digest())
    return digest.hexdigest()


def _read_cache(path: Path, key: str, shape: tuple, step: int) -> ClipFlows | None:
    """The cached flows if ``path`` holds them for ``key``; None when absent, stale or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            forward, backward = data["forward"], data["backward"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if forward.shape != shape or backward.shape != shape or forward.dtype != np.float32:
        return None
    return ClipFlows(forward, backward, step)


def clip_flows(
    frames,
    step: int = 1,
    method: str = "dis",
    cache_dir: str | Path | None = None,
    **options,
) -> ClipFlows:
    """Forward and backward flow between frames k and k + ``step`` of a clip (see ``ClipFlows``).

    ``frames``: (n, h, w, 3) float in [0, 1] (or a sequence of images of one size), n > step.
    Steps 10, 20, 40 give the long-term flows of Ruder et al. (J = {1, 10, 20, 40}). With
    ``cache_dir``, the result is stored there in ``flow-<method>-<key>.npz`` (written atomically,
    read with ``allow_pickle=False``), the key a SHA-256 of every frame's 8-bit luma, the step,
    the method, its options and the OpenCV version: a rerun on the same frames reads it back
    instead of recomputing; a corrupt or stale file is recomputed and replaced.
    """
    opts = flow_options(method, **options)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"flow step must be a positive integer, not {step!r}")
    greys = _grey_frames(frames, "clip")
    n = len(greys)
    if n <= step:
        raise ConfigError(f"a clip of {n} frame(s) has no pairs {step} frame(s) apart")
    shape = (n - step, *greys.shape[1:], 2)
    path = None
    if cache_dir is not None:
        key = _cache_key(greys, step, method, opts)
        cache_dir = Path(cache_dir)
        path = cache_dir / f"flow-{method}-{key[:24]}.npz"
        cached = _read_cache(path, key, shape, step)
        if cached is not None:
            return cached
    flow = _flow_fn(method, opts)
    forward = np.stack([flow(greys[k], greys[k + step]) for k in range(n - step)])
    backward = np.stack([flow(greys[k + step], greys[k]) for k in range(n - step)])
    result = ClipFlows(forward.astype(np.float32), backward.astype(np.float32), step)
    if path is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"{cache_dir}: cannot create the flow cache ({err.strerror})"
            ) from None

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, key=np.str_(key), forward=result.forward, backward=result.backward)

        atomic_write(path, write)
    return result


# ------------------------------------------------------------------ pure JAX from here on


def _grid(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sample positions p + flow(p): x (columns) and y (rows), each (h, w)."""
    h, w = flow.shape[:2]
    rows, cols = jnp.meshgrid(
        jnp.arange(h, dtype=flow.dtype), jnp.arange(w, dtype=flow.dtype), indexing="ij"
    )
    return cols + flow[..., 0], rows + flow[..., 1]


def in_bounds(flow: jax.Array) -> jax.Array:
    """bool (h, w): p + flow(p) lies in the image, 0 <= x <= w - 1 and 0 <= y <= h - 1."""
    h, w = flow.shape[:2]
    x, y = _grid(flow)
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def warp(image: jax.Array, flow: jax.Array, fill: jax.Array | float | None = None) -> jax.Array:
    """Backward warp: ``out(p) = image(p + flow(p))``, bilinear; pure, jit/vmap/grad-safe.

    image: (h, w) or (h, w, c), any float dtype (frames, stylised images, flows, masks);
    flow: (h, w, 2) (dx, dy) pixels on the output grid, the same h, w. Integer flows copy pixels
    exactly. Borders: a sample point outside the image is clamped to the nearest edge pixel
    (replicate), so every output is finite; with ``fill`` (a scalar or a (c,) colour) those
    pixels get ``fill`` instead (``in_bounds``). The gradient with respect to ``image`` is exact;
    with respect to ``flow`` it is the bilinear slope, one-sided at integer positions and zero
    where the sample point is clamped.
    """
    h, w = image.shape[:2]
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow of shape {flow.shape} does not fit an image of shape {image.shape}")
    x, y = _grid(flow)
    x, y = jnp.clip(x, 0, w - 1), jnp.clip(y, 0, h - 1)
    # The left/top neighbour stops one short of the edge, so x = w - 1 is (w - 2) + 1 * step.
    x0 = jnp.clip(jnp.floor(x), 0, max(w - 2, 0))
    y0 = jnp.clip(jnp.floor(y), 0, max(h - 2, 0))
    ax, ay = x - x0, y - y0
    x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1i, y1i = jnp.minimum(x0i + 1, w - 1), jnp.minimum(y0i + 1, h - 1)
    if image.ndim == 3:
        ax, ay = ax[..., None], ay[..., None]
    top = image[y0i, x0i] * (1 - ax) + image[y0i, x1i] * ax
    bottom = image[y1i, x0i] * (1 - ax) + image[y1i, x1i] * ax
    out = top * (1 - ay) + bottom * ay
    if fill is not None:
        inside = in_bounds(flow)
        out = jnp.where(inside[..., None] if out.ndim == 3 else inside, out, fill)
    return out


def _central_differences(field: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f(x+1) - f(x-1)) / 2 along columns and rows, edges replicated: the reference's filter."""
    padded = jnp.pad(field, ((1, 1), (1, 1), (0, 0)), mode="edge")
    dx = (padded[1:-1, 2:] - padded[1:-1, :-2]) / 2
    dy = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / 2
    return dx, dy


def _gaussian_blur(image: jax.Array, sigma: float) -> jax.Array:
    """Separable normalised Gaussian, radius ceil(2 sigma), symmetric borders (as CSmooth)."""
    radius = math.ceil(2.0 * sigma)
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2.0 * sigma**2))
    taps = jnp.asarray(taps / taps.sum(), image.dtype)
    padded = jnp.pad(image, radius, mode="symmetric")
    h, w = image.shape
    rows = sum(taps[i] * padded[i : i + h, :] for i in range(2 * radius + 1))
    return sum(taps[i] * rows[:, i : i + w] for i in range(2 * radius + 1))


def reliability(flow: jax.Array, flow_back: jax.Array, smooth_sigma: float = 0.0) -> jax.Array:
    """Ruder et al.'s weights c on ``flow``'s grid: float (h, w), 1 = the warp is trusted.

    flow: flow_ab (h, w, 2) on a's grid; flow_back: flow_ba on b's grid. With w_hat = flow and
    w_tilde(p) = flow_back(p + flow(p)) (the other flow sampled where p lands), c = 0 where

    - disocclusion: |w_tilde + w_hat|^2 > 0.01 (|w_tilde|^2 + |w_hat|^2) + 0.5,
      or p + flow(p) falls outside b (``in_bounds``);
    - motion boundary: |grad u_hat|^2 + |grad v_hat|^2 > 0.01 |w_hat|^2 + 0.002, the gradient by
      central differences (as the reference implementation's consistency checker);

    and 1 elsewhere. For c^(i-1,i) of the paper (on frame i, to trust omega_{i-1}^i) pass the
    backward flow i -> i-1 first and the forward flow i-1 -> i second. ``smooth_sigma`` > 0
    gives the released code's soft weights instead: disocclusions -1, boundaries 0, the rest 1,
    blurred by a Gaussian of that sigma (it used 0.8) and clipped to [0, 1].
    """
    w_hat = flow
    w_tilde = warp(flow_back, flow)
    round_trip = jnp.sum((w_tilde + w_hat) ** 2, axis=-1)
    norms = jnp.sum(w_tilde**2, axis=-1) + jnp.sum(w_hat**2, axis=-1)
    disoccluded = (round_trip > DISOCCLUSION_REL * norms + DISOCCLUSION_ABS) | ~in_bounds(flow)
    dx, dy = _central_differences(w_hat)
    edge = jnp.sum(dx**2 + dy**2, axis=-1)
    boundary = edge > BOUNDARY_REL * jnp.sum(w_hat**2, axis=-1) + BOUNDARY_ABS
    if smooth_sigma <= 0:
        return jnp.where(disoccluded | boundary, 0.0, 1.0).astype(flow.dtype)
    soft = jnp.where(disoccluded, -1.0, jnp.where(boundary, 0.0, 1.0)).astype(flow.dtype)
    return jnp.clip(_gaussian_blur(soft, smooth_sigma), 0.0, 1.0)


def clip_reliability(flows: ClipFlows, smooth_sigma: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Weights for every pair of ``flows``: (c_forward, c_backward), each (n - step, h, w).

    c_forward[k] on frame k trusts warp(., forward[k]) (frame k+step pulled onto frame k);
    c_backward[k] on frame k+step trusts warp(., backward[k]) (frame k pulled onto k+step).
    """
    fn = jax.jit(jax.vmap(lambda a, b: reliability(a, b, smooth_sigma)))
    forward, backward = jnp.asarray(flows.forward), jnp.asarray(flows.backward)
    return fn(forward, backward), fn(backward, forward)


def long_term_weights(weights: jax.Array) -> jax.Array:
    """c_long for the frames of J, nearest first: (k, h, w) -> (k, h, w) (Ruder et al. 2016).

    c_long^(i-j,i) = max(c^(i-j,i) - sum_{l in J, l < j} c_long^(i-l,i), 0): a pixel counts for the
    nearest frame of J that reliably covers it and for no farther one. The reference code
    subtracts the already-reduced weights, as here; the paper writes the raw c's. For 0/1
    weights both are the same; for soft weights this form keeps sum_j c_long = max_j c.
    Give a missing frame (i - j < 0) all-zero weights.
    """

    def one(covered, c):
        c_long = jnp.maximum(c - covered, 0.0)
        return covered + c_long, c_long

    _, c_long = jax.lax.scan(one, jnp.zeros_like(weights[0]), weights)
    return c_long


def blend(x: jax.Array, warped: jax.Array, weights: jax.Array, delta: float = 0.5) -> jax.Array:
    """Multi-pass initialisation (Ruder et al. 2016): x' = delta c warped + (1 - delta c) x.

    x: the frame's result of the previous pass (h, w, 3); warped: the neighbour processed just
    before in this pass, warped onto x's grid; weights: c (h, w). delta = 0.5 averages the two
    where the flow is reliable and keeps x elsewhere. (The reference code's blendWeight b
    computes (x + b c warped) / (1 + b c), the same for 0/1 weights with delta = b / (1 + b).)
    """
    c = delta * weights[..., None]
    return c * warped + (1 - c) * x
