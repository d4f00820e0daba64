"""Video: a clip's frames as the example axis, kept consistent by a temporal loss and passes.

Ruder, Dosovitskiy & Brox, *Artistic Style Transfer for Videos* (GCPR 2016; IJCV 2018). Each
frame i is compared with its neighbours' stylised frames warped onto it by the optical flow,
weighted by the flow's reliability c (``jaxnst.flow``): gamma * L_temporal joins the image
objective (``losses.temporal_loss``). Three modes (``cfg.video_mode``):

- ``multipass`` (default): every pass optimises *all* frames as one batch, each against both
  neighbours of the previous pass (frame distances ``cfg.long_term``), starting from its own
  previous result blended with its warped neighbours (delta = ``cfg.blend``). The paper's passes
  are sequential inside a pass (frame i sees frame i-1 of the same pass) and alternate their
  direction; here a pass is one batched, sharded program (Jacobi instead of Gauss-Seidel), so
  consistency spreads a frame per pass in both directions at once, and the frames of a pass can
  be split into chunks in any order with the same result. The temporal loss starts at pass
  ``cfg.temporal_from``; the iterations are split evenly between the ``cfg.passes`` passes.
- ``sequential`` (the paper's single pass): frame by frame, each started from the previous
  stylised frame warped onto it and held to the earlier frames of ``cfg.long_term``.
- ``independent``: every frame on its own, all in one batch: the baseline that flickers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnst import flow
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.image import ImageLike, MaskLike
from jaxnst.problem import Problem, make_problem
from jaxnst.stylize import Hooks, StyleRun, run_scales
from jaxnst.vgg import Params

IMAGENET_MEAN_RGB = (123.68 / 255, 116.779 / 255, 103.939 / 255)  # outside the previous frame


@dataclass(frozen=True)
class Neighbours:
    """Each frame's neighbours for the temporal term: K slots per frame, the earlier ones
    (i - j for j in J) then the later ones (i + j).

    index (n, K) int: the neighbour (the frame itself where there is none); flow (n, K, h, w, 2):
    its pixels pulled onto frame i by ``flow.warp``; weights (n, K, h, w): c, 0 where there is
    no neighbour, combined per direction by ``flow.long_term_weights``.
    """

    index: np.ndarray
    flow: jax.Array
    weights: jax.Array
    distances: tuple[int, ...]

    @property
    def earlier(self) -> slice:
        return slice(0, len(self.distances))

    def only(self, side: slice) -> jax.Array:
        """The weights with every slot but ``side`` at zero."""
        keep = np.zeros(self.index.shape[1], bool)
        keep[side] = True
        return self.weights * jnp.asarray(keep)[None, :, None, None]


def neighbours(
    frames: np.ndarray, distances: Sequence[int], method: str = "dis", cache_dir: Any = None
) -> Neighbours:
    """Flows and reliabilities of every frame towards its neighbours at ``distances`` (J).

    frames (n, h, w, 3) in [0, 1] at the working size; flows are computed once per distance and
    cached in ``cache_dir`` (``flow.clip_flows``).
    """
    n, h, w, _ = frames.shape
    js = sorted(set(int(j) for j in distances))
    index = np.tile(np.arange(n)[:, None], (1, 2 * len(js)))
    flows = np.zeros((n, 2 * len(js), h, w, 2), np.float32)
    weights = np.zeros((n, 2 * len(js), h, w), np.float32)
    for slot, j in enumerate(js):
        if j >= n:
            continue
        pair = flow.clip_flows(frames, step=j, method=method, cache_dir=cache_dir)
        c_forward, c_backward = (np.asarray(c) for c in flow.clip_reliability(pair))
        later = len(js) + slot
        for k in range(n - j):
            index[k + j, slot], flows[k + j, slot], weights[k + j, slot] = (
                k,
                pair.backward[k],
                c_backward[k],
            )  # frame k pulled onto k + j
            index[k, later], flows[k, later], weights[k, later] = (
                k + j,
                pair.forward[k],
                c_forward[k],
            )  # frame k + j pulled onto k
    weights = jnp.asarray(weights)
    combine = jax.vmap(flow.long_term_weights)  # nearest first, per direction
    side = len(js)
    weights = jnp.concatenate([combine(weights[:, :side]), combine(weights[:, side:])], axis=1)
    return Neighbours(index, jnp.asarray(flows), weights, tuple(js))


@jax.jit
def _warp_all(xs: jax.Array, index: jax.Array, flows: jax.Array) -> jax.Array:
    """(n, K, h, w, 3): every frame's neighbours (xs[index]) pulled onto it."""
    return jax.vmap(jax.vmap(flow.warp))(xs[index], flows)


