"""The embedded brain: nilearn's MNI152 template (shipped in its wheel) as a small dataset of its own.

``write_folder_dataset`` writes anomalib's Folder layout (``normal/``, ``normal_test/``, ``abnormal/``,
``mask/``) from axial slices, each with an acquisition of its own (bias field, gain, contrast, noise, a small
rotation) so that no two are alike: a training pool of normal slices, and a test pool of other slices, half
of them normal and half with synthetic lesions of the given task families, with their masks. ``fmclip
prepare folder`` then prepares it like any downloaded dataset.

Example:
    >>> counts = write_folder_dataset("raw_brain", tasks=["gaussian_intensity"], size=224)   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Axial positions (shares of the volume's height) the demo draws slices from: through the brain, the low
# slices included, whose temporal lobes and cerebellum lie apart.
SLICE_RANGE = (0.28, 0.72)


def load_mni_brain() -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 template as a (D, H, W) float32 volume in [0, 1] (axial slices first, anterior up),
    skull-stripped, and its brain mask, both from the nilearn package."""
    from nilearn import datasets

    from dataprep import PercentileNormalize

    template = datasets.load_mni152_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    # RAS (x, y, z) -> (z, y, x), flip y so anterior is at the top of each slice
    volume = np.transpose(np.asarray(template.get_fdata(), np.float32), (2, 1, 0))[:, ::-1, :]
    mask = np.transpose(np.asarray(brain.get_fdata()) > 0.5, (2, 1, 0))[:, ::-1, :]
    # skull-stripped, then dataprep's brain-MRI normalisation (0.5/99.5 percentiles of the brain)
    volume = PercentileNormalize(nonzero=True)((volume * mask)[None])[0] * mask
    return np.ascontiguousarray(volume, np.float32), np.ascontiguousarray(mask)


def square(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """A slice at the working size, aspect kept with padding (dataprep's resize)."""
    from dataprep import ResizeKeepAspect

    return ResizeKeepAspect(size, mode)(image[None].astype(np.float32))[0]


def acquire(image: np.ndarray, anatomy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scanner's look at a slice: a smooth bias field, gain and contrast, Rician-like noise and a rotation
    of a few degrees (the anatomy rotated with it)."""
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w] / max(h, w) - 0.5
    a = rng.uniform(-0.3, 0.3, 3)
    x = image * np.exp(a[0] * xx + a[1] * yy + a[2] * (xx ** 2 + yy ** 2)) * rng.uniform(0.85, 1.1)
    x = np.clip(x, 0, 1) ** rng.uniform(0.85, 1.2)
    sigma = rng.uniform(0.005, 0.02)
    x = np.abs(x + rng.normal(0, sigma, x.shape) + 1j * rng.normal(0, sigma, x.shape))
    turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-6, 6), 1.0)
    x = cv2.warpAffine(np.clip(x, 0, 1).astype(np.float32), turn, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(anatomy.astype(np.uint8), turn, (w, h), flags=cv2.INTER_NEAREST) > 0
    return np.clip(x, 0, 1), mask


def _png(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))


def write_folder_dataset(root: str | Path, *, tasks: list[str], size: int = 224, slices: int = 48,
                         seed: int = 0) -> dict[str, int]:
    """Write the demo's raw dataset; returns the number of files of each folder.

    ``slices`` training and ``slices`` test slices interleave over ``SLICE_RANGE`` (no slice is in both). Each
    test slice is written twice, each time with an acquisition of its own: once normal, once with lesions of
    ``tasks`` (brain MRI profile, inside the brain) and their mask. With one template brain, a slice's level
    would otherwise decide its score: normal and abnormal test images must share the anatomy's distribution,
    as they do in a dataset of many subjects.
    """
    import synth

    root = Path(root)
    for name in ("normal", "normal_test", "abnormal", "mask"):
        (root / name).mkdir(parents=True, exist_ok=True)
    volume, brain = load_mni_brain()
    lo, hi = (int(f * volume.shape[0]) for f in SLICE_RANGE)
    zs = np.linspace(lo, hi, 2 * slices).astype(int)
    rng = np.random.default_rng(seed)
    config = synth.SynthesisConfig(modality="brain_mri", task_weights=tuple((t, 1.0) for t in tasks))
    seeds = iter(synth.spawn_seeds(seed, len(zs)))
    for i, z in enumerate(zs):
        slice_, anatomy = np.clip(square(volume[z], size, "area"), 0, 1), square(brain[z], size, "mask") > 0.5
        image, _ = acquire(slice_, anatomy, rng)
        lesion_seed = next(seeds)
        if i % 2 == 0:
            _png(root / "normal" / f"z{z:03d}.png", image)
            continue
        _png(root / "normal_test" / f"z{z:03d}.png", image)
        image, fg = acquire(slice_, anatomy, rng)
        out, mask, _ = synth.synthesize(image, rng=lesion_seed, foreground=fg, config=config)
        _png(root / "abnormal" / f"z{z:03d}_lesion.png", out)
        cv2.imwrite(str(root / "mask" / f"z{z:03d}_lesion_mask.png"), (mask > 0).astype(np.uint8) * 255)
    return {name: len(list((root / name).iterdir())) for name in ("normal", "normal_test", "abnormal", "mask")}
