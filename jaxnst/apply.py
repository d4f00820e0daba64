"""Applying a trained network: images batched and jitted, whole or in tiles; inputs and outputs.

``apply_network(network, images)`` stylises arrays (one image, a batch, or a list of images of
any sizes) in one forward pass each: images of one size go through together in batches of
``batch_size`` (the last batch padded, so a video's frames compile one program), each size
compiles once. An image larger than the device holds (``max_pixels``) is cut into overlapping
tiles of one shape: every instance norm then uses the statistics of the whole image (taken from
it at ``STATS_SIDE`` px, ``transform.transform_stats``), so the network is one convolutional
function on every tile and each tile keeps only its centre, ``HALO`` px away from any cut: at
least the network's receptive radius (57 px), so the tiles join without seams. With the
statistics of the full-size image the tiled result equals the whole one (tested).

The colour options follow the training's: a luminance network sees each photo's luminance and
its output's luminance goes under the photo's colours; ``original_colors`` swaps the colours
after any network (``color.color_swap``). ``expand_inputs`` and ``apply_outputs`` turn the
command line's inputs (images, folders, videos) and ``-o`` into checked paths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.color import color_swap, combine_luminance, luminance, to_luminance_image
from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import ImageLike, as_image, fit_size, resize
from jaxnst.network import Network, load_network
from jaxnst.transform import MIN_SIDE, Params, apply_transform, transform_stats

HALO = 64  # px kept around each tile's centre: > the receptive radius (57), a multiple of 4
STATS_SIDE = 1024  # long side of the copy the statistics of a tiled image come from
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")  # besides animated GIFs
# Memory of a forward pass per pixel at width 32: XLA:CPU plans 515 bytes (256 and 512 px); twice
# that leaves room for convolution workspaces on GPUs.
BYTES_PER_PIXEL = 1000


@functools.cache
def _forward(dtype: str, with_stats: bool) -> Any:
    """jit: (params, images (n, h, w, 3)[, stats]) -> the network's outputs (n, h, w, 3)."""
    dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    if with_stats:
        return jax.jit(lambda p, x, s: apply_transform(p, x, dt, s))
    return jax.jit(lambda p, x: apply_transform(p, x, dt))


@functools.cache
def _stats_fn(dtype: str) -> Any:
    dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    return jax.jit(lambda p, x: transform_stats(p, x, dt))


def max_pixels(width: int = 32, limit: int | None = None) -> int | None:
    """The most pixels one image may have to go through whole (None: no limit known).

    ``limit``: bytes to plan for (default: half the first device's memory, when it says).
    """
    if limit is None:
        stats = jax.devices()[0].memory_stats() or {}
        limit = stats.get("bytes_limit", 0) // 2 or None
    return None if limit is None else int(limit / (BYTES_PER_PIXEL * width / 32))


