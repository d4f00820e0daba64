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

``record_from_result`` makes the record of a ``stylize()`` Result (the Python API),
``record_from_video`` that of a ``jaxnst video`` run (its frames, the loss per pass);
``jaxnst.report_files.report_from_outputs`` makes it from the files a CLI run left, and
``jaxnst serve`` renders the same page live (``build_report(..., csp=..., script=...)``: images
as URLs of the server, and a script that appends what the run sends).
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
from jaxnst.outputs import weighted_parts

ImageRef = str | Path | np.ndarray
JPEG_QUALITY = 90
JPEG_SHARE = 0.5  # an array becomes a JPEG when that is under this share of its PNG
INPUT_SIDE = 512  # longest side of content and style when no result gives one
SIGNIFICANT = 6  # digits kept of each loss value in the page (the plot needs three)
MAX_FRAMES = 600  # a video's frames in its report, at most
# Magic numbers of the formats every browser shows, and their MIME types.
BROWSER_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
NOT_PLOTTED = ("iteration", "evaluations", "scale", "variant", "seed")
# The page fetches nothing: images are data: URIs, script and style inline.
REPORT_CSP = (
    "default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)
MARKERS = re.compile(r"@@([A-Z]+)@@")


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


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


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
            self.uris.append(data_uri(mime, data))
        return self.index[key]


# ---------------------------------------------------------------------- the page
def _number(v: Any) -> float | int | None:
    v = np.asarray(v).item()
    if isinstance(v, bool | int):
        return int(v)
    v = float(v)
    return float(f"{v:.{SIGNIFICANT}g}") if math.isfinite(v) else None


def history_lists(history: Mapping[str, Any]) -> dict[str, list[float | int | None]]:
    """{column: values} as the page reads it: plain lists, losses rounded to 6 significant
    digits, non-finite values None (gaps in the plot)."""
    return {
        str(name): [
            int(x) if name in ("iteration", "evaluations") else _number(x)
            for x in np.asarray(col).reshape(-1)
        ]
        for name, col in history.items()
    }


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
        history = history_lists(v.get("history") or {})
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


def build_report(record: Mapping[str, Any], *, csp: str = REPORT_CSP, script: str = "") -> str:
    """The report's HTML text for ``record`` (shape in the module docstring).

    ``csp`` is the page's Content-Security-Policy; ``script`` more code, run after the page's
    own (``jaxnst serve``'s live updates; empty for a report).
    """
    images = _Images()
    page = _page_record(record, images)
    if record.get("live"):
        page["live"] = _plain(dict(record["live"]))
    template = resources.files("jaxnst").joinpath("report_page.html").read_text("utf-8")
    blobs = "\n".join(
        f'<script type="text/plain" id="jaxnst-image-{i}">{uri}</script>'
        for i, uri in enumerate(images.uris)
    )
    if "</script" in script.lower():
        raise ValueError("report: the extra script must not close its <script> element")
    values = {
        "TITLE": html.escape(page["title"]),
        "CSP": html.escape(csp, quote=False).replace('"', "&quot;"),
        "RECORD": script_json(page),
        "IMAGES": blobs,
        "SCRIPT": f"<script>\n{script}\n</script>" if script else "",
    }
    # One pass over the template: nothing inserted is ever scanned for a marker.
    parts = MARKERS.split(template)
    return "".join(values[p] if i % 2 else p for i, p in enumerate(parts))


def write_report(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write the report for ``record`` to ``path`` atomically (temp file, rename)."""
    text = build_report(record)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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
    sweep = dict(sweep or {})
    variants = []
    for k, seed in enumerate(result.seeds):
        mine = {name: values[k] for name, values in sweep.items()}
        weights = {n: v for n, v in mine.items() if n != "learning_rate"}
        if "style_layer_weights" in weights:
            weights["style_layer_weights"] = tuple(map(float, weights["style_layer_weights"]))
        cfg = result.config.replace(**weights)
        hist = result.history[k]
        curves = {"iteration": hist["iteration"], **weighted_parts(hist, cfg)}
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


def record_from_video(
    sidecar: Mapping[str, Any],
    frames: np.ndarray,
    fps: float,
    content: ImageRef | None = None,
    styles: Sequence[ImageRef] = (),
    title: str = "jaxnst video",
) -> dict[str, Any]:
    """The report record of a ``jaxnst video`` run: its frames (uint8 (n, h, w, 3)) on their own
    trackbar, the mean loss of the frames after each pass (weighted as in the total, against the
    iterations done), and its sidecar. At most MAX_FRAMES frames, evenly spread, are kept."""
    from jaxnst.config import StyleConfig

    cfg = StyleConfig().merge(dict(sidecar.get("config") or {}), source="sidecar")
    passes = [p for p in sidecar.get("passes") or [] if p.get("loss")]
    per_pass = -(-cfg.iterations // max(1, len(sidecar.get("passes") or passes)))
    history: dict[str, Any] = {}
    if passes:
        cols = {
            k: np.asarray([p["loss"].get(k, np.nan) for p in passes]) for k in passes[0]["loss"]
        }
        history = {"iteration": [int(p["pass"]) * per_pass for p in passes]}
        history.update(weighted_parts(cols, cfg) if "total" in cols else cols)
    keep = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_FRAMES)).round())
    notes = [f"{len(keep)} of the {len(frames)} frames shown."] if len(keep) < len(frames) else []
    return {
        "title": title,
        "subtitle": str(sidecar.get("command") or ""),
        "notes": notes,
        "content": content,
        "styles": list(styles),
        "y_label": "weighted loss, mean over the frames",
        "variants": [
            {
                "label": title,
                "params": {"mode": cfg.video_mode, "passes": len(passes)},
                "image": None,
                "history": history,
                "sidecar": dict(sidecar),
            }
        ],  # fmt: skip
        "video": {"frames": [frames[int(i)] for i in keep], "fps": fps, "label": "frame"},
    }
