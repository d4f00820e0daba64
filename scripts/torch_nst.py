"""A PyTorch peer of jaxnst's objective, to check it and to race its L-BFGS against PyTorch's.

    python scripts/torch_nst.py --demo --size 64     # loss of the noise image, then 20 L-BFGS steps

Other scripts import it after putting ``scripts/`` on ``sys.path``; torch is needed only here,
never by the ``jaxnst`` package. Everything follows jaxnst's conventions (``jaxnst/losses.py``):

- weights from ``weights/vgg19.h5`` read with h5py: kernel = codebook[kernel_codes], the codes
  stored (kh, kw, in, out) and transposed to torch's (out, in, kh, kw); only the convolutions up
  to the deepest layer the loss reads are built;
- preprocessing: RGB in [0, 1] -> BGR on 0..255 minus (103.939, 116.779, 123.68);
- a conv name means its rectified output (conv + ReLU); max or avg 2x2 pooling;
- L_content = 1/2 sum((F - P)^2); E_l = sum((G - A)^2) / (4 N^2 M^2) with G = F F^T unnormalised;
  L_style = sum_l w_l E_l with w_l = 1/L; L_total = alpha L_content + beta L_style (+ tv L_tv).

The image being optimised is an RGB tensor in [0, 1], NCHW (1, 3, h, w) (optionally stored
channels_last). ``torch.optim.LBFGS`` has no projection, so ``run_lbfgs`` clips only at the end;
``run_adam`` can clamp every step.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = REPO / "weights" / "vgg19.h5"
VGG19_BLOCKS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
LAYER_NAMES = tuple(
    name
    for b, widths in enumerate(VGG19_BLOCKS, 1)
    for name in [f"conv{b}_{i}" for i in range(1, len(widths) + 1)] + [f"pool{b}"]
)
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
PAPER_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def read_vgg19(path: str | Path = DEFAULT_WEIGHTS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{conv name: (kernel (out, in, 3, 3), bias (out,))} float32 from jaxnst's quantized h5."""
    params = {}
    with h5py.File(path, "r") as f:
        for name in (n for n in LAYER_NAMES if n.startswith("conv")):
            codes = f[f"{name}/kernel_codes"][()]  # (kh, kw, in, out) uint8
            table = f[f"{name}/codebook"][()].astype(np.float32)  # (256,)
            kernel = table[codes].transpose(3, 2, 0, 1)  # -> (out, in, kh, kw)
            params[name] = (np.ascontiguousarray(kernel), f[f"{name}/bias"][()].astype(np.float32))
    return params


class VGG19(torch.nn.Module):
    """VGG19 trunk up to the deepest of ``outputs``: RGB [0, 1] (n, 3, h, w) -> {name: NCHW}."""

    def __init__(
        self,
        weights: dict[str, tuple[np.ndarray, np.ndarray]],
        outputs: Sequence[str],
        pooling: str = "max",
    ) -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be max or avg, not {pooling!r}")
        unknown = [n for n in outputs if n not in LAYER_NAMES]
        if unknown:
            raise ValueError(f"unknown layers {unknown}")
        last = max(LAYER_NAMES.index(n) for n in outputs)
        self.names = LAYER_NAMES[: last + 1]
        self.outputs = frozenset(outputs)
        self.pooling = pooling
        self.channels_last = False  # set by build_model
        self.convs = torch.nn.ModuleDict()
        for name in self.names:
            if name.startswith("conv"):
                kernel, bias = weights[name]
                conv = torch.nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(kernel))
                    conv.bias.copy_(torch.from_numpy(bias))
                conv.requires_grad_(False)
                self.convs[name] = conv
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        x = rgb.flip(1) * 255.0 - self.mean.to(rgb.dtype)  # RGB [0, 1] -> BGR 0..255 - mean
        feats = {}
        for name in self.names:
            if name.startswith("conv"):
                x = F.relu(self.convs[name](x))  # a conv name is the rectified response
            elif self.pooling == "avg":
                x = F.avg_pool2d(x, 2, 2)
            else:
                x = F.max_pool2d(x, 2, 2)
            if name in self.outputs:
                feats[name] = x
        return feats


def build_model(
    layers: Sequence[str],
    pooling: str = "max",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    weights: str | Path = DEFAULT_WEIGHTS,
) -> VGG19:
    """The truncated VGG19 on ``device`` in ``dtype``, in eval mode, weights frozen."""
    model = VGG19(read_vgg19(weights), layers, pooling).to(device=device, dtype=dtype).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model


def gram(feats: torch.Tensor) -> torch.Tensor:
    """G = F F^T for feats (1, N, h, w) -> (N, N), unnormalised, in float32."""
    f = feats.reshape(feats.shape[1], -1).float()
    return f @ f.T


