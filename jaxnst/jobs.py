"""Runs of ``jaxnst serve``: a queue worked by one thread, each run's files and live events.

A ``Job`` is one run the page asked for: its uploaded images, its ``StyleConfig``, a folder of
its own under the server's temporary directory, and an ``EventLog`` of what it did (status,
loss rows, snapshot frames) that the page reads as server-sent events. ``JobQueue`` runs the jobs
one after another in a worker thread, through the same ``stylize.run_scales`` loop and the same
``console.Session`` as the command line (so the files beside the result are the CLI's: sidecar,
history, plot, snapshots, report), in one process, so a second run of a size compiles nothing.
Nothing here knows HTTP; ``jaxnst.serve`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import re
import secrets
import shlex
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst import outputs, report
from jaxnst.config import FIELDS, StyleConfig
from jaxnst.console import Session
from jaxnst.errors import JaxnstError
from jaxnst.options import flag, show_value
from jaxnst.scales import CoarseToFine, summed
from jaxnst.stylize import StyleRun, run_scales

PREVIEW_SECONDS = 1.0  # without a snapshot for this long, the page gets a preview frame
FINAL = ("done", "stopped", "failed", "cancelled")


@dataclasses.dataclass(frozen=True)
class Upload:
    """An image the page uploaded, checked like the CLI's inputs, kept as its bytes."""

    id: str
    name: str  # as the user's file was called (for messages and names; never a path)
    path: Path
    sha256: str
    width: int
    height: int


class Notifier:
    """A version number that threads bump and async code waits on."""

    def __init__(self) -> None:
        self.version = 0
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def bump(self) -> None:
        with self._lock:
            self.version += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there now
                loop.call_soon_threadsafe(event.set)

    async def wait(self, seen: int, timeout: float) -> int:
        """Return the version once it differs from ``seen``, or after ``timeout`` seconds."""
        event, loop = asyncio.Event(), asyncio.get_running_loop()
        with self._lock:
            if self.version != seen:
                return self.version
            self._waiters.add((loop, event))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard((loop, event))
        return self.version


class EventLog(Notifier):
    """The append-only events of a job: (kind, data), read by index; closed when it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def append(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.items.append((kind, data))
        self.bump()

    def close(self) -> None:
        self.closed = True
        self.bump()

    def since(self, n: int) -> list[tuple[int, str, dict[str, Any]]]:
        with self._lock:
            return [(i, *item) for i, item in enumerate(self.items[n:], start=n)]


def safe_name(name: str, fallback: str = "image") -> str:
    """A file-name part from a user's name: letters, digits, '.', '_' and '-' only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:48]
    return stem or fallback


def command_line(cfg: StyleConfig, content: str, styles: list[str], output: str) -> str:
    """The ``jaxnst stylize`` command of the same run (the options that differ from defaults)."""
    argv = ["jaxnst", "stylize", content, *styles, "-o", output]
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        if value == f.default:
            continue
        if isinstance(value, bool):
            argv.append(f"--{flag(name)}" if value else f"--no-{flag(name)}")
        elif isinstance(value, tuple):
            argv += [f"--{flag(name)}", *map(str, value)] if value else []
        else:
            argv += [f"--{flag(name)}", show_value(value).strip("'")]
    return shlex.join(argv)


