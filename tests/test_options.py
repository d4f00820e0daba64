"""Option machinery: flags from fields, the one reader, the one type checker, the bounds."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from jaxnst.errors import ConfigError
from jaxnst.options import Options, add_flags, flag_values, opt, read_options, show_value


@dataclass(frozen=True)
class Toy(Options):
    """A driver's own options, declared the way StyleConfig is."""

    size: int = opt(64, "side in pixels", "static", low=16, unit="pixels")
    rate: float = opt(0.5, "a rate", "traced", slot="rate", positive=True)
    layers: tuple[str, ...] = opt(("a",), "layer names", "static")
    weights: tuple[float, ...] = opt((), "weights", "host", low=0)
    fast: bool = opt(False, "go fast", "output")
    mode: str = opt("x", "a mode", "host", choices=("x", "y"))
    count: int = opt(1, "a count", "host", low=0, high=10)


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_flags(parser, Toy, "toy options")
    return flag_values(parser.parse_args(argv), Toy)


def test_flags_come_from_the_fields():
    assert parse([]) == {}  # only what is given
    got = parse(["--size", "32", "--layers", "a", "b,c", "--no-fast", "--weights", "1,2"])
    assert got == {"size": 32, "layers": ("a", "b", "c"), "fast": False, "weights": (1.0, 2.0)}
    Toy().replace(**got).check_fields()
    with pytest.raises(SystemExit):
        parse(["--size", "big"])


def test_roles_and_bounds_from_the_metadata():
    assert Toy.fields_with("static") == ("size", "layers")
    for changes, message in (
        ({"size": 8}, "size must be at least 16 pixels, not 8"),
        ({"size": 0}, "size must be a positive integer, not 0"),
        ({"rate": 0.0}, "rate must be > 0"),
        ({"rate": float("inf")}, "rate must be a finite number"),
        ({"weights": (1.0, -1.0)}, "weights must be finite numbers >= 0, not -1.0"),
        ({"mode": "z"}, "mode must be one of x, y, not 'z'"),
        ({"fast": 1}, "fast should be bool, not 1"),
        ({"count": 11}, "count must be at most 10, not 11"),
        ({"size": 2**31}, "size must be at most 2147483647 pixels"),  # int32 on the device
        ({"layers": ["a"]}, None),  # a list becomes a tuple
    ):
        if message is None:
            Toy().replace(**changes).check_fields()
            continue
        with pytest.raises(ConfigError, match=message):
            Toy().replace(**changes).check_fields()
    with pytest.raises(ConfigError, match="unknown option 'nope'"):
        Toy().replace(nope=1)
    with pytest.raises(TypeError, match="role"):
        opt(1, "no such role", "sometimes")


def test_one_reader_for_toml_and_sidecars(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text('size = 32\nrate = 1\nlayers = "b"\n')
    assert Toy.from_file(toml) == Toy(size=32, rate=1.0, layers=("b",))
    sidecar = tmp_path / "out.json"
    sidecar.write_text(json.dumps({"image": "out.png", "config": {"mode": "y"}}))
    assert read_options(sidecar) == {"mode": "y"} and Toy.from_file(sidecar).mode == "y"
    for text, message in (("size = [", "malformed TOML"), ("other = 1", "unknown option")):
        toml.write_text(text)
        with pytest.raises(ConfigError, match=message):
            Toy.from_file(toml)
    with pytest.raises(ConfigError, match="config file not found"):
        read_options(tmp_path / "missing.toml")
    assert show_value(("a", "b")) == "a b" and show_value("") == "''" and show_value(()) == "none"
