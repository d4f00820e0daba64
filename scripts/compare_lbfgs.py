"""Race jaxnst's L-BFGS against PyTorch's (strong Wolfe) on the same objective and start image.

    python scripts/compare_lbfgs.py --size 128 --iterations 50 --json lbfgs.json
    python scripts/compare_lbfgs.py --demo --size 64 --iterations 20 --runs jaxnst torch

Every run minimises the same L_total (weights, layers, pooling from a jaxnst ``StyleConfig``) from
the same image: jaxnst's white noise for seed 0, taken from ``StyleRun.xs`` and handed to the
others. Runs (``--runs``):

- ``jaxnst``        jaxnst L-BFGS, range_mode "project" (clip to [0, 1] every trial point)
- ``jaxnst-clip``   jaxnst L-BFGS, range_mode "clip" (unconstrained; clipped once at the end)
- ``jaxnst-m100``   as ``jaxnst`` with lbfgs_memory=100 (PyTorch's default history)
- ``jaxnst-clip-m100``
- ``torch``         torch.optim.LBFGS(lr=1, line_search_fn="strong_wolfe", history_size=100),
                    clipped at the end (scripts/torch_nst.py); the reference of the ratio columns
- ``torch-m20``     the same with history_size=20, jaxnst's default memory
- ``optax-zoom``    optax.lbfgs (zoom line search, memory = lbfgs_memory), a Python loop of jitted
                    ``value_and_grad_from_state`` steps, clipped at the end

An iteration is an accepted step; the loss at iteration k is that of the k-th iterate (unclipped
for the clip-at-end runs); evaluations count forward+backward passes, including the one at x_0.
Seconds are wall time since the run's first step, after compilation (jaxnst, optax) or a
warm-up of two evaluations (torch), which are reported apart. The machine's other load is not
controlled: on a shared CPU compare seconds per evaluation with care.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

DEFAULT_CONTENT = REPO / ".." / "shared" / "images" / "tubingen.jpg"
DEFAULT_STYLE = REPO / ".." / "shared" / "images" / "starry_night.jpg"
RUNS = (
    "jaxnst",
    "jaxnst-clip",
    "jaxnst-m100",
    "jaxnst-clip-m100",
    "torch",
    "torch-m20",
    "optax-zoom",
)
DEFAULT_RUNS = ("jaxnst", "jaxnst-clip", "jaxnst-m100", "torch", "torch-m20", "optax-zoom")
REFERENCE = "torch"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--content", type=Path, default=DEFAULT_CONTENT)
    p.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    p.add_argument("--demo", action="store_true", help="skimage astronaut + hubble_deep_field")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--content-weight", type=float, default=None, help="alpha (StyleConfig's)")
    p.add_argument("--style-weight", type=float, default=None, help="beta (StyleConfig's)")
    p.add_argument("--pooling", choices=("max", "avg"), default="max")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: JAX on CPU with the Python loop; cuda: torch on CUDA, JAX's default "
        "backend with loop auto",
    )
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(DEFAULT_RUNS))
    p.add_argument(
        "--checkpoints",
        default="10,20,50,100,200,500,1000",
        help="iterations (and evaluation budgets) to tabulate",
    )
    p.add_argument("--channels-last", action="store_true", help="torch: channels_last layout")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- runs


def run_jaxnst(problem: Any, cfg: Any) -> dict[str, Any]:
    """jaxnst's StyleRun, timed per call.

    Python loop (CPU): advanced one call, i.e. one evaluation, at a time, so each iteration's time
    is measured. Scan loop (GPU): a call runs a whole chunk in one program, so times inside a chunk
    are interpolated linearly in evaluations (each call costs one evaluation).
    """
    from jaxnst.stylize import StyleRun

    run = StyleRun(problem, cfg)
    compile_s = run.compile()
    timeline_evals, timeline_s = [0], [0.0]
    t0 = time.perf_counter()
    while not run.done():
        run.advance(1)
        timeline_evals.append(int(run.evaluations()[0]))
        timeline_s.append(time.perf_counter() - t0)
    hist = run.history()[0]
    evals = [int(e) for e in hist["evaluations"]]
    return {
        "iteration": [int(i) for i in hist["iteration"]],
        "loss": [float(v) for v in hist["total"]],
        "evaluations": evals,
        "seconds": [float(s) for s in np.interp(evals, timeline_evals, timeline_s)],
        "final_loss_clipped": run.final_loss()[0]["total"],
        "compile_s": compile_s,
        "stopped": run.nonfinite,
    }


def run_torch(obj: Any, x0: np.ndarray, iterations: int, history: int) -> dict[str, Any]:
    import torch_nst

    warm = torch_nst.warmup(obj, x0)
    rec = torch_nst.run_lbfgs(obj, x0, iterations, history_size=history)
    return {**rec.as_dict(), "compile_s": warm}


def run_optax_zoom(problem: Any, cfg: Any, x0: np.ndarray, iterations: int) -> dict[str, Any]:
    """optax.lbfgs with its zoom line search: a jitted step per iteration, clipped at the end."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxnst.config import LossWeights
    from jaxnst.engine import precision_context
    from jaxnst.losses import Objective, total_loss

    solver = optax.lbfgs(memory_size=cfg.lbfgs_memory)

    def step(x, state, params, targets, weights):
        def loss_fn(y):  # params and targets are arguments of the jitted step, not constants
            return total_loss(y, params, targets, weights, Objective.from_config(cfg))

        with precision_context(cfg.precision):
            value, grad = optax.value_and_grad_from_state(loss_fn)(x, state=state)
            updates, state = solver.update(grad, state, x, value=value, grad=grad, value_fn=loss_fn)
        x = optax.apply_updates(x, updates)
        info = (optax.tree.get(state, "value"), optax.tree.get(state, "num_linesearch_steps"))
        return x, state, info

    weights = LossWeights.from_config(cfg)
    args = (problem.params, problem.targets, weights)
    x = jnp.asarray(x0)
    state = solver.init(x)
    t0 = time.perf_counter()
    step = jax.jit(step).lower(x, state, *args).compile()
    compile_s = time.perf_counter() - t0
    objective = Objective.from_config(cfg)
    value0, _ = jax.jit(jax.value_and_grad(lambda y: total_loss(y, *args, objective)))(x)
    rec = {"iteration": [0], "loss": [float(value0)], "evaluations": [1], "seconds": [0.0]}
    evals = 1  # value_and_grad_from_state evaluates x_0 in the first step; reused afterwards
    stopped = ""
    t0 = time.perf_counter()
    for k in range(1, iterations + 1):
        x, state, (value, steps) = step(x, state, *args)
        value, steps = float(value), int(steps)
        evals += steps
        if not np.isfinite(value):
            stopped = f"iteration {k}: non-finite loss"
            break
        rec["iteration"].append(k)
        rec["loss"].append(value)
        rec["evaluations"].append(evals)
        rec["seconds"].append(time.perf_counter() - t0)
    clipped = jnp.clip(x, 0.0, 1.0)
    final = float(jax.jit(lambda y: total_loss(y, *args, Objective.from_config(cfg)))(clipped))
    return {**rec, "final_loss_clipped": final, "compile_s": compile_s, "stopped": stopped}


