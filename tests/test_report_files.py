"""A report from a run's files (jaxnst.report_files): sidecars, snapshots, history, inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import cli, outputs, report_files
from jaxnst.errors import ConfigError
from jaxnst.image import save_image


def picture(side: int, t: float, seed: int) -> np.ndarray:
    """A smooth picture plus noise that fades as t goes 0 -> 1, like a run from noise."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(30, 225, (6, 8, 3)).astype(np.uint8)
    h, w = side * 3 // 4, side
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    return np.clip(base + rng.normal(0, 60 * (1 - t) + 4, (h, w, 3)), 0, 255).astype(np.uint8)


def history(iterations: int, seed: int) -> dict[str, np.ndarray]:
    it = np.arange(iterations + 1)
    total = 1e6 * (1 + 50 * np.exp(-it / (iterations / 8)) + 0.01 * seed)
    hist = {"iteration": it, "evaluations": it + 1, "total": total, "content": 1e4 + it}
    hist["style"] = total - hist["content"]
    for k, layer in enumerate(("conv1_1", "conv2_1", "conv3_1")):
        hist[f"style/{layer}"] = hist["style"] / (3 + k)
    return hist


def page_record(text: str) -> dict:
    """The record a report page holds (its application/json script)."""
    found = re.search(r'<script type="application/json" id="jaxnst-record">(.*?)</script>', text)
    assert found
    return json.loads(found[1])


def fake_run(tmp_path: Path, seeds=(0, 1), iterations=20, every=5) -> Path:
    """The files of a 2-variant CLI run, written with the CLI's own writers (no JAX run)."""
    out = tmp_path / "out.png"
    save_image(tmp_path / "content.png", picture(48, 1.0, 20))
    cfg = {"size": 32, "content_weight": 1.0, "style_weight": 100.0, "tv_weight": 0.0,
           "style_layers": ["conv1_1", "conv2_1", "conv3_1"], "save_every": every,
           "variants": len(seeds), "output_template": "{stem}_v{variant}", "history": "csv",
           "iterations": iterations}  # fmt: skip
    hists = []
    for k, seed in enumerate(seeds):
        for it in range(every, iterations + 1, every):
            save_image(tmp_path / f"out_v{k}_{it:04d}.png", picture(32, it / iterations, k))
        save_image(tmp_path / f"out_v{k}.png", picture(32, 1.0, k))
        hists.append(history(iterations, k))
        side = {"image": f"out_v{k}.png", "image_sha256": "0" * 64, "variant": k,
                "seed": seed, "iterations": iterations, "command": "jaxnst c s -o out.png",
                "inputs": {"content": {"path": str(tmp_path / "content.png"),
                                       "sha256": outputs.file_sha256(tmp_path / "content.png")},
                           "styles": [{"path": "gone.png"}]},
                "config": cfg, "timings": {"run": 1.5}}  # fmt: skip
        outputs.write_json(tmp_path / f"out_v{k}.json", side)
    outputs.write_history(tmp_path / "out_history.csv", hists, seeds)
    return out


def test_report_from_outputs_finds_sidecars_snapshots_history_and_inputs(tmp_path):
    out = fake_run(tmp_path)
    save_image(tmp_path / "out_v0_0003.png", picture(32, 0.1, 0))  # another cadence: stale
    save_image(tmp_path / "out_v0_0040.png", picture(32, 0.1, 0))  # past the end: stale
    outputs.write_json(tmp_path / "out2_v0.json", {"image": "out2_v0.png", "variant": 0,
                                                   "seed": 0, "config": {}})  # fmt: skip
    record = report_files.record_from_outputs(out)
    assert [v["label"] for v in record["variants"]] == ["out_v0.png", "out_v1.png"]
    v0 = record["variants"][0]
    assert [it for it, _ in v0["snapshots"]] == [5, 10, 15, 20]
    assert v0["params"] == {"seed": 0} and v0["iteration"] == 20
    # The plotted terms are weighted as in out_losses.png: beta * style, w_l * beta * layer.
    np.testing.assert_allclose(v0["history"]["style"], 100.0 * history(20, 0)["style"])
    np.testing.assert_allclose(
        v0["history"]["style/conv1_1"], 100.0 / 3 * history(20, 0)["style/conv1_1"], rtol=1e-6
    )
    assert record["y_label"] == "weighted loss"
    assert record["content"] == tmp_path / "content.png" and record["styles"] == []
    assert record["notes"] == ["style 1: gone.png not found."]
    path = report_files.report_from_outputs(out)
    assert path == tmp_path / "out.html"
    page = page_record(path.read_text())
    assert page["notes"] == record["notes"] and page["subtitle"] == "jaxnst c s -o out.png"


