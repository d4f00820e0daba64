"""The options form of ``jaxnst serve``, generated from ``StyleConfig`` and read like the CLI.

``form_fields()`` describes each option the page may set (name, kind, default, help, choices,
bounds), straight from the fields' metadata, so the form has the command line's defaults and
help. ``config_from_form(values)`` turns the page's values into command-line tokens and parses
them with the CLI's own flags (``options.add_flags``) and ``StyleConfig.validate``, so a bad value
gets the message the command line gives. Options that name files on the server (weights, masks)
or only shape the CLI's files are not settable from the page.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jaxnst import report
from jaxnst.config import FIELDS, StyleConfig
from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import fit_size, read_image, resize, to_uint8
from jaxnst.options import add_flags, element_type, flag, flag_values

# Shown first, open; the others under "more options". Names missing from StyleConfig are skipped.
COMMON = (
    "size", "iterations", "style_weight", "content_weight", "tv_weight", "optimizer", "init",
    "seed", "variants", "save_every", "color_mode", "original_colors", "style_scale",
)  # fmt: skip
# What the server decides itself (the files beside each result, the machine), and what only a
# video run reads (the page runs images).
SERVER_DECIDES = (
    "output_template", "print_every", "history", "plot", "report", "devices", "memory_limit_gb",
    "temporal_weight", "video_mode", "passes", "temporal_from", "blend", "flow", "video_batch",
    "long_term",
)  # fmt: skip
# Free text is only allowed where it cannot name a file: layer names, checked by validate().
FREE_TEXT = ("content_layers", "style_layers")
THUMB_SIDE = 160  # pixels: the page's preview of an upload


def settable(name: str) -> bool:
    """Whether the page may set option ``name``: not the server's, and no free text (a path)
    but the layer lists. A new option is settable when it is a number, yes/no or a choice."""
    f = FIELDS.get(name)
    if f is None or name in SERVER_DECIDES:
        return False
    default = f.default
    text = isinstance(default, str) and not f.metadata.get("choices")
    text = text or (isinstance(default, tuple) and element_type(StyleConfig, name) is str)
    return name in FREE_TEXT if text else True


def form_value(value: Any) -> Any:
    """A default as the form shows it: lists space-separated, numbers and yes/no as they are."""
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return value


def form_fields() -> list[dict[str, Any]]:
    """The settable options, common ones first, each with what the form needs to show it."""
    out = []
    for f in dataclasses.fields(StyleConfig):
        if not settable(f.name):
            continue
        default, meta = f.default, f.metadata
        if isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, tuple):
            kind = "list"
        elif meta.get("choices"):
            kind = "choice"
        else:
            kind = {int: "int", float: "float"}.get(type(default), "text")
        item: dict[str, Any] = {
            "name": f.name,
            "flag": "--" + flag(f.name),
            "kind": kind,
            "default": form_value(default),
            "help": meta.get("help", ""),
            "role": meta["role"],
            "common": f.name in COMMON,
        }
        if kind == "list":
            item["element"] = element_type(StyleConfig, f.name).__name__
        for key in ("choices", "low", "positive", "unit"):
            if key in meta:
                item[key] = list(meta[key]) if key == "choices" else meta[key]
        out.append(item)
    order = {name: i for i, name in enumerate(COMMON)}
    return sorted(out, key=lambda item: order.get(item["name"], len(order)))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxnst serve", add_help=False, allow_abbrev=False)
    add_flags(parser, StyleConfig, "run options")
    return parser


def config_from_form(values: dict[str, Any], base: StyleConfig | None = None) -> StyleConfig:
    """A validated StyleConfig from the page's values (strings as typed, or JSON numbers and
    booleans), parsed by the command line's flags; ConfigError with the CLI's message."""
    if not isinstance(values, dict):
        raise ConfigError("options must be an object of option names and values")
    argv, empty = [], {}
    for name, value in values.items():
        if not isinstance(name, str) or not settable(name):
            raise ConfigError(f"option {name!r} cannot be set from the page")
        default, opt = FIELDS[name].default, "--" + flag(name)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
            value, bool | int | float | str
        ):
            raise ConfigError(f"{flag(name)} should be {_kind(default)}, not {value!r}")
        if isinstance(default, bool):
            argv.append(opt if value else f"--no-{flag(name)}")
        elif isinstance(default, tuple):
            tokens = str(value).replace(",", " ").split()
            if tokens:
                argv += [opt, *tokens]
            else:
                empty[name] = ()
        else:
            text = str(value).strip()
            if not text:
                raise ConfigError(f"{flag(name)} needs a value (default: {form_value(default)})")
            argv.append(f"{opt}={text}")  # '=': a value that starts with '-' is still a value
    args = _parser().parse_args(argv)
    cfg = (base or StyleConfig()).replace(**flag_values(args, StyleConfig), **empty)
    return cfg.validate().with_seed()  # as the CLI: seed -1 becomes a random one, recorded


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "yes or no (true/false)"
    return "a list" if isinstance(default, tuple) else "a number or text"


# ---------------------------------------------------------------------- uploads
def too_large(name: str, size: int, limit: int) -> str:
    """The message for an upload over the limit (the page's script says the same)."""
    return f"{name}: {file_size(size)}, more than the {file_size(limit)} upload limit"


def file_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{round(n / 1e3)} kB"


def display_name(header: str) -> str:
    """The user's file name from ``X-Filename``: its last part, printable, at most 100 chars."""
    name = unquote(header or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()[:100]
    return name or "image"


def check_image(path: Path, name: str) -> tuple[int, int, str]:
    """(width, height, thumbnail data URI) of an uploaded file, read as the CLI reads its
    inputs; ImageError naming the file as the user knows it."""
    try:
        pixels = read_image(path)
    except ImageError as err:
        raise ImageError(str(err).replace(str(path), name)) from None
    h, w = pixels.shape[:2]
    small = resize(pixels, fit_size((h, w), THUMB_SIDE)) if max(h, w) > THUMB_SIDE else pixels
    mime, data = report.encode_array(to_uint8(small))
    return w, h, report.data_uri(mime, data)