# ------------------------------------------------------------------------------------------ table


def at_iteration(rec: dict[str, Any], k: int) -> tuple[float, int, float] | None:
    """(loss, evaluations, seconds) at iteration k, or None if the run stopped before."""
    if k in rec["iteration"]:
        i = rec["iteration"].index(k)
        return rec["loss"][i], rec["evaluations"][i], rec["seconds"][i]
    return None


def within_budget(rec: dict[str, Any], evals: int) -> tuple[float, int] | None:
    """(lowest loss, its iteration) among iterates reached with <= evals evaluations."""
    ok = [
        (f, k)
        for f, k, e in zip(rec["loss"], rec["iteration"], rec["evaluations"], strict=True)
        if e <= evals
    ]
    return min(ok) if ok else None


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3f}"


def print_tables(results: dict[str, dict[str, Any]], checkpoints: list[int]) -> list[dict]:
    ref = results.get(REFERENCE)
    width = max(len(n) for n in results) + 2
    rows = []
    print("\nPer iteration: loss of iterate k, evaluations used, wall seconds since the first step")
    print(
        f"{'iter':>5}  {'run':<{width}}{'loss':>12}{'evals':>7}{'seconds':>9}"
        f"{'loss/torch':>12}{'s/torch':>9}"
    )
    for k in checkpoints:
        ref_k = at_iteration(ref, k) if ref else None
        for name, rec in results.items():
            got = at_iteration(rec, k)
            if got is None:
                print(f"{k:>5}  {name:<{width}}{'(stopped)':>12}")
                continue
            f, e, s = got
            lr = fmt_ratio(f, ref_k[0] if ref_k else None)
            sr = fmt_ratio(s, ref_k[2] if ref_k else None)
            print(f"{k:>5}  {name:<{width}}{f:>12.4e}{e:>7d}{s:>9.2f}{lr:>12}{sr:>9}")
            rows.append(
                {
                    "iteration": k,
                    "run": name,
                    "loss": f,
                    "evaluations": e,
                    "seconds": s,
                    "loss_ratio": lr,
                    "seconds_ratio": sr,
                }
            )
        print()

    budgets = sorted(set(checkpoints) | {max(r["evaluations"][-1] for r in results.values())})
    print("Per evaluation budget: lowest loss reached with <= E evaluations (its iteration)")
    print(f"{'E':>5}  {'run':<{width}}{'loss':>12}{'iter':>6}{'loss/torch':>12}")
    for budget in budgets:
        ref_b = within_budget(ref, budget) if ref else None
        for name, rec in results.items():
            got = within_budget(rec, budget)
            if got is None:
                continue
            ratio = fmt_ratio(got[0], ref_b[0] if ref_b else None)
            print(f"{budget:>5}  {name:<{width}}{got[0]:>12.4e}{got[1]:>6d}{ratio:>12}")
        print()

    print("Summary (final iterate)")
    print(
        f"{'run':<{width}}{'iters':>6}{'evals':>7}{'ev/it':>7}{'compile s':>11}{'run s':>8}"
        f"{'s/eval':>8}{'loss':>12}{'clipped':>12}  stopped"
    )
    for name, rec in results.items():
        it, ev, s = rec["iteration"][-1], rec["evaluations"][-1], rec["seconds"][-1]
        print(
            f"{name:<{width}}{it:>6d}{ev:>7d}{ev / max(it, 1):>7.2f}{rec['compile_s']:>11.2f}"
            f"{s:>8.2f}{s / max(ev - 1, 1):>8.3f}{rec['loss'][-1]:>12.4e}"
            f"{rec['final_loss_clipped']:>12.4e}  {rec.get('stopped') or ''}"
        )
    for proj, clip in (("jaxnst", "jaxnst-clip"), ("jaxnst-m100", "jaxnst-clip-m100")):
        if proj in results and clip in results:
            a, b = results[proj], results[clip]
            print(
                f"range_mode, {proj} vs {clip}: loss at the last iterate "
                f"{a['loss'][-1]:.4e} vs {b['loss'][-1]:.4e} (project/clip "
                f"{fmt_ratio(a['loss'][-1], b['loss'][-1])}); of the saved, clipped image "
                f"{a['final_loss_clipped']:.4e} vs {b['final_loss_clipped']:.4e} (project/clip "
                f"{fmt_ratio(a['final_loss_clipped'], b['final_loss_clipped'])})"
            )
    return rows


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is imported
    if not args.demo:
        for role, path in (("content", args.content), ("style", args.style)):
            if not path.is_file():
                print(
                    f"compare_lbfgs: {role} image {path.resolve()} not found; pass "
                    f"--{role} PATH or --demo",
                    file=sys.stderr,
                )
                return 2

    import jax
    import jax.numpy as jnp
    import torch
    import torch_nst

    from jaxnst.config import LossWeights, StyleConfig
    from jaxnst.engine import precision_context
    from jaxnst.losses import Objective
    from jaxnst.problem import make_problem
    from jaxnst.solvers import make_value_and_grad
    from jaxnst.stylize import StyleRun

    overrides = {
        k: v
        for k, v in (("content_weight", args.content_weight), ("style_weight", args.style_weight))
        if v is not None
    }
    cfg = StyleConfig(
        size=args.size,
        iterations=args.iterations,
        optimizer="lbfgs",
        pooling=args.pooling,
        seed=0,
        variants=1,
        loop="python" if args.device == "cpu" else "auto",
    ).replace(**overrides)
    cfg.validate()
    if args.demo:
        from skimage import data

        content, style = data.astronaut(), data.hubble_deep_field()
        names = ("skimage astronaut", "skimage hubble_deep_field")
    else:
        content, style = args.content, args.style
        names = (str(args.content.resolve()), str(args.style.resolve()))
    problem = make_problem(content, style, cfg)
    x0 = np.array(StyleRun(problem, cfg).xs[0], copy=True)  # seed 0's noise, (h, w, 3)
    h, w, _ = x0.shape
    print(
        f"content {names[0]} -> {h}x{w}; style {names[1]} -> "
        f"{problem.styles[0].shape[0]}x{problem.styles[0].shape[1]}"
    )
    print(
        f"alpha {cfg.content_weight:g}, beta {cfg.style_weight:g}, content {cfg.content_layers}, "
        f"style {cfg.style_layers}, pooling {cfg.pooling}, {cfg.iterations} iterations; "
        f"jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} on "
        f"{args.device} ({torch.get_num_threads()} threads)"
    )

    # The torch peer, on the very images jaxnst resized, checked against jaxnst at x0.
    if args.device == "cuda" and not torch.cuda.is_available():
        print("compare_lbfgs: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    layers = tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))
    model = torch_nst.build_model(
        layers,
        cfg.pooling,
        device,
        channels_last=args.channels_last,
        weights=cfg.weights or torch_nst.DEFAULT_WEIGHTS,
    )
    obj = torch_nst.Objective(
        model,
        cfg.content_layers,
        cfg.style_layers,
        cfg.content_weight,
        cfg.style_weight,
        cfg.tv_weight,
        tuple(float(v) for v in cfg.layer_weights()),
    )
    obj.set_targets(problem.content, problem.styles[0])
    f_t, g_t = obj.value_and_grad(obj.tensor(x0))
    g_t = torch_nst.to_image(g_t)
    with precision_context(cfg.precision):
        vg = jax.jit(make_value_and_grad(Objective.from_config(cfg)))
        (f_j, _), g_j = vg(
            jnp.asarray(x0), problem.params, problem.targets, LossWeights.from_config(cfg)
        )
    f_j, g_j = float(f_j), np.asarray(g_j)
    parity = {
        "loss_jaxnst": f_j,
        "loss_torch": f_t,
        "loss_rel_diff": abs(f_j - f_t) / abs(f_t),
        "grad_rel_diff": float(np.linalg.norm(g_j - g_t) / np.linalg.norm(g_t)),
    }
    print(
        f"parity at x0: loss jaxnst {f_j:.6e} torch {f_t:.6e} (rel diff "
        f"{parity['loss_rel_diff']:.1e}); gradient rel L2 diff {parity['grad_rel_diff']:.1e}"
    )

    results: dict[str, dict[str, Any]] = {}
    for name in args.runs:
        t0 = time.perf_counter()
        if name.startswith("jaxnst"):
            run_cfg = cfg.replace(
                range_mode="clip" if "clip" in name else "project",
                lbfgs_memory=100 if name.endswith("m100") else cfg.lbfgs_memory,
            )
            results[name] = run_jaxnst(problem, run_cfg)
        elif name.startswith("torch"):
            history = 20 if name == "torch-m20" else 100
            results[name] = run_torch(obj, x0, cfg.iterations, history)
        else:
            results[name] = run_optax_zoom(problem, cfg, x0, cfg.iterations)
        r = results[name]
        print(
            f"  {name}: {r['iteration'][-1]} iterations, {r['evaluations'][-1]} evaluations, "
            f"loss {r['loss'][-1]:.4e} ({time.perf_counter() - t0:.1f} s in all)",
            flush=True,
        )

    checkpoints = sorted(
        {int(c) for c in args.checkpoints.split(",") if int(c) < cfg.iterations} | {cfg.iterations}
    )
    rows = print_tables(results, checkpoints)
    if args.json:
        out = {
            "config": cfg.to_dict(),
            "images": {"content": names[0], "style": names[1], "shape": [h, w]},
            "device": args.device,
            "versions": {"jax": jax.__version__, "torch": torch.__version__},
            "parity": parity,
            "runs": results,
            "table": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
