"""StyleConfig: every option of a style transfer run, defined once with its default and help.

The CLI flags, the TOML config file and the Python keyword arguments are all generated from the
fields below and validated by ``StyleConfig.validate``. Fields that change shapes or code (size,
layers, optimiser, pooling) are static; numbers you might sweep (loss weights, learning rate) are
also carried as arrays in ``LossWeights`` so that a ``vmap`` over a sweep needs no recompile.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxnst.color import HISTOGRAM_MODES
from jaxnst.errors import ConfigError
from jaxnst.guidance import PYRAMID_MODES
from jaxnst.vgg import LAYER_INDEX, LAYER_NAMES, POOLINGS

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("noise", "content", "style")
RANGE_MODES = ("project", "clip")
DTYPES = ("float32", "bfloat16")
PRECISIONS = ("default", "high", "highest")
LOOPS = ("auto", "python", "scan")
REMAT = ("auto", "on", "off")
COLOR_MODES = ("none", "luminance", "histogram")
HISTOGRAM_BASES = HISTOGRAM_MODES  # defined once, where histogram matching is implemented
MASK_LAYERS = PYRAMID_MODES
BACKGROUNDS = ("content", "style")
HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
PAPER_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its help text (and CLI hints) in the metadata."""
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults: the config is frozen and hashable")
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class StyleConfig:
    """One style transfer run. Defaults reproduce Gatys et al. (2016) with tuned weights."""

    # --- images
    size: int = opt(512, "longest side of the output image in pixels")
    style_scale: float = opt(1.0, "style image's longest side relative to the output's")
    # --- objective (Gatys et al. 2016, eqs. 1-7)
    content_weight: float = opt(1.0, "alpha: weight of the content loss")
    style_weight: float = opt(1e3, "beta: weight of the style loss (alpha/beta = 1e-3)")
    tv_weight: float = opt(0.0, "weight of the total-variation smoothness loss (off: 0)")
    content_layers: tuple[str, ...] = opt(("conv4_2",), "layers of the content loss")
    style_layers: tuple[str, ...] = opt(PAPER_STYLE_LAYERS, "layers of the style loss")
    style_layer_weights: tuple[float, ...] = opt(
        (), "weight w_l per style layer (default: 1/L each, the paper's 1/5)"
    )
    style_blend_weights: tuple[float, ...] = opt(
        (), "blend weight per style image (default: equal); normalised to sum to 1"
    )
    pooling: str = opt("max", "pooling in VGG19: max, or avg (the paper's preference)")
    color_mode: str = opt(
        "none",
        "colour control (Gatys et al. 2017): none; luminance (transfer on luminance, keep the "
        "content's colours); histogram (recolour the style to the content's colours first)",
    )
    histogram_basis: str = opt("cholesky", "basis of histogram matching: cholesky, pca or sym")
    # --- spatial and scale control (Gatys et al. 2017, secs. 4 and 6)
    masks: tuple[str, ...] = opt(
        (),
        "spatial control: a greyscale mask per style image marking where on the content it "
        "applies (white = inside), or one colour-coded region map with region-colors",
    )
    region_colors: tuple[str, ...] = opt(
        (), "with a colour-coded map: the colour (#rrggbb) of each style image's region, in order"
    )
    style_masks: tuple[str, ...] = opt(
        (), "per style image, a greyscale mask of the part to take the style from (default: all)"
    )
    mask_layers: str = opt(
        "simple",
        "masks at deeper layers: simple (downsampled), inside (eroded to whole receptive "
        "fields: deep layers lose small regions) or all (dilated)",
    )
    background: str = opt(
        "content",
        "content outside every mask: content (no style loss there) or style (the blend of all "
        "the style images)",
    )
    style_layer_images: tuple[int, ...] = opt(
        (),
        "scale control: the style image (1, 2, ...) each style layer's Gram comes from, e.g. "
        "1 1 2 2 2 takes fine scales from the first, coarse from the second (default: blend)",
    )
    normalize_network: bool = opt(
        False, "rescale VGG19 so each filter's mean activation is 1, as the paper did"
    )
    # --- optimisation
    optimizer: str = opt("lbfgs", "lbfgs (the paper's) or adam")
    iterations: int = opt(
        500, "optimiser steps (L-BFGS: accepted steps; evaluations counted apart)"
    )
    learning_rate: float = opt(0.02, "Adam step size, in [0, 1] pixel units")
    lbfgs_memory: int = opt(20, "L-BFGS history size (pairs of steps and gradient changes)")
    init: str = opt("noise", "initial image: noise (the paper's), content or style")
    seed: int = opt(0, "random seed; variant k uses seed + k")
    variants: int = opt(1, "number of images from seeds seed .. seed+variants-1, in one run")
    range_mode: str = opt("project", "keep pixels in [0, 1]: project every step, or clip at end")
    # --- outputs: what the CLI writes (output=True: free to change on --resume)
    original_colors: bool = opt(
        False, "keep the content's colours: the result's luminance with the content's chroma "
        "(a colour swap after the run)", output=True
    )  # fmt: skip
    output_template: str = opt(
        "{stem}_v{variant}", "file name of each variant when variants > 1, from {stem} (of "
        "--output), {variant} (0, 1, ...) and {seed}", output=True
    )  # fmt: skip
    save_every: int = opt(
        0, "write a snapshot of each image and a checkpoint for --resume every K iterations "
        "(0: none)", output=True
    )  # fmt: skip
    print_every: int = opt(
        50,
        "iterations between progress lines when stderr is not a terminal (0: none)",
        output=True,
    )
    history: str = opt("csv", "loss history beside the output: csv, json or none", output=True)
    plot: bool = opt(True, "plot the loss curves (log scale) to a PNG; needs matplotlib",
                     output=True)  # fmt: skip
    # --- compute
    dtype: str = opt("float32", "compute dtype of the network: float32 or bfloat16")
    precision: str = opt("default", "matmul/conv precision: default (TF32 on GPUs), high, highest")
    loop: str = opt("auto", "auto, python (a jitted step per call) or scan (while_loop chunks)")
    chunk: int = opt(50, "steps between host checks (progress, finiteness, Ctrl-C)")
    weights: str = opt("", "VGG19 weights file (default: the shipped weights/vgg19.h5)")
    # --- devices, resolution and memory
    devices: int = opt(0, "devices to shard the variants over (0: all local devices)")
    remat: str = opt("auto", "recompute VGG blocks in the backward pass: auto, on or off")
    scales: tuple[int, ...] = opt(
        (), "coarse-to-fine sizes ending at size, e.g. 512 1024 2048 (default: size only)"
    )
    scale_iterations: tuple[int, ...] = opt(
        (), "iterations per scale (default: iterations at the first, half at each later one)"
    )
    memory_limit_gb: float = opt(0.0, "device memory to plan for in GB (0: what the device has)")

    def __post_init__(self) -> None:
        # Accept lists (from TOML or callers) but store tuples so the config stays hashable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    # ------------------------------------------------------------------ validation
    def validate(self) -> StyleConfig:
        """Raise ConfigError with one line on the first bad option; return self."""

        def bad(msg: str) -> None:
            raise ConfigError(msg)

        for f in dataclasses.fields(self):  # types first: Python callers pass anything
            value = getattr(self, f.name)
            if not _has_type(value, f.default, ELEMENT_TYPES.get(f.name, str)):
                bad(
                    f"{f.name.replace('_', '-')} should be {_type_name(f.default, f.name)}, "
                    f"not {value!r}"
                )

        for name in ("size", "iterations", "variants", "chunk", "lbfgs_memory"):
            value = getattr(self, name)
            if int(value) <= 0:
                bad(f"{name.replace('_', '-')} must be a positive integer, not {value!r}")
        if self.size < 16:
            bad(f"size must be at least 16 pixels, not {self.size}")
        for name in ("content_weight", "style_weight", "tv_weight", "learning_rate", "style_scale"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                bad(f"{name.replace('_', '-')} must be a finite number >= 0, not {value}")
        if self.learning_rate == 0 or self.style_scale == 0:
            bad("learning-rate and style-scale must be > 0")
        if self.content_weight == 0 and self.style_weight == 0:
            bad("content-weight and style-weight are both 0: nothing to optimise")
        if self.save_every < 0 or self.print_every < 0:
            bad("save-every and print-every must be >= 0 (0: off)")
        if self.history not in HISTORY_FORMATS:
            bad(f"history must be one of {', '.join(HISTORY_FORMATS)}, not {self.history!r}")
        _check_template(self.output_template, self.variants)
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("init", INITS),
            ("pooling", POOLINGS),
            ("range_mode", RANGE_MODES),
            ("dtype", DTYPES),
            ("precision", PRECISIONS),
            ("loop", LOOPS),
            ("remat", REMAT),
            ("color_mode", COLOR_MODES),
            ("histogram_basis", HISTOGRAM_BASES),
            ("mask_layers", MASK_LAYERS),
            ("background", BACKGROUNDS),
        ):
            if getattr(self, name) not in choices:
                bad(
                    f"{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                    f"not {getattr(self, name)!r}"
                )
        for name in ("content_layers", "style_layers"):
            layers = getattr(self, name)
            for layer in layers:
                if layer not in LAYER_INDEX:
                    bad(
                        f"unknown layer {layer!r} in {name.replace('_', '-')}; "
                        f"choose from {', '.join(LAYER_NAMES)}"
                    )
            if len(set(layers)) != len(layers):
                bad(f"{name.replace('_', '-')} lists a layer twice: {', '.join(layers)}")
        if not self.content_layers and self.content_weight > 0:
            bad("content-layers is empty but content-weight > 0")
        if not self.style_layers and self.style_weight > 0:
            bad("style-layers is empty but style-weight > 0")
        if self.style_layer_weights:
            if len(self.style_layer_weights) != len(self.style_layers):
                bad(
                    f"style-layer-weights has {len(self.style_layer_weights)} values for "
                    f"{len(self.style_layers)} style layers"
                )
            _check_nonneg("style-layer-weights", self.style_layer_weights)
        if self.style_blend_weights:
            _check_nonneg("style-blend-weights", self.style_blend_weights)
        self._validate_control()
        if self.devices < 0 or self.memory_limit_gb < 0:
            bad("devices and memory-limit-gb must be >= 0")
        if self.scales:
            if any(int(s) < 16 for s in self.scales) or list(self.scales) != sorted(self.scales):
                bad(f"scales must be increasing sizes >= 16, not {list(self.scales)}")
            if self.scales[-1] != self.size:
                bad(f"the last of scales ({self.scales[-1]}) must equal size ({self.size})")
        if self.scale_iterations:
            if len(self.scale_iterations) != len(self.scale_list()):
                bad(
                    f"scale-iterations has {len(self.scale_iterations)} values for "
                    f"{len(self.scale_list())} scales"
                )
            if any(int(i) <= 0 for i in self.scale_iterations):
                bad("scale-iterations must be positive")
        return self

    def _validate_control(self) -> None:
        """Spatial and scale control: checks that need no files (the rest in jaxnst.guidance)."""
        for c in self.region_colors:
            if not HEX_COLOR.fullmatch(c):
                raise ConfigError(f"region-colors must be #rrggbb colours, not {c!r}")
        if self.style_layer_images:
            if len(self.style_layer_images) != len(self.style_layers):
                raise ConfigError(
                    f"style-layer-images has {len(self.style_layer_images)} values for "
                    f"{len(self.style_layers)} style layers"
                )
            if any(int(i) < 1 for i in self.style_layer_images):
                raise ConfigError("style-layer-images counts style images from 1")

    def check_masks(self, masks: tuple | list, style_masks: tuple | list) -> None:
        """The mask options make sense together (given the masks in effect: the config's, or
        arrays a library caller passes instead)."""
        if self.region_colors and len(masks) != 1:
            raise ConfigError("region-colors needs exactly one colour-coded map in masks")
        if style_masks and not masks:
            raise ConfigError("style-masks need masks: the content-side regions they style")
        if self.background != "content" and not masks:
            raise ConfigError("background applies only with masks")
        if self.style_layer_images and masks:
            raise ConfigError(
                "style-layer-images (scale control) and masks (spatial control) cannot be "
                "combined: a masked region takes all its layers from its own style image"
            )

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

    def scale_list(self) -> tuple[int, ...]:
        """The coarse-to-fine sizes, ending at ``size`` (just ``(size,)`` by default)."""
        return tuple(self.scales) or (self.size,)

    def iterations_per_scale(self) -> tuple[int, ...]:
        """Iterations per scale: given, or ``iterations`` then half as many at each later one."""
        if self.scale_iterations:
            return tuple(self.scale_iterations)
        n = len(self.scale_list())
        return (self.iterations,) + tuple(max(1, self.iterations // 2) for _ in range(n - 1))

    def replace(self, **changes: Any) -> StyleConfig:
        """A copy with ``changes``; unknown names raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise ConfigError(f"unknown option {name!r}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_toml(cls, path: str | Path) -> StyleConfig:
        """Read options from a TOML file (keys are field names, '-' or '_')."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read config file ({err})") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: malformed TOML ({err})") from None
        return cls().merge(data, source=str(path))

    def merge(self, data: dict[str, Any], source: str = "options") -> StyleConfig:
        """A copy with values from a plain dict, type-checked against the field defaults."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{source}: unknown option {key!r}")
            changes[name] = _coerce(name, value, getattr(self, name), source)
        return dataclasses.replace(self, **changes)


HISTORY_FORMATS = ("csv", "json", "none")


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


def _has_type(value: Any, default: Any, element: type) -> bool:
    """Whether ``value`` has the type of ``default`` (ints pass as floats, bools never as
    numbers; tuples element by element)."""
    if isinstance(default, bool):
        return isinstance(value, bool | np.bool_)
    if isinstance(default, int):
        return isinstance(value, int | np.integer) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple):
        return isinstance(value, tuple) and all(_has_type(v, element(), str) for v in value)
    return True


def _type_name(default: Any, name: str) -> str:
    if isinstance(default, tuple):
        return f"a list of {ELEMENT_TYPES.get(name, str).__name__}"
    return "a number" if isinstance(default, float) else type(default).__name__


def _check_nonneg(name: str, values: tuple[float, ...]) -> None:
    for v in values:
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ConfigError(f"{name} must be finite numbers >= 0, not {v}")


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{source}: {name} should be {type(default).__name__}, not {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(default, tuple):
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list | tuple):
            raise bad()
        element = ELEMENT_TYPES.get(name, str)
        items = []
        for item in value:  # each element checked like a scalar field of the element type
            try:
                items.append(_coerce(name, item, element(), source))
            except ConfigError:
                raise ConfigError(
                    f"{source}: {name} should hold {element.__name__} values, not {item!r}"
                ) from None
        return tuple(items)
    return value


def _element_types() -> dict[str, type]:
    """The element type of every tuple field (tuple[float, ...] -> float)."""
    hints = typing.get_type_hints(StyleConfig)
    out = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is tuple:
            out[name] = typing.get_args(hint)[0]
    return out


ELEMENT_TYPES = _element_types()


class LossWeights(NamedTuple):
    """The traced numbers of the objective: arrays, so a vmap over a sweep needs no recompile.

    Scalars for one run; with a leading axis (n,) for per-variant values under ``vmap``.
    """

    content: jnp.ndarray  # alpha
    style: jnp.ndarray  # beta
    tv: jnp.ndarray
    style_layers: jnp.ndarray  # (L,) w_l
    learning_rate: jnp.ndarray

    @classmethod
    def from_config(cls, cfg: StyleConfig) -> LossWeights:
        f32 = jnp.float32
        return cls(
            content=jnp.asarray(cfg.content_weight, f32),
            style=jnp.asarray(cfg.style_weight, f32),
            tv=jnp.asarray(cfg.tv_weight, f32),
            style_layers=jnp.asarray(cfg.layer_weights(), f32),
            learning_rate=jnp.asarray(cfg.learning_rate, f32),
        )
