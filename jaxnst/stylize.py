"""The driver: targets once, initial images per seed, batched compiled steps, a Result.

``stylize(content, style)`` is the everyday call. ``StyleRun`` is the same machinery step by step
for callers that report progress, checkpoint or stop between chunks (the CLI does).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnst import color, guidance
from jaxnst.color import color_swap
from jaxnst.config import LossWeights, StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.guidance import MaskLike
from jaxnst.image import ImageLike, fit_size, load_image, resize, to_uint8
from jaxnst.losses import (
    LossParts,
    Targets,
    blend_grams,
    feature_layers,
    loss_parts,
    parts_dict,
    region_style_grams,
)
from jaxnst.memory import format_bytes, largest_fitting_size, plan_remat
from jaxnst.scales import CoarseToFine, summed
from jaxnst.solvers import (
    StepInfo,
    active_variants,
    init_state,
    make_batched_step,
    make_run_chunk,
    make_targets_fn,
    precision_context,
    project,
    targets_axes,
)
from jaxnst.vgg import (
    LAYER_INDEX,
    LAYER_NAMES,
    Params,
    deepest,
    load_vgg19,
    with_backward_kernels,
)

# Loss-weight fields that a sweep may vary per variant, and their LossWeights slot.
SWEEPABLE = {
    "content_weight": "content",
    "style_weight": "style",
    "tv_weight": "tv",
    "learning_rate": "learning_rate",
}


@dataclass
class Problem:
    """Everything fixed during a run: resized images, network params and the targets."""

    content: np.ndarray  # (h, w, 3) float32 [0, 1], in its own colours
    styles: list[np.ndarray]  # each (h_s, w_s, 3), as the targets saw them (recoloured/grey)
    params: Params
    targets: Targets
    work_content: np.ndarray | None = None  # the content the loss sees (grey: luminance mode)
    masks: list[np.ndarray] | None = None  # spatial control: a region (h, w) per style image

    def __post_init__(self) -> None:
        if self.work_content is None:
            self.work_content = self.content


def load_params(cfg: StyleConfig) -> Params:
    """The VGG19 params for ``cfg``: its weights file, normalised if asked."""
    params = load_vgg19(cfg.weights or None)
    if cfg.normalize_network:
        from jaxnst.normalize import normalize_params

        params = normalize_params(params, cfg.pooling)
    return params


def make_problem(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    cfg: StyleConfig,
    params: Params | None = None,
    *,
    masks: Sequence[MaskLike] | None = None,
    style_masks: Sequence[MaskLike] | None = None,
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
) -> Problem:
    """Load and resize the images and compute the targets P and A once (jitted, params as args).

    ``masks`` / ``style_masks`` (paths or arrays) stand in for ``cfg.masks`` / ``cfg.style_masks``
    (spatial control, see ``guided_targets``); ``variant_masks`` gives one such ``masks`` list
    per variant instead.
    """
    cfg.validate()
    if variant_masks is not None:
        if not variant_masks or masks is not None:
            raise ConfigError("variant masks: give one masks list per variant, and no masks")
        masks = variant_masks[0]
    masks = list(cfg.masks if masks is None else masks)
    style_masks = list(cfg.style_masks if style_masks is None else style_masks)
    cfg.check_masks(masks, style_masks)
    if not isinstance(styles, list | tuple):
        styles = [styles]
    if not styles:
        raise ConfigError("at least one style image is needed")
    blend = cfg.blend_weights(len(styles))
    content_img = load_image(content, cfg.size, "content")
    style_side = max(16, round(cfg.size * cfg.style_scale))
    style_imgs = [load_image(s, style_side, f"style {i + 1}") for i, s in enumerate(styles)]
    work_content, style_imgs = color_control(content_img, style_imgs, cfg)
    check_min_side(content_img, "content", cfg)
    for i, s in enumerate(style_imgs):
        check_min_side(s, f"style {i + 1}", cfg)
    params = load_params(cfg) if params is None else params
    content_fn, style_fn = make_targets_fn(cfg)
    p = content_fn(params, jnp.asarray(work_content)) if cfg.content_layers else {}
    if masks:  # guided Grams per region instead of the whole images' Grams
        targets, regions = guided_targets(
            params, content_img, style_imgs, cfg, masks, style_masks, variant_masks
        )
        targets = targets._replace(content=p)
        release_host_memory()
        return Problem(content_img, style_imgs, params, targets, work_content, regions)
    out_positions = layer_positions(content_img.shape[:2], cfg)
    grams = []
    for s in style_imgs:
        # G grows with the number of positions M_l: a style image of another size is brought to
        # the output's M_l, so E_l compares like with like (identical when the sizes match).
        ratio = {k: out_positions[k] / m for k, m in layer_positions(s.shape[:2], cfg).items()}
        grams.append({k: g * ratio[k] for k, g in style_fn(params, jnp.asarray(s)).items()})
    if not cfg.style_layers:
        a = {}
    elif cfg.style_layer_images:  # scale control: each layer's Gram from one chosen image
        if max(cfg.style_layer_images) > len(grams):
            raise ConfigError(
                f"style-layer-images names image {max(cfg.style_layer_images)} but there "
                f"{'is' if len(grams) == 1 else 'are'} {len(grams)} style image(s)"
            )
        a = {
            k: grams[i - 1][k]
            for k, i in zip(cfg.style_layers, cfg.style_layer_images, strict=True)
        }
    else:
        a = blend_grams(grams, jnp.asarray(blend))
    release_host_memory()
    return Problem(content_img, style_imgs, params, Targets(p, a), work_content)


@functools.partial(jax.jit, static_argnames="cfg")
def _region_grams(params: Params, image: jax.Array, pyramid: Any, cfg: StyleConfig) -> Any:
    with precision_context(cfg):
        return region_style_grams(params, image, pyramid, cfg)


def guided_targets(
    params: Params,
    content: np.ndarray,
    styles: list[np.ndarray],
    cfg: StyleConfig,
    masks: Sequence[MaskLike],
    style_masks: Sequence[MaskLike] = (),
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
) -> tuple[Targets, list[np.ndarray]]:
    """Spatial control (Gatys et al. 2017, sec. 4): region r of the content gets style image r.

    ``masks``: a greyscale mask per style image, or one colour-coded map with
    ``cfg.region_colors``; ``style_masks``: per style image the part to learn from (default:
    all of it). With ``cfg.background == "style"`` the uncovered rest of the content is one
    more region styled by the blend of all style images; otherwise it gets no style loss and
    keeps its content. ``variant_masks``, one such ``masks`` list per variant, gives each
    variant its own regions in one run (the masks then get a leading variant axis; the style
    side is computed once). Returns the style part of the Targets (``content`` left empty) and
    the content-side masks at the content's size (every variant's, in order).
    """
    hw = content.shape[:2]
    n = len(styles)
    if style_masks and len(style_masks) != n:
        raise ConfigError(
            f"style-masks: {len(style_masks)} mask(s) for {n} style image(s); give one per style "
            f"image ({guidance.WHOLE_IMAGE!r} for the whole image)"
        )
    layers = cfg.style_layers
    grams, style_pyramids, whole = [], [], []
    for i, style in enumerate(styles):
        src = style_masks[i] if style_masks else guidance.WHOLE_IMAGE
        is_whole = isinstance(src, str) and src == guidance.WHOLE_IMAGE
        side = guidance.region_masks([src], 1, style.shape[:2], side=f"style-masks {i + 1}")[0]
        style_pyramids.append(guidance.mask_pyramid(side, layers, cfg.mask_layers))
        grams.append(_region_grams(params, jnp.asarray(style), style_pyramids[-1], cfg))
        if cfg.background == "style":  # the whole image's Grams, for the uncovered rest
            ones = guidance.mask_pyramid(np.ones(style.shape[:2], np.float32), layers, "simple")
            whole.append(
                grams[-1] if is_whole else _region_grams(params, jnp.asarray(style), ones, cfg)
            )
    if whole:  # the uncovered rest: the blend of the whole style images
        grams.append(blend_grams(whole, jnp.asarray(cfg.blend_weights(n))))

    def content_side(mask_set: Sequence[MaskLike], side: str) -> tuple[dict, list[np.ndarray]]:
        regions = guidance.region_masks(mask_set, n, hw, cfg.region_colors, side=side)
        pyramids = [
            guidance.drop_empty_layers(guidance.mask_pyramid(r, layers, cfg.mask_layers), sp)
            for r, sp in zip(regions, style_pyramids, strict=True)
        ]
        if cfg.background == "style":
            rest = guidance.background_mask(regions)
            pyramids.append(guidance.mask_pyramid(rest, layers, cfg.mask_layers))
        return guidance.stack_regions(pyramids), regions

    if variant_masks is None:
        stacked, regions = content_side(masks, "masks")
    else:
        sides = [content_side(m, f"variant {k} masks") for k, m in enumerate(variant_masks)]
        stacked = {k: jnp.stack([s[0][k] for s in sides]) for k in sides[0][0]}
        regions = [r for s in sides for r in s[1]]
    return Targets({}, guidance.stack_regions(grams), stacked), regions


def release_host_memory() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere nothing).

    XLA's compilations leave ~250 MB of freed heap that glibc keeps mapped: measured on CPU,
    trimming after the targets and after compiling the step brought jaxnst's peak RSS from
    1.10-1.21x PyTorch's to below it (680 vs 698 MB at 256 px, 1,123 vs 1,194 MB at 512 px).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def color_control(
    content: np.ndarray, styles: list[np.ndarray], cfg: StyleConfig
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The content and styles the loss sees under ``cfg.color_mode`` (Gatys et al. 2017, sec. 5).

    "histogram": each style recoloured to the content's colour mean and covariance.
    "luminance": both as grey luminance images, each style's luminance matched to the content's
    mean and spread; the result's luminance goes back under the content's colours at the end.
    """
    if cfg.color_mode == "histogram":
        return content, [
            color.match_color_histogram(s, content, cfg.histogram_basis) for s in styles
        ]
    if cfg.color_mode == "luminance":
        y = color.luminance(content)
        grey = [
            color.to_luminance_image(color.match_luminance(color.luminance(s), y)) for s in styles
        ]
        return np.asarray(color.to_luminance_image(y), np.float32), grey
    return content, styles


