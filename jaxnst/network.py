"""Trained networks on disk: the model file (save, load, validate) and training checkpoints.

Both are NumPy ``.npz`` files read with ``allow_pickle=False``: every parameter under its pytree
path (``params/conv1/kernel``), in a checkpoint also Adam's state (``opt/mu/conv1/kernel``, ...),
and a JSON string ``meta``. A model file's meta says what the network is: ``format``
("jaxnst-network") and ``format_version``, the jaxnst version that wrote it, the architecture
and width, the ``TrainConfig`` it was trained with, the style images' digests, the steps trained
and the final losses. ``load_network`` checks all of it against this jaxnst and against the
network's own parameter names and shapes: a file that is not a model, one from a newer format,
one with a parameter missing or misshapen is one ``ConfigError`` line naming the file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnst.errors import ConfigError
from jaxnst.image import atomic_write
from jaxnst.outputs import json_default
from jaxnst.trainconfig import TrainConfig
from jaxnst.transform import Params, param_shapes, width_of

NETWORK_FORMAT = "jaxnst-network"
NETWORK_VERSION = 1  # the model format this jaxnst writes; it reads this one and older
CHECKPOINT_FORMAT = "jaxnst-train-checkpoint-1"
ARCHITECTURE = "johnson2016-instance-norm"  # jaxnst.transform.TransformNet


@dataclass(frozen=True)
class Network:
    """A trained network: its parameters, the options it was trained with, what it records.

    ``meta`` holds what the model file stores besides (styles, steps, final_loss, versions,
    data); ``path`` is the file it was loaded from or saved to, if any.
    """

    params: Params
    config: TrainConfig
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def width(self) -> int:
        return width_of(self.params)

    def save(self, path: str | Path) -> Path:
        """Write the model file (``save_network``); returns its path."""
        return save_network(path, self)


def leaf_name(prefix: str, keypath: tuple) -> str:
    """ "prefix/conv1/kernel" for a pytree path (dict keys, attribute names, indices)."""
    parts = [prefix]
    for k in keypath:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """Every leaf of ``tree`` as a NumPy array under its ``leaf_name``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {leaf_name(prefix, kp): np.asarray(jax.device_get(leaf)) for kp, leaf in leaves}


def unflatten(arrays: dict[str, np.ndarray], prefix: str, like: Any, path: Path) -> Any:
    """The tree of ``like``'s structure from ``arrays`` (``flatten``'s output), each leaf
    checked for presence, shape, dtype and finiteness; ConfigError naming ``path`` otherwise."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = [leaf_name(prefix, kp) for kp, _ in leaves]
    extra = sorted(k for k in arrays if k.startswith(prefix + "/") and k not in names)
    if extra:
        raise ConfigError(f"{path}: unexpected array {extra[0]!r}; not this network's layout")
    out = []
    for name, (_, spec) in zip(names, leaves, strict=True):
        arr = arrays.get(name)
        want = f"{np.dtype(spec.dtype)}{list(spec.shape)}"
        if arr is None or arr.shape != tuple(spec.shape) or arr.dtype != spec.dtype:
            got = "missing" if arr is None else f"{arr.dtype}{list(arr.shape)}"
            raise ConfigError(f"{path}: {name} is {got}, the network needs {want}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ConfigError(f"{path}: {name} holds NaN or Inf values")
        out.append(arr)
    return jax.tree_util.tree_unflatten(treedef, out)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """``arrays`` and ``meta`` (as JSON) in an uncompressed .npz at ``path``, atomically."""
    data = {**arrays, "meta": np.asarray(json.dumps(meta, default=json_default))}

    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, **data)  # to a buffer: np.savez would add ".npz" to a path without it
        tmp.write_bytes(buf.getvalue())

    return atomic_write(path, write)


def read_npz(path: str | Path, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the JSON ``meta`` of a file ``write_npz`` wrote; ConfigError (one line,
    ``what`` naming the kind of file expected) if it is missing or is not such a file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such {what}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a {what}")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
                raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if "meta" not in arrays:
            raise ValueError("no meta")
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as err:
        reason = str(err).split("\n")[0][:120]
        raise ConfigError(f"{path}: not a {what} ({reason})") from None
    return arrays, meta


# ------------------------------------------------------------------------ the model file
def save_network(path: str | Path, network: Network) -> Path:
    """Write ``network`` as a model file at ``path`` (atomically; the name is used as given)."""
    from jaxnst import __version__

    meta = {
        **network.meta,
        "format": NETWORK_FORMAT,
        "format_version": NETWORK_VERSION,
        "jaxnst": __version__,
        "architecture": ARCHITECTURE,
        "width": network.width,
        "config": network.config.to_dict(),
    }
    return write_npz(path, flatten(network.params, "params"), meta)


def load_network(path: str | Path) -> Network:
    """Read and check a model file; ConfigError (one line naming the file) if it is not one
    this jaxnst can use."""
    from jaxnst import __version__

    path = Path(path)
    arrays, meta = read_npz(path, "jaxnst network file")
    if meta.get("format") != NETWORK_FORMAT:
        got = meta.get("format")
        kind = "a training checkpoint" if got == CHECKPOINT_FORMAT else f"format {got!r}"
        raise ConfigError(f"{path}: not a jaxnst network file ({kind})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{path}: not a jaxnst network file (format version {version!r})")
    if version > NETWORK_VERSION:
        raise ConfigError(
            f"{path}: written by jaxnst {meta.get('jaxnst', '?')} in network format {version}; "
            f"this jaxnst ({__version__}) reads format {NETWORK_VERSION}: upgrade jaxnst"
        )
    if meta.get("architecture") != ARCHITECTURE:
        raise ConfigError(
            f"{path}: a network of architecture {meta.get('architecture')!r}; this jaxnst "
            f"knows {ARCHITECTURE!r}"
        )
    width = meta.get("width")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError(f"{path}: not a jaxnst network file (width {width!r})")
    if not isinstance(meta.get("config"), dict):
        raise ConfigError(f"{path}: not a complete jaxnst network file (no config)")
    config = TrainConfig().merge(meta["config"], source=str(path))
    params = unflatten(arrays, "params", param_shapes(width), path)
    params = jax.tree.map(np.asarray, params)
    return Network(params, config, meta, path)


# ------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | Path, params: Params, opt_state: Any, meta: dict) -> Path:
    """The network's parameters, Adam's state and ``meta`` (step, config, history, ...)."""
    arrays = {**flatten(params, "params"), **flatten(opt_state, "opt")}
    return write_npz(path, arrays, {**meta, "format": CHECKPOINT_FORMAT})


def load_checkpoint(path: str | Path, params_like: Params, opt_like: Any) -> tuple[Any, Any, dict]:
    """(params, opt_state, meta) of a checkpoint; the trees shaped like the given ones.

    ConfigError, one line, if the file is missing, not a checkpoint, or of another network.
    """
    path = Path(path)
    arrays, meta = read_npz(path, "training checkpoint")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a training checkpoint (format {meta.get('format')!r})")
    if not isinstance(meta.get("step"), int) or not isinstance(meta.get("config"), dict):
        raise ConfigError(f"{path}: not a complete training checkpoint (no step or config)")
    params = unflatten(arrays, "params", params_like, path)
    opt_state = unflatten(arrays, "opt", opt_like, path)
    return params, opt_state, meta


__all__ = [
    "ARCHITECTURE",
    "NETWORK_FORMAT",
    "NETWORK_VERSION",
    "Network",
    "load_checkpoint",
    "load_network",
    "save_checkpoint",
    "save_network",
]
