"""The command line of fast style networks: ``jaxnst train`` and ``jaxnst apply``.

``train`` builds a ``TrainConfig`` (defaults <- ``--config`` <- flags; an image run's TOML or
sidecar gives its objective), checks every input and output path, then trains with progress
(images/s), sample images, checkpoints for ``--resume`` and Ctrl-C (the first stops after the
current steps and writes a checkpoint; exit 130), and writes the model file with its sidecar,
loss history and plot. ``apply`` stylises image files, folders of them and (with the video
extra) videos, each output with a sidecar. Bad input is one line and exit 2 before anything is
written (``jaxnst.cli`` reports it); like ``cli``, this module prints.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxnst import figures, network, outputs
from jaxnst.apply import apply_network, apply_outputs, expand_inputs, stylise
from jaxnst.console import StopFlag
from jaxnst.data import PhotoBatches, demo_photos
from jaxnst.errors import ConfigError, ImageError
from jaxnst.image import as_image, fit_size, load_image, resize, save_image
from jaxnst.options import add_flags, flag_values, show_value
from jaxnst.train import Trainer, TrainHooks
from jaxnst.trainconfig import TrainConfig, read_train_options

# `jaxnst train --demo`: four of scikit-image's bundled photographs, the style of `jaxnst demo`,
# and the astronaut held out as the sample: sized for a few minutes on a 2-core CPU.
DEMO_TRAIN = {"crop": 128, "steps": 300, "width": 16, "learning_rate": 2e-3, "style_weight": 12.0,
              "content_layers": ("conv2_2",), "style_layers": ("conv1_1", "conv2_1", "conv3_1",
              "conv4_1"), "sample_every": 50, "save_every": 100, "print_every": 25}  # fmt: skip
DEMO_HELD_OUT = "astronaut"
LOOK_SECONDS = 2.0  # at most this long between looks at the losses (and Ctrl-C)
DEMO_STYLE = "skimage.data.hubble_deep_field"


EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130  # as jaxnst.cli's


def add_commands(sub: Any, compile_cache: Callable[[], Any]) -> None:
    """The ``train`` and ``apply`` subcommands, on ``sub`` (the CLI's subparsers);
    ``compile_cache()`` turns on JAX's persistent compilation cache (unless
    --no-compile-cache)."""
    p = sub.add_parser(
        "train", help="train a fast style network on a folder of photos",
        description="Train a feed-forward network (Johnson et al. 2016) to paint any photo in "
        "the style of STYLE(s), on jaxnst's objective; writes the model file MODEL "
        "(.npz added without a suffix) and, beside it, a sidecar, history, plot and samples.",
    )  # fmt: skip
    p.add_argument("styles", metavar="STYLE", nargs="*", help="style image(s)")
    p.add_argument("--data", metavar="DIR", help="folder of training photos (any depth)")
    p.add_argument(
        "-o",
        "--output",
        metavar="MODEL",
        help="the model file (default: STYLE-STEM.npz), or an existing folder for it",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of training options (keys as below), a training's sidecar "
        ".json, or an image run's (its objective is kept); flags override it",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from MODEL's checkpoint (MODEL-STEM.ckpt.npz, written every "
        "save-every steps and on Ctrl-C) with the same options; bit for bit",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first: one training over several "
        "hosts, each loading its share of every batch; process 0 writes",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache",
    )
    p.add_argument("--samples", metavar="IMAGE", nargs="+", default=[],
                   help="photos to stylise every sample-every steps (default: the first two "
                   "of DIR)")  # fmt: skip
    p.add_argument("--demo", action="store_true",
                   help="train on scikit-image's bundled photos with the Hubble deep field as "
                   f"the style, the {DEMO_HELD_OUT} held out as the sample (offline; "
                   "pip install 'jaxnst[train]'); defaults: "
                   + ", ".join(f"--{k.replace('_', '-')} {show_value(v)}"
                               for k, v in DEMO_TRAIN.items()))  # fmt: skip
    add_flags(p, TrainConfig, "training options (also the keys of a --config file)")
    p.set_defaults(func=cmd_train, compile_cache=compile_cache)

    p = sub.add_parser(
        "apply", help="stylise images, folders or videos with a trained network",
        description="Stylise each INPUT (an image, a folder of images, or a video with the "
        "video extra) with MODEL. -o is a file for one image, else a folder (default: the "
        "current one) that gets INPUT-STEM_MODEL-STEM files, each with a .json sidecar.",
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="a model file written by jaxnst train")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image, folder or video")
    p.add_argument("-o", "--output", metavar="PATH", help="output file or existing folder")
    p.add_argument("--size", type=int, metavar="N", help="resize each input's long side first")
    p.add_argument(
        "--original-colors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep each input's colours (default: as the network was trained)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=0,
        metavar="N",
        help="process in tiles of about N px (0: whole unless the device is short)",
    )
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per call")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_apply)


# ---------------------------------------------------------------------- train
def train_config(args: argparse.Namespace) -> TrainConfig:
    """defaults (the demo's with --demo) <- --config file <- flags, validated."""
    cfg = TrainConfig().replace(**DEMO_TRAIN) if args.demo else TrainConfig()
    if args.config:
        cfg = cfg.merge(read_train_options(args.config), source=str(args.config))
    return cfg.replace(**flag_values(args, TrainConfig)).validate()


def model_path(given: str | None, default: str) -> Path:
    """-o as given (".npz" added without a suffix), or ``default`` inside -o / here."""
    if not given:
        return Path(default)
    path = Path(given)
    if path.is_dir() or given.endswith("/"):
        return path / default
    return path if path.suffix else path.with_name(path.name + ".npz")


class TrainFiles:
    """Every path a training writes, checked before it starts."""

    def __init__(self, model: Path, cfg: TrainConfig) -> None:
        if not model.parent.is_dir():
            raise ImageError(f"{model}: directory {model.parent} does not exist")
        try:
            with tempfile.TemporaryFile(dir=model.parent, prefix=".jaxnst-probe-"):
                pass
        except OSError as err:
            raise ImageError(f"{model}: cannot write in {model.parent} ({err.strerror})") from None
        stem = model.with_suffix("")
        self.model, self.sidecar = model, stem.with_name(stem.name + ".json")
        self.checkpoint = stem.with_name(stem.name + ".ckpt.npz")
        self.history = None if cfg.history == "none" else stem.with_name(
            f"{stem.name}_history.{cfg.history}")  # fmt: skip
        self.plot = stem.with_name(stem.name + "_losses.png") if cfg.plot else None
        self.stem = stem
        for path in (self.model, self.sidecar, self.checkpoint, self.history, self.plot):
            if path is not None and path.is_dir():
                raise ImageError(f"{path}: is a directory, cannot write an output file there")

    def sample(self, step: int, total: int) -> Path:
        return self.stem.with_name(f"{self.stem.name}_{step:0{max(4, len(str(total)))}d}.png")


class TrainConsole(TrainHooks):
    """Progress lines, samples, checkpoints and Ctrl-C of ``jaxnst train``."""

    def __init__(self, cfg, files, samples, quiet, writes, meta) -> None:  # noqa: ANN001
        self.cfg, self.files, self.samples, self.writes = cfg, files, samples, writes
        self.quiet, self.meta = quiet or not writes, meta
        self.stop_flag = StopFlag()
        self.written: list[Path] = []
        self._last_print = 0

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def compiled(self, trainer: Trainer, seconds: float) -> None:
        mesh = trainer.mesh.size if trainer.mesh is not None else 1
        self.say(f"compiled the training step in {seconds:.1f} s (batch {self.cfg.batch_size} "
                 f"over {mesh} device(s), {self.cfg.crop} px crops)")  # fmt: skip
        self.stop_flag.install()
        self._last_print = trainer.step

    def steps(self, trainer: Trainer) -> int:
        """Steps until the next event (progress line, sample, checkpoint), and no more than
        fit in ``LOOK_SECONDS`` (the first look after one step), so Ctrl-C is heard soon."""
        events = [e for e in (self.cfg.print_every, self.cfg.sample_every, self.cfg.save_every)
                  if e]  # fmt: skip
        run, images = trainer.timings["run"], trainer.timings["images"]
        per_step = run / images * self.cfg.batch_size if images else None
        fit = 1 if per_step is None else max(1, int(LOOK_SECONDS / max(per_step, 1e-6)))
        return min([e - trainer.step % e for e in events] + [fit])

    def advanced(self, trainer: Trainer) -> None:
        step, cfg = trainer.step, self.cfg
        if cfg.print_every and (step % cfg.print_every == 0 or trainer.done()):
            rows = trainer.rows[-max(1, step - self._last_print) :]
            mean = {k: np.mean([r[k] for r in rows]) for k in ("total", "content", "style")}
            self.say(f"step {step}/{trainer.total}  {trainer.images_per_second():.2f} images/s  "
                     + "  ".join(f"{k} {v:.3e}" for k, v in mean.items()))  # fmt: skip
            self._last_print = step
        if cfg.sample_every and step % cfg.sample_every == 0 and not trainer.done():
            self.sample(trainer)
        if cfg.save_every and step % cfg.save_every == 0 and not trainer.done():
            self.checkpoint(trainer)

    def stop(self) -> bool:
        return self.stop_flag.requested

    def sample(self, trainer: Trainer) -> None:
        images = stylise(trainer.network(), self.samples)
        h = max(x.shape[0] for x in images)
        strip = np.concatenate([np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0)), constant_values=1)
                                for x in images], axis=1)  # fmt: skip
        if self.writes:
            self.written.append(save_image(self.files.sample(trainer.step, trainer.total), strip))

    def checkpoint(self, trainer: Trainer) -> None:
        meta = {**trainer.state_meta(), **self.meta}
        params, opt = trainer.host_params(), trainer.opt_state
        if self.writes:
            network.save_checkpoint(self.files.checkpoint, params, opt, meta)


