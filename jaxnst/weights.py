"""VGG19's weights: reading them, where they come from, and the paper's normalised network.

``load_vgg19`` reads jaxnst's converted file (``weights/vgg19.h5``: each kernel quantised to 256
values per layer, ``weights/README.md``) or Keras' full-precision ``..._notop.h5``, checking every
layer's name and shape; any problem is one ``WeightsError`` line naming the file.
``weights_provenance`` returns the provenance stored with them.

The normalised network (Gatys et al. 2016, sec. 2): "We normalized the network by scaling the
weights such that the mean activation of each convolutional filter over images and positions is
equal to one." Because ReLU and both poolings commute with a positive per-channel scale, dividing
filter k of layer l (kernel and bias) by its mean m_lk and multiplying the matching input channel
of layer l+1 by m_lk leaves every later pre-activation unchanged while each rectified response has
mean 1. The means are measured once by ``scripts/compute_normalization.py`` over 19 images
(scikit-image's bundled ones and the paper's test images; a stand-in for ImageNet), floored
at a tenth of their layer's median (``floored_means``), and shipped in
``weights/vgg19_means.npz``, per pooling mode, so no image set is needed at run time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxnst.errors import WeightsError
from jaxnst.layers import CONV_LAYERS, conv_shapes
from jaxnst.vgg import Params, extract_features

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "vgg19.h5"
DEFAULT_MEANS = WEIGHTS_DIR / "vgg19_means.npz"
QUANTIZED_FORMAT = "jaxnst-vgg19-kmeans256-v1"


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


# ---------------------------------------------------------------------- the normalised network


def activation_means(params: Params, images: Iterable[np.ndarray], pooling: str) -> dict:
    """Mean rectified activation per filter of every conv layer over ``images`` and positions.

    Each image (h, w, 3) in [0, 1] counts equally. Returns {layer: (c,) float64}.
    """
    fn = jax.jit(
        lambda p, x: {
            k: jnp.mean(v, axis=(0, 1))
            for k, v in extract_features(p, x, CONV_LAYERS, pooling).items()
        }
    )
    sums, count = None, 0
    for image in images:
        means = jax.device_get(fn(params, jnp.asarray(image, jnp.float32)))
        if sums is None:
            sums = {k: np.asarray(v, np.float64) for k, v in means.items()}
        else:
            for k, v in means.items():
                sums[k] += v
        count += 1
    if not count:
        raise ValueError("no images")
    return {k: v / count for k, v in sums.items()}


MEAN_FLOOR = 0.1  # a filter's mean counts as at least this share of its layer's median


def floored_means(means: np.ndarray, floor: float = MEAN_FLOOR) -> np.ndarray:
    """Per-filter means (c,), each raised to ``floor`` x its layer's median of positive means.

    Departure from the paper (which divides by each mean as it is): a filter that barely fires
    on the calibration images (one conv2_1 filter had a mean of 5e-7 under avg pooling over four
    photographs) would be scaled by 1e6 and overflow the Gram matrices of an image on which it
    does fire. Over the 19 calibration images, 14 of 5,504 filters (max pooling; 12 under avg)
    have a mean below 0.1 x their layer's median and none below 0.001 x: the floor bounds every
    scale to at most 10x its layer's typical one and changes only that sparse tail. A dead
    filter (mean 0) gets the floor like any other.
    """
    m = np.asarray(means, np.float64)
    positive = m[m > 0]
    median = float(np.median(positive)) if positive.size else 1.0
    return np.maximum(m, floor * median)


def rescale(params: Params, means: dict[str, np.ndarray], floor: float = MEAN_FLOOR) -> Params:
    """Params whose filter k of layer l is divided by means[l][k] (compensated downstream),
    each mean floored at ``floor`` x its layer's median (``floored_means``)."""
    out, prev = {}, None
    for name in CONV_LAYERS:
        kernel = jnp.asarray(params[name]["kernel"])
        bias = jnp.asarray(params[name]["bias"])
        scale = floored_means(means[name], floor).astype(np.float32)
        if prev is not None:  # undo the previous layer's scaling on this layer's input
            kernel = kernel * prev[None, None, :, None]
        out[name] = {"kernel": kernel / scale, "bias": bias / scale}
        prev = scale
    return out


def load_means(pooling: str, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The shipped per-filter means for ``pooling`` ("max" or "avg")."""
    path = Path(path) if path else DEFAULT_MEANS
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[f"{pooling}/{k}"] for k in CONV_LAYERS}
    except (OSError, KeyError, ValueError) as err:
        raise WeightsError(f"{path}: cannot read the normalisation means ({err})") from None


def normalize_params(params: Params, pooling: str, path: str | Path | None = None) -> Params:
    """The paper's normalised network: ``rescale(params, load_means(pooling))``."""
    return rescale(params, load_means(pooling, path))


def load_params(path: str | Path = "", normalize: bool = False, pooling: str = "max") -> Params:
    """The VGG19 params of a run: the weights file ``path`` (default: the shipped one), rescaled
    to the paper's normalised network for ``pooling`` if ``normalize``."""
    params = load_vgg19(path or None)
    return normalize_params(params, pooling) if normalize else params
