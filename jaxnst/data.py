"""Photographs for training a transformation network: a folder, random crops, batches by step.

Johnson et al. trained on the ~80k images of MS-COCO train2014, each resized to 256x256
(squashed, whatever its aspect); pytorch/examples resizes the short side to 256 and takes the
centre crop. Here each sample's short side is resized to a random length in
[crop, crop * max_scale] (never enlarging the photo), then a random crop x crop square is cut and
flipped left-right with probability 1/2: no distortion of the aspect, and more distinct samples
from a small folder.

**Deterministic by (seed, step).** ``batch(step)`` is a pure function of the folder's files, the
crop size, the batch size, the seed and the step. Sample k = step * batch_size + j is photo
``perm_e[k mod N]`` of epoch e = k // N (one permutation per epoch, seeded by (seed, e)); its
scale, crop offset and flip come from a generator seeded by (seed, k). A training resumed at
step t sees exactly the batches it would have seen, whichever thread, worker count or prefetch
depth made them (on the same Pillow: its decoders and filters make the pixels).

A folder is scanned once (recursively, sorted): each file's header is read (size only, no
decoding), and what Pillow cannot open is counted and skipped, never fatal. A file that opens but
fails to decode later (truncated data) is skipped where it would be used, with a warning: the
next photo of the same epoch takes its place, deterministically.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import pil_to_rgb, save_image, to_uint8

# scikit-image's bundled colour photographs of scenes (offline; the `train` extra), each with a
# short side of at least 300 px. Left out: greyscale images (camera, coins, moon, ...),
# textures (brick, grass, gravel), text (page, text), microscopy and medical images
# (immunohistochemistry, retina, cells), the style of jaxnst's demo (hubble_deep_field), `cat`
# (the same photo as chelsea) and the right image of the stereo pair (nearly the left one).
DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
PREFETCH_THREAD = "jaxnst-prefetch"


@dataclass(frozen=True)
class Photos:
    """The usable photos of a folder, sorted by path, and what was skipped."""

    root: Path
    paths: tuple[Path, ...]
    short_sides: tuple[int, ...]  # in pixels, per photo (the same before and after EXIF rotation)
    not_images: int  # files Pillow cannot open
    too_small: int  # photos with a short side under the scan's min_side

    def summary(self) -> str:
        """One line: "5 photos in data (2 not images, 1 too small: skipped)"."""
        skipped = []
        if self.not_images:
            skipped.append(f"{self.not_images} not images")
        if self.too_small:
            skipped.append(f"{self.too_small} too small")
        tail = f" ({', '.join(skipped)}: skipped)" if skipped else ""
        return f"{len(self.paths)} photos in {self.root}{tail}"


def _probe(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None if Pillow cannot open it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except Exception:  # any file may sit in a photo folder: a bad one is skipped
        return None


def scan_photos(root: str | Path, min_side: int = 1) -> Photos:
    """The photos under ``root`` (recursively) whose short side is at least ``min_side`` px.

    Raises ConfigError (no such folder, empty folder, no photo large enough) or ImageError (no
    file is an image), each with one line that names the folder.
    """
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root}: no such folder")
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (expected a folder of photos)")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ConfigError(f"{root}: empty folder (no files in it or its subfolders)")
    paths, sides, not_images, largest = [], [], 0, 0
    for path in files:
        size = _probe(path)
        if size is None:
            not_images += 1
            continue
        largest = max(largest, min(size))
        if min(size) >= min_side:
            paths.append(path)
            sides.append(min(size))
    if not_images == len(files):
        raise ImageError(f"{root}: none of its {len(files)} files is an image Pillow can read")
    if not paths:
        raise ConfigError(
            f"{root}: no photo has a short side of {min_side} px or more (the largest has "
            f"{largest} px); use a smaller crop size"
        )
    return Photos(
        root, tuple(paths), tuple(sides), not_images, len(files) - not_images - len(paths)
    )


def decode_crop(path: Path, side: int, crop: int, u: float, v: float, flip: bool) -> np.ndarray:
    """Decode ``path``, resize its short side to ``side`` (>= crop), cut the crop x crop square
    at fractions (u, v) in [0, 1) of the free rows and columns, mirror it if ``flip``: float32
    (crop, crop, 3) RGB in [0, 1]. Upright per EXIF; transparency on white, as ``read_image``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            w, h = img.size
            # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still at least the target size
            img.draft(None, (math.ceil(w * side / min(w, h)), math.ceil(h * side / min(w, h))))
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":  # greyscale, palette, CMYK, alpha, 16 bit: jaxnst's rules
                img = Image.fromarray(to_uint8(pil_to_rgb(img)))
    w, h = img.size
    size = (side, round(h * side / w)) if w <= h else (round(w * side / h), side)
    arr = np.asarray(img.resize(size, Image.Resampling.LANCZOS))
    top = int(u * (arr.shape[0] - crop + 1))
    left = int(v * (arr.shape[1] - crop + 1))
    arr = arr[top : top + crop, left : left + crop]
    if flip:
        arr = arr[:, ::-1]
    return arr.astype(np.float32) / 255.0


