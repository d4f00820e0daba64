"""Checkpoints: a run saved and restored continues with exactly its arrays; what a resumed run
must repeat comes from the config's roles; a file that is not a checkpoint is one line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxnst import checkpoint
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.problem import make_problem
from jaxnst.scales import CoarseToFine
from jaxnst.stylize import StyleRun

CFG = StyleConfig(size=24, iterations=4, chunk=2, variants=2, content_layers=("conv2_1",),
                  style_layers=("conv1_1", "conv2_1"), loop="python")  # fmt: skip


@pytest.fixture(scope="module")
def problem(random_params):
    rng = np.random.default_rng(0)
    content, style = rng.random((24, 20, 3)), rng.random((24, 24, 3))
    return make_problem(content.astype(np.float32), style.astype(np.float32), CFG, random_params)


def test_a_restored_run_continues_bit_for_bit(problem, tmp_path):
    whole = StyleRun(problem, CFG)
    while not whole.done():
        whole.advance()
    half = StyleRun(problem, CFG)
    half.advance(3)
    scales = CoarseToFine(CFG)
    meta = checkpoint.run_meta(half, scales, CFG.to_dict(), snapshots=[])
    path = checkpoint.save_checkpoint(tmp_path / "c.ckpt.npz", half, meta)
    ckpt = checkpoint.load_checkpoint(path)
    assert ckpt.config == CFG and ckpt.meta["iteration"] == int(half.iterations().min())
    resumed = StyleRun(problem, CFG)
    checkpoint.restore(resumed, ckpt)
    np.testing.assert_array_equal(np.asarray(resumed.xs), np.asarray(half.xs))
    while not resumed.done():
        resumed.advance()
    np.testing.assert_array_equal(np.asarray(resumed.xs), np.asarray(whole.xs))
    assert [len(r) for r in resumed.rows] == [len(r) for r in whole.rows]


def test_resume_checks_follow_the_roles(problem, tmp_path):
    run = StyleRun(problem, CFG)
    meta = checkpoint.run_meta(run, CoarseToFine(CFG), CFG.to_dict())
    ckpt = checkpoint.load_checkpoint(checkpoint.save_checkpoint(tmp_path / "c.npz", run, meta))
    checkpoint.check_resumable(ckpt, CFG.replace(iterations=9, save_every=3, plot=False))
    for change in ({"style_weight": 5.0}, {"seed": 1}, {"pooling": "avg"}):
        with pytest.raises(ConfigError, match="--resume: .* was written with --"):
            checkpoint.check_resumable(ckpt, CFG.replace(**change))
    other = StyleRun(problem, CFG.replace(seed=3))
    with pytest.raises(ConfigError, match="seeds"):
        checkpoint.restore(other, ckpt)


def test_input_digests_see_the_masks(problem, random_params):
    digests = checkpoint.input_digests(problem)
    assert set(digests) == {"content", "styles"}
    mask = np.zeros((24, 20), np.float32)
    mask[:, :10] = 1
    rng = np.random.default_rng(0)
    masked = make_problem(rng.random((24, 20, 3)).astype(np.float32),
                          rng.random((24, 24, 3)).astype(np.float32), CFG, random_params,
                          masks=[mask])  # fmt: skip
    assert "masks" in checkpoint.input_digests(masked)


@pytest.mark.parametrize("content", [b"", b"not a zip"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "x.ckpt.npz"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a readable jaxnst checkpoint") as err:
        checkpoint.load_checkpoint(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no checkpoint at"):
        checkpoint.load_checkpoint(tmp_path / "none.npz")


@pytest.fixture(scope="module")
def saved(problem, tmp_path_factory):
    """A checkpoint of a run stopped after 3 step calls."""
    run = StyleRun(problem, CFG)
    run.advance(3)
    meta = checkpoint.run_meta(run, CoarseToFine(CFG), CFG.to_dict(), snapshots=[])
    return checkpoint.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "c.ckpt.npz", run, meta)


def _tampered(src, dst, change) -> None:
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    change(arrays, meta)
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(dst, **arrays)


def _nan_patch(a, meta):
    a["xs"] = a["xs"].copy()
    a["xs"][0, 2:6, 2:6] = np.nan


def _negative_iteration(a, meta):
    a["states/iteration"] = np.full_like(a["states/iteration"], -50)


def _pixels_out_of_range(a, meta):
    a["xs"] = a["xs"] * 3.0


def _history_past_the_state(a, meta):
    meta["rows"][0][-1]["iteration"] = 99


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("truncated", "not a readable jaxnst checkpoint"),
        ("zip-garbage", "not a readable jaxnst checkpoint"),
        (lambda a, m: m.update(iteration=-50), "damaged checkpoint: iteration -50 is not a count"),
        (lambda a, m: m.update(seeds=[2**40, 1]), "damaged checkpoint: seeds"),
        (
            lambda a, m: m["rows"][1].append({"iteration": 0, "evaluations": 0, "total": "NaN"}),
            "variant 1: history row at iteration 0 out of order",
        ),
        (lambda a, m: m["rows"][0][-1].update(total=float("inf")), "history value total = inf"),
        (_nan_patch, "xs holds NaN or Inf values"),
        (_negative_iteration, "states/iteration holds negative counts (-50)"),
        (_pixels_out_of_range, "pixels outside [0, 1]"),
        (_history_past_the_state, "variant 0: the history runs past iteration"),
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_line(problem, saved, tmp_path, damage, words):
    """Issue 13, defect 3: a truncated checkpoint was a BadZipFile without the file's name (exit
    1), and a tampered one was resumed: NaN pixels became a black patch, iteration -50 ran."""
    path = tmp_path / "c.ckpt.npz"
    data = saved.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "zip-garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(5000))
    else:
        _tampered(saved, path, damage)
    with pytest.raises(ConfigError) as err:
        checkpoint.restore(StyleRun(problem, CFG), checkpoint.load_checkpoint(path))
    message = str(err.value)
    assert str(path) in message and words in message and "\n" not in message


def test_an_intact_checkpoint_passes_the_checks(problem, saved):
    run = StyleRun(problem, CFG)
    checkpoint.restore(run, checkpoint.load_checkpoint(saved))
    assert run.iterations().min() >= 1
