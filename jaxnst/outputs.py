"""The files a run leaves beside its output image, all written atomically (temp file, rename).

For ``-o out.png`` (variant names from ``cfg.output_template`` when there are several):

=====================  =================================================================
``out.png``            the result (``out_v0.png``, ``out_v1.png``, ... for variants)
``out.json``           sidecar: config, seed, versions, device, timings, weights sha256
``out_history.csv``    loss history, one row per variant and iteration (or ``.json``)
``out_losses.png``     the loss curves against iteration on a log scale (matplotlib)
``out_0100.png``       snapshots every ``save_every`` iterations
``out_evolution.gif``  the snapshots as an animation, and ``out_sheet.png`` side by side
``out.ckpt.npz``       checkpoint for ``--resume`` (with each snapshot and on Ctrl-C)
=====================  =================================================================

A checkpoint is a NumPy ``.npz`` read with ``allow_pickle=False``: the images, every leaf of the
optimiser state under its pytree path, and a JSON string with the config, seeds, input digests and
the loss history, so a resumed run continues with exactly the arrays it stopped with.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import atomic_write, read_image, save_image, to_uint8
from jaxnst.stylize import to_host

CHECKPOINT_FORMAT = "jaxnst-checkpoint-1"
# What --resume reads from a checkpoint's meta, and its JSON type (arrays are checked on restore).
CHECKPOINT_META = {"config": dict, "seeds": list, "inputs": dict, "rows": list}
SHEET_TILE = 192  # longest side of a contact-sheet tile, pixels


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every path a run may write, decided (and checked) before the run starts."""

    output: Path
    images: tuple[Path, ...]  # the result per variant
    seeds: tuple[int, ...]
    history: Path | None
    plot: Path | None
    sheet: Path | None
    checkpoint: Path
    digits: int  # zero padding of snapshot iteration numbers

    def sidecar(self, k: int) -> Path:
        return self.images[k].with_suffix(".json")

    def snapshot(self, k: int, iteration: int) -> Path:
        image = self.images[k]
        return image.with_name(f"{image.stem}_{iteration:0{self.digits}d}{image.suffix}")

    def gif(self, k: int) -> Path:
        return self.images[k].with_name(f"{self.images[k].stem}_evolution.gif")


def _stem_path(output: Path, tail: str) -> Path:
    return output.with_name(output.stem + tail)


def _can_save_rgb(fmt: str) -> bool:
    """Whether Pillow really writes an 8-bit RGB image in ``fmt`` (some savers refuse RGB)."""
    try:
        Image.new("RGB", (2, 2)).save(io.BytesIO(), format=fmt)
    except Exception:  # noqa: BLE001 - any failure means: not a format we can write
        return False
    return True


def plan_outputs(output: str | Path, cfg: StyleConfig, seeds: Sequence[int]) -> Plan:
    """Names for everything ``output`` implies; ConfigError/ImageError if it cannot be written.

    Checks that the suffix is an image format Pillow writes, that the directory exists and is
    writable (by creating and removing a temporary file there) and that no two names collide.
    """
    output = Path(output)
    Image.init()
    fmt = Image.registered_extensions().get(output.suffix.lower())
    if not output.suffix or fmt is None or fmt not in Image.SAVE or not _can_save_rgb(fmt):
        raise ConfigError(f"{output}: output needs an image suffix such as .png or .jpg")
    parent = output.parent
    if not parent.exists():
        raise ImageError(f"{output}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ImageError(f"{output}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".jaxnst-probe-"):
            pass
    except OSError as err:
        raise ImageError(f"{output}: cannot write in {parent} ({err.strerror or err})") from None
    if len(seeds) == 1:
        images = (output,)
    else:
        images = tuple(
            output.with_name(
                cfg.output_template.format(stem=output.stem, variant=k, seed=s) + output.suffix
            )
            for k, s in enumerate(seeds)
        )
    plan = Plan(
        output=output,
        images=images,
        seeds=tuple(seeds),
        history=None if cfg.history == "none" else _stem_path(output, f"_history.{cfg.history}"),
        plot=_stem_path(output, "_losses.png") if cfg.plot else None,
        sheet=_stem_path(output, "_sheet.png") if cfg.save_every else None,
        checkpoint=_stem_path(output, ".ckpt.npz"),
        digits=max(4, len(str(cfg.iterations))),
    )
    names = [*plan.images, *(plan.sidecar(k) for k in range(len(seeds))), plan.checkpoint]
    names += [p for p in (plan.history, plan.plot, plan.sheet) if p is not None]
    if cfg.save_every:
        names += [plan.gif(k) for k in range(len(seeds))]
    if len(set(names)) != len(names):
        dup = next(p for p in names if names.count(p) > 1)
        raise ConfigError(f"output names collide ({dup}); change --output or --output-template")
    for path in names:
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, cannot write an output file there")
    return plan