def pools_before(layer: str) -> int:
    """How many poolings come before ``layer`` in VGG19."""
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[layer]] if n.startswith("pool"))


def layer_positions(hw: tuple[int, int], cfg: StyleConfig) -> dict[str, int]:
    """M_l = h_l * w_l of each style layer for an (h, w) input; each pooling halves (floor)."""
    out = {}
    for layer in cfg.style_layers:
        pools = pools_before(layer)
        out[layer] = (hw[0] >> pools) * (hw[1] >> pools)
    return out


def check_min_side(image: np.ndarray, name: str, cfg: StyleConfig) -> None:
    """Raise ConfigError unless the deepest loss layer keeps at least one position."""
    layer = deepest(feature_layers(cfg))
    pools = pools_before(layer)
    need = 2**pools
    if min(image.shape[:2]) < need:
        h, w = image.shape[:2]
        raise ConfigError(
            f"the {name} image is {w}x{h} px after resizing; {layer} needs a short side of at "
            f"least {need} px ({pools} poolings): raise size or style-scale"
        )


def initial_images(problem: Problem, cfg: StyleConfig, seeds: Sequence[int]) -> jax.Array:
    """(n, h, w, 3) starting images: uniform white noise per seed, or the content/style image."""
    h, w, _ = problem.content.shape
    if cfg.init == "content":
        one = jnp.asarray(problem.work_content)
    elif cfg.init == "style":
        one = jnp.asarray(resize(problem.styles[0], (h, w)))
    else:
        keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
        noise = jax.vmap(
            lambda k: jax.random.uniform(jax.random.wrap_key_data(k), (h, w, 3), jnp.float32)
        )(keys)
        return project(noise, cfg) if cfg.color_mode == "luminance" else noise
    one = project(one, cfg) if cfg.color_mode == "luminance" else one
    return jnp.broadcast_to(one, (len(seeds), h, w, 3))


