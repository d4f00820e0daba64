"""The ``jaxnst`` command: ``stylize``, ``demo`` and ``info``.

Every option of a run is a field of ``StyleConfig``: the flags below are generated from the
fields (help and default included), a ``--config`` file (TOML, or a sidecar JSON) sets the same
names, and flags override the file. Only this module prints or exits. Errors are one line on stderr,
``jaxnst: error: ...``, and nothing is written for bad input. Exit codes: 0 done, 1 the loss became
NaN/Inf (the last finite image is kept) or an unexpected failure, 2 bad input or usage, 130 Ctrl-C
(the current images, history and a checkpoint for ``--resume`` are written first).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import time
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst import outputs
from jaxnst.color import color_swap
from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError, JaxnstError
from jaxnst.image import to_uint8
from jaxnst.memory import format_bytes
from jaxnst.scales import CoarseToFine

COMMANDS = ("stylize", "demo", "info")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# `jaxnst demo`: the paper's kind of pair (a photograph, a textured image) from scikit-image's
# bundled samples, sized to finish in about a minute on a 2-core CPU (65 s measured, 1.8 it/s);
# starting from the content shows a recognisable result after so few iterations.
DEMO_DEFAULTS = {"size": 160, "iterations": 100, "init": "content"}
DEMO_INPUTS = ("skimage.data.astronaut", "skimage.data.hubble_deep_field")

OUTPUT_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(StyleConfig) if f.metadata.get("output")
}
TARGET_SECONDS = 0.5  # aim for a progress update (and a Ctrl-C check) about this often


METAVARS = {int: "N", float: "X", str: "NAME"}


class UsageError(Exception):
    """A command line argparse rejects; reported in one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------- parser from the config
def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, str):
        return repr(value) if value else "''"
    return str(value)