def test_the_snapshots_a_sidecar_lists_are_the_ones_shown(tmp_path):
    out = fake_run(tmp_path, seeds=(0,), iterations=20, every=5)
    out = tmp_path / "out_v0.png"  # one variant's sidecar, read as a single run
    side = json.loads((tmp_path / "out_v0.json").read_text())
    side["snapshots"] = [{"iteration": 5, "path": "out_v0_0005.png"},
                         {"iteration": 15, "path": "/elsewhere/out_v0_0015.png"},
                         {"iteration": 99, "path": "out_v0_0099.png"}]  # fmt: skip
    outputs.write_json(tmp_path / "out_v0.json", side)
    record = report_files.record_from_outputs(out)
    snaps = record["variants"][0]["snapshots"]
    # Listed names only, beside the image (never a directory the sidecar names); missing: left out
    assert snaps == [(5, tmp_path / "out_v0_0005.png"), (15, tmp_path / "out_v0_0015.png")]


def test_the_plan_has_a_report_only_when_snapshots_are_saved(tmp_path):
    from jaxnst.config import StyleConfig

    plan = outputs.plan_outputs(tmp_path / "a.png", StyleConfig(save_every=5), [0])
    assert plan.report == tmp_path / "a.html"
    assert outputs.plan_outputs(tmp_path / "a.png", StyleConfig(), [0]).report is None
    off = StyleConfig(save_every=5, report=False)
    assert outputs.plan_outputs(tmp_path / "a.png", off, [0]).report is None


def test_report_from_outputs_without_a_sidecar_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="no jaxnst sidecar"):
        report_files.report_from_outputs(tmp_path / "nothing.png")


@pytest.mark.slow
def test_the_cli_writes_the_report_after_the_sidecars(capsys, tmp_path):
    save_image(tmp_path / "content.png", picture(40, 1.0, 1))
    save_image(tmp_path / "style.png", picture(40, 1.0, 2))
    out = tmp_path / "pic.png"
    argv = [str(tmp_path / "content.png"), str(tmp_path / "style.png"), "-o", str(out),
            "--size", "24", "--iterations", "4", "--content-layers", "conv2_1",
            "--style-layers", "conv1_1", "conv2_1", "--no-compile-cache", "--save-every", "2",
            "--variants", "2"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert f"wrote {tmp_path / 'pic.html'}" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "pic_v1.json").read_text())
    assert sidecar["snapshots"] == [{"iteration": 2, "path": "pic_v1_0002.png"},
                                    {"iteration": 4, "path": "pic_v1_0004.png"}]  # fmt: skip
    page = page_record((tmp_path / "pic.html").read_text())
    assert [[it for it, _ in v["snapshots"]] for v in page["variants"]] == [[2, 4], [2, 4]]
    assert page["content"] is not None and page["notes"] == []
    assert page["variants"][0]["history"]["iteration"] == [0, 1, 2, 3, 4]
    v0 = page["variants"][0]
    assert v0["image"] == v0["snapshots"][-1][1]  # pic_v0.png and pic_v0_0004.png: one copy
    assert v0["sidecar"]["seed"] == 0 and page["variants"][1]["params"] == {"seed": 1}
    # --no-report: the same run writes everything but the page.
    (tmp_path / "pic.html").unlink()
    assert cli.main([*argv, "-q", "--no-report"]) == 0
    assert (tmp_path / "pic_sheet.png").is_file() and not (tmp_path / "pic.html").exists()


@pytest.mark.slow
def test_the_video_command_writes_its_report(tmp_path, capsys):
    pytest.importorskip("cv2", reason="the video extra (opencv-python-headless) is not installed")
    pytest.importorskip("av", reason="the video extra (av) is not installed")
    from jaxnst import clips, videoio

    clip = clips.pan_zoom_clip(n_frames=3, size=(24, 32), pan=(2.0, 0.0), zoom=1.0)
    videoio.write_video(tmp_path / "in.gif", clip.frames, 10)
    save_image(tmp_path / "style.png", picture(32, 1.0, 5))
    argv = ["video", str(tmp_path / "in.gif"), str(tmp_path / "style.png"), "-o",
            str(tmp_path / "out.gif"), "--size", "32", "--iterations", "4", "--passes", "2",
            "--content-layers", "conv2_1", "--style-layers", "conv1_1", "--no-compile-cache",
            "-q"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    page = page_record((tmp_path / "out.html").read_text())
    assert len(page["video"]["frames"]) == 3 and page["title"] == "out.gif"
    assert page["variants"][0]["history"]["iteration"] == [2, 4]
    assert page["variants"][0]["sidecar"]["inputs"]["frames"] == 3 and page["content"] is not None
    (tmp_path / "out.html").unlink()
    assert cli.main([*argv, "--no-report"]) == 0 and not (tmp_path / "out.html").exists()
