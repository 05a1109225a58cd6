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


def test_clipping_is_the_clipped_solve_and_pixels_far_from_the_mask_are_not_read():
    target = smooth_image((50, 50), seed=9)
    source = np.zeros_like(target)
    source[15:35, 15:35] = 1.0  # a sharp step inside the mask: the solve overshoots [0, 1]
    mask = _ellipse((50, 50), (25, 25), (14, 14))
    raw = synth.poisson_blend(target, source, mask, clip=False)
    assert raw.min() < 0.0 or raw.max() > 1.0
    assert np.array_equal(synth.poisson_blend(target, source, mask), np.clip(raw, 0.0, 1.0))
    far = target.copy()
    far[0, 0] = 7.0  # outside the mask's window: returned as given, as the docstring says
    assert synth.poisson_blend(far, source, mask)[0, 0] == 7.0


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
    mask = np.zeros((20, 20), bool)
    mask[8:12, 8:12] = True
    for value, message in ((np.nan, "NaN"), (1.5, "outside")):
        bad = t.copy()
        bad[7, 9] = value  # on the mask's boundary: read by the solve
        with pytest.raises(ValueError, match=f"target .*{message}"):
            synth.poisson_blend(bad, t, mask)
        with pytest.raises(ValueError, match=f"source .*{message}"):
            synth.poisson_blend(t, bad, mask)
    with pytest.raises(ValueError, match="dtype uint8"):
        synth.poisson_blend(t, (t * 255).astype(np.uint8), mask)
    with pytest.raises(ValueError, match="0 and 1"):
        synth.poisson_blend(t, t, np.full((20, 20), 0.5))


def _odd_masks():
    shape = (61, 72)
    single = np.zeros(shape, bool)
    single[30, 40] = True
    line = np.zeros(shape, bool)
    line[10, 5:60] = True
    ring = _ellipse(shape, (30, 36), (25, 30)) & ~_ellipse(shape, (30, 36), (23, 28))
    all_but_corner = np.ones(shape, bool)
    all_but_corner[-1, -1] = False
    return {"single pixel": single, "one-pixel line": line, "thin ring": ring, "all but one corner": all_but_corner,
            "odd-sized box": _ellipse(shape, (30, 35), (17, 21))}


@pytest.mark.parametrize("name", list(_odd_masks()))
def test_multigrid_cases_match_the_direct_solve(name):
    # the 2D solver's V-cycle coarsens the mask: single pixels, lines, rings, a mask that leaves one
    # Neumann corner as its only boundary and odd sides all take paths of their own
    mask = _odd_masks()[name]
    target = smooth_image(mask.shape, seed=7)
    source = smooth_image(mask.shape, seed=8)[::-1].copy()
    out = synth.poisson_blend(target, source, mask, clip=False)
    assert np.abs(out - exact_poisson(target, source, mask)).max() < 1e-3


def test_iterations_do_not_grow_with_the_lesion():
    # plain diagonal-preconditioned CG needs iterations proportional to the mask's diameter
    # (49 on an 80 x 64 ellipse, more on larger); the multigrid-preconditioned solve needs a few
    from synth import kernels

    counts = []
    for radius in (10, 20, 40, 80):
        shape = (2 * radius + 8, 2 * radius + 8)
        mask = _ellipse(shape, (radius + 4, radius + 4), (radius, 0.8 * radius))
        target, source = smooth_image(shape, seed=radius), smooth_image(shape, seed=radius + 1)
        out, iterations, _ = kernels.poisson_2d(target, source, mask.astype(np.uint8), False, 1e-4, 2000, False)
        assert np.abs(out - exact_poisson(target, source, mask)).max() < 1e-3
        counts.append(iterations)
    assert max(counts) <= 10, counts
