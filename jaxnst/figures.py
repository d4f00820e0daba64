"""Pictures of a run: the loss curves, the evolution GIF and the contact sheet of snapshots.

All written atomically (temporary file, rename); the plot needs matplotlib (``jaxnst[plot]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from jaxnst.config import StyleConfig
from jaxnst.errors import ImageError
from jaxnst.image import atomic_write, read_image, to_uint8
from jaxnst.outputs import weighted_parts

SHEET_TILE = 192  # longest side of a contact-sheet tile, pixels


def write_plot(
    path: Path,
    histories: Sequence[dict[str, np.ndarray]],
    seeds: Sequence[int],
    cfg: StyleConfig,
) -> Path | None:
    """The loss terms against iteration, log scale, one colour per term; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    colors = {"total": "black", "content": "tab:blue", "style": "tab:red", "tv": "tab:green"}
    layer_colors = iter(
        ["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
        * 4
    )
    for k, (hist, seed) in enumerate(zip(histories, seeds, strict=True)):
        if "iteration" not in hist or len(hist["iteration"]) == 0:
            continue
        x = np.maximum(np.asarray(hist["iteration"]), 0)
        for name, y in weighted_parts(hist, cfg).items():
            y = np.where(np.asarray(y) > 0, y, np.nan)  # log scale: zeros are not drawn
            if name not in colors:
                colors[name] = next(layer_colors)
            label = name if k == 0 else None
            if name.startswith("style/"):
                ax.plot(x, y, color=colors[name], lw=0.8, ls="--", label=label, alpha=0.8)
            else:
                ax.plot(
                    x,
                    y,
                    color=colors[name],
                    lw=1.5 if name == "total" else 1.2,
                    label=label,
                    alpha=1.0 if k == 0 else 0.45,
                )
        del seed
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss")
    title = "loss terms" if len(histories) == 1 else f"loss terms, {len(histories)} variants"
    ax.set_title(f"{title} ({cfg.optimizer}, {cfg.size} px)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    return atomic_write(path, write)


Frames = list[tuple[int, np.ndarray]]  # (iteration, (n, h, w, 3) uint8) per snapshot


def write_gif(path: Path, frames: Sequence[tuple[int, np.ndarray]], ms: int = 200) -> Path:
    """Animated GIF of one variant's snapshots ((iteration, (h, w, 3) uint8)), looping."""
    size = Image.fromarray(frames[-1][1]).size  # coarse-to-fine snapshots grow: match the last
    pics = [_fit(Image.fromarray(img), size) for _, img in frames]
    durations = [ms] * (len(pics) - 1) + [ms * 5]  # hold the last frame

    def write(tmp: Path) -> None:
        pics[0].save(
            tmp, format="GIF", save_all=True, append_images=pics[1:], duration=durations, loop=0
        )

    return atomic_write(path, write)


def write_sheet(path: Path, frames: Frames, seeds: Sequence[int]) -> Path:
    """Contact sheet: a row per variant, a column per snapshot, labelled with the iteration."""
    n = len(seeds)
    h, w = frames[-1][1].shape[1:3]
    scale = min(1.0, SHEET_TILE / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    label, pad = 14, 4
    sheet = Image.new(
        "RGB", (pad + len(frames) * (tw + pad), pad + n * (th + label + pad)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for j, (iteration, images) in enumerate(frames):
        for k in range(n):
            x0, y0 = pad + j * (tw + pad), pad + k * (th + label + pad)
            tile = Image.fromarray(images[k]).resize((tw, th), Image.Resampling.LANCZOS)
            sheet.paste(tile, (x0, y0 + label))
            text = f"{iteration}" if n == 1 else f"{iteration} (seed {seeds[k]})"
            draw.text((x0, y0), text, fill="black")

    def write(tmp: Path) -> None:
        sheet.save(tmp, format="PNG")

    return atomic_write(path, write)


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def read_frames(snapshots: Sequence[dict[str, Any]]) -> Frames:
    """Reload snapshots listed in a checkpoint ({"iteration", "paths"}), skipping missing files."""
    frames = []
    for snap in snapshots:
        try:
            images = np.stack([to_uint8(read_image(p)) for p in snap["paths"]])
        except ImageError:
            continue
        frames.append((int(snap["iteration"]), images))
    return frames
