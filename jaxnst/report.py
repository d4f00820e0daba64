"""A run report: one self-contained HTML file (``out.html``) that opens from disk, offline.

The page shows the content and style images, the result, a trackbar (range slider, arrow keys,
play button) over the snapshots of every variant, the loss curves on a log scale with the
slider's iteration marked, a grid of the variants with their parameters, the sidecar (config,
seed, timings, devices, hashes) and, for a video run, its frames with their own trackbar.
Everything is inline: images as ``data:`` URIs, the record as JSON, vanilla JS and CSS; a
Content-Security-Policy of ``default-src 'none'`` keeps the browser from fetching anything.

``write_report(path, record)`` takes a plain record (every key optional but ``variants``)::

    {
        "title": "out.png",                     # page heading
        "subtitle": "jaxnst stylize ...",       # one line under it (the command)
        "notes": ["content image not found"],   # shown as a warning line
        "content": IMAGE,                       # shown beside the plot
        "styles": [IMAGE, ...],
        "y_label": "weighted loss",             # the plot's y axis
        "variants": [{                          # one per result; a grid when there are several
            "label": "out_v0.png",
            "params": {"seed": 0, "style_weight": 1e4},  # what sets it apart (grid, details)
            "image": IMAGE,                     # the result
            "iteration": 500,                   # the result's iteration (default: last snapshot)
            "snapshots": [(100, IMAGE), ...],   # (iteration, image), any order
            "history": {"iteration": [...], "total": [...], "style/conv1_1": [...], ...},
            "sidecar": {...},                   # the run's JSON sidecar, shown in the details
        }],
        "video": {"frames": [IMAGE, ...], "fps": 10, "label": "frame"},  # later: video runs
    }

An IMAGE is a file path (str or Path) or an array: (h, w, 3) uint8, or float in [0, 1].
History columns are plotted as given, each against ``iteration``, except ``evaluations``,
``scale``, ``variant`` and ``seed``; non-positive and non-finite values are gaps.

Image encoding: a file the browser can show (PNG, JPEG, GIF, WebP) is embedded byte for byte,
so a snapshot is never re-encoded bigger than its file (base64 adds a third). An array, or a
file in another format, becomes a PNG unless a quality-90 JPEG is under half the PNG's size
(photographs and noisy results: JPEG; flat and synthetic images: PNG). Content and style are
first shrunk to the results' longest side when larger. Identical bytes are stored once (the
result is usually also the last snapshot).

``report_from_outputs(output)`` rebuilds the record from the files a run left beside its
output (sidecars, history, snapshots, inputs) and writes ``out.html``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import as_image, atomic_write, fit_size, read_image, resize, to_uint8

ImageRef = str | Path | np.ndarray
JPEG_QUALITY = 90
JPEG_SHARE = 0.5  # an array becomes a JPEG when that is under this share of its PNG
INPUT_SIDE = 512  # longest side of content and style when no result gives one
SIGNIFICANT = 6  # digits kept of each loss value in the page (the plot needs three)
# Magic numbers of the formats every browser shows, and their MIME types.
BROWSER_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
NOT_PLOTTED = ("iteration", "evaluations", "scale", "variant", "seed")


# ---------------------------------------------------------------------- images
def sniff(data: bytes) -> str | None:
    """The MIME type of encoded image bytes when a browser shows them as they are, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in BROWSER_FORMATS if data.startswith(magic)), None)


