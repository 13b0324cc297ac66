"""workers.runs: the run-length labelling that text detection and breast cropping share."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from workers.runs import label_runs
from workers.score.preprocess import largest_component


def _pixel_labels(mask: np.ndarray) -> np.ndarray:
    out = np.full(mask.shape, -1)
    for r, s, e, lab in zip(*label_runs(mask), strict=True):
        out[r, s:e] = lab
    return out


def test_components_match_scipy_8_connected_labelling() -> None:
    rng = np.random.default_rng(7)
    for density in (0.2, 0.45, 0.6):
        mask = rng.random((40, 57)) < density
        ours = _pixel_labels(mask)
        ref, n = ndimage.label(mask, structure=np.ones((3, 3)))
        assert (ours >= 0).sum() == mask.sum()
        assert len(np.unique(ours[ours >= 0])) == n
        for k in range(1, n + 1):  # each scipy component is exactly one of ours
            assert len(np.unique(ours[ref == k])) == 1


def test_diagonal_touch_joins_and_the_largest_component_wins() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one diagonal component of 3
    mask[4:6, 3:6] = True  # a block of 6
    assert len(set(label_runs(mask)[3])) == 2
    assert largest_component(mask).sum() == 6 and largest_component(mask)[5, 5]
    assert not largest_component(np.zeros((3, 3), dtype=bool)).any()
