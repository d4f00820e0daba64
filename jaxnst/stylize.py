"""Runs: ``StyleRun`` advanced chunk by chunk, the one run loop across scales, ``stylize()``.

``stylize(content, style)`` is the everyday call. ``run_scales`` is the loop behind it and behind
the CLI: for each coarse-to-fine scale it makes the problem, builds a ``StyleRun``, compiles and
advances it until it is done, calling the ``Hooks`` a driver gives it (progress, snapshots,
checkpoints, Ctrl-C, restoring a checkpoint), then hands the images to the next scale.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst import color, engine
from jaxnst.batch import make_batch
from jaxnst.color import color_swap
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.image import ImageLike, MaskLike, to_uint8
from jaxnst.losses import Objective, parts_dict
from jaxnst.memory import plan_memory, release_host_memory
from jaxnst.problem import Problem, check_memory_first, initial_images, make_problem
from jaxnst.scales import CoarseToFine, stage_config, summed
from jaxnst.solvers import StepInfo
from jaxnst.vgg import Params


def saved_pixels(xs: jax.Array) -> jax.Array:
    """What ``to_uint8`` writes, back in [0, 1]: round(clip(x) * 255) / 255, float32."""
    return jnp.round(jnp.clip(xs, 0.0, 1.0) * 255.0) / 255.0


@dataclass
class Result:
    """What a run produced. Arrays have a leading variant axis (n, ...)."""

    images: np.ndarray  # (n, h, w, 3) uint8
    history: list[dict[str, np.ndarray]]  # per variant: columns by name, a row per iteration
    iterations: np.ndarray  # (n,) optimiser steps taken
    evaluations: np.ndarray  # (n,) loss-and-gradient evaluations
    final_loss: list[dict[str, float]]  # per variant: the loss parts of the saved image
    config: StyleConfig
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    stopped: str = ""  # why the run ended early ("" if it ran to the end)

    @property
    def image(self) -> np.ndarray:
        """The first variant, (h, w, 3) uint8."""
        return self.images[0]


class StyleRun:
    """One scale of a run, advanced chunk by chunk: images, optimiser states and history.

    The examples (variants) are sharded over the devices; a count that does not divide evenly
    is padded with extra seeds whose results are dropped (they cost compute, never change the
    others). ``problem`` and ``cfg`` are kept as given; what the run derives from them (the
    memory plan, remat, the arrays on the devices) are attributes of its own.
    """

    def __init__(
        self,
        problem: Problem,
        cfg: StyleConfig,
        seeds: Sequence[int] | None = None,
        sweep: Mapping[str, Sequence[float]] | None = None,
        init: Any = None,
    ) -> None:
        """``init``: optional starting images (n, h, w, 3) in place of ``cfg.init``."""
        cfg.validate()
        sweep = dict(sweep or {})
        n = engine.example_count(cfg, sweep, seeds, problem.targets.examples())
        self.seeds = list(seeds) if seeds is not None else [cfg.seed + k for k in range(n)]
        self.n, self.cfg, self.problem = n, cfg, problem
        self.mesh = engine.example_mesh(cfg, n)
        self.padded = padded = engine.padded_count(n, self.mesh)
        devices = self.mesh.size if self.mesh is not None else 1
        self.remat, self.memory, self.memory_limit = plan_memory(
            problem.content.shape[-3:-1], cfg, n, padded, devices, engine.use_each(cfg),
            engine.example_bytes(problem.targets),
        )  # fmt: skip
        self.objective = Objective.from_config(cfg, remat=self.remat)

        # padding examples (dropped) take the next seeds, within jax.random.key's 32 bits
        run_seeds = self.seeds + [(self.seeds[-1] + 1 + k) % 2**32 for k in range(padded - n)]
        weights = engine.variant_weights(cfg, n, sweep)
        weights = jax.tree.map(
            lambda w: jnp.concatenate([w, w[-1:].repeat(padded - n, 0)]), weights
        )
        xs = initial_images(problem, cfg, run_seeds) if init is None else jnp.asarray(init)
        if xs.shape[0] != padded:
            xs = jnp.concatenate([xs, jnp.broadcast_to(xs[-1:], (padded - n, *xs.shape[1:]))])
        self.batch = make_batch(cfg, self.objective, self.mesh, xs, weights, problem.params,
                                problem.targets.padded(padded))  # fmt: skip
        self.program, self.scan = self.batch.program, engine.use_scan(cfg)
        self.executable: Any = None  # the program compiled for this run's shapes
        self.rows: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n)]
        self.timings = {"compile": 0.0, "run": 0.0}
        self.nonfinite = ""
        self.stalled = ""
        self.calls_made = 0  # by the last advance
        self._limit = jnp.asarray(cfg.iterations, jnp.int32)  # made once, not per step

    # -- the images, optimiser states and loss weights as stacked (n, ...) arrays
    @property
    def xs(self) -> jax.Array:
        return self.batch.xs

    @xs.setter
    def xs(self, value: jax.Array) -> None:
        self.batch.xs = value

    @property
    def states(self) -> Any:
        return self.batch.states

    @states.setter
    def states(self, value: Any) -> None:
        self.batch.states = value

    @property
    def weights(self) -> Any:
        return self.batch.weights

    def _leaf(self, name: str) -> np.ndarray | None:
        """One field of every example's optimiser state on the host (None if it has none)."""
        return self.batch.leaf(name)

    # -- inspection
    def iterations(self) -> np.ndarray:
        return self._leaf("iteration")[: self.n]

    def evaluations(self) -> np.ndarray:
        return self._leaf("evaluations")[: self.n]

    def active(self) -> np.ndarray:
        """(n,) bool: variants still stepping (below the limit, not converged)."""
        active = self._leaf("iteration") < np.int32(self.cfg.iterations)
        converged = self._leaf("converged")
        return (active if converged is None else active & ~converged)[: self.n]

    def fresh(self) -> bool:
        """Whether the next call only evaluates the start (L-BFGS's first call)."""
        fresh = self._leaf("fresh")
        return bool(np.any(fresh)) if fresh is not None else False

    def done(self) -> bool:
        if self.nonfinite or self.stalled:
            return True
        active = self.active()
        cap = 3 * self.cfg.iterations + 100  # a line search never needs this many: a safeguard
        if np.any(active & (self.evaluations() >= cap)):
            self.stalled = f"the line search stalled after {cap} evaluations"
            return True
        return not np.any(active)

    @property
    def stopped(self) -> str:
        """Why the run ended early ("" while it has not)."""
        return self.nonfinite or self.stalled

    def raw_images(self) -> np.ndarray:
        """The optimised images as the loss sees them, (n, h, w, 3) clipped (grey in luminance
        mode; the photo outside the masks' gate): what the next coarse-to-fine scale starts
        from."""
        xs = np.clip(self.batch.host_xs()[: self.n], 0.0, 1.0)
        t = self.problem.targets
        if t.gate is not None:  # spatial control: the image the loss saw, c + g (y - c)
            gate, anchor = np.asarray(t.gate), np.asarray(t.anchor)
            gate = gate[: self.n] if "gate" in t.per_example else gate
            anchor = anchor[: self.n] if "anchor" in t.per_example else anchor
            xs = anchor + gate * (xs - anchor)
        return xs

    def images(self) -> np.ndarray:
        """Current images, (n, h, w, 3) float32 in [0, 1] (clipped; in colour in luminance mode)."""
        images = self.raw_images()
        if self.cfg.color_mode == "luminance":  # the result's luminance, the content's colours
            y = color.luminance(images)
            images = np.asarray(color.combine_luminance(y, self.problem.content), np.float32)
        return images

    # -- stepping
    def _args(self) -> tuple:
        """The step program's arguments (with ``batching`` each: the first local example's)."""
        return self.batch.args(self._limit)

    def compile(self) -> float:
        """Compile the step program for this run's shapes (jit's cache makes a second run of
        the same shapes compile nothing) and return the seconds it took."""
        if self.executable is None:
            t0 = time.perf_counter()
            calls = np.int32(self.cfg.chunk) if self.scan else None
            self.executable = self.batch.compile(self._limit, calls)
            release_host_memory()
            self.timings["compile"] = time.perf_counter() - t0
        return self.timings["compile"]

    def advance(self, max_calls: int | None = None) -> int:
        """Run up to ``max_calls`` (default ``cfg.chunk``) step calls; return the calls made."""
        self.compile()
        calls = self.cfg.chunk if max_calls is None else max_calls
        # A call advances each variant by at most one iteration (L-BFGS's first call evaluates
        # x0 and advances none), so this many calls never overshoot the slowest variant.
        active = self.active()
        behind = self.cfg.iterations - self.iterations()[active] if active.any() else [0]
        calls = max(1, min(calls, int(np.max(behind)) + self.fresh()))
        t0 = time.perf_counter()
        host = (self.batch.chunk if self.scan else self.batch.steps)(calls, self._limit)
        self.timings["run"] += time.perf_counter() - t0
        self._record(host)
        self.calls_made = len(host)
        return len(host)

    def _record(self, infos: list[StepInfo]) -> None:
        adam = self.cfg.optimizer == "adam"
        for info in infos:
            cols = parts_dict(info.parts, self.objective)
            for k in range(self.n):
                if info.nonfinite[k] and not self.nonfinite:
                    self.nonfinite = (
                        f"variant {k} (seed {self.seeds[k]}): the loss became NaN or "
                        f"Inf at iteration {int(info.iteration[k])}; kept the last "
                        "finite image"
                    )
                if not info.accepted[k]:
                    continue
                row = {name: np.float64(v[k]) for name, v in cols.items()}
                row["iteration"] = int(info.iteration[k]) - (1 if adam else 0)
                row["evaluations"] = int(info.evaluations[k])
                self.rows[k].append(row)

    # -- results
    def history(self) -> list[dict[str, np.ndarray]]:
        """Per variant: {column: (rows,)}: iteration, evaluations, total, content, style, ..."""
        out = []
        for rows in self.rows:
            names = rows[0].keys() if rows else ["iteration", "evaluations", "total"]
            out.append({name: np.asarray([r[name] for r in rows]) for name in names})
        return out

    def final_loss(self) -> list[dict[str, float]]:
        """Loss parts of the images as saved: clipped and rounded to 8 bits (the PNG's pixels /
        255; in luminance mode the grey image the loss sees, before the content's colours go
        back on). Not the history's last row, the last iterate: with range-mode clip its pixels
        leave [0, 1] (issue 13). With ``batching`` each, each the lone run's."""
        cols = parts_dict(self.batch.loss(saved_pixels), self.objective)
        return [{k: float(v[i]) for k, v in cols.items()} for i in range(self.n)]

    def saved_images(self, original_colors: bool) -> np.ndarray:
        """The images as saved: (n, h, w, 3) uint8, the content's colours swapped in if asked."""
        images = self.images()
        if original_colors:  # the classic colour swap, after the run
            images = color_swap(images, self.problem.content)
        return to_uint8(images)

    def result(self) -> Result:
        return Result(
            images=self.saved_images(self.cfg.original_colors),
            history=self.history(),
            iterations=self.iterations(),
            evaluations=self.evaluations(),
            final_loss=self.final_loss(),
            config=self.cfg,
            seeds=self.seeds,
            timings=dict(self.timings),
            stopped=self.stopped,
        )


