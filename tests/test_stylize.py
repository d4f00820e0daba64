"""stylize(): inputs of each kind, uint8 outputs and histories, initial images, option errors.

Tiny runs: 24 px, random-init VGG19 up to conv2_1, three Adam steps; each ``stylize`` call
compiles once, so the reference run is a module fixture that later tests compare against.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from jaxnst import ConfigError, StyleConfig, stylize
from jaxnst.config import LossWeights
from jaxnst.image import resize
from jaxnst.losses import loss_parts
from jaxnst.stylize import initial_images, make_problem

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


def test_initial_images_content_style_and_noise(random_params):
    square = smooth_image(30, 30, 3)
    cfg = SMALL.replace(size=24)
    problem = make_problem(square, square[::-1], cfg, random_params)
    weights = LossWeights.from_config(cfg)
    parts = jax.jit(loss_parts, static_argnums=4)

    def loss(image):
        return parts(image, problem.params, problem.targets, weights, cfg)

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


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"content_layers": ("conv9_9",)}, "unknown layer"),
        ({"style_layers": ("conv1_1", "relu1_1")}, "unknown layer"),
        ({"style_weight": -1.0}, "style-weight"),
        ({"content_weight": -0.5}, "content-weight"),
        ({"tv_weight": float("nan")}, "tv-weight"),
        ({"size": 0}, "size"),
        ({"iterations": 0}, "iterations"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"init": "zeros"}, "init"),
        ({"style_layer_weights": (1.0, 1.0, 1.0)}, "style-layer-weights"),
        ({"style_layer_weights": (1.0, -1.0)}, "style-layer-weights"),
        ({"style_blend_weights": (1.0, 2.0)}, "style-blend-weights"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"size": "512"}, "size should be int, not '512'"),
        ({"size": 24.0}, "size should be int"),
        ({"style_weight": "1e3"}, "style-weight should be a number"),
        ({"plot": 1}, "plot should be bool"),
        ({"style_layers": "conv1_1"}, "style-layers should be a list of str"),
        ({"scales": (16, "24")}, "scales should be a list of int"),
    ],
)
def test_bad_options_raise_one_line_config_errors(random_params, options, words):
    with pytest.raises(ConfigError) as err:
        stylize(CONTENT, STYLE, SMALL, params=random_params, **options)
    message = str(err.value)
    assert words in message and "\n" not in message


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


# ------------------------------------------------------------------ colour control (2017)


def test_luminance_mode_keeps_the_contents_colours():
    """Luminance-only transfer: the loss sees grey images; the output has the content's I, Q."""
    from jaxnst import color
    from jaxnst.stylize import make_problem

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
    from jaxnst.stylize import make_problem

    rng = np.random.default_rng(4)
    content = (rng.random((32, 32, 3)) * [0.3, 0.5, 0.2] + [0.4, 0.2, 0.3]).astype(np.float32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    for basis in ("cholesky", "pca", "sym"):
        cfg = StyleConfig(size=32, color_mode="histogram", histogram_basis=basis)
        (recoloured,) = make_problem(content, style, cfg).styles
        pixels = recoloured.reshape(-1, 3)
        np.testing.assert_allclose(pixels.mean(0), content.reshape(-1, 3).mean(0), atol=2e-2)


def test_toml_lists_are_checked_element_by_element(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('scales = ["abc"]\n')
    with pytest.raises(ConfigError, match="scales should hold int values"):
        StyleConfig.from_toml(path)
    path.write_text("style_blend_weights = [1, 2.5]\n")
    assert StyleConfig.from_toml(path).style_blend_weights == (1.0, 2.5)
