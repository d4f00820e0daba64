"""Measure VGG19's mean activation per filter, for the paper's normalised network.

    python scripts/compute_normalization.py      # writes weights/vgg19_means.npz

Gatys et al. normalised VGG19 so that each filter's mean activation over ImageNet images and
positions is 1. ImageNet is not available offline; scikit-image's bundled colour photographs are a
fair stand-in (a portrait, a cat, a cup of coffee, a rocket on its pad). Each is resized to
256 px on its longest side, as style transfer inputs typically are, and both pooling modes are
measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxnst.config import POOLINGS  # noqa: E402
from jaxnst.image import load_image  # noqa: E402
from jaxnst.weights import DEFAULT_MEANS, activation_means, load_vgg19  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photographs(size: int = 256) -> list[np.ndarray]:
    from skimage import data

    return [load_image(getattr(data, name)(), size, name) for name in PHOTOS]


def main() -> int:
    params = load_vgg19()
    images = photographs()
    arrays = {}
    for pooling in POOLINGS:
        for layer, m in activation_means(params, images, pooling).items():
            arrays[f"{pooling}/{layer}"] = m.astype(np.float32)
    arrays["images"] = np.array(PHOTOS)
    np.savez(DEFAULT_MEANS, **arrays)
    print(f"wrote {DEFAULT_MEANS} from {len(images)} photographs")
    for layer in ("conv1_1", "conv3_1", "conv5_1"):
        m = arrays[f"max/{layer}"]
        print(f"  {layer}: mean of filter means {m.mean():.3g}, {int((m == 0).sum())} dead filters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