# ---------------------------------------------------------------------------- the run loop
class Hooks:
    """What a driver of ``run_scales`` does between the steps; the defaults do nothing.

    ``started`` sees each scale's run before it compiles (restore a checkpoint, print the memory
    plan), ``compiled`` after; ``calls`` says how many step calls to make before the next look
    (None: a chunk); ``advanced`` sees the run after each look (progress, snapshots); ``stop``
    asks the loop to end after the current look (Ctrl-C).
    """

    def started(self, run: StyleRun, scales: CoarseToFine) -> None:
        pass

    def compiled(self, run: StyleRun, seconds: float) -> None:
        pass

    def calls(self, run: StyleRun) -> int | None:
        return None

    def advanced(self, run: StyleRun, scales: CoarseToFine) -> None:
        pass

    def stop(self) -> bool:
        return False


@dataclass
class Outcome:
    """Where ``run_scales`` ended: the last scale's run and the plan of scales around it."""

    run: StyleRun
    scales: CoarseToFine
    interrupted: bool  # ``Hooks.stop`` ended it before the last scale was done
    timings: list[dict[str, float]]  # per scale run: load (targets), compile, run

    def result(self) -> Result:
        """The Result of the whole run: the last scale's images, every scale's history."""
        run, scales = self.run, self.scales
        return dataclasses.replace(
            run.result(),
            history=scales.history(run),
            iterations=scales.iterations(run),
            evaluations=scales.evaluations(run),
            config=scales.cfg,
            timings=summed(self.timings),
        )


