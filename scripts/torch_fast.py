"""Training throughput of a fast style network: a PyTorch peer beside jaxnst's training step.

    python scripts/torch_fast.py                      # 256 px crops, batch 4: images/s of each
    python scripts/torch_fast.py --check              # first: same parameters, same numbers?
    python scripts/torch_fast.py --size 128 --steps 2 --only torch
    python scripts/torch_fast.py --network-only        # the network alone (loss: mean output)

One training step of Johnson et al. (2016): the transformation network (``jaxnst.transform``)
stylises a batch of photo crops (``jaxnst.data``, scikit-image's bundled photographs); each
output's loss is jaxnst's Gatys objective: content at conv4_2 against the features of the photo
it came from (computed inside the step), style Grams at conv1_1 .. conv5_1 against one style
image's (computed once), alpha = 1, beta = 1e3 (jaxnst's defaults); the losses are averaged over
the batch and Adam (lr 1e-3, Johnson's) updates the network. Throughput is batch size / median
seconds of a step after a warm-up step (JAX: after compiling); loading the batches is timed
apart. Each framework runs in its own subprocess, one after the other.

The PyTorch side is the same network (``TransformNet``, parameters importable from jaxnst's) on
``scripts/torch_nst.py``'s VGG19 and weights, with a batched form of its loss. ``--check`` loads
one set of parameters into both and compares the outputs, the loss and a gradient at 64 px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
ALPHA, BETA, LR = 1.0, 1e3, 1e-3


def problem(size: int, batch: int, steps: int):
    """The style image (size x size, float32) and the batches of steps 0 .. steps - 1."""
    from skimage import data as skdata

    from jaxnst.data import PhotoBatches, write_demo_photos
    from jaxnst.image import load_image, resize

    style = resize(load_image(skdata.hubble_deep_field()), (size, size))  # jaxnst demo's style
    with tempfile.TemporaryDirectory() as tmp:
        batches = PhotoBatches(write_demo_photos(tmp), size, batch, seed=0)
        t0 = time.perf_counter()
        photos = [batches.batch(step) for step in range(steps)]
        load_s = (time.perf_counter() - t0) / steps
    return style, photos, load_s


# ================================================================================ PyTorch peer
def torch_modules():
    """TransformNet and the batched loss, defined when torch is imported (children only)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    class TransformNet(torch.nn.Module):
        """``jaxnst.transform.TransformNet`` in PyTorch, NCHW, parameters named alike."""

        def __init__(self) -> None:
            super().__init__()
            spec = [("conv1", 3, 32, 9), ("conv2", 32, 64, 3), ("conv3", 64, 128, 3)]
            spec += [(f"res{i}_{ab}", 128, 128, 3) for i in range(1, 6) for ab in "ab"]
            spec += [("up1", 128, 64, 3), ("up2", 64, 32, 3), ("conv_out", 32, 3, 9)]
            self.convs = torch.nn.ModuleDict(
                {n: torch.nn.Conv2d(i, o, k, bias=n == "conv_out") for n, i, o, k in spec}
            )
            self.norms = torch.nn.ModuleDict(
                {n: torch.nn.InstanceNorm2d(o, affine=True) for n, _, o, _ in spec[:-1]}
            )  # eps 1e-5, biased variance: as jaxnst's

        def conv(self, x, name, stride=1):
            k = self.convs[name].kernel_size[0] // 2
            return F.conv2d(
                F.pad(x, (k, k, k, k), mode="reflect"),
                self.convs[name].weight,
                self.convs[name].bias,
                stride,
            )

        def cnr(self, x, name, stride=1):
            return F.relu(self.norms[name](self.conv(x, name, stride)))

        def forward(self, x):
            sizes = [x.shape[2:]]
            x = self.cnr(x, "conv1")
            x = self.cnr(x, "conv2", 2)
            sizes.append(x.shape[2:])
            x = self.cnr(x, "conv3", 2)
            for i in range(1, 6):
                x = x + self.norms[f"res{i}_b"](self.conv(self.cnr(x, f"res{i}_a"), f"res{i}_b"))
            for name, (h, w) in (("up1", sizes[1]), ("up2", sizes[0])):
                x = self.cnr(F.interpolate(x, scale_factor=2, mode="nearest")[:, :, :h, :w], name)
            return torch.sigmoid(self.conv(x, "conv_out"))

        @torch.no_grad()
        def load_jax(self, params) -> None:
            """Copy jaxnst.transform parameters (HWIO kernels) into this network."""
            for name, conv in self.convs.items():
                conv.weight.copy_(tensor(params[name]["kernel"]).permute(3, 2, 0, 1))
                if conv.bias is not None:
                    conv.bias.copy_(tensor(params[name]["bias"]))
            for name, norm in self.norms.items():
                norm.weight.copy_(tensor(params[f"{name}_norm"]["scale"]))
                norm.bias.copy_(tensor(params[f"{name}_norm"]["bias"]))

    def tensor(a):
        return torch.from_numpy(np.array(a))  # a writable copy

    def gram(f):
        """(b, N, h, w) -> (b, N, N), unnormalised."""
        f = f.flatten(2)
        return f @ f.transpose(1, 2)

    def batch_loss(vgg, vgg_content, out, photos, style_grams):
        """Mean over the batch of alpha L_content + beta L_style (jaxnst's formulas), NCHW."""
        with torch.no_grad():
            target = vgg_content(photos)[CONTENT_LAYER]
        feats = vgg(out)
        loss = ALPHA * 0.5 * ((feats[CONTENT_LAYER] - target) ** 2).sum(dim=(1, 2, 3))
        for layer in STYLE_LAYERS:
            _, n, h, w = feats[layer].shape
            e = ((gram(feats[layer]) - style_grams[layer]) ** 2).sum(dim=(1, 2))
            loss = loss + BETA / len(STYLE_LAYERS) * e / (4.0 * n**2 * (h * w) ** 2)
        return loss.mean()

    return TransformNet, gram, batch_loss


