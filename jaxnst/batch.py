"""A run's examples on their devices, and the step calls that advance them.

Two ways to hold and step the ``padded`` examples (variants, frames) of a ``StyleRun``, with one
interface (``xs`` and ``states`` as stacked (n, ...) arrays, ``leaf``, ``steps``, ``chunk``,
``loss``):

- ``Stacked`` (``batching`` vmap, the GPU/TPU default): (n, ...) arrays sharded over the mesh's
  example axis, advanced by one vmapped program (``engine.batched_step`` / ``run_chunk``).
- ``Examples`` (``batching`` each, the CPU default): a list. Example k's image, optimiser state,
  loss weights and targets live on the device the mesh's example axis gives it, and the compiled
  one-image step (``engine.one_step`` / ``one_chunk``) is called once per example and call; the
  calls are dispatched asynchronously, so the devices still work in parallel. Example k of any
  number of variants, devices or processes is computed by the same executable on the same
  numbers as the lone run with its seed: the same bytes (``engine``'s docstring says why vmap
  does not give them). Its stacked views are made on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnst import engine
from jaxnst.config import StyleConfig, static_config
from jaxnst.losses import LossParts, Objective, Targets
from jaxnst.solvers import StepInfo

Pixels = Callable[[jax.Array], jax.Array]  # the images a final loss is taken of


class Stacked:
    """All examples in (padded, ...) arrays on the mesh, advanced by one vmapped program."""

    def __init__(self, cfg: StyleConfig, objective: Objective, mesh: Mesh | None, xs: Any,
                 weights: Any, params: Any, targets: Targets, scan: bool) -> None:  # fmt: skip
        static = static_config(cfg)
        (self.xs, self.weights), self.params = engine.place((xs, weights), params, mesh)
        self.targets = engine.place_targets(targets, mesh)
        self.step_params = engine.step_params(self.params, objective)
        self.states = engine.init_states(static)(self.xs, self.weights)
        if mesh is not None:
            self.states = engine.place(self.states, None, mesh)[0]
        make = engine.run_chunk if scan else engine.batched_step
        self.program = make(static, objective, mesh, self.targets.per_example)
        self.loss_fn = engine.batched_loss(objective, cfg.precision)
        self.executable: Any = None

    def args(self, limit: jax.Array) -> tuple:
        return (self.xs, self.states, self.step_params, self.targets, self.weights, limit)

    def compile(self, limit: jax.Array, calls: Any) -> Any:
        """The program compiled for these shapes (``calls``: scan's argument, or None)."""
        extra = () if calls is None else (calls,)
        self.executable = self.program.lower(*self.args(limit), *extra).compile()
        return self.executable

    def leaf(self, name: str) -> np.ndarray | None:
        """One field of the states, (padded, ...) on the host; None if they have none."""
        leaf = getattr(self.states, name, None)
        return None if leaf is None else engine.to_host(leaf)

    def host_xs(self) -> np.ndarray:
        return engine.to_host(self.xs)

    def steps(self, calls: int, limit: jax.Array) -> list[StepInfo]:
        """``calls`` calls of the program: each call's infos, (padded, ...) on the host."""
        infos = []
        for _ in range(calls):
            self.xs, self.states, info = self.executable(*self.args(limit))
            infos.append(info)
        if jax.process_count() == 1:
            return jax.device_get(infos)  # one transfer for the whole chunk
        return [jax.tree.map(engine.to_host, info) for info in infos]

    def chunk(self, calls: int, limit: jax.Array) -> list[StepInfo]:
        """Up to ``calls`` calls in one while_loop program: the infos of the calls made."""
        self.xs, self.states, buf, count = self.executable(*self.args(limit), np.int32(calls))
        buf = jax.tree.map(engine.to_host, buf)  # slice on the host: no tiny device programs
        return [jax.tree.map(lambda b, i=i: b[i], buf) for i in range(int(count))]

    def loss(self, pixels: Pixels) -> LossParts:
        """The loss parts of ``pixels(xs)``, (padded, ...) on the host."""
        parts = self.loss_fn(pixels(self.xs), self.params, self.targets, self.weights)
        return jax.tree.map(engine.to_host, parts)


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


class Examples:
    """Every example in one-image arrays on its device (this process's examples only), each
    advanced by the one-image program. ``xs``, ``weights``, ``params`` and ``targets`` come
    whole, as every process computes them; the states are made here, as the lone run makes its."""

    def __init__(self, cfg: StyleConfig, objective: Objective, mesh: Mesh | None, xs: Any,
                 weights: Any, params: Any, targets: Targets, scan: bool) -> None:  # fmt: skip
        static = static_config(cfg)
        self.mesh, self.padded = mesh, int(xs.shape[0])
        if mesh is None:
            self.devices = [jax.local_devices()[0]] * self.padded
        else:
            flat, per = list(mesh.devices.flat), self.padded // mesh.size
            self.devices = [flat[k // per] for k in range(self.padded)]
        here = {d.id for d in jax.local_devices()}
        self.local = [k for k in range(self.padded) if self.devices[k].id in here]
        self.on = {self.devices[k].id: self.devices[k] for k in self.local}  # id -> device
        self.weights, self.targets, self.params = weights, targets, params  # stacked, as given
        states = engine.init_states(static)(xs, weights)
        step_params = jax.tree.map(np.asarray, engine.step_params(params, objective))
        host_targets, host_weights = jax.tree.map(np.asarray, (targets, weights))
        self._params = {i: jax.device_put(step_params, d) for i, d in self.on.items()}
        shared = {i: jax.device_put(host_targets, d) for i, d in self.on.items()}
        self._targets = {
            k: jax.device_put(host_targets.example(k), self.devices[k])
            if targets.per_example else shared[self.devices[k].id]
            for k in self.local
        }  # fmt: skip
        self._weights = {
            k: jax.device_put(jax.tree.map(lambda a, k=k: a[k], host_weights), self.devices[k])
            for k in self.local
        }
        self._xs, self._states = self.split(xs), self.split(states)
        self.program = (engine.one_chunk if scan else engine.one_step)(static, objective)
        self.loss_fn = engine.one_loss(objective, cfg.precision)
        self.fns: dict[int, Any] = {}  # device id -> the program compiled for it
        self.limits: dict[int, jax.Array] = {}

    # -- stacked views of the per-example arrays
    @property
    def xs(self) -> jax.Array:
        return self.stacked(self._xs)

    @xs.setter
    def xs(self, value: Any) -> None:
        self._xs = self.split(value)

    @property
    def states(self) -> Any:
        return self.stacked(self._states)

    @states.setter
    def states(self, value: Any) -> None:
        self._states = self.split(value)

    def split(self, stacked: Any) -> dict[int, Any]:
        """A stacked (n, ...) tree (host, one device or sharded) -> {example: its tree}."""
        leaves, treedef = jax.tree.flatten(stacked)
        per_leaf = [self._split_leaf(leaf) for leaf in leaves]
        return {k: jax.tree.unflatten(treedef, [p[k] for p in per_leaf]) for k in self.local}

    def _split_leaf(self, a: Any) -> dict[int, jax.Array]:
        if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1:
            out = {}
            for shard in a.addressable_shards:  # this process's blocks, already in place
                start = shard.index[0].start or 0
                for i in range(shard.data.shape[0]):
                    out[start + i] = jnp.array(shard.data[i], copy=True)
            return out
        host = np.asarray(a)
        return {k: jax.device_put(host[k], self.devices[k]) for k in self.local}

    def stacked(self, per_example: dict[int, Any]) -> Any:
        """{example: tree} -> one (padded, ...) tree: on one device, or sharded over the mesh's
        example axis (across processes: a global array of which each holds its blocks)."""
        if self.mesh is None:
            return _stack([per_example[k] for k in range(self.padded)])
        by_device: dict[Any, list[Any]] = {}
        for k in self.local:
            by_device.setdefault(self.devices[k], []).append(per_example[k])
        blocks = [_stack(v) for v in by_device.values()]
        sharding = NamedSharding(self.mesh, PartitionSpec(engine.AXIS))
        leaves, treedef = jax.tree.flatten(blocks[0])
        out = []
        for i, leaf in enumerate(leaves):
            arrays = [jax.tree.leaves(b)[i] for b in blocks]
            shape = (self.padded, *leaf.shape[1:])
            out.append(jax.make_array_from_single_device_arrays(shape, sharding, arrays))
        return jax.tree.unflatten(treedef, out)

    def gather(self, per_example: dict[int, Any]) -> Any:
        """{example: tree} -> one (padded, ...) tree of NumPy arrays on this host, in one
        transfer (a collective in a multi-process run: every process calls it)."""
        if jax.process_count() == 1:
            host = jax.device_get([per_example[k] for k in range(self.padded)])
            return jax.tree.map(lambda *a: np.stack(a), *host)
        return jax.tree.map(engine.to_host, self.stacked(per_example))

    def leaf(self, name: str) -> np.ndarray | None:
        """One field of every example's state, (padded, ...) on the host; None if absent."""
        if not hasattr(next(iter(self._states.values())), name):
            return None
        return self.gather({k: getattr(s, name) for k, s in self._states.items()})

    def host_xs(self) -> np.ndarray:
        return self.gather(self._xs)

    # -- compiling and stepping
    def args(self, limit: jax.Array, k: int | None = None) -> tuple:
        """Example ``k``'s arguments of the step (default: the first local example's)."""
        k = self.local[0] if k is None else k
        d = self.devices[k].id
        limit = self.limits.get(d, limit)
        return (self._xs[k], self._states[k], self._params[d], self._targets[k], self._weights[k],
                limit)  # fmt: skip

    def compile(self, limit: jax.Array, calls: Any) -> Any:
        """The program compiled for each local device (one executable per device; jit's cache
        makes a second run of the same shapes compile nothing); the first one."""
        self.limits = {i: jax.device_put(limit, d) for i, d in self.on.items()}
        extra = () if calls is None else (calls,)
        for k in self.local:
            d = self.devices[k].id
            if d not in self.fns:
                self.fns[d] = self.program.lower(*self.args(limit, k), *extra).compile()
        return self.fns[self.devices[self.local[0]].id]

    def _call(self, k: int, limit: jax.Array, *extra: Any) -> Any:
        return self.fns[self.devices[k].id](*self.args(limit, k), *extra)

    def steps(self, calls: int, limit: jax.Array) -> list[StepInfo]:
        """``calls`` calls of every local example: each call's infos, (padded, ...) on the host."""
        made = []
        for _ in range(calls):
            infos = {}
            for k in self.local:
                self._xs[k], self._states[k], infos[k] = self._call(k, limit)
            made.append(infos)
        if jax.process_count() == 1:  # one transfer, stacked on the host: no device programs
            host = jax.device_get([[m[k] for k in range(self.padded)] for m in made])
            return [jax.tree.map(lambda *a: np.stack(a), *row) for row in host]
        host = self.gather({k: _stack([m[k] for m in made]) for k in self.local})
        return [jax.tree.map(lambda a, i=i: a[:, i], host) for i in range(calls)]

    def chunk(self, calls: int, limit: jax.Array) -> list[StepInfo]:
        """Up to ``calls`` calls of every local example, each in its own while_loop program:
        the infos of the calls the busiest example made (the others' slots are not accepted)."""
        bufs, counts = {}, {}
        for k in self.local:
            self._xs[k], self._states[k], bufs[k], counts[k] = self._call(k, limit, np.int32(calls))
        made = int(np.max(self.gather(counts)))
        host = self.gather(bufs)  # (padded, chunk, ...)
        return [jax.tree.map(lambda a, i=i: a[:, i], host) for i in range(made)]

    def loss(self, pixels: Pixels) -> LossParts:
        """The loss parts of every example's ``pixels(x)``, (padded, ...) on the host: each the
        one the lone run computes."""
        parts = {}
        for k in self.local:
            d = self.devices[k].id
            x = pixels(self._xs[k])
            parts[k] = self.loss_fn(x, self._params[d], self._targets[k], self._weights[k])
        return self.gather(parts)


def make_batch(cfg: StyleConfig, objective: Objective, mesh: Mesh | None, xs: Any, weights: Any,
               params: Any, targets: Targets) -> Stacked | Examples:  # fmt: skip
    """The examples of a run held and stepped as ``cfg`` says (``engine.use_each``)."""
    kind = Examples if engine.use_each(cfg) else Stacked
    return kind(cfg, objective, mesh, xs, weights, params, targets, engine.use_scan(cfg))


__all__ = ["Examples", "Stacked", "make_batch"]
