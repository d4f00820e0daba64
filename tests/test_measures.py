"""The content and style measures: zero for the thing itself, larger the further away."""

from __future__ import annotations

import numpy as np

from jaxnst import measures


def test_measures_are_zero_at_the_target_and_grow_away_from_it(random_params, rng):
    photo = rng.uniform(size=(32, 32, 3)).astype(np.float32)
    style = rng.uniform(size=(40, 40, 3)).astype(np.float32) ** 3  # other statistics
    same = measures.measures(random_params, photo, photo, photo)
    assert same["content"] == 0.0 and same["style"] < 1e-6
    assert set(same) == {"content", "style", *(f"style/conv{b}_1" for b in range(1, 6))}
    near = measures.measures(random_params, np.clip(photo + 0.02, 0, 1), photo, style)
    far = measures.measures(random_params, style[:32, :32], photo, style)
    assert 0 < near["content"] < far["content"]
    assert far["style"] < near["style"]  # the style image's own crop is close to its style
    as_uint8 = measures.measures(random_params, (photo * 255).round().astype(np.uint8), photo,
                                 photo)  # fmt: skip
    assert as_uint8["content"] < 0.01


def test_layout_error_sees_a_small_picture_at_the_reference_size(random_params):
    """A small copy of the photo keeps its layout; the same pixels rearranged (the photo's halves
    swapped, then reduced) do not: seen at the reference size the first is much closer."""
    from jaxnst.image import resize

    y, x = np.mgrid[0:64, 0:64] / 64.0
    photo = np.stack([x, y, (x > 0.5) * (y < 0.4) * 1.0], -1).astype(np.float32)
    assert measures.layout_error(random_params, photo, photo) == 0.0
    kept = resize(photo, (24, 24))
    lost = resize(np.concatenate([photo[:, 32:], photo[:, :32]], 1)[::-1], (24, 24))
    near, far = (measures.layout_error(random_params, r, photo) for r in (kept, lost))
    assert 0 < near < 0.5 * far
    assert (
        measures.layout_error(random_params, (kept * 255).round().astype(np.uint8), photo)
        < 2 * near
    )