def temporal_targets(xs: jax.Array, nb: Neighbours, weights: jax.Array) -> dict[str, jax.Array]:
    """The temporal part of the targets: the neighbours' stylised frames ``xs`` warped onto
    each frame, with ``weights`` (n, K, h, w) (``Neighbours.weights`` or a part of them)."""
    return {"warped": _warp_all(xs, jnp.asarray(nb.index), nb.flow), "weights": weights}


def blended(xs: jax.Array, nb: Neighbours, delta: float) -> jax.Array:
    """Where a multipass frame starts its next pass: its last result averaged with its direct
    neighbours warped onto it, x' = (x + b sum_k c_k w_k) / (1 + b sum_k c_k), b = delta/(1-delta)
    (Ruder et al.'s blend; delta = 0.5 weighs a reliable neighbour like the frame itself)."""
    if delta <= 0:
        return xs
    direct = [0, len(nb.distances)] if nb.distances[0] == 1 else []
    if not direct:
        return xs
    b = delta / max(1.0 - delta, 1e-6)
    warped = _warp_all(xs, jnp.asarray(nb.index), nb.flow)[:, direct]
    c = b * nb.weights[:, direct, ..., None]
    return (xs + jnp.sum(c * warped, axis=1)) / (1.0 + jnp.sum(c, axis=1))


def warping_error(xs: Any, frames: np.ndarray, method: str = "dis", cache_dir: Any = None) -> float:
    """Temporal consistency (Lai et al., ECCV 2018): the mean over frames t >= 1 of the
    reliability-weighted mean squared difference between stylised frame t and stylised frame
    t-1 warped by the *input's* flow. xs, frames: (n, h, w, 3) in [0, 1]."""
    nb = neighbours(np.asarray(frames, np.float32), (1,), method, cache_dir)
    xs = jnp.asarray(np.asarray(xs, np.float32))
    warped = _warp_all(xs, jnp.asarray(nb.index), nb.flow)[:, 0]
    c = nb.weights[:, 0]
    per_frame = jnp.sum(c[..., None] * (xs - warped) ** 2, axis=(1, 2, 3)) / jnp.maximum(
        3 * jnp.sum(c, axis=(1, 2)), 1.0
    )
    return float(jnp.mean(per_frame[1:]))


@dataclass
class VideoState:
    """Where a video run stands, and all it needs to go on (a checkpoint holds this).

    ``current`` (n, h, w, 3): this pass's images, final for the first ``done`` frames and the
    pass's starting images for the rest; ``last``: the previous pass's results (multipass).
    """

    current: np.ndarray
    pass_index: int = 1  # 1-based
    done: int = 0
    last: np.ndarray | None = None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per batch
    passes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per finished pass


@dataclass
class VideoResult:
    """What a video run produced: frames (n, h, w, 3) uint8, per pass its timings and losses."""

    frames: np.ndarray
    config: StyleConfig
    passes: list[dict[str, Any]]  # per pass: seconds, mean final loss parts over the frames
    flow: dict[str, Any]  # method, distances, share of reliable pixels
    stopped: str = ""  # why it ended early ("" when it ran to the end)
    state: VideoState | None = None  # where it stopped: resume from here
    run: StyleRun | None = None  # the run it stopped in (its optimiser state, for a checkpoint)


