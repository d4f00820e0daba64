"""The same look at every size: content and style measures at 128, 256 and 512 px.

    python scripts/size_balance.py                       # the defaults and the paper's sums
    python scripts/size_balance.py --iterations 150      # the issue's protocol, quicker

Tübingen with The Starry Night and The Scream, each at 128, 256 and 512 px, once with the
defaults (the normalised objective and the automatic coarse-to-fine plan) and once with the
paper's literal objective (``objective=paper``, one scale). For every run it prints the content
measure (relative conv4_2 error of the result) and the style measure (relative per-position
Gram error, mean over the five style layers; ``jaxnst.measures``), and each measure's ratio to
the same objective's 512 px value: the criterion is that every ratio stays within a factor 1.5.
It also prints the layout measure (the content measure of the result resized to 512 px against
the photograph at 512 px: whether a small picture kept the photo's objects), outside the band.
``--json`` keeps the rows, ``--out DIR`` the pictures; ``--measure DIR`` measures the pictures
an earlier ``--out DIR`` kept instead of making them (``--redo`` names the ones to make anew,
e.g. ``default:128``).
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
from jaxnst.measures import layout_error, measures  # noqa: E402
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
    ap.add_argument("--measure", type=Path, help="measure the pictures kept in this folder")
    ap.add_argument("--redo", nargs="*", default=[], help="with --measure: make these anew")
    args = ap.parse_args()
    params = load_vgg19()
    content = SHARED / "tubingen.jpg"
    reference = load_image(content, max(args.sizes))  # the layout measure's photo, decoded once
    rows = []
    for style in args.styles:
        for variant in args.variants:
            for size in args.sizes:
                opts = dict(VARIANTS[variant])
                if args.iterations:
                    opts["iterations"] = args.iterations
                style_path = SHARED / f"{style}.jpg"
                t0, name = time.perf_counter(), f"balance_{style}_{variant}_{size}.png"
                if args.measure and f"{variant}:{size}" not in args.redo:
                    image, seconds = load_image(args.measure / name, size), None
                else:
                    image = stylize(content, style_path, StyleConfig(size=size, **opts)).image
                    seconds = time.perf_counter() - t0
                m = measures(params, image, load_image(content, size), load_image(style_path, size))
                m["layout"] = layout_error(params, image, reference)
                rows.append({"image": style, "objective": variant, "size": size,
                             "seconds": seconds, **m})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    save_image(args.out / name, image)
    print("\n| style | objective | size | content | ratio to 512 | style | ratio to 512 | layout |")
    print("|---|---|---|---|---|---|---|---|")
    worst = {}
    for r in rows:
        ref = next((q for q in rows if q["image"] == r["image"] and q["objective"] == r[
            "objective"] and q["size"] == max(args.sizes)), r)  # fmt: skip
        rc, rs = r["content"] / ref["content"], r["style"] / ref["style"]
        key = r["objective"]
        worst[key] = max(worst.get(key, 1.0), rc, 1 / rc, rs, 1 / rs)
        print(f"| {r['image']} | {r['objective']} | {r['size']} | {r['content']:.3f} | "
              f"{rc:.2f} | {r['style']:.3f} | {rs:.2f} | {r['layout']:.3f} |")  # fmt: skip
    for key, w in worst.items():
        verdict = "within" if w <= 1.5 else "outside"
        print(f"{key}: every measure within a factor {w:.2f} of 512 px ({verdict} the 1.5 band)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
