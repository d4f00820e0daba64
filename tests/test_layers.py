"""VGG19's geometry, written once: names, widths, and the sizes the poolings leave."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxnst import layers
from jaxnst.vgg import extract_features, init_params


def test_names_and_widths_are_vgg19s():
    assert len(layers.CONV_LAYERS) == 16 and len(layers.LAYER_NAMES) == 21
    assert layers.LAYER_NAMES[:3] == ("conv1_1", "conv1_2", "pool1")
    assert layers.width("conv1_1") == 64 and layers.width("pool3") == 256
    assert layers.width("conv5_4") == 512
    assert layers.conv_shapes()["conv2_1"] == ((3, 3, 64, 128), (128,))


@pytest.mark.parametrize("hw", [(37, 53), (16, 16), (48, 40)])
def test_layer_sizes_match_the_network(hw):
    """Each pooling halves with the floor: the geometry agrees with what VGG19 computes."""
    shapes = jax.eval_shape(
        lambda p, x: extract_features(p, x, layers.LAYER_NAMES), init_params(0), jnp.zeros((*hw, 3))
    )
    for name in layers.LAYER_NAMES:
        h, w, c = shapes[name].shape
        assert layers.layer_hw(hw, name) == (h, w), name
        assert layers.positions(hw, name) == h * w and layers.width(name) == c


def test_min_side_and_pools_count_a_pooling_itself():
    assert layers.pools_before("conv1_1") == 0 and layers.pools_before("pool1") == 1
    assert layers.pools_before("conv5_1") == 4 and layers.min_side("conv5_1") == 16
    assert layers.min_side("pool5") == 32  # pool5 needs 32 px for one position
    assert layers.deepest(["conv2_1", "conv1_1", "pool2"]) == "pool2"
    with pytest.raises(ValueError, match="unknown layer 'relu1_1'"):
        layers.check_layers(["conv1_1", "relu1_1"])
