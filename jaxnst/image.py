"""Images and masks in and out: decode (EXIF, modes, bit depths), resize, convert, save atomically.

Inside jaxnst an image is float32 (h, w, 3) RGB in [0, 1]; ``vgg.preprocess`` turns that into the
network's BGR 0..255 minus mean. Files are only ever written through ``files.atomic_write`` (a
temporary file, renamed), so an interrupted or failed write leaves no partial output;
``image_size`` reads a file's size from its header, before anything is decoded. Masks for
spatial control are read here too: a greyscale mask (``load_mask``) or a colour-coded region map
split into one mask per colour (``load_color_masks``), float32 (h, w) in [0, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxnst.errors import ImageError
from jaxnst.files import atomic_write, missing_file

ImageLike = Any  # a path, a PIL image, or an array (h, w), (h, w, 3|4), uint8/uint16/float
MAX_COLORS = 16  # a region map with more colours is almost surely anti-aliased or a JPEG
GREY_TOLERANCE = 2.0 / 255.0  # channels this close count as grey (colour-managed PNGs wobble)

MaskLike = Any  # a path (str | Path) or an array (h, w) / (h, w, 1|3|4): bool, uint8/16, float


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode -> float32 (h, w, 3) RGB in [0, 1]: jaxnst's rules.

    Greyscale (1, L, 8- and 16-bit I;16, I, F) is repeated over the channels, keeping 16-bit
    precision; palette, CMYK, YCbCr, LAB and HSV are converted by Pillow; transparency (RGBA, LA,
    PA, a palette's transparent index) is composited on white, as image viewers show it. No EXIF
    rotation (the caller applies ``ImageOps.exif_transpose`` first). The one conversion of
    ``read_image``, ``as_image`` and the training photos (``jaxnst.data``).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top, 0, 1).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, np.float32), 0, 1)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels on white, as image viewers show them.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into float32 (h, w, 3) RGB in [0, 1], upright per its EXIF tag."""
    path = Path(path)
    problem = missing_file(path)  # a symlink loop is not "no such file"
    if problem is not None:
        raise ImageError(f"{path}: {problem.replace('a file', 'an image file')}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return pil_to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: image too large ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise ImageError(f"{path}: cannot decode image ({err}); truncated or corrupted?") from None


def image_size(image: ImageLike) -> tuple[int, int] | None:
    """(h, w) of an image as ``as_image`` would return it, without decoding the pixels: from a
    file's header (EXIF rotations by 90 degrees counted), a PIL image or an array; None if it
    cannot tell (``as_image`` then says why)."""
    try:
        if isinstance(image, str | Path):
            if missing_file(image) is not None:
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(image) as img:
                    return _upright_hw(img)
        if isinstance(image, Image.Image):
            return _upright_hw(image)
        shape = np.shape(image)
        return (int(shape[0]), int(shape[1])) if len(shape) >= 2 else None
    except Exception:  # noqa: BLE001 - unreadable: as_image says why
        return None


def _upright_hw(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    orientation = img.getexif().get(0x0112, 1)  # 5-8: stored turned by 90 degrees
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def as_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """A path, PIL image or array -> float32 (h, w, 3) RGB in [0, 1]."""
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(ImageOps.exif_transpose(image))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"{name}: expected an array (h, w), (h, w, 3) or (h, w, 4), not shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ImageError(f"{name}: holds NaN or Inf values")
        if arr.min() < 0 or arr.max() > 1:
            raise ImageError(f"{name}: float images must lie in [0, 1]")
    else:
        raise ImageError(f"{name}: unsupported dtype {arr.dtype}")
    if arr.shape[2] == 4:
        alpha = arr[..., 3:]
        arr = arr[..., :3] * alpha + (1.0 - alpha)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if min(arr.shape[:2]) < 1:
        raise ImageError(f"{name}: empty image")
    return np.ascontiguousarray(arr, dtype=np.float32)


def fit_size(shape: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(h, w) scaled so that the longer side is ``long_side`` (aspect kept, each side >= 1)."""
    h, w = shape
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize float (h, w, 3) to hw with Pillow's antialiased Lanczos filter, per channel."""
    h, w = hw
    if image.shape[:2] == (h, w):
        return image.astype(np.float32)
    chans = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (w, h), Image.Resampling.LANCZOS
            )
        )
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def load_image(image: ImageLike, long_side: int | None = None, name: str = "image") -> np.ndarray:
    """Read/convert ``image`` and resize it so that its longest side is ``long_side``."""
    arr = as_image(image, name)
    if long_side is not None:
        arr = resize(arr, fit_size(arr.shape[:2], long_side))
    return arr


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] (..., 3) -> uint8, clipped and rounded."""
    return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an image (uint8, uint16, or float in [0, 1]) atomically; the format follows the
    suffix. ImageError for floats outside [0, 1] (0..255 values: divide by 255) or NaN, and for
    other dtypes: clipping them would write a white or black picture without a word."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = image.astype(np.float32) / 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ImageError(f"{path}: the image holds NaN or Inf values")
        low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
        if low < 0 or high > 1:
            hint = " (divide 0..255 values by 255, or pass uint8)" if high <= 255 else ""
            raise ImageError(f"{path}: float pixels must lie in [0, 1], not {low:g}..{high:g}"
                             + hint)  # fmt: skip
    elif image.dtype != np.uint8:
        raise ImageError(f"{path}: cannot save {image.dtype} pixels (uint8, uint16 or float)")
    arr = image if image.dtype == np.uint8 else to_uint8(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image format {path.suffix!r} (use .png or .jpg)")

    def write(tmp: Path) -> None:
        Image.fromarray(arr).save(tmp, format=fmt)

    return atomic_write(path, write)


# ------------------------------------------------------------------------------ masks


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


def source_name(source: MaskLike, name: str | None) -> str:
    """How messages name a mask: ``name`` if given, else its path, else "mask"."""
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
    name = source_name(source, name)
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
    name = source_name(source, name)
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
