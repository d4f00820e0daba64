"""Synthetic video clips with their true optical flow and occlusions: for tests, benchmarks, demos.

Two clips, deterministic and small by default, rendered with NumPy (independently of
``jaxnst.flow.warp``, which they test):

- ``pan_zoom_clip``: a camera panning across a photograph while zooming in. Every pixel moves;
  the ones that leave the view are the occlusions.
- ``moving_object_clip``: a textured disc gliding over a still photograph. The disc covers
  background ahead of it (occlusion) and uncovers background behind it (disocclusion).

Flows follow ``jaxnst.flow``'s convention: float32 (h, w, 2), (dx, dy) pixels on the grid of the
frame they start from, ``frame[k](p) = frame[k+1](p + forward[k](p))`` wherever the point stays
visible. Pixels are float32 RGB in [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxnst.errors import ConfigError
from jaxnst.image import as_image, resize


class Clip(NamedTuple):
    """A clip of n frames and the truth about its motion.

    frames: (n, h, w, 3) float32 in [0, 1].
    forward: (n-1, h, w, 2) float32, flow from frame k to k+1 on frame k's grid.
    backward: (n-1, h, w, 2) float32, flow from frame k+1 to k on frame k+1's grid.
    forward_visible: (n-1, h, w) bool, the pixel of frame k is visible in frame k+1.
    backward_visible: (n-1, h, w) bool, the pixel of frame k+1 is visible in frame k.
    """

    frames: np.ndarray
    forward: np.ndarray
    backward: np.ndarray
    forward_visible: np.ndarray
    backward_visible: np.ndarray


def _photo(image, name: str) -> np.ndarray:
    """``image`` as float32 (h, w, 3), or scikit-image's bundled photograph ``name``."""
    if image is not None:
        return as_image(image, "photo")
    try:
        from skimage import data
    except ImportError:
        raise ConfigError(
            "the built-in clips use scikit-image's sample photographs: "
            "pip install 'jaxnst[demo]', or pass an image"
        ) from None
    return as_image(getattr(data, name)(), name)


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of (H, W, 3) at float positions x (columns), y (rows); edges clamped."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(int), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(int), max(h - 2, 0))
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = image[y0, x0] * (1 - ax) + image[y0, x1] * ax
    bottom = image[y1, x0] * (1 - ax) + image[y1, x1] * ax
    return (top * (1 - ay) + bottom * ay).astype(np.float32)


