"""Poisson blending against an exact sparse direct solve of the same discrete system."""
import numpy as np
import pytest
from synth_helpers import exact_poisson, smooth_image

import synth


def _ellipse(shape, centre, radii):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


@pytest.mark.parametrize("mixed", [False, True])
def test_2d_matches_sparse_direct_solve(mixed):
    target = smooth_image((80, 90), seed=1)
    source = smooth_image((80, 90), seed=2)[::-1].copy()
    mask = _ellipse((80, 90), (40, 45), (22, 30)) & ~_ellipse((80, 90), (40, 52), (5, 6))  # with a hole
    out = synth.poisson_blend(target, source, mask, mixed=mixed, clip=False)
    ref = exact_poisson(target, source, mask, mixed)
    assert np.abs(out - ref).max() < 1e-3
    assert np.array_equal(out[~mask], target[~mask])  # boundary and outside kept exactly


def test_3d_matches_sparse_direct_solve():
    target = smooth_image((20, 24, 26), seed=3)
    source = smooth_image((20, 24, 26), seed=4)
    mask = _ellipse(target.shape, (10, 12, 13), (6, 8, 7))
    out = synth.poisson_blend(target, source, mask, clip=False)
    ref = exact_poisson(target, source, mask)
    assert np.abs(out - ref).max() < 1e-3
    assert np.array_equal(out[~mask], target[~mask])


def test_mask_on_the_image_border_uses_neumann_edges():
    target = smooth_image((40, 40), seed=5)
    source = smooth_image((40, 40), seed=6)
    mask = np.zeros((40, 40), bool)
    mask[:15, 10:30] = True  # touches the top edge
    out = synth.poisson_blend(target, source, mask, clip=False)
    assert np.abs(out - exact_poisson(target, source, mask)).max() < 1e-3


def test_flat_source_reproduces_a_flat_target():
    # hand-computed: zero guidance and constant boundary -> the constant
    target = np.full((30, 30), 0.3, np.float32)
    mask = _ellipse((30, 30), (15, 15), (8, 10))
    out = synth.poisson_blend(target, np.full_like(target, 0.8), mask)
    assert np.abs(out - 0.3).max() < 1e-4


def test_bad_input_raises():
    t = smooth_image((20, 20))
    with pytest.raises(ValueError, match="whole image"):
        synth.poisson_blend(t, t, np.ones((20, 20), bool))
    with pytest.raises(ValueError, match="does not match"):
        synth.poisson_blend(t, t[:10], np.zeros((20, 20), bool))
    with pytest.raises(ValueError, match="does not match"):
        synth.poisson_blend(t, t, np.zeros((10, 20), bool))
    bad = t.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        synth.poisson_blend(bad, t, np.zeros((20, 20), bool))
    with pytest.raises(ValueError, match="0 and 1"):
        synth.poisson_blend(t, t, np.full((20, 20), 0.5))