def torch_setup(style: np.ndarray):
    import torch
    import torch_nst

    TransformNet, gram, batch_loss = torch_modules()
    vgg = torch_nst.build_model((CONTENT_LAYER, *STYLE_LAYERS))
    vgg_content = torch_nst.build_model((CONTENT_LAYER,))
    with torch.no_grad():
        feats = vgg(torch_nst.to_tensor(style, "cpu"))
        style_grams = {k: gram(feats[k]) for k in STYLE_LAYERS}
    net = TransformNet()
    loss_fn = lambda out, photos: batch_loss(vgg, vgg_content, out, photos, style_grams)  # noqa: E731
    return net, loss_fn


def nchw(photos: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(photos.transpose(0, 3, 1, 2)))


def run_torch(size: int, batch: int, steps: int, network_only: bool = False) -> dict:
    import jax
    import torch

    from jaxnst.transform import init_transform

    style, photos, load_s = problem(size, batch, steps + 1)
    net, loss_fn = torch_setup(style)
    if network_only:
        loss_fn = lambda out, photos: out.mean()  # noqa: E731
    net.load_jax(init_transform(jax.random.key(0)))  # the JAX side's start: comparable losses
    opt = torch.optim.Adam(net.parameters(), lr=LR)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), x)
        loss.backward()
        opt.step()
        return float(loss.detach())

    t0 = time.perf_counter()
    losses = [step(nchw(photos[0]))]
    first = time.perf_counter() - t0
    times = []
    for x in photos[1:]:
        t0 = time.perf_counter()
        losses.append(step(nchw(x)))
        times.append(time.perf_counter() - t0)
    return {
        "name": f"PyTorch {torch.__version__}",
        "first_s": first,
        "times": times,
        "losses": losses,
        "load_s": load_s,
        "threads": torch.get_num_threads(),
    }


