"""StyleConfig: every option of a style transfer run, defined once with its default and help.

The CLI flags, the TOML config file and the Python keyword arguments are all generated from the
fields below and validated by ``StyleConfig.validate``. Fields that change shapes or code (size,
layers, optimiser, pooling) are static; numbers you might sweep (loss weights, learning rate) are
also carried as arrays in ``LossWeights`` so that a ``vmap`` over a sweep needs no recompile.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxnst.errors import ConfigError
from jaxnst.vgg import LAYER_INDEX, LAYER_NAMES, POOLINGS

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("noise", "content", "style")
RANGE_MODES = ("project", "clip")
DTYPES = ("float32", "bfloat16")
PRECISIONS = ("default", "high", "highest")
LOOPS = ("auto", "python", "scan")
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
    # --- compute
    dtype: str = opt("float32", "compute dtype of the network: float32 or bfloat16")
    precision: str = opt("default", "matmul/conv precision: default (TF32 on GPUs), high, highest")
    loop: str = opt("auto", "auto, python (a jitted step per call) or scan (chunks in lax.scan)")
    chunk: int = opt(50, "steps between host checks (progress, finiteness, Ctrl-C)")
    weights: str = opt("", "VGG19 weights file (default: the shipped weights/vgg19.h5)")

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
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("init", INITS),
            ("pooling", POOLINGS),
            ("range_mode", RANGE_MODES),
            ("dtype", DTYPES),
            ("precision", PRECISIONS),
            ("loop", LOOPS),
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
        return tuple(value)
    return value


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
