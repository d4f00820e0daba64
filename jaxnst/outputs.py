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
from jaxnst.image import atomic_write, save_image
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


def weights_info(path: str | Path = "") -> dict[str, Any]:
    """The weights file a run used: its path, sha256 and stored provenance."""
    from jaxnst.weights import default_weights_path, weights_provenance

    path = Path(path) if path else default_weights_path()
    return {"path": str(path), "sha256": file_sha256(path), "provenance": weights_provenance(path)}


def sidecar(
    plan: Plan, k: int, seed: int, image: np.ndarray, rows: Sequence[dict[str, Any]],
    iterations: int, evaluations: int, stopped: str, common: dict[str, Any],
    snapshots: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:  # fmt: skip
    """The sidecar of variant ``k``: its image's name and hash, seed, counts, final loss (the
    last history row's parts), its snapshots (from the run's ``{"iteration", "paths"}`` per
    snapshot, by file name) and the run's ``common`` record (config, versions, timings...)."""
    last = rows[-1] if rows else {}
    return {
        "image": plan.images[k].name,
        "image_sha256": array_sha256(image),
        "variant": k,
        "seed": int(seed),
        "iterations": int(iterations),
        "evaluations": int(evaluations),
        "final_loss": {
            n: float(v) for n, v in last.items() if n not in ("iteration", "evaluations", "scale")
        },
        "stopped": stopped,
        "snapshots": [
            {"iteration": int(s["iteration"]), "path": Path(s["paths"][k]).name} for s in snapshots
        ],
        **common,
    }


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "kind": devices[0].device_kind,
        "count": len(devices),
        "platform": platform.platform(),
    }
