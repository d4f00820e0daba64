"""The transformation network: sizes, range, the instance norm's invariance, training, counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnst import transform
from jaxnst.transform import MIN_SIDE, PARAM_COUNT, apply_transform, init_transform

apply = jax.jit(apply_transform, static_argnames="dtype")


@pytest.fixture(scope="module")
def params():
    return init_transform(jax.random.key(0))


def images(shape, seed=0, low=0.0, high=1.0):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32, low, high)


def test_param_count_matches_the_architecture(params):
    # (kernel, in, out) of each convolution, from the paper's table; a norm after all but the last
    convs = [(9, 3, 32), (3, 32, 64), (3, 64, 128)]
    convs += [(3, 128, 128)] * (2 * transform.RESIDUAL_BLOCKS)
    convs += [(3, 128, 64), (3, 64, 32), (9, 32, 3)]
    kernels = sum(k * k * c_in * c_out for k, c_in, c_out in convs)
    norms = sum(2 * c_out for _, _, c_out in convs[:-1])  # scale and offset
    assert kernels + norms + 3 == PARAM_COUNT  # + the output layer's bias
    assert transform.param_count(params) == PARAM_COUNT
    assert params["conv1"]["kernel"].shape == (9, 9, 3, 32)
    assert params["up1"]["kernel"].shape == (3, 3, 128, 64)  # resize-convolution, no transpose
    assert "bias" not in params["conv1"]  # removed by the norm anyway
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


@pytest.mark.parametrize("shape", [(MIN_SIDE, MIN_SIDE + 1, 3), (2, 33, 47, 3), (1, 64, 64, 3)])
def test_output_has_the_input_size_and_lies_in_0_1(params, shape):
    out = apply(params, images(shape))  # one image (h, w, 3) or a batch; odd sides too
    assert out.shape == shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 1e-3  # not a constant image


def test_too_small_images_are_refused(params):
    with pytest.raises(ValueError, match=r"4x9 px: .* at least 5x5"):
        apply_transform(params, images((1, 4, 9, 3)))
    with pytest.raises(ValueError, match="expected images"):
        apply_transform(params, images((1, 8, 8, 4)))


def test_output_range_holds_when_saturated(params):
    loud = {**params, "conv_out": {"kernel": params["conv_out"]["kernel"] * 1e4,
                                   "bias": params["conv_out"]["bias"]}}  # fmt: skip
    out = apply(loud, images((1, 16, 16, 3)))
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # sigmoid saturates, no overshoot


def test_instance_norm_removes_a_brightness_shift_and_nothing_else(params):
    x = images((1, 16, 16, 3), high=0.5)
    base = apply(params, x)
    # Adding a constant (per channel too) changes nothing: conv1 turns it into a per-channel
    # constant, kept constant at the borders by reflection padding, which the first norm removes.
    for shift in (0.5, jnp.array([0.1, 0.4, 0.2])):
        np.testing.assert_allclose(apply(params, x + shift), base, atol=2e-5)
    # A change that is not constant (a ramp, of the same size) does change the output.
    ramp = 0.5 * jnp.linspace(0.0, 1.0, 16)[None, None, :, None]
    assert float(jnp.abs(apply(params, x + ramp) - base).max()) > 1e-2


def test_images_in_a_batch_do_not_influence_each_other(params):
    # Instance norm, unlike batch norm: each image's statistics are its own.
    x = images((3, 16, 16, 3))
    batch = apply(params, x)
    # (up to rounding: XLA may pick another convolution algorithm for another batch size)
    np.testing.assert_allclose(apply(params, x[1:2]), batch[1:2], atol=1e-5)
    again = apply(params, x)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(batch))  # deterministic


def test_init_depends_on_the_key_only(params):
    same = init_transform(jax.random.key(0))
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), params, same)))
    other = init_transform(jax.random.key(1))
    assert not bool((other["conv1"]["kernel"] == params["conv1"]["kernel"]).all())


def test_bfloat16_compute_is_close_to_float32(params):
    x = images((1, 16, 16, 3))
    out = apply(params, x, dtype=jnp.bfloat16)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, apply(params, x), atol=0.05)


def test_a_few_adam_steps_lower_a_simple_loss(params):
    # Learn to invert the image: a task the random network does not already do.
    x = images((2, 16, 16, 3))
    tx = optax.adam(1e-3)

    def loss_fn(p):
        return jnp.mean((apply_transform(p, x) - (1.0 - x)) ** 2)

    @jax.jit
    def step(p, state):
        loss, grad = jax.value_and_grad(loss_fn)(p)
        updates, state = tx.update(grad, state, p)
        return optax.apply_updates(p, updates), state, loss

    p, state = params, tx.init(params)
    losses = []
    for _ in range(8):
        p, state, loss = step(p, state)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_width_scales_every_layer_and_is_read_back_from_the_params():
    small = init_transform(jax.random.key(0), width=8)
    assert transform.width_of(small) == 8
    assert small["conv1"]["kernel"].shape == (9, 9, 3, 8)
    assert small["res3_a"]["kernel"].shape == (3, 3, 32, 32)
    assert small["conv_out"]["kernel"].shape == (9, 9, 8, 3)
    shapes = jax.tree.map(lambda a: a.shape, transform.param_shapes(8))
    assert shapes == jax.tree.map(lambda a: a.shape, small)
    out = apply(small, images((1, 13, 11, 3)))
    assert out.shape == (1, 13, 11, 3)


def test_recorded_statistics_reproduce_the_images_own_normalisation(params):
    x = images((2, 20, 24, 3))
    stats = transform.transform_stats(params, x)
    assert stats["conv1_norm"]["mean"].shape == (2, 1, 1, 32)
    assert stats["res5_b_norm"]["var"].shape == (2, 1, 1, 128)
    np.testing.assert_array_equal(
        apply_transform(params, x, stats=stats), apply_transform(params, x)
    )
    # someone else's statistics change the result: the norms really read them
    swapped = jax.tree.map(lambda a: a[::-1], stats)
    assert float(jnp.abs(apply_transform(params, x, stats=swapped) - apply(params, x)).max()) > 1e-3