# ---------------------------------------------------------------------- images and history
def save_images(paths: Sequence[Path], images: np.ndarray) -> list[Path]:
    """Write (n, h, w, 3) images (uint8, or float in [0, 1]) to ``paths``, atomically each."""
    return [save_image(p, img) for p, img in zip(paths, images, strict=True)]


def history_columns(histories: Sequence[dict[str, np.ndarray]]) -> list[str]:
    """Column order: iteration, evaluations, total, content, style, style/<layer>..., tv."""
    first = ["iteration", "scale", "evaluations", "total", "content", "style"]
    names: list[str] = []
    for hist in histories:
        names += [k for k in hist if k not in names]
    rest = sorted(k for k in names if k not in first and k != "tv")
    return [k for k in first if k in names] + rest + (["tv"] if "tv" in names else [])


def write_history(
    path: Path, histories: Sequence[dict[str, np.ndarray]], seeds: Sequence[int]
) -> Path:
    """The loss history of every variant as CSV (long format) or JSON, by ``path``'s suffix."""
    cols = history_columns(histories)
    if path.suffix == ".json":
        data = {
            "variants": [
                {
                    "variant": k,
                    "seed": int(seed),
                    "columns": {c: np.asarray(h[c]).tolist() for c in cols if c in h},
                }
                for k, (h, seed) in enumerate(zip(histories, seeds, strict=True))
            ]
        }
        return write_json(path, data)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["variant", "seed", *cols])
            for k, (hist, seed) in enumerate(zip(histories, seeds, strict=True)):
                rows = len(next(iter(hist.values()))) if hist else 0
                for i in range(rows):
                    out.writerow(
                        [k, seed, *(_csv_value(hist[c][i]) if c in hist else "" for c in cols)]
                    )

    return atomic_write(path, write)


def _csv_value(v: Any) -> str:
    v = np.asarray(v).item()
    return str(v) if isinstance(v, int) else repr(float(v))


