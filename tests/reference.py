"""Independent NumPy float64 references of the paper's formulas, for the tests."""

from __future__ import annotations

import numpy as np


def np_gram(feats: np.ndarray) -> np.ndarray:
    f = np.asarray(feats, np.float64).reshape(-1, feats.shape[-1])
    return f.T @ f


def np_style_layer_loss(feats: np.ndarray, target_gram: np.ndarray) -> float:
    h, w, n = feats.shape
    m = h * w
    return float(np.sum((np_gram(feats) - target_gram) ** 2) / (4.0 * n**2 * m**2))


def np_content_loss(feats: np.ndarray, target: np.ndarray) -> float:
    return float(0.5 * np.sum((np.asarray(feats, np.float64) - target) ** 2))


def np_tv_loss(image: np.ndarray) -> float:
    x = np.asarray(image, np.float64) * 255.0
    return float(np.sum(np.diff(x, axis=0) ** 2) + np.sum(np.diff(x, axis=1) ** 2))
