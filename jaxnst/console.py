"""The command line's side of a run: progress, Ctrl-C between step calls, snapshots, resuming.

``Console`` is the ``stylize.Hooks`` of the command line: it prints the memory plan and the
compile time, shows a tqdm bar on a terminal (plain lines every ``print_every`` iterations
otherwise), turns the first Ctrl-C into a request to stop after the current step call (a second
one quits at once), and makes the step calls land exactly on every ``save_every``-th iteration,
where it calls ``snapshot``. ``Session`` adds what the CLI keeps as it goes: snapshot images and
checkpoints (process 0 alone writes in a multi-host run), and restoring a checkpoint into the
first scale's run on ``--resume``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst import checkpoint, figures, outputs, report_files
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.files import all_or_nothing
from jaxnst.memory import format_bytes
from jaxnst.scales import CoarseToFine
from jaxnst.stylize import Hooks, StyleRun

TARGET_SECONDS = 0.5  # aim for a progress update (and a Ctrl-C check) about this often


def agreed(value: int, reduce: str = "first") -> int:
    """One value for every process of a multi-host run: process 0's (``first``) or the largest
    (``max``). The processes of a run must make the same step calls and stop together, or their
    collectives stop matching; each process's clock, terminal and signals are its own."""
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.int32(value))).reshape(-1)
    return int(every[0] if reduce == "first" else every.max())