def read_history_csv(path: Path) -> list[dict[str, np.ndarray]]:
    """Read a history CSV back into per-variant columns (for tests and scripts)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    variants: dict[int, dict[str, list[float]]] = {}
    for row in rows:
        hist = variants.setdefault(int(row["variant"]), {})
        for k, v in row.items():
            if k not in ("variant", "seed") and v != "":
                hist.setdefault(k, []).append(float(v))
    return [{k: np.asarray(v) for k, v in variants[i].items()} for i in sorted(variants)]


def weighted_parts(hist: dict[str, np.ndarray], cfg: StyleConfig) -> dict[str, np.ndarray]:
    """The terms of the total loss: alpha*content, beta*style (and per layer), tv weight * tv."""
    out = {"total": hist["total"]}
    if "content" in hist and cfg.content_weight:
        out["content"] = cfg.content_weight * hist["content"]
    if "style" in hist and cfg.style_weight:
        out["style"] = cfg.style_weight * hist["style"]
        for w, layer in zip(cfg.layer_weights(), cfg.style_layers, strict=True):
            if f"style/{layer}" in hist:
                out[f"style/{layer}"] = cfg.style_weight * float(w) * hist[f"style/{layer}"]
    if "tv" in hist and cfg.tv_weight:
        out["tv"] = cfg.tv_weight * hist["tv"]
    return out


def write_plot(
    path: Path,
    histories: Sequence[dict[str, np.ndarray]],
    seeds: Sequence[int],
    cfg: StyleConfig,
) -> Path | None:
    """The loss terms against iteration, log scale, one colour per term; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    colors = {"total": "black", "content": "tab:blue", "style": "tab:red", "tv": "tab:green"}
    layer_colors = iter(
        ["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
        * 4
    )
    for k, (hist, seed) in enumerate(zip(histories, seeds, strict=True)):
        if "iteration" not in hist or len(hist["iteration"]) == 0:
            continue
        x = np.maximum(np.asarray(hist["iteration"]), 0)
        for name, y in weighted_parts(hist, cfg).items():
            y = np.where(np.asarray(y) > 0, y, np.nan)  # log scale: zeros are not drawn
            if name not in colors:
                colors[name] = next(layer_colors)
            label = name if k == 0 else None
            if name.startswith("style/"):
                ax.plot(x, y, color=colors[name], lw=0.8, ls="--", label=label, alpha=0.8)
            else:
                ax.plot(
                    x,
                    y,
                    color=colors[name],
                    lw=1.5 if name == "total" else 1.2,
                    label=label,
                    alpha=1.0 if k == 0 else 0.45,
                )
        del seed
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss")
    title = "loss terms" if len(histories) == 1 else f"loss terms, {len(histories)} variants"
    ax.set_title(f"{title} ({cfg.optimizer}, {cfg.size} px)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    return atomic_write(path, write)


# ---------------------------------------------------------------------- evolution
Frames = list[tuple[int, np.ndarray]]  # (iteration, (n, h, w, 3) uint8) per snapshot


def write_gif(path: Path, frames: Sequence[tuple[int, np.ndarray]], ms: int = 200) -> Path:
    """Animated GIF of one variant's snapshots ((iteration, (h, w, 3) uint8)), looping."""
    size = Image.fromarray(frames[-1][1]).size  # coarse-to-fine snapshots grow: match the last
    pics = [_fit(Image.fromarray(img), size) for _, img in frames]
    durations = [ms] * (len(pics) - 1) + [ms * 5]  # hold the last frame

    def write(tmp: Path) -> None:
        pics[0].save(
            tmp, format="GIF", save_all=True, append_images=pics[1:], duration=durations, loop=0
        )

    return atomic_write(path, write)


def write_sheet(path: Path, frames: Frames, seeds: Sequence[int]) -> Path:
    """Contact sheet: a row per variant, a column per snapshot, labelled with the iteration."""
    n = len(seeds)
    h, w = frames[-1][1].shape[1:3]
    scale = min(1.0, SHEET_TILE / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    label, pad = 14, 4
    sheet = Image.new(
        "RGB", (pad + len(frames) * (tw + pad), pad + n * (th + label + pad)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for j, (iteration, images) in enumerate(frames):
        for k in range(n):
            x0, y0 = pad + j * (tw + pad), pad + k * (th + label + pad)
            tile = Image.fromarray(images[k]).resize((tw, th), Image.Resampling.LANCZOS)
            sheet.paste(tile, (x0, y0 + label))
            text = f"{iteration}" if n == 1 else f"{iteration} (seed {seeds[k]})"
            draw.text((x0, y0), text, fill="black")

    def write(tmp: Path) -> None:
        sheet.save(tmp, format="PNG")

    return atomic_write(path, write)


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def read_frames(snapshots: Sequence[dict[str, Any]]) -> Frames:
    """Reload snapshots listed in a checkpoint ({"iteration", "paths"}), skipping missing files."""
    frames = []
    for snap in snapshots:
        try:
            images = np.stack([to_uint8(read_image(p)) for p in snap["paths"]])
        except ImageError:
            continue
        frames.append((int(snap["iteration"]), images))
    return frames


# ---------------------------------------------------------------------- sidecar
def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    return hashlib.sha256(f"{arr.dtype}{arr.shape}".encode() + arr.tobytes()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of jaxnst and of everything that can change its numbers."""
    import flax
    import jaxlib
    import optax
    import PIL

    import jaxnst

    return {
        "jaxnst": jaxnst.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "kind": devices[0].device_kind,
        "count": len(devices),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------- checkpoints
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


def save_checkpoint(path: Path, run: Any, meta: dict[str, Any], write: bool = True) -> Path:
    """Write ``run.xs``, every leaf of ``run.states`` and ``meta`` (JSON) to an .npz, atomically.

    ``write=False`` gathers the arrays (a collective in a multi-host run, so every process must
    call this) but writes nothing: the other processes of a run that process 0 writes.
    """
    arrays = {"xs": to_host(run.xs)}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(run.states)[0]:
        arrays[_leaf_name(keypath)] = to_host(leaf)
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    arrays["meta"] = np.asarray(json.dumps(meta, default=_json_default))
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

    Options marked ``output`` (file names, intervals, colours) and ``iterations`` may change.
    """
    old = ckpt.config
    for f in dataclasses.fields(StyleConfig):
        if f.metadata.get("output") or f.name == "iterations":
            continue
        a, b = getattr(old, f.name), getattr(cfg, f.name)
        if a != b:
            flag = "--" + f.name.replace("_", "-")
            raise ConfigError(
                f"--resume: {ckpt.path} was written with {flag} {_show(a)}, "
                f"not {_show(b)}; pass the options of the interrupted run"
            )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return repr(value) if isinstance(value, str) else str(value)


def restore(run: Any, ckpt: Checkpoint) -> None:
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
