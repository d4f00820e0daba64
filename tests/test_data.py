"""Training photos: determinism by (seed, step), crops and flips, bad folders, prefetching."""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import data
from jaxnst.data import PhotoBatches, Prefetcher, decode_crop, scan_photos
from jaxnst.errors import ConfigError, ImageError

S = 16  # crop size of these tests


def write(path: Path, array: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def constant(h: int, w: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """Five photos of distinct colours in nested folders, a JPEG among them, and two non-images."""
    root = tmp_path / "photos"
    write(root / "a.png", constant(S, 30, (255, 0, 0)))
    write(root / "b.png", constant(40, S + 4, (0, 255, 0)))
    write(root / "sub" / "c.png", constant(S, S, (0, 0, 255)))
    write(root / "sub" / "deeper" / "d.jpg", constant(25, 25, (128, 128, 128)), quality=95)
    write(root / "e.png", constant(50, 60, (255, 255, 0)))
    write(root / "small.png", constant(S - 1, 40, (0, 0, 0)))  # short side under the crop
    (root / "notes.txt").write_text("not a photo")
    (root / "sub" / "empty.jpg").write_bytes(b"")
    return root


def colour_of(crop: np.ndarray) -> tuple[int, ...]:
    return tuple(np.round(crop.mean(axis=(0, 1)) * 255 / 64).astype(int))  # coarse, JPEG-proof


def test_scan_skips_non_images_and_small_photos_with_counts(folder):
    photos = scan_photos(folder, min_side=S)
    assert [p.relative_to(folder).as_posix() for p in photos.paths] == [
        "a.png", "b.png", "e.png", "sub/c.png", "sub/deeper/d.jpg"
    ]  # fmt: skip
    assert photos.short_sides == (S, S + 4, 50, S, 25)
    assert (photos.not_images, photos.too_small) == (2, 1)
    assert photos.summary() == f"5 photos in {folder} (2 not images, 1 too small: skipped)"


def test_batches_are_a_function_of_seed_and_step(folder):
    one, two = PhotoBatches(folder, S, 3, seed=7), PhotoBatches(folder, S, 3, seed=7)
    for step in range(4):
        one.batch(step)  # the history of calls makes no difference
    b = one.batch(5)
    assert b.shape == (3, S, S, 3) and b.dtype == np.float32
    assert b.min() >= 0.0 and b.max() <= 1.0
    np.testing.assert_array_equal(b, two.batch(5))  # bit-exact
    np.testing.assert_array_equal(two.batch(5, rows=range(1, 3)), b[1:3])  # one host's rows
    assert not np.array_equal(b, one.batch(6))
    assert not np.array_equal(b, PhotoBatches(folder, S, 3, seed=8).batch(5))


def test_each_photo_once_per_epoch(folder):
    batches = PhotoBatches(folder, S, batch_size=2, seed=1)
    n = len(batches)
    samples = [batches.sample(k) for k in range(2 * n)]
    first, second = [colour_of(x) for x in samples[:n]], [colour_of(x) for x in samples[n:]]
    assert len(set(first)) == n and set(first) == set(second)
    assert first != second  # a new order each epoch (fixed by the seed)
    steps = np.concatenate([batches.batch(t) for t in range(n)])  # batch t = samples 2t, 2t + 1
    np.testing.assert_array_equal(steps[: 2 * n], np.stack(samples))


def test_crops_are_windows_of_the_photo_some_flipped(tmp_path):
    photo = noise(S, 3 * S, seed=0)  # short side = crop: with max_scale 1 no resize happens
    write(tmp_path / "p" / "x.png", photo)
    batches = PhotoBatches(tmp_path / "p", S, batch_size=8, seed=3, max_scale=1.0)
    found = set()
    for crop in np.round(batches.batch(0) * 255).astype(np.uint8):
        hits = [
            (left, flipped)
            for left in range(2 * S + 1)
            for flipped in (False, True)
            if np.array_equal(crop, photo[:, left : left + S][:, :: -1 if flipped else 1])
        ]
        assert len(hits) == 1
        found.add(hits[0])
    assert len({left for left, _ in found}) > 2  # random offsets
    assert {flipped for _, flipped in found} == {False, True}


def test_short_side_is_resized_within_the_scale_range(tmp_path):
    # A horizontal ramp 0..255 over the width: a crop's range of values tells its scale.
    ramp = np.tile(np.linspace(0, 255, 200).astype(np.uint8)[None, :, None], (100, 1, 3))
    write(tmp_path / "p" / "ramp.png", ramp)
    batches = PhotoBatches(tmp_path / "p", 50, batch_size=16, seed=0, max_scale=1.5)
    spans = [np.ptp(c[..., 0]) for c in batches.batch(0)]
    # Short side 100 -> 50..75: width 100..150, so a 50 px crop spans 1/2 .. 1/3 of the ramp.
    assert min(spans) > 0.3 and max(spans) < 0.52
    assert max(spans) - min(spans) > 0.05  # the scale does vary


def test_decode_crop_is_upright_per_exif(tmp_path):
    left_red = np.concatenate(
        [constant(S, S // 2, (255, 0, 0)), constant(S, S // 2, (0, 0, 255))], 1
    )
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    path = write(tmp_path / "rot.jpg", left_red, exif=exif, quality=100)
    crop = decode_crop(path, S, S, 0.0, 0.0, flip=False)
    assert crop[:, : S // 2, 2].mean() > 0.9 and crop[:, S // 2 :, 0].mean() > 0.9  # blue | red
    flipped = decode_crop(path, S, S, 0.0, 0.0, flip=True)
    np.testing.assert_array_equal(flipped, crop[:, ::-1])


def test_bad_folders_are_one_line_errors(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "junk" / "x.jpg", np.zeros((1, 1, 3), np.uint8))
    (tmp_path / "junk" / "x.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "junk" / "y.png").write_text("nor a png")
    cases = [
        (tmp_path / "missing", ConfigError, "no such folder"),
        (folder / "a.png", ConfigError, "not a folder"),
        (tmp_path / "empty", ConfigError, "empty folder"),
        (tmp_path / "junk", ImageError, "none of its 2 files is an image"),
    ]
    for root, kind, message in cases:
        with pytest.raises(kind, match=message) as err:
            PhotoBatches(root, S)
        assert "\n" not in str(err.value) and str(root) in str(err.value)
    with pytest.raises(ConfigError, match=r"short side of 51 px .* largest has 50 px") as err:
        PhotoBatches(folder, 51)
    assert "\n" not in str(err.value)
    for bad in ({"crop": 0}, {"batch_size": 2.0}, {"seed": -1}, {"max_scale": 0.5}):
        with pytest.raises(ConfigError):
            PhotoBatches(folder, **{"crop": S, **bad})


def test_a_photo_that_fails_to_decode_is_replaced_deterministically(folder):
    good = PhotoBatches(folder, S, batch_size=5, seed=2).batch(0)
    broken = folder / "b.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    batches = PhotoBatches(folder, S, batch_size=5, seed=2)
    assert len(batches) == 5  # the scan reads headers only
    with pytest.warns(UserWarning, match="b.png: cannot decode"):
        first = batches.batch(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file
        np.testing.assert_array_equal(batches.batch(0), first)
    green = [i for i, x in enumerate(good) if colour_of(x) == colour_of(np.array([[[0, 1, 0]]]))]
    assert len(green) == 1
    kept = [i for i in range(5) if i != green[0]]
    np.testing.assert_array_equal(first[kept], good[kept])  # the other samples are untouched


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(data.PREFETCH_THREAD)]


def test_prefetch_gives_the_direct_batches_and_shuts_down(folder):
    batches = PhotoBatches(folder, S, batch_size=3, seed=4)
    with batches.prefetch(start=5, depth=3, workers=2) as it:
        got = [next(it) for _ in range(6)]
        assert prefetch_threads()
    assert [step for step, _ in got] == list(range(5, 11))
    for step, batch in got:
        np.testing.assert_array_equal(batch, batches.batch(step))
    assert not prefetch_threads()
    with pytest.raises(RuntimeError, match="closed"):
        next(it)
    it.close()  # twice is fine


def test_prefetch_raises_a_failed_step_in_order_and_closes(folder):
    def make(step):
        if step == 2:
            raise ImageError("step 2 failed")
        return np.full((1,), step)

    it = Prefetcher(make, start=0, depth=2)
    assert [next(it)[0] for _ in range(2)] == [0, 1]
    with pytest.raises(ImageError, match="step 2 failed"):
        next(it)
    assert next(it)[0] == 3
    it.close()
    assert not prefetch_threads()


def test_demo_photos_are_usable_training_data(tmp_path):
    pytest.importorskip("skimage")
    photos = data.demo_photos()
    assert tuple(photos) == data.DEMO_PHOTOS
    for image in photos.values():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 300
    folder = data.write_demo_photos(tmp_path / "demo")
    batches = PhotoBatches(folder, 256, batch_size=2)
    assert len(batches) == len(data.DEMO_PHOTOS)
    assert batches.batch(0).shape == (2, 256, 256, 3)


def test_demo_photos_without_scikit_image_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'jaxnst\[train\]'"):
        data.demo_photos()
