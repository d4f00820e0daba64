"""Read PyTorch's legacy (non-zip) ``torch.save`` files without torch, and without running code.

Such a file is a sequence of pickles followed by raw bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``, 2. the protocol version ``1001``, 3. a dict of
system info (endianness, type sizes), 4. the object itself, whose tensors refer to storages through
persistent ids ``("storage", StorageType, key, location, numel, view)``, 5. the list of
storage keys, then for each key its element count as a little-endian int64 followed by
``numel * itemsize`` bytes.

A pickle can name any Python global and call it, so unpickling an untrusted file with ``pickle`` is
running its code. ``RestrictedUnpickler`` resolves only the handful of globals such a file needs,
to harmless stand-ins defined here, and refuses every other one.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of its elements (little endian).
STORAGE_DTYPES = {
    "ByteStorage": np.dtype("u1"),
    "CharStorage": np.dtype("i1"),
    "ShortStorage": np.dtype("<i2"),
    "IntStorage": np.dtype("<i4"),
    "LongStorage": np.dtype("<i8"),
    "HalfStorage": np.dtype("<f2"),
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that a plain tensor file never needs."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, *_):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch tensor files that resolves only an allow-list of globals."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return _ordered_dict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("persistent id without a storage type")
        return _StorageRef(str(key), STORAGE_DTYPES[storage_type.name], int(numel))


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` limited to the globals a torch tensor file needs."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def load_legacy_torch_file(fileobj: BinaryIO) -> dict[str, np.ndarray]:
    """Decode a legacy ``torch.save`` file holding a flat dict of CPU tensors into numpy arrays."""

    def load():
        return RestrictedUnpickler(fileobj).load()

    if load() != MAGIC_NUMBER:
        raise pickle.UnpicklingError("not a legacy torch.save file (bad magic number)")
    if load() != PROTOCOL_VERSION:
        raise pickle.UnpicklingError("unsupported torch.save protocol version")
    sys_info = load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise pickle.UnpicklingError("only little-endian torch files are supported")
    obj = load()
    keys = load()
    if not isinstance(obj, dict) or not isinstance(keys, list):
        raise pickle.UnpicklingError("expected a dict of tensors")
    refs = {}
    for value in obj.values():
        if not isinstance(value, _TensorRef):
            raise pickle.UnpicklingError("expected a dict of tensors")
        refs[value.storage.key] = value.storage
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in refs:
            raise pickle.UnpicklingError(f"storage {key} is not referenced")
        ref = refs[key]
        header = fileobj.read(8)
        if len(header) != 8:
            raise pickle.UnpicklingError("file ends before its storages")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise pickle.UnpicklingError(f"storage {key}: {numel} elements, expected {ref.numel}")
        raw = fileobj.read(numel * ref.dtype.itemsize)
        if len(raw) != numel * ref.dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype)
    out = {}
    for name, t in obj.items():
        base = storages[t.storage.key]
        itemsize = base.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            base[t.offset :],
            shape=t.shape,
            strides=tuple(s * itemsize for s in t.stride),
            writeable=False,
        )
        out[name] = np.array(arr)  # a contiguous copy that owns its memory
    return out