def cmd_train(args: argparse.Namespace) -> int:
    import jax

    cfg = train_config(args)
    t_start = time.perf_counter()
    if args.demo:
        if args.styles or args.data:
            raise ConfigError("--demo brings its own style and photos: give neither")
        photos = demo_photos()  # ConfigError naming the extra without scikit-image
        from skimage import data as skdata

        tmp = tempfile.TemporaryDirectory(prefix="jaxnst-demo-")
        for name, image in photos.items():
            if name != DEMO_HELD_OUT:
                save_image(Path(tmp.name) / f"{name}.png", image)
        folder, styles = Path(tmp.name), [skdata.hubble_deep_field()]
        samples = [photos[DEMO_HELD_OUT]]
        style_inputs = [{"name": DEMO_STYLE, "sha256": outputs.array_sha256(styles[0])}]
        default = "demo_net.npz"
    else:
        if not args.styles or not args.data:
            raise ConfigError("train needs STYLE image(s) and --data DIR (or --demo)")
        folder, styles, samples = Path(args.data), list(args.styles), list(args.samples)
        style_inputs = [{"path": s, "sha256": outputs.file_sha256(s) if Path(s).is_file()
                         else None} for s in styles]  # fmt: skip
        default = f"{Path(styles[0]).stem}.npz"
    files = TrainFiles(model_path(args.output, default), cfg)
    styles = [load_image(s, name=f"style {i + 1}") for i, s in enumerate(styles)]
    batches = PhotoBatches(folder, cfg.crop, cfg.batch_size, cfg.seed, cfg.max_scale)
    if not samples:
        samples = list(batches.photos.paths[:2])
    side = 2 * cfg.crop
    samples = [resize(x, fit_size(x.shape[:2], side)) for x in map(as_image, samples)]
    ckpt = network.read_npz(files.checkpoint, "training checkpoint") if args.resume else None
    if not args.no_compile_cache:
        args.compile_cache()
    writes = jax.process_index() == 0
    meta = {"styles": style_inputs, "data": {"photos": len(batches), "summary":
            batches.photos.summary()}}  # fmt: skip
    console = TrainConsole(cfg, files, samples, args.quiet, writes, meta)
    if args.demo:
        kept = ", ".join(sorted(p.stem for p in batches.photos.paths))
        console.say(f"demo: training on scikit-image's {kept}; the {DEMO_HELD_OUT} (held out) is "
                    f"the sample; style: {DEMO_STYLE}")  # fmt: skip
    else:
        console.say(batches.photos.summary())
    trainer = Trainer(styles, batches, cfg)
    resumed_from = None
    if ckpt is not None:
        params, opt, ckmeta = network.load_checkpoint(files.checkpoint, trainer.params,
                                                      trainer.opt_state)  # fmt: skip
        trainer.restore(params, opt, ckmeta, str(files.checkpoint))
        resumed_from = trainer.step
        console.say(f"resuming from step {trainer.step} ({files.checkpoint})")
    try:
        trainer.run(console)
    finally:
        console.stop_flag.uninstall()
    return finish_train(args, trainer, console, files, meta, resumed_from, t_start)


