"""A run's report from the files it left beside its output: sidecars, history, snapshots, inputs.

``report_from_outputs("out.png")`` finds the run's sidecar(s) (``out.json``, or one per variant
named by its ``output_template``), the loss history, the snapshots (listed in each sidecar, else
found by name at multiples of ``save_every``) and the content and style images (from the
sidecar's ``inputs``), builds the record ``jaxnst.report`` renders and writes ``out.html``. The
CLI calls it after the sidecars are written; ``jaxnst serve`` for every run it finishes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst import outputs
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.report import ImageRef, write_report


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
    if "total" not in hist or "iteration" not in hist:
        return hist, False
    try:
        cfg = StyleConfig().merge(sidecar["config"], source="sidecar")
    except (ConfigError, TypeError, ValueError):
        return hist, False
    return {"iteration": hist["iteration"], **outputs.weighted_parts(hist, cfg)}, True


def _input_image(info: Mapping[str, Any], base: Path) -> tuple[ImageRef | None, str | None]:
    """An input of the run (a file, or a scikit-image sample for the demo), or why not."""
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


def report_from_outputs(output: str | Path, path: str | Path | None = None) -> Path:
    """Rebuild the report of the run that wrote ``output``; writes ``out.html`` beside it."""
    return write_report(path or report_path(output), record_from_outputs(output))
