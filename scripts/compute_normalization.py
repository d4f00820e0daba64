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
from jaxnst.layers import CONV_LAYERS  # noqa: E402
from jaxnst.weights import DEFAULT_MEANS, activation_means, load_vgg19  # noqa: E402

# scikit-image's bundled natural images (greyscale ones repeated over RGB), then the shared
# test images when they are there (/work/shared/images, or SHARED_IMAGES): 19 in all.
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "clock", "moon", "brick",
    "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "retina",
)  # fmt: skip
SHARED = ("tubingen", "golden_gate", "hoovertowernight", "starry_night", "the_scream")


def photographs(size: int = 256) -> tuple[list[np.ndarray], list[str]]:
    import os

    from skimage import data

    images, names = [], []
    for name in PHOTOS:
        a = np.asarray(getattr(data, name)())
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        images.append(load_image(a[..., :3], size, name))
        names.append(name)
    shared = Path(os.environ.get("SHARED_IMAGES", "/work/shared/images"))
    for name in SHARED:
        if (shared / f"{name}.jpg").exists():
            images.append(load_image(shared / f"{name}.jpg", size, name))
            names.append(name)
    return images, names


def main() -> int:
    params = load_vgg19()
    images, names = photographs()
    arrays = {}
    for pooling in POOLINGS:
        for layer, m in activation_means(params, images, pooling).items():
            arrays[f"{pooling}/{layer}"] = m.astype(np.float32)
    arrays["images"] = np.array(names)
    np.savez(DEFAULT_MEANS, **arrays)
    print(f"wrote {DEFAULT_MEANS} from {len(images)} photographs")
    for layer in ("conv1_1", "conv3_1", "conv5_1"):
        m = arrays[f"max/{layer}"]
        print(f"  {layer}: mean of filter means {m.mean():.3g}, {int((m == 0).sum())} dead filters")
    for pooling in POOLINGS:
        ratios = np.concatenate(
            [arrays[f"{pooling}/{k}"] / np.median(arrays[f"{pooling}/{k}"]) for k in CONV_LAYERS]
        )
        qs = ", ".join(
            f"<{q}: {int((ratios < q).sum())}" for q in (1e-3, 0.01, 0.03, 0.05, 0.1, 0.2)
        )
        print(f"  {pooling}: filters whose mean / layer median is {qs} (of {ratios.size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
