"""VGG19's layers as data: their names, widths and where the poolings halve the resolution.

The one place for the network's geometry, in plain Python so that the config (which validates
layer names), the memory plan and the mask pyramids use it without importing the model (Flax) or
JAX. ``jaxnst.vgg`` builds the network from it.

Names follow Gatys et al.: ``conv{b}_{i}`` is the i-th convolution of block b, ``pool{b}`` the
2x2 stride-2 pooling that closes block b. Each pooling halves the size with the floor (VALID
pooling drops an odd last row or column), so a layer after p poolings of an (h, w) input is
(h >> p, w >> p).
"""

from __future__ import annotations

from collections.abc import Iterable

VGG19_BLOCKS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)  # conv widths per block
CONV_LAYERS = tuple(
    f"conv{b}_{i}" for b, widths in enumerate(VGG19_BLOCKS, 1) for i in range(1, len(widths) + 1)
)
LAYER_NAMES = tuple(
    name
    for b, widths in enumerate(VGG19_BLOCKS, 1)
    for name in [f"conv{b}_{i}" for i in range(1, len(widths) + 1)] + [f"pool{b}"]
)
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}


def conv_shapes() -> dict[str, tuple[tuple[int, int, int, int], tuple[int]]]:
    """Kernel (kh, kw, in, out) and bias shapes of each conv layer, by paper name."""
    shapes, c_in = {}, 3
    for b, widths in enumerate(VGG19_BLOCKS, 1):
        for i, width in enumerate(widths, 1):
            shapes[f"conv{b}_{i}"] = ((3, 3, c_in, width), (width,))
            c_in = width
    return shapes


def width(layer: str) -> int:
    """Channels of ``layer``'s response (a pooling keeps its block's width)."""
    block = int(layer[4])
    return VGG19_BLOCKS[block - 1][-1] if layer.startswith("pool") else conv_shapes()[layer][1][0]


def check_layers(names: Iterable[str]) -> None:
    """Raise ValueError naming the first unknown layer, with the valid names."""
    for name in names:
        if name not in LAYER_INDEX:
            raise ValueError(f"unknown layer {name!r}; choose from {', '.join(LAYER_NAMES)}")


def deepest(names: Iterable[str]) -> str:
    """The layer among ``names`` that comes last in the network."""
    names = list(names)
    check_layers(names)
    return max(names, key=LAYER_INDEX.__getitem__)


def pools_before(layer: str) -> int:
    """How many poolings come before ``layer`` (a pooling counts itself)."""
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[layer] + 1] if n.startswith("pool"))


def layer_hw(hw: tuple[int, int], layer: str) -> tuple[int, int]:
    """(h_l, w_l) of ``layer``'s response to an (h, w) input."""
    p = pools_before(layer)
    return hw[0] >> p, hw[1] >> p


def positions(hw: tuple[int, int], layer: str) -> int:
    """M_l = h_l * w_l, the number of positions of ``layer`` for an (h, w) input."""
    h, w = layer_hw(hw, layer)
    return h * w


def min_side(layer: str) -> int:
    """The smallest input side that leaves ``layer`` at least one position."""
    return 2 ** pools_before(layer)
