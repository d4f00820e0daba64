"""StyleConfig: every field has a role and what the package derives from the roles holds; the
one type checker treats files and Python callers alike; bad options are one-line errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.config import FIELDS, RESUME_CHECKED, SWEEPABLE, LossWeights, static_config
from jaxnst.options import ROLES

SMALL = StyleConfig(size=24, iterations=3, chunk=2, optimizer="adam", variants=2,
                    content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))  # fmt: skip
CFG = SMALL.replace(iterations=2, variants=1)


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(2, h // 6), max(2, w // 6), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


CONTENT, STYLE = smooth_image(30, 40, 0), smooth_image(36, 36, 1)


# ------------------------------------------------------------------ roles and what they derive
def test_every_field_declares_a_known_role_and_help():
    for name, f in FIELDS.items():
        assert f.metadata.get("role") in ROLES, f"{name} has no role"
        assert f.metadata.get("help"), f"{name} has no help"


def test_static_config_keeps_exactly_the_static_fields():
    changed = {}
    for name, f in FIELDS.items():  # a non-default value of every field
        d = f.default
        changed[name] = (
            not d if isinstance(d, bool) else d + 1 if isinstance(d, int | float)
            else (f.metadata.get("choices") or ("x", "y"))[-1] if isinstance(d, str) else d
        )  # fmt: skip
    cfg = dataclasses.replace(StyleConfig(), **changed)
    key = static_config(cfg)
    for name, f in FIELDS.items():
        kept = getattr(key, name) == getattr(cfg, name)
        if f.metadata["role"] == "static" and changed[name] != f.default:
            assert kept, name
        elif f.metadata["role"] != "static":
            assert getattr(key, name) == f.default, name
    # two configs that differ only in traced, host or output fields share the compile key
    other = StyleConfig(style_weight=7.0, seed=3, iterations=9, save_every=5, init="content")
    assert static_config(other) == static_config(StyleConfig())
    assert hash(static_config(other)) == hash(static_config(StyleConfig()))


def test_sweepable_names_and_loss_weights_come_from_the_traced_fields():
    traced = StyleConfig.fields_with("traced")
    assert set(SWEEPABLE) == set(traced)
    assert set(SWEEPABLE.values()) == set(LossWeights._fields)  # every slot filled once
    cfg = StyleConfig(content_weight=2.0, style_weight=5.0, tv_weight=0.5, learning_rate=0.1,
                      style_layer_weights=(1.0, 2.0, 3.0, 4.0, 5.0))  # fmt: skip
    w = LossWeights.from_config(cfg)
    for name, slot in SWEEPABLE.items():
        np.testing.assert_allclose(getattr(w, slot), getattr(cfg, name))


def test_resume_checks_every_field_but_outputs_and_iterations():
    assert "iterations" not in RESUME_CHECKED
    for name in StyleConfig.fields_with("output"):
        assert name not in RESUME_CHECKED
    for name in ("size", "seed", "style_weight", "masks", "optimizer"):
        assert name in RESUME_CHECKED


def test_files_and_python_callers_meet_the_same_type_checker(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('size = "512"\n')
    with pytest.raises(ConfigError, match="size should be int, not '512'") as from_file:
        StyleConfig.from_file(path)
    with pytest.raises(ConfigError, match="size should be int, not '512'") as from_python:
        StyleConfig(size="512").validate()
    assert str(from_file.value).endswith(str(from_python.value))
    path.write_text('style_weight = 10\nstyle_layers = "conv1_1"\n')
    cfg = StyleConfig.from_file(path)  # files convert: an int for a float, a value for a list
    assert cfg.style_weight == 10.0 and isinstance(cfg.style_weight, float)
    assert cfg.style_layers == ("conv1_1",)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"region_colors": ("#ff0000",)}, "exactly one colour-coded map"),
        ({"masks": ("m.png",), "region_colors": ("red",)}, "#rrggbb"),
        ({"style_masks": ("m.png",)}, "style-masks need masks"),
        ({"background": "style"}, "only with masks"),
        ({"background": "sky"}, "background must be one of content, style"),
        ({"mask_layers": "eroded"}, "mask-layers must be one of simple, inside, all"),
        ({"style_layer_images": (1,)}, "1 values for 2 style layers"),
        ({"style_layer_images": (0, 1)}, "counts style images from 1"),
        ({"style_layer_images": (1, 2), "masks": ("m.png",)}, "cannot be combined"),
    ],
)
def test_control_options_are_validated(options, message):
    with pytest.raises(ConfigError, match=message):
        cfg = CFG.replace(**options).validate()
        cfg.check_masks(cfg.masks, cfg.style_masks)  # with the masks in effect (make_problem)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"content_layers": ("conv9_9",)}, "unknown layer"),
        ({"style_layers": ("conv1_1", "relu1_1")}, "unknown layer"),
        ({"style_weight": -1.0}, "style-weight"),
        ({"content_weight": -0.5}, "content-weight"),
        ({"tv_weight": float("nan")}, "tv-weight"),
        ({"size": 0}, "size"),
        ({"iterations": 0}, "iterations"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"init": "zeros"}, "init"),
        ({"style_layer_weights": (1.0, 1.0, 1.0)}, "style-layer-weights"),
        ({"style_layer_weights": (1.0, -1.0)}, "style-layer-weights"),
        ({"style_blend_weights": (1.0, 2.0)}, "style-blend-weights"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"size": "512"}, "size should be int, not '512'"),
        ({"size": 24.0}, "size should be int"),
        ({"style_weight": "1e3"}, "style-weight should be a number"),
        ({"plot": 1}, "plot should be bool"),
        ({"style_layers": "conv1_1"}, "style-layers should be a list of str"),
        ({"scales": (16, "24")}, "scales should be a list of int"),
    ],
)
def test_bad_options_raise_one_line_config_errors(random_params, options, words):
    with pytest.raises(ConfigError) as err:
        stylize(CONTENT, STYLE, SMALL, params=random_params, **options)
    message = str(err.value)
    assert words in message and "\n" not in message


def test_toml_lists_are_checked_element_by_element(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('scales = ["abc"]\n')
    with pytest.raises(ConfigError, match="scales should be a list of int"):
        StyleConfig.from_file(path)
    path.write_text("style_blend_weights = [1, 2.5]\n")
    assert StyleConfig.from_file(path).style_blend_weights == (1.0, 2.5)


def test_seed_minus_one_draws_a_seed_and_nothing_below_it_is_valid():
    drawn = StyleConfig(seed=-1, variants=3).validate().with_seed()
    assert 0 <= drawn.seed < 2**31 - 4
    assert StyleConfig(seed=5).with_seed().seed == 5
    with pytest.raises(ConfigError, match="seed must be at least -1"):
        StyleConfig(seed=-2).validate()