def to_tensor(image: np.ndarray, device: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h, w, 3) RGB [0, 1] numpy -> (1, 3, h, w) tensor."""
    arr = np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1)[None])
    return torch.from_numpy(arr).to(device=device, dtype=dtype)


def to_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) tensor -> (h, w, 3) float32 numpy (not clipped)."""
    return x.detach().float().cpu().numpy()[0].transpose(1, 2, 0).copy()


@dataclass
class Objective:
    """jaxnst's L_total in PyTorch. Call ``set_targets`` once, then ``loss(x)``."""

    model: VGG19
    content_layers: tuple[str, ...] = ("conv4_2",)
    style_layers: tuple[str, ...] = PAPER_STYLE_LAYERS
    content_weight: float = 1.0  # alpha
    style_weight: float = 1e4  # beta
    tv_weight: float = 0.0
    layer_weights: tuple[float, ...] = ()  # w_l; default 1/L each
    content_targets: dict[str, torch.Tensor] = field(default_factory=dict)
    style_targets: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.style_layers)
        if not self.layer_weights:
            self.layer_weights = (1.0 / max(n, 1),) * n

    @property
    def device(self) -> torch.device:
        return self.model.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.mean.dtype

    def tensor(self, image: np.ndarray) -> torch.Tensor:
        """(h, w, 3) RGB [0, 1] numpy -> (1, 3, h, w) on the model's device, dtype and layout."""
        x = to_tensor(image, self.device, self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.model.channels_last else x

    @torch.no_grad()
    def set_targets(self, content: np.ndarray, style: np.ndarray) -> None:
        """P per content layer and A per style layer, from (h, w, 3) RGB [0, 1] images."""
        pc = self.model(self.tensor(content))
        self.content_targets = {k: pc[k].float() for k in self.content_layers}
        ps = self.model(self.tensor(style))
        self.style_targets = {k: gram(ps[k]) for k in self.style_layers}

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, parts) for x (1, 3, h, w) RGB; parts as jaxnst's parts_dict (unweighted)."""
        feats = self.model(x)
        zero = x.new_zeros((), dtype=torch.float32)
        content = zero
        for k in self.content_layers:
            content = content + 0.5 * torch.sum((feats[k].float() - self.content_targets[k]) ** 2)
        parts = {"content": content}
        style = zero
        for k, w in zip(self.style_layers, self.layer_weights, strict=True):
            _, n, h, wd = feats[k].shape
            e = torch.sum((gram(feats[k]) - self.style_targets[k]) ** 2) / (
                4.0 * n**2 * (h * wd) ** 2
            )
            parts[f"style/{k}"] = e
            style = style + w * e
        parts["style"] = style
        tv = zero
        if self.tv_weight > 0:
            im = x.float() * 255.0
            tv = torch.sum((im[:, :, 1:] - im[:, :, :-1]) ** 2)
            tv = tv + torch.sum((im[:, :, :, 1:] - im[:, :, :, :-1]) ** 2)
        parts["tv"] = tv
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        parts["total"] = total
        return total, parts

    def value_and_grad(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(loss, grad) at x, without touching x's .grad."""
        x = x.detach().requires_grad_(True)
        total, _ = self.loss(x)
        (g,) = torch.autograd.grad(total, x)
        return float(total.detach()), g


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class RunRecord:
    """Per iteration k = 0..K: loss at x_k, evaluations used to reach it, seconds since start."""

    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    closure_calls: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    final_loss_clipped: float = float("nan")
    image: np.ndarray | None = None  # (h, w, 3) clipped to [0, 1]
    stopped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "loss": self.loss,
            "evaluations": self.evaluations,
            "closure_calls": self.closure_calls,
            "seconds": self.seconds,
            "final_loss_clipped": self.final_loss_clipped,
            "stopped": self.stopped,
        }


def warmup(obj: Objective, x0: np.ndarray, repeats: int = 2) -> float:
    """Run forward+backward a few times (cuDNN autotuning, allocator); return the seconds."""
    t0 = time.perf_counter()
    for _ in range(repeats):
        obj.value_and_grad(obj.tensor(x0))
    _sync(obj.device)
    return time.perf_counter() - t0


def _finish(obj: Objective, x: torch.Tensor, rec: RunRecord) -> RunRecord:
    with torch.no_grad():
        clipped = x.detach().clamp(0.0, 1.0)
        rec.final_loss_clipped = float(obj.loss(clipped)[0])
    rec.image = to_image(clipped)
    return rec