def _sliced(problem: Problem, frames: np.ndarray, temporal: Any) -> Problem:
    """``problem`` (a clip) restricted to ``frames``, with per-frame ``temporal`` targets."""
    t = problem.targets
    take = {k: jax.tree.map(lambda a: a[frames], getattr(t, k)) for k in t.per_example}
    per_example = t.per_example
    if temporal is not None:
        take["temporal"] = temporal
        per_example = tuple(dict.fromkeys((*per_example, "temporal")))
    targets = dataclasses.replace(t, per_example=per_example, **take)
    return dataclasses.replace(
        problem, content=problem.content[frames], work_content=problem.work_content[frames],
        targets=targets,
    )  # fmt: skip


class VideoHooks(Hooks):
    """Hooks of a video run: those of each batch's run, plus the video's own events."""

    def piece_started(self, state: VideoState, frames: np.ndarray, passes: int) -> None:
        """A batch of ``frames`` of pass ``state.pass_index`` (of ``passes``) is about to run."""

    def pass_done(self, state: VideoState, record: dict[str, Any]) -> None:
        """A pass is done: ``state.current`` holds its images (before the next pass starts)."""


def stylize_video(
    frames: np.ndarray,
    styles: ImageLike | Sequence[ImageLike],
    config: StyleConfig | None = None,
    *,
    params: Params | None = None,
    masks: Sequence[MaskLike] | None = None,
    frame_masks: Sequence[Sequence[MaskLike]] | None = None,
    cache_dir: str | Path | None = None,
    hooks: VideoHooks | None = None,
    resume: VideoState | None = None,
    **options: Any,
) -> VideoResult:
    """Stylise a clip: frames (n, h, w, 3) in [0, 1] at the working size (``videoio.read_video``
    with ``long_side=cfg.size``), with ``styles`` as ``stylize`` takes them.

    ``masks`` (one set for every frame) or ``frame_masks`` (a set per frame) give spatial
    control; ``cache_dir`` keeps the optical flows; ``resume`` continues from where an earlier
    run stopped (``VideoResult.state``). ``cfg.video_batch`` frames make a batch (0: all).
    """
    cfg = (config or StyleConfig()).replace(**options).validate()
    cfg = cfg.replace(auto_scales=False)  # a clip is stylised at one size
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[0] < 2 or frames.shape[-1] != 3:
        raise ConfigError(f"a clip needs two or more frames (n, h, w, 3), not {frames.shape}")
    if cfg.scales:
        raise ConfigError("scales (coarse to fine) are not supported for video: set size only")
    hooks = hooks or VideoHooks()
    n = frames.shape[0]
    problem = make_problem(frames, styles, cfg.replace(variants=1), params, masks=masks,
                           variant_masks=frame_masks)  # fmt: skip
    nb = None
    if cfg.video_mode != "independent":
        nb = neighbours(problem.content, cfg.long_term, cfg.flow, cache_dir)
    state = resume or VideoState(np.asarray(_start(problem, cfg)))
    if state.current.shape != frames.shape:
        raise ConfigError(f"resume: the saved frames are {state.current.shape}, not {frames.shape}")
    passes = cfg.passes if cfg.video_mode == "multipass" else 1
    run_cfg = cfg.replace(iterations=max(1, -(-cfg.iterations // passes)))
    batch = 1 if cfg.video_mode == "sequential" else (cfg.video_batch or n)
    while state.pass_index <= passes:
        p, t0 = state.pass_index, time.perf_counter()
        if cfg.video_mode == "multipass" and state.done == 0 and p > 1:  # a new pass begins
            state.last = state.current
            state.current = np.asarray(blended(jnp.asarray(state.last), nb, cfg.blend))
        temporal = None
        if cfg.video_mode == "multipass":  # the previous pass's neighbours, once per pass
            weights = nb.weights if p >= cfg.temporal_from else jnp.zeros_like(nb.weights)
            last = state.last if state.last is not None else state.current
            temporal = temporal_targets(jnp.asarray(last), nb, weights)
        for piece in _batches(n, batch):
            if piece[0] < state.done:
                continue
            init, piece_temporal = _piece(state, piece, nb, cfg, temporal)
            hooks.piece_started(state, piece, passes)
            run = _run_batch(_sliced(problem, piece, piece_temporal), run_cfg, init, hooks)
            stopped = run.stopped or ("interrupted" if hooks.stop() and not run.done() else "")
            if stopped:
                return _result(state, cfg, nb, stopped, run)
            state.current = state.current.copy()
            state.current[piece] = run.raw_images()
            state.done = int(piece[-1]) + 1
            state.records.append({"pass": p, "frames": [int(piece[0]), int(piece[-1])],
                                  "loss": run.final_loss()})  # fmt: skip
        record = _pass_record(state, p, time.perf_counter() - t0)
        state.passes.append(record)
        hooks.pass_done(state, record)
        state.pass_index, state.done = p + 1, 0
    return _result(state, cfg, nb, "", None)


def _piece(state: VideoState, piece: np.ndarray, nb: Neighbours | None, cfg: StyleConfig,
           temporal: Any) -> tuple[jax.Array, Any]:  # fmt: skip
    """The starting images and temporal targets of a batch of frames."""
    init = jnp.asarray(state.current[piece])
    if cfg.video_mode == "multipass":
        return init, jax.tree.map(lambda a: a[piece], temporal)
    if cfg.video_mode == "independent":
        return init, None
    i = int(piece[0])  # sequential: one frame, held to the earlier frames already stylised
    current = jnp.asarray(state.current)
    if i > 0:  # start from the previous frame pulled onto this one (mean colour where none)
        mean = jnp.asarray(IMAGENET_MEAN_RGB, jnp.float32)
        init = flow.warp(current[i - 1], nb.flow[i, 0], fill=mean)[None]
    warped = jax.vmap(flow.warp)(current[nb.index[i]], nb.flow[i])
    return init, {"warped": warped[None], "weights": nb.only(nb.earlier)[i : i + 1]}


def _run_batch(problem: Problem, cfg: StyleConfig, init: jax.Array, hooks: Hooks) -> StyleRun:
    """One batch of frames through the run loop, all from the same seed."""
    seeds = [cfg.seed] * int(init.shape[0])
    return run_scales(None, None, cfg, seeds=seeds, hooks=hooks, problem=problem, init=init).run


def _batches(n: int, chunk: int) -> list[np.ndarray]:
    return [np.arange(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def _pass_record(state: VideoState, p: int, seconds: float) -> dict[str, Any]:
    """Pass ``p``'s record: its seconds and the mean final loss parts over its frames."""
    parts = [row for r in state.records if r["pass"] == p for row in r["loss"]]
    loss = {k: float(np.mean([row[k] for row in parts])) for k in parts[0]} if parts else {}
    return {"pass": p, "seconds": seconds, "loss": loss}


def _result(state, cfg, nb, stopped, run) -> VideoResult:
    info = {"method": cfg.flow, "distances": list(cfg.long_term)}
    if nb is not None:  # the share of pixels whose nearest earlier neighbour is reliable
        info["reliable"] = float(jnp.mean(nb.weights[1:, 0]))
    images = np.round(np.clip(state.current, 0.0, 1.0) * 255.0).astype(np.uint8)
    return VideoResult(images, cfg, list(state.passes), info, stopped, state, run)


def _start(problem: Problem, cfg: StyleConfig) -> jax.Array:
    """Pass 1's images: one noise image for every frame (as the paper), or the frames."""
    n, h, w, _ = problem.content.shape
    if cfg.init == "content":
        return jnp.asarray(problem.work_content)
    if cfg.init == "style":
        from jaxnst.image import resize

        return jnp.broadcast_to(jnp.asarray(resize(problem.styles[0], (h, w))), (n, h, w, 3))
    noise = jax.random.uniform(jax.random.key(cfg.seed), (h, w, 3), jnp.float32)
    return jnp.broadcast_to(noise, (n, h, w, 3))


__all__ = [
    "Neighbours",
    "VideoHooks",
    "VideoResult",
    "VideoState",
    "blended",
    "neighbours",
    "stylize_video",
    "temporal_targets",
    "warping_error",
]
