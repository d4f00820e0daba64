"""The jaxnst command line: options, outputs, bad input, Ctrl-C, --resume and reproducibility.

Most tests call ``jaxnst.cli.main(argv)`` in-process (a subprocess pays seconds of JAX start-up);
a few run the real thing: ``--help``, a bad input, and Ctrl-C then --resume. Runs are tiny: 24 px,
VGG19 up to conv2_1, 2-8 iterations, so each costs about a second of compile and run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import checkpoint, cli, outputs
from jaxnst.color import rgb_to_yiq
from jaxnst.config import StyleConfig
from jaxnst.image import load_image, read_image
from jaxnst.stylize import StyleRun
from jaxnst.weights import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--size",
    "24",
    "--iterations",
    "3",
    "--content-layers",
    "conv2_1",
    "--style-layers",
    "conv1_1",
    "conv2_1",
    "--no-compile-cache",
]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 215, (max(2, h // 6), max(2, w // 6), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """content.png (30x40), style.png and broken files, in a directory of their own."""
    d = tmp_path_factory.mktemp("inputs")
    Image.fromarray(smooth_image(30, 40, 0)).save(d / "content.png")
    Image.fromarray(smooth_image(36, 36, 1)).save(d / "style.png")
    (d / "folder.png").mkdir()
    (d / "text.png").write_text("not an image\n")
    (d / "empty.png").write_bytes(b"")
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)).save(
        d / "full.jpg"
    )
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (d / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 9))
        + png_chunk(b"IEND", b"")
    )
    (d / "malformed.toml").write_text('size = 256\nstyle_layers = ["conv1_1",\n')
    (d / "unknown.toml").write_text("size = 64\ncolour = 'blue'\n")
    (d / "wrongtype.toml").write_text("iterations = 'many'\n")
    (d / "run.toml").write_text("size = 24\n")
    (d / "loop1.png").symlink_to(d / "loop2.png")
    (d / "loop2.png").symlink_to(d / "loop1.png")
    (d / "dangling.png").symlink_to(d / "nowhere.png")
    return d


@pytest.fixture
def out(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxnst: error: "), err
    assert "Traceback" not in err
    return lines[0]


def last_error_line(err: str) -> str:
    """After progress lines, the run's one error line, last."""
    errors = [line for line in err.splitlines() if line.startswith("jaxnst: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


# ---------------------------------------------------------------------- bad input
def bad(name, fragment, *argv):
    return pytest.param(argv, fragment, id=name)


BAD = [
    bad("missing file", "no such file", "{i}/missing.png", "{i}/style.png"),
    bad("missing style", "no such file", "{i}/content.png", "{i}/style.png", "{i}/nope.jpg"),
    bad("directory", "is a directory", "{i}/folder.png", "{i}/style.png"),
    bad("not an image", "not an image", "{i}/content.png", "{i}/text.png"),
    bad("truncated", "truncated", "{i}/truncated.jpg", "{i}/style.png"),
    bad("empty file", "empty file", "{i}/content.png", "{i}/empty.png"),
    bad("decompression bomb", "too large", "{i}/bomb.png", "{i}/style.png"),
    bad("unknown layer", "unknown layer 'conv9_9'", "{i}/content.png", "{i}/style.png",
        "--style-layers", "conv1_1", "conv9_9"),
    bad("unknown content layer", "unknown layer 'relu4_2'", "{i}/content.png", "{i}/style.png",
        "--content-layers", "relu4_2"),
    bad("negative weight", "content-weight must be a finite number >= 0", "{i}/content.png",
        "{i}/style.png", "--content-weight", "-1"),
    bad("negative tv weight", "tv-weight must be", "{i}/content.png", "{i}/style.png",
        "--tv-weight", "-0.5"),
    bad("nan weight", "style-weight must be a finite number", "{i}/content.png", "{i}/style.png",
        "--style-weight", "nan"),
    bad("negative layer weight", "style-layer-weights must be finite numbers >= 0",
        "{i}/content.png", "{i}/style.png", "--style-layer-weights", "1", "-1"),
    bad("zero size", "size must be a positive integer, not 0", "{i}/content.png",
        "{i}/style.png", "--size", "0"),
    bad("negative size", "size must be a positive integer", "{i}/content.png",
        "{i}/style.png", "--size", "-64"),
    bad("zero iterations", "iterations must be a positive integer, not 0", "{i}/content.png",
        "{i}/style.png", "--iterations", "0"),
    bad("negative iterations", "iterations must be a positive integer", "{i}/content.png",
        "{i}/style.png", "--iterations", "-5"),
    bad("zero learning rate", "learning-rate must be > 0", "{i}/content.png",
        "{i}/style.png", "--learning-rate", "0"),
    bad("both weights zero", "nothing to optimise", "{i}/content.png", "{i}/style.png",
        "--content-weight", "0", "--style-weight", "0"),
    bad("bad choice", "optimizer must be one of lbfgs, adam", "{i}/content.png",
        "{i}/style.png", "--optimizer", "sgd"),
    bad("not a number", "argument --size: invalid int value: 'big'", "{i}/content.png",
        "{i}/style.png", "--size", "big"),
    bad("not a float list", "invalid float value: 'x'", "{i}/content.png", "{i}/style.png",
        "--style-layer-weights", "1", "x"),
    bad("unknown flag", "unrecognized arguments: --colour", "{i}/content.png", "{i}/style.png",
        "--colour", "red"),
    bad("no style", "stylize needs CONTENT and STYLE image(s)", "stylize"),
    # issue 13: out-of-range values, names the file system refuses, links, memory, --config
    bad("seed past 32 bits", "seed must be at most 4294967295", "{i}/content.png",
        "{i}/style.png", "--seed", "99999999999999999999"),
    bad("iterations past int32", "iterations must be at most 100000000", "{i}/content.png",
        "{i}/style.png", "--iterations", "2147483648"),
    bad("memory limit nan", "memory-limit-gb must be a finite number", "{i}/content.png",
        "{i}/style.png", "--memory-limit-gb", "nan"),
    bad("memory limit inf", "memory-limit-gb must be a finite number", "{i}/content.png",
        "{i}/style.png", "--memory-limit-gb", "inf"),
    bad("output name too long", "cannot use as output (File name too long)", "{i}/content.png",
        "{i}/style.png", "-o", "{o}/" + "x" * 300 + ".png"),
    bad("template name too long", "file name too long", "{i}/content.png", "{i}/style.png",
        "--variants", "2", "--output-template", "{{stem}}_{{variant:0>300}}"),
    bad("input name too long", "cannot be opened (File name too long)",
        "{i}/" + "c" * 300 + ".png", "{i}/style.png"),
    bad("symlink loop", "loop1.png: symbolic link loop", "{i}/loop1.png", "{i}/style.png"),
    bad("dangling symlink", "dangling.png: broken symbolic link", "{i}/content.png",
        "{i}/dangling.png"),
    bad("weights symlink loop", "loop1.png: symbolic link loop", "{i}/content.png",
        "{i}/style.png", "--weights", "{i}/loop1.png"),
    bad("huge size", "the largest size that fits is", "{i}/content.png", "{i}/style.png",
        "--size", "1000000", "--memory-limit-gb", "4"),
    bad("config without images", "stylize needs CONTENT and STYLE image(s)", "--config",
        "{i}/run.toml"),
    bad("content without style", "stylize needs STYLE image(s)", "{i}/content.png"),
    bad("missing output directory", "does not exist", "{i}/content.png", "{i}/style.png",
        "-o", "{o}/no/such/dir/x.png"),
    bad("output under a file", "is not a directory", "{i}/content.png", "{i}/style.png",
        "-o", "{i}/content.png/x.png"),
    bad("output suffix", "output needs an image suffix", "{i}/content.png", "{i}/style.png",
        "-o", "{o}/x.txt"),
    bad("malformed TOML", "malformed TOML", "{i}/content.png", "{i}/style.png",
        "--config", "{i}/malformed.toml"),
    bad("unknown TOML key", "unknown option 'colour'", "{i}/content.png", "{i}/style.png",
        "--config", "{i}/unknown.toml"),
    bad("TOML wrong type", "iterations should be int, not 'many'", "{i}/content.png",
        "{i}/style.png", "--config", "{i}/wrongtype.toml"),
    bad("missing config file", "config file not found", "{i}/content.png", "{i}/style.png",
        "--config", "{i}/nope.toml"),
    bad("weights file missing", "weights file not found", "{i}/content.png", "{i}/style.png",
        "--weights", "{i}/nope.h5"),
    bad("weights not HDF5", "not a readable HDF5 file", "{i}/content.png", "{i}/style.png",
        "--weights", "{i}/text.png"),
    # conflicting options
    bad("variants with one name", "the 3 variants would overwrite each other", "{i}/content.png",
        "{i}/style.png", "--variants", "3", "--output-template", "{{stem}}_final"),
    bad("resume without checkpoint", "--resume: no checkpoint at", "{i}/content.png",
        "{i}/style.png", "--resume"),
    bad("blend weights for missing styles", "style-blend-weights has 2 values for 1 style",
        "{i}/content.png", "{i}/style.png", "--style-blend-weights", "1", "2"),
    bad("scales not ending at size", "must equal size", "{i}/content.png", "{i}/style.png",
        "--scales", "16", "32"),
    bad("history format", "history must be one of csv, json, none", "{i}/content.png",
        "{i}/style.png", "--history", "xml"),
    bad("negative save interval", "save-every must be at least 0", "{i}/content.png",
        "{i}/style.png", "--save-every", "-1"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "fragment"), BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, inputs, out, argv, fragment):
    argv = [a.format(i=inputs, o=out) for a in argv]
    if "-o" not in argv and argv != ["stylize"]:
        argv += ["-o", str(out / "pic.png")]
    # The case's flags after TINY's, so that they win.
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    before = files(inputs)
    code, stdout, err = run_cli(capsys, *argv[:split], *TINY, *argv[split:])
    line = one_error_line(err)
    assert fragment in line
    assert code == 2
    assert stdout == ""
    assert files(out) == set()
    assert files(inputs) == before


def test_unusual_images_run_end_to_end(capsys, inputs, tmp_path, out):
    """An EXIF-rotated RGBA photo with a CMYK style; 16-bit grey content with a palette style."""
    base = smooth_image(30, 40, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned a quarter clockwise: 30 wide, 40 high
    rgba = np.dstack([base, np.full((30, 40), 200, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rotated.png", exif=exif.tobytes())
    Image.fromarray(smooth_image(32, 32, 4)).convert("CMYK").save(tmp_path / "cmyk.tif")
    grey16 = (base.mean(-1) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    Image.fromarray(smooth_image(32, 32, 5)).quantize(16).save(tmp_path / "palette.png")
    for content, style, shape in (("rotated.png", "cmyk.tif", (24, 18, 3)),
                                  ("grey16.png", "palette.png", (18, 24, 3))):  # fmt: skip
        code, _, err = run_cli(capsys, tmp_path / content, tmp_path / style,
                               "-o", out / f"{content}.png", *TINY, "--no-plot")  # fmt: skip
        assert code == 0, err
        assert np.asarray(Image.open(out / f"{content}.png")).shape == shape


def test_over_pillows_pixel_limit_is_refused(capsys, monkeypatch, inputs, out):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # content.png has 1200 pixels
    code, _, err = run_cli(
        capsys, inputs / "content.png", inputs / "style.png", "-o", out / "pic.png", *TINY
    )
    assert "image too large" in one_error_line(err) and "content.png" in err
    assert code == 2 and files(out) == set()


def unwritable_directory(tmp_path: Path) -> Path | None:
    """A directory this process cannot create files in (chmod; as root, a read-only mount)."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    for candidate in (d, Path("/sys"), Path("/proc")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    return None


def test_unwritable_output_directory(capsys, inputs, tmp_path):
    d = unwritable_directory(tmp_path)
    if d is None:
        pytest.skip("no unwritable directory available (root without read-only mounts)")
    try:
        code, _, err = run_cli(
            capsys, inputs / "content.png", inputs / "style.png", "-o", d / "pic.png", *TINY
        )
        assert "cannot write in" in one_error_line(err)
        assert code == 2
        assert not (d / "pic.png").exists()
    finally:
        (tmp_path / "readonly").chmod(0o755)


def test_demo_without_scikit_image_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage -> ImportError
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "demo", "--no-compile-cache")
    assert "pip install 'jaxnst[demo]'" in one_error_line(err)
    assert code == 2 and files(tmp_path) == set()


# ---------------------------------------------------------------------- options and outputs
def test_help_has_a_flag_for_every_config_field(capsys):
    code, stdout, _ = run_cli(capsys, "stylize", "--help")
    assert code == 0
    for name in StyleConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in stdout
    assert "--no-original-colors" in stdout and "--resume" in stdout and "--quiet" in stdout
    code, stdout, _ = run_cli(capsys, "--version")
    assert code == 0 and stdout.startswith("jaxnst ")


def test_a_run_writes_image_sidecar_history_plot_snapshots_and_evolution(capsys, inputs, out):
    # The bare form: 'jaxnst CONTENT STYLE' means 'jaxnst stylize CONTENT STYLE'.
    code, stdout, err = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out / "pic.png",
        *TINY,
        "--iterations",
        "4",
        "--save-every",
        "2",
        "--seed",
        "3",
    )
    assert code == 0, err
    assert files(out) == {
        "pic.png",
        "pic.json",
        "pic_history.csv",
        "pic_losses.png",
        "pic_0002.png",
        "pic_0004.png",
        "pic_sheet.png",
        "pic_evolution.gif",
        "pic.html",
    }
    finals = files(out) - {"pic_0002.png", "pic_0004.png"}  # snapshots are not listed
    assert {f"wrote {out / n}" for n in finals} == set(stdout.splitlines())
    assert "iteration 4/4" in err and "it/s" in err  # plain lines: stderr is not a terminal

    image = np.asarray(Image.open(out / "pic.png"))
    assert image.shape == (18, 24, 3) and image.dtype == np.uint8  # 30x40 -> long side 24
    np.testing.assert_array_equal(np.asarray(Image.open(out / "pic_0004.png")), image)

    side = json.loads((out / "pic.json").read_text())
    assert side["seed"] == 3 and side["variant"] == 0 and side["iterations"] == 4
    assert side["config"]["size"] == 24 and side["config"]["style_layers"] == ["conv1_1", "conv2_1"]
    assert side["image_sha256"] == outputs.array_sha256(image)
    assert {"jaxnst", "jax", "jaxlib", "flax", "optax"} <= set(side["versions"])
    assert side["device"]["backend"] == "cpu" and side["device"]["count"] >= 1
    assert side["weights"]["sha256"] == outputs.file_sha256(DEFAULT_WEIGHTS)
    assert side["weights"]["provenance"]["format"] == "jaxnst-vgg19-kmeans256-v1"
    assert {"load", "compile", "run", "save", "total"} <= set(side["timings"])
    assert side["inputs"]["content"]["sha256"] == outputs.file_sha256(inputs / "content.png")
    assert side["stopped"] == "" and side["command"].startswith("jaxnst stylize ")

    with open(out / "pic_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 3, 4]
    assert {"total", "content", "style", "style/conv1_1", "style/conv2_1", "tv"} <= set(rows[0])
    assert float(rows[-1]["total"]) == side["last_iterate_loss"]["total"]
    # final_loss is the loss of the saved (8-bit) pixels: near the last iterate's, not equal
    np.testing.assert_allclose(side["final_loss"]["total"], float(rows[-1]["total"]), rtol=0.05)
    totals = [float(r["total"]) for r in rows]
    assert totals == sorted(totals, reverse=True)  # L-BFGS never increases the loss

    assert Image.open(out / "pic_losses.png").format == "PNG"
    gif = Image.open(out / "pic_evolution.gif")
    assert gif.n_frames == 2  # snapshots at 2 and 4 (the end is not repeated)
    sheet = Image.open(out / "pic_sheet.png")
    assert sheet.width > 2 * 24 and sheet.height > 18


def test_same_config_and_seed_give_the_same_bytes_and_the_sidecar_reproduces(
    capsys, inputs, tmp_path
):
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    args = [inputs / "content.png", inputs / "style.png", *TINY, "--seed", "7"]
    assert run_cli(capsys, *args, "-o", a / "pic.png")[0] == 0
    # Only the sidecar: its config is the whole run, seed included.
    assert (
        run_cli(
            capsys,
            inputs / "content.png",
            inputs / "style.png",
            "--config",
            a / "pic.json",
            "--no-compile-cache",
            "-o",
            b / "pic.png",
        )[0]
        == 0
    )
    assert (a / "pic.png").read_bytes() == (b / "pic.png").read_bytes()
    assert (a / "pic_history.csv").read_bytes() == (b / "pic_history.csv").read_bytes()
    assert run_cli(capsys, *args, "--seed", "8", "-o", c / "pic.png")[0] == 0
    assert (a / "pic.png").read_bytes() != (c / "pic.png").read_bytes()


def test_variants_named_by_template_with_json_history_and_adam(capsys, inputs, out):
    code, _, err = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out / "pic.png",
        *TINY,
        "--variants",
        "2",
        "--seed",
        "5",
        "--output-template",
        "{stem}-seed{seed}",
        "--history",
        "json",
        "--no-plot",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.05",
    )
    assert code == 0, err
    assert files(out) == {
        "pic-seed5.png",
        "pic-seed6.png",
        "pic-seed5.json",
        "pic-seed6.json",
        "pic_history.json",
    }
    sides = [json.loads((out / f"pic-seed{s}.json").read_text()) for s in (5, 6)]
    assert [(s["variant"], s["seed"], s["image"]) for s in sides] == [
        (0, 5, "pic-seed5.png"),
        (1, 6, "pic-seed6.png"),
    ]
    assert all(s["config"]["optimizer"] == "adam" and s["iterations"] == 3 for s in sides)
    history = json.loads((out / "pic_history.json").read_text())["variants"]
    assert [h["seed"] for h in history] == [5, 6]
    assert history[0]["columns"]["iteration"] == [0, 1, 2]
    assert (out / "pic-seed5.png").read_bytes() != (out / "pic-seed6.png").read_bytes()


def test_toml_config_sets_options_and_flags_override_it(capsys, inputs, out, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'size = 16\niterations = 2\ncontent_layers = ["conv1_1"]\n'
        'style-layers = ["conv1_1"]\noptimizer = "adam"\ntv-weight = 0.5\n'
    )
    code, _, err = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "--config",
        toml,
        "--iterations",
        "3",
        "--no-compile-cache",
        "-o",
        out / "pic.png",
    )
    assert code == 0, err
    cfg = json.loads((out / "pic.json").read_text())["config"]
    assert (cfg["size"], cfg["iterations"], cfg["optimizer"], cfg["tv_weight"]) == (
        16,
        3,
        "adam",
        0.5,
    )
    assert max(Image.open(out / "pic.png").size) == 16


def test_quiet_prints_nothing(capsys, inputs, out):
    code, stdout, err = run_cli(
        capsys, inputs / "content.png", inputs / "style.png", "-o", out / "pic.png", *TINY, "-q"
    )
    assert (code, stdout, err) == (0, "", "")
    assert "pic.png" in files(out)


def test_output_directory_gets_a_default_name(capsys, inputs, out):
    code, _, _ = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out,
        *TINY,
        "--history",
        "none",
        "--no-plot",
    )
    assert code == 0 and files(out) == {"content_style.png", "content_style.json"}


def test_original_colors_keep_the_contents_chroma(capsys, inputs, out):
    code, _, _ = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out / "pic.png",
        *TINY,
        "--original-colors",
    )
    assert code == 0
    result = read_image(out / "pic.png")
    content = load_image(inputs / "content.png", 24)
    iq_result, iq_content = rgb_to_yiq(result)[..., 1:], rgb_to_yiq(content)[..., 1:]
    assert np.median(np.abs(iq_result - iq_content)) < 2 / 255  # up to rounding and clipping
    assert json.loads((out / "pic.json").read_text())["config"]["original_colors"] is True


def test_original_colors_also_apply_to_the_python_api(inputs):
    from jaxnst import stylize

    content = load_image(inputs / "content.png", 24)
    options = dict(size=24, iterations=2, content_layers=("conv1_1",), style_layers=("conv1_1",))
    plain = stylize(content, inputs / "style.png", **options)
    swapped = stylize(content, inputs / "style.png", original_colors=True, **options)
    iq = [np.median(np.abs(rgb_to_yiq(r.image / 255)[..., 1:] - rgb_to_yiq(content)[..., 1:]))
          for r in (plain, swapped)]  # fmt: skip
    assert iq[1] < 2 / 255 < iq[0]


def test_coarse_to_fine_scales(capsys, inputs, out):
    code, _, err = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out / "pic.png",
        *TINY,
        "--scales",
        "16",
        "24",
        "--iterations",
        "2",
        "--save-every",
        "1",
    )
    assert code == 0, err
    rows = list(csv.DictReader((out / "pic_history.csv").read_text().splitlines()))
    assert [(int(r["iteration"]), int(r["scale"])) for r in rows] == [
        (0, 16),
        (1, 16),
        (2, 16),
        (2, 24),
        (3, 24),
    ]
    assert max(Image.open(out / "pic.png").size) == 24
    side = json.loads((out / "pic.json").read_text())
    assert side["iterations"] == 3  # 2 + half of 2
    assert Image.open(out / "pic_evolution.gif").n_frames == 3
    # the memory estimate, before each scale compiles, and in the sidecar
    lines = err.splitlines()
    memory = [i for i, line in enumerate(lines) if line.startswith("memory: about ")]
    compiling = [i for i, line in enumerate(lines) if line.startswith("compiling ")]
    assert len(memory) == 2 and [i + 1 for i in memory] == compiling, err
    assert [m["size"] for m in side["memory"]] == [16, 24]
    assert 0 < side["memory"][0]["estimate_bytes"] < side["memory"][1]["estimate_bytes"]


def test_the_memory_estimate_is_printed_with_the_limit(capsys, inputs, out):
    code, _, err = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out / "pic.png",
        *TINY,
        "--memory-limit-gb",
        "2",
        "--remat",
        "on",
    )
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if line.startswith("memory: ")]
    assert re.fullmatch(r"memory: about \d+ MiB on this host \(remat on; limit 2\.0 GiB\)", line)
    (entry,) = json.loads((out / "pic.json").read_text())["memory"]
    assert entry["limit_bytes"] == 2 * 2**30 and entry["remat"] is True
    assert f"{entry['estimate_bytes'] / 2**20:.0f} MiB" in line


def test_resume_across_scales_matches_an_uninterrupted_run(capsys, monkeypatch, inputs, tmp_path):
    """Ctrl-C in the second scale; --resume continues there with the first scale's history."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    args = [inputs / "content.png", inputs / "style.png", *TINY, "--scales", "16", "24",
            "--iterations", "4", "--chunk", "1", "--optimizer", "adam"]  # fmt: skip
    assert run_cli(capsys, *args, "-o", ref / "pic.png")[0] == 0

    advance, calls = StyleRun.advance, []

    def advance_then_ctrl_c(self, max_calls=None):
        made = advance(self, max_calls)
        calls.append(self.cfg.size)
        if calls.count(24) == 1:  # the first step call of the second scale
            os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(StyleRun, "advance", advance_then_ctrl_c)
    code, _, err = run_cli(capsys, *args, "-o", cut / "pic.png")
    monkeypatch.setattr(StyleRun, "advance", advance)
    assert code == 130, err
    assert json.loads((cut / "pic.json").read_text())["iterations"] == 5  # 4 at 16 px, 1 at 24

    code, _, err = run_cli(capsys, *args, "--resume", "-o", cut / "pic.png")
    assert code == 0, err
    assert "resuming from iteration 5" in err
    assert (cut / "pic.png").read_bytes() == (ref / "pic.png").read_bytes()
    assert (cut / "pic_history.csv").read_bytes() == (ref / "pic_history.csv").read_bytes()
    assert json.loads((cut / "pic.json").read_text())["iterations"] == 6


@pytest.mark.parametrize("drop", ["seeds", "rows", "config"])
def test_resume_from_an_incomplete_checkpoint_is_one_line(capsys, inputs, out, drop):
    meta = {"format": checkpoint.CHECKPOINT_FORMAT, "config": StyleConfig().to_dict(),
            "seeds": [0], "inputs": {}, "rows": [[]]}  # fmt: skip
    del meta[drop]
    np.savez(out / "pic.ckpt.npz", xs=np.zeros((1, 4, 4, 3), np.float32),
             meta=np.asarray(json.dumps(meta)))  # fmt: skip
    code, _, err = run_cli(
        capsys, inputs / "content.png", inputs / "style.png", "-o", out / "pic.png", "--resume"
    )
    assert code == 2
    assert f"not a complete jaxnst checkpoint ('{drop}' missing)" in one_error_line(err)
    assert files(out) == {"pic.ckpt.npz"}


def test_distributed_initialises_jax_first_and_fails_in_one_line(capsys, monkeypatch, inputs, out):
    import jax

    seen = []

    def initialize(**kwargs):
        seen.append(kwargs)
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    code, stdout, err = run_cli(
        capsys, inputs / "content.png", inputs / "style.png", "-o", out / "pic.png", "--distributed"
    )
    assert code == 2 and stdout == "" and seen == [{"num_processes": 2, "process_id": 1}]
    assert "--distributed: jax.distributed.initialize() failed" in one_error_line(err)
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    code, _, err = run_cli(capsys, inputs / "content.png", inputs / "style.png", "--distributed")
    assert code == 2 and "JAX_PROCESS_ID must be a whole number" in one_error_line(err)
    assert files(out) == set()


def test_only_process_zero_writes(capsys, monkeypatch, inputs, out):
    """A multi-host run as process 1 sees it: it computes (and gathers) but writes nothing."""
    import jax

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    code, stdout, err = run_cli(capsys, inputs / "content.png", inputs / "style.png", "-o",
                                out / "pic.png", *TINY, "--save-every", "1")  # fmt: skip
    assert (code, stdout, err) == (0, "", "")
    assert files(out) == set()


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_finite_image(capsys, inputs, out):
    # beta * E_l overflows float32: the very first loss is Inf.
    code, _, err = run_cli(
        capsys,
        inputs / "content.png",
        inputs / "style.png",
        "-o",
        out / "pic.png",
        *TINY,
        "--style-weight",
        "1e38",
    )
    line = last_error_line(err)
    assert "NaN or Inf" in line and "kept the last finite image" in line
    assert code == 1
    assert {"pic.png", "pic.json", "pic_history.csv"} <= files(out)
    assert not (out / "pic.ckpt.npz").exists()
    assert "NaN or Inf" in json.loads((out / "pic.json").read_text())["stopped"]
    image = read_image(out / "pic.png")
    assert np.all(np.isfinite(image)) and image.std() > 0.1  # the noise it started from


def test_ctrl_c_writes_outputs_and_resume_matches_an_uninterrupted_run(
    capsys, monkeypatch, inputs, tmp_path
):
    """In-process: the real SIGINT handler, raised from inside the third step call."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    # chunk 2: at most two step calls between host checks, so the third check is mid-run.
    args = [
        inputs / "content.png",
        inputs / "style.png",
        *TINY,
        "--iterations",
        "8",
        "--chunk",
        "2",
    ]
    assert run_cli(capsys, *args, "-o", ref / "pic.png")[0] == 0

    advance, calls = StyleRun.advance, []

    def advance_then_ctrl_c(self, max_calls=None):
        made = advance(self, max_calls)
        calls.append(made)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(StyleRun, "advance", advance_then_ctrl_c)
    code, stdout, err = run_cli(capsys, *args, "-o", cut / "pic.png")
    monkeypatch.setattr(StyleRun, "advance", advance)
    assert code == 130, err
    assert files(cut) == {
        "pic.png",
        "pic.json",
        "pic_history.csv",
        "pic_losses.png",
        "pic.ckpt.npz",
    }
    assert "--resume" in err
    side = json.loads((cut / "pic.json").read_text())
    assert side["stopped"].startswith("interrupted at iteration") and side["iterations"] < 8
    assert len((cut / "pic_history.csv").read_text().splitlines()) < 10

    # Options that change the computation must match the checkpoint's.
    code, _, err = run_cli(capsys, *args, "--resume", "--style-weight", "10", "-o", cut / "pic.png")
    assert "written with --style-weight 1000.0, not 10.0" in one_error_line(err)
    assert code == 2

    code, _, err = run_cli(capsys, *args, "--resume", "-o", cut / "pic.png")
    assert code == 0, err
    assert "resuming from iteration" in err
    assert (cut / "pic.png").read_bytes() == (ref / "pic.png").read_bytes()
    assert (cut / "pic_history.csv").read_bytes() == (ref / "pic_history.csv").read_bytes()
    assert json.loads((cut / "pic.json").read_text())["resumed_from"] == side["iterations"]
    assert not (cut / "pic.ckpt.npz").exists()


def test_demo_writes_demo_png_where_asked(capsys, out):
    pytest.importorskip("skimage")
    code, stdout, err = run_cli(
        capsys,
        "demo",
        "-o",
        out,
        "--size",
        "16",
        "--iterations",
        "2",
        "--content-layers",
        "conv1_1",
        "--style-layers",
        "conv1_1",
        "--no-plot",
        "--no-compile-cache",
    )
    assert code == 0, err
    assert files(out) == {"demo.png", "demo.json", "demo_history.csv"}
    assert f"wrote {out / 'demo.png'}" in stdout
    assert Image.open(out / "demo.png").size == (16, 16)
    side = json.loads((out / "demo.json").read_text())
    assert side["inputs"]["content"]["name"] == "skimage.data.astronaut"


def test_info_names_versions_devices_and_weights(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "info")
    assert code == 0
    assert "jax 0." in stdout and "backend: cpu" in stdout and "devices: " in stdout
    assert f"sha256 {outputs.file_sha256(DEFAULT_WEIGHTS)}" in stdout
    assert "format: jaxnst-vgg19-kmeans256-v1" in stdout
    code, _, err = run_cli(capsys, "info", "--weights", tmp_path / "nope.h5")
    assert code == 2 and "weights file not found" in one_error_line(err)


# ---------------------------------------------------------------------- real processes
def jaxnst_process(*argv, cache: Path, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXNST_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxnst", *map(str, argv)], env=env, text=True, **kw
    )


def test_subprocess_help_and_a_bad_input(inputs, out, tmp_path):
    p = jaxnst_process("--help", cache=tmp_path, stdout=subprocess.PIPE)
    stdout, _ = p.communicate(timeout=120)
    assert p.returncode == 0 and "stylize" in stdout
    p = jaxnst_process(
        inputs / "content.png",
        inputs / "text.png",
        "-o",
        out / "pic.png",
        cache=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 2 and stdout == ""
    assert (
        one_error_line(err) == f"jaxnst: error: {inputs / 'text.png'}: not an image "
        "(or a format Pillow cannot read)"
    )
    assert files(out) == set()


def test_subprocess_ctrl_c_then_resume_gives_the_uninterrupted_image(inputs, tmp_path):
    """SIGINT to a real run: exit 130 with outputs; --resume then ends on the same bytes."""
    cache = tmp_path / "xla"
    args = [
        inputs / "content.png",
        inputs / "style.png",
        "--size",
        "24",
        "--iterations",
        "400",
        "--content-layers",
        "conv2_1",
        "--style-layers",
        "conv1_1",
        "conv2_1",
        "--print-every",
        "10",
        "--no-plot",
    ]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    full = jaxnst_process(
        *args, "-o", ref / "pic.png", cache=cache, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    run = jaxnst_process(
        *args, "-o", cut / "pic.png", cache=cache, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    for line in run.stderr:
        if line.startswith("iteration 30/"):
            run.send_signal(signal.SIGINT)
            break
    stdout, err = run.communicate(timeout=300)
    assert run.returncode == 130, err
    assert f"wrote {cut / 'pic.ckpt.npz'}" in stdout and "--resume" in err
    assert {"pic.png", "pic.json", "pic_history.csv", "pic.ckpt.npz"} <= files(cut)
    stopped = json.loads((cut / "pic.json").read_text())["iterations"]
    assert 30 <= stopped < 400

    resumed = jaxnst_process(
        *args,
        "-o",
        cut / "pic.png",
        "--resume",
        cache=cache,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from iteration {stopped}" in err
    assert full.wait(timeout=300) == 0, full.stderr.read()
    full.stderr.close()
    assert (cut / "pic.png").read_bytes() == (ref / "pic.png").read_bytes()
    assert (cut / "pic_history.csv").read_bytes() == (ref / "pic_history.csv").read_bytes()
    assert not (cut / "pic.ckpt.npz").exists()
    assert any(cache.iterdir())  # the persistent compilation cache is on by default


def test_cli_takes_mask_options_and_records_them(tmp_path):
    for name, (h, w, seed) in {
        "content": (18, 24, 0),
        "style": (36, 36, 1),
        "other": (32, 40, 2),
    }.items():
        Image.fromarray(smooth_image(h, w, seed)).save(tmp_path / f"{name}.png")
    region = np.zeros((18, 24, 3), np.uint8)
    region[:, :12] = (255, 0, 0)
    region[:, 12:] = (0, 0, 255)
    Image.fromarray(region).save(tmp_path / "map.png")
    out = tmp_path / "out.png"
    argv = ["stylize", str(tmp_path / "content.png"), str(tmp_path / "style.png"),
            str(tmp_path / "other.png"), "-o", str(out), "--size", "24", "--iterations", "2",
            "--content-layers", "conv2_1", "--style-layers", "conv1_1", "conv2_1",
            "--masks", str(tmp_path / "map.png"), "--region-colors", "#ff0000,#0000ff",
            "--background", "style", "--mask-layers", "simple", "--quiet",
            "--no-compile-cache", "--no-plot"]  # fmt: skip
    assert cli.main(argv) == 0
    assert Image.open(out).size == (24, 18)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    text = json.dumps(sidecar)
    assert "map.png" in text and "#0000ff" in text and '"background": "style"' in text
    bad = [*argv[:-3], "--region-colors", "#00ff00,#0000ff", "--quiet"]
    assert cli.main(bad) == 2


# ---------------------------------------------------------------------- issue 13
def test_config_of_a_sidecar_alone_reruns_its_inputs(capsys, inputs, out):
    """Defect 12: 'jaxnst --config out.json -o new.png' failed with "invalid choice"."""
    code, _, err = run_cli(capsys, inputs / "content.png", inputs / "style.png", "-o",
                           out / "a.png", *TINY, "--no-plot")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "--config", out / "a.json", "-o", out / "b.png")
    assert code == 0, err
    assert (out / "a.png").read_bytes() == (out / "b.png").read_bytes()


def test_the_sidecar_hashes_the_weights_that_were_loaded(capsys, inputs, out, monkeypatch,
                                                         tmp_path):  # fmt: skip
    """Defect 6: the weights file deleted or replaced mid-run: before, exit 1 with a
    FileNotFoundError and no sidecar, or the replacement's sha256 in the sidecar."""
    weights = tmp_path / "w.h5"
    want = outputs.file_sha256(DEFAULT_WEIGHTS)
    original = StyleRun.advance
    for change in ("delete", "replace"):
        weights.write_bytes(DEFAULT_WEIGHTS.read_bytes())
        os.utime(weights, ns=(1, 1 if change == "delete" else 2))  # read afresh each time

        def advance(self, max_calls=None, change=change):
            if change == "delete":
                weights.unlink(missing_ok=True)
            else:
                weights.write_bytes(b"another file")
            return original(self, max_calls)

        monkeypatch.setattr(StyleRun, "advance", advance)
        code, _, err = run_cli(capsys, inputs / "content.png", inputs / "style.png", "-o",
                               out / f"{change}.png", *TINY, "--no-plot",
                               "--weights", weights)  # fmt: skip
        assert code == 0, err
        side = json.loads((out / f"{change}.json").read_text())
        assert side["weights"]["sha256"] == want and "bytes" not in side["weights"]
        assert side["weights"]["provenance"]["format"] == "jaxnst-vgg19-kmeans256-v1"


def test_a_full_disk_leaves_the_previous_files_and_names_the_one(capsys, inputs, out,
                                                                  monkeypatch):  # fmt: skip
    """Defect 5: the plot fails with ENOSPC. Before, the new image and history were already in
    place beside an older run's sidecar, and the message named no file."""
    from jaxnst import figures
    from jaxnst.files import atomic_write

    (out / "pic.png").write_bytes(b"old image")
    (out / "pic.json").write_text('{"image_sha256": "old"}')

    def full(tmp):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "write_plot", lambda path, *a: atomic_write(path, full))
    code, _, err = run_cli(capsys, inputs / "content.png", inputs / "style.png", "-o",
                           out / "pic.png", *TINY)  # fmt: skip
    line = last_error_line(err)
    assert code == 1 and str(out / "pic_losses.png") in line and "No space left" in line
    assert files(out) == {"pic.png", "pic.json"}  # the old set, no temporary files
    assert (out / "pic.png").read_bytes() == b"old image"


def test_running_out_of_host_memory_is_one_line(capsys, inputs, out, monkeypatch):
    def oom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "run_command", oom)
    code, _, err = run_cli(capsys, inputs / "content.png", inputs / "style.png", *TINY)
    assert code == 1 and "out of host memory (MemoryError)" in one_error_line(err)
