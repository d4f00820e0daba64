"""The files a run leaves beside its output image, all written atomically (temp file, rename).

For ``-o out.png`` (variant names from ``cfg.output_template`` when there are several):

=====================  =================================================================
``out.png``            the result (``out_v0.png``, ``out_v1.png``, ... for variants)
``out.json``           sidecar: config, seed, versions, device, timings, weights sha256
``out_history.csv``    loss history, one row per variant and iteration (or ``.json``)
``out_losses.png``     the loss curves against iteration on a log scale (matplotlib)
``out_0100.png``       snapshots every ``save_every`` iterations
``out_evolution.gif``  the snapshots as an animation, and ``out_sheet.png`` side by side
``out.html``           the report: snapshots on a trackbar, loss curves, sidecar (``--report``)
``out.ckpt.npz``       checkpoint for ``--resume`` (``jaxnst.checkpoint``)
=====================  =================================================================
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image

from jaxnst.config import FIELDS, SWEEPABLE, StyleConfig
from jaxnst.errors import ConfigError, ImageError
from jaxnst.files import TEMP_NAME_EXTRA, atomic_write, missing_file, name_max
from jaxnst.image import save_image
from jaxnst.losses import LossParts


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every path a run may write, decided (and checked) before the run starts."""

    output: Path
    images: tuple[Path, ...]  # the result per variant
    seeds: tuple[int, ...]
    history: Path | None
    plot: Path | None
    sheet: Path | None
    report: Path | None  # out.html (jaxnst.report_files), when snapshots are saved
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
    writable (by creating and removing a temporary file there), that no two names collide and
    that the file system takes every name.
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
        report=output.with_suffix(".html") if cfg.save_every and cfg.report else None,
        checkpoint=_stem_path(output, ".ckpt.npz"),
        digits=max(4, len(str(cfg.iterations))),
    )
    names = [*plan.images, *(plan.sidecar(k) for k in range(len(seeds))), plan.checkpoint]
    names += [p for p in (plan.history, plan.plot, plan.sheet, plan.report) if p is not None]
    if cfg.save_every:
        names += [plan.gif(k) for k in range(len(seeds))]
    if len(set(names)) != len(names):
        dup = next(p for p in names if names.count(p) > 1)
        raise ConfigError(f"output names collide ({dup}); change --output or --output-template")
    _check_name_lengths(names, plan, cfg, parent)
    for path in names:
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, cannot write an output file there")
    return plan


def _check_name_lengths(names: list[Path], plan: Plan, cfg: StyleConfig, parent: Path) -> None:
    """ConfigError, before any work, if a name (a snapshot's too, and with the temporary
    file's extra bytes) is longer than ``parent``'s file system takes: otherwise the run would
    fail at its very end, when it writes."""
    if cfg.save_every:
        names = names + [plan.snapshot(k, 10**plan.digits - 1) for k in range(len(plan.seeds))]
    longest = max(names, key=lambda p: len(os.fsencode(p.name)))
    size, limit = len(os.fsencode(longest.name)), name_max(parent) - TEMP_NAME_EXTRA
    if size > limit:
        shown = longest.name if len(longest.name) <= 60 else longest.name[:57] + "..."
        raise ConfigError(f"{shown}: file name too long ({size} bytes; at most {limit} in "
                          f"{parent}); shorten --output or --output-template")  # fmt: skip


def output_path(given: str | None, default_name: str) -> Path:
    """-o as given, or ``default_name`` inside -o (an existing directory) or the current one."""
    if not given:
        return Path(default_name)
    path = Path(given)
    try:
        is_dir = path.is_dir()
    except OSError as err:  # a name longer than the file system takes
        shown = given if len(given) <= 60 else given[:57] + "..."
        raise ConfigError(f"{shown}: cannot use as output ({err.strerror or err})") from None
    if is_dir or given.endswith(("/", os.sep)):
        return path / default_name
    return path


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


# Each term of the loss (a LossParts field) and the config field that weighs it, from the roles.
TERM_WEIGHTS = {
    slot: name
    for name, slot in SWEEPABLE.items()
    if slot in LossParts._fields and isinstance(FIELDS[name].default, float)
}


