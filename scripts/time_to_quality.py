"""Time to a good picture: how soon each path reaches the loss of a plain 500-iteration run.

    python scripts/time_to_quality.py --size 512 --out docs/images

Side by side in one process, Tübingen with The Starry Night at ``--size``:

- plain: 500 L-BFGS iterations from noise at the full size (``auto_scales=False``), the
  reference;
- default: what ``jaxnst photo.jpg style.jpg`` does (the automatic coarse-to-fine plan);
- content start: ``--init content``, one scale, 300 iterations.

Every path is timed without compilation (reported apart), and its loss at the full size is
logged after every few step calls: the same function for all (the normalised objective at the
full size). Printed: the final loss of each path's saved image relative to the plain run's,
the wall time each path needs to reach the plain run's final loss (and its 150-iteration
loss) relative to the plain run's, the evaluations at each size, and the pictures with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxnst import Hooks, StyleConfig, save_image  # noqa: E402
from jaxnst.stylize import run_scales  # noqa: E402
from jaxnst.weights import load_vgg19  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"
PATHS = {
    "plain": {"auto_scales": False},
    "default": {},
    "content start": {"init": "content", "auto_scales": False, "iterations": 300},
}


class Clock(Hooks):
    """The loss at the full size against run time (compilation excluded), every few calls."""

    def __init__(self, size: int) -> None:
        self.size, self.log, self.run_s, self.compile_s = size, [], 0.0, 0.0
        self._t = 0.0

    def compiled(self, run, seconds):
        self.compile_s += seconds

    def calls(self, run):
        self._t = time.perf_counter()
        return 5

    def advanced(self, run, scales):
        self.run_s += time.perf_counter() - self._t
        if run.cfg.size == self.size and run.rows[0]:
            row = run.rows[0][-1]
            self.log.append((self.run_s, float(row["total"]), int(row["iteration"])))


def crossing(log: list, target: float) -> float | None:
    """The first run time at which the logged loss is at or below ``target``."""
    return next((t for t, loss, _ in log if loss <= target), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--style", default="starry_night")
    ap.add_argument("--paths", nargs="+", default=list(PATHS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    params = load_vgg19()
    content, style = SHARED / "tubingen.jpg", SHARED / f"{args.style}.jpg"
    results = {}
    for name in args.paths:
        cfg = StyleConfig(size=args.size, **PATHS[name])
        clock = Clock(args.size)
        t0 = time.perf_counter()
        outcome = run_scales(content, style, cfg, params=params, hooks=clock)
        result = outcome.result()
        results[name] = {
            "final_loss": result.final_loss[0]["total"],
            "run_s": clock.run_s,
            "compile_s": clock.compile_s,
            "wall_s": time.perf_counter() - t0,
            "scales": list(cfg.scale_list()),
            "iterations": list(cfg.iterations_per_scale()),
            "evaluations": int(result.evaluations[0]),
            "log": clock.log,
        }
        print(json.dumps({k: v for k, v in results[name].items() if k != "log"}), flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            tag = name.replace(" ", "_")
            save_image(args.out / f"ttq_{tag}_{args.size}.png", result.image)
    plain = results["plain"]
    at150 = next((loss for _, loss, it in plain["log"] if it >= 150), plain["final_loss"])
    print(f"\n# {args.size} px, Tübingen with {args.style}; plain: {plain['run_s']:.0f} s run, "
          f"final loss {plain['final_loss']:.4g}")  # fmt: skip
    print(
        "| path | scales (iterations) | final loss | time to plain's 150-it loss | "
        "time to plain's final loss | run time |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        t150, tfin = crossing(r["log"], at150), crossing(r["log"], plain["final_loss"])
        show = lambda t: "not reached" if t is None else f"{t / plain['run_s']:.2f}x"  # noqa: E731
        plan = ", ".join(f"{s} px ({i})" for s, i in zip(r["scales"], r["iterations"], strict=True))
        print(f"| {name} | {plan} | {r['final_loss'] / plain['final_loss']:.3f}x | {show(t150)} | "
              f"{show(tfin)} | {r['run_s'] / plain['run_s']:.2f}x |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