def windows(n: int, size: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Tiles of one axis of ``n`` px: their length L and (start, keep_from, keep_to) of each.

    The window length L is ``size`` or up to 3 px less, so that ``n - L`` is a multiple of 4:
    every start is then a multiple of 4 (the network's two stride-2 layers see the grid of the
    whole image) and the last window ends at the image's edge. Neighbours overlap by more than
    2 ``HALO``; each keeps the pixels up to the middle of its overlaps. One window if n <= size.
    """
    if n <= size:
        return n, [(0, 0, n)]
    length = size - (size - n) % 4
    if length < 2 * HALO + 8:
        raise ValueError(f"tiles of {size} px are too small: at least {2 * HALO + 12}")
    count = math.ceil((n - length) / (length - 2 * HALO - 4)) + 1
    starts = [4 * ((k * (n - length)) // (4 * (count - 1))) for k in range(count)]
    cuts = [(a + length + b) // 2 for a, b in zip(starts, starts[1:], strict=False)]
    bounds = [0, *cuts, n]
    return length, [(s, bounds[k], bounds[k + 1]) for k, s in enumerate(starts)]


def forward_tiled(
    params: Params, image: np.ndarray, tile: int, dtype: str = "float32",
    stats: Params | None = None, batch_size: int = 4,
) -> np.ndarray:  # fmt: skip
    """The network on one (h, w, 3) image in overlapping tiles of about ``tile`` px.

    ``stats``: the instance norms' statistics (default: of the image at ``STATS_SIDE`` px).
    """
    h, w = image.shape[:2]
    if stats is None:
        small = resize(image, fit_size((h, w), min(STATS_SIDE, max(h, w))))
        stats = _stats_fn(dtype)(params, jnp.asarray(small[None]))
    (th, rows), (tw, cols) = windows(h, tile), windows(w, tile)
    spots = [(r, c) for r in rows for c in cols]
    out = np.empty((h, w, 3), np.float32)
    fn = _forward(dtype, True)
    for i in range(0, len(spots), batch_size):
        group = spots[i : i + batch_size]
        group = group + [group[-1]] * (batch_size - len(group))  # one shape, one program
        tiles = np.stack([image[r[0] : r[0] + th, c[0] : c[0] + tw] for r, c in group])
        res = np.asarray(fn(params, jnp.asarray(tiles), stats))
        for k, ((y0, ya, yb), (x0, xa, xb)) in enumerate(group):
            out[ya:yb, xa:xb] = res[k, ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out


def _as_network(network: Network | str | Path) -> Network:
    return network if isinstance(network, Network) else load_network(network)


def apply_network(
    network: Network | str | Path,
    images: ImageLike | Sequence[ImageLike],
    *,
    size: int | None = None,
    original_colors: bool | None = None,
    tile: int = 0,
    batch_size: int = 4,
    dtype: str = "float32",
) -> np.ndarray | list[np.ndarray]:
    """Stylise ``images`` with a trained network (a ``Network`` or a model file's path).

    ``images``: one image (h, w, 3) or a batch (n, h, w, 3) as an array (uint8, uint16 or float
    in [0, 1]) -> float32 of the same shape in [0, 1]; or a list of images (paths, PIL images,
    arrays; any sizes) -> a list of (h, w, 3) float32 arrays. ``size`` resizes each image's
    long side first; ``original_colors`` (default: the network's training option) keeps each
    image's colours; ``tile`` > 0 forces tiles of about that many px (0: whole images unless
    larger than the device holds, ``max_pixels``). Deterministic: the same bytes every call on
    the same device.
    """
    net = _as_network(network)
    batch_in = not isinstance(images, list | tuple)
    arr = np.asarray(images) if batch_in and not isinstance(images, str | Path) else None
    if arr is not None and arr.ndim == 4:
        items = list(arr)
    elif batch_in:
        items = [images]
    else:
        items = list(images)
    loaded = [as_image(x, f"image {i + 1}") for i, x in enumerate(items)]
    if size is not None:
        loaded = [resize(x, fit_size(x.shape[:2], size)) for x in loaded]
    for i, x in enumerate(loaded):
        if min(x.shape[:2]) < MIN_SIDE:
            raise ImageError(f"image {i + 1} is {x.shape[1]}x{x.shape[0]} px; the network needs "
                             f"at least {MIN_SIDE}x{MIN_SIDE}")  # fmt: skip
    outs = stylise(net, loaded, original_colors, tile, batch_size, dtype)
    if arr is not None and arr.ndim == 4:
        return np.stack(outs)
    return outs[0] if batch_in else outs


def stylise(
    net: Network, images: list[np.ndarray], original_colors: bool | None = None, tile: int = 0,
    batch_size: int = 4, dtype: str = "float32",
) -> list[np.ndarray]:  # fmt: skip
    """``apply_network`` on float32 (h, w, 3) images in [0, 1], already loaded and sized."""
    params = jax.device_put(net.params)
    grey = net.config.color_mode == "luminance"
    inputs = [np.asarray(to_luminance_image(x), np.float32) if grey else x for x in images]
    limit = max_pixels(net.width)
    outs: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        too_big = limit is not None and x.shape[0] * x.shape[1] > limit
        if tile or too_big:
            side = tile or max(2 * HALO + 12, math.isqrt(limit or 0) // 4 * 4)
            outs[i] = forward_tiled(params, x, side, dtype, batch_size=batch_size)
        else:
            by_shape.setdefault(x.shape, []).append(i)
    fn = _forward(dtype, False)
    for indices in by_shape.values():
        n = len(indices) if len(indices) <= batch_size else batch_size
        for start in range(0, len(indices), n):
            part = indices[start : start + n]
            batch = np.stack([inputs[i] for i in part] + [inputs[part[-1]]] * (n - len(part)))
            res = np.asarray(fn(params, jnp.asarray(batch)))
            for k, i in enumerate(part):
                outs[i] = res[k]
    keep = net.config.original_colors if original_colors is None else original_colors
    final = []
    for x, y in zip(images, outs, strict=True):
        if grey:
            y = combine_luminance(luminance(y), x)
        elif keep:
            y = color_swap(y, x)
        final.append(np.clip(np.asarray(y, np.float32), 0.0, 1.0))
    return final


# ---------------------------------------------------------------------- files
def expand_inputs(inputs: list[str]) -> list[tuple[Path, str]]:
    """Each INPUT as (path, "image" or "video"); a folder gives its image files, sorted."""
    from jaxnst.videoio import IMAGE_SUFFIXES

    out = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageError(f"{path}: no image files in this folder")
            out += [(p, "image") for p in files]
        elif path.suffix.lower() in VIDEO_SUFFIXES or _animated(path):
            out.append((path, "video"))
        else:
            out.append((path, "image"))
    return out


def _animated(path: Path) -> bool:
    if path.suffix.lower() != ".gif" or not path.is_file():
        return False
    from PIL import Image

    try:
        with Image.open(path) as img:
            return getattr(img, "n_frames", 1) > 1
    except OSError:
        return False


def apply_outputs(items: list[tuple[Path, str]], given: str | None, model: Path) -> list[Path]:
    """The output path of each input: -o itself for one image, else names inside -o."""
    if given and not Path(given).is_dir() and not given.endswith("/"):
        if len(items) != 1 or items[0][1] != "image":
            raise ConfigError(f"{given}: several outputs (or a video) need -o to be an existing "
                              "folder")  # fmt: skip
        out = [Path(given)]
    else:
        folder = Path(given or ".")
        out = [folder / f"{p.stem}_{model.stem}{'.png' if k == 'image' else p.suffix}"
               for p, k in items]  # fmt: skip
    for path in out:
        if not path.parent.is_dir():
            raise ImageError(f"{path}: directory {path.parent} does not exist")
    names = out + [p.with_suffix(".json") for p in out]  # the outputs and their sidecars
    if len(set(names)) != len(names):
        dup = next(p for p in names if names.count(p) > 1)
        raise ConfigError(f"two inputs would both write {dup}; give them different names")
    inputs = {p.resolve() for p, _ in items}
    if any(p.resolve() in inputs for p in out):
        raise ConfigError("an output would overwrite its input; choose another -o")
    return out


__all__ = [
    "HALO",
    "apply_network",
    "apply_outputs",
    "expand_inputs",
    "forward_tiled",
    "max_pixels",
    "stylise",
    "windows",
]