def weighted_parts(hist: dict[str, np.ndarray], cfg: StyleConfig) -> dict[str, np.ndarray]:
    """The terms of the total loss: alpha*content, beta*style (and per layer), tv weight * tv."""
    out = {"total": hist["total"]}
    for term, name in TERM_WEIGHTS.items():
        weight = getattr(cfg, name)
        if term in hist and weight:
            out[term] = weight * hist[term]
        if term == "style" and term in hist and weight:
            for w, layer in zip(cfg.layer_weights(), cfg.style_layers, strict=True):
                if f"style/{layer}" in hist:
                    out[f"style/{layer}"] = weight * float(w) * hist[f"style/{layer}"]
    return out


# ---------------------------------------------------------------------- sidecar
def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, default=json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_default(obj: Any) -> Any:
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


def weights_info(loaded: dict[str, Any] | None, path: str | Path = "") -> dict[str, Any]:
    """The weights a run used: the record taken when they were loaded (``Problem.weights``:
    path, sha256, provenance), so a file changed or removed during the run does not matter;
    without one (params a caller gave), the file ``path`` as it is now."""
    if loaded is not None:
        return {k: v for k, v in loaded.items() if k != "bytes"}
    from jaxnst.weights import default_weights_path, weights_provenance

    path = Path(path) if path else default_weights_path()
    return {"path": str(path), "sha256": file_sha256(path), "provenance": weights_provenance(path)}


def sidecar(
    plan: Plan, k: int, seed: int, image: np.ndarray, rows: Sequence[dict[str, Any]],
    iterations: int, evaluations: int, final_loss: dict[str, float], stopped: str,
    common: dict[str, Any], snapshots: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:  # fmt: skip
    """The sidecar of variant ``k``: its image's name and hash, seed, counts, the loss parts of
    the saved image (``final_loss``, ``StyleRun.final_loss``) and of the optimiser's last iterate
    (the last history row: with range-mode clip its pixels leave [0, 1], and it is not what the
    file holds), its snapshots (from the run's ``{"iteration", "paths"}`` per snapshot, by file
    name) and the run's ``common`` record (config, versions, timings...)."""
    last = rows[-1] if rows else {}
    return {
        "image": plan.images[k].name,
        "image_sha256": array_sha256(image),
        "variant": k,
        "seed": int(seed),
        "iterations": int(iterations),
        "evaluations": int(evaluations),
        "final_loss": {n: float(v) for n, v in final_loss.items()},
        "last_iterate_loss": {
            n: float(v) for n, v in last.items() if n not in ("iteration", "evaluations", "scale")
        },
        "stopped": stopped,
        "snapshots": [
            {"iteration": int(s["iteration"]), "path": Path(s["paths"][k]).name} for s in snapshots
        ],
        **common,
    }


def recorded_inputs(config: str | None, content: str | None) -> tuple[str, list[str]]:
    """CONTENT and STYLEs for a command line that gives none: the input files recorded in the
    sidecar ``config`` (``--config OUT.json``), found as recorded or beside the sidecar and
    checked against their sha256; else ConfigError naming what is missing."""
    missing = "CONTENT and STYLE" if content is None else "STYLE"
    path = Path(config) if config else None
    if path is None or path.suffix.lower() != ".json" or content is not None:
        raise ConfigError(
            f"stylize needs {missing} image(s): 'jaxnst stylize CONTENT STYLE [STYLE ...]', or "
            "--config OUT.json (a sidecar) alone to rerun it with the images it records"
        )
    data = json.loads(path.read_text(encoding="utf-8"))  # read_options has read it already
    inputs = data.get("inputs") if isinstance(data, dict) else None
    try:
        entries = [inputs["content"], *inputs["styles"]]
    except (TypeError, KeyError):
        raise ConfigError(f"{path}: records no input images; give CONTENT and STYLE") from None
    if any(isinstance(e, dict) and "name" in e and "path" not in e for e in entries):
        raise ConfigError(f"{path}: written by 'jaxnst demo'; rerun it with 'jaxnst demo --config'")
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ConfigError(f"{path}: its inputs are not a jaxnst sidecar's; give the images")
        image = Path(entry["path"])
        if not image.is_absolute() and missing_file(image) is not None:
            beside = path.parent / image  # recorded relative to the directory of that run
            image = beside if missing_file(beside) is None else image
        problem = missing_file(image)
        if problem is not None:
            raise ConfigError(f"{image}: recorded in {path} as an input: {problem}")
        if entry.get("sha256") and file_sha256(image) != entry["sha256"]:
            raise ConfigError(f"{image}: changed since {path} was written (its sha256 differs); "
                              "give the images")  # fmt: skip
        found.append(str(image))
    return found[0], found[1:]


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "kind": devices[0].device_kind,
        "count": len(devices),
        "platform": platform.platform(),
    }