class PhotoBatches:
    """Batches of random crops of the photos in a folder: ``batch(step)`` -> (b, s, s, 3) float32
    in [0, 1], a pure function of (seed, step) (see the module docstring).

    ``crop`` is s; a photo whose short side is under s is skipped. ``max_scale`` bounds the
    random resize of a sample's short side to [s, s * max_scale].
    """

    def __init__(
        self,
        root: str | Path,
        crop: int = 256,
        batch_size: int = 4,
        seed: int = 0,
        max_scale: float = 1.15,
    ) -> None:
        for name, value, least in (
            ("crop", crop, 1),
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, not {value!r}")
        if not 1.0 <= max_scale <= 4.0:
            raise ConfigError(f"max_scale must lie in [1, 4], not {max_scale!r}")
        self.crop, self.batch_size, self.seed, self.max_scale = crop, batch_size, seed, max_scale
        self.photos = scan_photos(root, min_side=crop)
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._bad: set[Path] = set()

    def __len__(self) -> int:
        return len(self.photos.paths)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the photos in ``epoch``: a permutation of range(len(self))."""
        with self._lock:
            if epoch not in self._perms:
                if len(self._perms) >= 4:  # workers are at most an epoch apart
                    self._perms.pop(min(self._perms))
                rng = np.random.default_rng([self.seed, 0, epoch])
                self._perms[epoch] = rng.permutation(len(self))
            return self._perms[epoch]

    def sample(self, k: int) -> np.ndarray:
        """Sample k of the stream (step * batch_size + row): float32 (s, s, 3) in [0, 1]."""
        epoch, pos = divmod(k, len(self))
        perm = self.permutation(epoch)
        rng = np.random.default_rng([self.seed, 1, k])
        scale, u, v, flip = rng.random(4)  # drawn before decoding: the same for any photo
        for i in range(len(self)):  # a photo that fails to decode: the next one of the epoch
            index = int(perm[(pos + i) % len(self)])
            path = self.photos.paths[index]
            top = min(self.photos.short_sides[index], math.floor(self.crop * self.max_scale))
            side = self.crop + int(scale * (top - self.crop + 1))
            try:
                return decode_crop(path, side, self.crop, u, v, bool(flip < 0.5))
            except Exception as err:  # truncated, vanished, unreadable
                with self._lock:
                    first = path not in self._bad
                    self._bad.add(path)
                if first:
                    warnings.warn(f"{path}: cannot decode ({err}); skipped", stacklevel=2)
        raise ImageError(f"{self.photos.root}: none of its photos can be decoded any more")

    def batch(self, step: int, rows: range | None = None) -> np.ndarray:
        """Batch ``step``: (batch_size, s, s, 3) float32, or only ``rows`` of it (one host's
        share of a batch sharded over several hosts)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, not {step}")
        rows = range(self.batch_size) if rows is None else rows
        return np.stack([self.sample(step * self.batch_size + j) for j in rows])

    def prefetch(self, start: int = 0, depth: int = 2, workers: int = 1) -> Prefetcher:
        """Batches start, start + 1, ... made ahead in background threads (see ``Prefetcher``)."""
        return Prefetcher(self.batch, start, depth, workers)


class Prefetcher:
    """Calls ``make_batch(step)`` for step = start, start + 1, ... in ``workers`` background
    threads, at most ``depth`` steps ahead of the consumer, and hands out (step, batch) in
    order. ``close()`` (or leaving a ``with`` block) cancels what is pending, waits for what is
    running (at most ``workers`` batches) and ends the threads. An error in ``make_batch`` is
    raised by ``next`` for the step that failed.
    """

    def __init__(
        self,
        make_batch: Callable[[int], np.ndarray],
        start: int = 0,
        depth: int = 2,
        workers: int = 1,
    ) -> None:
        if depth < 1 or workers < 1:
            raise ConfigError(f"prefetch depth and workers must be >= 1, not {depth}, {workers}")
        self._make_batch = make_batch
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=PREFETCH_THREAD)
        self._pending: deque[tuple[int, Future]] = deque()
        self._next = start
        self._closed = False
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        self._pending.append((self._next, self._pool.submit(self._make_batch, self._next)))
        self._next += 1

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._closed:
            raise RuntimeError("the prefetcher is closed")
        step, future = self._pending.popleft()
        self._submit()  # keep `depth` steps in flight while the caller trains on this one
        return step, future.result()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self

    def close(self) -> None:
        """Stop: cancel the batches not started, wait for those being made, end the threads."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def demo_photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs (``DEMO_PHOTOS``): {name: uint8 (h, w, 3)}, offline."""
    try:
        from skimage import data
    except ImportError:
        raise ConfigError(
            "the demo photos come from scikit-image: pip install 'jaxnst[train]'"
        ) from None
    out = {}
    for name in DEMO_PHOTOS:
        if name.startswith("motorcycle"):
            left, right, _ = data.stereo_motorcycle()
            out[name] = left if name.endswith("left") else right
        else:
            out[name] = getattr(data, name)()
    return out


def write_demo_photos(folder: str | Path) -> Path:
    """Write ``demo_photos()`` as PNG files into ``folder`` (created if needed); return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in demo_photos().items():
        save_image(folder / f"{name}.png", image)
    return folder
