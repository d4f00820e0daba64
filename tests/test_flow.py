"""jaxnst.flow: the warp, reliability and temporal terms against hand computations and an
independent NumPy port of the reference consistency checker; gradients against finite differences
in float64; OpenCV's flows against the synthetic clips' true flow; the flow cache."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxnst import clips, flow
from jaxnst.errors import ConfigError, ImageError
from jaxnst.flow import (
    blend,
    clip_flows,
    clip_reliability,
    in_bounds,
    long_term_weights,
    optical_flow,
    reliability,
    warp,
)


@pytest.fixture
def photos():
    """The clips' default photographs come from scikit-image (in the test extra)."""
    pytest.importorskip("skimage")


def const_flow(h: int, w: int, dx: float, dy: float, dtype=np.float32) -> jnp.ndarray:
    return jnp.broadcast_to(jnp.asarray([dx, dy], dtype), (h, w, 2))


# ------------------------------------------------------------------ warp


def test_zero_flow_is_the_identity(rng):
    image = jnp.asarray(rng.uniform(size=(5, 7, 3)), jnp.float32)
    assert np.array_equal(warp(image, const_flow(5, 7, 0, 0)), image)
    mask = jnp.asarray(rng.uniform(size=(5, 7)), jnp.float32)  # (h, w) images too
    assert np.array_equal(warp(mask, const_flow(5, 7, 0, 0)), mask)


@pytest.mark.parametrize("dx, dy", [(2, 0), (0, -1), (-3, 2), (1, 1)])
def test_integer_shifts_copy_pixels_and_replicate_edges(rng, dx, dy):
    image = rng.uniform(size=(6, 8, 3)).astype(np.float32)
    out = np.asarray(warp(jnp.asarray(image), const_flow(6, 8, dx, dy)))
    rows = np.clip(np.arange(6) + dy, 0, 5)[:, None]
    cols = np.clip(np.arange(8) + dx, 0, 7)[None, :]
    assert np.array_equal(out, image[rows, cols])


def test_subpixel_shift_matches_a_hand_computation():
    image = jnp.asarray([[0.0, 4.0, 8.0], [2.0, 6.0, 10.0], [1.0, 3.0, 5.0]])
    out = warp(image, const_flow(3, 3, 0.25, 0.5))
    # p = (0, 0) samples x = 0.25, y = 0.5: rows 0 and 1 at x = .25 are 1 and 3; halfway: 2.
    assert out[0, 0] == pytest.approx(2.0)
    # p = (1, 1) samples x = 1.25, y = 1.5: rows 1 and 2 at x = 1.25 are 7 and 3.5; halfway: 5.25.
    assert out[1, 1] == pytest.approx(5.25)
    # p = (2, 2) samples x = 2.25, y = 2.5: clamped to the corner pixel.
    assert out[2, 2] == pytest.approx(5.0)
    # p = (0, 2) samples x = 2.25 -> 2 (clamped), y = .5: between 8 and 10.
    assert out[0, 2] == pytest.approx(9.0)


def test_fill_marks_samples_outside_the_image(rng):
    image = jnp.asarray(rng.uniform(size=(4, 5, 3)), jnp.float32)
    f = const_flow(4, 5, 1.5, 0)
    inside = np.asarray(in_bounds(f))
    assert inside[:, :3].all() and not inside[:, 3:].any()  # x = 3 + 1.5 > 4
    grey = jnp.asarray([0.5, 0.25, 0.125])
    out = np.asarray(warp(image, f, fill=grey))
    assert np.array_equal(out[:, 3:], np.broadcast_to(grey, (4, 2, 3)))
    assert np.array_equal(out[:, :3], np.asarray(warp(image, f))[:, :3])


def test_warp_rejects_a_flow_of_another_size():
    with pytest.raises(ValueError, match="does not fit"):
        warp(jnp.zeros((4, 5, 3)), const_flow(5, 4, 0, 0))


def test_warp_under_jit_and_vmap_equals_frame_by_frame(rng):
    images = jnp.asarray(rng.uniform(size=(3, 6, 5, 3)), jnp.float32)
    flows = jnp.asarray(rng.normal(scale=2.0, size=(3, 6, 5, 2)), jnp.float32)
    batched = jax.jit(jax.vmap(warp))(images, flows)
    for k in range(3):
        np.testing.assert_allclose(batched[k], warp(images[k], flows[k]), atol=1e-6)


def subpixel_flow(rng, h, w, dtype=jnp.float64):
    """Random flows at least 0.2 px from integer sample positions (the bilinear kinks)."""
    whole = rng.integers(-2, 3, size=(h, w, 2))
    return jnp.asarray(whole + rng.uniform(0.2, 0.8, size=(h, w, 2)), dtype)