def _elements(kind: type) -> Any:
    """argparse type for one token of a sequence option; commas separate values too."""

    def parse(token: str) -> list[Any]:
        return [kind(t) for t in token.split(",") if t != ""]

    parse.__name__ = kind.__name__  # argparse's "invalid float value: 'x'"
    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per StyleConfig field: --field-name, with the field's help and default."""
    group = parser.add_argument_group("run options (also the keys of a --config file)")
    hints = typing.get_type_hints(StyleConfig)
    for f in dataclasses.fields(StyleConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata.get('help', '')} (default: {_show(f.default)})".replace("%", "%%")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(f.default, tuple):
            kind = typing.get_args(hints[f.name])[0]
            group.add_argument(
                flag, nargs="+", type=_elements(kind), metavar=METAVARS.get(kind, "VALUE"), **kw
            )
        else:
            metavar = METAVARS.get(type(f.default), "VALUE")
            group.add_argument(flag, type=type(f.default), metavar=metavar, **kw)


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The StyleConfig fields given on the command line (sequence tokens flattened)."""
    out = {}
    for f in dataclasses.fields(StyleConfig):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(f.default, tuple):
                value = tuple(v for token in value for v in token)
            out[f.name] = value
    return out


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
    add_config_flags(run_flags)

    p = sub.add_parser(
        "stylize",
        parents=[run_flags],
        help="stylise CONTENT with STYLE(s)",
        description="Paint CONTENT in the style of STYLE (several styles blend).",
    )
    p.add_argument("content", metavar="CONTENT", help="content image")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s)")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser(
        "demo",
        parents=[run_flags],
        help="the built-in example, offline",
        description="Stylise scikit-image's astronaut photograph with the Hubble "
        "deep field (pip install 'jaxnst[demo]'). Defaults: "
        + ", ".join(f"--{k} {v}" for k, v in DEMO_DEFAULTS.items())
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
    return parser


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "stylize")
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        return _error(err, EXIT_USAGE)
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    args.argv = argv
    try:
        if getattr(args, "distributed", False):
            start_distributed()
        return args.func(args)
    except (JaxnstError, UsageError) as err:
        return _error(err, EXIT_USAGE)
    except KeyboardInterrupt:
        print("jaxnst: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug or the machine (out of memory, disk full): no traceback
        if os.environ.get("JAXNST_DEBUG"):
            raise
        text = f"{type(err).__name__}: {err} (JAXNST_DEBUG=1 shows the traceback)"
        return _error(text, EXIT_FAILED)


def start_distributed() -> None:
    """``jax.distributed.initialize()`` before any other use of JAX; ConfigError if it fails.

    JAX finds the coordinator, the process count and this process's id itself on Cloud TPU,
    under SLURM, Open MPI and Kubernetes; elsewhere JAX_COORDINATOR_ADDRESS (host:port of process
    0) with JAX_NUM_PROCESSES and JAX_PROCESS_ID (which this JAX does not read itself) say it.
    Untested on a real multi-host machine (README, "Many variants, many devices").
    """
    import jax

    kwargs = {}
    for name, var in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit():
                raise ConfigError(f"--distributed: {var} must be a whole number, not {value!r}")
            kwargs[name] = int(value)
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--distributed: jax.distributed.initialize() failed: {err}") from None


def _error(err: Any, code: int) -> int:
    text = " ".join(str(err).split("\n")).strip()  # one line, whatever the message held
    print(f"jaxnst: error: {text}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- config
def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file, or the ``config`` of a sidecar .json; ConfigError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: malformed JSON ({err})") from None
        data = data.get("config", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of options")
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML ({err})") from None


def make_config(args: argparse.Namespace, base: StyleConfig) -> StyleConfig:
    """base (defaults) <- --config file <- flags, validated."""
    cfg = base
    if args.config:
        cfg = cfg.merge(read_config_file(args.config), source=str(args.config))
    return cfg.replace(**_flag_values(args)).validate()


# ---------------------------------------------------------------------- commands
def cmd_stylize(args: argparse.Namespace) -> int:
    cfg = make_config(args, StyleConfig())
    content = Path(args.content)
    name = f"{content.stem}_{Path(args.styles[0]).stem}.png"
    inputs = {"content": _file_input(content), "styles": [_file_input(s) for s in args.styles]}
    return run_command(args, cfg, content, list(args.styles), _output(args.output, name), inputs)


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = make_config(args, StyleConfig().replace(**DEMO_DEFAULTS))
    try:
        from skimage import data
    except ImportError:
        raise ConfigError(
            "the demo images come with scikit-image: pip install 'jaxnst[demo]'"
        ) from None
    content, style = data.astronaut(), data.hubble_deep_field()
    inputs = {
        "content": {"name": DEMO_INPUTS[0], "sha256": outputs.array_sha256(content)},
        "styles": [{"name": DEMO_INPUTS[1], "sha256": outputs.array_sha256(style)}],
    }
    return run_command(args, cfg, content, [style], _output(args.output, "demo.png"), inputs)


def cmd_info(args: argparse.Namespace) -> int:
    import jax

    from jaxnst import vgg

    versions = outputs.versions()
    print(f"jaxnst {versions.pop('jaxnst')}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    devices = jax.devices()
    print(f"backend: {jax.default_backend()}")
    kinds = ", ".join(f"{d.id}: {d.device_kind}" for d in devices)
    print(f"devices: {len(devices)} ({kinds})")
    path = Path(args.weights) if args.weights else vgg.default_weights_path()
    provenance = vgg.weights_provenance(path)  # validates the file: WeightsError exits 2
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


def _file_input(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    info: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        with contextlib.suppress(OSError):  # the image reader reports it, in one line
            info["sha256"] = outputs.file_sha256(path)
    return info


def _output(given: str | None, default_name: str) -> Path:
    """-o as given, or ``default_name`` inside -o (an existing directory) or the current one."""
    if not given:
        return Path(default_name)
    path = Path(given)
    if path.is_dir() or given.endswith(("/", os.sep)):
        return path / default_name
    return path


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
class _StopFlag:
    """SIGINT sets a flag the run loop checks between step calls; a second one quits at once."""

    def __init__(self) -> None:
        self.requested = self.installed = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        self.installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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


@dataclasses.dataclass
class Session:
    """A CLI run across its scales: the StyleRun of the current one plus what outlives it."""

    cfg: StyleConfig
    plan: outputs.Plan
    inputs: dict[str, Any]
    argv: list[str]
    scales: CoarseToFine  # the plan of scales and what the finished ones left
    writes: bool = True  # False on the other processes of a multi-host run
    frames: outputs.Frames = dataclasses.field(default_factory=list)
    snapshots: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    next_save: int = 0
    digests: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    memory: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per scale
    resumed_from: int | None = None
    wrote_checkpoint: bool = False

    def iteration(self, run: Any) -> int:
        """The slowest variant's iteration, counted over all scales."""
        return int(self.scales.iterations(run).min())


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

    from jaxnst.stylize import StyleRun, make_problem

    t_start = time.perf_counter()
    seeds = [cfg.seed + k for k in range(cfg.variants)]
    plan = outputs.plan_outputs(output, cfg, seeds)
    ckpt = None
    if args.resume:
        ckpt = outputs.load_checkpoint(plan.checkpoint)
        outputs.check_resumable(ckpt, cfg)
    if not args.no_compile_cache:
        enable_compile_cache()

    # Output options at their defaults in the library's config: they do not change the
    # computation, and an unchanged config reuses the compiled step.
    scales = CoarseToFine(cfg.replace(**OUTPUT_DEFAULTS))
    writes = jax.process_index() == 0  # multi-host: every process computes, process 0 writes
    session = Session(cfg, plan, inputs, list(args.argv), scales, writes)
    if ckpt is not None:
        meta = ckpt.meta
        scales.index = int(meta.get("stage", 0))
        scales.past_rows = outputs.rows_from_json(meta.get("past_rows", []))
        scales.past_iterations = [int(i) for i in meta.get("past_iterations", [])]
        scales.past_evaluations = [int(e) for e in meta.get("past_evaluations", [])]
        session.snapshots = list(meta.get("snapshots", []))
        session.frames = outputs.read_frames(session.snapshots)
        session.memory = list(meta.get("memory", []))
        session.timings["previous_run"] = float(meta.get("timings", {}).get("run", 0.0))
    progress = Progress(cfg, scales.total, args.quiet or not writes)
    params, run, interrupted, first = None, None, False, True
    compile_s, run_s = 0.0, 0.0
    stop = _StopFlag()
    # Ctrl-C before the first step (loading, compiling) just quits; from then on it stops
    # the run between step calls and writes what there is (a second Ctrl-C quits).
    with contextlib.ExitStack() as stack:
        try:
            while scales.index < len(scales.stages):
                scfg = scales.config()
                t0 = time.perf_counter()
                problem = make_problem(content, styles, scfg, params)
                params = problem.params
                init = scales.initial_images(problem.content.shape[:2])
                run = StyleRun(problem, scfg, seeds=seeds, init=init)
                session.digests = {
                    "content": outputs.array_sha256(problem.content),
                    "styles": [outputs.array_sha256(s) for s in problem.styles],
                }
                if problem.masks:  # a resumed run must see the same regions
                    session.digests["masks"] = [outputs.array_sha256(m) for m in problem.masks]
                if ckpt is not None and session.resumed_from is None:
                    if ckpt.meta.get("inputs") != session.digests:
                        raise ConfigError(
                            f"--resume: {ckpt.path} was written for other content, style or "
                            "mask images (or another size)"
                        )
                    outputs.restore(run, ckpt)
                    session.resumed_from = session.iteration(run)
                    progress.say(f"resuming from iteration {session.resumed_from} ({ckpt.path})")
                session.timings["load"] = session.timings.get("load", 0.0) + (
                    time.perf_counter() - t0
                )
                if first:
                    first, it, every = False, session.iteration(run), cfg.save_every
                    session.next_save = (it // every + 1) * every if every else 0
                h, w = problem.content.shape[:2]
                many = len(scales.stages) > 1
                where = f", scale {scales.index + 1}/{len(scales.stages)}" if many else ""
                progress.say(memory_line(run))
                _record_memory(session, run)
                progress.say(
                    f"compiling the {cfg.optimizer} step for {run.n} x {w}x{h} px{where} ..."
                )
                seconds = run.compile()
                compile_s += seconds
                progress.say(f"compiled in {seconds:.1f} s")
                if not stop.installed:
                    stack.enter_context(stop)
                progress.start(session.iteration(run))
                _loop(run, session, progress, stop)
                run_s += run.timings["run"]
                if stop.requested and not (scales.last and run.done()):
                    interrupted = True
                    break
                if run.nonfinite or getattr(run, "stalled", "") or scales.last:
                    break
                scales.next(run)
        finally:
            progress.close()
        session.timings.update(compile=compile_s, run=run_s)
        return _finish(run, session, progress, interrupted, t_start, args.quiet)


def memory_line(run: Any) -> str:
    """'memory: about 1.2 GiB per device (remat off; limit 78.0 GiB)': the run's estimate."""
    remat = "remat on" if run.cfg.remat == "on" else "remat off"
    limit = run.memory_limit
    where = f"limit {format_bytes(limit)}" if limit else "device limit unknown"
    return f"memory: about {format_bytes(run.memory.bytes)} per device ({remat}; {where})"


def _record_memory(session: Session, run: Any) -> None:
    """The estimate of this scale for the sidecar (a resumed scale replaces its old entry)."""
    entry = {
        "size": run.cfg.size,
        "estimate_bytes": int(run.memory.bytes),
        "limit_bytes": None if run.memory_limit is None else int(run.memory_limit),
        "remat": run.cfg.remat == "on",
        "variants_per_device": int(-(-run.xs.shape[0] // (run.mesh.size if run.mesh else 1))),
    }
    session.memory = [m for m in session.memory if m.get("size") != entry["size"]] + [entry]


def _pending_calls(run: Any, session: Session, progress: Progress, step_s: float | None) -> int:
    """How many step calls to make before the host looks again (not past the next event)."""
    cfg = session.cfg
    # One call first to time a step; then as many as fit in TARGET_SECONDS, at most a chunk.
    calls = 1 if step_s is None else int(TARGET_SECONDS / max(step_s, 1e-6))
    calls = max(1, min(calls, cfg.chunk))
    it = session.iteration(run)
    fresh = int(bool(np.any(outputs.to_host(getattr(run.states, "fresh", np.zeros(1, bool))))))
    # A call advances a variant by at most one iteration, so these land exactly on the event
    # when every variant is accepted (Adam always; L-BFGS unless its line search backs off).
    if cfg.save_every:
        calls = min(calls, session.next_save - it + fresh)
    if progress.mode == "lines" and cfg.print_every:
        calls = min(calls, progress.next_print - it + fresh)
    return max(1, calls)


def _loop(run: Any, session: Session, progress: Progress, stop: _StopFlag) -> None:
    """Advance this scale until done, NaN/Inf or Ctrl-C, writing snapshots on the way."""
    cfg = session.cfg
    step_s = None
    while not run.done() and not stop.requested:
        calls = _pending_calls(run, session, progress, step_s)
        t0 = time.perf_counter()
        made = run.advance(calls)
        step_s = (time.perf_counter() - t0) / max(made, 1)
        it = session.iteration(run)
        progress.update(it, run.rows[0][-1] if run.rows[0] else None, run.n)
        if cfg.save_every and it >= session.next_save and not run.nonfinite:
            _snapshot(run, session, it)
            session.next_save = (it // cfg.save_every + 1) * cfg.save_every


def _images(run: Any, cfg: StyleConfig) -> np.ndarray:
    """The current images as saved: (n, h, w, 3) uint8, original colours if asked."""
    images = run.images()
    if cfg.original_colors:
        images = color_swap(images, run.problem.content)
    return to_uint8(images)


def _write(session: Session, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on the writing process, None on the others (multi-host: process 0 writes;
    every process computes, so the collective gathers before each write happen everywhere)."""
    return fn(*args) if session.writes else None


def _snapshot(run: Any, session: Session, iteration: int) -> None:
    images = _images(run, session.cfg)
    paths = [session.plan.snapshot(k, iteration) for k in range(run.n)]
    _write(session, outputs.save_images, paths, images)
    session.frames.append((iteration, images))
    session.snapshots.append({"iteration": iteration, "paths": [str(p) for p in paths]})
    _checkpoint(run, session)


def _checkpoint(run: Any, session: Session) -> None:
    meta = {
        "config": session.cfg.to_dict(),
        "seeds": list(run.seeds),
        "inputs": session.digests,
        "stage": session.scales.index,
        "iteration": session.iteration(run),
        "rows": outputs.rows_for_json(run.rows),
        "past_rows": outputs.rows_for_json(session.scales.past_rows),
        "past_iterations": session.scales.past_iterations,
        "past_evaluations": session.scales.past_evaluations,
        "snapshots": session.snapshots,
        "memory": session.memory,
        "timings": {"run": run.timings["run"] + session.timings.get("previous_run", 0.0)},
    }
    outputs.save_checkpoint(session.plan.checkpoint, run, meta, write=session.writes)
    session.wrote_checkpoint = True


def _finish(
    run: Any, session: Session, progress: Progress, interrupted: bool, t_start: float, quiet: bool
) -> int:
    """Write the images, sidecars, history, plot and evolution; the exit status."""
    cfg, plan = session.cfg, session.plan
    t0 = time.perf_counter()
    iteration = session.iteration(run)
    images = _images(run, cfg)
    written = _write(session, outputs.save_images, plan.images, images) or []
    if session.frames and session.frames[-1][0] != iteration:
        session.frames.append((iteration, images))
    histories = session.scales.history(run)
    if plan.history is not None:
        written.append(_write(session, outputs.write_history, plan.history, histories, run.seeds))
    if plan.plot is not None and session.writes:
        path = outputs.write_plot(plan.plot, histories, run.seeds, cfg)
        if path is None:
            progress.say(
                "jaxnst: warning: no loss plot: matplotlib is not installed "
                "(pip install 'jaxnst[plot]')"
            )
        else:
            written.append(path)
    if plan.sheet is not None and session.frames and session.writes:
        written.append(outputs.write_sheet(plan.sheet, session.frames, run.seeds))
        for k in range(run.n):
            frames = [(i, imgs[k]) for i, imgs in session.frames]
            written.append(outputs.write_gif(plan.gif(k), frames))
    if interrupted:
        stopped = f"interrupted at iteration {iteration} of {session.scales.total}"
        _checkpoint(run, session)
    else:
        stopped = run.nonfinite or getattr(run, "stalled", "")
    timings = {
        **session.timings,
        "save": time.perf_counter() - t0,
        "total": time.perf_counter() - t_start,
    }
    written += _write_sidecars(run, session, images, stopped, timings)
    written = [path for path in written if path is not None]
    if interrupted and session.writes:
        written.append(plan.checkpoint)
    elif session.writes and (session.wrote_checkpoint or session.resumed_from is not None):
        plan.checkpoint.unlink(missing_ok=True)  # finished: nothing left to resume
    if not quiet and session.writes:
        for path in written:
            print(f"wrote {path}", flush=True)
    if interrupted:
        progress.say(f"jaxnst: {stopped}; continue with the same command and --resume")
        return EXIT_INTERRUPTED
    if run.nonfinite:
        return _error(f"{run.nonfinite}; wrote {plan.images[0]}", EXIT_FAILED)
    if stopped:
        progress.say(f"jaxnst: warning: {stopped}")
    return EXIT_OK


def _write_sidecars(
    run: Any,
    session: Session,
    images: np.ndarray,
    stopped: str,
    timings: dict[str, float],
) -> list[Path]:
    from jaxnst import vgg

    cfg, plan = session.cfg, session.plan
    weights = Path(cfg.weights) if cfg.weights else vgg.default_weights_path()
    weights_info = {
        "path": str(weights),
        "sha256": outputs.file_sha256(weights),
        "provenance": vgg.weights_provenance(weights),
    }
    common = {
        "command": shlex.join(["jaxnst", *session.argv]),
        "inputs": session.inputs,
        "config": cfg.to_dict(),
        "versions": outputs.versions(),
        "device": outputs.device_info(),
        "weights": weights_info,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "resumed_from": session.resumed_from,
        "memory": session.memory,
    }
    iterations = session.scales.iterations(run)
    evaluations = session.scales.evaluations(run)
    rows = session.scales.rows(run)
    written = []
    for k, seed in enumerate(run.seeds):
        last = rows[k][-1] if rows[k] else {}
        data = {
            "image": plan.images[k].name,
            "image_sha256": outputs.array_sha256(images[k]),
            "variant": k,
            "seed": int(seed),
            "iterations": int(iterations[k]),
            "evaluations": int(evaluations[k]),
            "final_loss": {
                n: float(v)
                for n, v in last.items()
                if n not in ("iteration", "evaluations", "scale")
            },
            "stopped": stopped,
            **common,
        }
        written.append(_write(session, outputs.write_json, plan.sidecar(k), data))
    return written


if __name__ == "__main__":
    sys.exit(main())
