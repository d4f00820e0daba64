"""make_problem: images at their sizes, colour control, the targets, masks, starting images.

Blends and style scale reach the Gram targets; colour modes prepare the images the loss sees;
spatial and scale control (Gatys et al. 2017, secs. 4 and 6) reach the targets: the guided loss
equals the plain one for whole-image masks, regions without a style keep their content, style
layers can come from different images, bad masks fail in one line. The guided-Gram maths is
tested in test_losses.py. Tiny images, random-init VGG19 up to conv2_1 or conv3_1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.config import MASK_LAYERS, LossWeights
from jaxnst.errors import ImageError
from jaxnst.image import resize
from jaxnst.layers import positions
from jaxnst.losses import Objective, loss_parts
from jaxnst.problem import initial_images, make_problem
from jaxnst.terms import gram

CFG = StyleConfig(
    size=24,
    iterations=2,
    optimizer="adam",
    content_layers=("conv2_1",),
    style_layers=("conv1_1", "conv2_1"),
)


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(2, h // 6), max(2, w // 6), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


CONTENT = smooth_image(18, 24, 0)  # already at the output size: 24 x 18
STYLE = smooth_image(36, 36, 1)
OTHER = smooth_image(32, 40, 2)
OTHER_STYLE = smooth_image(40, 32, 2)
SMALL = StyleConfig(size=24, iterations=3, chunk=2, optimizer="adam", variants=2,
                    content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))  # fmt: skip
SHALLOW = StyleConfig(
    size=16, content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1", "conv3_1")
)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)


def halves(h: int = 18, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1.0
    return left, 1.0 - left


def losses(problem, cfg, x):
    return loss_parts(jnp.asarray(x), problem.params, problem.targets,
                      LossWeights.from_config(cfg), Objective.from_config(cfg))  # fmt: skip


@pytest.mark.parametrize("style_size", [(18, 24), (36, 36)])
def test_whole_image_masks_give_exactly_the_plain_loss(random_params, style_size):
    style = smooth_image(*style_size, 1)
    x = np.random.default_rng(3).uniform(0, 1, (18, 24, 3)).astype(np.float32)
    plain = make_problem(CONTENT, style, CFG, random_params)
    ones = np.ones((18, 24), np.float32)
    for mode in MASK_LAYERS:  # a full mask is full at every layer in every mode
        cfg = CFG.replace(mask_layers=mode)
        guided = make_problem(CONTENT, style, cfg, random_params, masks=[ones])
        assert guided.targets.masks["conv2_1"].shape == (1, 9, 12)
        a, b = losses(plain, cfg, x), losses(guided, cfg, x)
        np.testing.assert_allclose(b.style_layers, a.style_layers, rtol=2e-5)
        np.testing.assert_allclose(b.total, a.total, rtol=2e-5)


def test_scale_control_takes_each_layer_from_its_own_image(random_params):
    cfg = CFG.replace(style_layer_images=(1, 2))
    both = make_problem(CONTENT, [STYLE, OTHER], cfg, random_params)
    first = make_problem(CONTENT, STYLE, CFG, random_params)
    second = make_problem(CONTENT, OTHER, CFG, random_params)
    np.testing.assert_array_equal(both.targets.style["conv1_1"], first.targets.style["conv1_1"])
    np.testing.assert_array_equal(both.targets.style["conv2_1"], second.targets.style["conv2_1"])
    assert not np.allclose(first.targets.style["conv2_1"], second.targets.style["conv2_1"])
    with pytest.raises(ConfigError, match="names image 2 but there is 1"):
        make_problem(CONTENT, STYLE, cfg, random_params)


def test_a_region_without_style_gets_no_style_gradient(random_params):
    """One style on the left half: the style loss's gradient is exactly zero on the right,
    beyond conv1_1's receptive field (erosion keeps the region's features inside it)."""
    left, _ = halves()
    cfg = CFG.replace(
        style_layers=("conv1_1",), content_weight=0.0, style_weight=1.0, mask_layers="inside"
    )
    problem = make_problem(CONTENT, STYLE, cfg, random_params, masks=[left])
    x = np.random.default_rng(4).uniform(0, 1, (18, 24, 3)).astype(np.float32)
    g = np.asarray(jax.grad(lambda x: losses(problem, cfg, x).total)(jnp.asarray(x)))
    assert np.all(g[:, 12:] == 0.0)
    assert np.all(np.abs(g[:, :11]).sum(axis=-1) > 0)
    # with background = style, the right half is styled by the whole style image
    bg = make_problem(CONTENT, STYLE, cfg.replace(background="style"), random_params,
                      masks=[left])  # fmt: skip
    assert bg.targets.style["conv1_1"].shape[0] == 2  # the region and the background
    g = np.asarray(jax.grad(lambda x: losses(bg, cfg, x).total)(jnp.asarray(x)))
    assert np.all(np.abs(g[:, 13:]).sum(axis=-1) > 0)


def test_each_region_is_matched_to_its_own_style(random_params):
    """Two regions, two styles: the left half's guided Gram target is style 1's."""
    left, right = halves()
    cfg = CFG.replace(mask_layers="simple")
    problem = make_problem(CONTENT, [STYLE, OTHER], cfg, random_params, masks=[left, right])
    alone = make_problem(CONTENT, OTHER, cfg, random_params)
    a = problem.targets.style["conv1_1"]
    assert a.shape == (2, 64, 64)
    # region 2's target is style 2's Gram per position; the plain target is scaled to the output
    m_out = positions((18, 24), "conv1_1")
    np.testing.assert_allclose(a[1], alone.targets.style["conv1_1"] / m_out, rtol=1e-5)
    np.testing.assert_array_equal(problem.masks[0], left)


def test_colour_maps_and_style_masks_from_files(random_params, tmp_path):
    region = np.zeros((18, 24, 3), np.uint8)
    region[:, :12] = (255, 0, 0)
    region[:, 12:] = (0, 0, 255)
    Image.fromarray(region).save(tmp_path / "map.png")
    top = np.zeros((36, 36), np.uint8)
    top[:18] = 255
    Image.fromarray(top).save(tmp_path / "top.png")
    cfg = CFG.replace(masks=(str(tmp_path / "map.png"),), region_colors=("#0000FF", "#ff0000"),
                      style_masks=("all", str(tmp_path / "top.png")))  # fmt: skip
    problem = make_problem(CONTENT, [STYLE, STYLE], cfg, random_params)
    left, right = halves()
    np.testing.assert_array_equal(problem.masks[0], right)
    np.testing.assert_array_equal(problem.masks[1], left)
    # the second region learns from the top of the style image only: another target
    a = problem.targets.style["conv1_1"]
    assert not np.allclose(a[0], a[1])
    with pytest.raises(ImageError, match="no region of colour #00ff00; the map has #0000ff, #ff00"):
        make_problem(CONTENT, [STYLE, STYLE], cfg.replace(region_colors=("#00ff00", "#ff0000")),
                     random_params)  # fmt: skip


BAD = {
    "count": ({"masks": ["a", "b"]}, ImageError, "2 mask.s. for 1 style image"),
    "colour map without colours": ({"masks": ["map"]}, ImageError, "needs region colours"),
    "style-mask count": (
        {"masks": ["left"], "style_masks": ["all", "all"]},
        ConfigError,
        "style-masks: 2 mask.s. for 1 style",
    ),  # fmt: skip
    "wrong aspect": ({"masks": ["square"]}, ImageError, "aspect ratios differ"),
    "empty": ({"masks": ["black"]}, ImageError, "empty"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_masks_are_one_line_errors(random_params, tmp_path, case):
    files = {
        "left": halves()[0] * 255,
        "map": np.stack([halves()[0] * 255, np.zeros((18, 24)), halves()[1] * 255], -1),
        "square": np.full((30, 30), 255),
        "black": np.zeros((18, 24)),
    }
    for name, arr in files.items():
        Image.fromarray(arr.astype(np.uint8)).save(tmp_path / f"{name}.png")
    options, kind, message = BAD[case]
    options = {k: [v if v == "all" else str(tmp_path / f"{v}.png") for v in vs]
               for k, vs in options.items()}  # fmt: skip
    with pytest.raises(kind, match=message) as info:
        make_problem(CONTENT, STYLE, CFG.replace(**options), random_params)
    assert "\n" not in str(info.value)


def test_initial_images_content_style_and_noise(random_params):
    square = smooth_image(30, 30, 3)
    cfg = SMALL.replace(size=24)
    problem = make_problem(square, square[::-1], cfg, random_params)
    weights = LossWeights.from_config(cfg)
    parts = jax.jit(loss_parts, static_argnums=4)

    def loss(image):
        return parts(image, problem.params, problem.targets, weights, Objective.from_config(cfg))

    content = initial_images(problem, cfg.replace(init="content"), [0, 1])
    np.testing.assert_array_equal(content, np.broadcast_to(problem.content, (2, 24, 24, 3)))
    style = initial_images(problem, cfg.replace(init="style"), [0])
    np.testing.assert_allclose(style[0], resize(problem.styles[0], (24, 24)), atol=1e-6)
    noise = np.asarray(initial_images(problem, cfg, [0, 1, 0]))
    assert noise.shape == (3, 24, 24, 3) and noise.dtype == np.float32
    assert noise.min() >= 0 and noise.max() <= 1 and abs(noise.mean() - 0.5) < 0.05
    np.testing.assert_array_equal(noise[0], noise[2])  # a seed fixes its image
    assert np.abs(noise[0] - noise[1]).mean() > 0.2  # uniform noise: mean |a - b| = 1/3

    at_noise, at_content, at_style = loss(noise[0]), loss(content[0]), loss(style[0])
    assert float(at_content.content) <= 1e-6 * float(at_noise.content)
    assert float(at_style.style) <= 1e-4 * float(at_noise.style)
    assert float(at_style.content) > 1e-3 * float(at_noise.content)  # the style image != content


def test_style_scale_sets_the_style_image_size(random_params):
    sizes = {}
    grams = {}
    for scale in (0.25, 0.5, 2.0):
        cfg = SMALL.replace(size=32, style_scale=scale)
        problem = make_problem(CONTENT, OTHER_STYLE, cfg, random_params)
        assert max(problem.content.shape[:2]) == 32
        sizes[scale] = problem.styles[0].shape
        grams[scale] = np.asarray(problem.targets.style["conv1_1"])
    assert sizes == {0.25: (16, 13, 3), 0.5: (16, 13, 3), 2.0: (64, 51, 3)}  # at least 16 px
    # The targets come from the rescaled image, brought to the output's M = h * w positions: per
    # position the statistics of a 4x larger style image are alike, so the targets are too.
    ratio = grams[2.0].sum() / grams[0.5].sum()
    assert 0.5 < ratio < 2.0, ratio
    np.testing.assert_array_equal(grams[0.25], grams[0.5])  # both clamped to 16 px


def test_luminance_mode_keeps_the_contents_colours():
    """Luminance-only transfer: the loss sees grey images; the output has the content's I, Q."""
    from jaxnst import color

    rng = np.random.default_rng(3)
    content = rng.uniform(0.3, 0.7, (32, 24, 3)).astype(np.float32)
    style = rng.random((24, 24, 3)).astype(np.float32)
    cfg = StyleConfig(size=32, iterations=3, chunk=3, color_mode="luminance")
    problem = make_problem(content, style, cfg)
    for grey in (problem.work_content, *problem.styles):  # what the targets saw is grey
        np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-6)
    result = stylize(content, style, cfg)
    out = result.images[0].astype(np.float32) / 255
    yiq_out, yiq_content = color.rgb_to_yiq(out), color.rgb_to_yiq(problem.content)
    # where the combination needed no clipping, the chroma is exactly the content's
    unclipped = color.combine_luminance(color.luminance(out), problem.content, clip=False)
    inside = np.all((unclipped > 0.01) & (unclipped < 0.99), axis=-1)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(yiq_out[inside][:, 1:], yiq_content[inside][:, 1:], atol=3 / 255)