def variant_weights(cfg: StyleConfig, n: int, sweep: Mapping[str, Sequence[float]]) -> LossWeights:
    """LossWeights with a leading axis (n,): the config's values, or per-variant sweep values."""
    base = LossWeights.from_config(cfg)
    out = {k: jnp.broadcast_to(v, (n,) + v.shape) for k, v in base._asdict().items()}
    for name, values in sweep.items():
        if name == "style_layer_weights":
            arr = jnp.asarray(values, jnp.float32)
            if arr.shape != (n, len(cfg.style_layers)):
                raise ConfigError(
                    f"sweep style_layer_weights must be {n} rows of {len(cfg.style_layers)} weights"
                )
            out["style_layers"] = arr
            continue
        if name not in SWEEPABLE:
            raise ConfigError(
                f"cannot sweep {name!r}; choose from "
                f"{', '.join([*SWEEPABLE, 'style_layer_weights'])}"
            )
        arr = jnp.asarray(values, jnp.float32)
        if arr.shape != (n,) or not bool(jnp.all(jnp.isfinite(arr) & (arr >= 0))):
            raise ConfigError(f"sweep {name} needs {n} finite values >= 0")
        out[SWEEPABLE[name]] = arr
    return LossWeights(**out)


@dataclass
class Result:
    """What a run produced. Arrays have a leading variant axis (n, ...)."""

    images: np.ndarray  # (n, h, w, 3) uint8
    history: list[dict[str, np.ndarray]]  # per variant: columns by name, a row per iteration
    iterations: np.ndarray  # (n,) optimiser steps taken
    evaluations: np.ndarray  # (n,) loss-and-gradient evaluations
    final_loss: list[dict[str, float]]  # per variant: the loss parts of the saved image
    config: StyleConfig
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    stopped: str = ""  # why the run ended early ("" if it ran to the end)

    @property
    def image(self) -> np.ndarray:
        """The first variant, (h, w, 3) uint8."""
        return self.images[0]


