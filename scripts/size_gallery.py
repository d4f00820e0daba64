"""The look at every size: one content image, four styles, 128/256/512 px, all with the defaults.

    python scripts/size_gallery.py --out docs/images/size_gallery.jpg

Each cell is ``jaxnst.stylize(content, style, size=s)`` with nothing else set (whatever the
defaults are: the same command a new user types), shown at one display height so that the
sizes can be compared by eye; rows are styles, columns sizes, each cell labelled with its style
and size (the seconds of each run are printed). Content: the paper's Tübingen photograph;
styles: The Starry Night, The Scream and two of scikit-image's bundled images (a stained
micrograph and the Hubble deep field), so that two of the four were never looked at while the
defaults were chosen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxnst import StyleConfig, stylize  # noqa: E402
from jaxnst.image import atomic_write  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"


def styles() -> dict[str, object]:
    from skimage import data

    return {
        "The Starry Night": SHARED / "starry_night.jpg",
        "The Scream": SHARED / "the_scream.jpg",
        "immunohistochemistry": data.immunohistochemistry(),
        "Hubble deep field": data.hubble_deep_field(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", type=Path, default=SHARED / "tubingen.jpg")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--height", type=int, default=240, help="display height of a cell")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "size_gallery.jpg")
    ap.add_argument("--iterations", type=int, default=None, help="(default: the defaults')")
    args = ap.parse_args()
    if not args.content.exists():
        print(f"{args.content}: not found (the shared test images live beside the checkout)")
        return 2
    options = {} if args.iterations is None else {"iterations": args.iterations}
    rows = []
    for name, style in styles().items():
        row = []
        for size in args.sizes:
            t0 = time.perf_counter()
            image = stylize(args.content, style, StyleConfig(size=size, **options)).image
            row.append((size, time.perf_counter() - t0, image))
            print(f"{name} at {size} px: {row[-1][1]:.0f} s", flush=True)
        rows.append((name, row))
    label, pad = 16, 6
    cell_w = max(round(im.shape[1] * args.height / im.shape[0]) for _, _, im in rows[0][1])
    sheet = Image.new("RGB", (pad + len(args.sizes) * (cell_w + pad),
                              pad + len(rows) * (args.height + label + pad)), "white")  # fmt: skip
    draw = ImageDraw.Draw(sheet)
    for r, (name, row) in enumerate(rows):
        for c, (size, _, image) in enumerate(row):
            x0, y0 = pad + c * (cell_w + pad), pad + r * (args.height + label + pad)
            tile = Image.fromarray(np.asarray(image)).resize(
                (cell_w, args.height), Image.Resampling.LANCZOS
            )
            sheet.paste(tile, (x0, y0 + label))
            draw.text((x0, y0 + 2), f"{name}, {size} px", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: sheet.save(tmp, format="JPEG", quality=90))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
