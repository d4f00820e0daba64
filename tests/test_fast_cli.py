"""``jaxnst train`` and ``jaxnst apply``: what they write, --resume, and bad input in one line.

In-process calls of ``jaxnst.cli.main`` with a tiny training (24 px crops, a 4-channel network,
VGG19 up to conv2_1, 3 steps), so the step compiles once for the whole module.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

from jaxnst import cli, fast_cli
from jaxnst.image import read_image
from jaxnst.network import load_network, save_network
from jaxnst.outputs import file_sha256, read_history_csv

TINY = ["--crop", "24", "--batch-size", "2", "--steps", "3", "--width", "4",
        "--content-layers", "conv2_1", "--style-layers", "conv1_1", "conv2_1",
        "--learning-rate", "0.01", "--style-weight", "100", "--objective", "paper",
        "--prefetch", "1", "--workers", "1", "--no-compile-cache"]  # fmt: skip


def smooth(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(2, h // 5), max(2, w // 5), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "photos").mkdir()
    for i, (h, w) in enumerate([(30, 40), (26, 26), (40, 28)]):
        Image.fromarray(smooth(h, w, i)).save(root / "photos" / f"p{i}.png")
    Image.fromarray(smooth(32, 32, 9)).save(root / "style.png")
    Image.fromarray(smooth(20, 36, 5)).save(root / "test.jpg")
    return root


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    """One straight training: its output folder, exit status and printed lines."""
    out = tmp_path_factory.mktemp("trained")
    argv = ["train", str(inputs / "style.png"), "--data", str(inputs / "photos"), "-o",
            str(out / "net"), "--sample-every", "2", "--save-every", "2", "--print-every", "1",
            "--samples", str(inputs / "test.jpg"), *TINY]  # fmt: skip
    return out, cli.main(argv)


def test_train_writes_the_model_sidecar_history_plot_and_samples(inputs, trained):
    out, code = trained
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "net.json",
        "net.npz",
        "net_0002.png",
        "net_0003.png",
        "net_history.csv",
        "net_losses.png",
    ]  # fmt: skip  (the checkpoint is gone once the training is complete)
    net = load_network(out / "net.npz")
    assert net.config.crop == 24 and net.config.width == 4 and net.meta["steps"] == 3
    assert net.meta["styles"][0]["sha256"] == file_sha256(inputs / "style.png")
    assert net.meta["data"]["photos"] == 3
    sidecar = json.loads((out / "net.json").read_text())
    assert sidecar["model_sha256"] == file_sha256(out / "net.npz")
    assert sidecar["steps"] == 3 and sidecar["images_per_second"] > 0
    assert sidecar["config"]["style_weight"] == 100.0 and "final_loss" in sidecar
    history = read_history_csv(out / "net_history.csv")[0]
    assert history["iteration"].tolist() == [1, 2, 3] and np.all(history["total"] > 0)
    sample = read_image(out / "net_0003.png")
    assert sample.shape == (27, 48, 3)  # the sample photo at twice the crop size


def test_progress_lines_show_images_per_second(inputs, tmp_path, capsys):
    argv = ["train", str(inputs / "style.png"), "--data", str(inputs / "photos"), "-o",
            str(tmp_path / "m.npz"), "--print-every", "1", "--sample-every", "0", "--samples",
            str(inputs / "test.jpg"), *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "3 photos in" in err and "compiled the training step" in err
    assert sum("images/s" in line and line.startswith("step ") for line in err.splitlines()) == 3


def test_ctrl_c_then_resume_gives_the_uninterrupted_network(inputs, trained, tmp_path, monkeypatch):
    argv = ["train", str(inputs / "style.png"), "--data", str(inputs / "photos"), "-o",
            str(tmp_path / "net"), "--save-every", "0", "--sample-every", "0", *TINY]  # fmt: skip
    looks, advanced = [], fast_cli.TrainConsole.advanced  # Ctrl-C after the first look
    monkeypatch.setattr(fast_cli.TrainConsole, "advanced",
                        lambda self, t: (looks.append(t.step), advanced(self, t))[1])  # fmt: skip
    monkeypatch.setattr(fast_cli.TrainConsole, "stop", lambda self: bool(looks))
    monkeypatch.setattr(fast_cli.TrainConsole, "steps", lambda self, trainer: 1)
    assert cli.main(argv) == 130
    assert (tmp_path / "net.ckpt.npz").exists() and not (tmp_path / "net.npz").exists()
    monkeypatch.undo()
    assert cli.main([*argv, "--resume"]) == 0
    assert not (tmp_path / "net.ckpt.npz").exists()
    resumed, straight = load_network(tmp_path / "net.npz"), load_network(trained[0] / "net.npz")
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params), strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit
    sidecar = json.loads((tmp_path / "net.json").read_text())
    assert sidecar["resumed_from"] == 1
    argv[argv.index("--style-weight") + 1] = "50"
    assert cli.main([*argv, "--resume"]) == 2  # nothing to resume from any more


def test_apply_writes_images_with_sidecars_deterministically(inputs, trained, tmp_path):
    model = trained[0] / "net.npz"
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(smooth(30 + k, 20, k)).save(folder / f"f{k}.png")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["apply", str(model), str(inputs / "test.jpg"), str(folder), "-o",
                     str(out), "-q"]) == 0  # fmt: skip
    names = sorted(p.name for p in out.iterdir())
    assert names == ["f0_net.json", "f0_net.png", "f1_net.json", "f1_net.png", "test_net.json",
                     "test_net.png"]  # fmt: skip
    assert read_image(out / "f1_net.png").shape == (31, 20, 3)
    sidecar = json.loads((out / "test_net.json").read_text())
    assert sidecar["model"]["sha256"] == file_sha256(model)
    assert sidecar["input"]["sha256"] == file_sha256(inputs / "test.jpg")
    assert cli.main(["apply", str(model), str(inputs / "test.jpg"), "-o",
                     str(tmp_path / "again.png"), "--size", "36", "-q"]) == 0  # fmt: skip
    assert (tmp_path / "again.png").read_bytes() == (out / "test_net.png").read_bytes()
    # an animated GIF is a video: every frame stylised, the frame rate kept
    frames = [Image.fromarray(smooth(20, 36, 10 + k)) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert cli.main(["apply", str(model), str(tmp_path / "anim.gif"), "-o", str(out), "-q"]) == 0
    with Image.open(out / "anim_net.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (36, 20) and gif.info["duration"] == 50
    assert json.loads((out / "anim_net.json").read_text())["frames"] == 3


def bad(tmp_path, inputs, trained):
    """Cases of bad input: argv (after the command) and a fragment of the one-line error."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"not an image")
    (tmp_path / "model.npz").write_text("not a model")
    net = load_network(trained[0] / "net.npz")
    newer = save_network(tmp_path / "newer.npz", net)
    data = dict(np.load(newer, allow_pickle=False))
    meta = json.loads(str(data.pop("meta")))
    np.savez(newer, meta=np.asarray(json.dumps({**meta, "format_version": 99})), **data)
    style, photos = str(inputs / "style.png"), str(inputs / "photos")
    return [
        (["train", style, "--data", str(tmp_path / "empty"), *TINY], "empty folder"),
        (["train", style, "--data", str(tmp_path / "junk"), *TINY], "none of its 1 files"),
        (["train", style, "--data", photos, *TINY, "--crop", "64"], "no photo has a short side"),
        (["train", str(tmp_path / "none.png"), "--data", photos, *TINY], "no such file"),
        (["train", style, *TINY], "needs STYLE image(s) and --data"),
        (["train", style, "--data", photos, "--color-mode", "histogram"], "histogram"),
        (["train", "--demo", style], "--demo brings its own"),
        (["apply", str(tmp_path / "model.npz"), str(inputs / "test.jpg")], "not an .npz archive"),
        (["apply", str(newer), str(inputs / "test.jpg")], "network format 99; this jaxnst"),
        (["apply", str(trained[0] / "net.npz"), str(tmp_path / "none.png")], "no such file"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(inputs, trained, tmp_path, capsys,
                                                         monkeypatch):  # fmt: skip
    cases = bad(tmp_path, inputs, trained)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default outputs would land here
    for argv, fragment in cases:
        code = cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert err.startswith("jaxnst: error: ") and "\n" not in err, err
        assert fragment in err, (fragment, err)
        assert list(work.iterdir()) == [], argv


def test_demo_without_scikit_image_names_the_extra(capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)
    assert cli.main(["train", "--demo", "-o", str(tmp_path / "d.npz")]) == 2
    assert "pip install 'jaxnst[train]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
