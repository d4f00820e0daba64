"""Spatial control on the host (Gatys et al. 2017, sec. 4): masks at every layer's resolution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxnst import guidance
from jaxnst.config import MASK_LAYERS
from jaxnst.layers import LAYER_NAMES
from jaxnst.vgg import extract_features, init_params


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


# ---------------------------------------------------------------------------- mask pyramids


def test_mask_pyramid_shapes_match_vgg_for_a_32x48_image():
    image = jnp.zeros((32, 48, 3), jnp.float32)
    shapes = jax.eval_shape(lambda p, x: extract_features(p, x, LAYER_NAMES), init_params(0), image)
    for mode in MASK_LAYERS:
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
    for mode in MASK_LAYERS:
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


def test_the_gate_is_the_masks_grown_then_feathered():
    mask = np.zeros((32, 40), np.float32)
    mask[:8, 10:20] = 0.5  # any weight counts as inside
    gate = guidance.gate_mask([mask, np.zeros_like(mask)], 2)
    assert gate.shape == (32, 40, 1) and gate.dtype == np.float32
    assert gate[:8, 10:20].min() == 1.0  # the region itself: free
    assert gate[13:].max() == 0.0 and gate[:, :6].max() == 0.0  # beyond 4 px: the photo
    assert 0 < gate[11, 15, 0] < gate[9, 15, 0] < 1  # falling to 0 over 4 px around it
    np.testing.assert_array_equal(guidance.gate_mask([mask], 0)[..., 0], mask > 0)
