"""A row of the paper's Figure 3 in one compiled run: one image per alpha/beta ratio, via vmap.

    python scripts/sweep_weights.py --style starry_night --size 512 --ratios 1e-1 1e-2 1e-3 1e-4

Every variant starts from the same noise (seed 0) and differs only in beta = alpha / ratio; the
sweep is a traced argument, so all of them share one compiled program. Writes the images side by
side into one PNG and prints each variant's final content and style loss.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxnst import StyleConfig, stylize  # noqa: E402
from jaxnst.image import atomic_write  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from run_paper_images import parse_options  # noqa: E402

IMAGES = ROOT.parent / "shared" / "images"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", default="tubingen")
    parser.add_argument("--style", default="starry_night")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "sweep.png")
    parser.add_argument("--option", action="append", default=[], help="NAME=VALUE for StyleConfig")
    args = parser.parse_args()
    content, style = IMAGES / f"{args.content}.jpg", IMAGES / f"{args.style}.jpg"
    for path in (content, style):
        if not path.exists():
            sys.exit(f"{path} not found: the paper's images live in ../shared/images/")
    extra = parse_options(args.option)
    cfg = StyleConfig(size=args.size, iterations=args.iterations, content_weight=1.0).replace(
        **extra
    )
    betas = [cfg.content_weight / r for r in args.ratios]
    t0 = time.perf_counter()
    result = stylize(content, style, cfg, sweep={"style_weight": betas})
    print(
        f"{len(betas)} variants at {args.size} px on {jax.devices()[0].device_kind}: "
        f"{time.perf_counter() - t0:.1f} s (compile {result.timings['compile']:.1f} s)"
    )
    print("| alpha/beta | beta | content loss | style loss | iterations | evaluations |")
    print("|---|---|---|---|---|---|")
    for k, (r, b) in enumerate(zip(args.ratios, betas, strict=True)):
        f = result.final_loss[k]
        print(
            f"| {r:g} | {b:g} | {f['content']:.3e} | {f['style']:.3e} | "
            f"{result.iterations[k]} | {result.evaluations[k]} |"
        )
    row = np.concatenate(list(result.images), axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: Image.fromarray(row).save(tmp, format="PNG"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
