"""Memory known up front: an estimate from activation sizes, before anything compiles.

peak ~= parameters (twice: each kernel and its input-gradient copy, ``with_backward_kernels``)
        + targets
        + variants * (optimiser state + image-sized temporaries + FACTOR * saved activations)

"Saved activations" are the responses the backward pass needs: every layer up to the deepest one
the loss reads, or with rematerialisation (``jax.checkpoint`` per VGG block) only the block
outputs plus one block's worth at a time. FACTOR, the bytes XLA really uses per byte of those
activations (gradients, fusion temporaries), was calibrated against XLA's own compiled memory
analysis on CPU and the measured peak on an H100 (docs/benchmarks.md states the error). With
per-example execution (``batching`` each) the variants of a device share one set of activations.

The limit is the device's memory; on CPU, where the "devices" are one host's memory, it is what
the host can still give this process (``host_memory_available``: MemAvailable, cgroup limits,
rlimits) and the estimate counts every local device in use. ``plan_memory`` refuses a run that
cannot fit (ConfigError, exit 2) before anything is allocated, naming the largest size and the
most variants that fit, both exact (the estimate grows with each).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
from dataclasses import dataclass
from pathlib import Path

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
HOST_SHARE = 0.85  # of the host's available memory, a CPU run plans to use at most this share
RUNTIME_BYTES = 2**29  # ... less this (jaxnst's RSS was a few hundred MB above the estimate)


@dataclass(frozen=True)
class MemoryEstimate:
    bytes: int  # the estimated peak
    params: int
    targets: int
    per_variant: int
    remat: bool
    where: str = "per device"  # or "on this host": every local CPU device's share added up

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
    hw: tuple[int, int], cfg: StyleConfig, variants: int, remat: bool, backend: str | None = None,
    each: bool = False, per_example: int = 0,
) -> MemoryEstimate:  # fmt: skip
    """Estimated peak device bytes of one run step for output size ``hw`` (h, w).

    ``each``: the variants run one after another through the one-image program, so only their
    images and optimiser states add up and the activations are there once; ``per_example``:
    bytes of targets each example has of its own (a video frame's content and temporal ones).
    """
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
    activations = int(ACTIVATION_FACTOR.get(backend, 1.6) * saved * itemsize)
    per_variant = int(state_images * image) + per_example + (0 if each else activations)
    total = params + targets + (activations if each else 0) + variants * per_variant
    return MemoryEstimate(total, params, targets, per_variant, remat)


def format_bytes(n: float) -> str:
    """1.5 GiB, 300 MiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def device_memory_limit(cfg: StyleConfig) -> int | None:
    """Bytes available on this process's first device (``memory_limit_gb`` if set); None if
    unknown. On CPU the device is the host: what it can still give this process, less room for
    the runtime. (The first *local* device: in a multi-host run jax.devices()[0] belongs to
    process 0, and another process may not ask it for its memory.)"""
    if cfg.memory_limit_gb:
        return int(cfg.memory_limit_gb * GIB)
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        room = host_memory_available()
        return None if room is None else max(0, int(HOST_SHARE * room) - RUNTIME_BYTES)
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def host_memory_available() -> int | None:
    """Bytes this process can still allocate, as Linux says (None elsewhere): the least of
    MemAvailable (/proc/meminfo), the room under each cgroup memory limit on the way to the
    root (v2 memory.max, v1 memory.limit_in_bytes), and the address-space and data rlimits less
    what the process maps already."""
    room = []
    meminfo = _read_kv(Path("/proc/meminfo"))
    if "MemAvailable" in meminfo:
        room.append(meminfo["MemAvailable"])
    room += _cgroup_room()
    status = _read_kv(Path("/proc/self/status"))
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        for limit, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY and used in status:
                room.append(max(0, soft - status[used]))
    return min(room) if room else None


def _read_kv(path: Path) -> dict[str, int]:
    """'Name:   123 kB' lines -> {name: bytes}."""
    out = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
                out[name.strip()] = int(parts[0]) * scale
    return out


def _cgroup_room() -> list[int]:
    """Bytes left under this process's cgroup memory limits (each level up to the root)."""
    room: list[int] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return room
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base, files = Path("/sys/fs/cgroup"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            base = Path("/sys/fs/cgroup/memory")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        d = base / rel.lstrip("/")
        while True:
            with contextlib.suppress(OSError, ValueError):
                limit = (d / files[0]).read_text().strip()
                used = int((d / files[1]).read_text().strip())
                if limit.isdigit() and int(limit) < 2**60:  # "max", or v1's huge "unlimited"
                    room.append(max(0, int(limit) - used))
            if d == base or d.parent == d:
                break
            d = d.parent
    return room


def largest_fitting_size(
    content_hw: tuple[int, int], cfg: StyleConfig, variants: int, remat: bool, limit: int,
    each: bool = False, per_example: int = 0,
) -> int:  # fmt: skip
    """The largest long side in pixels (any whole number from 16) whose estimate fits in
    ``limit`` bytes; 0 if not even 16 px does. The estimate grows with the size (a sum of array
    sizes), so a bisection finds it exactly."""

    def fits(side: int) -> bool:
        hw = fit_size(content_hw, side)
        return estimate_memory(hw, cfg, variants, remat, each=each,
                               per_example=per_example).bytes <= limit  # fmt: skip

    if not fits(16):
        return 0
    lo, hi = 16, 32
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 2**20:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def largest_fitting_variants(
    hw: tuple[int, int], cfg: StyleConfig, remat: bool, limit: int, each: bool = False,
    per_example: int = 0,
) -> int:  # fmt: skip
    """The most variants (of one device) whose estimate at size ``hw`` fits in ``limit``."""
    one = estimate_memory(hw, cfg, 1, remat, each=each, per_example=per_example)
    fixed = one.bytes - one.per_variant  # parameters, targets (and once the activations)
    return max(0, (limit - fixed) // one.per_variant) if one.per_variant else 0


def most_examples(
    hw: tuple[int, int], cfg: StyleConfig, devices: int, each: bool, per_example: int = 0
) -> int | None:
    """The most examples at size ``hw`` that fit over ``devices`` devices (None when the limit
    is unknown): what a driver that may split its examples into batches (video frames) plans
    with, instead of being refused."""
    limit = device_memory_limit(cfg)
    if limit is None:
        return None
    share = limit // host_copies(devices)
    remat = cfg.remat == "on"
    return largest_fitting_variants(hw, cfg, remat, share, each, per_example) * devices


def host_copies(devices: int) -> int:
    """How many of ``devices`` (a run's, all local ones at most) share this host's memory:
    the local devices in use on CPU, else 1 (a GPU or TPU has its own)."""
    local = jax.local_devices()
    return max(1, min(devices, len(local))) if local[0].platform == "cpu" else 1


def plan_memory(
    hw: tuple[int, int],
    cfg: StyleConfig,
    n: int,
    padded: int,
    devices: int,
    each: bool,
    per_example: int = 0,
    extra: int = 0,
    source_hw: tuple[int, int] | None = None,
) -> tuple[bool, MemoryEstimate, int | None]:
    """Remat, the estimate and the limit of ``n`` variants (``padded`` over ``devices``) at size
    ``hw``; ConfigError (exit 2) before anything is allocated if they cannot fit.

    ``extra`` bytes (decoding the input files) come off the limit first; on CPU the estimate is
    that of all the local devices in use (``host_copies``). ``source_hw``: the content's own
    size, whose aspect the largest fitting size keeps (default ``hw``).
    """
    per_device = -(-padded // devices)
    remat, plan, limit = plan_remat(hw, cfg, padded, per_device, each, per_example)
    copies = host_copies(devices)
    if jax.local_devices()[0].platform == "cpu":
        plan = dataclasses.replace(plan, bytes=plan.bytes * copies + extra, where="on this host")
    if limit is None or plan.bytes <= limit:
        return remat, plan, limit
    share = max(0, limit - extra) // copies
    best = largest_fitting_size(source_hw or hw, cfg, per_device, remat, share, each, per_example)
    most = largest_fitting_variants(hw, cfg, remat, share, each, per_example)
    most *= padded // per_device  # per device, times the devices
    sizes = f"the largest size that fits is {best} px" if best else "no size fits"
    counts = f"at most {most} variant(s) fit at this size" if most else "not one variant fits"
    raise ConfigError(
        f"{hw[1]}x{hw[0]} px with {n} variant(s) needs about {format_bytes(plan.bytes)} "
        f"{plan.where} but {format_bytes(limit)} are available; {sizes}, {counts} (or use more "
        "devices, --scales, or --memory-limit-gb to plan for another limit)"
    )


def plan_remat(
    hw: tuple[int, int],
    cfg: StyleConfig,
    variants: int,
    per_device_variants: int | None = None,
    each: bool = False,
    per_example: int = 0,
) -> tuple[bool, MemoryEstimate, int | None]:
    """Decide rematerialisation (cfg.remat auto: only when the plain program would not fit).

    Returns (remat, estimate, limit); the estimate is per device. XLA:CPU schedules the
    recomputation early and plans *more* memory with remat (586 -> 615 MB at 512 px), so on CPU
    the estimate never counts on its savings and "auto" leaves it off.
    """
    n = per_device_variants or variants
    limit = device_memory_limit(cfg)
    plain = estimate_memory(hw, cfg, n, False, each=each, per_example=per_example)
    if cfg.remat != "auto":
        remat = cfg.remat == "on"
    else:
        remat = limit is not None and plain.bytes > limit and jax.default_backend() != "cpu"
    if not remat or jax.default_backend() == "cpu":
        return remat, plain, limit
    return remat, estimate_memory(hw, cfg, n, True, each=each, per_example=per_example), limit


def release_host_memory() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere nothing).

    XLA's compilations leave ~250 MB of freed heap that glibc keeps mapped: measured on CPU,
    trimming after the targets and after compiling the step brought jaxnst's peak RSS from
    1.10-1.21x PyTorch's to below it (680 vs 698 MB at 256 px, 1,123 vs 1,194 MB at 512 px).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
