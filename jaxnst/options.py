"""Options as dataclass fields: declared with role, help and bounds; read; type- and range-checked.

The machinery behind ``jaxnst.config.StyleConfig`` (and any other options dataclass a driver
declares the same way): ``opt`` declares a field, ``Options`` gives a frozen dataclass the one
reader (``from_file``/``merge``: TOML, or a sidecar's JSON), the one type checker
(``check_type``: the same for values from files and from Python callers) and range checks from the
fields' metadata (``check_value``). A field's role says what it is to a run:

- ``static``: shapes or code of the compiled program; part of its compile key;
- ``traced``: a number the program takes as an array (its ``LossWeights`` slot named by ``slot``);
- ``host``: decided on the host (inputs, seeds, counts, plans); changes values, never a program;
- ``output``: only what is written beside the result; free to change on ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst.errors import ConfigError

ROLES = ("static", "traced", "host", "output")
METAVARS = {int: "N", float: "X", str: "NAME"}


INT32_MAX = 2**31 - 1  # an int option ends up as an int32 on the device: its default bound


def opt(default: Any, help: str, role: str, **meta: Any) -> Any:
    """A dataclass field with its help text, role and hints as metadata: ``choices``, ``low``
    and ``high`` (the smallest and largest value, of a number or of each element of a list;
    ints are at most ``INT32_MAX`` unless ``high`` says otherwise), ``positive`` (> 0),
    ``unit`` (of the bound, in messages), ``slot`` (traced: its LossWeights slot),
    ``resume_free`` (may change on --resume)."""
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults: the config is frozen and hashable")
    if role not in ROLES:
        raise TypeError(f"role must be one of {ROLES}, not {role!r}")
    return field(default=default, metadata={"help": help, "role": role, **meta})


def flag(name: str) -> str:
    """A field's name as users see it in flags and messages: style_weight -> style-weight."""
    return name.replace("_", "-")