def encode_array(image: np.ndarray) -> tuple[str, bytes]:
    """(mime, bytes) of an (h, w, 3) image: PNG, or a JPEG when under half the PNG's size."""
    pic = Image.fromarray(image if image.dtype == np.uint8 else to_uint8(image))
    png, jpeg = io.BytesIO(), io.BytesIO()
    pic.save(png, format="PNG")
    pic.save(jpeg, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    if len(jpeg.getvalue()) < JPEG_SHARE * len(png.getvalue()):
        return "image/jpeg", jpeg.getvalue()
    return "image/png", png.getvalue()


def image_side(image: ImageRef) -> int:
    """Longest side in pixels of a file (its header only) or an array."""
    if isinstance(image, str | Path):
        try:
            with Image.open(image) as pic:
                return max(pic.size)
        except (OSError, ValueError) as err:
            raise ImageError(f"{image}: cannot read image ({err})") from None
    return max(np.shape(image)[:2])


def encode_image(image: ImageRef, max_side: int | None = None) -> tuple[str, bytes]:
    """(mime, bytes) to embed: a browser-format file as it is, anything else by encode_array.

    ``max_side`` shrinks a larger image first (then a file is re-encoded too).
    """
    if isinstance(image, str | Path):
        try:
            data = Path(image).read_bytes()
        except OSError as err:
            raise ImageError(f"{image}: cannot read ({err.strerror or err})") from None
        mime = sniff(data)
        if mime is not None and (max_side is None or image_side(image) <= max_side):
            return mime, data
        pixels = read_image(image)
    elif isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        pixels = image
    else:
        pixels = as_image(image)
    if max_side is not None and max(pixels.shape[:2]) > max_side:
        pixels = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels
        pixels = resize(pixels, fit_size(pixels.shape[:2], max_side))
    return encode_array(pixels)


class _Images:
    """The page's images: data: URIs numbered in order of first use, identical bytes once."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self.index: dict[bytes, int] = {}

    def add(self, image: ImageRef | None, max_side: int | None = None) -> int | None:
        if image is None:
            return None
        mime, data = encode_image(image, max_side)
        key = hashlib.sha256(data).digest()
        if key not in self.index:
            self.index[key] = len(self.uris)
            self.uris.append(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")
        return self.index[key]


# ---------------------------------------------------------------------- the page
def _number(v: Any) -> float | int | None:
    v = np.asarray(v).item()
    if isinstance(v, bool | int):
        return int(v)
    v = float(v)
    return float(f"{v:.{SIGNIFICANT}g}") if math.isfinite(v) else None


def _plain(obj: Any) -> Any:
    """JSON-safe copy: NumPy to Python, non-finite floats to their repr (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray | np.generic):
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _first(pair: tuple[int, Any]) -> int:
    return int(pair[0])


def script_json(data: Any) -> str:
    """JSON to put inside <script>: no '<', '>' or '&' (a '</script>' in a value stays text)."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page_record(record: Mapping[str, Any], images: _Images) -> dict[str, Any]:
    """The record as the page reads it: images as numbers, histories as rounded lists."""
    variants = list(record.get("variants") or [])
    if not variants:
        raise ConfigError("report: the record has no variants")
    results = [v.get("image") for v in variants if v.get("image") is not None]
    results += [max(v["snapshots"], key=_first)[1] for v in variants if v.get("snapshots")]
    input_side = max(map(image_side, results), default=INPUT_SIDE)
    page: dict[str, Any] = {
        "title": str(record.get("title") or "jaxnst report"),
        "subtitle": str(record.get("subtitle") or ""),
        "notes": [str(n) for n in record.get("notes") or []],
        "y_label": str(record.get("y_label") or "loss"),
        "content": images.add(record.get("content"), input_side),
        "styles": [images.add(s, input_side) for s in record.get("styles") or []],
        "variants": [],
        "video": None,
    }
    for k, v in enumerate(variants):
        snapshots = sorted(((int(it), img) for it, img in v.get("snapshots") or []), key=_first)
        history = {
            str(name): [
                int(x) if name in ("iteration", "evaluations") else _number(x)
                for x in np.asarray(col).reshape(-1)
            ]
            for name, col in (v.get("history") or {}).items()
        }
        page["variants"].append(
            {
                "label": str(v.get("label") or f"variant {k}"),
                "params": _plain(dict(v.get("params") or {})),
                "image": images.add(v.get("image")),
                "iteration": None if v.get("iteration") is None else int(v["iteration"]),
                "snapshots": [[it, images.add(img)] for it, img in snapshots],
                "history": history,
                "sidecar": _plain(dict(v.get("sidecar") or {})),
            }
        )
    video = record.get("video")
    if video:
        page["video"] = {
            "frames": [images.add(f) for f in video.get("frames") or []],
            "fps": float(video.get("fps") or 10.0),
            "label": str(video.get("label") or "frame"),
        }
    return page


def build_report(record: Mapping[str, Any]) -> str:
    """The report's HTML text for ``record`` (shape in the module docstring)."""
    images = _Images()
    page = _page_record(record, images)
    template = resources.files("jaxnst").joinpath("report_page.html").read_text("utf-8")
    blobs = "\n".join(
        f'<script type="text/plain" id="jaxnst-image-{i}">{uri}</script>'
        for i, uri in enumerate(images.uris)
    )
    # Replaced in this order, so that nothing inserted is ever scanned for the next marker.
    head, rest = template.split("@@RECORD@@")
    head = head.replace("@@TITLE@@", html.escape(page["title"]))
    before, after = rest.split("@@IMAGES@@")
    return head + script_json(page) + before + blobs + after


def write_report(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write the report for ``record`` to ``path`` atomically (temp file, rename)."""
    text = build_report(record)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------- from a run's files
def report_path(output: str | Path) -> Path:
    """``out.html`` beside ``out.png``."""
    return Path(output).with_suffix(".html")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_sidecar(data: Any) -> bool:
    keys = ("image", "variant", "seed", "config")
    return isinstance(data, dict) and all(k in data for k in keys)


def find_sidecars(output: str | Path) -> list[dict[str, Any]]:
    """The sidecars of the run that wrote ``output``, by variant; ConfigError if there are none.

    One variant: ``out.json``. Several: the JSON files beside it whose ``image`` is the name
    the run's ``output_template`` gives its variant, from the same command and config.
    """
    output = Path(output)
    single = _read_json(output.with_suffix(".json"))
    if _is_sidecar(single) and single["image"] == output.name:
        return [single]
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(output.parent.glob("*.json")):
        data = _read_json(path) if path.stat().st_size < (1 << 22) else None
        if not _is_sidecar(data):
            continue
        cfg, k = data["config"], int(data["variant"])
        template = cfg.get("output_template", "{stem}_v{variant}")
        try:
            name = template.format(stem=output.stem, variant=k, seed=data["seed"]) + output.suffix
        except (KeyError, IndexError, ValueError):
            continue
        if name == data["image"] and k < int(cfg.get("variants", 1)):
            found[k] = data
    if not found:
        raise ConfigError(f"{output}: no jaxnst sidecar beside it ({output.with_suffix('.json')})")
    first = found[min(found)]
    run = (first["config"], first.get("command"))  # leaves out stale files of another run
    return [found[k] for k in sorted(found) if (found[k]["config"], found[k].get("command")) == run]


def _snapshots(image: Path, sidecar: Mapping[str, Any]) -> list[tuple[int, Path]]:
    """(iteration, path) of the snapshots beside ``image``: listed in the sidecar when it has
    them, else ``<stem>_<iteration>.<suffix>`` at multiples of save_every up to the last."""
    listed = sidecar.get("snapshots")
    if isinstance(listed, list):
        snaps = [(int(s["iteration"]), image.parent / Path(s["path"]).name) for s in listed]
        return [(it, p) for it, p in snaps if p.is_file()]
    cfg = sidecar.get("config", {})
    every, last = int(cfg.get("save_every") or 0), int(sidecar.get("iterations") or 0)
    pattern = re.compile(re.escape(image.stem) + r"_(\d{4,})" + re.escape(image.suffix) + "$")
    found = []
    for path in image.parent.glob(f"{glob_escape(image.stem)}_*{glob_escape(image.suffix)}"):
        m = pattern.match(path.name)
        # Stale files of an earlier run with another cadence are left out.
        if m and every and int(m[1]) % every == 0 and int(m[1]) <= last:
            found.append((int(m[1]), path))
    return sorted(found)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _histories(output: Path, sidecars: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per variant, {column: values} from ``out_history.csv`` or ``.json``; {} when absent."""
    from jaxnst import outputs

    fmt = sidecars[0]["config"].get("history", "csv")
    path = output.with_name(f"{output.stem}_history.{fmt}")
    columns: list[dict[str, Any]] = []
    if fmt == "csv" and path.is_file():
        columns = outputs.read_history_csv(path)
    elif fmt == "json" and path.is_file():
        data = _read_json(path) or {}
        columns = [
            {k: np.asarray(v, np.float64) for k, v in item.get("columns", {}).items()}
            for item in sorted(data.get("variants", []), key=lambda item: item.get("variant", 0))
        ]
    ks = [int(s["variant"]) for s in sidecars]  # read_history_csv lists variants 0, 1, ...
    return [columns[k] if k < len(columns) else {} for k in ks]


def _weighted(hist: dict[str, Any], sidecar: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The terms as they enter the total (what out_losses.png draws), or the raw columns."""
    from jaxnst import outputs
    from jaxnst.config import StyleConfig

    if "total" not in hist or "iteration" not in hist:
        return hist, False
    try:
        cfg = StyleConfig().merge(sidecar["config"], source="sidecar")
    except (ConfigError, TypeError, ValueError):
        return hist, False
    return {"iteration": hist["iteration"], **outputs.weighted_parts(hist, cfg)}, True


def _input_image(info: Mapping[str, Any], base: Path) -> tuple[ImageRef | None, str | None]:
    """An input of the run (a file, or a scikit-image sample for the demo), or why not."""
    from jaxnst import outputs

    if "path" in info:
        for path in (Path(info["path"]), base / info["path"]):
            if path.is_file():
                if info.get("sha256") and outputs.file_sha256(path) != info["sha256"]:
                    return None, f"{path} has changed since the run."
                return path, None
        return None, f"{info['path']} not found."
    name = str(info.get("name", ""))
    if name.startswith("skimage.data."):
        try:
            from skimage import data

            array = getattr(data, name.rsplit(".", 1)[1])()
        except Exception:  # noqa: BLE001 - any failure: leave the image out, say so
            return None, f"{name} unavailable (scikit-image)."
        return array, None
    return None, None


def record_from_outputs(output: str | Path) -> dict[str, Any]:
    """The report record of the run that wrote ``output``, from the files beside it."""
    output = Path(output)
    sidecars = find_sidecars(output)
    histories = _histories(output, sidecars)
    first = sidecars[0]
    shared = {k for k in first["config"] if all(s["config"].get(k) == first["config"][k]
                                                for s in sidecars)}  # fmt: skip
    variants, weighted, notes = [], True, []
    for sidecar, hist in zip(sidecars, histories, strict=True):
        image = output.parent / sidecar["image"]
        curves, ok = _weighted(hist, sidecar)
        weighted = weighted and ok
        params = {"seed": sidecar["seed"]}
        params.update({k: v for k, v in sidecar["config"].items() if k not in shared})
        variants.append(
            {
                "label": sidecar["image"],
                "params": params,
                "image": image if image.is_file() else None,
                "iteration": sidecar.get("iterations"),
                "snapshots": _snapshots(image, sidecar),
                "history": curves,
                "sidecar": sidecar,
            }
        )
        if not image.is_file():
            notes.append(f"{image.name} not found.")
    inputs = first.get("inputs", {})
    content, note = _input_image(inputs.get("content", {}), output.parent)
    notes += [f"content: {note}"] if note else []
    styles = []
    for i, info in enumerate(inputs.get("styles", []), start=1):
        style, note = _input_image(info, output.parent)
        styles += [style] if style is not None else []
        notes += [f"style {i}: {note}"] if note else []
    return {
        "title": output.name,
        "subtitle": first.get("command", ""),
        "notes": notes,
        "content": content,
        "styles": styles,
        "y_label": "weighted loss" if weighted else "loss",
        "variants": variants,
    }


def record_from_result(
    result: Any,
    content: ImageRef | None = None,
    styles: Sequence[ImageRef] = (),
    snapshots: Sequence[tuple[int, np.ndarray]] = (),
    sweep: Mapping[str, Sequence[Any]] | None = None,
    title: str = "jaxnst report",
) -> dict[str, Any]:
    """The report record of a ``stylize()`` Result (the Python API, sweeps included).

    ``snapshots``: (iteration, (n, h, w, 3) images) gathered by a ``callback``; ``sweep`` as
    given to ``stylize``: each variant's values become its grid parameters and weight its
    loss curves.
    """
    from jaxnst import outputs

    sweep = dict(sweep or {})
    variants = []
    for k, seed in enumerate(result.seeds):
        mine = {name: values[k] for name, values in sweep.items()}
        weights = {n: v for n, v in mine.items() if n != "learning_rate"}
        if "style_layer_weights" in weights:
            weights["style_layer_weights"] = tuple(map(float, weights["style_layer_weights"]))
        cfg = result.config.replace(**weights)
        hist = result.history[k]
        curves = {"iteration": hist["iteration"], **outputs.weighted_parts(hist, cfg)}
        variants.append(
            {
                "label": f"variant {k}",
                "params": {"seed": seed, **mine},
                "image": result.images[k],
                "iteration": int(result.iterations[k]),
                "snapshots": [(it, images[k]) for it, images in snapshots],
                "history": curves if "total" in hist else hist,
                "sidecar": {
                    "seed": seed,
                    "iterations": int(result.iterations[k]),
                    "evaluations": int(result.evaluations[k]),
                    "final_loss": result.final_loss[k],
                    "stopped": result.stopped,
                    "config": {**cfg.to_dict(), **mine},
                    "timings": result.timings,
                },
            }
        )
    return {
        "title": title,
        "content": content,
        "styles": list(styles),
        "y_label": "weighted loss",
        "variants": variants,
    }


def report_from_outputs(output: str | Path, path: str | Path | None = None) -> Path:
    """Rebuild the report of the run that wrote ``output``; writes ``out.html`` beside it."""
    return write_report(path or report_path(output), record_from_outputs(output))
