"""Colour control (Gatys et al. 2017, sec. 5): YIQ, luminance transfer, histogram matching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnst import color
from jaxnst.config import HISTOGRAM_BASES


def random_image(seed: int, shape=(12, 10, 3)) -> np.ndarray:
    """A float32 image in [0, 1] with correlated channels (a realistic, full-rank covariance)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, shape[:2] + (1,))
    return np.clip(base + 0.15 * rng.standard_normal(shape), 0, 1).astype(np.float32)


def moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(image, np.float64).reshape(-1, 3)
    return x.mean(0), np.cov(x.T, bias=True)


def test_yiq_roundtrip_is_exact_and_grey_has_no_chroma():
    image = random_image(0)
    yiq = color.rgb_to_yiq(image)
    np.testing.assert_allclose(color.yiq_to_rgb(yiq), image, atol=1e-6)
    np.testing.assert_allclose(color.rgb_to_yiq(color.yiq_to_rgb(yiq)), yiq, atol=1e-6)
    np.testing.assert_allclose(color.RGB_TO_YIQ @ color.YIQ_TO_RGB, np.eye(3), atol=1e-15)
    grey = color.to_luminance_image(image)
    np.testing.assert_allclose(color.rgb_to_yiq(grey)[..., 1:], 0, atol=1e-7)


def test_luminance_matches_the_formula_in_numpy_and_under_jit():
    image = random_image(1)
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    want = 0.299 * r + 0.587 * g + 0.114 * b
    np.testing.assert_allclose(color.luminance(image), want, atol=1e-6)
    got = jax.jit(color.luminance)(jnp.asarray(image))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    lum = color.to_luminance_image(image)
    assert lum.shape == image.shape
    np.testing.assert_allclose(lum, np.repeat(want[..., None], 3, -1), atol=1e-6)


@pytest.mark.parametrize("mode", HISTOGRAM_BASES)
def test_histogram_matching_gives_the_content_mean_and_covariance(mode):
    style, content = random_image(2, (14, 9, 3)), random_image(3, (8, 11, 3))
    content = content * np.float32([1.0, 0.6, 0.3])  # a different colour cast
    out = color.match_color_histogram(style, content, mode, eps=0.0, clip=False)
    assert out.shape == style.shape and out.dtype == np.float32
    (mu_o, cov_o), (mu_c, cov_c) = moments(out), moments(content)
    np.testing.assert_allclose(mu_o, mu_c, atol=1e-6)
    np.testing.assert_allclose(cov_o, cov_c, atol=1e-7, rtol=1e-5)
    # The default regulariser only moves the covariance by O(eps).
    out = color.match_color_histogram(style, content, mode, clip=False)
    np.testing.assert_allclose(moments(out)[1], cov_c, atol=2e-5)
    clipped = color.match_color_histogram(style, content, mode)
    assert clipped.min() >= 0 and clipped.max() <= 1


@pytest.mark.parametrize("mode", HISTOGRAM_BASES)
def test_histogram_matching_flips_no_axis(mode):
    # Content = an affine dimming of the style: every basis must find A = 0.5 I, not a
    # sign-flipped or rotated solution that also matches the covariance.
    style = random_image(4)
    content = 0.5 * style + 0.2
    out = color.match_color_histogram(style, content, mode, eps=0.0, clip=False)
    np.testing.assert_allclose(out, content, atol=1e-5)
    same = color.match_color_histogram(style, style, mode, eps=0.0, clip=False)
    np.testing.assert_allclose(same, style, atol=1e-5)


def test_pca_basis_is_signed_consistently():
    # eigh returns eigenvectors of arbitrary sign; unaligned, 7 of these 20 near-identity
    # recolourings got a flipped axis (a negative trace) when this was written. Aligned: none.
    rng = np.random.default_rng(0)
    for seed in range(20):
        style = random_image(seed)
        mix = np.eye(3) + 0.3 * rng.standard_normal((3, 3))
        content = np.clip(style @ mix.T, 0, 1)
        a = color.histogram_matrix(moments(style)[1], moments(content)[1], "pca")
        np.testing.assert_allclose(a @ moments(style)[1] @ a.T, moments(content)[1], atol=1e-12)
        assert np.trace(a) > 0, seed


def test_histogram_matching_survives_a_grey_style_and_rejects_bad_modes():
    grey = np.full((6, 6, 3), 0.5, np.float32)
    out = color.match_color_histogram(grey, random_image(5))
    assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="mode must be one of"):
        color.match_color_histogram(grey, grey, "lab")


def test_match_luminance_gives_the_content_mean_and_std():
    style_y = color.luminance(random_image(6, (10, 13, 3)))
    content_y = 0.3 * color.luminance(random_image(7)) + 0.1
    out = color.match_luminance(style_y, content_y, clip=False)
    assert out.shape == style_y.shape
    np.testing.assert_allclose(out.mean(), content_y.astype(np.float64).mean(), atol=1e-6)
    np.testing.assert_allclose(out.std(), content_y.astype(np.float64).std(), rtol=1e-5)
    flat = color.match_luminance(np.full((4, 4), 0.7), content_y)
    np.testing.assert_allclose(flat, content_y.astype(np.float64).mean(), atol=1e-6)


def test_combine_luminance_keeps_the_result_luminance_and_the_content_chroma():
    content = random_image(8)
    result_y = color.luminance(random_image(9))
    out = color.combine_luminance(result_y, content, clip=False)
    yiq, want = color.rgb_to_yiq(out), color.rgb_to_yiq(content)
    np.testing.assert_allclose(yiq[..., 0], result_y, atol=1e-6)
    np.testing.assert_allclose(yiq[..., 1:], want[..., 1:], atol=1e-6)
    batch = color.combine_luminance(np.stack([result_y, content[..., 0]]), content)
    assert batch.shape == (2,) + content.shape
    assert batch.min() >= 0 and batch.max() <= 1


def test_color_swap_of_the_content_with_itself_is_the_content():
    content = random_image(10)
    np.testing.assert_allclose(color.color_swap(content, content), content, atol=1e-6)
    # Under jit too, and equal to content + (Y_result - Y_content) on every channel.
    result = random_image(11)
    got = jax.jit(color.color_swap)(jnp.asarray(result), jnp.asarray(content))
    shift = (color.luminance(result) - color.luminance(content))[..., None]
    want = np.clip(content + shift, 0, 1)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_allclose(color.color_swap(result, content), want, atol=1e-6)
