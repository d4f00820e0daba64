"""Checkpoints: a run saved and restored continues with exactly its arrays; what a resumed run
must repeat comes from the config's roles; a file that is not a checkpoint is one line."""

from __future__ import annotations

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
