"""Fast style networks against the optimisation they stand in for, side by side in one run.

    jaxnst train --demo -o demo_net.npz                 # or any trained network
    python scripts/bench_fast.py --model demo_net.npz   # 512 px, 500 L-BFGS iterations
    python scripts/bench_fast.py --model demo_net.npz --speed-iterations 20 --iterations 100

Three measurements (docs/benchmarks.md, "Fast networks"), on the same machine in one run:

1. **Speed**: stylising one photo of ``--size`` px with the network (median of ``--repeats``
   calls after the first, which compiles) against ``jaxnst.stylize`` of the same photo with the
   same objective (the network's ``TrainConfig.style_config()`` at that size: L-BFGS from noise),
   500 iterations' run time without compilation (``--speed-iterations`` fewer: the time per
   iteration x 500, marked); and both with compilation.
2. **Quality** on photos the network never saw (``--photos``; default: scikit-image's astronaut,
   which ``jaxnst train --demo`` holds out), at the size the network was trained for (its crop;
   ``--quality-size``): the objective's weighted content and style terms of the network's
   output, with the photo as the content, against those of the optimisation after 50, 100 and
   ``--iterations`` L-BFGS iterations (ratio network / optimisation), and the first iteration
   whose total loss is as low as the network's. ``--figure`` writes photo | network |
   optimisation side by side (at twice that size).
3. **Training throughput** (images/s) of jaxnst's training step against the PyTorch peer, the
   same network and loss (``scripts/torch_fast.py``, each in its own subprocess; ``--steps``
   timed steps after the first, ``--crop`` px, batch ``--batch``; ``--no-peer`` skips it).

The style defaults to the demo's (scikit-image's Hubble deep field); give ``--style`` for a
network trained on another. Prints a Markdown table with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def machine() -> str:
    """The CPU model (or the accelerator), core count and JAX version, in one line."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    where = cpu if dev.platform == "cpu" else f"{dev.device_kind} ({cpu} host)"
    return f"{where}, {os.cpu_count()} cores, JAX {jax.__version__} on {dev.platform}"


def photos(names: list[str]) -> dict[str, np.ndarray]:
    from skimage import data

    from jaxnst.image import load_image

    out = {}
    for name in names:
        out[Path(name).stem] = load_image(
            getattr(data, name)() if hasattr(data, name) else name, name=name
        )
    return out


def network_loss(net, image, style, cfg) -> dict[str, float]:  # noqa: ANN001
    """The objective's parts (weighted as the total sums them) of the network's output."""
    import jax.numpy as jnp

    from jaxnst import engine
    from jaxnst.apply import apply_network
    from jaxnst.losses import Objective, parts_dict
    from jaxnst.problem import make_problem

    problem = make_problem(image, style, cfg)
    out = apply_network(net, problem.content)
    objective = Objective.from_config(cfg)
    weights = engine.variant_weights(cfg, 1, {})
    parts = engine.batched_loss(objective, cfg.precision)(
        jnp.asarray(out[None]), problem.params, problem.targets, weights
    )
    cols = {k: float(np.asarray(v)[0]) for k, v in parts_dict(parts, objective).items()}
    return weighted(cols, cfg)


