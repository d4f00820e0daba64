"""scripts/torchfile.py, the torch-file reader of the weights conversion: it runs no code that a
file names, and it reads what torch's legacy format lays out, without torch."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import torchfile  # noqa: E402  (scripts/torchfile.py)

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
