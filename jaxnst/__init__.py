"""jaxnst: neural style transfer (Gatys, Ecker & Bethge 2016) in JAX.

The public API, in the order a run uses it: ``StyleConfig`` (every option), ``stylize`` (the
everyday call), ``make_problem`` / ``StyleRun`` / ``run_scales`` (the same step by step), the
objective's pieces (``Objective``, ``Targets``, ``LossWeights``, ``loss_parts``, ...), the
network (``load_vgg19``, ``extract_features``), images (``load_image``, ``save_image``); fast
style networks (``TrainConfig``, ``train_network``, ``apply_network``, ``load_network``).
"""

from jaxnst.apply import apply_network
from jaxnst.config import LossWeights, StyleConfig
from jaxnst.errors import ConfigError, ImageError, JaxnstError, WeightsError
from jaxnst.image import load_image, save_image
from jaxnst.layers import LAYER_NAMES
from jaxnst.losses import LossParts, Objective, Targets, loss_parts, total_loss
from jaxnst.network import Network, load_network
from jaxnst.problem import Problem, make_problem
from jaxnst.solvers import init_state, make_step
from jaxnst.stylize import Hooks, Result, StyleRun, run_scales, stylize
from jaxnst.terms import content_loss, gram, style_layer_loss, temporal_loss, tv_loss
from jaxnst.train import train_network
from jaxnst.trainconfig import TrainConfig
from jaxnst.vgg import extract_features
from jaxnst.weights import load_vgg19

__version__ = "0.1.0"

__all__ = [
    "LAYER_NAMES",
    "ConfigError",
    "Hooks",
    "ImageError",
    "JaxnstError",
    "LossParts",
    "LossWeights",
    "Network",
    "Objective",
    "Problem",
    "Result",
    "StyleConfig",
    "StyleRun",
    "Targets",
    "TrainConfig",
    "WeightsError",
    "__version__",
    "apply_network",
    "content_loss",
    "extract_features",
    "gram",
    "init_state",
    "load_image",
    "load_network",
    "load_vgg19",
    "loss_parts",
    "make_problem",
    "make_step",
    "run_scales",
    "save_image",
    "style_layer_loss",
    "stylize",
    "temporal_loss",
    "total_loss",
    "train_network",
    "tv_loss",
]
