"""Geometry helpers against independent numpy references."""
from __future__ import annotations

import numpy as np
import pytest

from synth.geometry import bounding_box


def numpy_box(mask: np.ndarray):
    lo, hi = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]) + 1)
    return tuple(lo), tuple(hi)


@pytest.mark.parametrize("shape", [(7,), (16,), (5, 9), (224, 224), (13, 17, 19), (3, 5, 16), (4, 1, 6)])
def test_bounding_box_matches_numpy_reductions(shape):
    rng = np.random.default_rng(len(shape))
    for density in (0.0, 0.001, 0.01, 0.3):
        for _ in range(25):
            mask = rng.random(shape) < density
            expected = numpy_box(mask)
            assert bounding_box(mask) == expected
            assert bounding_box(mask.astype(np.uint8)) == expected
            assert bounding_box(np.asfortranarray(mask)) == expected
