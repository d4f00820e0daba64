"""TrainConfig: every option of training a fast style network, declared like ``StyleConfig``.

A network is trained on jaxnst's objective (Johnson, Alahi & Fei-Fei 2016 used Gatys et al.'s
loss the same way), so the objective's options are ``StyleConfig``'s own fields, copied with
their help, role and bounds (``inherited``): the same flags, TOML keys and meaning, and
``style_config()`` gives the ``StyleConfig`` of the image optimisation a network trained with
these options stands in for (at the crop size). The training's own options follow (crop, batch,
steps, learning rate, network width, outputs, prefetching). ``read_train_options`` also reads an
image run's TOML file or sidecar: the objective is kept, the optimisation's options dropped.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxnst.config import FIELDS, HISTORY_FORMATS, StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.layers import deepest, min_side
from jaxnst.options import Options, opt, read_options


def inherited(name: str, **changes: Any) -> Any:
    """A field declared as ``StyleConfig``'s field ``name`` (default, help, role, bounds), with
    ``changes`` (``default``, ``help``, ``role`` or any metadata) applied."""
    f = FIELDS[name]
    meta = {**f.metadata, **changes}
    default = meta.pop("default", f.default)
    return opt(default, meta.pop("help"), meta.pop("role"), **meta)


@dataclass(frozen=True)
class TrainConfig(Options):
    """One training of a fast style network: the objective (as ``StyleConfig``) and the rest.

    Each field is an ``options.opt`` with help, role and bounds, as in ``StyleConfig``.
    """

    # --- the objective: StyleConfig's fields, the same meaning
    content_weight: float = inherited("content_weight")
    style_weight: float = inherited("style_weight")
    tv_weight: float = inherited("tv_weight")
    objective: str = inherited("objective")
    style_layer_norm: str = inherited("style_layer_norm")
    content_layers: tuple[str, ...] = inherited("content_layers")
    style_layers: tuple[str, ...] = inherited("style_layers")
    style_layer_weights: tuple[float, ...] = inherited("style_layer_weights")
    style_blend_weights: tuple[float, ...] = inherited("style_blend_weights")
    style_layer_images: tuple[int, ...] = inherited("style_layer_images")
    style_scale: float = inherited(
        "style_scale", help="style image's longest side relative to the crop's side"
    )
    pooling: str = inherited("pooling")
    normalize_network: bool = inherited("normalize_network")
    weights: str = inherited("weights")
    color_mode: str = inherited(
        "color_mode", help="colour control: none, or luminance (the network transfers "
        "luminance; each photo keeps its colours); histogram needs one content image, not a "
        "network's many (use luminance, or original-colors when applying)",
    )  # fmt: skip
    original_colors: bool = inherited(
        "original_colors", help="the network's default when applied: keep each photo's colours "
        "(its luminance under the photo's chroma, a colour swap after the network)",
    )  # fmt: skip
    # --- the network and its training (Johnson et al.: 256 px, batch 4, Adam 1e-3, 2 epochs)
    crop: int = opt(256, "side of the square training crops in pixels", "static", low=16,
                    unit="pixels")  # fmt: skip
    batch_size: int = opt(4, "photos per step (the global batch, over all devices)", "static",
                          low=1)  # fmt: skip
    steps: int = opt(
        0, "training steps (0: epochs x photos / batch size)", "host", resume_free=True, low=0
    )
    epochs: float = opt(
        2.0, "passes over the photos when steps is 0", "host", positive=True, resume_free=True
    )
    learning_rate: float = inherited(
        "learning_rate", default=1e-3, help="Adam step size of the network's weights"
    )
    width: int = opt(
        32, "channels of the network's first layer (twice and four times that deeper): 32 as "
        "Johnson et al., 16 for a network a quarter the size", "static", low=1,
    )  # fmt: skip
    seed: int = opt(
        0, "random seed: the network's initial weights and the photos' order, crops and flips",
        "host", low=0,
    )  # fmt: skip
    max_scale: float = opt(
        1.15, "each photo's short side is resized to a random length in [crop, crop x "
        "max-scale] (never enlarged) before the random crop", "host", low=1.0,
    )  # fmt: skip
    # --- outputs (free to change on --resume)
    save_every: int = opt(
        1000, "write a checkpoint for --resume every K steps (0: none)", "output", low=0
    )
    sample_every: int = opt(
        500, "stylise the sample photos every K steps (0: only at the end)", "output", low=0
    )
    print_every: int = opt(
        50, "steps between progress lines when stderr is not a terminal (0: none)", "output",
        low=0,
    )  # fmt: skip
    history: str = opt(
        "csv", "loss history beside the model: csv, json or none", "output",
        choices=HISTORY_FORMATS,
    )  # fmt: skip
    plot: bool = inherited("plot")
    # --- compute
    dtype: str = inherited("dtype")
    precision: str = inherited("precision")
    remat: str = inherited("remat", help="recompute VGG blocks in the backward pass: on, or "
                           "off (auto: off)")  # fmt: skip
    devices: int = inherited(
        "devices", help="devices to shard the batch over (0: all local devices; as many as "
        "divide the batch)", resume_free=True,
    )  # fmt: skip
    prefetch: int = opt(
        2, "batches made ahead in background threads", "host", low=1, resume_free=True
    )
    workers: int = opt(2, "threads decoding and cropping photos", "host", low=1, resume_free=True)

    # ------------------------------------------------------------------ derived values
    def style_config(self) -> StyleConfig:
        """The image optimisation this training stands in for: the same objective, at the crop
        size, with Adam at this learning rate (what ``Objective``, ``LossWeights``, the colour
        control and the plots read)."""
        shared = {n: getattr(self, n) for n in FIELDS if n in _NAMES}
        return StyleConfig(**shared, size=self.crop, optimizer="adam")

    def validate(self) -> TrainConfig:
        """Raise ConfigError with one line on the first bad option; return self."""
        self.check_fields()
        self.style_config().validate()
        if self.color_mode == "histogram":
            raise ConfigError(
                "color-mode histogram recolours the style to one content image, and a network "
                "serves every photo: use --color-mode luminance, or --original-colors"
            )
        layer = deepest(self.content_layers + self.style_layers)
        if self.crop < min_side(layer):
            raise ConfigError(
                f"crop {self.crop} px: {layer} needs a side of at least {min_side(layer)} px"
            )
        return self

    def total_steps(self, photos: int) -> int:
        """The steps of the whole training: ``steps``, or ``epochs`` passes over ``photos``."""
        return self.steps or max(1, math.ceil(self.epochs * photos / self.batch_size))


_NAMES = {f.name for f in dataclasses.fields(TrainConfig)}
# What a resumed training must repeat: all but the output fields and the resume-free ones (its
# length, and how the work is spread: the same devices give the same bits, others the same run).
RESUME_CHECKED = tuple(
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.metadata["role"] != "output" and not f.metadata.get("resume_free")
)


def read_train_options(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file or a sidecar .json (``options.read_options``): a training's, or
    an image run's, whose objective is kept and whose optimisation options (size, iterations,
    init, ...) are dropped."""
    data = read_options(path)
    return {k: v for k, v in data.items() if k.replace("-", "_") in _NAMES or (
        k.replace("-", "_") not in FIELDS)}  # fmt: skip


__all__ = ["RESUME_CHECKED", "TrainConfig", "inherited", "read_train_options"]
