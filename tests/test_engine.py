"""The engine: per-example targets, sharding over devices, programs compiled once and kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxnst import StyleConfig, engine
from jaxnst.errors import ConfigError
from jaxnst.losses import Targets
from jaxnst.problem import make_problem
from jaxnst.stylize import StyleRun

ROOT = Path(__file__).resolve().parent.parent

SMALL = StyleConfig(size=24, iterations=3, chunk=2, style_layers=("conv1_1", "conv2_1"),
                    content_layers=("conv2_1",))  # fmt: skip


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)


SHARDED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax, jaxnst
    rng = np.random.default_rng(1)
    c, s = rng.random((30, 24, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)
    cfg = jaxnst.StyleConfig(size=24, iterations=3, chunk=2, variants=5,
                             style_layers=("conv1_1", "conv2_1"), content_layers=("conv2_1",))
    out = {"devices": len(jax.devices())}
    for opt in ("adam", "lbfgs"):
        sharded = jaxnst.stylize(c, s, cfg, optimizer=opt)
        single = jaxnst.stylize(c, s, cfg, optimizer=opt, devices=1)
        run = jaxnst.StyleRun(jaxnst.make_problem(c, s, cfg), cfg)
        out[opt] = {
            "mesh": run.mesh.size if run.mesh is not None else 1,
            "padded": int(run.xs.shape[0]),
            "pixels": int(np.abs(sharded.images.astype(int) - single.images.astype(int)).max()),
            "loss": [[h["total"][-1] for h in r.history] for r in (sharded, single)],
        }
    masks = [np.zeros((24, 19), np.float32) for _ in range(5)]  # 5 variants, 5 regions
    for k, m in enumerate(masks):
        m[:, : 4 * (k + 1)] = 1.0
    vm = [[m] for m in masks]
    sharded = jaxnst.stylize(c, s, cfg, optimizer="adam", variant_masks=vm)
    single = jaxnst.stylize(c, s, cfg, optimizer="adam", variant_masks=vm, devices=1)
    out["masks"] = {
        "pixels": int(np.abs(sharded.images.astype(int) - single.images.astype(int)).max()),
        "loss": [[h["total"][-1] for h in r.history] for r in (sharded, single)],
    }
    print(json.dumps(out))
    """
)


def test_sharded_variants_equal_single_device_variants():
    """5 variants over 4 forced CPU devices (padded to 8) match the one-device run, one by one."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=str(ROOT))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    for opt in ("adam", "lbfgs"):
        res = out[opt]
        assert res["mesh"] == 4 and res["padded"] == 8  # 5 variants padded to 2 per device
        assert res["pixels"] <= 1  # uint8 images equal up to float32 rounding
        # a batch of 2 per device against one of 5 rounds differently; L-BFGS amplifies it
        np.testing.assert_allclose(res["loss"][0], res["loss"][1], rtol=1e-3)
    # each variant its own regions (padded by repeating the last variant's masks)
    assert out["masks"]["pixels"] <= 1
    np.testing.assert_allclose(out["masks"]["loss"][0], out["masks"]["loss"][1], rtol=1e-4)
    assert len(set(np.round(out["masks"]["loss"][0], 3))) == 5  # the regions differ


def test_a_second_run_of_the_same_shapes_compiles_nothing(images, vgg_params):
    content, style = images
    problem = make_problem(content, style, SMALL, params=vgg_params)
    first = StyleRun(problem, SMALL)
    first.compile()
    second = StyleRun(problem, SMALL)
    assert second.compile() < 0.5 * first.timings["compile"] + 0.05
    assert second.program is first.program


def test_a_run_with_other_loss_weights_or_seed_compiles_nothing(images, vgg_params):
    """Weights, seed and iterations are traced: they never change the compiled program."""
    content, style = images
    problem = make_problem(content, style, SMALL, params=vgg_params)
    first = StyleRun(problem, SMALL)
    first.compile()
    other = SMALL.replace(style_weight=7.0, content_weight=0.5, seed=9, iterations=5)
    second = StyleRun(problem, other)
    second.compile()
    assert second.program is first.program


def test_targets_say_which_fields_carry_the_example_axis():
    shared = Targets({"c": jnp.ones((2, 2, 3))}, {"s": jnp.ones((3, 3))})
    assert shared.in_axes() == Targets(None, None) and shared.examples() is None
    assert shared.padded(4) is shared and shared.example(1) is shared
    masks = {"s": jnp.arange(3 * 2 * 4, dtype=jnp.float32).reshape(3, 1, 2, 4)}
    per = Targets(
        {"c": jnp.ones((2, 2, 3))}, {"s": jnp.ones((1, 3, 3))}, masks, per_example=("masks",)
    )
    assert per.in_axes() == Targets(None, None, 0, per_example=("masks",)) and per.examples() == 3
    padded = per.padded(5)
    assert padded.examples() == 5
    np.testing.assert_array_equal(padded.masks["s"][3:], np.repeat(masks["s"][2:], 2, 0))
    one = per.example(1)
    assert one.per_example == () and one.masks["s"].shape == (1, 2, 4)
    np.testing.assert_array_equal(one.masks["s"], masks["s"][1])


def test_padding_and_per_example_weights():
    assert engine.padded_count(5, None) == 5
    w = engine.variant_weights(SMALL, 3, {"style_weight": [1.0, 2.0, 3.0]})
    np.testing.assert_array_equal(w.style, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(w.content, [1.0] * 3)
    rows = engine.variant_weights(SMALL, 2, {"style_layer_weights": [[1, 0], [0, 1]]})
    assert rows.style_layers.shape == (2, 2)
    bad = (
        ({"seed": [1, 2]}, "cannot sweep"),
        ({"style_weight": [1.0]}, "needs 2 finite values"),
        ({"style_layer_weights": [[1, 0]] * 3}, "2 rows of 2 weights"),
    )
    for sweep, message in bad:
        with pytest.raises(ConfigError, match=message):
            engine.variant_weights(SMALL, 2, sweep)