def test_histogram_mode_recolours_the_style_to_the_contents_statistics():
    rng = np.random.default_rng(4)
    content = (rng.random((32, 32, 3)) * [0.3, 0.5, 0.2] + [0.4, 0.2, 0.3]).astype(np.float32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    for basis in ("cholesky", "pca", "sym"):
        cfg = StyleConfig(size=32, color_mode="histogram", histogram_basis=basis)
        (recoloured,) = make_problem(content, style, cfg).styles
        pixels = recoloured.reshape(-1, 3)
        np.testing.assert_allclose(pixels.mean(0), content.reshape(-1, 3).mean(0), atol=2e-2)


def test_blend_of_identical_styles_equals_one_style(random_params, rng):
    content = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    style = rng.uniform(size=(20, 16, 3)).astype(np.float32)
    other = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    one = make_problem(content, style, SHALLOW, random_params).targets
    cfg = SHALLOW.replace(style_blend_weights=(0.3, 0.9))
    two = make_problem(content, [style, style], cfg, random_params).targets
    for k in SHALLOW.style_layers:
        np.testing.assert_allclose(two.style[k], one.style[k], rtol=1e-6)
        assert float(jnp.max(jnp.abs(one.style[k]))) > 0
    # A weight of 0 drops an image entirely; other weights blend the Gram matrices linearly.
    cfg = SHALLOW.replace(style_blend_weights=(1.0, 0.0))
    dropped = make_problem(content, [style, other], cfg, random_params).targets
    cfg = SHALLOW.replace(style_blend_weights=(1.0, 3.0))
    mixed = make_problem(content, [style, other], cfg, random_params).targets
    alone = make_problem(content, other, SHALLOW, random_params).targets
    for k in SHALLOW.style_layers:
        np.testing.assert_allclose(dropped.style[k], one.style[k], rtol=1e-6)
        want = 0.25 * np.asarray(one.style[k]) + 0.75 * np.asarray(alone.style[k])
        np.testing.assert_allclose(mixed.style[k], want, rtol=1e-5)


def test_style_grams_are_brought_to_the_outputs_positions(images, vgg_params):
    """A style image of another size: A_l = G_l(style) * M_l(output) / M_l(style)."""
    from jaxnst.layers import positions
    from jaxnst.losses import features

    content, style = images
    cfg = SMALL.replace(size=32, style_scale=1.5)
    problem = make_problem(content, style, cfg, params=vgg_params)
    (style_img,) = problem.styles
    assert max(style_img.shape[:2]) == 48
    feats = features(vgg_params, jnp.asarray(style_img), Objective.from_config(cfg))
    m_out = {k: positions(problem.content.shape[:2], k) for k in cfg.style_layers}
    for layer in cfg.style_layers:
        h, w, _ = feats[layer].shape
        assert positions(style_img.shape[:2], layer) == h * w
        want = gram(feats[layer]) * m_out[layer] / (h * w)
        atol = 1e-5 * float(jnp.abs(want).max())  # jit vs eager rounding
        np.testing.assert_allclose(problem.targets.style[layer], want, rtol=1e-4, atol=atol)


def test_init_image_is_where_the_run_starts(tmp_path, random_params):
    start = smooth_image(18, 24, 5)
    Image.fromarray(start).save(tmp_path / "start.png")
    cfg = CFG.replace(init_image=str(tmp_path / "start.png"))
    problem = make_problem(CONTENT, STYLE, cfg, random_params)
    x = np.asarray(initial_images(problem, cfg, [0, 1]))
    np.testing.assert_allclose(x[0], start / 255.0, atol=1e-6)
    np.testing.assert_array_equal(x[0], x[1])
    with pytest.raises(ImageError, match="missing.png: no such file"):
        initial_images(problem, cfg.replace(init_image=str(tmp_path / "missing.png")), [0])


def test_masks_give_a_gate_and_the_photo_as_its_anchor(random_params):
    left, right = halves()
    problem = make_problem(CONTENT, STYLE, CFG, random_params, masks=[left])
    t = problem.targets
    assert t.gate.shape == (18, 24, 1) and float(t.gate[:, :12].min()) == 1.0
    np.testing.assert_array_equal(np.asarray(t.anchor), problem.work_content)
    assert make_problem(CONTENT, STYLE, CFG.replace(gate=False), random_params,
                        masks=[left]).targets.gate is None  # fmt: skip
    assert (
        make_problem(
            CONTENT, STYLE, CFG.replace(background="style"), random_params, masks=[left]
        ).targets.gate
        is None
    )  # styled everywhere: no gate
    per_variant = make_problem(CONTENT, STYLE, CFG, random_params, variant_masks=[[left], [right]])
    assert per_variant.targets.gate.shape == (2, 18, 24, 1)
    assert "gate" in per_variant.targets.per_example
