"""The same look at every size: content and style measures at 128, 256 and 512 px.

    python scripts/size_balance.py                       # the defaults and the paper's sums
    python scripts/size_balance.py --iterations 150      # the issue's protocol, quicker

Tübingen with The Starry Night and The Scream, each at 128, 256 and 512 px, once with the
defaults (the normalised objective and the automatic coarse-to-fine plan) and once with the
paper's literal objective (``objective=paper``, one scale). For every run it prints the content
measure (relative conv4_2 error of the result) and the style measure (relative per-position
Gram error, mean over the five style layers; ``jaxnst.measures``), and each measure's ratio to
the same objective's 512 px value: the criterion is that every ratio stays within a factor 1.5.
``--json`` keeps the rows, ``--out DIR`` the pictures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxnst import StyleConfig, save_image, stylize  # noqa: E402
from jaxnst.image import load_image  # noqa: E402
from jaxnst.measures import measures  # noqa: E402
from jaxnst.weights import load_vgg19  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"
VARIANTS = {"default": {}, "paper": {"objective": "paper", "auto_scales": False}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--styles", nargs="+", default=["starry_night", "the_scream"])
    ap.add_argument("--iterations", type=int, default=None, help="(default: the defaults')")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    params = load_vgg19()
    rows = []
    for style in args.styles:
        for variant in args.variants:
            for size in args.sizes:
                opts = dict(VARIANTS[variant])
                if args.iterations:
                    opts["iterations"] = args.iterations
                content, style_path = SHARED / "tubingen.jpg", SHARED / f"{style}.jpg"
                t0 = time.perf_counter()
                image = stylize(content, style_path, StyleConfig(size=size, **opts)).image
                m = measures(params, image, load_image(content, size), load_image(style_path, size))
                rows.append({"image": style, "objective": variant, "size": size,
                             "seconds": time.perf_counter() - t0, **m})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    save_image(args.out / f"balance_{style}_{variant}_{size}.png", image)
    print("\n| style | objective | size | content | ratio to 512 | style | ratio to 512 |")
    print("|---|---|---|---|---|---|---|")
    worst = {}
    for r in rows:
        ref = next((q for q in rows if q["image"] == r["image"] and q["objective"] == r[
            "objective"] and q["size"] == max(args.sizes)), r)  # fmt: skip
        rc, rs = r["content"] / ref["content"], r["style"] / ref["style"]
        key = r["objective"]
        worst[key] = max(worst.get(key, 1.0), rc, 1 / rc, rs, 1 / rs)
        print(f"| {r['image']} | {r['objective']} | {r['size']} | {r['content']:.3f} | "
              f"{rc:.2f} | {r['style']:.3f} | {rs:.2f} |")  # fmt: skip
    for key, w in worst.items():
        verdict = "within" if w <= 1.5 else "outside"
        print(f"{key}: every measure within a factor {w:.2f} of 512 px ({verdict} the 1.5 band)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