def variant_mesh(cfg: StyleConfig, n: int) -> Mesh | None:
    """A 1-D mesh over the devices that share the variants (None for a single device).

    Uses ``cfg.devices`` devices (0: all, over every host after ``jax.distributed.initialize``),
    never more than there are variants.
    """
    available = jax.devices()
    count = min(cfg.devices or len(available), len(available), max(n, 1))
    if jax.process_count() > 1:
        count = len(available)  # every host takes part in an SPMD program
    if count <= 1:
        return None
    return Mesh(np.asarray(available[:count]), ("variants",))


def to_host(x: Any) -> np.ndarray:
    """A (possibly sharded, possibly multi-host) array as one NumPy array on this host."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def use_scan(cfg: StyleConfig) -> bool:
    """Whether chunks run inside one compiled while_loop (GPU/TPU) or as a Python loop (CPU)."""
    # Measured (docs/benchmarks.md): the Python loop over one jitted step is faster on CPU
    # (jax-ml/jax#12868) and, with asynchronous dispatch, also on an H100 (3.5 ms against
    # 8.4 ms per Adam iteration at 512 px), so "auto" means the Python loop everywhere for now.
    return cfg.loop == "scan"


# Compiled step programs by (static config, mesh, loop, argument shapes), shared by runs.
_COMPILED: dict[Any, Any] = {}
_COMPILED_MAX = 16

# Fields that never change the compiled program: they are traced values (LossWeights, the
# iteration limit), only pick the inputs, or only concern the files written.
TRACED_OR_HOST_FIELDS = (
    "content_weight",
    "style_weight",
    "tv_weight",
    "style_layer_weights",
    "style_blend_weights",
    "learning_rate",
    "iterations",
    "seed",
    "variants",
    "init",
    "weights",
    "style_scale",
    "normalize_network",
    "histogram_basis",
    "scales",
    "scale_iterations",
    "memory_limit_gb",
    "original_colors",
    "output_template",
    "save_every",
    "print_every",
    "history",
    "plot",
    # spatial and scale control only change the targets' values (their pytree structure
    # and shapes are part of the compile key)
    "masks",
    "region_colors",
    "style_masks",
    "mask_layers",
    "background",
    "style_layer_images",
)


def static_config(cfg: StyleConfig) -> StyleConfig:
    """``cfg`` with every field that does not shape the compiled program at its default."""
    defaults = StyleConfig()
    names = {f.name for f in dataclasses.fields(cfg)}
    return cfg.replace(**{k: getattr(defaults, k) for k in TRACED_OR_HOST_FIELDS if k in names})


@functools.lru_cache(maxsize=8)
def _batched_loss(cfg: StyleConfig):
    """jit(vmap(loss_parts)) for the final loss: no gradient, compiled once per config."""

    def fn(xs, params, targets, weights):
        with precision_context(cfg):
            loss = jax.vmap(
                lambda x, t, w: loss_parts(x, params, t, w, cfg), (0, targets_axes(targets), 0)
            )
            return loss(xs, targets, weights)

    return jax.jit(fn)


def step_params(params: Params, cfg: StyleConfig) -> Params:
    """The params the step programs get: each kernel also in its input-gradient layout, made
    once per run instead of on every step (``vgg.with_backward_kernels``)."""
    return with_backward_kernels(params, deepest(feature_layers(cfg)))


class StyleRun:
    """A run advanced chunk by chunk; holds the images, optimiser states and the history."""

    def __init__(
        self,
        problem: Problem,
        cfg: StyleConfig,
        seeds: Sequence[int] | None = None,
        sweep: Mapping[str, Sequence[float]] | None = None,
        init: Any = None,
    ) -> None:
        """``init``: optional starting images (n, h, w, 3) in place of ``cfg.init``."""
        cfg.validate()
        sweep = dict(sweep or {})
        n = len(next(iter(sweep.values()))) if sweep else cfg.variants
        per_variant = targets_axes(problem.targets) is not None  # each variant its own masks
        if per_variant:
            count = next(iter(problem.targets.masks.values())).shape[0]
            if sweep and count != n:
                raise ConfigError(f"{count} variant masks for a sweep of {n} variants")
            n = count
        self.seeds = list(seeds) if seeds is not None else [cfg.seed + k for k in range(n)]
        if len(self.seeds) != n:
            raise ConfigError(f"{len(self.seeds)} seeds for {n} variants")
        self.n = n
        # Variants are sharded over devices; a count that does not divide evenly is padded with
        # extra seeds whose results are dropped (they cost compute, never change the others).
        self.mesh = variant_mesh(cfg, n)
        devices = self.mesh.size if self.mesh is not None else 1
        padded = -(-n // devices) * devices
        run_seeds = self.seeds + [self.seeds[-1] + 1 + k for k in range(padded - n)]
        if per_variant and padded > n:  # padding variants repeat the last variant's masks
            masks = {
                k: jnp.concatenate([m, jnp.repeat(m[-1:], padded - n, 0)])
                for k, m in problem.targets.masks.items()
            }
            problem = dataclasses.replace(problem, targets=problem.targets._replace(masks=masks))
        hw = problem.content.shape[:2]
        remat, self.memory, self.memory_limit = plan_remat(hw, cfg, padded, padded // devices)
        cfg = cfg.replace(remat="on" if remat else "off")
        if self.memory_limit is not None and self.memory.bytes > self.memory_limit:
            best = largest_fitting_size(hw, cfg, padded // devices, remat, self.memory_limit)
            fits = f"the largest size that fits is {best} px" if best else "no size fits"
            raise ConfigError(
                f"{hw[1]}x{hw[0]} px with {n} variant(s) needs about "
                f"{format_bytes(self.memory.bytes)} per device but "
                f"{format_bytes(self.memory_limit)} are available; {fits} (or use fewer "
                "variants, more devices, or --scales)"
            )
        self.cfg, self.problem = cfg, problem
        weights = variant_weights(cfg, n, sweep)
        weights = jax.tree.map(
            lambda w: jnp.concatenate([w, w[-1:].repeat(padded - n, 0)]), weights
        )
        xs = initial_images(problem, cfg, run_seeds) if init is None else jnp.asarray(init)
        if xs.shape[0] != padded:
            xs = jnp.concatenate([xs, jnp.broadcast_to(xs[-1:], (padded - n, *xs.shape[1:]))])
        if self.mesh is not None:
            batch = NamedSharding(self.mesh, PartitionSpec("variants"))
            replicated = NamedSharding(self.mesh, PartitionSpec())
            xs, weights = jax.device_put((xs, weights), batch)
            problem.params, problem.targets = jax.device_put(
                (problem.params, problem.targets), replicated
            )
        self.step_params = step_params(problem.params, cfg)
        self.xs, self.weights = xs, weights
        self.states = jax.jit(jax.vmap(lambda x, w: init_state(x, w, cfg)))(self.xs, self.weights)
        if self.mesh is not None:
            self.states = jax.device_put(self.states, batch)
        self.scan = use_scan(cfg)
        make = make_run_chunk if self.scan else make_batched_step
        self.step = make(static_config(cfg), self.mesh)
        self.rows: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n)]
        self.timings = {"compile": 0.0, "run": 0.0}
        self.nonfinite = ""
        self.stalled = ""
        self._limit = jnp.asarray(cfg.iterations, jnp.int32)  # made once, not per step
        self._compiled = False

    # -- inspection
    def iterations(self) -> np.ndarray:
        return to_host(self.states.iteration)[: self.n]

    def evaluations(self) -> np.ndarray:
        return to_host(self.states.evaluations)[: self.n]

    def active(self) -> np.ndarray:
        """(n,) bool: variants still stepping (below the limit, not converged)."""
        limit = np.int32(self.cfg.iterations)
        return np.asarray(jax.tree.map(to_host, active_variants(self.states, limit)))[: self.n]

    def done(self) -> bool:
        if self.nonfinite or self.stalled:
            return True
        active = self.active()
        cap = 3 * self.cfg.iterations + 100  # a line search never needs this many: a safeguard
        if np.any(active & (self.evaluations() >= cap)):
            self.stalled = f"the line search stalled after {cap} evaluations"
            return True
        return not np.any(active)

    def raw_images(self) -> np.ndarray:
        """The optimised images as the loss sees them, (n, h, w, 3) clipped (grey in luminance
        mode): what the next coarse-to-fine scale starts from."""
        return np.clip(to_host(self.xs)[: self.n], 0.0, 1.0)

    def images(self) -> np.ndarray:
        """Current images, (n, h, w, 3) float32 in [0, 1] (clipped; in colour in luminance mode)."""
        images = self.raw_images()
        if self.cfg.color_mode == "luminance":  # the result's luminance, the content's colours
            y = color.luminance(images)
            images = np.asarray(color.combine_luminance(y, self.problem.content), np.float32)
        return images

    def _args(self):
        limit = self._limit
        return (
            self.xs,
            self.states,
            self.step_params,
            self.problem.targets,
            self.weights,
            limit,
        )

    def compile(self) -> float:
        """Compile the step program now (once per shape) and return the seconds it took."""
        if not self._compiled:
            t0 = time.perf_counter()
            args = self._args() + ((np.int32(self.cfg.chunk),) if self.scan else ())
            leaves, treedef = jax.tree.flatten(args)
            key = (
                static_config(self.cfg),
                self.mesh,
                self.scan,
                treedef,
                tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves),
            )
            if key not in _COMPILED:  # a second run of the same shapes compiles nothing
                if len(_COMPILED) >= _COMPILED_MAX:
                    _COMPILED.pop(next(iter(_COMPILED)))
                _COMPILED[key] = self.step.lower(*args).compile()
            self.step = _COMPILED[key]
            release_host_memory()
            self.timings["compile"] = time.perf_counter() - t0
            self._compiled = True
        return self.timings["compile"]

    def advance(self, max_calls: int | None = None) -> int:
        """Run up to ``max_calls`` (default ``cfg.chunk``) step calls; return the calls made."""
        self.compile()
        calls = self.cfg.chunk if max_calls is None else max_calls
        # A call advances each variant by at most one iteration (L-BFGS's first call evaluates
        # x0 and advances none), so this many calls never overshoot the slowest variant.
        fresh = bool(np.any(to_host(getattr(self.states, "fresh", np.zeros(1, bool)))))
        active = self.active()
        behind = self.cfg.iterations - self.iterations()[active] if active.any() else [0]
        calls = max(1, min(calls, int(np.max(behind)) + fresh))
        t0 = time.perf_counter()
        infos: list[StepInfo] = []
        if self.scan:
            self.xs, self.states, buf, count = self.step(*self._args(), np.int32(calls))
            count = int(count)
            buf = jax.tree.map(to_host, buf)  # slice on the host: no tiny device programs
            infos = [jax.tree.map(lambda b, i=i: b[i], buf) for i in range(count)]
        else:
            for _ in range(calls):
                self.xs, self.states, info = self.step(*self._args())
                infos.append(info)
        if jax.process_count() == 1:
            host = jax.device_get(infos)  # one transfer for the whole chunk
        else:
            host = [jax.tree.map(to_host, info) for info in infos]
        self.timings["run"] += time.perf_counter() - t0
        self._record(host)
        return len(host)

    def _record(self, infos: list[StepInfo]) -> None:
        adam = self.cfg.optimizer == "adam"
        for info in infos:
            cols = parts_dict(info.parts, self.cfg)
            for k in range(self.n):
                if info.nonfinite[k] and not self.nonfinite:
                    self.nonfinite = (
                        f"variant {k} (seed {self.seeds[k]}): the loss became NaN or "
                        f"Inf at iteration {int(info.iteration[k])}; kept the last "
                        "finite image"
                    )
                if not info.accepted[k]:
                    continue
                row = {name: np.float64(v[k]) for name, v in cols.items()}
                row["iteration"] = int(info.iteration[k]) - (1 if adam else 0)
                row["evaluations"] = int(info.evaluations[k])
                self.rows[k].append(row)

    def history(self) -> list[dict[str, np.ndarray]]:
        """Per variant: {column: (rows,)}: iteration, evaluations, total, content, style, ..."""
        out = []
        for rows in self.rows:
            names = rows[0].keys() if rows else ["iteration", "evaluations", "total"]
            out.append({name: np.asarray([r[name] for r in rows]) for name in names})
        return out

    def final_loss(self) -> list[dict[str, float]]:
        """Loss parts of the images as they will be saved (clipped to [0, 1])."""
        loss = _batched_loss(static_config(self.cfg))
        xs = jnp.clip(self.xs, 0.0, 1.0)
        parts = loss(xs, self.problem.params, self.problem.targets, self.weights)
        cols = jax.tree.map(to_host, parts_dict(parts, self.cfg))
        return [{k: float(v[i]) for k, v in cols.items()} for i in range(self.n)]

    def result(self) -> Result:
        images = self.images()
        if self.cfg.original_colors:  # the classic colour swap, after the run
            images = color_swap(images, self.problem.content)
        return Result(
            images=to_uint8(images),
            history=self.history(),
            iterations=self.iterations(),
            evaluations=self.evaluations(),
            final_loss=self.final_loss(),
            config=self.cfg,
            seeds=self.seeds,
            timings=dict(self.timings),
            stopped=self.nonfinite or self.stalled,
        )


def stylize(
    content: ImageLike,
    style: ImageLike | Sequence[ImageLike],
    config: StyleConfig | None = None,
    *,
    params: Params | None = None,
    sweep: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    callback: Callable[[StyleRun], Any] | None = None,
    masks: Sequence[MaskLike] | None = None,
    style_masks: Sequence[MaskLike] | None = None,
    variant_masks: Sequence[Sequence[MaskLike]] | None = None,
    **options: Any,
) -> Result:
    """Stylise ``content`` with ``style`` (one image or a list to blend).

    Images are paths, PIL images or arrays (uint8, uint16 or float in [0, 1]); ``options`` override
    fields of ``config`` (``StyleConfig()`` by default), e.g. ``size=256, optimizer="adam"``.
    ``sweep`` maps content_weight / style_weight / tv_weight / learning_rate (or
    style_layer_weights, rows of L) to one value per variant: a whole sweep in one compiled run, all
    variants from ``config.seed`` unless ``seeds`` are given. ``callback(run)`` is called after
    every chunk. ``masks`` / ``style_masks`` (paths or arrays) give spatial control like
    ``config.masks`` / ``config.style_masks``: a region of the content per style image;
    ``variant_masks`` (a ``masks`` list per variant) gives each variant its own regions in one
    compiled run, all from ``config.seed`` unless ``seeds`` are given. Returns a ``Result``:
    uint8 images (n, h, w, 3) and the loss history per variant.
    """
    cfg = (config or StyleConfig()).replace(**options).validate()
    if sweep and seeds is None:
        n = len(next(iter(sweep.values())))
        seeds = [cfg.seed] * n
    if variant_masks is not None and seeds is None:
        seeds = [cfg.seed] * len(variant_masks)
    results, scales = [], CoarseToFine(cfg)  # one scale unless cfg.scales (jaxnst.scales)
    while True:
        scale_cfg = scales.config()
        t0 = time.perf_counter()
        problem = make_problem(
            content,
            style,
            scale_cfg,
            params,
            masks=masks,
            style_masks=style_masks,
            variant_masks=variant_masks,
        )
        params = problem.params
        init = scales.initial_images(problem.content.shape[:2])
        run = StyleRun(problem, scale_cfg, seeds=seeds, sweep=sweep, init=init)
        t_targets = time.perf_counter() - t0
        while not run.done():
            run.advance()
            if callback is not None:
                callback(run)
        result = run.result()
        result.timings["targets"] = t_targets
        results.append(result)
        if result.stopped or scales.last:
            break
        scales.next(run)
    return results[0] if len(results) == 1 else merge_scales(results, scales, run)


def merge_scales(results: list[Result], scales: CoarseToFine, run: StyleRun) -> Result:
    """One Result for a coarse-to-fine run: the last scale's images, all scales' history.

    History rows gain a ``scale`` column (the long side) and iterations count on across scales
    (``scales`` merges them, as it does for the CLI); ``run`` is the last scale's run.
    """
    return dataclasses.replace(
        results[-1],
        history=scales.history(run),
        iterations=scales.iterations(run),
        evaluations=scales.evaluations(run),
        config=scales.cfg,
        timings=summed([r.timings for r in results]),
    )


def output_shape(content_shape: tuple[int, int], cfg: StyleConfig) -> tuple[int, int]:
    """The (h, w) of the output for a content image of ``content_shape``."""
    return fit_size(content_shape, cfg.size)


__all__ = [
    "LossParts",
    "Problem",
    "Result",
    "StyleRun",
    "initial_images",
    "make_problem",
    "output_shape",
    "project",
    "stylize",
    "variant_weights",
]