def run_lbfgs(
    obj: Objective,
    x0: np.ndarray,
    iters: int,
    history_size: int = 100,
    max_ls: int = 25,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
) -> RunRecord:
    """``torch.optim.LBFGS(lr=1, line_search_fn="strong_wolfe")`` from x0 (h, w, 3), clip at end.

    One ``.step`` per iteration (``max_iter=1``), so the loss of every iterate is recorded. The
    optimiser's state (memory, ``n_iter``, first-step scaling) carries across ``.step`` calls, so
    this is the same algorithm as one call with ``max_iter=iters`` and no evaluation cap. Each
    ``.step`` starts by calling the closure at the current point, which the previous line search
    has already evaluated (bit-identically: same ``x_init + t d``); a small cache answers those
    calls, so ``evaluations`` counts forward+backward passes actually run and ``closure_calls``
    counts every call. Stops early if an iteration leaves x unchanged (line search failed).
    """
    device = obj.device
    x = obj.tensor(x0).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=1,
        max_eval=1 + max_ls,
        history_size=history_size,
        line_search_fn="strong_wolfe",
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
    )
    cache: list[tuple[torch.Tensor, float, torch.Tensor]] = []
    counts = {"evals": 0, "calls": 0}

    def closure() -> torch.Tensor:
        counts["calls"] += 1
        for cx, cf, cg in cache:
            if torch.equal(cx, x):
                x.grad = cg.clone()
                return torch.tensor(cf)
        opt.zero_grad(set_to_none=False)
        total, _ = obj.loss(x)
        total.backward()
        counts["evals"] += 1
        value = float(total.detach())
        cache.append((x.detach().clone(), value, x.grad.detach().clone()))
        return torch.tensor(value)

    rec = RunRecord()
    _sync(device)
    t0 = time.perf_counter()

    def record(k: int) -> None:
        value = float(closure())  # a cache hit, except at x0: the line search evaluated this point
        counts["calls"] -= 1
        _sync(device)
        rec.iteration.append(k)
        rec.loss.append(value)
        rec.evaluations.append(counts["evals"])
        rec.closure_calls.append(counts["calls"])
        rec.seconds.append(time.perf_counter() - t0)

    record(0)
    for k in range(1, iters + 1):
        before = x.detach().clone()
        # keep only the current point's entry: the next line search evaluates fresh points
        cache[:] = [c for c in cache if torch.equal(c[0], before)]
        opt.step(closure)
        if torch.equal(before, x.detach()):
            rec.stopped = f"iteration {k}: x did not move (line search failed or converged)"
            break
        record(k)
    return _finish(obj, x, rec)


def run_adam(
    obj: Objective, x0: np.ndarray, iters: int, lr: float, project: bool = True
) -> RunRecord:
    """``torch.optim.Adam`` from x0 (h, w, 3), lr in [0, 1] pixel units; clamp each step if asked.

    Record k is the loss at x_k (before step k+1), as jaxnst's Adam history.
    """
    device = obj.device
    x = obj.tensor(x0).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    rec = RunRecord()
    _sync(device)
    t0 = time.perf_counter()
    for k in range(iters):
        opt.zero_grad(set_to_none=False)
        total, _ = obj.loss(x)
        total.backward()
        opt.step()
        if project:
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        value = float(total.detach())
        _sync(device)
        rec.iteration.append(k)
        rec.loss.append(value)
        rec.evaluations.append(k + 1)
        rec.closure_calls.append(k + 1)
        rec.seconds.append(time.perf_counter() - t0)
    return _finish(obj, x, rec)


def demo_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut (content) and hubble_deep_field (style), long side ``size``."""
    from skimage import data, transform

    def fit(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        s = size / max(h, w)
        out = transform.resize(
            img, (max(1, round(h * s)), max(1, round(w * s))), anti_aliasing=True
        )
        return out.astype(np.float32)

    return fit(data.astronaut()), fit(data.hubble_deep_field())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", action="store_true", help="skimage astronaut + hubble")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if not args.demo:
        parser.error("only --demo is built in; compare_lbfgs.py takes image files")
    content, style = demo_images(args.size)
    layers = tuple(dict.fromkeys(("conv4_2", *PAPER_STYLE_LAYERS)))
    model = build_model(layers, device=args.device, channels_last=args.channels_last)
    obj = Objective(model)
    obj.set_targets(content, style)
    x0 = np.random.default_rng(0).uniform(size=content.shape).astype(np.float32)
    print(f"loss at noise: {obj.value_and_grad(obj.tensor(x0))[0]:.6g}")
    rec = run_lbfgs(obj, x0, args.iterations)
    print(
        f"L-BFGS {rec.iteration[-1]} iterations, {rec.evaluations[-1]} evaluations, "
        f"{rec.seconds[-1]:.2f} s: loss {rec.loss[-1]:.6g}, clipped {rec.final_loss_clipped:.6g}"
    )


if __name__ == "__main__":
    main()
