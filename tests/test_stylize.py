"""stylize(): inputs of each kind, uint8 outputs and histories, blends, masks, variants.

Tiny runs: 24 px, random-init VGG19 up to conv2_1, three Adam steps; each ``stylize`` call
compiles once, so the reference run is a module fixture that later tests compare against.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.problem import make_problem

SMALL = StyleConfig(
    size=24,
    iterations=3,
    chunk=2,
    optimizer="adam",
    content_layers=("conv2_1",),
    style_layers=("conv1_1", "conv2_1"),
    variants=2,
)
COLUMNS = {"total", "content", "style", "style/conv1_1", "style/conv2_1", "tv", "iteration",
           "evaluations"}  # fmt: skip


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 (h, w, 3) image: random colour blobs, smooth enough to survive resizing."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(2, h // 6), max(2, w // 6), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


CONTENT = smooth_image(30, 40, 0)  # landscape: 24 px wide, 18 high after resizing
STYLE = smooth_image(36, 36, 1)
OTHER_STYLE = smooth_image(40, 32, 2)
CONTENT_24 = smooth_image(18, 24, 0)  # already at the output size: 24 x 18
CFG = StyleConfig(size=24, iterations=2, optimizer="adam", content_layers=("conv2_1",),
                  style_layers=("conv1_1", "conv2_1"))  # fmt: skip


def halves(h: int = 18, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1.0
    return left, 1.0 - left


@pytest.fixture(scope="module")
def reference(random_params):
    seen = []
    result = stylize(CONTENT, STYLE, SMALL, params=random_params,
                     callback=lambda run: seen.append(run.iterations().copy()))  # fmt: skip
    return result, seen


def test_stylize_returns_uint8_images_and_a_history_per_variant(reference):
    result, seen = reference
    assert result.images.dtype == np.uint8
    assert result.images.shape == (2, 18, 24, 3)
    assert max(result.images.shape[1:3]) == SMALL.size
    assert result.image.shape == (18, 24, 3)
    assert len(result.history) == 2 and result.seeds == [0, 1]
    for hist in result.history:
        assert set(hist) == COLUMNS
        assert all(len(v) == SMALL.iterations for v in hist.values())
        assert np.all(np.isfinite(hist["total"])) and hist["total"][-1] < hist["total"][0]
        mean = (hist["style/conv1_1"] + hist["style/conv2_1"]) / 2  # w_l = 1/L
        np.testing.assert_allclose(hist["style"], mean, rtol=1e-5)
        assert np.all(hist["tv"] > 0)  # reported even at tv_weight 0 (it then adds nothing)
    np.testing.assert_array_equal(result.iterations, [3, 3])
    np.testing.assert_array_equal(result.evaluations, [3, 3])
    assert [list(s) for s in seen] == [[2, 2], [3, 3]]  # one callback per chunk of 2 steps
    assert set(result.final_loss[0]) == COLUMNS - {"iteration", "evaluations"}
    assert not result.stopped
    for name in ("size", "iterations", "optimizer", "style_layers", "variants", "seed"):
        assert getattr(result.config, name) == getattr(SMALL, name)
    assert np.abs(result.images[0].astype(int) - result.images[1]).max() > 10  # own seeds


def test_pil_images_give_the_same_result(reference, random_params):
    result, _ = reference
    pil = stylize(Image.fromarray(CONTENT), Image.fromarray(STYLE), SMALL, params=random_params)
    assert pil.images.dtype == np.uint8
    np.testing.assert_array_equal(pil.images, result.images)


def test_blend_weights_select_and_mix_style_images(reference, random_params):
    result, _ = reference
    # (1, 0): the second image has no say, so the run is the single-style run exactly.
    cfg = SMALL.replace(style_blend_weights=(1.0, 0.0))
    blended = stylize(CONTENT, [STYLE, OTHER_STYLE], cfg, params=random_params)
    assert blended.images.shape == (2, 18, 24, 3)
    np.testing.assert_array_equal(blended.images, result.images)
    # Other weights blend the Gram targets: 1/4 and 3/4 here.
    cfg = SMALL.replace(style_blend_weights=(1.0, 3.0))
    mixed = make_problem(CONTENT, [STYLE, OTHER_STYLE], cfg, random_params).targets.style
    a = make_problem(CONTENT, STYLE, SMALL, random_params).targets.style
    b = make_problem(CONTENT, OTHER_STYLE, SMALL, random_params).targets.style
    for k in SMALL.style_layers:
        np.testing.assert_allclose(mixed[k], 0.25 * a[k] + 0.75 * b[k], rtol=1e-5)


def test_content_init_starts_at_zero_content_loss(reference, random_params):
    result, _ = reference
    cfg = SMALL.replace(init="content", variants=1, iterations=1)
    first = stylize(CONTENT, STYLE, cfg, params=random_params).history[0]
    noise_content = result.history[0]["content"][0]
    assert noise_content > 0
    assert first["content"][0] <= 1e-6 * noise_content, (first["content"][0], noise_content)
    assert first["style"][0] > 0


# ------------------------------------------------------------------ colour control (2017)


def test_stylize_with_masks_runs_and_keeps_the_unstyled_half_close_to_content(random_params):
    left, _ = halves()
    cfg = CFG.replace(init="content", iterations=4, style_weight=1e6, learning_rate=0.05,
                      style_layers=("conv1_1",))  # fmt: skip
    result = stylize(CONTENT_24, STYLE, cfg, params=random_params, masks=[left])
    assert result.images.shape == (1, 18, 24, 3)
    assert np.all(np.isfinite(result.history[0]["total"]))
    change = np.abs(result.image.astype(float) - CONTENT_24.astype(float)).mean(axis=(0, 2))
    assert change[:10].mean() > 4 * change[14:].mean()  # styled left, right (almost) untouched


def test_each_variant_can_have_its_own_regions_in_one_run(random_params):
    """variant_masks: two variants, left or right half styled, in one compiled run; each equals
    the run with its masks alone (same seed, same start)."""
    left, right = halves()
    cfg = CFG.replace(init="content", iterations=3, style_weight=1e6, learning_rate=0.05,
                      style_layers=("conv1_1",))  # fmt: skip
    both = stylize(CONTENT_24, STYLE, cfg, params=random_params, variant_masks=[[left], [right]])
    assert both.images.shape == (2, 18, 24, 3) and both.seeds == [0, 0]
    for k, mask in enumerate([left, right]):
        alone = stylize(CONTENT_24, STYLE, cfg, params=random_params, masks=[mask])
        np.testing.assert_allclose(both.final_loss[k]["total"], alone.final_loss[0]["total"],
                                   rtol=1e-4)  # fmt: skip
        diff = np.abs(both.images[k].astype(int) - alone.image.astype(int))
        assert diff.max() <= 1
    change = [np.abs(im.astype(float) - CONTENT_24).mean(axis=(0, 2)) for im in both.images]
    assert change[0][:10].mean() > 2 * change[0][14:].mean()  # variant 0: the left half
    assert change[1][14:].mean() > 2 * change[1][:10].mean()  # variant 1: the right half
    with pytest.raises(ConfigError, match="3 variant masks for a sweep of 2"):
        stylize(CONTENT_24, STYLE, cfg, params=random_params, variant_masks=[[left]] * 3,
                sweep={"style_weight": [1e5, 1e6]})  # fmt: skip


# ------------------------------------------------------------------ controls that work at defaults
def _per_position_grams(params, image, cfg):
    from jaxnst.losses import Objective, features
    from jaxnst.terms import gram

    f = features(params, jnp.asarray(image, jnp.float32), Objective.from_config(cfg))
    return {k: gram(f[k]) / (f[k].shape[0] * f[k].shape[1]) for k in cfg.style_layers}


def closer_to(params, result, first, second, cfg) -> str:
    """Per style layer, '1' or '2': which image's per-position Gram the result's is nearer."""
    from jaxnst.image import load_image

    g = _per_position_grams(params, result / 255.0, cfg)
    a = _per_position_grams(params, load_image(first, cfg.size), cfg)
    b = _per_position_grams(params, load_image(second, cfg.size), cfg)
    rel = lambda x, y: float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))  # noqa: E731
    return "".join("1" if rel(g[k], a[k]) < rel(g[k], b[k]) else "2" for k in cfg.style_layers)


def test_scale_control_takes_fine_scales_from_one_image_and_coarse_from_the_other(vgg_params):
    """The rule: with style-layer-images 1 1 2 2 2 each style layer's statistics end up closer
    to its chosen image than to the other, at the default weights (per-layer target
    normalisation); without it conv4_1 outweighs conv1_1 by ~1e5 and image 1 is lost."""
    from skimage import data

    content, first, second = data.astronaut(), data.coffee(), data.immunohistochemistry()
    cfg = StyleConfig(size=64, iterations=40, style_layer_images=(1, 1, 2, 2, 2))
    got = stylize(content, [first, second], cfg, params=vgg_params)
    assert closer_to(vgg_params, got.image, first, second, cfg) == "11222"
    old = stylize(content, [first, second], cfg.replace(style_layer_norm="none"),
                  params=vgg_params)  # fmt: skip
    assert closer_to(vgg_params, old.image, first, second, cfg)[:2] != "11"  # the checker bites


def test_masks_keep_the_photo_outside_every_mask_from_noise(random_params):
    """The rule: outside every mask (beyond 4% of the long side from it) the result is the
    photo, to the 8-bit rounding, from any start; inside, the style changes it."""
    photo = smooth_image(32, 32, 9)
    mask = np.zeros((32, 32), np.float32)
    mask[:8] = 1.0  # the top quarter
    cfg = CFG.replace(size=32, iterations=3, init="noise")
    out = stylize(photo, STYLE, cfg, params=random_params, masks=[mask]).image.astype(float)
    assert np.abs(out[12:] - photo[12:]).max() <= 0.5  # 1 px = 2% of 32: the band is 2 px
    assert np.abs(out[:8] - photo[:8]).mean() > 10  # the masked part moved
    off = stylize(photo, STYLE, cfg.replace(gate=False), params=random_params, masks=[mask])
    assert np.abs(off.image.astype(float)[12:] - photo[12:]).mean() > 10  # noise stays without


def test_seed_minus_one_is_a_random_seed_that_the_result_records(random_params):
    a = stylize(CONTENT, STYLE, SMALL.replace(variants=1, iterations=1), params=random_params,
                seed=-1)  # fmt: skip
    assert a.config.seed >= 0 and a.seeds == [a.config.seed]
