"""The ``jaxnst`` command: ``stylize``, ``demo``, ``info``; ``train`` and ``apply`` (``fast_cli``).

Every option of a run is a field of ``StyleConfig``: the flags below are generated from the
fields (help and default included), a ``--config`` file (TOML, or a sidecar JSON) sets the same
names, and flags override the file. Only this module prints or exits. Errors are one line on stderr,
``jaxnst: error: ...``, and nothing is written for bad input. Exit codes: 0 done, 1 the loss became
NaN/Inf (the last finite image is kept), an output that cannot be written (a full disk: none of
the run's files are) or an unexpected failure, 2 bad input or usage, 130 Ctrl-C (the current
images, history and a checkpoint for ``--resume`` are written first). ``--distributed`` runs are
started and supervised by ``jaxnst.multihost``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxnst import checkpoint, fast_cli, multihost, outputs
from jaxnst.config import StyleConfig
from jaxnst.console import Session
from jaxnst.errors import ConfigError, JaxnstError, OutputError
from jaxnst.files import missing_file
from jaxnst.options import add_flags, flag, flag_values, read_options
from jaxnst.scales import CoarseToFine, summed
from jaxnst.stylize import Outcome, run_scales

COMMANDS = ("stylize", "video", "demo", "info", "serve", "train", "apply")
TOP_LEVEL = ("-h", "--help", "--version")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# `jaxnst demo`: a photograph and a textured image from scikit-image's bundled samples (a stained
# micrograph: brush-like strokes in brown and blue), sized to finish within 90 s on a 2-core CPU.
# Starting from the content shows a clear subject after few iterations, and the per-layer target
# normalisation gives the fine layers (the brush texture) their weight at that budget: without
# it the same run is mostly the photograph (docs/benchmarks.md, "The demo"). From the content the
# layout holds at 192 px: the run stays at its size, as measured, without the 256 px detour.
DEMO_DEFAULTS = {"size": 192, "iterations": 60, "init": "content", "style_layer_norm": "target",
                 "auto_scales": False}  # fmt: skip
DEMO_INPUTS = ("skimage.data.astronaut", "skimage.data.immunohistochemistry")


class UsageError(Exception):
    """A command line argparse rejects; reported in one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    from jaxnst import __version__

    parser = _Parser(
        prog="jaxnst",
        description="Neural style transfer (Gatys, Ecker & Bethge 2016) in JAX.",
        epilog="'jaxnst CONTENT STYLE ...' is short for 'jaxnst stylize CONTENT STYLE ...'.",
    )
    parser.add_argument("--version", action="version", version=f"jaxnst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run_flags = _Parser(add_help=False)
    common = run_flags.add_argument_group("output and session")
    common.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="output image (.png, .jpg, ...), or an existing directory for the default name",
    )
    common.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of run options (keys as below, '-' or '_'), or a sidecar "
        ".json to reproduce its run; flags override it",
    )
    common.add_argument(
        "--resume",
        action="store_true",
        help="continue from the output's checkpoint (OUT.ckpt.npz, written with "
        "each --save-every snapshot and on Ctrl-C); give the same options",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress and no list of written files; errors only",
    )
    common.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first, for one run over several hosts (a "
        "multi-host GPU cluster or TPU slice; start the same command on every host, the "
        "coordinator comes from the environment); process 0 alone writes files",
    )
    common.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache ($JAXNST_CACHE_DIR, "
        "default ~/.cache/jaxnst/xla)",
    )
    add_flags(run_flags, StyleConfig, "run options (also the keys of a --config file)")

    p = sub.add_parser(
        "stylize",
        parents=[run_flags],
        help="stylise CONTENT with STYLE(s)",
        description="Paint CONTENT in the style of STYLE (several styles blend).",
    )
    p.add_argument("content", metavar="CONTENT", nargs="?",
                   help="content image (with --config OUT.json alone: the sidecar's)")  # fmt: skip
    p.add_argument("styles", metavar="STYLE", nargs="*", help="style image(s)")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser(
        "video",
        parents=[run_flags],
        help="stylise a video, temporally consistent (pip install 'jaxnst[video]')",
        description="Stylise the frames of INPUT (a video file, an animated GIF, or a folder or "
        "glob of frames) with STYLE(s), keeping them consistent over time (Ruder et al. 2016). "
        "-o: a .mp4/.mov (H.264, audio kept), a .gif, or a folder for PNG frames.",
    )
    p.add_argument("input", metavar="INPUT", help="video file, GIF, folder or glob of frames")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of a folder of frames")
    p.add_argument("--max-frames", type=int, default=None, help="stylise the first N frames")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser(
        "demo",
        parents=[run_flags],
        help="the built-in example, offline",
        description="Stylise scikit-image's astronaut photograph with its stained micrograph "
        "'immunohistochemistry' (pip install 'jaxnst[demo]'). Defaults: "
        + ", ".join(
            f"--no-{flag(k)}" if v is False else f"--{flag(k)} {v}"
            for k, v in DEMO_DEFAULTS.items()
        )
        + "; writes demo.png.",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, devices, weights file and provenance")
    p.add_argument(
        "--weights",
        metavar="FILE",
        default="",
        help="weights file to describe (default: the shipped weights/vgg19.h5)",
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="a local web page: drop images, run, watch live, download")
    p.add_argument("--host", default="127.0.0.1", help="address; any but 127.0.0.1 needs a token")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: a free one)")
    p.add_argument("--token", help="require this token (default: on other hosts, a random one)")
    p.add_argument("--no-compile-cache", action="store_true", help="as for stylize")
    p.set_defaults(func=cmd_serve)
    fast_cli.add_commands(sub, enable_compile_cache)
    return parser


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status. The
    ``jaxnst`` script (argv None) runs a --distributed command under ``multihost.supervise``."""
    if argv is None and multihost.wants_supervisor(sys.argv[1:]):
        return multihost.supervise(sys.argv[1:])
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in TOP_LEVEL:
        argv.insert(0, "stylize")  # 'jaxnst IMAGES ...', and 'jaxnst --config OUT.json ...'
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        return _error(err, EXIT_USAGE)
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    args.argv = argv
    distributed = getattr(args, "distributed", False)
    try:
        if distributed:
            multihost.start()
        return args.func(args)
    except OutputError as err:  # the disk, not the input: none of the run's files was written
        return multihost.leave(_error(err, EXIT_FAILED), distributed)
    except (JaxnstError, UsageError) as err:
        return multihost.leave(_error(err, EXIT_USAGE), distributed)
    except KeyboardInterrupt:
        print("jaxnst: interrupted", file=sys.stderr)
        return multihost.leave(EXIT_INTERRUPTED, distributed)
    except MemoryError:  # its message is empty: say what it was
        text = (
            "out of host memory (MemoryError): the memory plan did not foresee this; lower "
            "--size or --variants, or set --memory-limit-gb to what this machine can give"
        )
        return multihost.leave(_error(text, EXIT_FAILED), distributed)
    except Exception as err:  # a bug or the machine: no traceback
        if os.environ.get("JAXNST_DEBUG"):
            raise
        text = f"{type(err).__name__}: {err} (JAXNST_DEBUG=1 shows the traceback)"
        if distributed and multihost.peer_lost(err):
            text = f"--distributed: lost contact with another process ({text})"
        return multihost.leave(_error(text, EXIT_FAILED), distributed)


def _error(err: Any, code: int) -> int:
    text = " ".join(str(err).split("\n")).strip()  # one line, whatever the message held
    print(f"jaxnst: error: {text}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- config
def make_config(args: argparse.Namespace, base: StyleConfig) -> StyleConfig:
    """base (defaults) <- --config file <- flags, validated."""
    cfg = base
    if args.config:
        cfg = cfg.merge(read_options(args.config), source=str(args.config))
    return cfg.replace(**flag_values(args, StyleConfig)).validate().with_seed()


# ---------------------------------------------------------------------- commands
def cmd_stylize(args: argparse.Namespace) -> int:
    cfg = make_config(args, StyleConfig())
    if args.content is None or not args.styles:  # a sidecar's run again, or what is missing
        args.content, args.styles = outputs.recorded_inputs(args.config, args.content)
    content = Path(args.content)
    name = f"{content.stem}_{Path(args.styles[0]).stem}.png"
    inputs = {"content": _file_input(content), "styles": [_file_input(s) for s in args.styles]}
    output = outputs.output_path(args.output, name)
    return run_command(args, cfg, content, list(args.styles), output, inputs)


def cmd_video(args: argparse.Namespace) -> int:
    from jaxnst.videocli import run_video

    cfg = make_config(args, StyleConfig())
    if not args.no_compile_cache:
        enable_compile_cache()
    code, message = run_video(args, cfg)
    if message:
        print(f"jaxnst: {message}", file=sys.stderr)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = make_config(args, StyleConfig().replace(**DEMO_DEFAULTS))
    try:
        from skimage import data
    except ImportError:
        raise ConfigError(
            "the demo images come with scikit-image: pip install 'jaxnst[demo]'"
        ) from None
    content, style = data.astronaut(), data.immunohistochemistry()
    inputs = {
        "content": {"name": DEMO_INPUTS[0], "sha256": outputs.array_sha256(content)},
        "styles": [{"name": DEMO_INPUTS[1], "sha256": outputs.array_sha256(style)}],
    }
    output = outputs.output_path(args.output, "demo.png")
    return run_command(args, cfg, content, [style], output, inputs)


def cmd_info(args: argparse.Namespace) -> int:
    import jax

    from jaxnst import weights

    versions = outputs.versions()
    print(f"jaxnst {versions.pop('jaxnst')}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    devices = jax.devices()
    print(f"backend: {jax.default_backend()}")
    kinds = ", ".join(f"{d.id}: {d.device_kind}" for d in devices)
    print(f"devices: {len(devices)} ({kinds})")
    path = Path(args.weights) if args.weights else weights.default_weights_path()
    provenance = weights.weights_provenance(path)  # validates the file: WeightsError exits 2
    size = path.stat().st_size / 1e6
    print(f"weights: {path} ({size:.1f} MB, sha256 {outputs.file_sha256(path)})")
    for key, value in provenance.items():
        print(f"  {key}: {value}")
    if not provenance:
        print("  (no provenance attributes: a Keras file)")
    cache = cache_dir()
    entries = len(list(cache.glob("*"))) if cache.is_dir() else 0
    print(f"compile cache: {cache} ({entries} entries; --no-compile-cache to bypass)")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from jaxnst import serve

    serve.require_web()
    if not args.no_compile_cache:
        enable_compile_cache()
    return serve.main(args.host, args.port, args.token)


def _file_input(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    info: dict[str, Any] = {"path": str(path)}
    if missing_file(path) is None:
        with contextlib.suppress(OSError):  # the image reader reports it, in one line
            info["sha256"] = outputs.file_sha256(path)
    return info


# ---------------------------------------------------------------------- compile cache
def cache_dir() -> Path:
    env = os.environ.get("JAXNST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxnst" / "xla"


def enable_compile_cache() -> Path:
    """JAX's persistent compilation cache: a repeated run loads its executables from disk."""
    import jax

    path = cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return path


