"""Video: temporal consistency and speed of the three modes, side by side in one run.

    python scripts/video_benchmark.py --size 256 --frames 8 --iterations 300 --set passes=6

For each synthetic clip (``jaxnst.clips``: a panned and zoomed photograph; a disc moving over a
still photograph) and each mode (independent frames, sequential single pass, batched multipass)
at the same iterations per frame, it prints:

- the warping error (Lai et al., ECCV 2018): the mean over frames of the reliability-weighted
  squared difference between stylised frame t and stylised frame t-1 warped by the input's flow;
- the style and content measures of the frames (relative Gram error over the style layers,
  relative conv4_2 error), and their ratio to the independent frames' (the look is kept);
- seconds per frame, and the frames per second of one batched pass against the same frames
  one at a time (``--batched-vs-single``).

``--gif DIR`` writes each clip's independent and multipass results side by side as GIFs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxnst import clips, video  # noqa: E402
from jaxnst.config import StyleConfig  # noqa: E402
from jaxnst.image import load_image  # noqa: E402
from jaxnst.measures import measures  # noqa: E402
from jaxnst.weights import load_params  # noqa: E402

STYLE = ROOT.parent / "shared" / "images" / "starry_night.jpg"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=300, help="per frame, in every mode")
    ap.add_argument("--clips", nargs="+", default=["pan", "object"])
    ap.add_argument("--modes", nargs="+", default=["independent", "sequential", "multipass"])
    ap.add_argument("--batched-vs-single", action="store_true")
    ap.add_argument("--gif", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="StyleConfig options, e.g. passes=6 temporal_weight=1e7")  # fmt: skip
    args = ap.parse_args()
    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        extra[key] = json.loads(value) if value[:1] in "0123456789-[" else value
    cfg = StyleConfig(size=args.size, iterations=args.iterations).merge(extra).validate()
    params = load_params(cfg.weights, cfg.normalize_network, cfg.pooling)
    hw = (round(args.size * 3 / 4) // 8 * 8, args.size)
    style = load_image(STYLE, args.size)
    print(f"# video benchmark: {jax.devices()[0].device_kind}, {hw[1]}x{hw[0]} px, "
          f"{args.frames} frames, {args.iterations} iterations per frame, "
          f"passes {cfg.passes}, temporal weight {cfg.temporal_weight:g}")  # fmt: skip
    rows = []
    for name in args.clips:
        make = clips.pan_zoom_clip if name == "pan" else clips.moving_object_clip
        clip = make(n_frames=args.frames, size=hw)
        results = {}
        for mode in args.modes:
            t0 = time.perf_counter()
            r = video.stylize_video(clip.frames, style, cfg, params=params, video_mode=mode)
            seconds = time.perf_counter() - t0
            results[mode] = r.frames
            err = video.warping_error(r.frames / 255.0, clip.frames)
            per = [
                measures(params, o, f, style) for o, f in zip(r.frames, clip.frames, strict=True)
            ]
            c, s = (float(np.mean([m[k] for m in per])) for k in ("content", "style"))
            rows.append({"clip": name, "mode": mode, "warping_error": err, "content": c,
                         "style": s, "s_per_frame": seconds / args.frames})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        if args.gif and "independent" in results and "multipass" in results:
            from jaxnst import videoio

            side = np.concatenate([results["independent"], results["multipass"]], axis=2)
            args.gif.mkdir(parents=True, exist_ok=True)
            videoio.write_video(args.gif / f"video_{name}_independent_vs_multipass.gif", side, 8)
    base = {r["clip"]: r for r in rows if r["mode"] == "independent"}
    print("\n| clip | mode | warping error | vs independent | content | style | s/frame |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get(r["clip"], r)
        print(f"| {r['clip']} | {r['mode']} | {r['warping_error']:.2e} | "
              f"{b['warping_error'] / r['warping_error']:.1f}x lower | "
              f"{r['content']:.3f} ({r['content'] / b['content']:.2f}) | "
              f"{r['style']:.3f} ({r['style'] / b['style']:.2f}) | "
              f"{r['s_per_frame']:.2f} |")  # fmt: skip
    if args.batched_vs_single:
        # One pass of all frames together, under both batchings (each: every frame runs the
        # one-image program, the CPU default; vmap: one batched program, the GPU/TPU default),
        # against the same frames one at a time (video_batch 1). Compilation excluded.
        clip = clips.pan_zoom_clip(n_frames=args.frames, size=hw)
        one_cfg = cfg.replace(iterations=20, video_mode="independent")
        timed = {}
        for label, run_cfg in (
            ("batched (each)", one_cfg.replace(batching="each")),
            ("batched (vmap)", one_cfg.replace(batching="vmap")),
            ("one at a time", one_cfg.replace(video_batch=1)),
        ):
            video.stylize_video(clip.frames, style, run_cfg, params=params)  # compile
            t0 = time.perf_counter()
            video.stylize_video(clip.frames, style, run_cfg, params=params)
            timed[label] = time.perf_counter() - t0
        single = timed["one at a time"]
        print(f"\n| {args.frames} frames, {one_cfg.iterations} iterations | frames/s | "
              "vs one at a time |")  # fmt: skip
        print("|---|---|---|")
        for label, seconds in timed.items():
            print(f"| {label} | {args.frames / seconds:.2f} | {single / seconds:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
