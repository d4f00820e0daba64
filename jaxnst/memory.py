"""Memory known up front: an estimate from activation sizes, before anything compiles.

peak ~= parameters (twice: each kernel and its input-gradient copy, ``with_backward_kernels``)
        + targets
        + variants * (optimiser state + image-sized temporaries + FACTOR * saved activations)

"Saved activations" are the responses the backward pass needs: every layer up to the deepest one
the loss reads, or with rematerialisation (``jax.checkpoint`` per VGG block) only the block
outputs plus one block's worth at a time. FACTOR, the bytes XLA really uses per byte of those
activations (gradients, fusion temporaries), was calibrated against XLA's own compiled memory
analysis on CPU and the measured peak on an H100 (docs/benchmarks.md states the error).
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass

import jax

from jaxnst.config import StyleConfig
from jaxnst.errors import ConfigError
from jaxnst.image import fit_size
from jaxnst.layers import LAYER_INDEX, LAYER_NAMES, conv_shapes, deepest, positions, width

# Bytes XLA uses per byte of saved activations, by backend (see the module docstring).
# CPU: 1.43 fits XLA:CPU's plan at 128, 256 and 512 px alike, 1.45 errs on the high side
# (docs/benchmarks.md); GPU: from the H100 loss + gradient at 2048 px, measured before the Gram
# and backward-kernel changes.
ACTIVATION_FACTOR = {"cpu": 1.45, "gpu": 1.6, "tpu": 1.6}
GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    bytes: int  # the estimated peak
    params: int
    targets: int
    per_variant: int
    remat: bool

    @property
    def gib(self) -> float:
        return self.bytes / GIB


def _layer_sizes(h: int, w: int, upto: str) -> list[tuple[str, int, int]]:
    """(name, block, elements) of every layer up to ``upto`` for an h x w input."""
    return [
        (name, int(name[4]), positions((h, w), name) * width(name))  # conv{b}_{i} and pool{b}
        for name in LAYER_NAMES[: LAYER_INDEX[upto] + 1]
    ]


def estimate_memory(
    hw: tuple[int, int], cfg: StyleConfig, variants: int, remat: bool, backend: str | None = None
) -> MemoryEstimate:
    """Estimated peak device bytes of one run step for output size ``hw`` (h, w)."""
    backend = backend or jax.default_backend()
    h, w = hw
    itemsize = 2 if cfg.dtype == "bfloat16" else 4
    layers = tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))
    upto = deepest(layers)
    sizes = _layer_sizes(h, w, upto)
    n_params = sum(
        k[0] * k[1] * k[2] * k[3] + b[0]
        for name, (k, b) in conv_shapes().items()
        if LAYER_INDEX[name] <= LAYER_INDEX[upto]
    )
    params = 2 * 4 * n_params
    content = sum(e for name, _, e in sizes if name in cfg.content_layers)
    grams = sum(conv_shapes()[name][1][0] ** 2 for name in cfg.style_layers)
    targets = 4 * (content + grams)
    if remat:
        saved = sum(e for name, _, e in sizes if name.startswith("pool") or name in layers)
        blocks: dict[int, int] = {}
        for _, block, e in sizes:
            blocks[block] = blocks.get(block, 0) + e
        saved += max(blocks.values())
    else:
        saved = sum(e for _, _, e in sizes)
    image = h * w * 3 * 4
    # Adam: image, gradient, two moments and temporaries. L-BFGS: the history is 2m images, but
    # XLA's plan holds it twice across the update (measured against compiled memory analysis
    # on CPU, m = 20: 39 images more than 2m + 8 at 128, 256 and 512 px; docs/benchmarks.md);
    # that state is the same on every backend.
    state_images = 6 if cfg.optimizer == "adam" else 4 * cfg.lbfgs_memory + 8
    factor = ACTIVATION_FACTOR.get(backend, 1.6)
    per_variant = int(state_images * image + factor * saved * itemsize)
    total = params + targets + variants * per_variant
    return MemoryEstimate(total, params, targets, per_variant, remat)


def format_bytes(n: float) -> str:
    """1.5 GiB, 300 MiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def device_memory_limit(cfg: StyleConfig) -> int | None:
    """Bytes available on the first device (``memory_limit_gb`` if set); None if unknown."""
    if cfg.memory_limit_gb:
        return int(cfg.memory_limit_gb * GIB)
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def largest_fitting_size(
    content_hw: tuple[int, int], cfg: StyleConfig, variants: int, remat: bool, limit: int
) -> int:
    """The largest long side (in multiples of 16) whose estimate fits in ``limit`` bytes."""
    lo, hi = 0, 1
    while estimate_memory(fit_size(content_hw, hi * 16), cfg, variants, remat).bytes <= limit:
        lo, hi = hi, hi * 2
        if hi > 4096:
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        fits = estimate_memory(fit_size(content_hw, mid * 16), cfg, variants, remat).bytes <= limit
        lo, hi = (mid, hi) if fits else (lo, mid)
    return lo * 16


def plan_remat(
    hw: tuple[int, int], cfg: StyleConfig, variants: int, per_device_variants: int | None = None
) -> tuple[bool, MemoryEstimate, int | None]:
    """Decide rematerialisation (cfg.remat auto: only when the plain program would not fit).

    Returns (remat, estimate, limit); the estimate is per device. XLA:CPU schedules the
    recomputation early and plans *more* memory with remat (586 -> 615 MB at 512 px), so on CPU
    the estimate never counts on its savings and "auto" leaves it off.
    """
    n = per_device_variants or variants
    limit = device_memory_limit(cfg)
    plain = estimate_memory(hw, cfg, n, remat=False)
    if cfg.remat != "auto":
        remat = cfg.remat == "on"
    else:
        remat = limit is not None and plain.bytes > limit and jax.default_backend() != "cpu"
    if not remat or jax.default_backend() == "cpu":
        return remat, plain, limit
    return remat, estimate_memory(hw, cfg, n, remat=True), limit


def release_host_memory() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere nothing).

    XLA's compilations leave ~250 MB of freed heap that glibc keeps mapped: measured on CPU,
    trimming after the targets and after compiling the step brought jaxnst's peak RSS from
    1.10-1.21x PyTorch's to below it (680 vs 698 MB at 256 px, 1,123 vs 1,194 MB at 512 px).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def check_fits(
    hw: tuple[int, int], cfg: StyleConfig, n: int, per_device: int, plan: MemoryEstimate,
    limit: int | None,
) -> None:  # fmt: skip
    """ConfigError naming the largest size that fits, if ``plan`` exceeds ``limit`` bytes."""
    if limit is None or plan.bytes <= limit:
        return
    best = largest_fitting_size(hw, cfg, per_device, plan.remat, limit)
    fits = f"the largest size that fits is {best} px" if best else "no size fits"
    raise ConfigError(
        f"{hw[1]}x{hw[0]} px with {n} variant(s) needs about {format_bytes(plan.bytes)} per "
        f"device but {format_bytes(limit)} are available; {fits} (or use fewer variants, more "
        "devices, or --scales)"
    )