def _fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``image`` to the aspect ratio of hw, then resize to hw."""
    h, w = image.shape[:2]
    scale = min(h / hw[0], w / hw[1])
    ch, cw = round(hw[0] * scale), round(hw[1] * scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize(image[top : top + ch, left : left + cw], hw)


def _check(n_frames: int, size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise ConfigError(f"a clip needs at least 2 frames, not {n_frames!r}")
    h, w = size
    if min(h, w) < 8:
        raise ConfigError(f"clip size {size} is too small (at least 8 x 8)")
    return int(h), int(w)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    return cols, rows


def _inside(x: np.ndarray, y: np.ndarray, h: int, w: int) -> np.ndarray:
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def _flow(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return np.stack([dx, dy], axis=-1).astype(np.float32)


def pan_zoom_clip(
    photo=None,
    n_frames: int = 6,
    size: tuple[int, int] = (48, 64),
    pan: tuple[float, float] = (1.5, 0.75),
    zoom: float = 1.02,
) -> Clip:
    """A camera panning by ``pan`` (dx, dy) source pixels per frame and zooming in by ``zoom``.

    photo: any image (default: scikit-image's ``astronaut``), resized so that the first frame,
    of ``size`` (h, w), covers its central two thirds at one source pixel per frame pixel.
    Frame t shows source point S(p) = C + (p - c) / zoom^t + t pan for pixel p (c, C the
    centres); so the scene moves by about -pan per frame and spreads out from the centre.
    """
    h, w = _check(n_frames, size)
    source = _photo(photo, "astronaut")
    scale = 1.5 * max(h / source.shape[0], w / source.shape[1])
    big_h, big_w = round(source.shape[0] * scale), round(source.shape[1] * scale)
    source = _fit(source, (big_h, big_w))
    px, py = pan
    cols, rows = _grid(h, w)
    cx, cy, big_cx, big_cy = (w - 1) / 2, (h - 1) / 2, (big_w - 1) / 2, (big_h - 1) / 2
    frames = []
    for t in range(n_frames):
        sx = big_cx + (cols - cx) / zoom**t + t * px
        sy = big_cy + (rows - cy) / zoom**t + t * py
        if not _inside(sx, sy, big_h, big_w).all():
            raise ConfigError(
                f"the camera leaves the photograph at frame {t}: use fewer frames, less pan or zoom"
            )
        frames.append(_sample(source, sx, sy))
    forward, backward, fwd_visible, bwd_visible = [], [], [], []
    for t in range(n_frames - 1):
        # Frame t's pixel p lands on q in frame t+1, S_{t+1}(q) = S_t(p):
        # (q - c) / z^(t+1) + (t+1) pan = (p - c) / z^t + t pan.
        qx = cx + (cols - cx) * zoom - px * zoom ** (t + 1)
        qy = cy + (rows - cy) * zoom - py * zoom ** (t + 1)
        forward.append(_flow(qx - cols, qy - rows))
        fwd_visible.append(_inside(qx, qy, h, w))
        # and frame t+1's pixel p comes from q in frame t.
        qx = cx + (cols - cx) / zoom + px * zoom**t
        qy = cy + (rows - cy) / zoom + py * zoom**t
        backward.append(_flow(qx - cols, qy - rows))
        bwd_visible.append(_inside(qx, qy, h, w))
    return Clip(
        np.stack(frames),
        np.stack(forward),
        np.stack(backward),
        np.stack(fwd_visible),
        np.stack(bwd_visible),
    )


def moving_object_clip(
    background=None,
    texture=None,
    n_frames: int = 6,
    size: tuple[int, int] = (48, 64),
    velocity: tuple[float, float] = (2.5, 0.75),
    radius: float | None = None,
) -> Clip:
    """A disc of ``texture`` (default: scikit-image's ``chelsea``) moving by ``velocity`` (dx, dy)
    pixels per frame over a still ``background`` (default: ``coffee``), fitted to ``size`` (h, w).

    The disc (radius default 0.25 min(h, w)) starts left of centre so that it stays in view for a
    default clip; its texture moves rigidly with it. A pixel belongs to the disc when its centre
    is within ``radius`` of the disc's centre. Background pixels the disc covers next frame are
    occluded (not forward-visible); those it leaves are disoccluded (not backward-visible).
    """
    h, w = _check(n_frames, size)
    back = _fit(_photo(background, "coffee"), (h, w))
    r = 0.25 * min(h, w) if radius is None else float(radius)
    if not 1 <= r <= min(h, w) / 2:
        raise ConfigError(f"disc radius {r:g} does not fit a {h} x {w} clip")
    side = 2 * int(np.ceil(r)) + 3
    tex = _fit(_photo(texture, "chelsea"), (side, side))
    vx, vy = velocity
    start_x = (w - 1) / 2 - vx * (n_frames - 1) / 2  # the path is centred on the frame
    start_y = (h - 1) / 2 - vy * (n_frames - 1) / 2
    cols, rows = _grid(h, w)
    frames, discs = [], []
    for t in range(n_frames):
        ox, oy = start_x + t * vx, start_y + t * vy
        disc = (cols - ox) ** 2 + (rows - oy) ** 2 <= r * r
        obj = _sample(tex, cols - ox + (side - 1) / 2, rows - oy + (side - 1) / 2)
        frames.append(np.where(disc[..., None], obj, back))
        discs.append(disc)
    zero = np.zeros((h, w))
    forward, backward, fwd_visible, bwd_visible = [], [], [], []
    for t in range(n_frames - 1):
        now, nxt = discs[t], discs[t + 1]
        forward.append(_flow(np.where(now, vx, zero), np.where(now, vy, zero)))
        fwd_visible.append(np.where(now, _inside(cols + vx, rows + vy, h, w), ~nxt))
        backward.append(_flow(np.where(nxt, -vx, zero), np.where(nxt, -vy, zero)))
        bwd_visible.append(np.where(nxt, _inside(cols - vx, rows - vy, h, w), ~now))
    return Clip(
        np.stack(frames).astype(np.float32),
        np.stack(forward),
        np.stack(backward),
        np.stack(fwd_visible),
        np.stack(bwd_visible),
    )
