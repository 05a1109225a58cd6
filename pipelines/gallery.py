"""A gallery of every anomaly task on the MNI152 brain: a PNG per task, a contact sheet, a 3D sheet, and the
JSON record of every sample (each replays with ``synth.replay``).

Example:
    >>> files = write_gallery("demo_output/gallery", size=224, seed=0, samples=3)   # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .brain import load_mni_brain, square

GALLERY_SLICES = (0.40, 0.52, 0.64)  # axial positions, as shares of the volume's height
MASK_COLOUR = (0, 0, 255)


def panel(image: np.ndarray, mask: np.ndarray, anomalous: np.ndarray, title: str) -> np.ndarray:
    """Normal, anomalous, anomalous with the mask's outline, and |difference| side by side (BGR uint8)."""
    grey = lambda a: cv2.cvtColor((np.clip(a, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)  # noqa: E731
    overlay = grey(anomalous)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, MASK_COLOUR, 1)
    diff = np.abs(anomalous - image)
    diff = grey(diff / max(float(diff.max()), 1e-6))
    row = np.concatenate([grey(image), grey(anomalous), overlay, diff], axis=1)
    cv2.putText(row, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    return row


def write_gallery(out_dir: str | Path, size: int = 224, seed: int = 0, samples: int = 3) -> dict[str, Path]:
    """Write the gallery into ``out_dir``; returns its files by name (``gallery``, ``gallery_3d``, ``records``)."""
    import synth

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    volume, brain = load_mni_brain()
    slices = [int(f * volume.shape[0]) for f in GALLERY_SLICES]
    images = [np.clip(square(volume[z], size, "area"), 0.0, 1.0) for z in slices]
    masks = [square(brain[z], size, "mask") > 0.5 for z in slices]
    config = synth.SynthesisConfig(modality="brain_mri")
    seeds = iter(synth.spawn_seeds(seed, 10_000))
    records, sheet = [], []
    for task in synth.TASKS:
        rows = []
        for i in range(samples):
            k = i % len(images)
            result = synth.synthesize(images[k], rng=next(seeds), foreground=masks[k], task=task, config=config)
            rows.append(panel(images[k], result.mask, result.image, f"{task} #{i}"))
            records.append({"slice": slices[k], **result.record.to_dict()})
        cv2.imwrite(str(out_dir / f"{task}.png"), np.concatenate(rows, axis=0))
        sheet.append(rows[0])
    cv2.imwrite(str(out_dir / "gallery.png"), np.concatenate(sheet, axis=0))

    # 3D: the whole brain volume at 2 mm, one sample per task, shown as its slice with the most lesion
    small = np.ascontiguousarray(volume[::2, ::2, ::2])
    small_brain = np.ascontiguousarray(brain[::2, ::2, ::2])
    rows = []
    for task in synth.TASKS:
        if task == "identity":
            continue
        result = synth.synthesize(small, rng=next(seeds), foreground=small_brain, task=task, config=config,
                                  layout="DHW")
        z = int(np.argmax(result.mask.sum(axis=(1, 2))))
        rows.append(panel(square(small[z], size, "linear"), square(result.mask[z], size, "mask"),
                          square(result.image[z], size, "linear"), f"3D {task} z={z}"))
        records.append({"volume": list(small.shape), **result.record.to_dict()})
    cv2.imwrite(str(out_dir / "gallery_3d.png"), np.concatenate(rows, axis=0))
    with open(out_dir / "records.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    return {"gallery": out_dir / "gallery.png", "gallery_3d": out_dir / "gallery_3d.png",
            "records": out_dir / "records.jsonl"}
