"""Geometry helpers against independent numpy references."""
from __future__ import annotations

import numpy as np
import pytest

from synth.tasks.geometry import bounding_box


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


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (30, 40), (64, 17), (5, 6, 7), (1, 9, 4), (12, 3, 10)])
def test_distance_to_background_is_scipys_exact_transform(shape):
    from scipy import ndimage as ndi

    from synth import kernels

    distance = kernels.distance_to_background_2d if len(shape) == 2 else kernels.distance_to_background_3d
    rng = np.random.default_rng(sum(shape))
    for density in (0.02, 0.3, 0.9):
        fg = (rng.random(shape) >= density).astype(np.uint8)
        fg.flat[int(rng.integers(fg.size))] = 0  # at least one background pixel
        ours = distance(fg)
        assert ours.dtype == np.float32
        exact = ndi.distance_transform_edt(fg)
        np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=0)
        # on a window: the same values as the whole transform there
        lo = tuple(int(rng.integers(n)) for n in shape)
        size = tuple(int(rng.integers(1, n - a + 1)) for a, n in zip(lo, shape))
        part = distance(fg, *lo, *size) if len(shape) == 2 else distance(fg, lo, size)
        window = tuple(slice(a, a + n) for a, n in zip(lo, size))
        np.testing.assert_array_equal(part, ours[window])
        # capped: exact below the cap, at least the cap elsewhere
        cap = 3
        capped = distance(fg, *lo, *size, cap) if len(shape) == 2 else distance(fg, lo, size, cap)
        near = exact[window] < cap
        np.testing.assert_array_equal(capped[near], ours[window][near])
        assert (capped[~near] >= cap).all()
    assert (distance(np.ones(shape, np.uint8)) > 1e10).all()  # no background: far everywhere


@pytest.mark.parametrize("shape", [(40, 50), (12, 14, 16)])
def test_capped_distance_on_a_window_of_a_large_mask(shape):
    """Against scipy's EDT of the whole mask: exact below the cap, at least the cap elsewhere,
    and empty only where no window pixel lies within the cap of the background."""
    from scipy import ndimage as ndi

    from synth import kernels

    rng = np.random.default_rng(len(shape))
    seen_empty = seen_full = False
    for trial in range(40):
        fg = rng.random(shape) >= (0.002 if trial % 2 else 0.05)
        fg.flat[int(rng.integers(fg.size))] = False
        exact = ndi.distance_transform_edt(fg)
        lo = tuple(int(rng.integers(n // 2)) for n in shape)
        size = tuple(int(rng.integers(1, n - a + 1)) for a, n in zip(lo, shape))
        cap = int(rng.integers(1, 6))
        if len(shape) == 2:
            room = kernels.capped_distance_2d(fg, *lo, *size, cap)
        else:
            room = kernels.capped_distance_3d(fg, lo, size, cap)
        window = exact[tuple(slice(a, a + n) for a, n in zip(lo, size))]
        if room.size == 0:
            seen_empty = True
            assert (window >= cap).all()
            continue
        seen_full = True
        near = window < cap
        np.testing.assert_allclose(room[near], window[near], rtol=1e-6, atol=0)
        assert (room[~near] >= cap).all()
    assert seen_empty and seen_full
