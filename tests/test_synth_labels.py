"""Ground truth that marks the change, and lesions that stay in the anatomy: over many seeded samples of
every task, 2D and 3D, on brain-like images with their anatomy."""
from __future__ import annotations

import numpy as np
import pytest

import synth
from synth.tasks.base import CHANGE_TOLERANCE


@pytest.fixture(scope="module")
def brain():
    """MNI152 (nilearn's, skull-stripped) at 96 px: two axial slices and a 48^3 volume, with brain masks."""
    from pipelines.brain import load_mni_brain
    from pipelines.brain import square as _square

    volume, mask = load_mni_brain()
    zs = (int(0.4 * volume.shape[0]), int(0.6 * volume.shape[0]))
    slices = [(np.clip(_square(volume[z], 96, "area"), 0, 1), _square(mask[z], 96, "mask") > 0.5) for z in zs]
    step = max(1, min(volume.shape) // 48)
    cube = np.ascontiguousarray(volume[::step, ::step, ::step][:48, :48, :48])
    fg = np.ascontiguousarray(mask[::step, ::step, ::step][:48, :48, :48])
    return {"2d": slices, "3d": [(np.clip(cube, 0, 1).astype(np.float32), fg)]}


def samples(brain, dims: str, modality: str, task: str, n: int):
    config = synth.SynthesisConfig(modality=modality)
    for i, seed in enumerate(synth.spawn_seeds(11, n)):
        image, fg = brain[dims][i % len(brain[dims])]
        out, mask, _ = synth.synthesize(image, rng=seed, foreground=fg, config=config, task=task,
                                        layout="DHW" if dims == "3d" else None)
        yield image, fg, out, mask > 0


TASKS = [t for t in synth.TASKS if t != "identity"]


@pytest.mark.parametrize("dims, n", [("2d", 40), ("3d", 6)])
@pytest.mark.parametrize("task", TASKS)
def test_the_mask_covers_every_changed_pixel_and_brain_lesions_stay_in_the_brain(brain, dims, n, task):
    for image, fg, out, mask in samples(brain, dims, "brain_mri", task, n):
        changed = np.abs(out - image) > CHANGE_TOLERANCE
        assert not (changed & ~mask).any(), "a pixel changed by more than two grey levels is not in the mask"
        assert not (mask & ~fg).any() and np.array_equal(out[~fg], image[~fg])  # cut to the brain


@pytest.mark.parametrize("modality", ["generic", "breast_ultrasound", "chest_xray"])
def test_other_modalities_keep_the_half_rule(brain, modality):
    """Not cut: each lesion is drawn with at least half of it on the anatomy; over a task pool's samples
    the share of changed pixels outside it stays under a half (measured 0.00-0.24 per task)."""
    outside = changed = 0
    for task in TASKS:
        for image, fg, out, mask in samples(brain, "2d", modality, task, 20):
            moved = np.abs(out - image) > CHANGE_TOLERANCE
            assert not (moved & ~mask).any()
            outside += int((moved & ~fg).sum())
            changed += int(moved.sum())
    assert outside / changed < 0.5
