"""Checkpoints for ``--resume``: save, load, validate, restore.

A checkpoint is a NumPy ``.npz`` read with ``allow_pickle=False``: the images, every leaf of the
optimiser state under its pytree path, and a JSON string (``meta``) with the config, seeds, input
digests, the plan of scales and the loss history, so a resumed run continues with exactly the
arrays it stopped with and gives the same bytes as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnst.config import RESUME_CHECKED, StyleConfig
from jaxnst.engine import to_host
from jaxnst.errors import ConfigError
from jaxnst.image import atomic_write
from jaxnst.options import show_value
from jaxnst.outputs import array_sha256, json_default
from jaxnst.problem import Problem
from jaxnst.scales import CoarseToFine
from jaxnst.stylize import StyleRun

CHECKPOINT_FORMAT = "jaxnst-checkpoint-1"
# What --resume reads from a checkpoint's meta, and its JSON type (arrays are checked on restore).
CHECKPOINT_META = {"config": dict, "seeds": list, "inputs": dict, "rows": list}


def input_digests(problem: Problem) -> dict[str, Any]:
    """Digests of what a run's targets were made from: a resumed run must see the same."""
    digests: dict[str, Any] = {
        "content": array_sha256(problem.content),
        "styles": [array_sha256(s) for s in problem.styles],
    }
    if problem.masks:
        digests["masks"] = [array_sha256(m) for m in problem.masks]
    return digests


def run_meta(
    run: StyleRun, scales: CoarseToFine, config: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The meta of a checkpoint of ``run`` (the current scale of ``scales``) of a run of
    ``config`` (``StyleConfig.to_dict``), plus ``extra``."""
    return {
        "config": config,
        "seeds": list(run.seeds),
        "inputs": input_digests(run.problem),
        "stage": scales.index,
        "iteration": int(scales.iterations(run).min()),
        "rows": rows_for_json(run.rows),
        "past_rows": rows_for_json(scales.past_rows),
        "past_iterations": scales.past_iterations,
        "past_evaluations": scales.past_evaluations,
        **extra,
    }


def resume_scales(ckpt: Checkpoint, scales: CoarseToFine) -> None:
    """Put the finished scales a checkpoint records into a fresh plan of scales."""
    meta = ckpt.meta
    scales.index = int(meta.get("stage", 0))
    scales.past_rows = rows_from_json(meta.get("past_rows", []))
    scales.past_iterations = [int(i) for i in meta.get("past_iterations", [])]
    scales.past_evaluations = [int(e) for e in meta.get("past_evaluations", [])]


def _leaf_name(keypath: tuple) -> str:
    parts = []
    for k in keypath:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(["states", *parts])


def save_checkpoint(
    path: Path,
    run: StyleRun | None,
    meta: dict[str, Any],
    write: bool = True,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``run.xs``, every leaf of ``run.states``, ``extra`` arrays (a driver's own, such as
    a video's frames) and ``meta`` (JSON) to an .npz, atomically; ``run`` may be None.

    ``write=False`` gathers the arrays (a collective in a multi-host run, so every process must
    call this) but writes nothing: the other processes of a run that process 0 writes.
    """
    arrays = {f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()}
    if run is not None:
        arrays["xs"] = to_host(run.xs)
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(run.states)[0]:
            arrays[_leaf_name(keypath)] = to_host(leaf)
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    arrays["meta"] = np.asarray(json.dumps(meta, default=json_default))
    if not write:
        return path

    def write_npz(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # uncompressed: noise-like images and states do not compress
        tmp.write_bytes(buf.getvalue())

    return atomic_write(path, write_npz)


@dataclasses.dataclass
class Checkpoint:
    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def config(self) -> StyleConfig:
        return StyleConfig().merge(self.meta["config"], source=str(self.path))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; ConfigError if missing or not one."""
    if not path.exists():
        raise ConfigError(
            f"--resume: no checkpoint at {path} (one is written with each "
            "--save-every snapshot and on Ctrl-C)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else meta
            raise ValueError(f"format {got!r}")
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise ConfigError(f"{path}: not a readable jaxnst checkpoint ({err})") from None
    for key, kind in CHECKPOINT_META.items():
        if not isinstance(meta.get(key), kind):
            what = "missing" if key not in meta else f"not a {kind.__name__}"
            raise ConfigError(f"{path}: not a complete jaxnst checkpoint ({key!r} {what})")
    return Checkpoint(path, arrays, meta)


def check_resumable(ckpt: Checkpoint, cfg: StyleConfig) -> None:
    """ConfigError naming the first option that differs from the checkpoint's run.

    Every option but the ``output`` ones and ``iterations`` must be repeated
    (``config.RESUME_CHECKED``, derived from the fields' roles).
    """
    old = ckpt.config
    for name in RESUME_CHECKED:
        a, b = getattr(old, name), getattr(cfg, name)
        if a != b:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"--resume: {ckpt.path} was written with {flag} {show_value(a)}, "
                f"not {show_value(b)}; pass the options of the interrupted run"
            )


def restore(run: StyleRun, ckpt: Checkpoint) -> None:
    """Put the checkpoint's images, optimiser state and history into a fresh ``run``.

    Each array goes onto the device (and sharding) of the array it replaces, so the resumed run
    executes the same compiled steps on the same values as the one that was interrupted.
    """

    def put(name: str, like: jax.Array) -> jax.Array:
        arr = ckpt.arrays.get(name)
        if arr is None or arr.shape != like.shape or arr.dtype != like.dtype:
            got = "missing" if arr is None else f"{arr.dtype}{list(arr.shape)}"
            raise ConfigError(
                f"{ckpt.path}: {name} is {got}, this run needs {like.dtype}{list(like.shape)}"
            )
        return jax.device_put(arr, like.sharding)

    seeds = [int(s) for s in ckpt.meta["seeds"]]
    if seeds != list(run.seeds):
        raise ConfigError(f"{ckpt.path}: seeds {seeds} differ from this run's {list(run.seeds)}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(run.states)
    states = [put(_leaf_name(kp), leaf) for kp, leaf in leaves]
    xs = put("xs", run.xs)
    run.states = jax.tree_util.tree_unflatten(treedef, states)
    run.xs = xs
    run.rows = rows_from_json(ckpt.meta["rows"])


def rows_for_json(rows: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """``run.rows`` with NumPy scalars as Python ints and floats (exact through JSON)."""
    return [[{k: _plain(v) for k, v in row.items()} for row in variant] for variant in rows]


def _plain(v: Any) -> Any:
    v = np.asarray(v).item()
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # JSON has no NaN; rows only hold accepted, finite steps anyway
    return v


def rows_from_json(rows: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """The inverse of ``rows_for_json``: losses back to NumPy float64, counters stay ints."""
    return [
        [
            {k: (v if isinstance(v, int) else np.float64(v)) for k, v in row.items()}
            for row in variant
        ]
        for variant in rows
    ]
