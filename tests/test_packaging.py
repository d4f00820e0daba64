"""The built distributions carry the weights, their provenance and the licences (issue 13).

Builds the sdist and the wheel of a copy of the repository with setuptools' own backend (no
network, no build isolation: the test extra pins setuptools>=77), then reads them. The wheel's
code is run unpacked from a directory outside the repository to show that it finds its weights.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_SHA256 = "9d5ef44638779308228ef69b4e371bd13f5461746392527276304f307a339182"
SHIPPED = ("vgg19.h5", "vgg19_means.npz", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("setuptools", minversion="77")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("jaxnst", "weights", "tests", "scripts"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out, built = src / "dist", []
    for kind in ("sdist", "wheel"):  # one process each: setuptools keeps state between builds
        build = f"b.build_{kind}(sys.argv[1])"
        code = f"import sys; from setuptools import build_meta as b; print('BUILT', {build})"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        built.append(proc.stdout.split("BUILT ")[-1].strip())
    sdist, wheel = built
    return {"sdist": out / sdist, "wheel": out / wheel}


def test_wheel_carries_the_weights_provenance_and_licences(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        for name in SHIPPED:
            assert f"jaxnst/_weights/{name}" in names
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert {f"{info}/licenses/LICENSE", f"{info}/licenses/weights/LICENSE"} <= names
        weights = whl.read("jaxnst/_weights/vgg19.h5")
        assert hashlib.sha256(weights).hexdigest() == WEIGHTS_SHA256
        meta = whl.read(f"{info}/METADATA").decode()
        assert "License-Expression: MIT AND CC-BY-4.0" in meta.splitlines()
        assert "CC BY 4.0" in whl.read("jaxnst/_weights/LICENSE").decode()
        assert (
            "Copyright (c) 2026 the jaxnst authors" in whl.read(f"{info}/licenses/LICENSE").decode()
        )
        assert not any(n.startswith(("weights/", "tests/", "scripts/")) for n in names)


def test_sdist_carries_the_weights_and_licences(dists):
    with tarfile.open(dists["sdist"]) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "pyproject.toml", "README.md"} <= names
    assert {f"weights/{name}" for name in SHIPPED} <= names
    assert "tests/test_packaging.py" in names and top.startswith("jaxnst-")


def test_the_unpacked_wheel_finds_its_own_weights(dists, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(dists["wheel"]) as whl:
        whl.extractall(site)
    code = "from jaxnst import weights as w; print(w.DEFAULT_WEIGHTS, w.DEFAULT_MEANS)"
    env = {"PYTHONPATH": str(site), "PATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights, means = map(Path, proc.stdout.split())
    assert weights == site / "jaxnst" / "_weights" / "vgg19.h5" and weights.is_file()
    assert means == site / "jaxnst" / "_weights" / "vgg19_means.npz" and means.is_file()
