"""The compiled programs: per-image steps mapped over a named example axis, sharded, jitted.

An *example* is one image being optimised: a variant (a seed or a sweep value), and later a video
frame or an image of a training batch. The per-image pieces (``solvers.make_step``,
``losses.loss_parts``) know nothing of the batch; here they are mapped over the leading axis of
the images, optimiser states and loss weights with ``vmap(axis_name="examples")`` and sharded
over a 1-D device mesh of the same name, params and shared targets replicated. The targets say
themselves which of their fields carry the example axis (``Targets.per_example``).

Every program is built once per (static config, objective, mesh) and kept (``functools.cache``):
jit's own cache then holds the executable per argument shape, so a second run of the same shapes
compiles nothing. What is traced (loss weights, the iteration limit) never changes a program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnst.config import SWEEPABLE, LossWeights, StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.layers import deepest
from jaxnst.losses import (
    Objective,
    Targets,
    content_targets,
    loss_parts,
    region_style_grams,
    style_grams,
)
from jaxnst.solvers import active_variants, init_state, make_step
from jaxnst.vgg import Params, with_backward_kernels

AXIS = "examples"  # the vmap axis name and the mesh axis of the examples


def precision_context(precision: str):
    """The matmul/conv precision context for tracing ("default" leaves XLA's choice)."""
    return jax.default_matmul_precision(None if precision == "default" else precision)


def example_mesh(cfg: StyleConfig, n: int) -> Mesh | None:
    """A 1-D mesh over the devices that share the ``n`` examples (None for a single device).

    Uses ``cfg.devices`` devices (0: all, over every host after ``jax.distributed.initialize``),
    never more than there are examples.
    """
    available = jax.devices()
    count = min(cfg.devices or len(available), len(available), max(n, 1))
    if jax.process_count() > 1:
        count = len(available)  # every host takes part in an SPMD program
    if count <= 1:
        return None
    return Mesh(np.asarray(available[:count]), (AXIS,))


def padded_count(n: int, mesh: Mesh | None) -> int:
    """``n`` rounded up to a multiple of the mesh's devices (padding examples are dropped)."""
    devices = mesh.size if mesh is not None else 1
    return -(-n // devices) * devices


def place(batch: Any, shared: Any, mesh: Mesh | None) -> tuple[Any, Any]:
    """``batch`` split over the mesh's example axis, ``shared`` replicated (as is without one)."""
    if mesh is None:
        return batch, shared
    split = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.device_put(batch, split), jax.device_put(
        shared, NamedSharding(mesh, PartitionSpec())
    )


def place_targets(targets: Targets, mesh: Mesh | None) -> Targets:
    """``targets`` on the mesh: per-example fields split over its example axis, the rest
    replicated (as is without a mesh)."""
    if mesh is None:
        return targets
    split = NamedSharding(mesh, PartitionSpec(AXIS))
    rep = NamedSharding(mesh, PartitionSpec())
    return dataclasses.replace(
        targets,
        **{
            name: jax.device_put(
                getattr(targets, name), split if name in targets.per_example else rep
            )
            for name in ("content", "style", "masks")
        },
    )


@functools.cache
def init_states(cfg: StyleConfig) -> Callable:
    """jit(vmap(init_state)): (xs (n,h,w,3), weights (n,...)) -> optimiser states (n, ...)."""
    return jax.jit(jax.vmap(lambda x, w: init_state(x, w, cfg), axis_name=AXIS))


def variant_weights(cfg: StyleConfig, n: int, sweep: Mapping[str, Sequence[float]]) -> LossWeights:
    """LossWeights with a leading axis (n,): the config's values, or per-variant sweep values.

    ``sweep`` maps a traced field (``config.SWEEPABLE``) to one value per variant; a field whose
    value is a list (style_layer_weights) takes one row per variant.
    """
    base = LossWeights.from_config(cfg)._asdict()
    out = {k: jnp.broadcast_to(v, (n,) + v.shape) for k, v in base.items()}
    for name, values in sweep.items():
        if name not in SWEEPABLE:
            raise ConfigError(f"cannot sweep {name!r}; choose from {', '.join(SWEEPABLE)}")
        slot = SWEEPABLE[name]
        arr = jnp.asarray(values, jnp.float32)
        if arr.shape != (n,) + base[slot].shape:
            if base[slot].ndim:
                raise ConfigError(f"sweep {name} must be {n} rows of {base[slot].shape[0]} weights")
            raise ConfigError(f"sweep {name} needs {n} finite values >= 0")
        if not bool(jnp.all(jnp.isfinite(arr) & (arr >= 0))):
            raise ConfigError(f"sweep {name} needs {n} finite values >= 0")
        out[slot] = arr
    return LossWeights(**out)


def to_host(x: Any) -> np.ndarray:
    """A (possibly sharded, possibly multi-host) array as one NumPy array on this host."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def use_scan(cfg: StyleConfig) -> bool:
    """Whether chunks run inside one compiled while_loop (GPU/TPU) or as a Python loop (CPU)."""
    # Measured (docs/benchmarks.md): the Python loop over one jitted step is faster on CPU
    # (jax-ml/jax#12868) and, with asynchronous dispatch, also on an H100 (3.5 ms against
    # 8.4 ms per Adam iteration at 512 px), so "auto" means the Python loop everywhere for now.
    return cfg.loop == "scan"


def step_params(params: Params, objective: Objective) -> Params:
    """The params the step programs get: each kernel also in its input-gradient layout, made
    once per run instead of on every step (``vgg.with_backward_kernels``)."""
    return with_backward_kernels(params, deepest(objective.layers))


def _shardings(mesh: Mesh | None, targets_axes: Any, chunked: bool) -> dict[str, Any]:
    """jit shardings that keep every per-example array split over the mesh's example axis."""
    if mesh is None:
        return {}
    batch = NamedSharding(mesh, PartitionSpec(AXIS))
    rep = NamedSharding(mesh, PartitionSpec())
    targets = jax.tree.map(
        lambda a: rep if a is None else batch, targets_axes, is_leaf=lambda a: a is None
    )
    info = NamedSharding(mesh, PartitionSpec(None, AXIS)) if chunked else batch
    outs = (batch, batch, info, rep) if chunked else (batch, batch, info)
    ins = (batch, batch, rep, targets, batch, rep) + ((rep,) if chunked else ())
    return {"in_shardings": ins, "out_shardings": outs}


def _mapped(one: Callable, targets: Targets) -> Callable:
    """``one`` (x, state, params, targets, weights, limit) mapped over the example axis."""
    return jax.vmap(one, in_axes=(0, 0, None, targets.in_axes(), 0, None), axis_name=AXIS)


@functools.cache
def batched_step(
    cfg: StyleConfig, objective: Objective, mesh: Mesh | None, per_example: tuple[str, ...] = ()
) -> Callable:
    """jit(vmap(step)): (xs (n,h,w,3), states, params, targets, weights (n,...), limit) -> ...

    Image and state buffers are donated: a step updates them in place. ``cfg`` is a
    ``config.static_config`` (the cache key); ``per_example`` the targets' per-example fields.
    """
    one = make_step(cfg, objective)

    def batched(xs, states, params, targets, weights, limit):
        with precision_context(cfg.precision):
            if xs.shape[0] > 1:
                return _mapped(one, targets)(xs, states, params, targets, weights, limit)
            # One example (the default): the unbatched step, its batch axis added back. Under
            # vmap each Gram matrix F^T F becomes a batched dot that XLA:CPU computes through a
            # transposed copy of F: 8-11% more time per Adam step at 256 px on one core.
            first = functools.partial(jax.tree.map, lambda a: a[0])
            out = one(xs[0], first(states), params, targets.example(0), first(weights), limit)
            return jax.tree.map(lambda a: a[None], out)

    return _jit(batched, mesh, per_example, chunked=False)


@functools.cache
def run_chunk(
    cfg: StyleConfig, objective: Objective, mesh: Mesh | None, per_example: tuple[str, ...] = ()
) -> Callable:
    """One compiled program for up to ``cfg.chunk`` batched steps in a ``lax.while_loop``.

    Stops early once every example has reached ``limit``. Returns (xs, states, infos, count)
    where ``infos`` is stacked over ``cfg.chunk`` calls of which the first ``count`` are valid.
    For GPUs and TPUs, where it removes per-step dispatch; on CPU a Python loop over
    ``batched_step`` is faster (jax-ml/jax#12868).
    """
    one = make_step(cfg, objective)

    def run(xs, states, params, targets, weights, limit, calls):
        step = _mapped(one, targets)
        with precision_context(cfg.precision):
            _, _, info0 = jax.eval_shape(step, xs, states, params, targets, weights, limit)
            buf = jax.tree.map(lambda s: jnp.zeros((cfg.chunk,) + s.shape, s.dtype), info0)

            def cond(carry):
                _, states, _, i = carry
                return (i < cfg.chunk) & (i < calls) & jnp.any(active_variants(states, limit))

            def body(carry):
                xs, states, buf, i = carry
                xs, states, info = step(xs, states, params, targets, weights, limit)
                buf = jax.tree.map(lambda b, v: b.at[i].set(v), buf, info)
                return xs, states, buf, i + 1

            xs, states, buf, count = jax.lax.while_loop(cond, body, (xs, states, buf, 0))
        return xs, states, buf, count

    return _jit(run, mesh, per_example, chunked=True)


def _jit(fn: Callable, mesh: Mesh | None, per_example: tuple[str, ...], chunked: bool) -> Callable:
    """jit ``fn`` with donated images and states, sharded over ``mesh`` if there is one."""
    if mesh is None:
        return jax.jit(fn, donate_argnums=(0, 1))
    layout = Targets({}, {}, per_example=per_example).in_axes()
    return jax.jit(fn, donate_argnums=(0, 1), **_shardings(mesh, layout, chunked))


@functools.cache
def batched_loss(objective: Objective, precision: str) -> Callable:
    """jit(vmap(loss_parts)) over the example axis: the final loss, no gradient."""

    def fn(xs, params, targets, weights):
        with precision_context(precision):
            loss = jax.vmap(
                lambda x, t, w: loss_parts(x, params, t, w, objective),
                (0, targets.in_axes(), 0),
                axis_name=AXIS,
            )
            return loss(xs, targets, weights)

    return jax.jit(fn)


@functools.cache
def targets_fns(objective: Objective, precision: str) -> tuple[Callable, Callable, Callable]:
    """Jitted (content_targets, style_grams, region_style_grams), params as an argument."""

    def content(params: Params, image: jax.Array):
        with precision_context(precision):
            return content_targets(params, image, objective)

    def style(params: Params, image: jax.Array):
        with precision_context(precision):
            return style_grams(params, image, objective)

    def region(params: Params, image: jax.Array, pyramid: Any):
        with precision_context(precision):
            return region_style_grams(params, image, pyramid, objective)

    return jax.jit(content), jax.jit(style), jax.jit(region)


__all__ = [
    "AXIS",
    "batched_loss",
    "batched_step",
    "example_mesh",
    "padded_count",
    "init_states",
    "place",
    "place_targets",
    "precision_context",
    "run_chunk",
    "step_params",
    "targets_fns",
    "to_host",
    "use_scan",
    "variant_weights",
]