class Options:
    """Mixin for a frozen dataclass of ``opt`` fields: conversion, checks, reading, merging."""

    def __post_init__(self) -> None:
        # Accept lists (from TOML or callers) but store tuples so the options stay hashable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    @classmethod
    def fields_with(cls, role: str) -> tuple[str, ...]:
        """The names of the fields of ``role``, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["role"] == role)

    def check_fields(self) -> None:
        """Each field on its own: its type, choices, bounds; ConfigError naming the first bad."""
        for f in dataclasses.fields(self):
            check_value(type(self), f.name, check_type(type(self), f.name, getattr(self, f.name)))

    def replace(self, **changes: Any):
        """A copy with ``changes``; unknown names raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise ConfigError(f"unknown option {name!r}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_file(cls, path: str | Path):
        """The defaults with the options of a TOML file or a sidecar .json (``read_options``)."""
        return cls().merge(read_options(path), source=str(path))

    def merge(self, data: dict[str, Any], source: str = "options"):
        """A copy with values from a plain dict (TOML, JSON; keys with '-' or '_'), each
        type-checked and converted to its field's type (ints to floats, lists to tuples)."""
        known = {f.name for f in dataclasses.fields(self)}
        changes = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown option {key!r}")
            try:
                changes[name] = check_type(type(self), name, value, convert=True)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
        return dataclasses.replace(self, **changes)


def read_options(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file, or the ``config`` of a sidecar .json; ConfigError if unreadable.

    The one reader of option files: the CLI's ``--config`` and ``Options.from_file``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: malformed JSON ({err})") from None
        data = data.get("config", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of options")
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML ({err})") from None


def element_type(cls: type, name: str) -> type:
    """The element type of a sequence field (tuple[float, ...] -> float)."""
    return typing.get_args(typing.get_type_hints(cls)[name])[0]


def _scalar(value: Any, kind: type, convert: bool) -> tuple[bool, Any]:
    """Whether ``value`` is of ``kind`` (ints pass as floats, bools never as numbers), and the
    value converted to it (only when ``convert``)."""
    if kind is bool:
        return isinstance(value, bool | np.bool_), value
    if isinstance(value, bool | np.bool_):
        return False, value
    if kind is int:
        return isinstance(value, int | np.integer), value
    if kind is float:
        ok = isinstance(value, int | float | np.integer | np.floating)
        return ok, float(value) if ok and convert else value
    return isinstance(value, kind), value


def check_type(cls: type, name: str, value: Any, convert: bool = False) -> Any:
    """``value`` checked against field ``name``'s type; ConfigError (one line) if it is not.

    With ``convert`` (values from files) ints become floats for float fields and a list, or a
    single value, becomes a tuple for sequence fields; without it (Python callers) the value must
    already have the field's type. Returns the (converted) value.
    """
    default = cls.__dataclass_fields__[name].default
    if isinstance(default, tuple):
        element = element_type(cls, name)
        if convert and isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]  # a single value in a file is a list of one
        containers = list | tuple if convert else tuple
        checked = [_scalar(v, element, convert) for v in value] if isinstance(
            value, containers
        ) else [(False, None)]  # fmt: skip
        if not all(ok for ok, _ in checked):
            raise ConfigError(f"{flag(name)} should be a list of {element.__name__}, "
                              f"not {value!r}")  # fmt: skip
        return tuple(v for _, v in checked)
    kind = type(default)
    ok, value = _scalar(value, kind, convert)
    if not ok:
        what = "a number" if kind is float else kind.__name__
        raise ConfigError(f"{flag(name)} should be {what}, not {value!r}")
    return value


def check_value(cls: type, name: str, value: Any) -> None:
    """ConfigError unless ``value`` (of field ``name``'s type) meets the field's ``choices``,
    ``low``, ``high`` and ``positive`` (element by element for a list); floats must be finite,
    ints at most ``INT32_MAX`` by default (a larger one would overflow on the device)."""
    meta = cls.__dataclass_fields__[name].metadata
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}, not {value!r}")
    many = isinstance(value, tuple)
    for v in value if many else (value,):
        if isinstance(v, str | bool):
            continue
        low, unit = meta.get("low"), f" {meta['unit']}" if "unit" in meta else ""
        if isinstance(v, float):
            if not math.isfinite(v) or (low is not None and v < low):
                what = "finite numbers" if many else "a finite number"
                bound = "" if low is None else f" >= {low}"
                raise ConfigError(f"{flag(name)} must be {what}{bound}, not {v}")
        elif low is not None and v < low:
            what = "a positive integer" if v <= 0 < low else f"at least {low}{unit}"
            raise ConfigError(f"{flag(name)} must be {what}, not {v!r}")
        if meta.get("positive") and v <= 0:
            raise ConfigError(f"{flag(name)} must be > 0, not {v}")
        high = meta.get("high", None if isinstance(v, float) else INT32_MAX)
        if high is not None and v > high:
            raise ConfigError(f"{flag(name)} must be at most {high}{unit}, not {v}")


# ---------------------------------------------------------------------- command-line flags
def show_value(value: Any) -> str:
    """An option's value as a user would type it: lists space-separated, strings quoted."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, str):
        return repr(value) if value else "''"
    return str(value)


def _elements(kind: type) -> Any:
    """argparse type for one token of a sequence option; commas separate values too."""

    def parse(token: str) -> list[Any]:
        return [kind(t) for t in token.split(",") if t != ""]

    parse.__name__ = kind.__name__  # argparse's "invalid float value: 'x'"
    return parse


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """A flag per field of ``cls``: --field-name, with the field's help and default; yes/no
    fields also get --no-field-name; list fields take several values (or commas)."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        text = f"{f.metadata.get('help', '')} (default: {show_value(f.default)})"
        kw: dict[str, Any] = {
            "dest": f.name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")
        }  # fmt: skip
        if isinstance(f.default, bool):
            group.add_argument("--" + flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(f.default, tuple):
            kind = element_type(cls, f.name)
            metavar = METAVARS.get(kind, "VALUE")
            group.add_argument(
                "--" + flag(f.name), nargs="+", type=_elements(kind), metavar=metavar, **kw
            )
        else:
            metavar = METAVARS.get(type(f.default), "VALUE")
            group.add_argument("--" + flag(f.name), type=type(f.default), metavar=metavar, **kw)


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (``add_flags``; list tokens flattened)."""
    out = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(f.default, tuple):
                value = tuple(v for token in value for v in token)
            out[f.name] = value
    return out
