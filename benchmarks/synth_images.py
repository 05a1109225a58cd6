"""The test images of the engine's benchmarks (``synth_speed.py``): a brain-like image, and the Poisson cases
(sparse blobs, compact ellipses on that image and on MNI152 slices) with their exact solve."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth.tasks.masks import perlin_field  # noqa: E402


def brain_like(shape, seed=0):
    """A skull-stripped-brain-like test image: textured ellipse on black, and its mask."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    fg = sum((g / r) ** 2 for g, r in zip(grids, (0.85, 0.7, 0.8)[-len(shape):])) <= 1
    texture = 0.55 + 0.2 * np.sin(grids[-1] * 23) * np.cos(grids[-2] * 17) + 0.05 * rng.random(shape)
    return np.where(fg, np.clip(texture, 0, 1), 0).astype(np.float32), fg


def exact_solve(target, guide, mask):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from synth_helpers import exact_poisson

    return exact_poisson(target, guide, mask)


def mni_slices():
    """Two axial slices of nilearn's MNI152 brain at 224 px, the second flipped: a real target and source."""
    from pipelines.brain import load_mni_brain, square

    volume, _ = load_mni_brain()
    target = square(volume[80], 224, "area")
    source = np.ascontiguousarray(square(volume[95], 224, "area")[:, ::-1])
    return np.clip(target, 0, 1).astype(np.float32), np.clip(source, 0, 1).astype(np.float32)


def poisson_cases():
    """(label, target, source, mask): sparse Perlin blobs in 64 / 96 px boxes, and the compact lesions
    users make, filled ellipses of about 1,000, 2,000 and 4,000 pixels (over half of their bounding box),
    on the synthetic brain-like image and on MNI brain slices."""
    target, _ = brain_like((224, 224), 1)
    source, _ = brain_like((224, 224), 2)
    source = np.ascontiguousarray(source[::-1])
    cases = []
    for size in (64, 96):
        # an irregular patch: a Perlin blob inside a size x size box
        noise = perlin_field((size, size), (2, 2), 0.3, 7)
        yy, xx = np.mgrid[:size, :size]
        blob = (noise + 0.5 * (1 - ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2) ** 2) > 0.35)
        blob[[0, -1], :] = False
        blob[:, [0, -1]] = False
        mask = np.zeros((224, 224), bool)
        mask[80:80 + size, 70:70 + size] = blob
        cases.append((f"{size}x{size} sparse blob", target, source, mask))
    mni_target, mni_source = mni_slices()
    for name, t, s in (("", target, source), (", MNI slice", mni_target, mni_source)):
        for a, b in ((20, 16), (30, 22), (40, 32)):
            m = np.zeros((224, 224), np.uint8)
            cv2.ellipse(m, (112, 100), (a, b), 30, 0, 360, 1, -1)
            cases.append((f"compact ellipse {2 * a}x{2 * b}{name}", t, s, m > 0))
    return cases
