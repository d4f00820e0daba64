"""The ``jaxnst video`` command: read a clip, run its passes with progress and Ctrl-C, keep a
checkpoint for ``--resume``, and write the stylised video (audio kept) with its sidecar.

Files beside the output ``out.mp4`` (or ``out.gif``, or a folder of PNG frames): ``out.json``
(the sidecar: config, flow settings, passes with their timings and losses, the warping error of
the result), ``out.html`` (the report: the frames on a trackbar, the loss per pass; not with
``--no-report``), ``out.ckpt.npz`` (while a run is unfinished) and ``.out.flow/`` (the optical
flows, computed once per clip and size). Ctrl-C stops between step calls, writes the frames as
they are and a checkpoint; the same command with ``--resume`` goes on from there.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst import checkpoint, outputs, report, videoio
from jaxnst.config import StyleConfig
from jaxnst.console import Progress, StopFlag, memory_line
from jaxnst.errors import ConfigError, ImageError
from jaxnst.files import all_or_nothing
from jaxnst.image import load_mask
from jaxnst.stylize import StyleRun
from jaxnst.video import VideoHooks, VideoState, stylize_video, warping_error

TARGET_SECONDS = 0.5  # a progress update (and a Ctrl-C check) about this often


class VideoSession(VideoHooks):
    """Progress in frame-iterations over the whole run, Ctrl-C, and restoring a checkpoint's
    interrupted batch into the run that continues it."""

    def __init__(self, cfg: StyleConfig, n: int, quiet: bool, pending: Any = None) -> None:
        passes = cfg.passes if cfg.video_mode == "multipass" else 1
        self.per_pass = max(1, -(-cfg.iterations // passes))
        self.progress = Progress(cfg.replace(print_every=cfg.print_every * n), n * passes *
                                 self.per_pass, quiet)  # fmt: skip
        self.cfg, self.n, self.pending = cfg, n, pending
        self.stop_flag, self.base, self.step_s, self.said = StopFlag(), 0, None, set()
        self._t0 = 0.0

    def piece_started(self, state: VideoState, frames: np.ndarray, passes: int) -> None:
        self.base = ((state.pass_index - 1) * self.n + int(frames[0])) * self.per_pass
        if state.pass_index not in self.said and passes > 1:
            self.progress.say(f"pass {state.pass_index}/{passes}: {self.n} frames")
            self.said.add(state.pass_index)

    def started(self, run: StyleRun, scales: Any) -> None:
        if self.pending is not None:  # the batch a checkpoint was written in: its exact state
            checkpoint.restore(run, self.pending)
            self.pending = None
        if not self.stop_flag.installed:
            self.progress.say(memory_line(run))

    def compiled(self, run: StyleRun, seconds: float) -> None:
        if not self.stop_flag.installed:
            self.progress.say(f"compiled in {seconds:.1f} s")
            self.stop_flag.install()
            self.progress.start(self.base)
        self.step_s = None

    def iteration(self, run: StyleRun) -> int:
        return self.base + run.n * int(run.iterations().min())

    def calls(self, run: StyleRun) -> int:
        self._t0 = time.perf_counter()
        if self.step_s is None:
            return 1
        return max(1, min(self.cfg.chunk, int(TARGET_SECONDS / max(self.step_s, 1e-6))))

    def advanced(self, run: StyleRun, scales: Any) -> None:
        self.step_s = (time.perf_counter() - self._t0) / max(run.calls_made, 1)
        self.progress.update(self.iteration(run), run.rows[0][-1] if run.rows[0] else None, 1)

    def stop(self) -> bool:
        return self.stop_flag.requested

    def close(self) -> None:
        self.progress.close()
        self.stop_flag.uninstall()


def _frame_masks(cfg: StyleConfig, n: int, hw: tuple[int, int]) -> tuple[Any, Any]:
    """cfg.masks for a clip: images apply to every frame; a video or folder of masks gives one
    per frame (its frame count must be the clip's). Returns (masks, frame_masks)."""
    if not cfg.masks:
        return None, None
    per_frame = []
    for path in cfg.masks:
        try:
            per_frame.append(load_mask(path, hw))
        except ImageError:
            clip, _ = videoio.read_video(path, min_frames=1)
            if len(clip) != n:
                raise ConfigError(f"{path}: a mask video of {len(clip)} frames for a clip of "
                                  f"{n}: they must be equal") from None  # fmt: skip
            per_frame.append([load_mask(m, hw, name=f"{path} frame {i}") for i, m in
                              enumerate(clip)])  # fmt: skip
    if all(isinstance(m, np.ndarray) for m in per_frame):
        return per_frame, None
    return None, [[m[i] if isinstance(m, list) else m for m in per_frame] for i in range(n)]


def output_path(given: str | None, content: str, style: str) -> Path:
    """-o as given (a file or a folder of frames), or CONTENT_STYLE.mp4 here."""
    return Path(given) if given else Path(f"{Path(content).stem}_{Path(style).stem}.mp4")


def run_video(args: argparse.Namespace, cfg: StyleConfig) -> tuple[int, str]:
    """The command; returns (exit status, a message for stderr or "")."""
    t_start = time.perf_counter()
    out = output_path(args.output, args.input, args.styles[0])
    kind = videoio.output_kind(out)  # refuses a suffix that cannot hold video, before any work
    parent = out.parent if kind != "frames" else out.parent
    if not parent.is_dir():
        raise ImageError(f"{out}: directory {parent} does not exist")
    sidecar = out.with_name(out.name + ".json") if kind == "frames" else out.with_suffix(".json")
    ckpt_path = out.with_name(out.name + ".ckpt.npz") if kind == "frames" else out.with_suffix(
        ".ckpt.npz")  # fmt: skip
    frames, info = videoio.read_video(args.input, long_side=cfg.size, max_frames=args.max_frames,
                                      fps=args.fps)  # fmt: skip
    masks, frame_masks = _frame_masks(cfg, len(frames), frames.shape[1:3])
    digest = outputs.array_sha256(frames)
    state, pending = None, None
    if args.resume:
        ckpt = checkpoint.load_checkpoint(ckpt_path)
        checkpoint.check_resumable(ckpt, cfg)
        if ckpt.meta.get("frames") != digest:
            raise ConfigError(f"--resume: {ckpt_path} was written for other frames")
        extra = {k[6:]: v for k, v in ckpt.arrays.items() if k.startswith("extra/")}
        state = VideoState(extra["current"], int(ckpt.meta["pass"]), int(ckpt.meta["done"]),
                           extra.get("last"), list(ckpt.meta["records"]),
                           list(ckpt.meta["passes"]), bool(ckpt.meta.get("begun")))  # fmt: skip
        pending = ckpt if "xs" in ckpt.arrays else None
    session = VideoSession(cfg, len(frames), args.quiet, pending)
    cache = out.parent / f".{out.name}.flow"
    try:
        result = stylize_video(frames, list(args.styles), cfg, masks=masks,
                               frame_masks=frame_masks, cache_dir=cache, hooks=session,
                               resume=state)  # fmt: skip
    finally:
        session.close()
    with all_or_nothing():  # the video, its sidecar and checkpoint together, or none
        written = [videoio.write_video(out, result.frames, info.fps,
                                       audio_from=info.source if info.audio else None)]  # fmt: skip
        record = {
            "command": shlex.join(["jaxnst", *args.argv]),
            "inputs": {
                "video": str(args.input),
                "frames": len(frames),
                "fps": str(info.fps),
                "frames_sha256": digest,
                "styles": [str(s) for s in args.styles],
            },  # fmt: skip
            "output": {"path": str(out), "kind": kind},
            "config": cfg.to_dict(),
            "flow": result.flow,
            "passes": result.passes,
            "warping_error": warping_error(result.frames / 255.0, frames, cfg.flow, cache),
            "stopped": result.stopped,
            "versions": outputs.versions(),
            "device": outputs.device_info(),
            "weights": outputs.weights_info(result.weights, cfg.weights),  # as read
            "batch": result.batch,
            "timings": {"total": round(time.perf_counter() - t_start, 3)},
        }
        written.append(outputs.write_json(sidecar, record))
        if cfg.report:  # the frames on their own trackbar, the loss per pass, the sidecar
            page = report.record_from_video(record, result.frames, info.fps, frames[0],
                                            args.styles, out.name)  # fmt: skip
            written.append(report.write_report(sidecar.with_suffix(".html"), page))
        if result.stopped == "interrupted":
            run = result.run if result.run is not None and not result.run.done() else None
            meta = {"config": cfg.to_dict(), "seeds": list(run.seeds) if run else [], "inputs": {},
                    "rows": checkpoint.rows_for_json(run.rows) if run else [], "frames": digest,
                    "pass": result.state.pass_index, "done": result.state.done,
                    "begun": result.state.begun,
                    "records": result.state.records, "passes": result.state.passes}  # fmt: skip
            extra = {"current": result.state.current}
            if result.state.last is not None:
                extra["last"] = result.state.last
            written.append(checkpoint.save_checkpoint(ckpt_path, run, meta, extra=extra))
    if result.stopped != "interrupted":
        ckpt_path.unlink(missing_ok=True)  # finished (or failed): nothing left to resume
    if not args.quiet:
        for path in written:
            print(f"wrote {path}", flush=True)
    if result.stopped == "interrupted":
        return 130, "interrupted; continue with the same command and --resume"
    return (1, result.stopped) if result.stopped else (0, "")
