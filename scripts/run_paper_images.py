"""Stylise the paper's images and report how far each optimiser gets.

    python scripts/run_paper_images.py --sizes 256 512 --out out/paper

Tübingen (``../shared/images/tubingen.jpg``) in the styles of The Starry Night and The Scream, with
L-BFGS and Adam from white noise (or --init). Saves every output image and a loss-curve plot, and
prints per run the total loss after given iterations relative to the start, the number of
iterations L-BFGS needs to cut the total loss 100x, evaluations and seconds. --json writes it all.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxnst import StyleConfig, save_image, stylize  # noqa: E402

IMAGES = ROOT.parent / "shared" / "images"


def parse_options(items: list[str]) -> dict[str, object]:
    """--option NAME=VALUE pairs -> {NAME: value}, VALUE read as a Python literal if it is one."""
    out: dict[str, object] = {}
    for item in items:
        name, value = item.split("=", 1)
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def first_below(history: dict[str, np.ndarray], factor: float) -> int | None:
    """The first iteration at which the total loss is below its start / factor."""
    total = history["total"]
    hit = np.nonzero(total <= total[0] / factor)[0]
    return int(history["iteration"][hit[0]]) if hit.size else None


def at_iteration(history: dict[str, np.ndarray], k: int) -> float | None:
    idx = np.nonzero(history["iteration"] <= k)[0]
    return float(history["total"][idx[-1]]) if idx.size else None


def plot_curves(runs: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        ax.semilogy(run["iteration"], run["total"], label=run["label"])
    ax.set_xlabel("iteration")
    ax.set_ylabel("total loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--styles", nargs="+", default=["starry_night", "the_scream"])
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--init", default="noise")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "paper")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="extra StyleConfig option, NAME=VALUE (Python literal)",
    )
    args = parser.parse_args()
    content = IMAGES / "tubingen.jpg"
    if not content.exists():
        sys.exit(f"{content} not found: the paper's images live in ../shared/images/")
    args.out.mkdir(parents=True, exist_ok=True)
    extra = parse_options(args.option)
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    rows, curves = [], []
    for size in args.sizes:
        for style in args.styles:
            for optimizer in args.optimizers:
                cfg = StyleConfig(  # one scale, as the paper and the README's figures
                    size=size, optimizer=optimizer, iterations=args.iterations, init=args.init,
                    auto_scales=False,
                ).replace(**extra)  # fmt: skip
                t0 = time.perf_counter()
                result = stylize(content, IMAGES / f"{style}.jpg", cfg)
                wall = time.perf_counter() - t0
                name = f"tubingen_{style}_{optimizer}_{size}"
                save_image(args.out / f"{name}.png", result.image)
                h = result.history[0]
                row = {
                    "size": size,
                    "style": style,
                    "optimizer": optimizer,
                    "start": float(h["total"][0]),
                    "final": result.final_loss[0]["total"],
                    "iterations": int(result.iterations[0]),
                    "evaluations": int(result.evaluations[0]),
                    "iters_to_100x": first_below(h, 100.0),
                    "seconds_run": result.timings["run"],
                    "seconds_compile": result.timings["compile"],
                    "seconds_wall": wall,
                    "content_final": result.final_loss[0]["content"],
                    "style_final": result.final_loss[0]["style"],
                }
                for k in args.checkpoints:
                    v = at_iteration(h, k)
                    row[f"ratio@{k}"] = None if v is None else v / row["start"]
                rows.append(row)
                curves.append({"label": name, "iteration": h["iteration"], "total": h["total"]})
                print(
                    f"{name}: start {row['start']:.3e} final {row['final']:.3e} "
                    f"(x{row['start'] / row['final']:.0f} lower) 100x at it "
                    f"{row['iters_to_100x']}, {row['evaluations']} evals, "
                    f"{row['seconds_run']:.1f}s run + {row['seconds_compile']:.1f}s compile",
                    flush=True,
                )
    plot_curves(curves, args.out / "loss_curves.png")
    head = ["size", "style", "optimizer", "iters_to_100x", "evaluations", "seconds_run"]
    head += [f"ratio@{k}" for k in args.checkpoints]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        cells = [
            f"{row[k]:.2e}"
            if isinstance(row[k], float) and k.startswith("ratio")
            else f"{row[k]:.1f}"
            if isinstance(row[k], float)
            else str(row[k])
            for k in head
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
