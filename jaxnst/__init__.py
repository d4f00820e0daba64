"""jaxnst: neural style transfer (Gatys, Ecker & Bethge 2016) in JAX."""

from jaxnst.config import LossWeights, StyleConfig
from jaxnst.errors import ConfigError, ImageError, JaxnstError, WeightsError
from jaxnst.image import load_image, save_image
from jaxnst.losses import (
    LossParts,
    Targets,
    content_loss,
    gram,
    loss_parts,
    style_layer_loss,
    total_loss,
    tv_loss,
)
from jaxnst.solvers import init_state, make_batched_step, make_run_chunk, make_step
from jaxnst.stylize import Result, StyleRun, make_problem, stylize
from jaxnst.vgg import LAYER_NAMES, extract_features, load_vgg19

__version__ = "0.1.0"

__all__ = [
    "LAYER_NAMES",
    "ConfigError",
    "ImageError",
    "JaxnstError",
    "LossParts",
    "LossWeights",
    "Result",
    "StyleConfig",
    "StyleRun",
    "Targets",
    "WeightsError",
    "__version__",
    "content_loss",
    "extract_features",
    "gram",
    "init_state",
    "load_image",
    "load_vgg19",
    "loss_parts",
    "make_batched_step",
    "make_problem",
    "make_run_chunk",
    "make_step",
    "save_image",
    "style_layer_loss",
    "stylize",
    "total_loss",
    "tv_loss",
]