class Job:
    """One run: inputs, config, folder, state, events, and the files it wrote."""

    def __init__(
        self, number: int, content: Upload, styles: list[Upload], cfg: StyleConfig, root: Path
    ) -> None:
        self.id, self.number = secrets.token_hex(8), number
        self.content, self.styles, self.cfg = content, styles, cfg
        self.name = f"{safe_name(Path(content.name).stem)}_{safe_name(Path(styles[0].name).stem)}"
        self.dir = root / self.id
        self.dir.mkdir(parents=True)
        seeds = [cfg.seed + k for k in range(cfg.variants)]
        plan = outputs.plan_outputs(self.dir / f"{self.name}.png", cfg, seeds)
        # The page always offers the report, with snapshots or without.
        self.plan = dataclasses.replace(plan, report=plan.output.with_suffix(".html"))
        self.command = command_line(
            cfg, content.name, [s.name for s in styles], self.plan.output.name
        )
        self.state, self.message = "queued", "waiting for the runs before it"
        self.iteration, self.total = 0, CoarseToFine(cfg).total
        self.compile_s: float | None = None
        self.stop_requested = False
        self.abandoned = False  # the server is stopping: write nothing more
        self.events = EventLog()
        self.frames: dict[tuple[int, int], Path] = {}  # (variant, iteration) -> PNG
        self.files: dict[str, Path] = {}  # download name -> path, once written
        self.changed = lambda: None  # set by the queue: tells the page's job list

    def url(self, tail: str) -> str:
        return f"/runs/{self.id}/{tail}"

    def set_state(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        data = {"state": state, "text": message, "iteration": self.iteration, "total": self.total}
        if state in ("done", "stopped") and self.plan.report in self.files.values():
            data["report"] = self.url(f"files/{self.plan.report.name}")
        self.events.append("status", data)
        if state in FINAL:
            self.events.close()
        self.changed()

    def add_frame(self, k: int, iteration: int, path: Path) -> None:
        self.frames[(k, iteration)] = path
        url = self.url(f"frames/{k}/{iteration}")
        self.events.append("frame", {"variant": k, "iteration": iteration, "url": url})

    def summary(self) -> dict[str, Any]:
        """What the page's list of runs shows."""
        return {
            "id": self.id,
            "number": self.number,
            "name": self.name,
            "state": self.state,
            "message": self.message,
            "iteration": self.iteration,
            "total": self.total,
            "compile_s": self.compile_s,
            "view": self.url("view"),
            "files": [{"name": n, "url": self.url(f"files/{n}")} for n in self.files],
        }

    def scrub(self, text: str) -> str:
        """A message with the server's file paths replaced by the names the user knows."""
        for upload in (self.content, *self.styles):
            text = text.replace(str(upload.path), upload.name)
        return " ".join(text.replace(str(self.dir) + "/", "").split())


class WebSession(Session):
    """The CLI's session (snapshots, results, report) that also tells the page as it goes."""

    def __init__(self, job: Job, scales: CoarseToFine) -> None:
        super().__init__(job.cfg, scales, job.plan, quiet=True, writes=True, ckpt=None)
        self.job = job
        self.sent = [0] * len(job.plan.images)  # history rows sent, per variant
        self.last_frame = time.perf_counter()

    def started(self, run: StyleRun, scales: CoarseToFine) -> None:
        super().started(run, scales)
        h, w = run.problem.content.shape[:2]
        self.job.set_state("compiling", f"compiling for {run.n} x {w}x{h} px")

    def compiled(self, run: StyleRun, seconds: float) -> None:
        super().compiled(run, seconds)
        self.job.compile_s = (self.job.compile_s or 0.0) + seconds
        self.last_frame = time.perf_counter()
        self.job.set_state("running", f"compiled in {seconds:.1f} s")

    def advanced(self, run: StyleRun, scales: CoarseToFine) -> None:
        self.send_rows(run)
        taken = len(self.snapshots)
        super().advanced(run, scales)  # may take a snapshot (self.snapshot, below)
        it = self.iteration(run)
        late = time.perf_counter() - self.last_frame >= PREVIEW_SECONDS
        if len(self.snapshots) == taken and late and not run.done():
            self.preview(run, it)
        self.job.iteration = it
        self.job.changed()

    def send_rows(self, run: StyleRun) -> None:
        """The new history rows of each variant, as the curves the report plots."""
        for k, rows in enumerate(self.scales.rows(run)):
            new, self.sent[k] = rows[self.sent[k] :], len(rows)
            if new:
                cols = {name: np.asarray([r[name] for r in new]) for name in new[0]}
                curves = {"iteration": cols["iteration"], **outputs.weighted_parts(cols, self.cfg)}
                data = {"variant": k, "rows": report.history_lists(curves)}
                self.job.events.append("rows", data)

    def snapshot(self, run: StyleRun, iteration: int) -> None:
        super().snapshot(run, iteration)
        for k in range(run.n):
            self.job.add_frame(k, iteration, self.plan.snapshot(k, iteration))
        self.last_frame = time.perf_counter()

    def preview(self, run: StyleRun, iteration: int) -> None:
        """A frame for the page only (not a snapshot: no file beside the result)."""
        folder = self.job.dir / "previews"
        folder.mkdir(exist_ok=True)
        images = run.saved_images(self.cfg.original_colors)
        for k, image in enumerate(images):
            path = outputs.save_images([folder / f"v{k}_{iteration}.png"], image[None])[0]
            self.job.add_frame(k, iteration, path)
        self.last_frame = time.perf_counter()

    def checkpoint(self, run: StyleRun) -> None:
        """No checkpoints: a served run is not resumed."""

    def stop(self) -> bool:
        return self.job.stop_requested


def execute(job: Job) -> None:
    """Run ``job`` to the end (or its stop), write its files, and say so in its events."""
    job.set_state("preparing", "loading the images and computing the targets")
    cfg, t_start = job.cfg, time.perf_counter()
    scales = CoarseToFine(cfg)
    session = WebSession(job, scales)
    seeds = list(job.plan.seeds)
    try:
        outcome = run_scales(
            job.content.path, [s.path for s in job.styles], cfg, seeds=seeds, hooks=session,
            scales=scales,
        )  # fmt: skip
    finally:
        session.close()
    if job.abandoned:  # its folder is about to go: no files to write
        job.set_state("stopped", "the server stopped")
        return
    run = outcome.run
    session.send_rows(run)
    job.iteration = session.iteration(run)
    if outcome.interrupted:
        stopped = f"stopped at iteration {job.iteration} of {scales.total}"
    else:
        stopped = run.stopped
    job.set_state("writing", "writing the result, its sidecar and the report")
    timings = summed(outcome.timings)
    common = {
        "command": job.command,
        "inputs": {
            "content": {
                "path": str(job.content.path),
                "name": job.content.name,
                "sha256": job.content.sha256,
            },
            "styles": [
                {"path": str(s.path), "name": s.name, "sha256": s.sha256} for s in job.styles
            ],
        },  # fmt: skip
        "config": cfg.to_dict(),
        "versions": outputs.versions(),
        "device": outputs.device_info(),
        "weights": outputs.weights_info(session.weights, cfg.weights),  # as read
        "timings": {
            k: timings[j] for k, j in (("load", "targets"), ("compile", "compile"), ("run", "run"))
        },  # fmt: skip
        "resumed_from": None,
        "memory": session.memory,
    }
    written = session.write_results(run, stopped, common, t_start)
    # One assignment: the page's threads read job.files while this one writes it.
    job.files = {path.name: path for path in written if path.parent == job.dir}
    state = "stopped" if outcome.interrupted else "done"
    seconds = time.perf_counter() - t_start
    job.set_state(state, job.scrub(stopped) or f"done in {seconds:.1f} s")


class JobQueue:
    """Jobs run one after another by one worker thread; ``changes`` ticks on every update."""

    def __init__(self, root: Path, limit: int = 32) -> None:
        self.root, self.limit = root, limit
        self.jobs: dict[str, Job] = {}
        self.changes = Notifier()
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="jaxnst-runs", daemon=True)
        self._thread.start()

    def waiting(self) -> int:
        return sum(job.state not in FINAL for job in self.jobs.values())

    def submit(self, content: Upload, styles: list[Upload], cfg: StyleConfig) -> Job:
        if self.waiting() >= self.limit:
            raise JaxnstError(f"the queue is full ({self.limit} runs); stop one first")
        job = Job(len(self.jobs) + 1, content, styles, cfg, self.root)
        job.changed = self.changes.bump
        self.jobs[job.id] = job
        self._pending.put(job)
        self.changes.bump()
        return job

    def stop(self, job: Job) -> None:
        """A queued job is cancelled; a running one stops after its current step call."""
        if job.state == "queued":
            job.set_state("cancelled", "cancelled before it started")
        job.stop_requested = True

    def _work(self) -> None:
        while (job := self._pending.get()) is not None:
            if job.state != "queued":
                continue
            try:
                execute(job)
            except JaxnstError as err:
                job.set_state("failed", job.scrub(str(err)))
            except Exception as err:  # a bug or the machine: one line to the page, all to stderr
                traceback.print_exc(file=sys.stderr)
                job.set_state("failed", job.scrub(f"{type(err).__name__}: {err}"))

    def close(self, timeout: float = 10.0) -> None:
        """Stop every job, end the worker (waiting up to ``timeout`` seconds for a run)."""
        for job in self.jobs.values():
            if job.state not in FINAL:
                job.abandoned = True
                self.stop(job)
        self._pending.put(None)
        self._thread.join(timeout)
