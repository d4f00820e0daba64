"""Shared fixtures: x64 scoped to a test, the real weights, random-init VGG params, test images,
and headless Chromium (Playwright) for the pages of the report and of ``jaxnst serve``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnst import vgg, weights

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_IMAGES = ROOT.parent / "shared" / "images"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # the machine has no network: no lookups, no retries
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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


def require(what: str, missing: str | None) -> None:
    """Skip for want of ``missing`` (a browser, a package), or fail under
    JAXNST_REQUIRE_BROWSER=1 (CI sets it, so CI cannot go green by skipping)."""
    if missing:
        if os.environ.get("JAXNST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"JAXNST_REQUIRE_BROWSER=1 but {what}: {missing}")
        pytest.skip(missing)


def chromium_path() -> str | None:
    given = os.environ.get("JAXNST_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p is not None), None
    )


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through Playwright (never Playwright's own download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require("a browser", sync_playwright is None and "playwright is not installed "
            "(pip install -e '.[test]')")  # fmt: skip
    executable = chromium_path()
    require("a browser", executable is None and "no chromium (apt-get install chromium, "
            "or set JAXNST_CHROMIUM)")  # fmt: skip
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
