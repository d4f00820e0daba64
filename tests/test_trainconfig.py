"""TrainConfig: the objective's options are StyleConfig's own; the training's are checked alike."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jaxnst import ConfigError, StyleConfig
from jaxnst.config import FIELDS, LossWeights
from jaxnst.losses import Objective
from jaxnst.options import ROLES
from jaxnst.trainconfig import RESUME_CHECKED, TrainConfig, read_train_options

TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
OBJECTIVE = ("content_weight", "style_weight", "tv_weight", "objective", "style_layer_norm",
             "content_layers", "style_layers",
             "style_layer_weights", "style_blend_weights", "style_layer_images", "pooling",
             "style_scale", "normalize_network", "weights", "color_mode", "dtype",
             "precision")  # fmt: skip


def test_every_field_has_a_role_and_help_and_inherited_ones_keep_their_bounds():
    for name, f in TRAIN_FIELDS.items():
        assert f.metadata["role"] in ROLES and f.metadata["help"], name
        if name in OBJECTIVE:  # the objective's options mean what they mean for an image run
            style = FIELDS[name].metadata
            for key in ("role", "choices", "low", "positive", "slot"):
                assert f.metadata.get(key) == style.get(key), (name, key)
    assert TRAIN_FIELDS["learning_rate"].default == 1e-3  # Johnson et al.'s, not the image's
    assert {"crop", "batch_size", "steps", "width", "sample_every"} <= set(TRAIN_FIELDS)
    assert "iterations" not in TRAIN_FIELDS and "init" not in TRAIN_FIELDS


def test_style_config_is_the_image_run_it_stands_for():
    cfg = TrainConfig(crop=128, style_weight=5e3, tv_weight=1e-4, content_layers=("conv2_2",),
                      style_layer_weights=(1.0, 2.0, 3.0, 4.0, 5.0), pooling="avg")  # fmt: skip
    style = cfg.style_config()
    assert style.size == 128 and style.optimizer == "adam"
    assert Objective.from_config(style) == Objective(("conv2_2",), cfg.style_layers, "avg")
    weights = LossWeights.from_config(style)
    assert float(weights.style) == 5e3 and float(weights.tv) == pytest.approx(1e-4)
    assert float(weights.learning_rate) == pytest.approx(1e-3)
    assert weights.style_layers.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"color_mode": "histogram"}, "histogram recolours the style to one content image"),
        ({"crop": 24, "style_layers": ("pool5",)}, "pool5 needs a side of at least 32 px"),
        ({"crop": 8}, "crop must be at least 16 pixels"),
        ({"content_layers": ("conv9_9",)}, "unknown layer 'conv9_9' in content-layers"),
        ({"content_weight": 0.0, "style_weight": 0.0}, "both 0"),
        ({"batch_size": 0}, "batch-size must be a positive integer"),
        ({"learning_rate": 0.0}, "learning-rate must be > 0"),
        ({"style_layer_weights": (1.0,)}, "1 values for 5 style layers"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig(**options).validate()
    assert "\n" not in str(err.value)


def test_steps_default_to_epochs_over_the_photos():
    assert TrainConfig().total_steps(80_000) == 40_000  # the paper's 2 epochs of COCO
    assert TrainConfig(epochs=0.5, batch_size=3).total_steps(10) == 2
    assert TrainConfig(steps=7).total_steps(10_000) == 7


def test_an_image_runs_sidecar_gives_its_objective(tmp_path):
    image_cfg = StyleConfig(style_weight=1e4, content_layers=("conv3_1",), iterations=800,
                            init="content", size=768)  # fmt: skip
    sidecar = tmp_path / "out.json"
    sidecar.write_text(json.dumps({"image": "out.png", "config": image_cfg.to_dict()}))
    data = read_train_options(sidecar)
    assert "iterations" not in data and "size" not in data and "init" not in data
    cfg = TrainConfig().merge(data, source=str(sidecar)).validate()
    assert cfg.style_weight == 1e4 and cfg.content_layers == ("conv3_1",)
    toml = tmp_path / "train.toml"
    toml.write_text("crop = 64\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):  # not silently dropped
        TrainConfig().merge(read_train_options(toml), source=str(toml))


def test_resume_checks_all_but_outputs_length_and_device_spread():
    assert "crop" in RESUME_CHECKED and "style_weight" in RESUME_CHECKED
    assert "seed" in RESUME_CHECKED and "width" in RESUME_CHECKED
    for free in ("steps", "epochs", "save_every", "sample_every", "devices", "workers"):
        assert free not in RESUME_CHECKED
