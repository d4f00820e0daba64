"""Speed and memory of jaxnst, side by side with a PyTorch implementation of the same loss.

    python scripts/bench.py                          # CPU defaults: 128/256/512 px
    python scripts/bench.py --sizes 256 512 1024 2048 --variants 1 8 --json out/bench.json
    python scripts/bench.py --only vg adam --sizes 512 --precisions default bf16

Every case runs in a fresh subprocess, so its peak host RSS and device memory are its own. Times
are medians over ``--iters`` calls after compilation and warm-up; compilation is timed apart. The
PyTorch peer (``scripts/torch_nst.py``, same weights from ``weights/vgg19.h5``) runs when torch
imports, and each jaxnst row is printed with its ratio to the matching PyTorch row.

Cases (``--only``):
  vg        one loss + gradient evaluation
  adam      one whole Adam iteration (python loop of jitted steps, and scan chunks)
  lbfgs     one whole L-BFGS iteration (jaxnst: one evaluation per call; PyTorch: strong Wolfe)
  variants  n variants through vmap against n single runs: images x iterations per second
  precision float32 (highest), default (TF32 on GPUs that have it) and bfloat16 compute, with
            the loss reached after a fixed number of Adam iterations from the same start
  compiles  XLA compilations during a 3-chunk run (must be 1 per program and shape)
  memory    the memory estimate against XLA's compiled plan and the measured peak RSS, per
            size, optimizer (adam, lbfgs) and remat (off, on); not in the default set
  devices   throughput of --device-variants variants sharded over 1, 2, 4 ... devices (forced
            CPU devices on a CPU host), and the efficiency against linear scaling
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


# ----------------------------------------------------------------------------- shared helpers
def problem_images(size: int):
    """A content/style pair at ``size`` px: the paper's pair if present, else skimage's."""
    from jaxnst.image import load_image

    shared = ROOT.parent / "shared" / "images"
    if (shared / "tubingen.jpg").exists():
        return (
            load_image(shared / "tubingen.jpg", size),
            load_image(shared / "starry_night.jpg", size),
        )
    from skimage import data

    return load_image(data.astronaut(), size), load_image(data.hubble_deep_field(), size)


def square(image, size):
    from jaxnst.image import resize

    return resize(image, (size, size))


def peaks() -> dict:
    out = {"host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def jax_device_peak() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def timed(fn, iters: int, sync) -> list[float]:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------------------- jaxnst cases
def jax_case(case: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxnst import StyleConfig
    from jaxnst.engine import precision_context, step_params
    from jaxnst.losses import Objective
    from jaxnst.problem import make_problem
    from jaxnst.solvers import make_value_and_grad
    from jaxnst.stylize import StyleRun

    size, iters = case["size"], case["iters"]
    cfg = StyleConfig(
        size=size,
        optimizer=case.get("optimizer", "adam"),
        precision=case.get("precision", "default"),
        dtype=case.get("dtype", "float32"),
        loop=case.get("loop", "python"),
        variants=case.get("variants", 1),
        devices=case.get("devices", 0),
        chunk=iters,
        iterations=10**6,
        init="content",
    )
    content, style = problem_images(size)
    content = square(content, size)
    problem = make_problem(content, style, cfg)
    out = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    if case["what"] == "vg":
        vg = make_value_and_grad(Objective.from_config(cfg))
        from jaxnst.config import LossWeights

        w = LossWeights.from_config(cfg)

        def f(x, p, t, w):
            with precision_context(cfg.precision):
                return vg(x, p, t, w)

        fn = jax.jit(f)
        x = jnp.asarray(content)
        params = step_params(problem.params, Objective.from_config(cfg))  # what a run's step gets
        t0 = time.perf_counter()
        compiled = fn.lower(x, params, problem.targets, w).compile()
        out["compile_s"] = time.perf_counter() - t0
        call = lambda: compiled(x, params, problem.targets, w)  # noqa: E731
        timed(call, 2, jax.block_until_ready)
        times = timed(call, iters, jax.block_until_ready)
        out["median_s"] = statistics.median(times)
        out["loss"] = float(call()[0][0])
    else:
        run = StyleRun(problem, cfg)
        out["compile_s"] = run.compile()
        run.advance(2 if cfg.loop == "python" else None)  # warm-up (and, for scan, a full chunk)
        jax.block_until_ready(run.xs)
        t0 = time.perf_counter()
        it0, ev0 = run.iterations().copy(), run.evaluations().copy()
        run.advance(iters)
        jax.block_until_ready(run.xs)
        elapsed = time.perf_counter() - t0
        its = int((run.iterations() - it0).min())
        evs = int((run.evaluations() - ev0).max())
        out["median_s"] = elapsed / max(its, 1)  # seconds per iteration (all variants)
        out["per_eval_s"] = elapsed / max(evs, 1)
        out["iterations"], out["evaluations"] = its, evs
        out["loss"] = float(run.history()[0]["total"][-1])
        out["images_it_per_s"] = cfg.variants * its / elapsed
    out["device_peak_mb"] = jax_device_peak()
    return out


def jax_precision_case(case: dict) -> dict:
    """The loss after a fixed number of Adam iterations from noise, per precision mode."""
    import jax

    from jaxnst import StyleConfig
    from jaxnst.problem import make_problem
    from jaxnst.stylize import StyleRun

    size, iters = case["size"], case["iters"]
    cfg = StyleConfig(
        size=size,
        optimizer="adam",
        precision=case["precision"],
        dtype=case["dtype"],
        iterations=iters,
        chunk=iters,
        loop=case.get("loop", "auto"),
    )
    content, style = problem_images(size)
    problem = make_problem(square(content, size), style, cfg)
    run = StyleRun(problem, cfg)
    out = {"compile_s": run.compile(), "device": jax.devices()[0].device_kind}
    t0 = time.perf_counter()
    while not run.done():
        run.advance()
    jax.block_until_ready(run.xs)
    out["median_s"] = (time.perf_counter() - t0) / iters
    # judge every mode's image by the same float32 (highest) loss
    judge = StyleRun(
        make_problem(
            square(content, size), style, cfg.replace(precision="highest", dtype="float32")
        ),
        cfg.replace(precision="highest", dtype="float32"),
    )
    judge.xs = run.xs
    out["loss"] = judge.final_loss()[0]["total"]
    out["device_peak_mb"] = jax_device_peak()
    return out


def jax_compiles_case(case: dict) -> dict:
    import logging

    import jax

    from jaxnst import StyleConfig
    from jaxnst.problem import make_problem
    from jaxnst.stylize import StyleRun

    messages: list[str] = []

    class Count(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if "Finished XLA compilation" in msg or "Compiling " in msg:
                messages.append(msg)

    handler = Count()
    logging.getLogger("jax").addHandler(handler)
    cfg = StyleConfig(
        size=case["size"],
        optimizer=case["optimizer"],
        chunk=3,
        iterations=9,
        loop=case.get("loop", "auto"),
    )
    content, style = problem_images(case["size"])
    problem = make_problem(content, style, cfg)
    run = StyleRun(problem, cfg)
    with jax.log_compiles():
        run.advance()
        first = len([m for m in messages if "Finished" in m])
        while not run.done():
            run.advance()
    later = len([m for m in messages if "Finished" in m]) - first
    return {"first_chunk": first, "later_chunks": later, "median_s": 0.0}


def _proc_status_mb(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak since start or the last reset) of this process, MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def jax_memory_case(case: dict) -> dict:
    """The memory estimate for one run step against XLA's compiled plan and the measured peak.

    Measured: XLA's ``memory_analysis()`` of the compiled step (arguments + outputs + temporaries
    - aliased), and the process's RSS above a baseline taken with JAX, jaxnst and the images
    loaded but no weights or arrays yet: its peak while the compiled steps run (peak reset after
    compiling, so compiler memory is not counted) and its peak over the whole case (compilation
    included). Device memory where the backend reports it.
    """
    import contextlib
    import ctypes

    import jax

    from jaxnst import StyleConfig
    from jaxnst.memory import estimate_memory
    from jaxnst.problem import make_problem
    from jaxnst.stylize import StyleRun

    size = case["size"]
    cfg = StyleConfig(
        size=size,
        optimizer=case["optimizer"],
        remat=case["remat"],
        iterations=10**6,
        init="content",
        loop="python",
    )
    jax.devices()  # the backend is up before the baseline
    content, style = problem_images(size)
    content = square(content, size)
    baseline = _proc_status_mb("VmRSS")
    problem = make_problem(content, style, cfg)
    run = StyleRun(problem, cfg)
    run.compile()
    hw = problem.content.shape[:2]
    m = run.executable.memory_analysis()
    out: dict = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    out["estimate_mb"] = run.memory.bytes / 2**20  # what the run planned (and the CLI prints)
    out["model_remat_mb"] = estimate_memory(hw, cfg, 1, remat=True).bytes / 2**20
    if m is not None:
        xla = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
        out["xla_mb"] = (xla - m.alias_size_in_bytes) / 2**20
        out["xla_temp_mb"] = m.temp_size_in_bytes / 2**20
    with contextlib.suppress(OSError, AttributeError):  # give the compiler's freed heap back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    out["rss_compiled_mb"] = (_proc_status_mb("VmRSS") or 0.0) - (baseline or 0.0)
    reset = _reset_peak_rss()
    run.advance(3)  # L-BFGS: the first call only evaluates x0
    jax.block_until_ready(run.xs)
    if baseline is not None:
        peak = _proc_status_mb("VmHWM")
        if reset and peak is not None:
            out["rss_run_mb"] = peak - baseline
        out["rss_all_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    out["device_peak_mb"] = jax_device_peak()
    out["median_s"] = 0.0
    return out


def memory_table(args, add) -> None:
    """``--only memory``: estimate against measured, per size, optimizer and remat."""
    rows = []
    for size in args.sizes:
        for optimizer in ("adam", "lbfgs"):
            for remat in ("off", "on"):
                case = {"impl": "jaxmem", "size": size, "optimizer": optimizer, "remat": remat}
                rows.append(add(case))
    print(
        "\n| size | optimizer | remat | estimate MB | XLA plan MB | est / XLA | RSS in steps MB "
        "| est / RSS | RSS incl. compile MB | device peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def err(est, got) -> str:
        return f"{est / got - 1:+.0%}" if est and got else "-"

    for r in rows:
        est, xla, rss = r.get("estimate_mb"), r.get("xla_mb"), r.get("rss_run_mb")
        print(
            f"| {r['size']} | {r['optimizer']} | {r['remat']} | {fmt_mb(est)} | {fmt_mb(xla)} "
            f"| {err(est, xla)} | {fmt_mb(rss)} | {err(est, rss)} | "
            f"{fmt_mb(r.get('rss_all_mb'))} | {fmt_mb(r.get('device_peak_mb'))} |"
        )


# ----------------------------------------------------------------------------- torch cases
def torch_case(case: dict) -> dict:
    import numpy as np
    import torch
    import torch_nst

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if case.get("precision") == "highest":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    size, iters = case["size"], case["iters"]
    content, style = problem_images(size)
    content = square(content, size)
    layers = ("conv4_2", "conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
    # channels_last is faster for convolutions, but torch.optim.LBFGS needs contiguous grads
    channels_last = device == "cuda" and case["what"] != "lbfgs"
    model = torch_nst.build_model(layers, "max", device, channels_last=channels_last)
    obj = torch_nst.Objective(model)
    obj.set_targets(content, style)
    sync = (lambda *_: torch.cuda.synchronize()) if device == "cuda" else (lambda *_: None)
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    x = obj.tensor(content).requires_grad_(True)
    if case["what"] == "vg":

        def call():
            x.grad = None
            total, _ = obj.loss(x)
            total.backward()
            return total

        timed(call, 3, sync)
        times = timed(call, iters, sync)
        out["median_s"] = statistics.median(times)
    elif case["what"] == "adam":
        opt = torch.optim.Adam([x], lr=0.02)

        def step():
            opt.zero_grad(set_to_none=True)
            total, _ = obj.loss(x)
            total.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            return total

        timed(step, 3, sync)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()  # no host sync inside the loop: as fair to PyTorch as it gets
        sync()
        out["median_s"] = (time.perf_counter() - t0) / iters
    elif case["what"] == "lbfgs":
        torch_nst.warmup(obj, content)
        rec = torch_nst.run_lbfgs(obj, np.asarray(content), iters)
        its = rec.iteration[-1]
        out["median_s"] = rec.seconds[-1] / max(its, 1)
        out["per_eval_s"] = rec.seconds[-1] / max(rec.evaluations[-1], 1)
        out["iterations"], out["evaluations"] = its, rec.evaluations[-1]
    if device == "cuda":
        out["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ----------------------------------------------------------------------------- driver
def combine(rows: list[dict]) -> dict:
    """One row from several rounds of the same case: median time, largest peak memory."""
    ok = [r for r in rows if "median_s" in r]
    if not ok:
        return rows[-1]
    out = dict(ok[-1])
    out["rounds"] = [r["median_s"] for r in ok]
    out["median_s"] = statistics.median(out["rounds"])
    for key in ("host_rss_mb", "device_peak_mb"):
        values = [r[key] for r in ok if r.get(key) is not None]
        out[key] = max(values) if values else None
    return out


def run_case(case: dict) -> dict:
    env = dict(os.environ)
    if case.get("forced_devices"):  # several CPU devices on one host, for the sharding path
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={case['forced_devices']}"
    proc = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**case, "error": " / ".join(tail)}
    return {**case, **json.loads(lines[-1])}


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def fmt_s(v) -> str:
    return "-" if v is None else f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"


def fmt_mb(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--variants", type=int, nargs="+", default=[1, 4])
    p.add_argument("--precisions", nargs="+", default=["highest", "default", "bf16"])
    p.add_argument("--precision-iters", type=int, default=200)
    p.add_argument("--loops", nargs="+", default=None, help="python and/or scan (default: both)")
    p.add_argument(
        "--only",
        nargs="+",
        default=["vg", "adam", "lbfgs", "variants", "precision", "compiles", "devices"],
    )
    p.add_argument("--no-torch", action="store_true")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each jaxnst/PyTorch pair this many times, alternating; report the medians",
    )
    p.add_argument("--device-counts", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--device-variants", type=int, default=4)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.case:
        case = json.loads(args.case)
        fn = {
            "jax": jax_case,
            "torch": torch_case,
            "jaxprec": jax_precision_case,
            "jaxcomp": jax_compiles_case,
            "jaxmem": jax_memory_case,
        }[case["impl"]]
        out = fn(case)
        out.update(peaks())
        print(json.dumps(out))
        return 0

    import jax

    backend = jax.default_backend()
    loops = args.loops or (["python", "scan"] if backend != "cpu" else ["python"])
    torch_ok = have_torch() and not args.no_torch
    print(
        f"# jaxnst benchmark: jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"({backend}); PyTorch peer: {'yes' if torch_ok else 'no'}"
    )
    rows = []

    def add(case):
        row = run_case(case)
        rows.append(row)
        err = f"  ERROR {row['error']}" if "error" in row else ""
        print(f"  {json.dumps({k: v for k, v in row.items() if k != 'error'})}{err}", flush=True)
        return row

    table = []
    for what in ("vg", "adam", "lbfgs"):
        if what not in args.only:
            continue
        for size in args.sizes:
            for loop in loops if what != "vg" else ["python"]:
                mine = {
                    "impl": "jax",
                    "what": what,
                    "size": size,
                    "iters": args.iters,
                    "optimizer": what if what != "vg" else "adam",
                    "loop": loop,
                }
                theirs = {"impl": "torch", "what": what, "size": size, "iters": args.iters}
                # --rounds alternates the two processes, so load from other jobs hits both alike
                pairs = [(add(theirs) if torch_ok else None, add(mine)) for _ in range(args.rounds)]
                peer = combine([p for p, _ in pairs]) if torch_ok else None
                table.append((what, size, loop, combine([j for _, j in pairs]), peer))
    if table:
        print(
            "\n| case | size | jaxnst loop | jaxnst / iter | PyTorch / iter | ratio | compile "
            "| jaxnst RSS MB | PyTorch RSS MB | jaxnst dev MB | PyTorch dev MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for what, size, loop, row, peer in table:
            j, t = row.get("median_s"), (peer or {}).get("median_s")
            ratio = f"{j / t:.2f}" if j and t else "-"
            peer_rounds = (peer or {}).get("rounds", [])
            per_round = [a / b for a, b in zip(row.get("rounds", []), peer_rounds, strict=False)]
            if len(per_round) > 1:
                ratio += f" ({min(per_round):.2f}-{max(per_round):.2f})"
            print(
                f"| {what} | {size} | {loop} | {fmt_s(j)} | {fmt_s(t)} | {ratio} | "
                f"{fmt_s(row.get('compile_s'))} | {fmt_mb(row.get('host_rss_mb'))} | "
                f"{fmt_mb((peer or {}).get('host_rss_mb'))} | "
                f"{fmt_mb(row.get('device_peak_mb'))} | "
                f"{fmt_mb((peer or {}).get('device_peak_mb'))} |"
            )
    if "variants" in args.only:
        size = 512 if backend != "cpu" else min(args.sizes)
        vrows = [
            add(
                {
                    "impl": "jax",
                    "what": "adam",
                    "size": size,
                    "iters": args.iters,
                    "variants": n,
                    "loop": loops[-1],
                }
            )
            for n in args.variants
        ]
        print(f"\n| variants at {size} px | time / iteration | x one variant | images*it/s |")
        print("|---|---|---|---|")
        base = vrows[0].get("median_s")
        for n, row in zip(args.variants, vrows, strict=True):
            s = row.get("median_s")
            print(
                f"| {n} | {fmt_s(s)} | {s / base:.2f} | {row.get('images_it_per_s', 0):.1f} |"
                if s and base
                else f"| {n} | error | | |"
            )
    if "precision" in args.only:
        size = 512 if backend != "cpu" else min(args.sizes)
        modes = {
            "highest": ("highest", "float32"),
            "default": ("default", "float32"),
            "bf16": ("default", "bfloat16"),
        }
        prow = []
        for name in args.precisions:
            precision, dtype = modes[name]
            prow.append(
                (
                    name,
                    add(
                        {
                            "impl": "jaxprec",
                            "size": size,
                            "iters": args.precision_iters,
                            "precision": precision,
                            "dtype": dtype,
                        }
                    ),
                )
            )
        print(
            f"\n| precision at {size} px | time / Adam iteration | loss after "
            f"{args.precision_iters} (judged in float32) | vs highest |"
        )
        print("|---|---|---|---|")
        ref = prow[0][1].get("loss")
        for name, row in prow:
            loss = row.get("loss")
            rel = f"{loss / ref:.4f}" if loss and ref else "-"
            loss_s = f"{loss:.4e}" if loss else "-"
            print(f"| {name} | {fmt_s(row.get('median_s'))} | {loss_s} | {rel} |")
    if "compiles" in args.only:
        print("\n| compilations during a run | first chunk | later chunks |\n|---|---|---|")
        for opt in ("adam", "lbfgs"):
            row = add(
                {"impl": "jaxcomp", "size": min(args.sizes), "optimizer": opt, "loop": loops[-1]}
            )
            print(f"| {opt} ({loops[-1]}) | {row.get('first_chunk')} | {row.get('later_chunks')} |")
    if "devices" in args.only:
        size = min(args.sizes)
        cpu = backend == "cpu"
        drows = []
        for d in args.device_counts:
            case = {
                "impl": "jax",
                "what": "adam",
                "size": size,
                "iters": args.iters,
                "variants": args.device_variants,
                "devices": d,
                "loop": "python",
            }
            if cpu:
                case["forced_devices"] = d
            drows.append((d, add(case)))
        print(
            f"\n| devices ({'forced CPU' if cpu else backend}) | {args.device_variants} variants "
            f"at {size} px: time / iteration | images*it/s | efficiency vs linear |"
        )
        print("|---|---|---|---|")
        base = drows[0][1].get("images_it_per_s")
        for d, row in drows:
            tput = row.get("images_it_per_s")
            eff = f"{tput / (base * d / drows[0][0]):.2f}" if tput and base else "-"
            print(f"| {d} | {fmt_s(row.get('median_s'))} | {tput or 0:.2f} | {eff} |")
    if "memory" in args.only:
        memory_table(args, add)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
