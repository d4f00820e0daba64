"""Reproduce the demonstrations of Gatys et al. (CVPR 2017) with jaxnst: colour, space and scale.

    python scripts/control_gallery.py --size 512 --out docs/images

Reads ``../shared/images/`` (Tübingen, The Starry Night, The Scream) and writes three labelled
montages (JPEG) into --out, plus the region mask it used:

- ``control_colour.jpg``: Tübingen in each style four ways: plain transfer, the classic colour
  swap after the run (``original_colors``), luminance-only transfer (``color_mode=luminance``)
  and colour histogram matching of the style first (``color_mode=histogram``);
- ``control_spatial.jpg``: the sky in The Starry Night, everything else in The Scream (guided
  Gram matrices from a two-region mask, ``masks``), beside the mask;
- ``control_scale.jpg``: fine scales (conv1_1, conv2_1) from one painting and coarse scales
  (conv3_1 .. conv5_1) from the other (``style_layer_images``), both ways round.

The sky mask is computed from the photograph (blue pixels connected to the top edge, closed
with a 7-pixel window): no hand-drawn file needed. Every run starts from the content image
(faster to a good picture than noise) with the same options; --option NAME=VALUE changes any
StyleConfig field for all of them. Prints a table of seconds and final losses per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxnst import StyleConfig, stylize  # noqa: E402
from jaxnst.color import color_swap  # noqa: E402
from jaxnst.image import atomic_write, load_image, to_uint8  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from run_paper_images import parse_options  # noqa: E402

IMAGES = ROOT.parent / "shared" / "images"
STYLES = {"starry_night": "The Starry Night", "the_scream": "The Scream"}
LABEL = 16  # pixels of caption above each tile


def sky_mask(photo: np.ndarray) -> np.ndarray:
    """(h, w) float32 in {0, 1}: the blue sky of a photo, as the region connected to the top."""
    r, g, b = photo[..., 0], photo[..., 1], photo[..., 2]
    blue = (b > 0.45) & (b > r + 0.08) & (b > g)
    region = np.zeros_like(blue)
    region[0] = blue[0]
    while True:  # flood fill from the top row through blue pixels (4-neighbours)
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= blue
        if np.array_equal(grown, region):
            break
        region = grown
    img = Image.fromarray((region * 255).astype(np.uint8))
    img = img.filter(ImageFilter.MaxFilter(7)).filter(ImageFilter.MinFilter(7))  # close holes
    return (np.asarray(img) > 127).astype(np.float32)


def tile(image: np.ndarray, caption: str) -> tuple[Image.Image, str]:
    """An image and its caption, for ``montage``."""
    return Image.fromarray(image if image.dtype == np.uint8 else to_uint8(image)), caption


def montage(rows: list[list[tuple[Image.Image, str]]], path: Path, height: int) -> None:
    """Captioned images in rows, all scaled to ``height`` px, 4 px gaps, written atomically."""
    font = ImageFont.load_default(12)
    scaled = [
        [(p.resize((round(p.width * height / p.height), height)), c) for p, c in row]
        for row in rows
    ]
    width = max(sum(p.width for p, _ in row) + 4 * (len(row) + 1) for row in scaled)
    sheet = Image.new("RGB", (width, len(rows) * (height + LABEL + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(scaled):
        x, y = 4, 4 + i * (height + LABEL + 4)
        for pic, caption in row:
            draw.text((x + 2, y + 1), caption, fill="black", font=font)
            sheet.paste(pic, (x, y + LABEL))
            x += pic.width + 4
    atomic_write(path, lambda tmp: sheet.save(tmp, format="JPEG", quality=90))
    print(f"wrote {path}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "control")
    parser.add_argument("--only", nargs="+", default=["colour", "spatial", "scale"])
    parser.add_argument("--option", action="append", default=[], help="NAME=VALUE for StyleConfig")
    args = parser.parse_args()
    content = IMAGES / "tubingen.jpg"
    styles = {name: IMAGES / f"{name}.jpg" for name in STYLES}
    for path in [content, *styles.values()]:
        if not path.exists():
            sys.exit(f"{path} not found: the paper's images live in ../shared/images/")
    base = StyleConfig(
        size=args.size, iterations=args.iterations, init="content", style_weight=1e4
    ).replace(**parse_options(args.option))
    args.out.mkdir(parents=True, exist_ok=True)
    photo = load_image(content, args.size)
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{photo.shape[1]}x{photo.shape[0]} px, {base.optimizer}, {base.iterations} its"
    )
    table: list[tuple[str, float, float]] = []
    cache: dict[str, np.ndarray] = {}

    def run(name: str, style, **kw) -> np.ndarray:
        if name not in cache:
            t0 = time.perf_counter()
            result = stylize(content, style, base, **kw)
            seconds = time.perf_counter() - t0
            table.append((name, seconds, result.final_loss[0]["total"]))
            print(
                f"  {name}: {seconds:.1f} s, loss {result.final_loss[0]['total']:.3e}", flush=True
            )
            cache[name] = result.image
        return cache[name]

    thumbs = {k: tile(load_image(styles[k], args.size), title) for k, title in STYLES.items()}
    if "colour" in args.only:
        rows = []
        for name, path in styles.items():
            plain = run(f"{name} plain", path)
            swap = to_uint8(color_swap(plain.astype(np.float32) / 255.0, photo))
            lum = run(f"{name} luminance", path, color_mode="luminance")
            hist = run(f"{name} histogram", path, color_mode="histogram")
            rows.append(
                [
                    thumbs[name],
                    tile(plain, "plain transfer"),
                    tile(swap, "colour swap after the run"),
                    tile(lum, "luminance-only transfer"),
                    tile(hist, "histogram-matched style"),
                ]
            )
        montage(rows, args.out / "control_colour.jpg", photo.shape[0])
    if "spatial" in args.only:
        sky = sky_mask(photo)
        mask_rgb = np.where(sky[..., None] > 0.5, [0.35, 0.45, 0.95], [0.95, 0.55, 0.2])
        atomic_write(
            args.out / "control_mask_sky.png",
            lambda tmp: Image.fromarray(to_uint8(sky)).save(tmp, format="PNG"),
        )
        two = run("sky starry, rest scream", list(styles.values()), masks=[sky, 1.0 - sky])
        montage(
            [
                [
                    tile(photo, "the photograph"),
                    tile(mask_rgb.astype(np.float32), "regions (computed)"),
                    thumbs["starry_night"],
                    thumbs["the_scream"],
                    tile(two, "sky: Starry Night; rest: The Scream"),
                ]
            ],
            args.out / "control_spatial.jpg",
            photo.shape[0],
        )
    if "scale" in args.only:
        both = list(styles.values())
        a = run("fine starry + coarse scream", both, style_layer_images=(1, 1, 2, 2, 2))
        b = run("fine scream + coarse starry", both, style_layer_images=(2, 2, 1, 1, 1))
        montage(
            [
                [
                    thumbs["starry_night"],
                    thumbs["the_scream"],
                    tile(a, "fine: Starry Night, coarse: The Scream"),
                    tile(b, "fine: The Scream, coarse: Starry Night"),
                ]
            ],
            args.out / "control_scale.jpg",
            photo.shape[0],
        )
    print("\n| run | seconds | final loss |\n|---|---|---|")
    for name, seconds, loss in table:
        print(f"| {name} | {seconds:.1f} | {loss:.3e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
