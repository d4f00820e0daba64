"""The page's options form and upload checks (jaxnst.webform): the CLI's defaults, help and
messages, no option that names a file, and uploads read as the CLI reads its inputs."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxnst import cli, webform
from jaxnst.config import FIELDS, StyleConfig
from jaxnst.errors import ConfigError, ImageError


def test_the_form_has_the_configs_defaults_and_help_and_no_file_options():
    fields = {f["name"]: f for f in webform.form_fields()}
    for name, item in fields.items():
        f = FIELDS[name]
        assert item["help"] == f.metadata["help"] and item["flag"] == "--" + name.replace("_", "-")
        assert item["default"] == webform.form_value(f.default)
    assert fields["size"]["kind"] == "int" and fields["size"]["low"] == 16
    assert fields["optimizer"]["kind"] == "choice" and fields["optimizer"]["choices"] == [
        "lbfgs", "adam"
    ]  # fmt: skip
    assert fields["style_layers"]["default"] == "conv1_1 conv2_1 conv3_1 conv4_1 conv5_1"
    assert fields["original_colors"]["kind"] == "bool" and fields["scales"]["element"] == "int"
    # Paths on the server, and what the server decides itself, are not the page's to set.
    for name in ("weights", "masks", "style_masks", "output_template", "history", "report",
                 "init_image", "video_mode", "passes"):  # fmt: skip
        assert name not in fields
    # Common options first, in their order.
    assert [f["name"] for f in webform.form_fields()][:3] == ["size", "iterations", "style_weight"]


def test_a_new_free_text_option_is_not_settable_until_named_safe():
    @dataclasses.dataclass(frozen=True)
    class Fake:  # what settable() reads: a field's default, choices and element type
        path: str = ""
        paths: tuple[str, ...] = ()
        mode: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})

    for name, expect in (("path", False), ("paths", False), ("mode", True)):
        fake = dataclasses.fields(Fake)[[f.name for f in dataclasses.fields(Fake)].index(name)]
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(FIELDS, name, fake)
            mp.setattr(webform, "element_type", lambda cls, n: str)
            assert webform.settable(name) is expect, name


def test_values_parse_as_on_the_command_line():
    cfg = webform.config_from_form(
        {"size": "64", "style_weight": 10000, "original_colors": True, "scales": "32, 64",
         "style_layers": "conv1_1 conv2_1", "style_layer_weights": "", "init": "content"}
    )  # fmt: skip
    assert cfg == StyleConfig(
        size=64, style_weight=1e4, original_colors=True, scales=(32, 64), init="content",
        style_layers=("conv1_1", "conv2_1"),
    )  # fmt: skip
    assert webform.config_from_form({}) == StyleConfig()
    chosen = webform.config_from_form({"seed": "-1", "variants": 2})
    assert 0 <= chosen.seed < 2**31 and chosen.variants == 2  # a random seed, as the CLI picks


@pytest.mark.parametrize(
    "values, flags",
    [
        ({"size": "8"}, ["--size", "8"]),
        ({"size": "abc"}, ["--size", "abc"]),
        ({"style_weight": "-1"}, ["--style-weight=-1"]),
        ({"optimizer": "sgd"}, ["--optimizer", "sgd"]),
        ({"style_layers": "conv9_9"}, ["--style-layers", "conv9_9"]),
        ({"content_weight": "0", "style_weight": "0"},
         ["--content-weight", "0", "--style-weight", "0"]),
    ],
)  # fmt: skip
def test_a_bad_value_gets_the_command_lines_message(values, flags, capsys):
    with pytest.raises(ConfigError) as err:
        webform.config_from_form(values)
    assert cli.main(["stylize", "c.png", "s.png", *flags]) == 2
    line = capsys.readouterr().err.strip()
    # The CLI adds its prefix (and for argparse's own errors a pointer to --help).
    assert line.removeprefix("jaxnst: error: ").startswith(str(err.value)), (line, err.value)


def test_options_the_page_may_not_set_are_refused():
    for values, message in (
        ({"weights": "/etc/passwd"}, "option 'weights' cannot be set from the page"),
        ({"masks": "../secret.png"}, "option 'masks' cannot be set from the page"),
        ({"nonsense": 1}, "option 'nonsense' cannot be set from the page"),
        ({"plot": False}, "option 'plot' cannot be set from the page"),
        ({"original_colors": "yes"}, "original-colors should be yes or no (true/false), not 'yes'"),
        ({"size": [64]}, "size should be a number or text, not [64]"),
        ({"size": " "}, "size needs a value (default: 512)"),
    ):
        with pytest.raises(ConfigError) as err:
            webform.config_from_form(values)
        assert str(err.value) == message
    with pytest.raises(ConfigError, match="options must be an object"):
        webform.config_from_form(["size", 64])


def test_uploads_are_read_as_the_cli_reads_its_inputs(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    width, height, thumb = webform.check_image(tmp_path / "x.png", "holiday.png")
    assert (width, height) == (400, 300) and thumb.startswith("data:image/")
    (tmp_path / "notes").write_text("hello")
    with pytest.raises(ImageError) as err:
        webform.check_image(tmp_path / "notes", "notes.txt")
    assert str(err.value) == "notes.txt: not an image (or a format Pillow cannot read)"

    # A header that claims 400 million pixels: refused before any decoding.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
    (tmp_path / "bomb").write_bytes(bomb)
    with pytest.raises(ImageError, match=r"^bomb.png: image too large") as err:
        webform.check_image(tmp_path / "bomb", "bomb.png")
    assert str(tmp_path) not in str(err.value)  # the server's folder never shows
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"^cut.png: cannot decode image"):
        webform.check_image(tmp_path / "cut", "cut.png")


def test_a_users_file_name_is_only_a_name():
    assert webform.display_name("..%2F..%2Fetc%2Fpasswd") == "passwd"
    assert webform.display_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert webform.display_name("a%0Ab%00.png") == "ab.png"
    assert webform.display_name("") == "image" and len(webform.display_name("x" * 500)) == 100
    assert webform.too_large("big.png", 1_500_000, 1_000_000) == (
        "big.png: 1.5 MB, more than the 1.0 MB upload limit"
    )
    assert (
        webform.too_large("b.png", 25_400, 20_000)
        == "b.png: 25 kB, more than the 20 kB upload limit"
    )