def test_warp_gradients_match_finite_differences(x64, rng):
    image = jnp.asarray(rng.uniform(size=(6, 7, 3)), jnp.float64)
    f = subpixel_flow(rng, 6, 7)
    both = ["fwd", "rev"]
    check_grads(lambda im: warp(im, f), (image,), order=2, modes=both)  # linear in the image
    check_grads(lambda g: warp(image, g), (f,), order=1, modes=both, eps=1e-6)
    loss = lambda im, g: jnp.sum(jnp.sin(3 * warp(im, g)))  # noqa: E731
    check_grads(jax.jit(loss), (image, f), order=1, modes=["rev"], eps=1e-6)


def test_the_checker_rejects_a_wrong_warp_gradient(x64, rng):
    """A warp whose flow gradient swaps the dx and dy components fails check_grads."""

    @jax.custom_vjp
    def wrong_warp(image, g):
        return warp(image, g)

    def fwd(image, g):
        out, vjp = jax.vjp(warp, image, g)
        return out, vjp

    def bwd(vjp, cotangent):
        d_image, d_flow = vjp(cotangent)
        return d_image, d_flow[..., ::-1]

    wrong_warp.defvjp(fwd, bwd)
    image = jnp.asarray(rng.uniform(size=(6, 7, 3)), jnp.float64)
    f = subpixel_flow(rng, 6, 7)
    loss = lambda g: jnp.sum(jnp.sin(3 * wrong_warp(image, g)))  # noqa: E731
    check_grads(lambda g: jnp.sum(jnp.sin(3 * warp(image, g))), (f,), 1, modes=["rev"], eps=1e-6)
    with pytest.raises(AssertionError):
        check_grads(loss, (f,), order=1, modes=["rev"], eps=1e-6)


# ------------------------------------------------------------------ temporal terms


def test_long_term_weights_follow_the_nearest_reliable_frame():
    c = jnp.asarray([[1, 0, 1, 0, 0], [1, 1, 0, 0, 1], [1, 1, 1, 1, 0]], jnp.float32)[:, None, :]
    want = np.asarray([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 1, 0]])[:, None, :]
    assert np.array_equal(long_term_weights(c), want)


def test_long_term_weights_equal_the_papers_formula_on_binary_masks(rng):
    c = (rng.uniform(size=(4, 6, 7)) > 0.5).astype(np.float32)
    paper = np.stack([np.maximum(c[j] - c[:j].sum(0), 0) for j in range(4)])
    assert np.array_equal(long_term_weights(jnp.asarray(c)), paper)
    soft = rng.uniform(size=(4, 6, 7)).astype(np.float32)
    total = np.asarray(long_term_weights(jnp.asarray(soft))).sum(0)
    np.testing.assert_allclose(total, soft.max(0), rtol=1e-6)  # never more than one frame's worth


def test_blend_averages_where_reliable_and_keeps_the_frame_elsewhere(rng):
    x, w = rng.uniform(size=(2, 4, 5, 3))
    c = (rng.uniform(size=(4, 5)) > 0.5).astype(np.float64)
    got = np.asarray(blend(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c)))
    np.testing.assert_allclose(got, np.where(c[..., None] > 0, (x + w) / 2, x), rtol=1e-6)
    b = 1.0  # the reference code's blendWeight, its normalised form: same for 0/1 weights
    reference = (x + b * c[..., None] * w) / (1 + b * c[..., None])
    np.testing.assert_allclose(got, reference, rtol=1e-6)


# ------------------------------------------------------------------ reliability


def reference_checker(flow1: np.ndarray, flow2: np.ndarray) -> np.ndarray:
    """Pixel loop after the reference consistencyChecker.cpp (in-bounds test as jaxnst's)."""
    h, w = flow1.shape[:2]
    pad = np.pad(flow1, ((1, 1), (1, 1), (0, 0)), mode="edge")
    dx = (pad[1:-1, 2:] - pad[1:-1, :-2]) / 2
    dy = (pad[2:, 1:-1] - pad[:-2, 1:-1]) / 2
    edge = (dx**2 + dy**2).sum(-1)
    out = np.ones((h, w))
    for y in range(h):
        for x in range(w):
            u2, v2 = flow1[y, x]
            bx, by = x + u2, y + v2
            if not (0 <= bx <= w - 1 and 0 <= by <= h - 1):
                out[y, x] = 0
                continue
            x1, y1 = min(int(np.floor(bx)), w - 2), min(int(np.floor(by)), h - 2)
            ax, ay = bx - x1, by - y1
            top = (1 - ax) * flow2[y1, x1] + ax * flow2[y1, x1 + 1]
            bottom = (1 - ax) * flow2[y1 + 1, x1] + ax * flow2[y1 + 1, x1 + 1]
            u, v = (1 - ay) * top + ay * bottom
            round_trip = (bx + u - x) ** 2 + (by + v - y) ** 2
            disoccluded = round_trip > 0.01 * (u2**2 + v2**2 + u**2 + v**2) + 0.5
            boundary = edge[y, x] > 0.01 * (u2**2 + v2**2) + 0.002
            out[y, x] = 0 if disoccluded or boundary else 1
    return out