# ---------------------------------------------------------------------- the run
def run_command(
    args: argparse.Namespace,
    cfg: StyleConfig,
    content: Any,
    styles: list[Any],
    output: Path,
    inputs: dict[str, Any],
) -> int:
    """Check the outputs, load, run each scale with progress and Ctrl-C handling, write."""
    import jax

    t_start = time.perf_counter()
    seeds = [cfg.seed + k for k in range(cfg.variants)]
    plan = outputs.plan_outputs(output, cfg, seeds)
    ckpt = None
    if args.resume:
        ckpt = checkpoint.load_checkpoint(plan.checkpoint)
        checkpoint.check_resumable(ckpt, cfg)
    if not args.no_compile_cache:
        enable_compile_cache()
    writes = jax.process_index() == 0  # multi-host: every process computes, process 0 writes
    scales = CoarseToFine(cfg)
    session = Session(cfg, scales, plan, args.quiet, writes, ckpt)
    try:
        outcome = run_scales(content, styles, cfg, seeds=seeds, hooks=session, scales=scales)
    finally:
        session.close()
    timings = summed(outcome.timings)
    timings = {
        "load": timings["targets"],
        "compile": timings["compile"],
        "run": timings["run"],
        "previous_run": session.previous_run_s,
    }
    if ckpt is None:
        timings.pop("previous_run")
    return _finish(outcome, session, inputs, list(args.argv), timings, t_start, args.quiet)


