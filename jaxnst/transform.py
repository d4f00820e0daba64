"""The image-transformation network of Johnson, Alahi & Fei-Fei (ECCV 2016), in Flax.

A feed-forward network trained once per style, then applied to any photo in one pass, instead of
optimising each image (Gatys et al.). Layers, as in the paper's supplementary material, with
instance normalisation (Ulyanov, Vedaldi & Lempitsky 2016) in place of batch normalisation:

    layer      operation                                      output (h x w input)
    conv1      9x9 conv, 32, IN, ReLU                          h     x w     x 32
    conv2      3x3 conv stride 2, 64, IN, ReLU                 h/2   x w/2   x 64
    conv3      3x3 conv stride 2, 128, IN, ReLU                h/4   x w/4   x 128
    res1..5    x + IN(conv3x3(ReLU(IN(conv3x3(x)))))           h/4   x w/4   x 128
    up1        nearest x2, 3x3 conv, 64, IN, ReLU              h/2   x w/2   x 64
    up2        nearest x2, 3x3 conv, 32, IN, ReLU              h     x w     x 32
    conv_out   9x9 conv, 3 (with bias), sigmoid                h     x w     x 3

1,677,635 parameters (``PARAM_COUNT``) at the paper's width of 32 channels in the first layer
(``width`` 16: Johnson's released instance-norm models, 0.42M), all float32. Choices, each a
departure or a decision
(``notes/fast/DESIGN.md`` has the reasons at length):

- **Reflection padding before every convolution** (as pytorch/examples' fast_neural_style), so
  that every layer keeps its input's size and borders show no dark frame. Johnson's own code
  pads 40 px by reflection once at the start and shrinks inside the residual blocks instead.
- **Upsampling by nearest x2, then a 3x3 convolution**, not a transposed convolution: no
  checkerboard artefacts (Odena, Dumoulin & Olah, Distill 2016).
- **Odd sizes**: a stride-2 layer maps n pixels to ceil(n / 2) (its samples sit on pixels
  0, 2, 4, ...); the matching upsampling doubles and drops the last row/column when the encoder
  side was odd, so every stage has its encoder twin's size and the output has the input's size
  exactly. Sides of at least ``MIN_SIDE`` = 5 px: the 9x9 reflection needs 5, and the 1/4 stage
  needs 2 px for its 3x3 reflection (as PyTorch's ``ReflectionPad2d`` requires).
- **No bias before an instance norm**: the mean subtraction removes it exactly (its gradient is
  zero), so it would only cost an add; 1,600 parameters fewer than the PyTorch example's
  1,679,235. A checkpoint of that example imports exactly by dropping those biases.
- **Output = sigmoid(z)**, in (0, 1): the loss sees exactly the image that is saved, with a
  gradient everywhere. Johnson maps to 150 tanh(z) on VGG's mean-subtracted 0..255 scale and
  clips only when saving, so the loss sees pixels outside the valid range that the saved image
  does not have; a clip inside the loss would zero the gradient of those pixels instead.
- **Instance norm**: per image and channel, mean and variance over the positions (biased
  variance, eps 1e-5 as Torch and PyTorch), learned scale (init 1) and offset (init 0);
  statistics in float32 even when the convolutions compute in bfloat16. Hence the output does
  not change when a constant is added to the input (tested): conv1 turns the shift into a
  per-channel constant (reflection padding keeps it constant at the borders) which the norm
  removes.

Inputs are RGB in [0, 1] as everywhere in jaxnst; the first norm makes any other offset moot.
``transform_stats`` records every norm's statistics on an image and ``apply_transform(...,
stats=...)`` normalises with them instead: the network is then one convolutional function of its
input (receptive radius 57 px), which is how ``jaxnst.apply`` cuts a large image into tiles.
"""

from __future__ import annotations

import functools
import itertools
import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, Any]

MIN_SIDE = 5  # smallest height or width the network takes (see the module docstring)
RESIDUAL_BLOCKS = 5
PARAM_COUNT = 1_677_635
NORM_EPS = 1e-5  # Torch's and PyTorch's InstanceNorm


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """Mirror ``pad`` pixels at each border of (n, h, w, c), the edge pixel not repeated."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def upsample_to(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour x2 of (n, h, w, c), cut to ``hw`` (a last odd row/column dropped)."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x[:, : hw[0], : hw[1]]


class InstanceNorm(nn.Module):
    """Per image and channel: (x - mean) / sqrt(var + eps) * scale + offset over (h, w).

    The statistics are the image's own, unless a ``stats`` collection is given (tiles of a large
    image normalised alike); with ``stats`` mutable they are recorded there.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float32 stats for bfloat16
        if self.has_variable("stats", "mean"):
            mean, var = self.get_variable("stats", "mean"), self.get_variable("stats", "var")
        else:
            mean = x.mean(axis=(1, 2), keepdims=True)
            var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
            if self.is_mutable_collection("stats"):
                self.put_variable("stats", "mean", mean)
                self.put_variable("stats", "var", var)
        y = (x - mean) * jax.lax.rsqrt(var + NORM_EPS) * scale + bias
        return y.astype(self.dtype)


