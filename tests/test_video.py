"""Video (Ruder et al. 2016): neighbours and their reliability, temporal targets, the three modes,
frames as the example axis (chunks and devices give the same frames), the command and its
bad input, Ctrl-C then --resume. Tiny clips (24 x 32), random-init VGG19 up to conv2_1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("cv2", reason="the video extra (opencv-python-headless) is not installed")

from jaxnst import checkpoint, clips, video  # noqa: E402
from jaxnst.config import StyleConfig  # noqa: E402
from jaxnst.stylize import StyleRun  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFG = StyleConfig(size=32, iterations=6, content_layers=("conv2_1",), passes=3, temporal_from=2,
                  style_layers=("conv1_1", "conv2_1"), temporal_weight=1e5, chunk=3)  # fmt: skip
STYLE = np.random.default_rng(5).random((32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def clip():
    return clips.pan_zoom_clip(n_frames=4, size=(24, 32), pan=(2.0, 0.0), zoom=1.0)


@pytest.fixture(scope="module")
def runs(clip, random_params, tmp_path_factory):
    cache = tmp_path_factory.mktemp("flow")
    out = {}
    for mode in ("independent", "sequential", "multipass"):
        out[mode] = video.stylize_video(clip.frames, STYLE, CFG, params=random_params,
                                        video_mode=mode, cache_dir=cache)  # fmt: skip
    return out


def test_neighbours_pair_each_frame_with_the_ones_before_and_after(clip):
    nb = video.neighbours(clip.frames, (1, 2))
    assert nb.index.shape == (4, 4) and nb.weights.shape == (4, 4, 24, 32)
    np.testing.assert_array_equal(nb.index[:, 0], [0, 0, 1, 2])  # i - 1 (itself at the start)
    np.testing.assert_array_equal(nb.index[:, 2], [1, 2, 3, 3])  # i + 1 (itself at the end)
    assert float(jnp.max(nb.weights[0, 0])) == 0 and float(jnp.max(nb.weights[3, 2])) == 0
    assert float(jnp.mean(nb.weights[1, 0])) > 0.8  # a pan: most pixels reliably seen before
    # long term: frame i-2 only counts where i-1 does not (nearest reliable frame first)
    overlap = nb.weights[2:, 0] * nb.weights[2:, 1]
    assert float(jnp.max(overlap)) == 0


def test_temporal_targets_pull_the_neighbours_onto_each_frame(clip):
    """Warping the *input* frames by the estimated flows reproduces each frame where reliable."""
    nb = video.neighbours(clip.frames, (1,))
    t = video.temporal_targets(jnp.asarray(clip.frames), nb, nb.weights)
    assert t["warped"].shape == (4, 2, 24, 32, 3)
    c = np.asarray(t["weights"])[..., None]
    err = np.sum(c * (np.asarray(t["warped"]) - clip.frames[:, None]) ** 2) / np.sum(c) / 3
    unweighted = np.mean((clip.frames[1:] - clip.frames[:-1]) ** 2)
    assert err < 0.1 * unweighted, (err, unweighted)


def test_blend_averages_a_frame_with_its_reliable_neighbours(clip):
    nb = video.neighbours(clip.frames, (1,))
    xs = jnp.asarray(clip.frames)
    np.testing.assert_array_equal(video.blended(xs, nb, 0.0), xs)
    mixed = np.asarray(video.blended(jnp.zeros_like(xs).at[1].set(1.0), nb, 0.5))
    # frame 2 (zeros) between frame 1 (ones) and frame 3 (zeros): a third where both are seen
    inside = np.asarray(nb.weights[2, 0] * nb.weights[2, 1]) > 0
    np.testing.assert_allclose(mixed[2][inside], 1 / 3, atol=1e-6)


def test_multipass_and_sequential_flicker_less_than_independent_frames(runs, clip):
    errors = {m: video.warping_error(r.frames / 255.0, clip.frames) for m, r in runs.items()}
    assert errors["multipass"] < errors["independent"] / 3, errors
    assert errors["sequential"] < errors["independent"] / 3, errors
    assert [p["pass"] for p in runs["multipass"].passes] == [1, 2, 3]
    assert "temporal" in runs["multipass"].passes[-1]["loss"]
    assert runs["multipass"].passes[0]["loss"]["temporal"] == 0  # before temporal_from
    assert runs["multipass"].passes[-1]["loss"]["temporal"] > 0


def test_a_pass_is_the_same_in_chunks_of_frames(clip, random_params, runs):
    """Each frame of a pass sees only the last pass: splitting the frames changes nothing but
    the float rounding of a batch of 3 against one of 4 (at most 1/255 here)."""
    chunked = video.stylize_video(clip.frames, STYLE, CFG, params=random_params, video_batch=3)
    diff = np.abs(chunked.frames.astype(int) - runs["multipass"].frames)
    assert diff.max() <= 1 and diff.mean() < 1e-2


def test_resume_after_an_interruption_gives_the_same_frames(clip, random_params, runs, tmp_path):
    class StopInPassTwo(video.VideoHooks):
        def __init__(self):
            self.pass_index, self.count = 0, 0

        def piece_started(self, state, frames, passes):
            self.pass_index = state.pass_index

        def calls(self, run):
            return 1

        def advanced(self, run, scales):
            self.count += self.pass_index == 2

        def stop(self):
            return self.count >= 2  # pass 2, part-way

    stopped = video.stylize_video(clip.frames, STYLE, CFG, params=random_params,
                                  hooks=StopInPassTwo())  # fmt: skip
    assert stopped.stopped == "interrupted" and stopped.state.pass_index == 2
    assert isinstance(stopped.run, StyleRun) and not stopped.run.done()

    meta = {"config": CFG.to_dict(), "seeds": list(stopped.run.seeds), "inputs": {},
            "rows": checkpoint.rows_for_json(stopped.run.rows)}  # fmt: skip
    path = checkpoint.save_checkpoint(tmp_path / "v.ckpt.npz", stopped.run, meta)

    class Restore(video.VideoHooks):
        pending = checkpoint.load_checkpoint(path)

        def started(self, run, scales):  # the interrupted batch goes on from its own state
            if self.pending is not None:
                checkpoint.restore(run, self.pending)
                self.pending = None

    resumed = video.stylize_video(clip.frames, STYLE, CFG, params=random_params, hooks=Restore(),
                                  resume=stopped.state)  # fmt: skip
    np.testing.assert_array_equal(resumed.frames, runs["multipass"].frames)


SHARDED = textwrap.dedent(
    """
    import json
    import numpy as np, jax
    from jaxnst import clips, video
    from jaxnst.config import StyleConfig
    from jaxnst.vgg import init_params
    clip = clips.pan_zoom_clip(n_frames=5, size=(24, 32), pan=(2.0, 0.0), zoom=1.0)
    style = np.random.default_rng(5).random((32, 32, 3)).astype(np.float32)
    cfg = StyleConfig(size=32, iterations=4, content_layers=("conv2_1",), passes=2,
                      temporal_from=2, style_layers=("conv1_1", "conv2_1"), temporal_weight=1e5)
    p = init_params(0)
    many = video.stylize_video(clip.frames, style, cfg, params=p)
    one = video.stylize_video(clip.frames, style, cfg, params=p, devices=1)
    print(json.dumps({"devices": len(jax.devices()),
                      "pixels": int(np.abs(many.frames.astype(int) - one.frames).max())}))
    """
)


def test_a_multipass_over_four_devices_gives_the_frames_of_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=str(ROOT))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["pixels"] <= 1
