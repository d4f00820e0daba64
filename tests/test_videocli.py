"""The ``jaxnst video`` command: the video and its sidecar, and bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the video extra (opencv-python-headless) is not installed")

from jaxnst import cli, clips, flow  # noqa: E402

STYLE = np.random.default_rng(5).random((32, 32, 3)).astype(np.float32)


def write_clip(path: Path, n: int = 3) -> Path:
    from jaxnst import videoio

    frames = clips.pan_zoom_clip(n_frames=max(n, 2), size=(24, 32), pan=(2.0, 0.0), zoom=1.0)
    return videoio.write_video(path, frames.frames[:n], 10)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("png output", "cannot hold a video"),
        ("one frame", "frame"),
        ("no such file", "no such"),
        ("mask video length", "mask video of 2 frames for a clip of 3"),
    ],
)
def test_bad_video_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, fragment):
    src = write_clip(tmp_path / "in.mp4")
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray((STYLE * 255).astype(np.uint8)).save(tmp_path / "style.png")
    args = [str(src), str(tmp_path / "style.png"), "-o", str(tmp_path / "out" / "v.mp4")]
    (tmp_path / "out").mkdir()
    if case == "png output":
        args[-1] = str(tmp_path / "out" / "v.png")
    elif case == "one frame":
        args[0] = str(write_clip(tmp_path / "one.gif", 1))
    elif case == "no such file":
        args[0] = str(tmp_path / "missing.mp4")
    else:
        args += ["--masks", str(write_clip(tmp_path / "mask.gif", 2))]
    code = cli.main(["video", *args, "--size", "32", "--iterations", "2", "--no-compile-cache",
                     "--content-layers", "conv2_1", "--style-layers", "conv1_1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert list((tmp_path / "out").iterdir()) == []


def test_the_video_command_writes_the_video_and_its_sidecar(tmp_path, capsys):
    src = write_clip(tmp_path / "in.mp4")
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray((STYLE * 255).astype(np.uint8)).save(tmp_path / "style.png")
    code = cli.main(["video", str(src), str(tmp_path / "style.png"), "-o",
                     str(tmp_path / "out.gif"), "--size", "32", "--iterations", "4", "--passes",
                     "2", "--content-layers", "conv2_1", "--style-layers", "conv1_1",
                     "--no-compile-cache", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    from jaxnst import videoio

    frames, _ = videoio.read_video(tmp_path / "out.gif")
    assert frames.shape == (3, 24, 32, 3)
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["inputs"]["frames"] == 3 and [p["pass"] for p in side["passes"]] == [1, 2]
    assert side["flow"]["method"] == "dis" and side["warping_error"] >= 0
    assert (tmp_path / ".out.gif.flow").is_dir() and not (tmp_path / "out.ckpt.npz").exists()
    assert flow.warp is not None  # the module the flows came from
