"""Spatial and scale control wired into the objective (Gatys et al. 2017, secs. 4 and 6).

The guided-Gram maths is tested in test_guidance.py; here: masks and colour maps reach the
targets, the guided loss equals the plain one for whole-image masks, regions without a style
keep their content, style layers can come from different images, and bad combinations fail in
one line. Tiny images, random-init VGG19 up to conv2_1.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxnst import ConfigError, StyleConfig, cli, stylize
from jaxnst import guidance as G
from jaxnst.config import LossWeights
from jaxnst.errors import ImageError
from jaxnst.losses import gram, loss_parts
from jaxnst.stylize import layer_positions, make_problem

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


def halves(h: int = 18, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1.0
    return left, 1.0 - left


def losses(problem, cfg, x):
    return loss_parts(jnp.asarray(x), problem.params, problem.targets,
                      LossWeights.from_config(cfg), cfg)  # fmt: skip


@pytest.mark.parametrize("style_size", [(18, 24), (36, 36)])
def test_whole_image_masks_give_exactly_the_plain_loss(random_params, style_size):
    style = smooth_image(*style_size, 1)
    x = np.random.default_rng(3).uniform(0, 1, (18, 24, 3)).astype(np.float32)
    plain = make_problem(CONTENT, style, CFG, random_params)
    ones = np.ones((18, 24), np.float32)
    for mode in G.PYRAMID_MODES:  # a full mask is full at every layer in every mode
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
    m_out = layer_positions((18, 24), cfg)["conv1_1"]
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


@pytest.mark.parametrize(
    "options, message",
    [
        ({"region_colors": ("#ff0000",)}, "exactly one colour-coded map"),
        ({"masks": ("m.png",), "region_colors": ("red",)}, "#rrggbb"),
        ({"style_masks": ("m.png",)}, "style-masks need masks"),
        ({"background": "style"}, "only with masks"),
        ({"background": "sky"}, "background must be one of content, style"),
        ({"mask_layers": "eroded"}, "mask-layers must be one of simple, inside, all"),
        ({"style_layer_images": (1,)}, "1 values for 2 style layers"),
        ({"style_layer_images": (0, 1)}, "counts style images from 1"),
        ({"style_layer_images": (1, 2), "masks": ("m.png",)}, "cannot be combined"),
    ],
)
def test_control_options_are_validated(options, message):
    with pytest.raises(ConfigError, match=message):
        cfg = CFG.replace(**options).validate()
        cfg.check_masks(cfg.masks, cfg.style_masks)  # with the masks in effect (make_problem)


def test_guided_loss_vmaps_over_per_variant_masks(random_params):
    """Composability: variants with different masks in one vmap equal one call per mask."""
    feats = {"conv1_1": jax.random.normal(jax.random.key(0), (18, 24, 64))}
    target = {"conv1_1": (gram(feats["conv1_1"]) / (18 * 24))[None] * 1.5}
    left, right = halves()
    top = np.zeros_like(left)
    top[:9] = 1.0
    masks = jnp.stack([left, right, top])[:, None]  # (variants, R=1, h, w)
    fn = jax.jit(jax.vmap(lambda m: G.guided_style_losses(feats, target, {"conv1_1": m},
                                                          ("conv1_1",))))  # fmt: skip
    batched = fn(masks)
    for k in range(3):
        one = G.guided_style_losses(feats, target, {"conv1_1": masks[k]}, ("conv1_1",))
        np.testing.assert_allclose(batched[k], one, rtol=1e-6)
    assert len(set(np.asarray(batched[:, 0]).round(6))) == 3


def test_stylize_with_masks_runs_and_keeps_the_unstyled_half_close_to_content(random_params):
    left, _ = halves()
    cfg = CFG.replace(init="content", iterations=4, style_weight=1e6, learning_rate=0.05,
                      style_layers=("conv1_1",))  # fmt: skip
    result = stylize(CONTENT, STYLE, cfg, params=random_params, masks=[left])
    assert result.images.shape == (1, 18, 24, 3)
    assert np.all(np.isfinite(result.history[0]["total"]))
    change = np.abs(result.image.astype(float) - CONTENT.astype(float)).mean(axis=(0, 2))
    assert change[:10].mean() > 4 * change[14:].mean()  # styled left, right (almost) untouched


def test_cli_takes_mask_options_and_records_them(tmp_path):
    Image.fromarray(CONTENT).save(tmp_path / "content.png")
    Image.fromarray(STYLE).save(tmp_path / "style.png")
    Image.fromarray(OTHER).save(tmp_path / "other.png")
    region = np.zeros((18, 24, 3), np.uint8)
    region[:, :12] = (255, 0, 0)
    region[:, 12:] = (0, 0, 255)
    Image.fromarray(region).save(tmp_path / "map.png")
    out = tmp_path / "out.png"
    argv = ["stylize", str(tmp_path / "content.png"), str(tmp_path / "style.png"),
            str(tmp_path / "other.png"), "-o", str(out), "--size", "24", "--iterations", "2",
            "--content-layers", "conv2_1", "--style-layers", "conv1_1", "conv2_1",
            "--masks", str(tmp_path / "map.png"), "--region-colors", "#ff0000,#0000ff",
            "--background", "style", "--mask-layers", "simple", "--quiet",
            "--no-compile-cache", "--no-plot"]  # fmt: skip
    assert cli.main(argv) == 0
    assert Image.open(out).size == (24, 18)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    text = json.dumps(sidecar)
    assert "map.png" in text and "#0000ff" in text and '"background": "style"' in text
    bad = [*argv[:-3], "--region-colors", "#00ff00,#0000ff", "--quiet"]
    assert cli.main(bad) == 2


def test_each_variant_can_have_its_own_regions_in_one_run(random_params):
    """variant_masks: two variants, left or right half styled, in one compiled run; each equals
    the run with its masks alone (same seed, same start)."""
    left, right = halves()
    cfg = CFG.replace(init="content", iterations=3, style_weight=1e6, learning_rate=0.05,
                      style_layers=("conv1_1",))  # fmt: skip
    both = stylize(CONTENT, STYLE, cfg, params=random_params, variant_masks=[[left], [right]])
    assert both.images.shape == (2, 18, 24, 3) and both.seeds == [0, 0]
    for k, mask in enumerate([left, right]):
        alone = stylize(CONTENT, STYLE, cfg, params=random_params, masks=[mask])
        np.testing.assert_allclose(both.final_loss[k]["total"], alone.final_loss[0]["total"],
                                   rtol=1e-4)  # fmt: skip
        diff = np.abs(both.images[k].astype(int) - alone.image.astype(int))
        assert diff.max() <= 1
    change = [np.abs(im.astype(float) - CONTENT).mean(axis=(0, 2)) for im in both.images]
    assert change[0][:10].mean() > 2 * change[0][14:].mean()  # variant 0: the left half
    assert change[1][14:].mean() > 2 * change[1][:10].mean()  # variant 1: the right half
    with pytest.raises(ConfigError, match="3 variant masks for a sweep of 2"):
        stylize(CONTENT, STYLE, cfg, params=random_params, variant_masks=[[left]] * 3,
                sweep={"style_weight": [1e5, 1e6]})  # fmt: skip
