"""Training a fast style network on jaxnst's objective: the style targets, the step, the loop.

Johnson, Alahi & Fei-Fei (ECCV 2016): a feed-forward network (``jaxnst.transform``) is trained
so that its output for each photo minimises the Gatys objective with that photo as the content.
Here the objective is jaxnst's own, built from the ``TrainConfig``'s ``style_config()``: the
content targets P are each photo's own features (computed inside the step, per example: a
``Targets`` field with the example axis), the style Grams A come from the style image(s) once
(shared; resized to ``style_scale`` x the crop and normalised to the crop's positions as the
image path does), and ``losses.loss_parts`` is mapped over the batch with ``vmap``. The loss is
the batch mean; Adam updates the network.

``train_step`` is one compiled program per (objective, mesh): photos sharded over the example
axis of a 1-D device mesh (all local devices, or every host's after
``jax.distributed.initialize``), everything else replicated, the gradient mean reduced by XLA;
the network's parameters and Adam's state are donated (updated in place). A step whose loss or
gradient is not finite changes nothing and is reported. ``Trainer`` runs the steps from batches
made ahead on background threads (``data.PhotoBatches.prefetch``), keeps the loss history
without waiting on the devices between looks, and saves and restores its state bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnst.color import luminance, to_luminance_image
from jaxnst.config import LossWeights
from jaxnst.data import PhotoBatches, Prefetcher
from jaxnst.engine import AXIS, precision_context, step_params, targets_fns, to_host
from jaxnst.errors import ConfigError
from jaxnst.image import ImageLike, load_image
from jaxnst.layers import positions
from jaxnst.losses import Objective, Targets, blend_grams, content_targets, loss_parts, parts_dict
from jaxnst.network import Network
from jaxnst.options import flag, show_value
from jaxnst.outputs import array_sha256
from jaxnst.problem import check_min_side
from jaxnst.trainconfig import RESUME_CHECKED, TrainConfig
from jaxnst.transform import Params, apply_transform, init_transform
from jaxnst.vgg import Params as VGGParams
from jaxnst.weights import load_params

ADAM = optax.scale_by_adam()  # Johnson et al.'s optimiser; the learning rate is traced
LOOK_EVERY = 50  # steps between looks at the losses when no hook says otherwise


# ---------------------------------------------------------------------- the style targets
def style_targets(
    vgg_params: VGGParams, styles: Sequence[ImageLike], cfg: TrainConfig, objective: Objective
) -> tuple[list[np.ndarray], dict[str, jax.Array]]:
    """The style images as the loss sees them, and A per style layer {layer: (N, N)}.

    Each image's long side is ``style_scale`` x the crop; its Grams are scaled to the crop's
    M_l (as ``problem.make_problem`` does for an output of another size), then blended
    (``style_blend_weights``) or picked per layer (``style_layer_images``). In luminance mode
    the images are grey luminance images: one network serves every photo, so the style's
    luminance is not matched to each photo's as an image run does.
    """
    if not styles:
        raise ConfigError("at least one style image is needed")
    style_cfg = cfg.style_config()
    side = max(16, round(cfg.crop * cfg.style_scale))
    images = [load_image(s, side, f"style {i + 1}") for i, s in enumerate(styles)]
    if cfg.color_mode == "luminance":
        images = [np.asarray(to_luminance_image(luminance(s)), np.float32) for s in images]
    for i, s in enumerate(images):
        check_min_side(s, f"style {i + 1}", style_cfg)
    _, style_fn, _ = targets_fns(objective, cfg.precision)
    grams = []
    for s in images:
        ratio = {
            k: positions((cfg.crop,) * 2, k) / positions(s.shape[:2], k) for k in cfg.style_layers
        }
        grams.append({k: g * ratio[k] for k, g in style_fn(vgg_params, jnp.asarray(s)).items()})
    if not cfg.style_layers:
        return images, {}
    if not cfg.style_layer_images:
        return images, blend_grams(grams, jnp.asarray(style_cfg.blend_weights(len(images))))
    if max(cfg.style_layer_images) > len(grams):
        raise ConfigError(f"style-layer-images names image {max(cfg.style_layer_images)} of "
                          f"{len(grams)} style image(s)")  # fmt: skip
    pairs = zip(cfg.style_layers, cfg.style_layer_images, strict=True)
    return images, {k: grams[i - 1][k] for k, i in pairs}


# ---------------------------------------------------------------------- devices
def batch_mesh(devices: int, batch_size: int) -> Mesh | None:
    """A 1-D mesh over the devices the batch is split over (None for one device).

    ``devices`` of the local ones (0: all), fewer if needed so that they divide the batch; a
    multi-host run uses every device of every host, whose count must divide the batch.
    """
    available = jax.devices()
    if jax.process_count() > 1:
        if batch_size % len(available):
            raise ConfigError(f"batch-size {batch_size} does not split over the "
                              f"{len(available)} devices of all hosts; use a multiple")  # fmt: skip
        return Mesh(np.asarray(available), (AXIS,))
    count = min(devices or len(available), len(available), batch_size)
    while batch_size % count:
        count -= 1
    return Mesh(np.asarray(available[:count]), (AXIS,)) if count > 1 else None


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` on every device of ``mesh`` (on the default device without one)."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


# ---------------------------------------------------------------------- the step
def batch_loss(
    params: Params, photos: jax.Array, vgg_params: VGGParams, style: dict[str, jax.Array],
    weights: LossWeights, objective: Objective, luminance_only: bool = False,
) -> tuple[jax.Array, Any]:  # fmt: skip
    """The mean over the batch of each output's loss, and the per-photo ``LossParts`` (b, ...).

    photos (b, s, s, 3) in [0, 1]; the network's output for photo i is compared with photo i's
    own features (content) and with ``style`` (A per layer, shared).
    """
    wide = jnp.promote_types(photos.dtype, jnp.float32)  # float64 in the gradient tests
    dtype = jnp.bfloat16 if objective.dtype == "bfloat16" else wide
    inputs = to_luminance_image(photos) if luminance_only else photos
    outputs = apply_transform(params, inputs, dtype)
    if luminance_only:
        outputs = to_luminance_image(outputs)
    content = jax.vmap(lambda x: content_targets(vgg_params, x, objective), axis_name=AXIS)
    targets = Targets(jax.lax.stop_gradient(content(inputs)), style, per_example=("content",))
    one = lambda y, t: loss_parts(y, vgg_params, t, weights, objective)  # noqa: E731
    parts = jax.vmap(one, in_axes=(0, targets.in_axes()), axis_name=AXIS)(outputs, targets)
    return jnp.mean(parts.total), parts


@functools.cache
def train_step(
    objective: Objective, precision: str, luminance_only: bool, mesh: Mesh | None
) -> Any:
    """jit(step): (params, opt_state, photos, vgg_params, style, weights) -> (params,
    opt_state, parts (b, ...), finite); params and opt_state donated, photos split over
    ``mesh``. A non-finite loss or gradient leaves params and opt_state as they were."""

    def step(params, opt_state, photos, vgg_params, style, weights):
        with precision_context(precision):
            grad_fn = jax.value_and_grad(batch_loss, has_aux=True)
            (loss, parts), grads = grad_fn(
                params, photos, vgg_params, style, weights, objective, luminance_only
            )
            updates, new_state = ADAM.update(grads, opt_state)
            new = jax.tree.map(lambda p, u: p - weights.learning_rate * u, params, updates)
            finite = jnp.isfinite(loss) & jnp.all(
                jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
            )
            keep = lambda a, b: jax.tree.map(lambda u, v: jnp.where(finite, u, v), a, b)  # noqa: E731
            return keep(new, params), keep(new_state, opt_state), parts, finite

    if mesh is None:
        return jax.jit(step, donate_argnums=(0, 1))
    rep, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.jit(
        step, donate_argnums=(0, 1), in_shardings=(rep, rep, split, rep, rep, rep),
        out_shardings=(rep, rep, split, rep),
    )  # fmt: skip


# ---------------------------------------------------------------------- the loop
class TrainHooks:
    """What a driver of ``Trainer.run`` does between looks; the defaults do nothing.

    ``compiled`` after the step compiled; ``steps`` says how many steps to run before the next
    look (None: ``LOOK_EVERY``); ``advanced`` sees the trainer after each look (progress,
    samples, checkpoints); ``stop`` ends the run after the current look (Ctrl-C).
    """

    def compiled(self, trainer: Trainer, seconds: float) -> None:
        pass

    def steps(self, trainer: Trainer) -> int | None:
        return None

    def advanced(self, trainer: Trainer) -> None:
        pass

    def stop(self) -> bool:
        return False


def data_digest(batches: PhotoBatches) -> str:
    """A digest of the photos (relative paths, short sides): a resumed training needs the same."""
    root = batches.photos.root
    text = "\n".join(
        f"{p.relative_to(root).as_posix()}:{s}"
        for p, s in zip(batches.photos.paths, batches.photos.short_sides, strict=True)
    )
    return hashlib.sha256(text.encode()).hexdigest()


class Trainer:
    """A training in progress: the network, Adam's state, the step and the loss history.

    ``data`` is a folder of photos (or ``PhotoBatches``); ``styles`` paths or arrays. ``rows``
    is the history: per step the batch means of the loss parts (``iteration`` = steps done).
    """

    def __init__(
        self,
        styles: Sequence[ImageLike],
        data: str | Path | PhotoBatches,
        cfg: TrainConfig,
        vgg_params: VGGParams | None = None,
    ) -> None:
        self.cfg = cfg.validate()
        if isinstance(data, PhotoBatches):
            self.batches = data
        else:
            self.batches = PhotoBatches(data, cfg.crop, cfg.batch_size, cfg.seed, cfg.max_scale)
        b = self.batches
        if (b.crop, b.batch_size, b.seed, b.max_scale) != (cfg.crop, cfg.batch_size, cfg.seed,
                                                            cfg.max_scale):  # fmt: skip
            raise ConfigError("the photo batches' crop, batch size, seed or scale differ from "
                              "the config's")  # fmt: skip
        self.total = cfg.total_steps(len(self.batches))
        style_cfg = cfg.style_config()
        self.objective = Objective.from_config(style_cfg, remat=cfg.remat == "on")
        if vgg_params is None:
            vgg_params = load_params(cfg.weights, cfg.normalize_network, cfg.pooling)
        self.style_images, grams = style_targets(vgg_params, styles, cfg, self.objective)
        self.mesh = batch_mesh(cfg.devices, cfg.batch_size)
        self.sharding = NamedSharding(self.mesh, PartitionSpec(AXIS)) if self.mesh else None
        shape = (cfg.batch_size, cfg.crop, cfg.crop, 3)
        self.local_rows = range(cfg.batch_size)
        if self.sharding is not None and jax.process_count() > 1:  # this host's rows only
            index = self.sharding.addressable_devices_indices_map(shape).values()
            self.local_rows = range(min(i[0].start or 0 for i in index),
                                    max(i[0].stop or shape[0] for i in index))  # fmt: skip
        params = init_transform(jax.random.key(cfg.seed), width=cfg.width)
        self.params, self.opt_state, self.vgg, self.style, self.weights = replicate(
            (params, ADAM.init(params), step_params(vgg_params, self.objective), grams,
             LossWeights.from_config(style_cfg)), self.mesh,
        )  # fmt: skip
        self.program = train_step(self.objective, cfg.precision, cfg.color_mode == "luminance",
                                  self.mesh)  # fmt: skip
        self.executable: Any = None
        self.photos_spec = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=self.sharding)
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.nonfinite = ""
        self.timings = {"compile": 0.0, "run": 0.0, "images": 0}
        self._pending: list[tuple[int, Any, Any]] = []
        self._loader: Prefetcher | None = None

    # -- stepping
    def compile(self) -> float:
        """Compile the step for this training's shapes; the seconds it took."""
        if self.executable is None:
            t0 = time.perf_counter()
            args = (self.params, self.opt_state, self.photos_spec, self.vgg, self.style,
                    self.weights)  # fmt: skip
            self.executable = self.program.lower(*args).compile()
            self.timings["compile"] = time.perf_counter() - t0
        return self.timings["compile"]

    def done(self) -> bool:
        return bool(self.nonfinite) or self.step >= self.total

    def _put(self, batch: np.ndarray) -> jax.Array:
        if self.sharding is None:
            return jax.device_put(batch)
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(self.sharding, batch,
                                                          self.photos_spec.shape)  # fmt: skip
        return jax.device_put(batch, self.sharding)

    def advance(self, steps: int | None = None) -> int:
        """Run up to ``steps`` steps (default ``LOOK_EVERY``), then record their losses."""
        self.compile()
        n = max(0, min(steps or LOOK_EVERY, self.total - self.step))
        if self._loader is None:
            rows = self.local_rows
            self._loader = Prefetcher(lambda s: self.batches.batch(s, rows), self.step,
                                      self.cfg.prefetch, self.cfg.workers)  # fmt: skip
        t0 = time.perf_counter()
        for _ in range(n):
            step, batch = next(self._loader)
            assert step == self.step, (step, self.step)
            self.params, self.opt_state, parts, finite = self.executable(
                self.params, self.opt_state, self._put(batch), self.vgg, self.style, self.weights
            )
            self.step += 1
            self._pending.append((self.step, parts, finite))
        self._record()
        self.timings["run"] += time.perf_counter() - t0
        self.timings["images"] += n * self.cfg.batch_size
        return n

    def _record(self) -> None:
        """The pending steps' losses to the history (one transfer): batch means per part."""
        if jax.process_count() == 1:
            host = jax.device_get([(p, f) for _, p, f in self._pending])
        else:
            host = [jax.tree.map(to_host, (p, f)) for _, p, f in self._pending]
        for (step, _, _), (parts, finite) in zip(self._pending, host, strict=True):
            if not finite and not self.nonfinite:
                self.nonfinite = (f"the loss became NaN or Inf at step {step}; kept the last "
                                  "finite network")  # fmt: skip
            cols = parts_dict(parts, self.objective)
            row = {"iteration": step, **{k: np.float64(np.mean(v)) for k, v in cols.items()}}
            self.rows.append(row)
        self._pending = []

    def images_per_second(self) -> float:
        return self.timings["images"] / self.timings["run"] if self.timings["run"] else 0.0

    def run(self, hooks: TrainHooks | None = None) -> Trainer:
        """Step until done, NaN/Inf, or ``hooks.stop()``; the loader is closed at the end."""
        hooks = hooks or TrainHooks()
        try:
            hooks.compiled(self, self.compile())
            while not self.done() and not hooks.stop():
                self.advance(hooks.steps(self))
                hooks.advanced(self)
        finally:
            self.close()
        return self

    def close(self) -> None:
        """End the background loader (a later ``advance`` starts a new one)."""
        if self._loader is not None:
            self._loader.close()
            self._loader = None

    # -- results and state
    def host_params(self) -> Params:
        return jax.tree.map(lambda a: np.asarray(to_host(a)), self.params)

    def stylise(self, images: jax.Array) -> np.ndarray:
        """The current network on ``images`` (n, h, w, 3) (samples while training)."""
        from jaxnst.apply import apply_network

        return apply_network(self.network(), images)

    def style_digests(self) -> list[str]:
        return [array_sha256(s) for s in self.style_images]

    def state_meta(self) -> dict[str, Any]:
        """What a checkpoint records besides the arrays (``network.save_checkpoint``)."""
        return {
            "config": self.cfg.to_dict(), "step": self.step, "total": self.total,
            "rows": [{k: (v if isinstance(v, int) else float(v)) for k, v in r.items()}
                     for r in self.rows],
            "styles_seen": self.style_digests(), "photos_seen": data_digest(self.batches),
        }  # fmt: skip

    def restore(self, params: Params, opt_state: Any, meta: dict[str, Any], source: str) -> None:
        """Continue from a checkpoint's state: the same options, styles and photos required."""
        old = TrainConfig().merge(meta["config"], source=source)
        for name in RESUME_CHECKED:
            was, now = getattr(old, name), getattr(self.cfg, name)
            if was != now:
                raise ConfigError(f"--resume: {source} was written with --{flag(name)} "
                                  f"{show_value(was)}, not {show_value(now)}")  # fmt: skip
        if meta.get("styles_seen") != self.style_digests():
            raise ConfigError(f"--resume: {source} was trained on other style images")
        if meta.get("photos_seen") != data_digest(self.batches):
            raise ConfigError(f"--resume: {source} was trained on other photos (the folder "
                              "changed); its batches would differ")  # fmt: skip
        self.close()
        self.params, self.opt_state = replicate((params, opt_state), self.mesh)
        self.step = int(meta["step"])
        self.rows = [dict(r) for r in meta.get("rows", [])]

    def network(self, meta: dict[str, Any] | None = None) -> Network:
        """The network as trained so far, with what a model file records."""
        tail = self.rows[-max(1, min(20, len(self.rows) // 10)) :]  # the last ~10%, at most 20
        names = [k for k in (tail[0] if tail else {}) if k != "iteration"]
        final = {k: float(np.mean([r[k] for r in tail])) for k in names}
        info = {"steps": self.step, "final_loss": final,
                "styles_seen": self.style_digests(), **(meta or {})}  # fmt: skip
        return Network(self.host_params(), self.cfg, info)


def train_network(
    styles: ImageLike | Sequence[ImageLike],
    data: str | Path,
    config: TrainConfig | None = None,
    *,
    vgg_params: VGGParams | None = None,
    hooks: TrainHooks | None = None,
    **options: Any,
) -> Network:
    """Train a fast style network for ``styles`` (one image or several to blend) on the photos
    under ``data``; ``options`` override fields of ``config`` (``TrainConfig()`` by default),
    e.g. ``crop=256, steps=40000``. Returns the ``Network`` (``.save(path)`` writes the model
    file; ``jaxnst.apply_network`` applies it)."""
    cfg = (config or TrainConfig()).replace(**options).validate()
    if not isinstance(styles, list | tuple):
        styles = [styles]
    trainer = Trainer(styles, data, cfg, vgg_params).run(hooks)
    if trainer.nonfinite:
        raise FloatingPointError(trainer.nonfinite)
    return trainer.network()


__all__ = ["TrainHooks", "Trainer", "batch_loss", "train_network", "train_step"]