def weighted(cols: dict[str, float], cfg) -> dict[str, float]:
    return {"total": cols["total"], "content": cfg.content_weight * cols["content"],
            "style": cfg.style_weight * cols["style"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model file (jaxnst train)")
    parser.add_argument(
        "--style",
        default="hubble_deep_field",
        help="the network's style image (a path, or a scikit-image name)",
    )
    parser.add_argument(
        "--photos",
        nargs="+",
        default=["astronaut"],
        help="held-out photos (paths or scikit-image names); the first is timed",
    )
    parser.add_argument("--size", type=int, default=512, help="speed: long side of the photo")
    parser.add_argument("--speed-iterations", type=int, default=500,
                        help="speed: L-BFGS iterations run (fewer than 500: the time of 500 is "
                        "extrapolated per iteration)")  # fmt: skip
    parser.add_argument(
        "--quality-size",
        type=int,
        default=0,
        help="quality: long side of the photos (0: the network's crop)",
    )
    parser.add_argument("--iterations", type=int, default=500, help="quality: L-BFGS iterations")
    parser.add_argument("--repeats", type=int, default=5, help="timed network calls")
    parser.add_argument("--crop", type=int, default=256, help="throughput: crop size")
    parser.add_argument("--batch", type=int, default=4, help="throughput: batch size")
    parser.add_argument("--steps", type=int, default=3, help="throughput: timed steps")
    parser.add_argument("--no-peer", action="store_true", help="skip the throughput rows")
    parser.add_argument("--figure", type=Path, help="write photo | network | optimisation here")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import jaxnst
    from jaxnst.apply import apply_network
    from jaxnst.image import fit_size, resize, save_image

    load0 = os.getloadavg()
    net = jaxnst.load_network(args.model)
    style = photos([args.style])[Path(args.style).stem]
    base = net.config.style_config().replace(
        optimizer="lbfgs", init="noise", chunk=50, auto_scales=False
    )  # one scale: per-iteration time
    held_out = photos(args.photos)
    r = {"machine": machine(), "model": args.model, "load": [load0[0]]}

    # 1. speed: one photo at --size, the network against L-BFGS of the same objective
    name, full = next(iter(held_out.items()))
    image = resize(full, fit_size(full.shape[:2], args.size))
    t0 = time.perf_counter()
    apply_network(net, image)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        apply_network(net, image)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run = jaxnst.stylize(
        image, style, base.replace(size=args.size, iterations=args.speed_iterations)
    )
    opt_total = time.perf_counter() - t0
    per_iteration = run.timings["run"] / int(run.iterations[0])
    r["speed"] = {"photo": name, "hw": list(image.shape[:2]),
                  "network_s": statistics.median(times), "network_first_s": first,
                  "iterations_run": int(run.iterations[0]), "run_s": run.timings["run"],
                  "total_s": opt_total, "per_iteration_s": per_iteration,
                  "run_500_s": per_iteration * 500}  # fmt: skip

    # 2. quality: each held-out photo at the size the network was trained for
    qsize = args.quality_size or net.config.crop
    cfg = base.replace(size=qsize, iterations=args.iterations)
    r["quality"] = {"size": qsize, "iterations": args.iterations, "photos": {}}
    for name, full in held_out.items():
        image = resize(full, fit_size(full.shape[:2], qsize))
        result = jaxnst.stylize(image, style, cfg)
        hist = result.history[0]
        at = {}
        for k in (50, 100, args.iterations):
            if k <= len(hist["total"]):
                row = {c: float(hist[c][k - 1]) for c in ("total", "content", "style")}
                at[k] = weighted(row, cfg) | {"total": row["total"]}
        mine = network_loss(net, image, style, cfg)
        reached = np.nonzero(np.asarray(hist["total"]) <= mine["total"])[0]
        r["quality"]["photos"][name] = {
            "hw": list(image.shape[:2]), "network_loss": mine, "optimisation_loss": at,
            "matches_iteration": int(reached[0]) + 1 if len(reached) else None,
        }  # fmt: skip
        if args.figure and name == next(iter(held_out)):
            side = resize(full, fit_size(full.shape[:2], 2 * qsize))
            big = [side, apply_network(net, side),
                   resize(result.image.astype(np.float32) / 255, side.shape[:2])]  # fmt: skip
            save_image(args.figure, np.concatenate(big, axis=1))

    # 3. training throughput against the PyTorch peer
    if not args.no_peer:
        import torch_fast

        r["throughput"] = {
            which: torch_fast.child(which, args.crop, args.batch, args.steps)
            for which in ("jax", "torch")
        }
    r["load"].append(os.getloadavg()[0])
    report(r, args)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    return 0


def report(r: dict, args: argparse.Namespace) -> None:
    print(f"\n{r['machine']}; load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after")
    print(f"network: {r['model']}; optimisation: jaxnst.stylize, L-BFGS from noise, the "
          "network's objective at the photo's size\n")  # fmt: skip
    sp = r["speed"]
    h, w = sp["hw"]
    told = "" if sp["iterations_run"] >= 500 else f" (from {sp['iterations_run']} run)"
    print("| stylising one photo | size | time | network speed-up |")
    print("| --- | --- | --- | --- |")
    print(f"| network (median of {args.repeats}, compiled) | {w}x{h} | "
          f"{sp['network_s'] * 1e3:.0f} ms | |")  # fmt: skip
    print(f"| 500 L-BFGS iterations{told} | {w}x{h} | {sp['run_500_s']:.1f} s | "
          f"{sp['run_500_s'] / sp['network_s']:.0f}x |")  # fmt: skip
    print(f"| with compiling: network, {sp['iterations_run']} iterations | {w}x{h} | "
          f"{sp['network_first_s']:.1f} s, {sp['total_s']:.1f} s | |")  # fmt: skip
    q = r["quality"]
    n = q["iterations"]
    print(f"\nQuality at {q['size']} px (weighted terms of the objective; L-BFGS after 50, 100"
          f" and {n} iterations):\n")  # fmt: skip
    print(f"| photo | term | network | L-BFGS 50 | L-BFGS 100 | L-BFGS {n} | network / {n} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, p in q["photos"].items():
        last = p["optimisation_loss"].get(n, {})
        for term in ("total", "content", "style"):
            cells = [f"{p['optimisation_loss'][k][term]:.3e}" if k in p["optimisation_loss"]
                     else "" for k in (50, 100, n)]  # fmt: skip
            ratio = p["network_loss"][term] / last[term] if last.get(term) else float("nan")
            print(f"| {name} | {term} | {p['network_loss'][term]:.3e} | {' | '.join(cells)} | "
                  f"{ratio:.2f} |")  # fmt: skip
        it = p["matches_iteration"]
        print(f"| {name} | the network's total reached at L-BFGS iteration | "
              f"{it if it else 'not within the run'} | | | | |")  # fmt: skip
    if "throughput" in r:
        print(f"\nTraining throughput, {args.crop} px crops, batch {args.batch}, width 32:\n")
        print("| | step (median) | images/s |")
        print("| --- | --- | --- |")
        speeds = {}
        for which, t in r["throughput"].items():
            if "error" in t:
                print(f"| {which} | error: {t['error']} | |")
                continue
            med = statistics.median(t["times"])
            speeds[which] = args.batch / med
            print(f"| {t['name']} | {med:.2f} s | {speeds[which]:.3f} |")
        if len(speeds) == 2:
            print(f"\njaxnst / PyTorch images/s: {speeds['jax'] / speeds['torch']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