def run_scales(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    cfg: StyleConfig,
    *,
    params: Params | None = None,
    seeds: Sequence[int] | None = None,
    sweep: Mapping[str, Sequence[float]] | None = None,
    masks: Sequence[MaskLike] | None = None,
    style_masks: Sequence[MaskLike] | None = None,
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
    hooks: Hooks | None = None,
    scales: CoarseToFine | None = None,
    problem: Problem | None = None,
    init: Any = None,
) -> Outcome:
    """The one run loop: every scale of ``cfg`` (one without ``cfg.scales``) from where the last
    left off, until done, NaN/Inf or ``hooks.stop()``. ``scales`` may be a plan already under
    way (a resumed run). A driver with its own targets (a video pass) gives ``problem`` and its
    starting images ``init`` instead of ``content`` and ``styles`` (one scale)."""
    hooks = hooks or Hooks()
    scales = scales or CoarseToFine(cfg)
    if problem is not None and len(scales.stages) > 1:
        raise ConfigError("a prepared problem has one scale: give no scales")
    if problem is None:  # the largest scale's memory plan, from the files' headers, before any
        masks_count = None if variant_masks is None else len(variant_masks)
        n = engine.example_count(cfg, dict(sweep or {}), seeds, masks_count)
        largest = max(scales.stages, key=lambda stage: stage.size)
        check_memory_first(content, styles, stage_config(scales.cfg, largest), n)
    timings: list[dict[str, float]] = []
    while True:
        scale_cfg = scales.config()
        t0 = time.perf_counter()
        if problem is None or scales.index > 0:
            problem = make_problem(
                content, styles, scale_cfg, params,
                masks=masks, style_masks=style_masks, variant_masks=variant_masks,
            )  # fmt: skip
            init = scales.initial_images(problem.content.shape[-3:-1])
        params = problem.params
        run = StyleRun(problem, scale_cfg, seeds=seeds, sweep=sweep, init=init)
        run.timings["targets"] = time.perf_counter() - t0
        hooks.started(run, scales)
        hooks.compiled(run, run.compile())
        while not run.done() and not hooks.stop():
            run.advance(hooks.calls(run))
            hooks.advanced(run, scales)
        timings.append(run.timings)
        interrupted = hooks.stop() and not (scales.last and run.done())
        if interrupted or run.stopped or scales.last:
            return Outcome(run, scales, interrupted, timings)
        scales.next(run)


