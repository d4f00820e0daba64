"""Coarse to fine (Gatys et al. 2017): stylise small, upsample, continue at the next size.

The one place for what a run across scales needs, used by ``stylize`` and by the CLI (which drives
each scale itself for progress, snapshots, Ctrl-C and ``--resume``):

- the plan: a config per scale, from ``cfg.scale_list()`` and ``cfg.iterations_per_scale()``;
- the hand-over: each scale starts from the previous one's images as the loss saw them, resized.
  The optimiser starts afresh: L-BFGS's step/gradient pairs belong to the old resolution, and
  Adam's moments would be as stale;
- one history: every scale's rows, iterations counted on across scales (each variant from the
  iterations it really took before) and, when there are several scales, a ``scale`` column (the
  long side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from jaxnst.config import StyleConfig
from jaxnst.image import resize

Rows = list[list[dict[str, Any]]]  # per variant, a dict per accepted iteration


class ScaleRun(Protocol):
    """What this module reads of a ``StyleRun``."""

    n: int
    rows: Rows

    def iterations(self) -> np.ndarray: ...

    def evaluations(self) -> np.ndarray: ...

    def raw_images(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Stage:
    size: int  # long side of this scale's output, pixels
    iterations: int  # planned iterations at this scale


def plan(cfg: StyleConfig) -> tuple[Stage, ...]:
    """The scales of a run, coarse to fine; one stage (``cfg.size``) without ``scales``."""
    return tuple(
        Stage(size, its)
        for size, its in zip(cfg.scale_list(), cfg.iterations_per_scale(), strict=True)
    )


def stage_config(cfg: StyleConfig, stage: Stage) -> StyleConfig:
    """The config of one scale: its size and iterations, no scales of its own."""
    return cfg.replace(size=stage.size, iterations=stage.iterations, scales=(), scale_iterations=())


def resize_images(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(n, h', w', c) images resized to (n, h, w, c): the start of the next scale."""
    return np.stack([resize(image, hw) for image in images])


def columns(rows: Rows) -> list[dict[str, np.ndarray]]:
    """Rows as columns per variant: {name: (rows,)}, the names of the first row."""
    out = []
    for variant in rows:
        names = list(variant[0]) if variant else ["iteration", "evaluations", "total"]
        out.append({name: np.asarray([r[name] for r in variant]) for name in names})
    return out


@dataclass
class CoarseToFine:
    """A run across its scales: the plan, the current scale and what the finished ones left.

    ``past_*`` hold, per variant, the merged history rows, iterations and evaluations of the
    finished scales; ``images`` the last finished scale's images, where the next one starts.
    """

    cfg: StyleConfig
    index: int = 0  # the current scale
    past_rows: Rows = field(default_factory=list)
    past_iterations: list[int] = field(default_factory=list)
    past_evaluations: list[int] = field(default_factory=list)
    images: np.ndarray | None = None
    stages: tuple[Stage, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.stages = plan(self.cfg)

    @property
    def stage(self) -> Stage:
        return self.stages[self.index]

    @property
    def last(self) -> bool:
        return self.index == len(self.stages) - 1

    @property
    def total(self) -> int:
        """Planned iterations over all scales."""
        return sum(s.iterations for s in self.stages)

    @property
    def start(self) -> int:
        """Planned iterations before the current scale."""
        return sum(s.iterations for s in self.stages[: self.index])

    def config(self) -> StyleConfig:
        """The current scale's config."""
        return stage_config(self.cfg, self.stage)

    def initial_images(self, hw: tuple[int, int]) -> np.ndarray | None:
        """The previous scale's images resized to (h, w); None on the first scale."""
        return None if self.images is None else resize_images(self.images, hw)

    def offsets(self, n: int) -> np.ndarray:
        """(n,) iterations before the current scale (planned, if the past was not recorded)."""
        return np.asarray(self.past_iterations or [self.start] * n, np.int64)

    def iterations(self, run: ScaleRun) -> np.ndarray:
        """(n,) iterations over all scales so far."""
        return self.offsets(run.n) + run.iterations()

    def evaluations(self, run: ScaleRun) -> np.ndarray:
        return np.asarray(self.past_evaluations or [0] * run.n, np.int64) + run.evaluations()

    def rows(self, run: ScaleRun) -> Rows:
        """History rows of all scales so far, iterations counted on across scales."""
        offsets = self.offsets(run.n)
        extra = {"scale": self.stage.size} if len(self.stages) > 1 else {}
        current = [
            [{**row, "iteration": row["iteration"] + int(off), **extra} for row in rows]
            for rows, off in zip(run.rows, offsets, strict=True)
        ]
        past = self.past_rows or [[] for _ in current]
        return [p + c for p, c in zip(past, current, strict=True)]

    def history(self, run: ScaleRun) -> list[dict[str, np.ndarray]]:
        """Per variant, {column: (rows,)} over all scales so far."""
        return columns(self.rows(run))

    def next(self, run: ScaleRun) -> None:
        """Record the finished current scale of ``run`` and move to the next one."""
        self.past_rows = self.rows(run)
        self.past_iterations = self.iterations(run).tolist()
        self.past_evaluations = self.evaluations(run).tolist()
        self.images = run.raw_images()
        self.index += 1


def summed(timings: Sequence[dict[str, float]]) -> dict[str, float]:
    """Timings of several scales added up by name."""
    out: dict[str, float] = {}
    for t in timings:
        for name, value in t.items():
            out[name] = out.get(name, 0.0) + value
    return out