def finish_train(args, trainer, console, files, meta, resumed_from, t_start) -> int:  # noqa: ANN001
    """Write the model (or, when stopped early, a checkpoint), history, plot and sidecar."""
    cfg, writes = trainer.cfg, console.writes
    stopped = not trainer.done()
    if stopped or trainer.nonfinite:
        console.checkpoint(trainer)
        console.written.append(files.checkpoint)
    else:
        console.sample(trainer)
    history = [{k: np.asarray([r[k] for r in trainer.rows]) for k in
                (trainer.rows[0] if trainer.rows else {"iteration": 0})}]  # fmt: skip
    if writes and files.history is not None:
        console.written.append(outputs.write_history(files.history, history, [cfg.seed]))
    if writes and files.plot is not None and trainer.rows:
        plot = figures.write_plot(files.plot, history, [cfg.seed], cfg.style_config())
        if plot is None:
            console.say("jaxnst: warning: no loss plot: matplotlib is not installed "
                        "(pip install 'jaxnst[plot]')")  # fmt: skip
        else:
            console.written.append(plot)
    record = {
        "command": shlex.join(["jaxnst", *args.argv]), "inputs": meta, "config": cfg.to_dict(),
        "versions": outputs.versions(), "device": outputs.device_info(),
        "timings": {"compile": round(trainer.timings["compile"], 3),
                    "run": round(trainer.timings["run"], 3),
                    "total": round(time.perf_counter() - t_start, 3)},
        "images_per_second": trainer.images_per_second(), "steps": trainer.step,
        "total_steps": trainer.total, "resumed_from": resumed_from,
    }  # fmt: skip
    if not stopped and not trainer.nonfinite and writes:
        net = trainer.network({**meta, "versions": record["versions"]})
        console.written.append(net.save(files.model))
        record.update(model=files.model.name, model_sha256=outputs.file_sha256(files.model),
                      final_loss=net.meta["final_loss"])  # fmt: skip
        if files.checkpoint.exists():
            files.checkpoint.unlink()  # finished: nothing left to resume
    if writes:
        console.written.append(outputs.write_json(files.sidecar, record))
        for path in console.written if not console.quiet else []:
            print(f"wrote {path}")
    if trainer.nonfinite:
        print(f"jaxnst: error: {trainer.nonfinite}; wrote {files.checkpoint}")
        return EXIT_FAILED
    if stopped:
        console.say(f"jaxnst: stopped at step {trainer.step} of {trainer.total}; continue with "
                    "the same command and --resume")  # fmt: skip
        return EXIT_INTERRUPTED
    return EXIT_OK