def smooth_random_flow(rng, h, w, scale):
    coarse = rng.normal(scale=scale, size=(3, 4, 2))
    ys, xs = np.linspace(0, 2, h), np.linspace(0, 3, w)
    out = np.empty((h, w, 2))
    for k in range(2):  # bilinear upsampling of a coarse random field: smooth with some edges
        rows = np.stack([np.interp(xs, np.arange(4), coarse[i, :, k]) for i in range(3)])
        out[..., k] = np.stack([np.interp(ys, np.arange(3), rows[:, j]) for j in range(w)], 1)
    return out


def test_reliability_matches_the_reference_checker(x64, rng):
    for scale in (0.1, 0.4, 2.0):
        f1 = smooth_random_flow(rng, 20, 24, scale) + [0.0, 1.5]  # moving down: rows leave
        outliers = rng.normal(scale=2.0, size=f1.shape) * (rng.uniform(size=f1.shape) > 0.8)
        f2 = -f1 + outliers  # roughly consistent, a fifth of it not
        got = np.asarray(reliability(jnp.asarray(f1), jnp.asarray(f2)))
        want = reference_checker(f1, f2)
        assert np.array_equal(got, want), (scale, np.abs(got - want).sum())
        assert 0 < want.mean() < 1, (scale, want.mean())  # both verdicts occur


def test_reliability_of_the_true_pan_flow_is_its_visibility(photos):
    clip = clips.pan_zoom_clip()
    c_fwd, c_bwd = clip_reliability(flow.ClipFlows(clip.forward, clip.backward, 1))
    assert np.array_equal(np.asarray(c_fwd) > 0, clip.forward_visible)
    assert np.array_equal(np.asarray(c_bwd) > 0, clip.backward_visible)
    one = reliability(jnp.asarray(clip.backward[2]), jnp.asarray(clip.forward[2]))
    assert np.array_equal(one, c_bwd[2])
    assert np.array_equal(
        reliability(const_flow(5, 6, 0, 0), const_flow(5, 6, 0, 0)), np.ones((5, 6))
    )


def test_reliability_of_the_moving_disc_drops_disocclusions_and_its_rim(photos):
    clip = clips.moving_object_clip()
    _, c_bwd = clip_reliability(flow.ClipFlows(clip.forward, clip.backward, 1))
    c = np.asarray(c_bwd)
    assert not c[~clip.backward_visible].any()  # every disoccluded pixel is caught
    moving = np.linalg.norm(clip.backward, axis=-1) > 0
    rim = moving & ~np.stack([np.roll(moving, s, a) for s in (1, -1) for a in (1, 2)]).all(0)
    assert not c[rim].any()  # the motion boundary
    assert c[clip.backward_visible & ~rim].mean() > 0.95  # the rest is kept


def test_smoothed_reliability_is_soft_and_spreads_disocclusions(photos):
    clip = clips.moving_object_clip()
    f, b = jnp.asarray(clip.backward[0]), jnp.asarray(clip.forward[0])
    hard = np.asarray(reliability(f, b))
    soft = np.asarray(reliability(f, b, smooth_sigma=0.8))
    assert soft.min() >= 0 and soft.max() <= 1 and np.mean((soft > 0) & (soft < 1)) > 0
    assert np.all(soft[hard == 0] < 1) and (soft < 1).sum() > (hard == 0).sum()  # spread out
    near = hard == 0
    for _ in range(2):  # the blur's radius, ceil(2 * 0.8)
        near = near | np.roll(near, 1, 0) | np.roll(near, -1, 0)
        near = near | np.roll(near, 1, 1) | np.roll(near, -1, 1)
    assert np.all(soft[~near] == pytest.approx(1.0))  # far from any zero nothing changes
    still = reliability(const_flow(6, 6, 0, 0), const_flow(6, 6, 0, 0), smooth_sigma=0.8)
    np.testing.assert_allclose(still, 1, rtol=1e-6)


# ------------------------------------------------------------------ OpenCV flows and the cache


