"""Which optical flow for video style transfer? DIS presets against Farneback on synthetic clips.

For each clip of ``jaxnst.clips`` (a slow and a fast camera pan with zoom, a slow and a fast disc
over a still photograph) and each flow method, over every pair of neighbouring frames, both ways:

- EPE: average endpoint error |estimated - true flow| in pixels, on pixels visible in both frames;
- occlusion precision / recall: the reliability weights (Ruder et al.'s forward-backward and
  motion-boundary checks on the estimated flows) as a detector of the truly occluded pixels
  (c = 0 counts as "occluded"); kept: the share of visible pixels that keep c = 1;
- ms/pair: wall time of one ``optical_flow`` call (8-bit luma conversion included).

The "true flow" row runs the same checks on the true flows: what the reliability rules alone
give up (motion boundaries are zeroed on purpose, which lowers precision).

    python scripts/flow_quality.py                # 256 px, 8 frames: about a minute on 2 cores
    python scripts/flow_quality.py --size 128 --frames 4
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxnst import clips
from jaxnst.flow import optical_flow, reliability

METHODS = {
    "DIS ultrafast": ("dis", {"preset": "ultrafast"}),
    "DIS fast": ("dis", {"preset": "fast"}),
    "DIS medium": ("dis", {"preset": "medium"}),
    "Farneback (levels 5, poly 7)": ("farneback", {}),
    "Farneback (OpenCV sample: 3, 5)": (
        "farneback",
        {"levels": 3, "poly_n": 5, "poly_sigma": 1.2},
    ),
}


def make_clips(size: int, frames: int) -> dict[str, clips.Clip]:
    hw = (size * 3 // 4, size)
    return {
        "pan 1.7 px": clips.pan_zoom_clip(n_frames=frames, size=hw, pan=(1.5, 0.75), zoom=1.02),
        "pan 6.7 px": clips.pan_zoom_clip(n_frames=frames, size=hw, pan=(6.0, 3.0), zoom=1.03),
        "disc 2.6 px": clips.moving_object_clip(n_frames=frames, size=hw, velocity=(2.5, 0.75)),
        "disc 8.2 px": clips.moving_object_clip(n_frames=frames, size=hw, velocity=(8.0, 2.0)),
    }


def evaluate(clip: clips.Clip, flows_fwd, flows_bwd) -> dict[str, float]:
    check = jax.jit(reliability)
    errors, hits, flagged, occluded, kept, visible = [], 0, 0, 0, 0, 0
    for est, back, true, seen in (
        (flows_fwd, flows_bwd, clip.forward, clip.forward_visible),
        (flows_bwd, flows_fwd, clip.backward, clip.backward_visible),
    ):
        for k in range(len(true)):
            errors.append(np.linalg.norm(est[k] - true[k], axis=-1)[seen[k]].mean())
            c = np.asarray(check(est[k], back[k])) > 0.5
            hits += int((~c & ~seen[k]).sum())
            flagged += int((~c).sum())
            occluded += int((~seen[k]).sum())
            kept += int((c & seen[k]).sum())
            visible += int(seen[k].sum())
    return {
        "epe": float(np.mean(errors)),
        "precision": hits / max(flagged, 1),
        "recall": hits / max(occluded, 1),
        "kept": kept / max(visible, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="long side of the frames (px)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    args = parser.parse_args()
    import cv2

    test_clips = make_clips(args.size, args.frames)
    h, w = next(iter(test_clips.values())).frames.shape[1:3]
    print(f"{w}x{h} px, {args.frames} frames per clip, OpenCV {cv2.__version__}, "
          f"{cv2.getNumThreads()} OpenCV threads\n")  # fmt: skip
    print("| clip | flow | EPE px | occl. precision | occl. recall | kept | ms/pair |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for clip_name, clip in test_clips.items():
        m = evaluate(clip, clip.forward, clip.backward)
        print(f"| {clip_name} | true flow | 0 | {m['precision']:.2f} | {m['recall']:.2f} | "
              f"{m['kept']:.3f} | |")  # fmt: skip
        for name, (method, options) in METHODS.items():
            optical_flow(clip.frames[0], clip.frames[1], method, **options)  # warm up
            fwd, bwd, times = [], [], []
            for k in range(len(clip.frames) - 1):
                a, b = clip.frames[k], clip.frames[k + 1]
                start = time.perf_counter()
                fwd.append(optical_flow(a, b, method, **options))
                times.append(time.perf_counter() - start)
                bwd.append(optical_flow(b, a, method, **options))
            m = evaluate(clip, np.stack(fwd), np.stack(bwd))
            ms = 1e3 * np.median(times)
            print(f"| {clip_name} | {name} | {m['epe']:.3f} | {m['precision']:.2f} | "
                  f"{m['recall']:.2f} | {m['kept']:.3f} | {ms:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
