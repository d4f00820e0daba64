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
import zipfile
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnst.config import MAX_SEED, RESUME_CHECKED, StyleConfig
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
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        # truncated, garbage, or a zip of something else: one line that names the file
        raise ConfigError(
            f"{path}: not a readable jaxnst checkpoint ({str(err) or type(err).__name__})"
        ) from None
    for key, kind in CHECKPOINT_META.items():
        if not isinstance(meta.get(key), kind):
            what = "missing" if key not in meta else f"not a {kind.__name__}"
            raise ConfigError(f"{path}: not a complete jaxnst checkpoint ({key!r} {what})")
    ckpt = Checkpoint(path, arrays, meta)
    _check_meta(ckpt)
    return ckpt


def _damaged(ckpt: Checkpoint, what: str) -> ConfigError:
    return ConfigError(f"{ckpt.path}: damaged checkpoint: {what}; start again without --resume")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_meta(ckpt: Checkpoint) -> None:
    """ConfigError unless every part of the meta that --resume uses is well formed: counts,
    seeds in range, snapshot entries, and a history of finite losses in order."""
    meta = ckpt.meta
    for key in ("stage", "iteration", "pass", "done"):
        if key in meta and not _count(meta[key]):
            raise _damaged(ckpt, f"{key} {meta[key]!r} is not a count")
    if not all(_count(s) and s <= MAX_SEED for s in meta["seeds"]):
        raise _damaged(ckpt, f"seeds {meta['seeds']!r}")
    for key in ("past_iterations", "past_evaluations"):
        if not (isinstance(meta.get(key, []), list) and all(map(_count, meta.get(key, [])))):
            raise _damaged(ckpt, f"{key} {meta.get(key)!r}")
    for snap in meta.get("snapshots", []):
        if not (isinstance(snap, dict) and _count(snap.get("iteration"))
                and isinstance(snap.get("paths"), list)
                and all(isinstance(p, str) for p in snap["paths"])):  # fmt: skip
            raise _damaged(ckpt, f"snapshot entry {snap!r}")
    _check_rows(ckpt, meta["rows"])
    _check_rows(ckpt, meta.get("past_rows", []), ordered=False)  # iterations restart per scale


def _check_rows(ckpt: Checkpoint, rows: Any, ordered: bool = True) -> None:
    if not isinstance(rows, list) or not all(isinstance(v, list) for v in rows):
        raise _damaged(ckpt, "the loss history is not a list per variant")
    for k, variant in enumerate(rows):
        last = (-1, -1)
        for row in variant:
            if not isinstance(row, dict):
                raise _damaged(ckpt, f"variant {k}: a history row is not a record")
            it, ev = row.get("iteration"), row.get("evaluations")
            if not (isinstance(it, int) and isinstance(ev, int) and it >= 0
                    and (not ordered or (it, ev) >= last)):  # fmt: skip
                raise _damaged(ckpt, f"variant {k}: history row at iteration {it!r} out of order")
            last = (it, ev) if ordered else last
            for name, v in row.items():
                number = isinstance(v, int | float) and not isinstance(v, bool)
                if name not in ("iteration", "evaluations", "scale") and not (
                    number and math.isfinite(v)
                ):
                    raise _damaged(ckpt, f"variant {k}: history value {name} = {v!r}")


def check_state(ckpt: Checkpoint, run: StyleRun) -> None:
    """ConfigError unless the checkpoint's arrays hold a state a run could have reached: finite
    floats, pixels in [0, 1] when projected, counters >= 0 that agree with the history."""
    for name, arr in ckpt.arrays.items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise _damaged(ckpt, f"{name} holds NaN or Inf values")
        if arr.dtype.kind in "iu" and arr.size and arr.min() < 0:
            raise _damaged(ckpt, f"{name} holds negative counts ({int(arr.min())})")
    xs = ckpt.arrays.get("xs")
    projected = xs is not None and xs.size and run.cfg.range_mode == "project"
    if projected and (xs.min() < 0 or xs.max() > 1):
        raise _damaged(ckpt, f"pixels outside [0, 1] ({xs.min():g}..{xs.max():g})")
    for name in ("states/step_size", "states/scale"):
        arr = ckpt.arrays.get(name)
        if arr is not None and np.any(arr <= 0):
            raise _damaged(ckpt, f"{name} must be > 0")
    it, ev = ckpt.arrays.get("states/iteration"), ckpt.arrays.get("states/evaluations")
    if it is not None and ev is not None:
        if np.any(ev < it):
            raise _damaged(ckpt, "fewer evaluations than iterations")
        for k, rows in enumerate(ckpt.meta["rows"][: run.n]):
            if rows and (rows[-1]["iteration"] > it[k] or rows[-1]["evaluations"] > ev[k]):
                raise _damaged(ckpt, f"variant {k}: the history runs past iteration {it[k]}")


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
    check_state(ckpt, run)
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
