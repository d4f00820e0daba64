"""Applying a network: tiles that join exactly, determinism, batches, colours, inputs, outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxnst import color
from jaxnst.apply import (
    HALO,
    apply_network,
    apply_outputs,
    expand_inputs,
    forward_tiled,
    windows,
)
from jaxnst.errors import ConfigError, ImageError
from jaxnst.network import Network
from jaxnst.trainconfig import TrainConfig
from jaxnst.transform import apply_transform, init_transform, transform_stats


@pytest.fixture(scope="module")
def params():
    return jax.tree.map(np.asarray, init_transform(jax.random.key(5), width=4))


def net(params, **options):
    return Network(params, TrainConfig(width=4, **options))


def photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.2, 0.8, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(small[..., c], "F").resize((w, h))) for c in
                     range(3)], -1).clip(0, 1)  # fmt: skip


@pytest.mark.parametrize("size", [140, 157, 300])
def test_windows_cover_the_axis_on_the_stride_grid_with_a_halo(size):
    for n in [*range(1, 40, 7), size, size + 1, size + 3, 301, 517, 1000]:
        length, spots = windows(n, size)
        assert length == min(n, size) or (size - 3 <= length <= size and (n - length) % 4 == 0)
        assert spots[0][1] == 0 and spots[-1][2] == n  # the kept parts partition [0, n)
        for (start, keep_from, keep_to), nxt in zip(spots, spots[1:] + [None], strict=True):
            assert start % 4 == 0 and start >= 0 and start + length <= n
            assert keep_from < keep_to
            if nxt is not None:
                assert nxt[1] == keep_to
                assert start + length - keep_to >= HALO  # far from this window's cut
                assert keep_to - nxt[0] >= HALO  # and from the next one's
        if len(spots) > 1:
            assert spots[-1][0] + length == n  # the last window ends at the image's edge


def test_tiles_with_the_images_statistics_equal_the_whole_image(params):
    image = photo(302, 61)  # three tiles of 142 x 61 px, 4 px off the stride grid's period
    stats = transform_stats(params, jnp.asarray(image[None]))
    whole = np.asarray(apply_transform(params, jnp.asarray(image[None])))[0]
    tiled = forward_tiled(params, image, 144, stats=stats, batch_size=3)
    np.testing.assert_allclose(tiled, whole, atol=2e-6)
    # The default statistics come from the image at STATS_SIDE px: here the image itself.
    np.testing.assert_allclose(forward_tiled(params, image, 144), whole, atol=2e-6)
    # Without the shared statistics each tile would be normalised on its own: seams.
    halves = jnp.asarray(np.stack([image[:151], image[151:]]))
    own = np.concatenate(np.asarray(apply_transform(params, halves)))
    assert np.abs(own - whole).max() > 1e-3


def test_apply_is_deterministic_batched_and_keeps_shapes(params):
    network = net(params)
    batch = np.stack([photo(40, 56, s) for s in range(3)])
    out = apply_network(network, batch)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(apply_network(network, batch), out)  # the same bytes
    np.testing.assert_allclose(apply_network(network, batch[1]), out[1], atol=1e-5)
    u8 = np.round(batch[0] * 255).astype(np.uint8)
    assert apply_network(network, u8).shape == (40, 56, 3)
    mixed = apply_network(network, [batch[0], photo(33, 21)], size=56)  # a list: any sizes
    assert [m.shape for m in mixed] == [(40, 56, 3), (56, 36, 3)]
    np.testing.assert_allclose(mixed[0], out[0], atol=1e-5)
    with pytest.raises(ImageError, match=r"image 1 is 4x30 px; the network needs at least 5x5"):
        apply_network(network, photo(30, 4))


def chroma(image, inside=None):
    """The I and Q channels, where ``inside`` (default: the image) is not clipped."""
    inside = image if inside is None else inside
    ok = np.all((inside > 0.005) & (inside < 0.995), axis=-1, keepdims=True)
    return np.where(ok, np.asarray(color.rgb_to_yiq(image))[..., 1:], 0.0)


def test_colour_options_keep_the_photos_colours(params):
    image = photo(48, 40, 3)
    plain = apply_network(net(params), image)
    kept = apply_network(net(params), image, original_colors=True)
    assert np.abs(chroma(plain, plain) - chroma(image, plain)).max() > 0.05
    np.testing.assert_allclose(chroma(kept), chroma(image, kept), atol=1e-5)  # where unclipped
    assert np.mean(chroma(kept) != 0) > 0.5  # most pixels are compared
    by_default = apply_network(net(params, original_colors=True), image)
    np.testing.assert_array_equal(by_default, kept)  # the training's option is the default
    grey = apply_network(net(params, color_mode="luminance"), image)  # a luminance network
    np.testing.assert_allclose(chroma(grey), chroma(image, grey), atol=1e-5)
    # it sees luminance only: a photo of other colours but the same luminance, the same output
    other = image + np.asarray([0.1, -0.0299 / 0.587, 0.0], np.float32)  # Y unchanged
    lum = apply_network(net(params, color_mode="luminance"), other)
    ok = np.all((lum > 0.005) & (lum < 0.995) & (grey > 0.005) & (grey < 0.995), axis=-1)
    y = lambda a: np.asarray(color.luminance(a))[ok]  # noqa: E731  (where neither is clipped)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(y(lum), y(grey), atol=1e-5)


def test_inputs_and_outputs_of_the_command_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (8, 8)).save(folder / name)
    (folder / "notes.txt").write_text("x")
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (8, 8)).save(tmp_path / "still.gif")
    items = expand_inputs([str(folder), str(tmp_path / "clip.mp4"), str(tmp_path / "anim.gif"),
                           str(tmp_path / "still.gif")])  # fmt: skip
    assert [(p.name, k) for p, k in items] == [
        ("a.jpg", "image"), ("b.png", "image"), ("clip.mp4", "video"), ("anim.gif", "video"),
        ("still.gif", "image"),
    ]  # fmt: skip
    model = tmp_path / "starry.npz"
    outs = apply_outputs(items, str(tmp_path), model)
    assert [p.name for p in outs] == ["a_starry.png", "b_starry.png", "clip_starry.mp4",
                                      "anim_starry.gif", "still_starry.png"]  # fmt: skip
    assert apply_outputs(items[:1], str(tmp_path / "x.jpg"), model) == [tmp_path / "x.jpg"]
    with pytest.raises(ConfigError, match="need -o to be an existing folder"):
        apply_outputs(items, str(tmp_path / "x.png"), model)
    with pytest.raises(ConfigError, match="would overwrite its input"):
        apply_outputs(items[:1], str(folder / "a.jpg"), model)
    with pytest.raises(ImageError, match="does not exist"):
        apply_outputs(items[:1], str(tmp_path / "nowhere" / "x.png"), model)
    (folder / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files in this folder"):
        expand_inputs([str(folder / "empty")])