def endpoint_error(est, true, visible):
    return float(np.linalg.norm(est - true, axis=-1)[visible].mean())


def test_flow_convention_on_a_shifted_frame(photos):
    pytest.importorskip("cv2")
    a = clips.pan_zoom_clip(n_frames=2, size=(64, 64)).frames[0]
    b = np.roll(a, 2, axis=1)  # b(p + (2, 0)) = a(p)
    for method in ("dis", "farneback"):
        f = optical_flow(a, b, method=method)
        assert f.shape == (64, 64, 2) and f.dtype == np.float32
        np.testing.assert_allclose(np.median(f[8:-8, 8:-8], axis=(0, 1)), [2, 0], atol=0.1)


@pytest.mark.parametrize("method, tol", [("dis", 0.5), ("farneback", 0.5)])
def test_optical_flow_recovers_the_true_pan(photos, method, tol):
    pytest.importorskip("cv2")
    clip = clips.pan_zoom_clip(n_frames=3, size=(96, 128))
    for k in range(2):
        est = optical_flow(clip.frames[k], clip.frames[k + 1], method=method)
        assert endpoint_error(est, clip.forward[k], clip.forward_visible[k]) < tol
        warped = np.asarray(warp(jnp.asarray(clip.frames[k + 1]), jnp.asarray(est)))
        v = clip.forward_visible[k]
        before = np.abs(clip.frames[k + 1] - clip.frames[k])[v].mean()
        assert np.abs(warped - clip.frames[k])[v].mean() < 0.5 * before


def test_flow_options_are_validated():
    assert flow.flow_options("dis")["preset"] == "medium"
    with pytest.raises(ConfigError, match="unknown flow method 'raft'"):
        flow.flow_options("raft")
    with pytest.raises(ConfigError, match="no option 'levels'"):
        flow.flow_options("dis", levels=3)
    with pytest.raises(ConfigError, match="unknown DIS preset"):
        flow.flow_options("dis", preset="slow")


def test_missing_opencv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    frame = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ConfigError, match=r"pip install 'jaxnst\[video\]'"):
        optical_flow(frame, frame)


def test_frames_of_different_sizes_are_refused():
    with pytest.raises(ImageError, match="differ in size"):
        optical_flow(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


def test_clip_flows_pairs_and_steps(photos):
    pytest.importorskip("cv2")
    frames = clips.pan_zoom_clip(n_frames=5, size=(32, 40)).frames
    one = clip_flows(frames)
    assert one.forward.shape == one.backward.shape == (4, 32, 40, 2) and one.step == 1
    np.testing.assert_array_equal(one.forward[2], optical_flow(frames[2], frames[3]))
    np.testing.assert_array_equal(one.backward[2], optical_flow(frames[3], frames[2]))
    two = clip_flows(frames, step=2, method="farneback", levels=3)
    assert two.forward.shape == (3, 32, 40, 2) and two.step == 2
    np.testing.assert_array_equal(
        two.backward[1], optical_flow(frames[3], frames[1], method="farneback", levels=3)
    )
    with pytest.raises(ConfigError, match="no pairs 5"):
        clip_flows(frames, step=5)
    with pytest.raises(ConfigError, match="positive integer"):
        clip_flows(frames, step=0)


def test_clip_flows_cache_is_reused_and_keyed(photos, tmp_path, monkeypatch):
    pytest.importorskip("cv2")
    frames = clips.moving_object_clip(n_frames=3, size=(24, 32)).frames
    cache = tmp_path / "cache"
    first = clip_flows(frames, cache_dir=cache)
    (path,) = cache.iterdir()
    assert path.name.startswith("flow-dis-") and path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"key", "forward", "backward"}

    def no_opencv(*args):
        raise AssertionError("recomputed despite the cache")

    with monkeypatch.context() as m:
        m.setattr(flow, "_flow_fn", no_opencv)
        again = clip_flows(frames, cache_dir=cache)
    np.testing.assert_array_equal(again.forward, first.forward)
    np.testing.assert_array_equal(again.backward, first.backward)

    clip_flows(frames, cache_dir=cache, preset="fast")  # other options: another file
    changed = frames.copy()
    changed[1, 0, 0] = 1 - changed[1, 0, 0]  # one pixel of one frame: another file
    clip_flows(changed, cache_dir=cache)
    assert len(list(cache.iterdir())) == 3

    path.write_bytes(b"not a zip file")  # a corrupt entry is recomputed and replaced
    fixed = clip_flows(frames, cache_dir=cache)
    np.testing.assert_array_equal(fixed.forward, first.forward)
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["forward"], first.forward)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary files left