def stylize(
    content: ImageLike,
    style: ImageLike | Sequence[ImageLike],
    config: StyleConfig | None = None,
    *,
    params: Params | None = None,
    sweep: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    callback: Callable[[StyleRun], Any] | None = None,
    masks: Sequence[MaskLike] | None = None,
    style_masks: Sequence[MaskLike] | None = None,
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
    **options: Any,
) -> Result:
    """Stylise ``content`` with ``style`` (one image or a list to blend).

    Images are paths, PIL images or arrays (uint8, uint16 or float in [0, 1]); ``options`` override
    fields of ``config`` (``StyleConfig()`` by default), e.g. ``size=256, optimizer="adam"``.
    ``sweep`` maps content_weight / style_weight / tv_weight / learning_rate (or
    style_layer_weights, rows of L) to one value per variant: a whole sweep in one compiled run, all
    variants from ``config.seed`` unless ``seeds`` are given. ``callback(run)`` is called after
    every chunk. ``masks`` / ``style_masks`` (paths or arrays) give spatial control like
    ``config.masks`` / ``config.style_masks``: a region of the content per style image;
    ``variant_masks`` (a ``masks`` list per variant) gives each variant its own regions in one
    compiled run, all from ``config.seed`` unless ``seeds`` are given. Returns a ``Result``:
    uint8 images (n, h, w, 3) and the loss history per variant.
    """
    cfg = (config or StyleConfig()).replace(**options).validate().with_seed()
    if (sweep or variant_masks is not None) and seeds is None:  # variants of one seed
        masks_count = None if variant_masks is None else len(variant_masks)
        seeds = [cfg.seed] * engine.example_count(cfg, dict(sweep or {}), None, masks_count)

    class Callback(Hooks):
        def advanced(self, run: StyleRun, scales: CoarseToFine) -> None:
            if callback is not None:
                callback(run)

    outcome = run_scales(
        content, style, cfg, params=params, seeds=seeds, sweep=sweep, masks=masks,
        style_masks=style_masks, variant_masks=variant_masks, hooks=Callback(),
    )  # fmt: skip
    return outcome.result()


__all__ = [
    "Hooks",
    "Outcome",
    "Result",
    "StyleRun",
    "run_scales",
    "stylize",
]
