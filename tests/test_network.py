"""Model files and checkpoints: exact round trips, and every bad file is one line, nothing more."""

from __future__ import annotations

import io
import json

import jax
import numpy as np
import pytest

from jaxnst import network
from jaxnst.errors import ConfigError
from jaxnst.network import Network, load_network, save_network
from jaxnst.trainconfig import TrainConfig
from jaxnst.transform import init_transform

CFG = TrainConfig(crop=32, width=4, steps=3, style_weight=50.0)


@pytest.fixture(scope="module")
def net():
    params = jax.tree.map(np.asarray, init_transform(jax.random.key(3), width=4))
    return Network(params, CFG, {"steps": 3, "styles": [{"path": "s.png", "sha256": "ab"}]})


def test_a_model_file_round_trips_exactly(net, tmp_path):
    from jaxnst import __version__

    path = net.save(tmp_path / "model")  # the name is used as given
    assert path == tmp_path / "model" and path.exists()
    back = load_network(path)
    for a, b in zip(jax.tree.leaves(net.params), jax.tree.leaves(back.params), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert back.config == CFG and back.width == 4 and back.path == path
    assert back.meta["format"] == "jaxnst-network" and back.meta["format_version"] == 1
    assert back.meta["jaxnst"] == __version__ and back.meta["styles"][0]["sha256"] == "ab"
    assert back.meta["config"]["style_weight"] == 50.0


def rewrite(path, out, change=None, drop=None, arrays=None):
    """A copy of the model file ``path`` with its meta changed and arrays dropped or replaced."""
    with np.load(path, allow_pickle=False) as data:
        items = {k: data[k] for k in data.files}
    meta = json.loads(str(items.pop("meta")))
    meta.update(change or {})
    items = {k: v for k, v in items.items() if k != drop}
    items.update(arrays or {})
    buf = io.BytesIO()
    np.savez(buf, meta=np.asarray(json.dumps(meta)), **items)
    out.write_bytes(buf.getvalue())
    return out


def test_bad_model_files_are_one_line_errors(net, tmp_path):
    good = save_network(tmp_path / "good.npz", net)
    (tmp_path / "text.npz").write_text("not a model")
    np.save(tmp_path / "array.npy", np.zeros(3))
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(2))
    (tmp_path / "nometa.npz").write_bytes(buf.getvalue())
    kernel = "params/conv1/kernel"
    cases = {
        tmp_path / "missing.npz": "no such jaxnst network file",
        tmp_path: "is a directory",
        tmp_path / "text.npz": r"not a jaxnst network file \(not an .npz archive\)",
        tmp_path / "array.npy": "not an .npz archive",
        tmp_path / "nometa.npz": r"not a jaxnst network file \(no meta\)",
        rewrite(good, tmp_path / "ckpt.npz", {"format": network.CHECKPOINT_FORMAT}):
            "a training checkpoint",
        rewrite(good, tmp_path / "image.npz", {"format": "jaxnst-checkpoint-1"}):
            "format 'jaxnst-checkpoint-1'",
        rewrite(good, tmp_path / "newer.npz", {"format_version": 2, "jaxnst": "9.0"}):
            r"written by jaxnst 9.0 in network format 2; this jaxnst .* reads format 1: upgrade",
        rewrite(good, tmp_path / "arch.npz", {"architecture": "vit"}): "architecture 'vit'",
        rewrite(good, tmp_path / "opt.npz", {"config": {"crop": 32, "bogus": 1}}):
            "unknown option 'bogus'",
        rewrite(good, tmp_path / "lost.npz", drop=kernel): f"{kernel} is missing",
        rewrite(good, tmp_path / "shape.npz", arrays={kernel: np.zeros((3, 3, 3, 4), "f4")}):
            r"params/conv1/kernel is float32\[3, 3, 3, 4\], the network needs float32\[9, 9",
        rewrite(good, tmp_path / "nan.npz", arrays={kernel: np.full((9, 9, 3, 4), np.nan, "f4")}):
            "holds NaN or Inf",
        rewrite(good, tmp_path / "extra.npz", arrays={"params/conv9/kernel": np.zeros(1)}):
            "unexpected array 'params/conv9/kernel'",
    }  # fmt: skip
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message) as err:
            load_network(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value), path


def test_a_checkpoint_round_trips_params_and_adam_state(net, tmp_path):
    import optax

    state = optax.scale_by_adam().init(net.params)
    state = jax.tree.map(lambda a: a + 1 if a.dtype.kind == "f" else a + 5, state)
    path = network.save_checkpoint(tmp_path / "c.ckpt.npz", net.params, state, {"step": 4,
                                   "config": CFG.to_dict()})  # fmt: skip
    params, back, meta = network.load_checkpoint(path, net.params, state)
    assert meta["step"] == 4 and meta["format"] == network.CHECKPOINT_FORMAT
    for a, b in zip(jax.tree.leaves((net.params, state)), jax.tree.leaves((params, back)),
                    strict=True):  # fmt: skip
        assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        network.load_checkpoint(net.save(tmp_path / "m.npz"), net.params, state)
