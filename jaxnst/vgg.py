"""VGG19 (Simonyan & Zisserman 2014) as a Flax module: the model, its input, its derivatives.

Layer names follow Gatys et al.: ``conv{b}_{i}`` for the i-th convolution of block b and
``pool{b}`` for the pooling that closes block b. **A conv name means the rectified response**
(the convolution followed by its ReLU), as in the paper and the classic implementations, whose
"conv4_2" is Caffe's ``relu4_2``. The pre-activation is never returned.

Only the 16 convolutions and 5 poolings are built (no fully connected layers), and only up to the
deepest layer a caller asks for. The network expects BGR pixels in 0..255 minus the ImageNet mean;
``extract_features`` takes RGB in [0, 1] and does that conversion itself, so no caller can get it
wrong. Its geometry (names, widths, poolings) is ``jaxnst.layers``; reading the weights is
``jaxnst.weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.config import POOLINGS
from jaxnst.layers import (
    LAYER_INDEX,
    LAYER_NAMES,
    VGG19_BLOCKS,
    check_layers,
    conv_shapes,
    deepest,
)

Params = dict[str, Any]

# ImageNet mean of the Caffe model, in the network's BGR channel order, on the 0..255 scale.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


def _windows(x: jax.Array) -> jax.Array:
    """(n, h, w, c) -> (n, h // 2, 2, w // 2, 2, c): the 2x2 windows (an odd last row/column is
    dropped, as by VALID pooling)."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2, (n, h, w, c) -> (n, h // 2, w // 2, c), as ``nn.max_pool``.

    The derivative is XLA's, bit for bit (each window's first maximum in row-major order takes the
    whole gradient), but written as a mask instead of ``reduce_window``'s transpose: on XLA:CPU
    that transpose is a variadic ``reduce_window`` over int32 window indices and a scatter, 4x
    slower than the mask on its own, and the indices (four int32 arrays per pooling) stay alive
    for the backward pass. At 512 px this cut the peak RSS of an Adam run by ~560 MB (1.69 ->
    1.12 GB) and the CPU time of a loss + gradient by ~5%.
    """
    return _windows(x).max(axis=(2, 4))


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    win = _windows(x)
    top = win.max(axis=(2, 4), keepdims=True)
    # position 0..3 of each element in its window; the first maximum is the smallest position
    pos = 2 * jax.lax.broadcasted_iota(jnp.int8, win.shape, 2)
    pos = pos + jax.lax.broadcasted_iota(jnp.int8, win.shape, 4)
    first = jnp.where(win == top, pos, jnp.int8(4)).min(axis=(2, 4), keepdims=True)
    t_out = jnp.where(pos == first, _windows(t), jnp.zeros((), t.dtype)).sum(axis=(2, 4))
    return top[:, :, 0, :, 0], t_out


def _conv(x: jax.Array, kernel: jax.Array, kernel_spec: str = "HWIO") -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", kernel_spec, "NHWC")
    )


def backward_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of a 3x3 "SAME" convolution's input gradient: flipped, in/out swapped (HWIO)."""
    return jnp.swapaxes(kernel[::-1, ::-1], 2, 3)


def with_backward_kernels(params: Params, upto: str = LAYER_NAMES[-1]) -> Params:
    """``params`` plus, for each conv up to ``upto``, its ``backward_kernel`` as "kernel_bwd".

    Computed once per run, for the step programs. The input gradient of a convolution is a
    convolution with the flipped, in/out-swapped kernel; without a stored copy XLA relays every
    kernel out on every step (a reverse and transpose of 52 MB up to conv5_1). With the copy, the
    relayout is gone: an Adam step at 256 px on the 2-core CPU machine took 5.5% less time
    (3% at 512 px) for 49 MB more memory (docs/benchmarks.md). Values are bit-identical.
    """
    last = LAYER_INDEX[upto]
    return {
        name: {**p, "kernel_bwd": backward_kernel(p["kernel"])}
        if name.startswith("conv") and LAYER_INDEX[name] <= last and "kernel_bwd" not in p
        else p
        for name, p in params.items()
    }


@jax.custom_jvp
def conv_with_backward_kernel(x: jax.Array, kernel: jax.Array, kernel_bwd: jax.Array):
    """``_conv(x, kernel)``, with a derivative whose transpose reads ``kernel_bwd`` as it is.

    The tangent conv(dx, kernel) is written as a convolution with ``kernel_bwd`` flipped, read
    with in/out swapped ("HWOI"): the same numbers. Reverse mode transposes it into a convolution
    that flips and swaps again, which XLA folds away, leaving ``kernel_bwd`` untouched. Forward
    mode works too. ``kernel_bwd`` is a cache of ``backward_kernel(kernel)``: the derivative with
    respect to ``kernel`` is exact and ``kernel_bwd`` gets none.
    """
    return _conv(x, kernel)


@conv_with_backward_kernel.defjvp
def _conv_with_backward_kernel_jvp(primals, tangents):
    x, kernel, kernel_bwd = primals
    dx, dkernel, _ = tangents
    dy = _conv(dx, kernel_bwd[::-1, ::-1], "HWOI") + _conv(x, dkernel)
    return _conv(x, kernel), dy


