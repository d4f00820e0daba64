"""Optimisers for one image: Adam, and L-BFGS with a safeguarded one-evaluation-per-call step.

Both are written as pure steps of one image, ``step(x, state, params, targets, weights, limit)``,
that evaluate the loss and its gradient exactly once, so that a batch of variants advances in
lock step under ``vmap`` and a step contains no control flow (XLA:CPU runs convolutions inside
``while_loop``/``cond`` 4-5x slower, jax-ml/jax#12868).

L-BFGS: the direction is optax's ``scale_by_lbfgs`` (two-loop recursion, scaled initial Hessian,
first step capped to unit length). The step size comes from a backtracking Armijo search spread over
calls: each call evaluates the trial point ``x + t d``; if it decreases the loss enough (and is
finite) it is accepted, the L-BFGS memory is updated and ``t`` goes back to 1; otherwise ``x``
stays and ``t`` shrinks by safeguarded quadratic interpolation. The loss therefore never
increases and never becomes infinite, each variant has its own ``t``, and every call costs one
loss-and-gradient evaluation. An *iteration* is an accepted step; ``evaluations`` counts calls.

The steps here are for one image; ``jaxnst.engine`` maps them over the example axis and compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnst.color import to_luminance_image
from jaxnst.config import LossWeights, StyleConfig
from jaxnst.losses import LossParts, Objective, loss_parts

ARMIJO_C1 = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + c1 * <g, t d>
MIN_STEP = 1e-10  # below this the direction is useless: restart from steepest descent


class StepInfo(NamedTuple):
    """What one call of a step reports (per variant under vmap)."""

    parts: LossParts  # the loss at the point evaluated by this call
    accepted: jax.Array  # bool: x moved to the evaluated point (L-BFGS) / took a step (Adam)
    nonfinite: jax.Array  # bool: the evaluated loss or gradient held NaN or Inf
    iteration: jax.Array  # int32: optimiser steps taken so far, after this call
    evaluations: jax.Array  # int32: loss evaluations so far, after this call


class AdamState(NamedTuple):
    opt: Any
    iteration: jax.Array
    evaluations: jax.Array
    scale: jax.Array  # the power of two the gradient is multiplied by (1 unless it is huge)


class LbfgsState(NamedTuple):
    value: jax.Array  # f(x) * scale
    grad: jax.Array  # grad f(x) * scale
    direction: jax.Array  # d at x (a descent direction)
    step_size: jax.Array  # t of the next trial
    memory: Any  # optax ScaleByLBFGSState
    fresh: jax.Array  # bool: f, g, d at x not yet evaluated
    iteration: jax.Array
    evaluations: jax.Array
    scale: jax.Array  # the power of two that f and g are multiplied by (value, grad are scaled)
    restarted: jax.Array  # bool: the direction is a steepest-descent restart
    converged: jax.Array  # bool: no step from x decreases the loss: the variant is done


def project(x: jax.Array, cfg: StyleConfig) -> jax.Array:
    """Keep pixels in [0, 1] every step (range_mode "project") or leave them to the end.

    In luminance mode the image also stays grey (its luminance in all three channels): the
    optimisation is over luminance images, as in Gatys et al. 2017 sec. 5.1.
    """
    if cfg.color_mode == "luminance":
        x = to_luminance_image(x)  # RGB in: its luminance in all three channels
    return jnp.clip(x, 0.0, 1.0) if cfg.range_mode == "project" else x


def _tree_where(pred: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def make_value_and_grad(objective: Objective) -> Callable:
    """(x, params, targets, weights) -> ((total, parts), grad) for one image."""

    def fn(x, params, targets, weights):
        parts = loss_parts(x, params, targets, weights, objective)
        return parts.total, parts

    return jax.value_and_grad(fn, has_aux=True)


def _adam(cfg: StyleConfig) -> optax.GradientTransformation:
    # inject_hyperparams keeps the learning rate in the state: a traced, per-variant value.
    return optax.inject_hyperparams(optax.adam)(learning_rate=cfg.learning_rate)


def _lbfgs(cfg: StyleConfig) -> optax.GradientTransformation:
    return optax.scale_by_lbfgs(memory_size=cfg.lbfgs_memory)


def init_state(x: jax.Array, weights: LossWeights, cfg: StyleConfig) -> AdamState | LbfgsState:
    """Optimiser state for one image x (h, w, 3)."""
    zero = jnp.zeros((), jnp.int32)
    if cfg.optimizer == "adam":
        opt = _adam(cfg).init(x)
        opt.hyperparams["learning_rate"] = jnp.asarray(weights.learning_rate, jnp.float32)
        return AdamState(opt, zero, zero, jnp.ones((), jnp.float32))
    return LbfgsState(
        value=jnp.zeros((), jnp.float32),
        grad=jnp.zeros_like(x),
        direction=jnp.zeros_like(x),
        step_size=jnp.ones((), jnp.float32),
        memory=_lbfgs(cfg).init(x),
        fresh=jnp.ones((), bool),
        iteration=zero,
        evaluations=zero,
        scale=jnp.ones((), jnp.float32),
        restarted=jnp.zeros((), bool),
        converged=jnp.zeros((), bool),
    )


def _pow2_scale(g: jax.Array) -> jax.Array:
    """2^-k with 2^k >= max |g|: a scale that is exact in floating point."""
    top = jnp.max(jnp.abs(g))
    top = jnp.where(jnp.isfinite(top) & (top > 0), top, 1.0)
    return jnp.exp2(-jnp.ceil(jnp.log2(top))).astype(jnp.float32)


ADAM_MAX_GRAD = 2.0**40  # |g| up to this is left as it is: g^2 stays far below float32's max


def _adam_scale(g: jax.Array) -> jax.Array:
    """1, or the power of two that brings max |g| to at most ``ADAM_MAX_GRAD``."""
    return jnp.minimum(1.0, _pow2_scale(g) * ADAM_MAX_GRAD).astype(jnp.float32)


def _steepest(g: jax.Array) -> jax.Array:
    """-g scaled to length at most 1 (optax's first L-BFGS step)."""
    norm = jnp.sqrt(jnp.vdot(g, g))
    return -g * jnp.minimum(1.0, 1.0 / jnp.maximum(norm, 1e-30))


def active_variants(states: AdamState | LbfgsState, limit: Any) -> Any:
    """Which variants still step: below the iteration limit and (L-BFGS) not converged."""
    active = states.iteration < limit
    converged = getattr(states, "converged", None)
    return active if converged is None else active & ~converged


def _finite(value: jax.Array, grad: jax.Array) -> jax.Array:
    return jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))