# ---------------------------------------------------------------------- apply
def cmd_apply(args: argparse.Namespace) -> int:
    net = network.load_network(args.model)
    items = expand_inputs(args.inputs)
    paths = apply_outputs(items, args.output, Path(args.model))
    if args.size is not None and args.size < 5:
        raise ConfigError(f"--size must be at least 5 px, not {args.size}")
    if args.tile < 0 or args.batch_size < 1:
        raise ConfigError("--tile must be >= 0 and --batch-size >= 1")
    from jaxnst import videoio

    loaded = []  # every input read before anything is written
    for (path, kind), out in zip(items, paths, strict=True):
        if kind == "video":
            videoio.output_kind(out)
            loaded.append(videoio.read_video(path, args.size, min_frames=1))
        else:
            loaded.append((load_image(path, args.size, str(path)), None))
    common = {
        "model": {"path": args.model, "sha256": outputs.file_sha256(args.model),
                  **{k: net.meta.get(k) for k in ("jaxnst", "format_version", "styles", "steps")},
                  "config": net.config.to_dict()},
        "options": {"size": args.size, "original_colors": args.original_colors,
                    "tile": args.tile}, "versions": outputs.versions(),
        "device": outputs.device_info(), "command": shlex.join(["jaxnst", *args.argv]),
    }  # fmt: skip
    for (path, kind), out, (pixels, info) in zip(items, paths, loaded, strict=True):
        t0 = time.perf_counter()
        frames = list(pixels) if kind == "video" else [pixels]
        result = apply_network(net, frames, original_colors=args.original_colors,
                               tile=args.tile, batch_size=args.batch_size)  # fmt: skip
        seconds = time.perf_counter() - t0
        if kind == "video":
            videoio.write_video(
                out, np.stack(result), info.fps, info.source if info.audio else None
            )
        else:
            save_image(out, result[0])
        sidecar = {"output": out.name, "input": {"path": str(path), "sha256":
                   outputs.file_sha256(path) if path.is_file() else None},
                   "frames": len(frames), "seconds": round(seconds, 4), **common}  # fmt: skip
        outputs.write_json(out.with_suffix(".json"), sidecar)
        if not args.quiet:
            print(f"wrote {out} ({seconds:.2f} s)", flush=True)
    return 0
