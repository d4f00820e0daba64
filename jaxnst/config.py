"""StyleConfig: every option of a style transfer run, defined once with its default, help and role.

The CLI flags, the TOML config file and the Python keyword arguments are all generated from the
fields below and validated by ``StyleConfig.validate`` (the machinery is ``jaxnst.options``).
Each field declares its role (static, traced, host or output), and what the rest of the package
needs to know about a field is derived from the roles here, never listed by hand:
``static_config`` (the compile key of the step programs: the static fields, the rest reset),
``SWEEPABLE`` (traced fields and their ``LossWeights`` slots), ``RESUME_CHECKED`` (what a resumed
run must repeat: all but the output fields and ``iterations``) and ``LossWeights.from_config``.
This module is a leaf: it imports nothing of jaxnst but the option machinery, the error type and
the layer names.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxnst.errors import ConfigError
from jaxnst.layers import LAYER_INDEX, LAYER_NAMES
from jaxnst.options import Options, flag, opt

POOLINGS = ("max", "avg")
HISTOGRAM_BASES = ("cholesky", "pca", "sym")  # jaxnst.color.histogram_matrix
MASK_LAYERS = ("simple", "inside", "all")  # jaxnst.guidance.mask_pyramid; the first is default
HISTORY_FORMATS = ("csv", "json", "none")
HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
PAPER_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
# The automatic plans (docs/benchmarks.md, "Time to a good picture", "The same look at every
# size"): above 256 px coarse to fine from at most 256 px, where an evaluation costs 0.23x one at
# 512 px, with shares of ``iterations`` at the coarsest scale and at each finer one; from 128 up
# to 256 px at 256 px, then a tenth at the size asked for (at 128 px VGG's deep layers see too
# few positions to keep the photo's layout). Below 128 px a run keeps its own size.
AUTO_COARSEST, AUTO_SHARES, AUTO_SMALLEST, AUTO_FINISH = 256, (0.5, 0.3), 128, 0.1
MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits: a larger seed would repeat a smaller one
MAX_ITERATIONS = 10**8  # evaluations (up to 3x + 100 of them) count in int32
MAX_VARIANTS = 10**6


@dataclass(frozen=True)
class StyleConfig(Options):
    """One style transfer run. Defaults reproduce Gatys et al. (2016) with tuned weights.

    Each field is an ``options.opt``: help, role and bounds (``choices``, ``low``, ``positive``).
    """

    # --- images
    size: int = opt(
        512, "longest side of the output image in pixels", "static", low=16, unit="pixels"
    )
    style_scale: float = opt(
        1.0, "style image's longest side relative to the output's", "host", positive=True
    )
    # --- objective (Gatys et al. 2016, eqs. 1-7)
    content_weight: float = opt(
        1.0, "alpha: weight of the content loss", "traced", slot="content", low=0
    )
    style_weight: float = opt(
        1e3, "beta: weight of the style loss (alpha/beta = 1e-3)", "traced", slot="style", low=0
    )
    tv_weight: float = opt(
        0.0, "weight of the total-variation smoothness loss (off: 0)", "traced", slot="tv", low=0
    )
    temporal_weight: float = opt(
        1e13, "gamma: weight of the temporal loss between neighbouring video frames (video)",
        "traced", slot="temporal", low=0,
    )  # fmt: skip
    objective: str = opt(
        "normalized", "normalized: the content and TV sums taken per position and scaled to a "
        "512x384 px image, so the weights mean the same at every size; paper: Gatys et al.'s "
        "sums as they are", "static", choices=("normalized", "paper"),
    )  # fmt: skip
    style_layer_norm: str = opt(
        "auto", "target: each style layer's E_l relative to its target's magnitude (beta keeps "
        "its meaning); none; auto: target under scale control (style-layer-images), else none",
        "static", choices=("auto", "none", "target"),
    )  # fmt: skip
    content_layers: tuple[str, ...] = opt(("conv4_2",), "layers of the content loss", "static")
    style_layers: tuple[str, ...] = opt(PAPER_STYLE_LAYERS, "layers of the style loss", "static")
    style_layer_weights: tuple[float, ...] = opt(
        (), "weight w_l per style layer (default: 1/L each, the paper's 1/5)", "traced",
        slot="style_layers", resolve="layer_weights", low=0,
    )  # fmt: skip
    style_blend_weights: tuple[float, ...] = opt(
        (), "blend weight per style image (default: equal); normalised to sum to 1", "host", low=0
    )
    pooling: str = opt(
        "max", "pooling in VGG19: max, or avg (the paper's preference)", "static", choices=POOLINGS
    )
    color_mode: str = opt(
        "none", "colour control (Gatys et al. 2017): none; luminance (transfer on luminance, "
        "keep the content's colours); histogram (recolour the style to the content's colours "
        "first)", "static", choices=("none", "luminance", "histogram"),
    )  # fmt: skip
    histogram_basis: str = opt(
        "cholesky", "basis of histogram matching: cholesky, pca or sym", "host",
        choices=HISTOGRAM_BASES,
    )  # fmt: skip
    # --- spatial and scale control (Gatys et al. 2017, secs. 4 and 6)
    masks: tuple[str, ...] = opt(
        (), "spatial control: a greyscale mask per style image marking where on the content it "
        "applies (white = inside), or one colour-coded region map with region-colors", "host",
    )  # fmt: skip
    region_colors: tuple[str, ...] = opt(
        (), "with a colour-coded map: the colour (#rrggbb) of each style image's region, in "
        "order", "host",
    )  # fmt: skip
    style_masks: tuple[str, ...] = opt(
        (), "per style image, a greyscale mask of the part to take the style from (default: "
        "all)", "host",
    )  # fmt: skip
    mask_layers: str = opt(
        "simple", "masks at deeper layers: simple (downsampled), inside (eroded to whole "
        "receptive fields: deep layers lose small regions) or all (dilated)", "host",
        choices=MASK_LAYERS,
    )  # fmt: skip
    background: str = opt(
        "content", "content outside every mask: content (no style loss there) or style (the "
        "blend of all the style images)", "host", choices=("content", "style"),
    )  # fmt: skip
    style_layer_images: tuple[int, ...] = opt(
        (), "scale control: the style image (1, 2, ...) each style layer's Gram comes from, e.g. "
        "1 1 2 2 2 takes fine scales from the first, coarse from the second (default: blend)",
        "host",
    )  # fmt: skip
    gate: bool = opt(
        True, "with masks and background content: keep the photo outside every mask by "
        "construction (the image is c + g (y - c), g the union of the masks feathered over 4 "
        "percent of the long side)", "host",
    )  # fmt: skip
    normalize_network: bool = opt(
        False, "rescale VGG19 so each filter's mean activation is 1, as the paper did", "host"
    )
    # --- optimisation
    optimizer: str = opt(
        "lbfgs", "lbfgs (the paper's) or adam", "static", choices=("lbfgs", "adam")
    )
    iterations: int = opt(
        500, "optimiser steps (L-BFGS: accepted steps; evaluations counted apart)", "host",
        resume_free=True, low=1, high=MAX_ITERATIONS,
    )  # fmt: skip
    learning_rate: float = opt(
        0.02, "Adam step size, in [0, 1] pixel units", "traced", slot="learning_rate",
        positive=True,
    )  # fmt: skip
    lbfgs_memory: int = opt(
        20, "L-BFGS history size (pairs of steps and gradient changes)", "static", low=1
    )
    init: str = opt(
        "noise", "initial image: noise (the paper's), content or style", "host",
        choices=("noise", "content", "style"),
    )  # fmt: skip
    init_image: str = opt(
        "", "start from this image file (resized to the output) instead of init", "host"
    )
    seed: int = opt(
        0, "random seed; variant k uses seed + k; -1: a random seed, recorded in the sidecar",
        "host", low=-1, high=MAX_SEED,
    )  # fmt: skip
    variants: int = opt(
        1, "number of images from seeds seed .. seed+variants-1, in one run", "host", low=1,
        high=MAX_VARIANTS,
    )  # fmt: skip
    range_mode: str = opt(
        "project", "keep pixels in [0, 1]: project every step, or clip at end", "static",
        choices=("project", "clip"),
    )  # fmt: skip
    # --- outputs: what the CLI writes (free to change on --resume)
    original_colors: bool = opt(
        False, "keep the content's colours: the result's luminance with the content's chroma "
        "(a colour swap after the run)", "output",
    )  # fmt: skip
    output_template: str = opt(
        "{stem}_v{variant}", "file name of each variant when variants > 1, from {stem} (of "
        "--output), {variant} (0, 1, ...) and {seed}", "output",
    )  # fmt: skip
    save_every: int = opt(
        0, "write a snapshot of each image and a checkpoint for --resume every K iterations "
        "(0: none)", "output", low=0,
    )  # fmt: skip
    print_every: int = opt(
        50, "iterations between progress lines when stderr is not a terminal (0: none)",
        "output", low=0,
    )  # fmt: skip
    history: str = opt(
        "csv", "loss history beside the output: csv, json or none", "output",
        choices=HISTORY_FORMATS,
    )  # fmt: skip
    plot: bool = opt(True, "plot the loss curves (log scale) to a PNG; needs matplotlib", "output")
    report: bool = opt(
        True, "write OUT.html, one self-contained page with the snapshots on a trackbar, the "
        "loss curves and the sidecar, when snapshots are saved (save-every); of a video, its "
        "frames", "output",
    )  # fmt: skip
    # --- compute
    dtype: str = opt(
        "float32", "compute dtype of the network: float32 or bfloat16", "static",
        choices=("float32", "bfloat16"),
    )  # fmt: skip
    precision: str = opt(
        "default", "matmul/conv precision: default (TF32 on GPUs), high, highest", "static",
        choices=("default", "high", "highest"),
    )  # fmt: skip
    loop: str = opt(
        "auto", "auto, python (a jitted step per call) or scan (while_loop chunks)", "static",
        choices=("auto", "python", "scan"),
    )  # fmt: skip
    chunk: int = opt(
        50, "steps between host checks (progress, finiteness, Ctrl-C)", "static", low=1
    )
    batching: str = opt(
        "auto", "how variants run: each (every variant runs the one-image program: the bytes of "
        "a lone run with its seed), vmap (one batched program: faster on GPUs and TPUs, equal to "
        "lone runs only to rounding); auto: each on CPU, vmap elsewhere", "static",
        choices=("auto", "each", "vmap"),
    )  # fmt: skip
    weights: str = opt("", "VGG19 weights file (default: the shipped weights/vgg19.h5)", "host")
    # --- devices, resolution and memory
    devices: int = opt(
        0, "devices to shard the variants over (0: all local devices)", "static", low=0
    )
    remat: str = opt(
        "auto", "recompute VGG blocks in the backward pass: auto, on or off", "static",
        choices=("auto", "on", "off"),
    )  # fmt: skip
    auto_scales: bool = opt(
        True, "without scales: above 256 px stylise coarse to fine from 256 px (half the "
        "iterations there, 30 percent at each doubling: cleaner, in about 0.4x the time); from "
        "128 to 256 px stylise at 256 px, then 10 percent at the size (the layout kept)", "host",
    )  # fmt: skip
    scales: tuple[int, ...] = opt(
        (), "coarse-to-fine sizes ending at size, e.g. 512 1024 2048 (default: size only)",
        "host", low=16,
    )  # fmt: skip
    scale_iterations: tuple[int, ...] = opt(
        (), "iterations per scale (default: iterations at the first, half at each later one)",
        "host", low=1,
    )  # fmt: skip
    memory_limit_gb: float = opt(
        0.0, "memory to plan for in GB (0: what the device has; on CPU what the host can give)",
        "host", low=0,
    )  # fmt: skip
    # --- video (jaxnst video; Ruder, Dosovitskiy & Brox 2016)
    video_mode: str = opt(
        "multipass", "video: multipass (every pass one batch of all frames, neighbours from the "
        "last pass), sequential (frame by frame from the warped previous one) or independent",
        "host", choices=("multipass", "sequential", "independent"),
    )  # fmt: skip
    passes: int = opt(
        4, "video multipass: passes over the frames; the iterations are split between them",
        "host", low=1,
    )  # fmt: skip
    temporal_from: int = opt(
        2, "video multipass: the first pass with the temporal loss (earlier ones only blend)",
        "host", low=1,
    )  # fmt: skip
    blend: float = opt(
        0.5, "video multipass: delta, how much of its warped neighbours a frame starts a pass "
        "from where the flow is reliable", "host", low=0,
    )  # fmt: skip
    flow: str = opt(
        "dis", "video: optical flow method, dis (OpenCV's DIS, medium) or farneback", "host",
        choices=("dis", "farneback"),
    )  # fmt: skip
    video_batch: int = opt(
        0, "video: frames optimised together in one batch (0: all; fewer if memory is short)",
        "host", low=0,
    )  # fmt: skip
    long_term: tuple[int, ...] = opt(
        (1,), "video: frame distances of the temporal loss, e.g. 1 10 20 40 (the paper's "
        "long-term consistency)", "host", low=1,
    )  # fmt: skip

    # ------------------------------------------------------------------ validation
    def validate(self) -> StyleConfig:
        """Raise ConfigError with one line on the first bad option; return self."""
        self.check_fields()  # each field on its own: type, choices, bounds
        if self.content_weight == 0 and self.style_weight == 0:
            raise ConfigError("content-weight and style-weight are both 0: nothing to optimise")
        if self.seed + self.variants - 1 > MAX_SEED:  # variant k uses seed + k
            raise ConfigError(f"seed + variants - 1 must be at most {MAX_SEED} (variant k uses "
                              f"seed + k), not {self.seed + self.variants - 1}")  # fmt: skip
        _check_template(self.output_template, self.variants)
        for name in ("content_layers", "style_layers"):
            layers = getattr(self, name)
            for layer in layers:
                if layer not in LAYER_INDEX:
                    raise ConfigError(f"unknown layer {layer!r} in {flag(name)}; "
                                      f"choose from {', '.join(LAYER_NAMES)}")  # fmt: skip
            if len(set(layers)) != len(layers):
                raise ConfigError(f"{flag(name)} lists a layer twice: {', '.join(layers)}")
        for name, weight in (("content", self.content_weight), ("style", self.style_weight)):
            if not getattr(self, f"{name}_layers") and weight > 0:
                raise ConfigError(f"{name}-layers is empty but {name}-weight > 0")
        for name in ("style_layer_weights", "style_layer_images"):
            given = getattr(self, name)
            if given and len(given) != len(self.style_layers):
                raise ConfigError(f"{flag(name)} has {len(given)} values for "
                                  f"{len(self.style_layers)} style layers")  # fmt: skip
        if any(i < 1 for i in self.style_layer_images):
            raise ConfigError("style-layer-images counts style images from 1")
        for c in self.region_colors:
            if not HEX_COLOR.fullmatch(c):
                raise ConfigError(f"region-colors must be #rrggbb colours, not {c!r}")
        if self.scales:
            if list(self.scales) != sorted(self.scales):
                raise ConfigError(f"scales must be increasing sizes, not {list(self.scales)}")
            if self.scales[-1] != self.size:
                raise ConfigError(
                    f"the last of scales ({self.scales[-1]}) must equal size ({self.size})"
                )
        if self.blend > 1:
            raise ConfigError(f"blend must be between 0 and 1, not {self.blend}")
        if self.scale_iterations and len(self.scale_iterations) != len(self.scale_list()):
            raise ConfigError(f"scale-iterations has {len(self.scale_iterations)} values for "
                              f"{len(self.scale_list())} scales")  # fmt: skip
        return self

    # ------------------------------------------------------------------ derived values
    def layer_weights(self) -> np.ndarray:
        """w_l per style layer: the given ones, or 1/L each (the paper's w_l = 1/5)."""
        n = len(self.style_layers)
        if self.style_layer_weights:
            return np.asarray(self.style_layer_weights, np.float32)
        return np.full((n,), 1.0 / max(n, 1), np.float32)

    def blend_weights(self, n_styles: int) -> np.ndarray:
        """Blend weight per style image, normalised to sum to 1."""
        if not self.style_blend_weights:
            return np.full((n_styles,), 1.0 / n_styles, np.float32)
        if len(self.style_blend_weights) != n_styles:
            raise ConfigError(
                f"style-blend-weights has {len(self.style_blend_weights)} values "
                f"for {n_styles} style images"
            )
        w = np.asarray(self.style_blend_weights, np.float64)
        if w.sum() <= 0:
            raise ConfigError("style-blend-weights must not all be 0")
        return (w / w.sum()).astype(np.float32)

    def with_seed(self) -> StyleConfig:
        """``seed`` -1 replaced by a fresh random seed (which the sidecar then records)."""
        if self.seed != -1:
            return self
        import secrets

        return self.replace(seed=secrets.randbelow(2**31 - 1 - self.variants))

    def _auto(self) -> str:
        """The automatic plan that applies: "up" above 256 px, "down" from 128 to 256 px, or ""."""
        if not self.auto_scales or self.scales or self.size < AUTO_SMALLEST:
            return ""
        return "up" if self.size > AUTO_COARSEST else "down" if self.size < AUTO_COARSEST else ""

    def scale_list(self) -> tuple[int, ...]:
        """The sizes of the run, ending at ``size``: ``scales`` if given; with ``auto_scales``
        above 256 px ``size`` halved until it is 256 px or less, then doubled back, and from
        128 to 256 px ``(256, size)``; else just ``(size,)``."""
        auto = self._auto()
        if self.scales or not auto:
            return tuple(self.scales) or (self.size,)
        sizes = [self.size] if auto == "up" else [AUTO_COARSEST, self.size]
        while sizes[0] > AUTO_COARSEST:
            sizes.insert(0, max(16, sizes[0] // 2))
        return tuple(sizes)

    def iterations_per_scale(self) -> tuple[int, ...]:
        """Iterations per scale: given; for the automatic plans half of ``iterations`` at 256 px,
        then 30% at each doubling or 10% at the smaller size asked for (the default 500: 250 at
        256 px, then 150 at 512 px or 50 at 128 px); else ``iterations`` then half as many at
        each later scale."""
        if self.scale_iterations:
            return tuple(self.scale_iterations)
        n, auto = len(self.scale_list()), self._auto()
        if auto:
            share = AUTO_SHARES[1] if auto == "up" else AUTO_FINISH
            first, rest = round(AUTO_SHARES[0] * self.iterations), share * self.iterations
            return (max(1, first),) + tuple(max(1, round(rest)) for _ in range(n - 1))
        return (self.iterations,) + tuple(max(1, self.iterations // 2) for _ in range(n - 1))


FIELDS = {f.name: f for f in dataclasses.fields(StyleConfig)}


fields_with = StyleConfig.fields_with
# Derived from the roles (see the module docstring).
SWEEPABLE = {name: FIELDS[name].metadata["slot"] for name in fields_with("traced")}
RESUME_CHECKED = tuple(
    name
    for name, f in FIELDS.items()
    if f.metadata["role"] != "output" and not f.metadata.get("resume_free")
)
_NOT_STATIC = {name: f.default for name, f in FIELDS.items() if f.metadata["role"] != "static"}


def static_config(cfg: StyleConfig) -> StyleConfig:
    """``cfg`` with every field that does not shape the compiled program at its default: the
    compile key of the step programs (two configs that differ only in traced, host or output
    fields share them)."""
    return dataclasses.replace(cfg, **_NOT_STATIC)


# ---------------------------------------------------------------------- reading options
def _check_template(template: str, variants: int) -> None:
    """output-template: a file name (no directory) from {stem}, {variant} and {seed}."""
    allowed = {"stem", "variant", "seed"}
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        unknown = sorted(fields - allowed)
        name = "" if unknown else template.format(stem="out", variant=0, seed=0)
    except (ValueError, KeyError, IndexError, AttributeError) as err:
        raise ConfigError(f"output-template {template!r} is not a valid template ({err})") from None
    if unknown:
        raise ConfigError(f"output-template {template!r} may only use {{stem}}, {{variant}} and "
                          f"{{seed}}, not {{{unknown[0]}}}")  # fmt: skip
    if not name or "/" in name or "\\" in name:
        raise ConfigError(f"output-template {template!r} must name a file, not a path")
    if variants > 1 and not fields & {"variant", "seed"}:
        raise ConfigError(f"output-template {template!r} has neither {{variant}} nor {{seed}}: "
                          f"the {variants} variants would overwrite each other")  # fmt: skip


class LossWeights(NamedTuple):
    """The traced numbers of the objective: arrays, so a vmap over a sweep needs no recompile.

    Scalars for one run; with a leading axis (n,) for per-variant values under ``vmap``. Each
    slot is filled by the config field whose ``slot`` names it (``from_config``).
    """

    content: jnp.ndarray  # alpha
    style: jnp.ndarray  # beta
    tv: jnp.ndarray
    style_layers: jnp.ndarray  # (L,) w_l
    learning_rate: jnp.ndarray
    temporal: jnp.ndarray  # gamma (video)

    @classmethod
    def from_config(cls, cfg: StyleConfig) -> LossWeights:
        values = {}
        for name in fields_with("traced"):
            meta = FIELDS[name].metadata
            value = getattr(cfg, meta["resolve"])() if "resolve" in meta else getattr(cfg, name)
            values[meta["slot"]] = jnp.asarray(value, jnp.float32)
        return cls(**values)