def make_step(cfg: StyleConfig, objective: Objective | None = None) -> Callable:
    """step(x, state, params, targets, weights, limit) -> (x, state, StepInfo), for one image.

    ``cfg`` chooses the optimiser and the projection, ``objective`` the loss (default: the one
    ``cfg`` describes). ``limit`` (int32) is the number of iterations to reach: a variant that has
    reached it no longer changes, so a batch can run until its slowest variant is done.
    """
    value_and_grad = make_value_and_grad(objective or Objective.from_config(cfg))

    def adam_step(x, state: AdamState, params, targets, weights, limit):
        active = active_variants(state, limit)
        (_, parts), g = value_and_grad(x, params, targets, weights)
        finite = _finite(parts.total, g)
        # Adam squares the gradient: entries above ~1.8e19 (style weight 1e20 at 48 px) make v
        # infinite and every update 0, so the image would never move. As for L-BFGS, scale by a
        # power of two fixed at the first step, but only when the gradient is that large: Adam
        # is invariant to the scale apart from eps, and ordinary runs stay bit for bit.
        scale = jnp.where(state.evaluations == 0, _adam_scale(g), state.scale)
        updates, opt = _adam(cfg).update(g * scale, state.opt, x)
        accept = active & finite
        x = jnp.where(accept, project(optax.apply_updates(x, updates), cfg), x)
        opt = _tree_where(accept, opt, state.opt)
        it = state.iteration + accept.astype(jnp.int32)
        ev = state.evaluations + active.astype(jnp.int32)
        info = StepInfo(parts, accept, active & ~finite, it, ev)
        return x, AdamState(opt, it, ev, scale), info

    def lbfgs_step(x, state: LbfgsState, params, targets, weights, limit):
        active = (state.iteration < limit) & ~state.converged
        trial = jnp.where(state.fresh, x, project(x + state.step_size * state.direction, cfg))
        (f_raw, parts), g_raw = value_and_grad(trial, params, targets, weights)
        finite = _finite(f_raw, g_raw)
        # The search works on f * scale, a power of two fixed at x0 that brings the largest
        # gradient entry near 1: exact (no rounding), and |g|^2 cannot overflow float32 even when
        # the loss is 1e22. L-BFGS is invariant to this scaling apart from it.
        scale = jnp.where(state.fresh, _pow2_scale(g_raw), state.scale)
        f, g = f_raw * scale, g_raw * scale
        decrease = jnp.vdot(state.grad, trial - x)  # predicted first-order change (< 0)
        armijo = (f <= state.value + ARMIJO_C1 * decrease) & (decrease < 0)
        accept = active & finite & (state.fresh | armijo)

        # The new direction, used only if the trial is accepted (computed always: no cond).
        tx = _lbfgs(cfg)
        u, memory = tx.update(g, state.memory, trial)
        d = -u
        steepest = _steepest(g)
        descent = (jnp.vdot(g, d) < 0) & jnp.all(jnp.isfinite(d))
        d = jnp.where(descent, d, steepest)  # lost curvature information: restart the memory
        memory = _tree_where(descent, memory, tx.init(x))

        # Rejected: shrink t by the minimiser of the quadratic through f(x), f'(x; s), f(x + s).
        curvature = f - state.value - decrease
        ratio = -decrease / (2.0 * curvature)
        ratio = jnp.where(jnp.isfinite(ratio) & finite & (curvature > 0), ratio, 0.1)
        shrunk = state.step_size * jnp.clip(ratio, 0.1, 0.5)
        # Give up a direction whose step became tiny: restart from steepest descent with fresh
        # memory; if even that fails (or the gradient is 0), x is stationary: converged.
        stuck = shrunk < MIN_STEP
        rejected = state._replace(
            direction=jnp.where(stuck, _steepest(state.grad), state.direction),
            step_size=jnp.where(stuck, 1.0, shrunk),
            memory=_tree_where(stuck, tx.init(x), state.memory),
            restarted=stuck,
            converged=(stuck & state.restarted) | ~jnp.any(state.grad != 0),
        )
        taken = LbfgsState(
            value=f,
            grad=g,
            direction=d,
            step_size=jnp.ones((), jnp.float32),
            memory=memory,
            fresh=jnp.zeros((), bool),
            iteration=state.iteration + (~state.fresh).astype(jnp.int32),
            evaluations=state.evaluations,
            scale=scale,
            restarted=~descent,
            converged=~jnp.any(g != 0),
        )
        new = _tree_where(accept, taken, rejected)
        new = _tree_where(active, new, state)
        new = new._replace(evaluations=state.evaluations + active.astype(jnp.int32))
        x = jnp.where(accept, trial, x)
        # A non-finite trial point is just rejected (the search backs off); only a non-finite
        # starting image is an error.
        bad = active & ~finite & state.fresh
        info = StepInfo(parts, accept, bad, new.iteration, new.evaluations)
        return x, new, info

    return adam_step if cfg.optimizer == "adam" else lbfgs_step


__all__ = [
    "AdamState",
    "LbfgsState",
    "StepInfo",
    "active_variants",
    "init_state",
    "make_step",
    "make_value_and_grad",
    "project",
]
