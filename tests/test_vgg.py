"""VGG19: agreement with an independent float64 PyTorch reference, truncation, jax transforms."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxnst import vgg
from jaxnst.config import POOLINGS
from jaxnst.layers import LAYER_NAMES

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# extract_features with the layer names and pooling static, everything else traced.
extract = jax.jit(vgg.extract_features, static_argnames=("layers", "pooling", "dtype"))


@pytest.fixture(scope="module")
def reference():
    """Golden values from scripts/make_reference_fixtures.py (torch.nn VGG19, float64, NCHW)."""
    with np.load(FIXTURES / "vgg19_reference.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_close(actual, desired, rtol=1e-5):
    """Elementwise ``rtol``, with an absolute slack of ``rtol`` times the largest ``desired``."""
    desired = np.asarray(desired)
    atol = rtol * np.abs(desired).max()
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)


def layer_stats(feats: dict[str, jax.Array], names) -> np.ndarray:
    arrays = [np.asarray(feats[name], np.float64) for name in names]
    return np.array([[a.mean(), a.std(), a.max(), np.sum(a**2)] for a in arrays])


@pytest.mark.parametrize("pooling", POOLINGS)
def test_matches_pytorch_reference(vgg_params, reference, pooling):
    names = tuple(str(n) for n in reference["layer_names"])
    assert names == LAYER_NAMES
    feats = extract(vgg_params, jnp.asarray(reference["image"]), names, pooling)
    assert set(feats) == set(names)
    # float32 against float64: the largest relative error of any statistic is ~1e-6 (both modes).
    np.testing.assert_allclose(layer_stats(feats, names), reference[f"{pooling}_stats"], rtol=1e-5)
    for name in ("conv5_1", "pool4", "pool5"):
        want = reference[f"{pooling}_{name}"]
        assert feats[name].shape == want.shape
        # Error relative to the layer's largest activation reaches ~1e-6.
        assert_close(feats[name], want)
    want = reference["conv1_1_slice"]
    got = feats["conv1_1"][..., : want.shape[-1]]
    assert_close(got, want)


def test_pooling_is_2x2_max_or_mean(vgg_params, reference):
    image = jnp.asarray(reference["image"])
    feats = {p: extract(vgg_params, image, ("conv1_2", "pool1"), p) for p in POOLINGS}
    np.testing.assert_array_equal(feats["max"]["conv1_2"], feats["avg"]["conv1_2"])
    pooled = {p: np.asarray(f["pool1"]) for p, f in feats.items()}
    blocks = np.asarray(feats["max"]["conv1_2"]).reshape(32, 2, 32, 2, 64)
    assert_close(pooled["max"], blocks.max(axis=(1, 3)))
    assert_close(pooled["avg"], blocks.mean(axis=(1, 3)))


def lowered_text(params, image, layers, pooling="max") -> str:
    return extract.lower(params, image, tuple(layers), pooling).as_text()


@pytest.mark.parametrize(
    ("layers", "convs", "pools"),
    [
        (["conv1_1"], 1, 0),
        (["pool1"], 2, 1),
        (["conv1_1", "conv3_1"], 5, 2),
        (["conv4_2", "conv1_2"], 10, 3),
        (["conv5_1"], 13, 4),
        (list(LAYER_NAMES), 16, 5),
    ],
)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_builds_only_up_to_the_deepest_layer(vgg_params, layers, convs, pools, pooling):
    image = jnp.zeros((32, 32, 3))
    text = lowered_text(vgg_params, image, layers, pooling)
    assert text.count("stablehlo.convolution") == convs
    pool_op = (
        "stablehlo.maximum across dimensions = [2, 4]" if pooling == "max" else "reduce_window"
    )
    assert text.count(pool_op) == pools
    assert set(jax.eval_shape(extract, vgg_params, image, tuple(layers), pooling)) == set(layers)


def test_params_are_arguments_not_constants(vgg_params):
    image = jnp.zeros((16, 16, 3))
    layers = ["conv5_4"]
    jaxpr = jax.make_jaxpr(lambda p, x: vgg.extract_features(p, x, layers))(vgg_params, image)
    assert sum(np.size(c) for c in jaxpr.consts) <= 3  # the ImageNet mean at most
    # The check can fail: closing over the params bakes all 20M of them in.
    closed = jax.make_jaxpr(lambda x: vgg.extract_features(vgg_params, x, layers))(image)
    n_params = sum(a.size for a in jax.tree.leaves(vgg_params))
    assert sum(np.size(c) for c in closed.consts) >= n_params
    assert len(lowered_text(vgg_params, image, layers)) < 100_000  # baked in: ~100 MB of text


def test_jit_matches_eager(vgg_params, rng):
    image = jnp.asarray(rng.uniform(size=(24, 24, 3)), jnp.float32)
    layers = ("conv2_1", "pool3", "conv4_1")
    eager = vgg.extract_features(vgg_params, image, layers, "avg")
    jitted = extract(vgg_params, image, layers, "avg")
    for name in layers:
        assert_close(jitted[name], eager[name])


def test_single_image_equals_batch_of_one(vgg_params, rng):
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    single = extract(vgg_params, image, ("conv3_1",), "max")["conv3_1"]
    batch = extract(vgg_params, image[None], ("conv3_1",), "max")["conv3_1"]
    assert single.shape == (4, 4, 256) and batch.shape == (1, 4, 4, 256)
    assert_close(single, batch[0])


def test_vmap_equals_per_image_loop(vgg_params, rng):
    images = jnp.asarray(rng.uniform(size=(3, 16, 16, 3)), jnp.float32)
    layers = ("conv1_1", "pool2", "conv3_1")
    fn = jax.jit(jax.vmap(lambda p, x: vgg.extract_features(p, x, layers), in_axes=(None, 0)))
    batched = fn(vgg_params, images)
    for i, image in enumerate(images):
        alone = extract(vgg_params, image, layers, "max")
        for name in layers:
            assert batched[name].shape == (3, *alone[name].shape)
            assert_close(batched[name][i], alone[name])


def test_grad_is_finite_and_nonzero(vgg_params, rng):
    def loss(params, image):
        feats = vgg.extract_features(params, image, ["conv1_1", "conv4_2"])
        return sum(jnp.mean(f**2) for f in feats.values())

    image = jnp.asarray(rng.uniform(size=(32, 32, 3)), jnp.float32)
    g_params, g_image = jax.jit(jax.grad(loss, argnums=(0, 1)))(vgg_params, image)
    assert g_image.shape == image.shape
    assert np.all(np.isfinite(g_image)) and np.count_nonzero(g_image) > 0.9 * g_image.size
    for name in ("conv1_1", "conv4_2"):
        g = g_params[name]["kernel"]
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    assert not np.any(g_params["conv5_1"]["kernel"])  # past the deepest layer: unused


@pytest.mark.parametrize("pooling", POOLINGS)
def test_grad_matches_finite_differences(x64, vgg_params, rng, pooling):
    params = jax.tree.map(lambda a: a.astype(jnp.float64), vgg_params)
    image = jnp.asarray(rng.uniform(size=(8, 8, 3)), jnp.float64)

    def loss(image):
        feats = vgg.extract_features(params, image, ["conv1_2", "conv2_1"], pooling, jnp.float64)
        return sum(jnp.sum(jnp.sin(f)) for f in feats.values())

    check_grads(jax.jit(loss), (image,), order=1, modes=["rev"], eps=1e-6)


def test_backward_kernels_keep_values_and_every_derivative(x64, random_params, rng):
    """Params with stored input-gradient kernels: the same features, gradients (image and
    kernels, by check_grads against finite differences too) and JVPs as the plain params."""
    params = jax.tree.map(lambda a: a.astype(jnp.float64), random_params)
    fast = vgg.with_backward_kernels(params, "conv2_1")
    assert set(fast["conv1_2"]) == {"kernel", "bias", "kernel_bwd"}
    assert set(fast["conv2_2"]) == {"kernel", "bias"}  # past ``upto``: left alone
    assert fast["conv1_2"]["kernel_bwd"].shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(
        fast["conv1_1"]["kernel_bwd"], np.swapaxes(params["conv1_1"]["kernel"][::-1, ::-1], 2, 3)
    )
    image = jnp.asarray(rng.uniform(size=(8, 10, 3)))
    layers = ("conv1_2", "conv2_1")

    def loss(p, x):
        feats = vgg.extract_features(p, x, layers, "max", jnp.float64)
        return sum(jnp.sum(jnp.sin(f)) for f in feats.values())

    np.testing.assert_allclose(loss(fast, image), loss(params, image), rtol=1e-12)
    g_fast = jax.grad(loss, argnums=(0, 1))(fast, image)
    g_plain = jax.grad(loss, argnums=(0, 1))(params, image)
    np.testing.assert_allclose(g_fast[1], g_plain[1], rtol=1e-10, atol=1e-12)
    for name in ("conv1_1", "conv1_2", "conv2_1"):
        np.testing.assert_allclose(
            g_fast[0][name]["kernel"], g_plain[0][name]["kernel"], rtol=1e-10, atol=1e-12
        )
    t = jnp.asarray(rng.standard_normal(image.shape))
    np.testing.assert_allclose(
        jax.jvp(lambda x: loss(fast, x), (image,), (t,))[1],
        jax.jvp(lambda x: loss(params, x), (image,), (t,))[1],
        rtol=1e-10,
    )
    check_grads(lambda x: loss(fast, x), (image,), order=2, modes=["fwd", "rev"], eps=1e-6)


def test_backward_kernels_remove_the_per_step_kernel_relayout(random_params):
    """Compiled gradient: the plain params flip every kernel (a ``reverse`` per conv), the
    stored backward kernels none -- the check sees the difference."""
    image = jnp.zeros((16, 16, 3), jnp.float32)
    layers = ("conv2_1",)

    def compiled(params):
        def loss(x, p):  # params as an argument, as in a run: no constant folding
            return jnp.sum(vgg.extract_features(p, x, layers)["conv2_1"])

        text = jax.jit(jax.grad(loss)).lower(image, params).compile().as_text()
        return len(re.findall(r"= f32\[3,3,\d+,\d+\]\S* reverse\(", text))

    assert compiled(random_params) == 3  # conv1_1, conv1_2, conv2_1
    assert compiled(vgg.with_backward_kernels(random_params, "conv2_1")) == 0


@pytest.mark.parametrize("shape", [(2, 12, 10, 5), (1, 9, 7, 3)])
def test_max_pool_matches_flax_with_ties_in_value_and_derivatives(rng, shape):
    """Same values, gradient and JVP as nn.max_pool, with many tied maxima (the first maximum of
    a window in row-major order takes the gradient) and odd sides (the last row/column dropped)."""
    import flax.linen as nn

    x = jnp.asarray(np.round(rng.standard_normal(shape) * 2).clip(0), jnp.float32)  # many ties
    ct = jnp.asarray(rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3])))

    def flax_pool(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2))

    for fn in (flax_pool, vgg.max_pool_2x2):
        assert fn(x).shape == ct.shape
    np.testing.assert_array_equal(vgg.max_pool_2x2(x), flax_pool(x))
    want = jax.vjp(flax_pool, x)[1](ct)[0]
    np.testing.assert_array_equal(
        jax.jit(lambda v: jax.vjp(vgg.max_pool_2x2, v)[1](ct)[0])(x), want
    )
    t = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    np.testing.assert_array_equal(
        jax.jvp(vgg.max_pool_2x2, (x,), (t,))[1], jax.jvp(flax_pool, (x,), (t,))[1]
    )
    # per image under vmap, as the variants of a run are
    grad_one = jax.grad(lambda v, c: jnp.sum(vgg.max_pool_2x2(v[None]) * c[None]))
    np.testing.assert_array_equal(jax.vmap(grad_one)(x, ct), want)


def test_unknown_layer_and_pooling_are_value_errors(vgg_params):
    image = jnp.zeros((16, 16, 3))
    with pytest.raises(ValueError, match="conv6_1"):
        vgg.extract_features(vgg_params, image, ["conv1_1", "conv6_1"])
    with pytest.raises(ValueError, match="'fc7'.*conv1_1"):
        vgg.extract_features(vgg_params, image, ["fc7"])
    with pytest.raises(ValueError, match="pooling"):
        vgg.extract_features(vgg_params, image, ["conv1_1"], pooling="min")


def test_preprocess_is_caffe_bgr_minus_mean_and_deprocess_inverts_it(rng):
    red = jnp.asarray([[1.0, 0.0, 0.0]])
    expected = [[-103.939, -116.779, 255.0 - 123.68]]  # BGR order, 0..255, mean subtracted
    np.testing.assert_allclose(vgg.preprocess(red), expected, rtol=1e-6)
    images = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
    x = vgg.preprocess(images)
    assert x.shape == images.shape and x.dtype == jnp.float32
    np.testing.assert_allclose(vgg.deprocess(x), images, atol=1e-6)
    np.testing.assert_allclose(vgg.preprocess(vgg.deprocess(x)), x, atol=1e-4)


def test_remat_gives_the_same_features_and_gradients(vgg_params):
    x = jax.random.uniform(jax.random.key(0), (32, 32, 3))
    layers = ("conv1_1", "conv3_1", "conv5_1")

    def loss(x, remat):
        feats = vgg.extract_features(vgg_params, x, layers, remat=remat)
        return sum(jnp.sum(f**2) for f in feats.values())

    plain, remat = jax.grad(loss)(x, False), jax.grad(loss)(x, True)
    np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-3 * float(jnp.abs(plain).max()))
    text = str(jax.make_jaxpr(lambda x: jax.grad(loss)(x, True))(x))
    assert "remat" in text or "checkpoint" in text  # the backward pass really recomputes
