"""Shared fixtures: x64 scoped to a test, the real weights, random-init VGG params, test images."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnst import vgg, weights

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_IMAGES = ROOT.parent / "shared" / "images"


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def vgg_params():
    """The real converted VGG19 weights shipped in weights/vgg19.h5."""
    return weights.load_vgg19()


@pytest.fixture(scope="session")
def random_params():
    """Random He-initialised VGG19 parameters: same shapes, no file needed."""
    return vgg.init_params(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def shared_image(name: str) -> Path:
    path = SHARED_IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} not present (the shared test images live beside the checkout)")
    return path
