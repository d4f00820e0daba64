"""Spatial control (Gatys et al. 2017, sec. 4): masks from files, mask pyramids, guided Grams."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxnst import guidance
from jaxnst.errors import ImageError
from jaxnst.losses import gram, style_layer_loss
from jaxnst.vgg import LAYER_NAMES, extract_features, init_params


def half_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    return mask


def feats_of(seed: int, shape=(6, 5, 4)) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def save(path, array: np.ndarray, mode: str | None = None):
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


# ----------------------------------------------------------------------------- guided Grams


def test_guided_gram_with_an_all_ones_mask_is_the_gram():
    feats = feats_of(0)
    ones = jnp.ones(feats.shape[:2])
    np.testing.assert_allclose(guidance.guided_gram(feats, ones), gram(feats), rtol=1e-6)
    # ... and the guided loss is the unguided one, with targets normalised by the area.
    style = feats_of(1)
    target = guidance.guided_style_grams({"conv1_1": style}, {"conv1_1": ones})["conv1_1"]
    np.testing.assert_allclose(target, gram(style) / 30, rtol=1e-6)
    np.testing.assert_allclose(
        guidance.guided_style_layer_loss(feats, target, ones),
        style_layer_loss(feats, gram(style)),
        rtol=1e-5,
    )


def test_guided_loss_gradient_is_zero_outside_the_mask():
    feats, mask = feats_of(2), jnp.asarray(half_mask(6, 5))
    target = guidance.normalized_guided_gram(feats_of(3), jnp.ones((6, 5)))
    grad = jax.grad(guidance.guided_style_layer_loss)(feats, target, mask)
    assert np.all(np.asarray(grad)[:, 2:] == 0.0)  # exactly, not approximately
    assert np.all(np.abs(np.asarray(grad)[:, :2]) > 0)


def test_regions_of_different_sizes_are_balanced():
    # The output's region (left half, 4x3) repeats the whole style image's feature vectors twice:
    # the same statistics per position, twice the area, next to an unrelated right half.
    # Normalising each side by its own area sees a perfect match; M = h * w would not.
    style = feats_of(4, (2, 3, 4))
    feats = jnp.concatenate([jnp.tile(style, (2, 1, 1)), feats_of(5, (4, 3, 4))], axis=1)
    mask = jnp.asarray(half_mask(4, 6))
    target = guidance.guided_style_grams({"l": style}, {"l": jnp.ones((2, 3))})["l"]
    loss = guidance.guided_style_layer_loss(feats, target, mask)
    np.testing.assert_allclose(loss, 0.0, atol=1e-12)
    unbalanced = jnp.sum((guidance.guided_gram(feats, mask) / 24 - target) ** 2)
    assert unbalanced > 1e-3


def test_an_empty_region_contributes_zero_and_finite_gradients():
    feats, zero = feats_of(5), jnp.zeros((6, 5))
    target = guidance.normalized_guided_gram(feats_of(6), jnp.ones((6, 5)))
    loss, grad = jax.value_and_grad(guidance.guided_style_layer_loss)(feats, target, zero)
    assert loss == 0.0 and np.all(np.asarray(grad) == 0.0)
    np.testing.assert_array_equal(guidance.normalized_guided_gram(feats, zero), 0.0)


def test_guided_style_losses_sum_stacked_regions():
    mask = half_mask(6, 5)
    masks = [mask, 1.0 - mask]
    feats, style = {"a": feats_of(7)}, {"a": feats_of(8)}
    targets = [guidance.guided_style_grams(style, {"a": m}) for m in masks]
    pairs = zip(targets, masks, strict=True)
    # each region weighs by the share of the layer it covers (both halves: 1/2 here)
    shares = [float(np.sum(m**2)) / m.size for m in masks]
    want = sum(
        s * guidance.guided_style_layer_loss(feats["a"], t["a"], m)
        for s, (t, m) in zip(shares, pairs, strict=True)
    )
    stacked = guidance.stack_regions([{"a": m} for m in masks])
    got = jax.jit(guidance.guided_style_losses, static_argnums=3)(
        feats, guidance.stack_regions(targets), stacked, ("a",)
    )
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


# ---------------------------------------------------------------------------- mask pyramids


def test_mask_pyramid_shapes_match_vgg_for_a_32x48_image():
    image = jnp.zeros((32, 48, 3), jnp.float32)
    shapes = jax.eval_shape(lambda p, x: extract_features(p, x, LAYER_NAMES), init_params(0), image)
    for mode in guidance.PYRAMID_MODES:
        pyramid = guidance.mask_pyramid(half_mask(32, 48), LAYER_NAMES, mode)
        assert list(pyramid) == list(LAYER_NAMES)
        for name, mask in pyramid.items():
            assert mask.shape == shapes[name].shape[:2], (mode, name)
            assert mask.dtype == np.float32


def test_inside_is_a_subset_of_simple_and_full_masks_stay_full():
    mask = np.zeros((32, 48), np.float32)
    mask[4:28, 6:30] = 1.0
    layers = ("conv1_1", "conv2_1", "pool2", "conv3_1", "conv4_1")
    simple = guidance.mask_pyramid(mask, layers, "simple")
    inside = guidance.mask_pyramid(mask, layers, "inside")
    dilated = guidance.mask_pyramid(mask, layers, "all")
    for k in layers:
        assert np.all(inside[k] <= simple[k]) and np.all(simple[k] <= dilated[k]), k
        assert np.all(simple[k][inside[k] > 0] > 0)
    assert inside["conv3_1"].sum() < (simple["conv3_1"] > 0).sum()  # erosion bites
    # conv1_1's 3x3 receptive field: one pixel of erosion on every side of the box.
    np.testing.assert_array_equal(inside["conv1_1"][5:27, 7:29], 1.0)
    assert inside["conv1_1"].sum() == 22 * 22
    # pool1 of "simple" is the 2x2 mean.
    np.testing.assert_allclose(
        guidance.mask_pyramid(mask, ["pool1"])["pool1"],
        mask.reshape(16, 2, 24, 2).mean((1, 3)),
    )
    # The image border is not outside the region: a full mask stays full everywhere.
    for mode in guidance.PYRAMID_MODES:
        full = guidance.mask_pyramid(np.ones((32, 48)), LAYER_NAMES, mode)
        assert all(np.all(m == 1.0) for m in full.values()), mode


def test_mask_pyramid_rejects_unknown_layers_and_modes():
    with pytest.raises(ValueError, match="unknown layer"):
        guidance.mask_pyramid(np.ones((8, 8)), ["relu9_9"])
    with pytest.raises(ValueError, match="mode must be one of"):
        guidance.mask_pyramid(np.ones((8, 8)), ["conv1_1"], "erode")


def test_drop_empty_layers_zeroes_layers_whose_style_mask_vanished():
    content = {"a": np.ones((2, 2), np.float32), "b": np.ones((1, 1), np.float32)}
    style = {"a": np.ones((3, 3), np.float32), "b": np.zeros((1, 1), np.float32)}
    out = guidance.drop_empty_layers(content, style)
    np.testing.assert_array_equal(out["a"], 1.0)
    np.testing.assert_array_equal(out["b"], 0.0)


# ----------------------------------------------------------------------------- mask files


def test_load_mask_reads_grey_16_bit_and_transparent_pngs(tmp_path):
    grey = (half_mask(8, 12) * 255).astype(np.uint8)
    mask = guidance.load_mask(save(tmp_path / "l.png", grey), (8, 12))
    np.testing.assert_array_equal(mask, half_mask(8, 12))
    rgb = guidance.load_mask(save(tmp_path / "rgb.png", grey, "RGB"), (8, 12))
    np.testing.assert_array_equal(rgb, mask)
    deep = guidance.load_mask(
        save(tmp_path / "16.png", np.full((8, 12), 32768, np.uint16)), (8, 12)
    )
    np.testing.assert_allclose(deep, 32768 / 65535, rtol=1e-6)
    # White strokes on a transparent layer: transparent = outside, not white.
    rgba = np.full((8, 12, 4), 255, np.uint8)
    rgba[..., 3] = grey
    np.testing.assert_array_equal(guidance.load_mask(save(tmp_path / "a.png", rgba), (8, 12)), mask)
    # Arrays work too, and a larger mask of the same aspect is resized, staying in [0, 1].
    np.testing.assert_array_equal(guidance.load_mask(half_mask(8, 12) > 0, (8, 12)), mask)
    big = guidance.load_mask(
        save(tmp_path / "big.png", np.repeat(np.repeat(grey, 4, 0), 4, 1)), (8, 12)
    )
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
        guidance.load_mask(path, (4, 6), **kwargs)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))


def test_load_color_masks_splits_a_two_colour_map_into_complementary_masks(tmp_path):
    region = np.zeros((8, 12, 3), np.uint8)
    region[:, :6] = (255, 0, 0)
    region[:, 6:] = (0, 0, 255)
    path = save(tmp_path / "regions.png", region)
    masks = guidance.load_color_masks(path, (8, 12))
    assert list(masks) == ["#0000ff", "#ff0000"]
    np.testing.assert_array_equal(masks["#ff0000"], half_mask(8, 12))
    np.testing.assert_array_equal(masks["#ff0000"] + masks["#0000ff"], 1.0)
    small = guidance.load_color_masks(path, (4, 6))  # resized: soft, still a partition
    np.testing.assert_allclose(small["#ff0000"] + small["#0000ff"], 1.0, atol=1e-6)
    noisy = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match="more than 16"):
        guidance.load_color_masks(save(tmp_path / "noise.png", noisy), (8, 12))