class TransformNet(nn.Module):
    """Johnson et al.'s network: (n, h, w, 3) in [0, 1] -> (n, h, w, 3) in (0, 1), float32.

    ``dtype`` is the compute dtype of the convolutions (float32, or bfloat16 on GPUs/TPUs);
    parameters are float32. ``width`` is the first layer's channels (the later ones have 2 and 4
    times as many): 32 as in the paper, 16 in Johnson's released instance-norm models.
    """

    dtype: Any = jnp.float32
    width: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def conv(y, features, k, name, stride=1, bias=False):
            y = reflect_pad(y, k // 2)
            return nn.Conv(
                features, (k, k), (stride, stride), "VALID", use_bias=bias,
                dtype=self.dtype, param_dtype=jnp.float32, name=name,
            )(y)  # fmt: skip

        def conv_norm_relu(y, features, k, name, stride=1):
            y = conv(y, features, k, name, stride)
            return nn.relu(InstanceNorm(self.dtype, name=f"{name}_norm")(y))

        w = self.width
        x = x.astype(self.dtype)
        sizes = [x.shape[1:3]]
        x = conv_norm_relu(x, w, 9, "conv1")
        x = conv_norm_relu(x, 2 * w, 3, "conv2", stride=2)
        sizes.append(x.shape[1:3])
        x = conv_norm_relu(x, 4 * w, 3, "conv3", stride=2)
        for i in range(1, RESIDUAL_BLOCKS + 1):
            y = conv_norm_relu(x, 4 * w, 3, f"res{i}_a")
            x = x + InstanceNorm(self.dtype, name=f"res{i}_b_norm")(conv(y, 4 * w, 3, f"res{i}_b"))
        x = conv_norm_relu(upsample_to(x, sizes[1]), 2 * w, 3, "up1")
        x = conv_norm_relu(upsample_to(x, sizes[0]), w, 3, "up2")
        z = conv(x, 3, 9, "conv_out", bias=True)
        return jax.nn.sigmoid(z.astype(jnp.promote_types(z.dtype, jnp.float32)))


def _check_images(images: jax.Array) -> None:
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected images (n, h, w, 3) or (h, w, 3), not shape {images.shape}")
    h, w = images.shape[-3:-1]
    if min(h, w) < MIN_SIDE:
        raise ValueError(
            f"image of {h}x{w} px: the transformation network needs at least {MIN_SIDE}x{MIN_SIDE}"
        )


@functools.cache
def param_shapes(width: int = 32) -> Params:
    """The parameters' shapes for ``width`` (``jax.ShapeDtypeStruct`` leaves; traced, not run)."""
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    return jax.eval_shape(TransformNet(width=width).init, jax.random.key(0), x)["params"]


@partial(jax.jit, static_argnames=("dtype", "width"))
def init_transform(key: jax.Array, dtype: Any = jnp.float32, width: int = 32) -> Params:
    """Fresh parameters {"conv1": {"kernel": (9, 9, 3, width)}, "conv1_norm": {"scale",
    "bias"}, ...}: LeCun-normal kernels (Flax's default for convolutions: a normal truncated at
    2 sigma, scaled to variance 1 / fan-in), zero biases, norm scales 1 and offsets 0.

    All kernels are cut from one draw of ``key``: running Flax's ``init`` (or one draw per
    kernel) costs half a minute of compilation on a loaded 2-core CPU, one draw a second.
    ``dtype`` is accepted for symmetry with ``apply_transform``: parameters are float32.
    """
    del dtype
    leaves, treedef = jax.tree_util.tree_flatten_with_path(param_shapes(width))
    sizes = [math.prod(spec.shape) for path, spec in leaves if path[-1].key == "kernel"]
    draw = iter(jnp.split(jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),)),
                          list(itertools.accumulate(sizes))[:-1]))  # fmt: skip
    out = []
    for path, spec in leaves:
        name = path[-1].key
        if name == "kernel":  # 0.8796: the standard deviation of a normal truncated at 2
            std = 1.0 / math.sqrt(math.prod(spec.shape[:-1])) / 0.87962566103423978
            out.append(next(draw).reshape(spec.shape) * std)
        else:  # a norm's scale starts at 1; its offset and the output layer's bias at 0
            out.append((jnp.ones if name == "scale" else jnp.zeros)(spec.shape, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, out)


def width_of(params: Params) -> int:
    """The network's ``width`` (its first layer's channels), read from its parameters."""
    return int(params["conv1"]["kernel"].shape[-1])


def apply_transform(
    params: Params, images: jax.Array, dtype: Any = jnp.float32, stats: Params | None = None
) -> jax.Array:
    """Stylise RGB ``images`` (n, h, w, 3) or (h, w, 3) in [0, 1] -> the same shape in (0, 1).

    Any height and width of at least ``MIN_SIDE`` (ValueError otherwise, at trace time);
    float32 out whatever ``dtype`` (the convolutions' compute dtype) is. Pure: works under
    ``jit`` (``dtype`` static), ``grad`` and ``vmap``. ``stats`` (from ``transform_stats``)
    replaces each instance norm's statistics, so that the tiles of one image are normalised as
    that image: the network is then the same convolutional function on every tile.
    """
    _check_images(images)
    single = images.ndim == 3
    net = TransformNet(dtype, width_of(params))
    variables = {"params": params} if stats is None else {"params": params, "stats": stats}
    out = net.apply(variables, images[None] if single else images)
    return out[0] if single else out


def transform_stats(params: Params, images: jax.Array, dtype: Any = jnp.float32) -> Params:
    """Each instance norm's statistics on ``images`` (n, h, w, 3): {"conv1_norm": {"mean",
    "var"}, ...}, each (n, 1, 1, c) float32; ``apply_transform(..., stats=...)`` uses them."""
    _check_images(images)
    net = TransformNet(dtype, width_of(params))
    _, state = net.apply({"params": params}, images, mutable=["stats"])
    return state["stats"]


def param_count(params: Params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(x.size for x in jax.tree.leaves(params))
