"""Decoding what people actually feed a style transfer tool: every Pillow mode, 16-bit, EXIF
rotation, and the broken files (empty, truncated, not an image, decompression bombs); masks for
spatial control, greyscale or a colour-coded region map."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst.errors import ImageError, OutputError
from jaxnst.image import (
    atomic_write,
    image_size,
    load_color_masks,
    load_mask,
    read_image,
    save_image,
)

RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[0, 0, 0], [255, 255, 255], [10, 100, 200]]],
    np.uint8,
)  # (2, 3, 3): a pixel of each kind, so any rotation or channel swap shows


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG from its IHDR fields and unfiltered scanlines (Pillow cannot write 48-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def test_rgb_png_is_exact(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB / np.float32(255))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.array([[0, 128, 255]], np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (1, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, 2) / np.float32(255))


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 255, 128]]], np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])  # opaque: unchanged
    np.testing.assert_allclose(out[0, 1], [1, 1, 1])  # transparent: white
    a = 128 / 255  # half blue over white
    np.testing.assert_allclose(out[0, 2], [1 - a, 1 - a, 1], atol=1.5 / 255)


def test_palette_image_gives_its_palette_colours(tmp_path):
    img = Image.fromarray(RGB).quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    assert img.mode == "P"
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), RGB / np.float32(255))


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    img = Image.fromarray(RGB).quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    red = img.getpixel((0, 0))
    img.info["transparency"] = red
    img.save(tmp_path / "p.png", transparency=red)
    out = read_image(tmp_path / "p.png")
    np.testing.assert_allclose(out[0, 0], [1, 1, 1])
    np.testing.assert_allclose(out[0, 1], [0, 1, 0])


def test_16_bit_grayscale_keeps_its_precision(tmp_path):
    values = np.array([[0, 25700, 25701, 65535]], np.uint16)  # 25700 = 100 * 257
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    (tmp_path / "g16.png").write_bytes(raw_png(4, 1, 16, 0, rows))
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(out[0, :, 0], values[0] / 65535, rtol=1e-6, atol=1e-7)
    assert out[0, 2, 0] > out[0, 1, 0]  # one 16-bit step apart: not collapsed to 8 bits
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16_bit_rgb_png_loads_in_the_right_channels(tmp_path):
    pixels = (RGB.astype(np.uint16) * 257).astype(">u2")  # (2, 3, 3) 48-bit
    rows = b"".join(b"\x00" + pixels[i].tobytes() for i in range(2))
    (tmp_path / "rgb16.png").write_bytes(raw_png(3, 2, 16, 2, rows))
    np.testing.assert_allclose(read_image(tmp_path / "rgb16.png"), RGB / 255, atol=1 / 255)


def test_cmyk_is_converted_to_rgb(tmp_path):
    cmyk = np.array(
        [[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0], [0, 0, 0, 255]]], np.uint8
    )
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    out = read_image(tmp_path / "c.tif")
    want = [[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 0]]  # white, C, M, Y, K
    np.testing.assert_allclose(out[0], want)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # magenta + yellow: red
    img.save(tmp_path / "c.jpg", quality=95)
    out = read_image(tmp_path / "c.jpg")
    np.testing.assert_allclose(out.mean((0, 1)), [1, 0, 0], atol=0.05)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_is_rotated_upright(tmp_path, suffix):
    """Orientation 6: the camera was turned 90 degrees; viewers rotate clockwise to display."""
    big = np.kron(RGB, np.ones((8, 8, 1), np.uint8))  # 16 x 24 blocks survive JPEG
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"r{suffix}"
    Image.fromarray(big).save(
        path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {})
    )
    out = read_image(path)
    want = np.rot90(big, k=-1) / 255  # clockwise: (24, 16)
    assert out.shape == (24, 16, 3)
    if suffix == ".png":
        np.testing.assert_array_equal(out, want.astype(np.float32))
    else:  # compare block centres only: JPEG blurs the edges
        np.testing.assert_allclose(out[4::8, 4::8], want[4::8, 4::8], atol=0.1)


@pytest.mark.parametrize("orientation", [3, 8])
def test_other_exif_orientations(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(tmp_path / "r.png", exif=exif.tobytes())
    want = {3: np.rot90(RGB, 2), 8: np.rot90(RGB, 1)}[orientation]
    np.testing.assert_array_equal(read_image(tmp_path / "r.png"), want / np.float32(255))


# ---------------------------------------------------------------------- broken files
def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(tmp_path / "e.png")


def test_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("hello, not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        read_image(tmp_path / "t.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"full{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / f"cut{suffix}")


def test_decompression_bomb_header(tmp_path):
    """A tiny file whose header claims 100000 x 100000 pixels is refused before decoding."""
    rows = zlib.compress(b"\x00" * 10)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )
    (tmp_path / "bomb.png").write_bytes(data)
    with pytest.raises(ImageError, match="too large"):
        read_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("limit", [300, 600])  # over 2x the limit: error; over 1x: warning
def test_over_the_decompression_bomb_limit(tmp_path, monkeypatch, limit):
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "a.png")  # 768 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageError, match="too large"):
        read_image(tmp_path / "a.png")


# ---------------------------------------------------------------------- writing
def test_save_image_leaves_no_file_when_writing_fails(tmp_path):
    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OutputError, match="out.png: cannot write .disk full"):
        atomic_write(tmp_path / "out.png", fail)
    assert list(tmp_path.iterdir()) == []


def test_save_image_refuses_floats_outside_0_1(tmp_path):
    """Issue 13, defect 9: floats in 0..255 were clipped to [0, 1] and written all white."""
    img = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    with pytest.raises(ImageError, match=r"float pixels must lie in \[0, 1\].*divide"):
        save_image(tmp_path / "a.png", img)
    with pytest.raises(ImageError, match="NaN"):
        save_image(tmp_path / "b.png", np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="cannot save int64 pixels"):
        save_image(tmp_path / "c.png", np.zeros((4, 4, 3), np.int64))
    assert not list(tmp_path.iterdir())
    save_image(tmp_path / "d.png", img / 255.0)
    got = np.asarray(Image.open(tmp_path / "d.png")).astype(int)
    assert np.abs(got - img).max() <= 0.5 + 1e-3
    save_image(tmp_path / "e.png", (img / 255.0 * 65535).astype(np.uint16))
    assert np.abs(np.asarray(Image.open(tmp_path / "e.png")).astype(int) - img).max() <= 1


def test_image_size_reads_the_header_not_the_pixels(tmp_path, monkeypatch):
    """The memory plan asks before anything is decoded (issue 13, defect 1)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 30 high, shown turned: 30 wide, 40 high
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "r.png", exif=exif.tobytes())
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    assert image_size(tmp_path / "r.png") == (40, 30)
    assert image_size(np.zeros((5, 7, 3))) == (5, 7)
    assert image_size(tmp_path / "missing.png") is None
    (tmp_path / "text.png").write_text("no image")
    assert image_size(tmp_path / "text.png") is None


