"""jaxnst.clips: the synthetic clips' frames agree with their own true flows and occlusion masks."""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxnst import clips
from jaxnst.errors import ConfigError
from jaxnst.flow import warp


@pytest.fixture(scope="module")
def pan():
    pytest.importorskip("skimage")
    return clips.pan_zoom_clip()


@pytest.fixture(scope="module")
def disc():
    pytest.importorskip("skimage")
    return clips.moving_object_clip()


def check_shapes(clip: clips.Clip, n: int, h: int, w: int) -> None:
    assert clip.frames.shape == (n, h, w, 3) and clip.frames.dtype == np.float32
    assert clip.frames.min() >= 0 and clip.frames.max() <= 1
    for f in (clip.forward, clip.backward):
        assert f.shape == (n - 1, h, w, 2) and f.dtype == np.float32
    for v in (clip.forward_visible, clip.backward_visible):
        assert v.shape == (n - 1, h, w) and v.dtype == bool


def warp_error(clip: clips.Clip, k: int, direction: str) -> tuple[float, float]:
    """Mean |frame - neighbour warped by the true flow| on visible and on hidden pixels."""
    if direction == "forward":
        target, source, f, v = clip.frames[k], clip.frames[k + 1], clip.forward[k], None
        v = clip.forward_visible[k]
    else:
        target, source, f = clip.frames[k + 1], clip.frames[k], clip.backward[k]
        v = clip.backward_visible[k]
    err = np.abs(np.asarray(warp(jnp.asarray(source), jnp.asarray(f))) - target).mean(-1)
    return float(err[v].mean()), float(err[~v].mean()) if (~v).any() else 0.0


def test_pan_zoom_clip_is_deterministic_and_consistent(pan):
    check_shapes(pan, 6, 48, 64)
    assert np.array_equal(clips.pan_zoom_clip().frames, pan.frames)
    for k in range(5):
        for direction in ("forward", "backward"):
            visible, hidden = warp_error(pan, k, direction)
            assert visible < 0.03, (k, direction, visible)  # bilinear resampling only
    # The camera pans by (1.5, 0.75) source pixels a frame and zooms by 1.02: pixel p moves by
    # (p - c)(zoom - 1) - pan zoom^(t+1), c the centre (31.5, 23.5).
    pan_px, zoom, p = np.asarray([1.5, 0.75]), 1.02, np.asarray([32, 24])
    want = (p - [31.5, 23.5]) * (zoom - 1) - pan_px * zoom ** np.arange(1, 6)[:, None]
    np.testing.assert_allclose(pan.forward[:, 24, 32], want, rtol=1e-5)
    # An affine flow is reproduced exactly by bilinear sampling: forward then backward is zero.
    for k in range(5):
        back = np.asarray(warp(jnp.asarray(pan.backward[k]), jnp.asarray(pan.forward[k])))
        round_trip = np.linalg.norm(pan.forward[k] + back, axis=-1)
        assert round_trip[pan.forward_visible[k]].max() < 1e-4
    # What leaves the view: the edges the camera moves away from, a few pixels wide.
    assert 0.85 < pan.forward_visible.mean() < 0.97
    assert pan.forward_visible[:, 24, 32].all() and not pan.forward_visible[:, :, 0].any()


def test_moving_object_clip_occlusions_follow_the_disc(disc):
    check_shapes(disc, 6, 48, 64)
    speed = np.asarray([2.5, 0.75], np.float32)
    for k in range(5):
        moving = np.linalg.norm(disc.forward[k], axis=-1) > 0
        np.testing.assert_array_equal(
            disc.forward[k][moving], np.broadcast_to(speed, (moving.sum(), 2))
        )
        np.testing.assert_array_equal(disc.forward[k][~moving], 0)
        next_disc = np.linalg.norm(disc.backward[k], axis=-1) > 0
        # Occluded: background the disc covers next frame; disoccluded: what it leaves.
        np.testing.assert_array_equal(~disc.forward_visible[k], ~moving & next_disc)
        np.testing.assert_array_equal(~disc.backward_visible[k], ~next_disc & moving)
        assert 10 < (~disc.forward_visible[k]).sum() < 0.2 * moving.sum()
        visible, hidden = warp_error(disc, k, "forward")
        assert visible < 0.01 and hidden > 0.1  # the hidden pixels really are different
        visible, hidden = warp_error(disc, k, "backward")
        assert visible < 0.01 and hidden > 0.1


def test_clips_take_arrays_and_need_no_scikit_image_then(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "skimage", None)
    photo = rng.uniform(size=(60, 80, 3)).astype(np.float32)
    clip = clips.pan_zoom_clip(photo, n_frames=3, size=(16, 24), pan=(1.0, 0.0), zoom=1.0)
    check_shapes(clip, 3, 16, 24)
    np.testing.assert_allclose(clip.forward[..., 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(clip.frames[1][:, :-1], clip.frames[0][:, 1:], atol=1e-6)
    clip = clips.moving_object_clip(photo, photo[::-1], n_frames=3, size=(16, 16), radius=4)
    check_shapes(clip, 3, 16, 16)
    with pytest.raises(ConfigError, match=r"pip install 'jaxnst\[demo\]', or pass an image"):
        clips.pan_zoom_clip()


def test_bad_clip_parameters_are_one_line_errors(rng):
    photo = rng.uniform(size=(40, 40, 3)).astype(np.float32)
    with pytest.raises(ConfigError, match="leaves the photograph at frame"):
        clips.pan_zoom_clip(photo, n_frames=30, size=(16, 16), pan=(3.0, 0.0))
    with pytest.raises(ConfigError, match="at least 2 frames"):
        clips.pan_zoom_clip(photo, n_frames=1)
    with pytest.raises(ConfigError, match="too small"):
        clips.moving_object_clip(photo, photo, size=(4, 16))
    with pytest.raises(ConfigError, match="does not fit"):
        clips.moving_object_clip(photo, photo, size=(16, 16), radius=9)