def _finish(
    outcome: Outcome,
    session: Session,
    inputs: dict[str, Any],
    argv: list[str],
    timings: dict[str, float],
    t_start: float,
    quiet: bool,
) -> int:
    """Write the images, sidecars, history, plot and evolution; the exit status."""
    run, cfg, plan = outcome.run, session.cfg, session.plan
    if outcome.interrupted:
        stopped = f"interrupted at iteration {session.iteration(run)} of {session.scales.total}"
    else:
        stopped = run.stopped
    common = {
        "command": shlex.join(["jaxnst", *argv]),
        "inputs": inputs,
        "config": cfg.to_dict(),
        "versions": outputs.versions(),
        "device": outputs.device_info(),
        "weights": outputs.weights_info(session.weights, cfg.weights),  # as read, not as now
        "timings": timings,  # save and total added as the sidecars are written
        "resumed_from": session.resumed_from,
        "memory": session.memory,
    }
    written = session.write_results(run, stopped, common, t_start, outcome.interrupted)
    if outcome.interrupted and session.writes:
        written.append(plan.checkpoint)
    elif session.writes and (session.wrote_checkpoint or session.resumed_from is not None):
        plan.checkpoint.unlink(missing_ok=True)  # finished: nothing left to resume
    if not quiet and session.writes:
        for path in written:
            print(f"wrote {path}", flush=True)
    if outcome.interrupted:
        session.progress.say(f"jaxnst: {stopped}; continue with the same command and --resume")
        return EXIT_INTERRUPTED
    if run.nonfinite:
        return _error(f"{run.nonfinite}; wrote {plan.images[0]}", EXIT_FAILED)
    if stopped:
        session.progress.say(f"jaxnst: warning: {stopped}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