def test_a_symlink_loop_is_not_called_a_missing_file(tmp_path):
    """Issue 13, defect 7."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(ImageError, match="a.png: symbolic link loop"):
        read_image(tmp_path / "a.png")


def test_save_image_round_trips_and_rejects_unknown_suffixes(tmp_path):
    save_image(tmp_path / "a.png", RGB)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB / np.float32(255))
    with pytest.raises(ImageError, match="unknown image format"):
        save_image(tmp_path / "a.xyz", RGB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def half_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    return mask


def save(path, array: np.ndarray, mode: str | None = None):
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


# ----------------------------------------------------------------------------- mask files


def test_load_mask_reads_grey_16_bit_and_transparent_pngs(tmp_path):
    grey = (half_mask(8, 12) * 255).astype(np.uint8)
    mask = load_mask(save(tmp_path / "l.png", grey), (8, 12))
    np.testing.assert_array_equal(mask, half_mask(8, 12))
    rgb = load_mask(save(tmp_path / "rgb.png", grey, "RGB"), (8, 12))
    np.testing.assert_array_equal(rgb, mask)
    deep = load_mask(save(tmp_path / "16.png", np.full((8, 12), 32768, np.uint16)), (8, 12))
    np.testing.assert_allclose(deep, 32768 / 65535, rtol=1e-6)
    # White strokes on a transparent layer: transparent = outside, not white.
    rgba = np.full((8, 12, 4), 255, np.uint8)
    rgba[..., 3] = grey
    np.testing.assert_array_equal(load_mask(save(tmp_path / "a.png", rgba), (8, 12)), mask)
    # Arrays work too, and a larger mask of the same aspect is resized, staying in [0, 1].
    np.testing.assert_array_equal(load_mask(half_mask(8, 12) > 0, (8, 12)), mask)
    big = load_mask(save(tmp_path / "big.png", np.repeat(np.repeat(grey, 4, 0), 4, 1)), (8, 12))
    assert big.shape == (8, 12) and big.min() >= 0 and big.max() <= 1
    np.testing.assert_allclose(big[:, :5], 1.0)
    np.testing.assert_allclose(big[:, 7:], 0.0)


WHITE = np.full((8, 12), 255, np.uint8)
STRIPES = np.eye(3, dtype=np.uint8)[np.arange(24) % 3].reshape(4, 6, 3) * 255
BAD_MASKS = {  # file contents (an array to save, bytes, or None: no file), kwargs, message
    "strict-size": (WHITE, {"strict": True}, "must be equal"),
    "aspect": (WHITE[:, :8], {}, "aspect ratios differ"),
    "empty": (np.zeros((4, 6), np.uint8), {}, "empty"),
    "colour": (STRIPES, {}, "must be greyscale"),
    "not-an-image": (b"not a png", {}, "not an image"),
    "missing": (None, {}, "no such file"),
}


@pytest.mark.parametrize("case", BAD_MASKS)
def test_bad_masks_raise_one_line_image_errors(tmp_path, case):
    content, kwargs, message = BAD_MASKS[case]
    path = tmp_path / "m.png"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        save(path, content)
    with pytest.raises(ImageError, match=message) as info:
        load_mask(path, (4, 6), **kwargs)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))


def test_load_color_masks_splits_a_two_colour_map_into_complementary_masks(tmp_path):
    region = np.zeros((8, 12, 3), np.uint8)
    region[:, :6] = (255, 0, 0)
    region[:, 6:] = (0, 0, 255)
    path = save(tmp_path / "regions.png", region)
    masks = load_color_masks(path, (8, 12))
    assert list(masks) == ["#0000ff", "#ff0000"]
    np.testing.assert_array_equal(masks["#ff0000"], half_mask(8, 12))
    np.testing.assert_array_equal(masks["#ff0000"] + masks["#0000ff"], 1.0)
    small = load_color_masks(path, (4, 6))  # resized: soft, still a partition
    np.testing.assert_allclose(small["#ff0000"] + small["#0000ff"], 1.0, atol=1e-6)
    noisy = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match="more than 16"):
        load_color_masks(save(tmp_path / "noise.png", noisy), (8, 12))
