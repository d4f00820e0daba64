"""Files beside the output: the names a run will write, the history, the sidecar's record."""

from __future__ import annotations

import numpy as np
import pytest

from jaxnst import outputs
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError, ImageError


def test_plan_names_every_file_before_the_run(tmp_path):
    cfg = StyleConfig(variants=2, save_every=10, output_template="{stem}_s{seed}")
    plan = outputs.plan_outputs(tmp_path / "out.png", cfg, [3, 4])
    assert [p.name for p in plan.images] == ["out_s3.png", "out_s4.png"]
    assert plan.sidecar(1).name == "out_s4.json" and plan.checkpoint.name == "out.ckpt.npz"
    assert plan.history.name == "out_history.csv" and plan.plot.name == "out_losses.png"
    assert (
        plan.snapshot(0, 20).name == "out_s3_0020.png"
        and plan.gif(1).name == "out_s4_evolution.gif"
    )
    one = outputs.plan_outputs(tmp_path / "one.jpg", StyleConfig(history="none", plot=False), [0])
    assert one.images == (tmp_path / "one.jpg",) and one.history is None and one.plot is None
    assert list(tmp_path.iterdir()) == []  # planning writes nothing


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("out.txt", ConfigError, "needs an image suffix"),
        ("missing/out.png", ImageError, "does not exist"),
        ("out_history.png", ConfigError, None),
    ],
)
def test_plan_refuses_what_cannot_be_written(tmp_path, name, error, message):
    if message is None:  # a variant named like another output: the names collide
        cfg = StyleConfig(variants=2, output_template="out_history")
        with pytest.raises(ConfigError):
            outputs.plan_outputs(tmp_path / "out.png", cfg, [0, 1])
        return
    with pytest.raises(error, match=message):
        outputs.plan_outputs(tmp_path / name, StyleConfig(), [0])


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_history_round_trips(tmp_path, suffix):
    hist = [
        {"iteration": np.arange(3), "total": np.array([3.0, 2.0, 1.5]), "tv": np.ones(3),
         "style/conv1_1": np.array([1e-3, 2e-3, 3e-3]), "content": np.zeros(3)},
        {"iteration": np.arange(2), "total": np.array([9.0, 8.0]), "tv": np.ones(2),
         "style/conv1_1": np.array([1.0, 0.5]), "content": np.ones(2)},
    ]  # fmt: skip
    path = outputs.write_history(tmp_path / f"h.{suffix}", hist, [5, 6])
    if suffix == "csv":
        back = outputs.read_history_csv(path)
        for got, want in zip(back, hist, strict=True):
            for k, v in want.items():
                np.testing.assert_array_equal(got[k], v)
        header = path.read_text().splitlines()[0].split(",")
        assert header == ["variant", "seed", "iteration", "total", "content", "style/conv1_1", "tv"]
    else:
        import json

        data = json.loads(path.read_text())
        assert [v["seed"] for v in data["variants"]] == [5, 6]
        assert data["variants"][1]["columns"]["total"] == [9.0, 8.0]


def test_weighted_parts_weigh_each_term_by_its_config_field():
    cfg = StyleConfig(
        content_weight=2.0, style_weight=10.0, tv_weight=0.5,
        style_layers=("conv1_1", "conv2_1"), style_layer_weights=(1.0, 3.0),
    )  # fmt: skip
    hist = {k: np.array([1.0]) for k in ("total", "content", "style", "tv", "style/conv1_1",
                                         "style/conv2_1")}  # fmt: skip
    parts = outputs.weighted_parts(hist, cfg)
    assert {k: float(v[0]) for k, v in parts.items()} == {
        "total": 1.0, "content": 2.0, "style": 10.0, "style/conv1_1": 10.0,
        "style/conv2_1": 30.0, "tv": 0.5,
    }  # fmt: skip
    assert "tv" not in outputs.weighted_parts(hist, cfg.replace(tv_weight=0.0))  # off: not drawn
    assert set(outputs.TERM_WEIGHTS) == {"content", "style", "tv", "temporal"}


def test_sidecar_records_the_image_and_the_last_losses(tmp_path):
    plan = outputs.plan_outputs(tmp_path / "out.png", StyleConfig(), [7])
    image = np.zeros((4, 5, 3), np.uint8)
    rows = [{"iteration": 0, "evaluations": 1, "total": 5.0}, {"iteration": 1, "evaluations": 3,
            "total": 4.0, "content": 1.0, "scale": 64}]  # fmt: skip
    data = outputs.sidecar(plan, 0, 7, image, rows, 1, 3, "", {"config": {"size": 5}})
    assert data["image"] == "out.png" and data["seed"] == 7 and data["iterations"] == 1
    assert data["final_loss"] == {"total": 4.0, "content": 1.0}
    assert data["image_sha256"] == outputs.array_sha256(image) and data["config"] == {"size": 5}
    assert outputs.array_sha256(image) != outputs.array_sha256(image[:, :4])
    written = outputs.write_json(plan.sidecar(0), data)
    assert written.read_text().startswith("{") and outputs.file_sha256(written)