class StopFlag:
    """SIGINT sets a flag the run loop checks between step calls; a second one quits at once."""

    def __init__(self) -> None:
        self.requested = self.installed = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        if not self.installed and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        self.installed = True

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class Progress:
    """A tqdm bar on a terminal, else plain lines every ``print_every`` iterations, or quiet."""

    def __init__(self, cfg: StyleConfig, total: int, quiet: bool, stream: Any = None) -> None:
        self.cfg, self.total, self.stream = cfg, total, stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.mode = "quiet" if quiet else ("bar" if tty else "lines")
        self.bar: Any = None
        self.next_print = 0
        self.t0, self.it0 = time.perf_counter(), 0

    def start(self, iteration: int) -> None:
        self.t0, self.it0 = time.perf_counter(), iteration
        if self.mode == "bar" and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=iteration,
                file=self.stream,
                unit="it",
                dynamic_ncols=True,
                smoothing=0.2,
            )
        every = self.cfg.print_every
        self.next_print = (iteration // every + 1) * every if every else 0

    def losses(self, row: dict[str, Any] | None, variants: int) -> str:
        """The weighted loss terms of a history row: 'total 1.2e+05 content ... style ...'."""
        if not row:
            return ""
        hist = {k: np.asarray([v]) for k, v in row.items()}
        parts = outputs.weighted_parts(hist, self.cfg)
        text = " ".join(f"{k} {float(v[0]):.3e}" for k, v in parts.items() if "/" not in k)
        return text + (" (variant 0)" if variants > 1 else "")

    def update(self, iteration: int, row: dict[str, Any] | None, variants: int) -> None:
        if self.mode == "bar":
            self.bar.update(iteration - self.bar.n)
            self.bar.set_postfix_str(self.losses(row, variants), refresh=True)
        elif (
            self.mode == "lines"
            and self.cfg.print_every
            and (iteration >= self.next_print or iteration >= self.total)
        ):
            every = self.cfg.print_every
            self.next_print = (iteration // every + 1) * every
            elapsed = time.perf_counter() - self.t0
            rate = (iteration - self.it0) / elapsed if elapsed > 0 else 0.0
            eta = time.gmtime((self.total - iteration) / rate) if rate > 0 else None
            print(
                f"iteration {iteration}/{self.total}  {rate:.2f} it/s  "
                f"eta {time.strftime('%H:%M:%S', eta) if eta else '?'}  "
                f"{self.losses(row, variants)}",
                file=self.stream,
                flush=True,
            )

    def say(self, text: str) -> None:
        if self.mode == "bar" and self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif self.mode != "quiet":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def memory_line(run: StyleRun) -> str:
    """'memory: about 1.2 GiB per device (remat off; limit 78.0 GiB)': the run's estimate."""
    remat = "remat on" if run.remat else "remat off"
    limit = run.memory_limit
    where = f"limit {format_bytes(limit)}" if limit else "device limit unknown"
    return f"memory: about {format_bytes(run.memory.bytes)} {run.memory.where} ({remat}; {where})"


class Console(Hooks):
    """The CLI's hooks: what the terminal shows and when snapshots are taken.

    ``scales`` is the run's plan (iterations count across scales); subclasses override
    ``snapshot(run, iteration)`` to write files.
    """

    def __init__(self, cfg: StyleConfig, scales: CoarseToFine, quiet: bool) -> None:
        self.cfg, self.scales = cfg, scales
        self.progress = Progress(cfg, scales.total, quiet)
        self.stop_flag = StopFlag()
        self.next_save: int | None = None  # set at the first scale's start
        self.step_s: float | None = None  # seconds per step call, measured
        self._t0 = 0.0
        self.compile_s = 0.0

    def iteration(self, run: StyleRun) -> int:
        """The slowest variant's iteration, counted over all scales."""
        return int(self.scales.iterations(run).min())

    def started(self, run: StyleRun, scales: CoarseToFine) -> None:
        if self.next_save is None:
            it, every = self.iteration(run), self.cfg.save_every
            self.next_save = (it // every + 1) * every if every else 0
        h, w = run.problem.content.shape[:2]
        many = len(scales.stages) > 1
        where = f", scale {scales.index + 1}/{len(scales.stages)}" if many else ""
        self.progress.say(memory_line(run))
        self.progress.say(
            f"compiling the {self.cfg.optimizer} step for {run.n} x {w}x{h} px{where} ..."
        )

    def compiled(self, run: StyleRun, seconds: float) -> None:
        self.compile_s += seconds
        self.progress.say(f"compiled in {seconds:.1f} s")
        self.stop_flag.install()  # from now on Ctrl-C stops between step calls
        self.progress.start(self.iteration(run))
        self.step_s = None

    def calls(self, run: StyleRun) -> int:
        """How many step calls to make before the host looks again (not past the next event)."""
        cfg = self.cfg
        # One call first to time a step; then as many as fit in TARGET_SECONDS, at most a chunk.
        calls = 1 if self.step_s is None else int(TARGET_SECONDS / max(self.step_s, 1e-6))
        calls = max(1, min(calls, cfg.chunk))
        it, fresh = self.iteration(run), int(run.fresh())
        # A call advances a variant by at most one iteration, so these land exactly on the event
        # when every variant is accepted (Adam always; L-BFGS unless its line search backs off).
        if cfg.save_every:
            calls = min(calls, self.next_save - it + fresh)
        if self.progress.mode == "lines" and cfg.print_every:
            calls = min(calls, self.progress.next_print - it + fresh)
        self._t0 = time.perf_counter()
        return agreed(max(1, calls))  # process 0's timing and events decide for all

    def advanced(self, run: StyleRun, scales: CoarseToFine) -> None:
        self.step_s = (time.perf_counter() - self._t0) / max(run.calls_made, 1)
        it = self.iteration(run)
        self.progress.update(it, run.rows[0][-1] if run.rows[0] else None, run.n)
        if self.cfg.save_every and it >= self.next_save and not run.nonfinite:
            self.snapshot(run, it)
            self.next_save = (it // self.cfg.save_every + 1) * self.cfg.save_every

    def stop(self) -> bool:
        return bool(agreed(int(self.stop_flag.requested), "max"))  # Ctrl-C on any process

    def snapshot(self, run: StyleRun, iteration: int) -> None:
        """Write what a snapshot at ``iteration`` keeps (nothing here)."""

    def close(self) -> None:
        self.progress.close()
        self.stop_flag.uninstall()


class Session(Console):
    """A CLI run across its scales: the console plus what it writes and resumes.

    ``started`` restores a checkpoint into the first scale's run (after checking it was made
    from the same inputs); ``snapshot`` writes the images and a checkpoint.
    """

    def __init__(
        self, cfg: StyleConfig, scales: CoarseToFine, plan: outputs.Plan, quiet: bool,
        writes: bool, ckpt: checkpoint.Checkpoint | None,
    ) -> None:  # fmt: skip
        super().__init__(cfg, scales, quiet or not writes)
        self.plan, self.writes, self.ckpt = plan, writes, ckpt
        self.frames: figures.Frames = []
        self.snapshots: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []  # the estimate per scale, for the sidecar
        self.previous_run_s = 0.0
        self.resumed_from: int | None = None
        self.wrote_checkpoint = False
        self.weights: dict[str, Any] | None = None  # the weights file as the run read it
        if ckpt is not None:
            checkpoint.resume_scales(ckpt, scales)
            self.snapshots = list(ckpt.meta.get("snapshots", []))
            self.frames = figures.read_frames(self.snapshots)
            self.memory = list(ckpt.meta.get("memory", []))
            self.previous_run_s = float(ckpt.meta.get("timings", {}).get("run", 0.0))

    def write(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the writing process, None on the others (multi-host: process 0
        writes; every process computes, so the gathers before each write happen everywhere)."""
        return fn(*args) if self.writes else None

    def started(self, run: StyleRun, scales: CoarseToFine) -> None:
        if self.ckpt is not None and self.resumed_from is None:
            if self.ckpt.meta.get("inputs") != checkpoint.input_digests(run.problem):
                raise ConfigError(
                    f"--resume: {self.ckpt.path} was written for other content, style or "
                    "mask images (or another size)"
                )
            checkpoint.restore(run, self.ckpt)
            self.resumed_from = self.iteration(run)
            self.progress.say(f"resuming from iteration {self.resumed_from} ({self.ckpt.path})")
        super().started(run, scales)
        self.weights = self.weights or run.problem.weights
        entry = {
            "size": run.cfg.size,
            "estimate_bytes": int(run.memory.bytes),
            "limit_bytes": None if run.memory_limit is None else int(run.memory_limit),
            "remat": run.remat,
            "variants_per_device": int(-(-run.padded // (run.mesh.size if run.mesh else 1))),
        }  # a resumed scale replaces its old entry
        self.memory = [m for m in self.memory if m.get("size") != entry["size"]] + [entry]

    def snapshot(self, run: StyleRun, iteration: int) -> None:
        images = run.saved_images(self.cfg.original_colors)
        paths = [self.plan.snapshot(k, iteration) for k in range(run.n)]
        self.write(outputs.save_images, paths, images)
        self.frames.append((iteration, images))
        self.snapshots.append({"iteration": iteration, "paths": [str(p) for p in paths]})
        self.checkpoint(run)

    def checkpoint(self, run: StyleRun) -> None:
        meta = checkpoint.run_meta(
            run, self.scales, self.cfg.to_dict(), snapshots=self.snapshots, memory=self.memory,
            timings={"run": run.timings["run"] + self.previous_run_s},
        )  # fmt: skip
        checkpoint.save_checkpoint(self.plan.checkpoint, run, meta, write=self.writes)
        self.wrote_checkpoint = True

    def write_results(
        self, run: StyleRun, stopped: str, common: dict[str, Any], t_start: float,
        interrupted: bool = False,
    ) -> list[Path]:  # fmt: skip
        """Write the images, history, plot, contact sheet, GIFs, sidecars and the report (and,
        when ``interrupted``, a checkpoint); the paths written. They appear together or not at
        all (``files.all_or_nothing``): a full disk leaves the previous run's files as they
        were, and the error names the file that failed.

        ``common`` is what every variant's sidecar records about the run (``outputs.sidecar``);
        its ``timings`` gain the seconds spent saving and in all since ``t_start``.
        """
        with all_or_nothing():
            if interrupted:
                self.checkpoint(run)
            written = self._write_results(run, stopped, common, t_start)
        if self.plan.report is not None and self.writes:  # read from the files now in place
            written.append(report_files.report_from_outputs(self.plan.output, self.plan.report))
        return written

    def _write_results(
        self, run: StyleRun, stopped: str, common: dict[str, Any], t_start: float
    ) -> list[Path]:
        cfg, plan, t0 = self.cfg, self.plan, time.perf_counter()
        iteration = self.iteration(run)
        images = run.saved_images(cfg.original_colors)
        written = self.write(outputs.save_images, plan.images, images) or []
        if self.frames and self.frames[-1][0] != iteration:
            self.frames.append((iteration, images))
        histories = self.scales.history(run)
        if plan.history is not None:
            written.append(self.write(outputs.write_history, plan.history, histories, run.seeds))
        if plan.plot is not None and self.writes:
            path = figures.write_plot(plan.plot, histories, run.seeds, cfg)
            if path is None:
                self.progress.say(
                    "jaxnst: warning: no loss plot: matplotlib is not installed "
                    "(pip install 'jaxnst[plot]')"
                )
            written.append(path)
        if plan.sheet is not None and self.frames and self.writes:
            written.append(figures.write_sheet(plan.sheet, self.frames, run.seeds))
            for k in range(run.n):
                frames = [(i, imgs[k]) for i, imgs in self.frames]
                written.append(figures.write_gif(plan.gif(k), frames))
        now = time.perf_counter()
        timings = {**common["timings"], "save": now - t0, "total": now - t_start}
        common = {**common, "timings": {k: round(v, 4) for k, v in timings.items()}}
        rows = self.scales.rows(run)
        iterations, evaluations = self.scales.iterations(run), self.scales.evaluations(run)
        saved = run.final_loss()  # of the saved pixels (every process: a gather in multi-host)
        for k, seed in enumerate(run.seeds):
            data = outputs.sidecar(plan, k, seed, images[k], rows[k], iterations[k],
                                   evaluations[k], saved[k], stopped, common,
                                   self.snapshots)  # fmt: skip
            written.append(self.write(outputs.write_json, plan.sidecar(k), data))
        return [path for path in written if path is not None]
