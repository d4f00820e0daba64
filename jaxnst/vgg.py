"""VGG19 (Simonyan & Zisserman 2014) as a Flax module, its preprocessing, and its weights.

Layer names follow Gatys et al.: ``conv{b}_{i}`` for the i-th convolution of block b and
``pool{b}`` for the pooling that closes block b. **A conv name means the rectified response**
(the convolution followed by its ReLU), as in the paper and the classic implementations, whose
"conv4_2" is Caffe's ``relu4_2``. The pre-activation is never returned.

Only the 16 convolutions and 5 poolings are built (no fully connected layers), and only up to the
deepest layer a caller asks for. The network expects BGR pixels in 0..255 minus the ImageNet mean;
``extract_features`` takes RGB in [0, 1] and does that conversion itself, so no caller can get it
wrong.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.errors import WeightsError

Params = dict[str, Any]

VGG19_BLOCKS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
CONV_LAYERS = tuple(
    f"conv{b}_{i}" for b, widths in enumerate(VGG19_BLOCKS, 1) for i in range(1, len(widths) + 1)
)
LAYER_NAMES = tuple(
    name
    for b, widths in enumerate(VGG19_BLOCKS, 1)
    for name in [f"conv{b}_{i}" for i in range(1, len(widths) + 1)] + [f"pool{b}"]
)
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
POOLINGS = ("max", "avg")

# ImageNet mean of the Caffe model, in the network's BGR channel order, on the 0..255 scale.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "vgg19.h5"
QUANTIZED_FORMAT = "jaxnst-vgg19-kmeans256-v1"


def conv_shapes() -> dict[str, tuple[tuple[int, int, int, int], tuple[int]]]:
    """Kernel (kh, kw, in, out) and bias shapes of each conv layer, by paper name."""
    shapes, c_in = {}, 3
    for b, widths in enumerate(VGG19_BLOCKS, 1):
        for i, width in enumerate(widths, 1):
            shapes[f"conv{b}_{i}"] = ((3, 3, c_in, width), (width,))
            c_in = width
    return shapes


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


# --------------------------------------------------------------------------------------- weights


def _keras_name(name: str) -> str:
    block, conv = name[4:].split("_")
    return f"block{block}_conv{conv}"


def _read(path: Path, f: h5py.File, key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in f:
        raise WeightsError(f"{path}: {key} is missing; not a VGG19 weights file?")
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise WeightsError(f"{path}: {key} is not a dataset")
    if tuple(ds.shape) != tuple(shape):
        raise WeightsError(f"{path}: {key} has shape {tuple(ds.shape)}, expected {tuple(shape)}")
    if ds.dtype.kind not in "iuf":  # strings or records would fail later in astype, unexplained
        raise WeightsError(f"{path}: {key} has dtype {ds.dtype}, expected numbers")
    try:
        arr = ds[()]
    except (OSError, ValueError, RuntimeError) as err:  # truncated or corrupted data blocks
        raise WeightsError(
            f"{path}: {key} cannot be read ({err}); truncated or corrupted?"
        ) from err
    return np.asarray(arr)


def _read_quantized(path: Path, f: h5py.File) -> Params:
    params = {}
    for name, (kshape, bshape) in conv_shapes().items():
        codes = _read(path, f, f"{name}/kernel_codes", kshape)
        table = _read(path, f, f"{name}/codebook", (256,)).astype(np.float32)
        if codes.dtype != np.uint8:
            raise WeightsError(f"{path}: {name}/kernel_codes is {codes.dtype}, expected uint8")
        kernel = table[codes]
        bias = _read(path, f, f"{name}/bias", bshape).astype(np.float32)
        params[name] = {"kernel": kernel, "bias": bias}
    return params


def _read_keras(path: Path, f: h5py.File) -> Params:
    params = {}
    for name, (kshape, bshape) in conv_shapes().items():
        k = _keras_name(name)
        kernel = _read(path, f, f"{k}/{k}_W_1:0", kshape).astype(np.float32)
        bias = _read(path, f, f"{k}/{k}_b_1:0", bshape).astype(np.float32)
        params[name] = {"kernel": kernel, "bias": bias}
    return params


def read_vgg19_numpy(path: str | Path) -> Params:
    """Read VGG19 weights into numpy: jaxnst's quantized file, or Keras' ``..._notop.h5``.

    Every layer's name and shape is checked; any problem raises ``WeightsError`` with one line
    that names the file and what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, expected a VGG19 weights file (.h5)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        size = path.stat().st_size
        raise WeightsError(
            f"{path}: not a readable HDF5 file ({size} bytes; truncated or corrupted?)"
        ) from err
    with f:
        try:
            fmt = f.attrs.get("format")  # may be any attribute, an array too, in a foreign file
            if (isinstance(fmt, str) and fmt == QUANTIZED_FORMAT) or "conv1_1" in f:
                params = _read_quantized(path, f)
            elif "block1_conv1" in f:
                params = _read_keras(path, f)
            else:
                raise WeightsError(
                    f"{path}: neither jaxnst's VGG19 format nor Keras' VGG19 notop layout"
                )
        except (OSError, KeyError, RuntimeError) as err:  # h5py metadata damage
            raise WeightsError(f"{path}: cannot be read ({err}); truncated or corrupted?") from err
    for name, layer in params.items():
        for kind, arr in layer.items():
            if not np.all(np.isfinite(arr)):
                raise WeightsError(f"{path}: {name} {kind} holds NaN or Inf values")
    return params


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> Params:
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    return jax.tree.map(jnp.asarray, read_vgg19_numpy(path))


def load_vgg19(path: str | Path | None = None) -> Params:
    """VGG19 parameters as a pytree {"conv1_1": {"kernel": (3, 3, 3, 64), "bias": (64,)}, ...}.

    ``path`` defaults to the converted weights shipped in ``weights/vgg19.h5`` (or the file named by
    the ``JAXNST_WEIGHTS`` environment variable). Results are cached per file.
    """
    path = Path(path) if path is not None else default_weights_path()
    try:
        st = path.stat()
    except OSError:
        hint = ""
        if path == DEFAULT_WEIGHTS:  # a non-editable install does not carry weights/
            hint = " (install with 'pip install -e .' from the repository, or set JAXNST_WEIGHTS)"
        raise WeightsError(f"{path}: weights file not found{hint}") from None
    return _load_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def default_weights_path() -> Path:
    """``$JAXNST_WEIGHTS`` if set, else the converted weights shipped in ``weights/``."""
    env = os.environ.get("JAXNST_WEIGHTS")
    return Path(env) if env else DEFAULT_WEIGHTS


def weights_provenance(path: str | Path | None = None) -> dict[str, str]:
    """The provenance attributes stored in a weights file (empty for a Keras file)."""
    path = Path(path) if path is not None else default_weights_path()
    read_vgg19_numpy(path)  # validates, with one-line errors
    with h5py.File(path, "r") as f:
        return {k: str(v) for k, v in f.attrs.items()}