# ================================================================================ JAX side
# jaxnst's own training step (jaxnst.train.train_step): the program `jaxnst train` runs.
def jax_setup(size: int, width: int = 32):
    from jaxnst.config import LossWeights
    from jaxnst.losses import Objective
    from jaxnst.trainconfig import TrainConfig

    cfg = TrainConfig(crop=size, width=width, content_layers=(CONTENT_LAYER,),
                      style_layers=STYLE_LAYERS, content_weight=ALPHA, style_weight=BETA,
                      learning_rate=LR)  # fmt: skip
    objective = Objective.from_config(cfg.style_config())
    return cfg, objective, LossWeights.from_config(cfg.style_config())


def make_network_only_step():
    """The network's forward and backward alone (loss: the mean output), with Adam."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxnst.transform import apply_transform

    tx = optax.adam(LR)

    def step(tparams, opt_state, photos):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(apply_transform(p, photos)))(tparams)
        updates, opt_state = tx.update(grads, opt_state, tparams)
        return optax.apply_updates(tparams, updates), opt_state, loss

    return tx, jax.jit(step, donate_argnums=(0, 1))


def run_jax(size: int, batch: int, steps: int, network_only: bool = False) -> dict:
    import jax

    from jaxnst.engine import step_params
    from jaxnst.train import ADAM, style_targets, train_step
    from jaxnst.transform import init_transform
    from jaxnst.weights import load_vgg19

    style, photos, load_s = problem(size, batch, steps + 1)
    cfg, objective, weights = jax_setup(size)
    tparams = init_transform(jax.random.key(0))
    if network_only:
        tx, net_step = make_network_only_step()
        opt_state = tx.init(tparams)
        step = lambda p, o, x: net_step(p, o, x)  # noqa: E731
    else:
        vgg_params = load_vgg19()
        _, grams = style_targets(vgg_params, [style], cfg, objective)
        vgg_params = step_params(vgg_params, objective)  # as Trainer does
        program = train_step(objective, cfg.precision, False, None)
        opt_state = ADAM.init(tparams)

        def step(p, o, x):
            p, o, parts, _ = program(p, o, x, vgg_params, grams, weights)
            return p, o, parts.total.mean()

    t0 = time.perf_counter()
    tparams, opt_state, loss = step(tparams, opt_state, photos[0])
    losses = [float(loss)]
    first = time.perf_counter() - t0
    times = []
    for x in photos[1:]:
        t0 = time.perf_counter()
        tparams, opt_state, loss = step(tparams, opt_state, x)
        losses.append(float(loss))  # waits for the step
        times.append(time.perf_counter() - t0)
    return {
        "name": f"jaxnst (JAX {jax.__version__})",
        "first_s": first,
        "times": times,
        "losses": losses,
        "load_s": load_s,
    }


# ================================================================================ --check
def check(size: int = 32, batch: int = 2) -> dict:
    """One set of parameters in both, in float64: do the loss and the gradients agree?"""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import torch
    import torch_nst

    from jaxnst import train
    from jaxnst.losses import style_grams
    from jaxnst.transform import init_transform
    from jaxnst.weights import load_vgg19

    f64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)  # noqa: E731
    style, photos, _ = problem(size, batch, 1)
    cfg, objective, weights = jax_setup(size)
    vgg_params = f64(load_vgg19())
    grams = style_grams(vgg_params, jnp.asarray(style, jnp.float64), objective)  # size x size
    tparams = f64(init_transform(jax.random.key(1)))
    loss_j, grads_j = jax.value_and_grad(lambda p: train.batch_loss(
        p, jnp.asarray(photos[0], jnp.float64), vgg_params, grams, weights, objective)[0]
    )(tparams)  # fmt: skip

    torch.set_default_dtype(torch.float64)
    TransformNet, gram, batch_loss = torch_modules()
    vgg = torch_nst.build_model((CONTENT_LAYER, *STYLE_LAYERS), dtype=torch.float64)
    vgg_content = torch_nst.build_model((CONTENT_LAYER,), dtype=torch.float64)
    with torch.no_grad():
        feats = vgg(torch_nst.to_tensor(style, "cpu", torch.float64))
    net = TransformNet()
    net.load_jax(jax.tree.map(np.asarray, tparams))
    x = nchw(photos[0].astype(np.float64))
    loss_t = batch_loss(vgg, vgg_content, net(x), x, {k: gram(feats[k]) for k in STYLE_LAYERS})
    loss_t.backward()
    out = {"size": size, "batch": batch, "loss_rel": float(loss_j) / loss_t.item() - 1}
    for name, conv in net.convs.items():
        g_t = conv.weight.grad.numpy().transpose(2, 3, 1, 0)
        g_j = np.asarray(grads_j[name]["kernel"])
        out[name] = float(np.abs(g_t - g_j).max() / np.abs(g_j).max())
    return out


# ================================================================================ driver
def child(which: str, size: int, batch: int, steps: int, network_only: bool = False) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            which,
            "--size",
            str(size),
            "--batch",
            str(batch),
            "--steps",
            str(steps),
            *(["--network-only"] if network_only else []),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"name": which, "error": " / ".join(tail)}
    return {"which": which, **json.loads(lines[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--only", choices=("jax", "torch"), action="append")
    parser.add_argument(
        "--network-only", action="store_true", help="time the network alone (loss: mean output)"
    )
    parser.add_argument("--check", action="store_true", help="first compare the two in float64")
    parser.add_argument("--child", choices=("jax", "torch", "check"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.child == "check":
        print(json.dumps(check()))
        return 0
    if args.child:
        run = run_jax if args.child == "jax" else run_torch
        print(json.dumps(run(args.size, args.batch, args.steps, args.network_only)))
        return 0
    if args.check:
        r = child("check", 0, 0, 0)
        if "error" in r:
            print(f"check failed: {r['error']}")
            return 1
        worst = max(v for k, v in r.items() if k not in ("which", "size", "batch", "loss_rel"))
        print(
            f"check, float64, {r['size']} px, batch {r['batch']}: loss relative difference "
            f"{r['loss_rel']:.1e}, kernel gradients (max |diff| / max |grad|) at most {worst:.1e}"
            " (1.5e-8: w_l = 1/5 rounded to float32 in LossWeights)"
        )
    load0 = os.getloadavg()[0]
    which = args.only or ("jax", "torch")
    rows = [child(w, args.size, args.batch, args.steps, args.network_only) for w in which]
    load1 = os.getloadavg()[0]
    print(
        f"\nOne training step{' of the network alone' if args.network_only else ''}, "
        f"{args.size} px crops, batch {args.batch}, on "
        f"{platform.processor() or platform.machine()} with {os.cpu_count()} cores; "
        f"load average {load0:.1f} before, {load1:.1f} after\n"
    )
    print("| | step (median) | steps | images/s | first step | loss first -> last |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | error: {r['error']} | | | | |")
            continue
        med = statistics.median(r["times"])
        r["images_per_s"] = args.batch / med
        print(
            f"| {r['name']} | {med:.2f} s | {len(r['times'])} | {r['images_per_s']:.3f} | "
            f"{r['first_s']:.1f} s | {r['losses'][0]:.4g} -> {r['losses'][-1]:.4g} |"
        )
    ok = {r["which"]: r for r in rows if "images_per_s" in r}
    if len(ok) == 2:
        ratio = ok["jax"]["images_per_s"] / ok["torch"]["images_per_s"]
        print(f"\njaxnst / PyTorch images/s: {ratio:.2f}")
    if ok:
        load_s = next(iter(ok.values()))["load_s"]
        print(f"loading a batch (decode, resize, crop; one thread): {load_s:.3f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "load": [load0, load1],
                    "rows": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