def _block(params: Params, x: jax.Array, names: tuple[str, ...], pooling: str, dtype: Any):
    """One VGG block (its convs + ReLUs, then its pooling if asked): (x, {name: activation})."""
    feats = {}
    for name in names:
        if name.startswith("conv"):
            kernel = params[name]["kernel"].astype(dtype)
            if "kernel_bwd" in params[name]:  # with_backward_kernels
                bwd = params[name]["kernel_bwd"].astype(dtype)
                x = conv_with_backward_kernel(x, kernel, bwd)
            else:
                x = _conv(x, kernel)
            x = nn.relu(x + params[name]["bias"].astype(dtype))
        elif pooling == "avg":
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        else:
            x = max_pool_2x2(x)
        feats[name] = x
    return x, feats


class VGG19(nn.Module):
    """VGG19 trunk: (n, h, w, 3) BGR-minus-mean -> {layer name: activation (n, h', w', c)}.

    ``outputs`` names the layers returned; nothing past the deepest of them is computed.
    ``dtype`` is the compute dtype (float32 by default; bfloat16 for speed on GPUs and TPUs);
    parameters stay float32. ``remat`` recomputes each block's inner activations in the backward
    pass (``jax.checkpoint`` per block) instead of keeping them: less memory, ~1/3 more compute.
    Parameters are {"conv1_1": {"kernel": (3, 3, 3, 64), "bias": (64,)}, ...} as Flax's Conv.
    """

    outputs: tuple[str, ...] = LAYER_NAMES
    pooling: str = "max"
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        last = LAYER_INDEX[deepest(self.outputs)]
        wanted = set(self.outputs)
        feats = {}
        x = x.astype(self.dtype)
        for b in range(1, len(VGG19_BLOCKS) + 1):
            names = tuple(n for n in LAYER_NAMES[: last + 1] if n[4] == str(b))
            if not names:
                break
            params = {n: self.param(n, _conv_init, *conv_shapes()[n]) for n in names if n[0] == "c"}
            block = partial(_block, names=names, pooling=self.pooling, dtype=self.dtype)
            if self.remat:
                block = jax.checkpoint(block)
            x, out = block(params, x)
            feats.update({k: v for k, v in out.items() if k in wanted})
        return feats


def _conv_init(key: jax.Array, kshape: tuple[int, ...], bshape: tuple[int, ...]) -> Params:
    fan_in = kshape[0] * kshape[1] * kshape[2]
    kernel = jax.random.normal(key, kshape, jnp.float32) * np.sqrt(2.0 / fan_in)
    return {"kernel": kernel, "bias": jnp.zeros(bshape, jnp.float32)}


def preprocess(images: jax.Array) -> jax.Array:
    """RGB in [0, 1], (..., 3) -> the network's input: BGR on 0..255 minus the ImageNet mean."""
    return images[..., ::-1] * 255.0 - jnp.asarray(IMAGENET_MEAN_BGR, images.dtype)


def deprocess(x: jax.Array) -> jax.Array:
    """Inverse of ``preprocess``: network input -> RGB in [0, 1] (not clipped)."""
    return ((x + jnp.asarray(IMAGENET_MEAN_BGR, x.dtype)) / 255.0)[..., ::-1]


def extract_features(
    params: Params,
    images: jax.Array,
    layers: Sequence[str],
    pooling: str = "max",
    dtype: Any = jnp.float32,
    remat: bool = False,
) -> dict[str, jax.Array]:
    """Activations of ``layers`` for RGB ``images`` (n, h, w, 3) or (h, w, 3) in [0, 1].

    ``params`` is the pytree from ``load_vgg19`` (passed as an argument, so under ``jit`` it stays
    an input rather than a constant baked into the program). Returns {name: (n, h', w', c)}, or
    (h', w', c) for a single image. Works under ``jit``, ``vmap`` and ``grad``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    check_layers(layers)
    single = images.ndim == 3
    x = preprocess(images[None] if single else images)
    model = VGG19(outputs=tuple(layers), pooling=pooling, dtype=dtype, remat=remat)
    feats = model.apply({"params": params}, x)
    return {k: v[0] for k, v in feats.items()} if single else feats


def init_params(seed: int = 0) -> Params:
    """Random VGG19 parameters of the right shapes (He-normal kernels): for tests and shapes.

    Drawn with NumPy: jax.random would compile a sampler per shape (seconds on a small CPU).
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, (kshape, bshape) in conv_shapes().items():
        fan_in = kshape[0] * kshape[1] * kshape[2]
        kernel = rng.standard_normal(kshape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        params[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(bshape, jnp.float32)}
    return params


__all__ = [
    "IMAGENET_MEAN_BGR",
    "VGG19",
    "Params",
    "backward_kernel",
    "conv_with_backward_kernel",
    "deprocess",
    "extract_features",
    "init_params",
    "max_pool_2x2",
    "preprocess",
    "with_backward_kernels",
]
