"""``fmclip demo``: a gallery of every anomaly task on real brain MRI.

Uses the MNI152 T1 template and its brain mask that ship inside the nilearn wheel
(nothing is downloaded): axial slices at the working size with the brain mask as
the anatomy, plus one 3D volume. Writes a PNG per task, a contact sheet, and the
JSON record of every sample, then prints where they are.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

import synth
from dataprep import PercentileNormalize, ResizeKeepAspect

DEMO_SLICES = (0.40, 0.52, 0.64)  # axial positions, as fractions of the volume's height
COLOURS = {"mask": (0, 0, 255)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (created)")
    parser.add_argument("--size", type=int, default=224, help="working size of the 2D slices")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole gallery")
    parser.add_argument("--samples", type=int, default=3, help="samples per task")


def load_mni_brain() -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 template as a (D, H, W) float32 volume in [0, 1] (axial slices first,
    anterior up) and its brain mask, both from the nilearn package."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    # RAS (x, y, z) -> (z, y, x), flip y so anterior is at the top of each slice
    volume = np.transpose(np.asarray(template.get_fdata(), np.float32), (2, 1, 0))[:, ::-1, :]
    mask = np.transpose(np.asarray(brain.get_fdata()) > 0.5, (2, 1, 0))[:, ::-1, :]
    # skull-stripped, then dataprep's brain-MRI normalisation (0.5/99.5 percentiles of the brain)
    volume = PercentileNormalize(nonzero=True)((volume * mask)[None])[0] * mask
    return np.ascontiguousarray(volume, np.float32), np.ascontiguousarray(mask)


def _square(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """A slice at the working size, aspect kept with padding (dataprep's resize)."""
    return ResizeKeepAspect(size, mode)(image[None].astype(np.float32))[0]


def _panel(image: np.ndarray, mask: np.ndarray, anomalous: np.ndarray, title: str) -> np.ndarray:
    grey = lambda a: cv2.cvtColor((np.clip(a, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)  # noqa: E731
    overlay = grey(anomalous)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, COLOURS["mask"], 1)
    diff = np.abs(anomalous - image)
    diff = grey(diff / max(float(diff.max()), 1e-6))
    row = np.concatenate([grey(image), grey(anomalous), overlay, diff], axis=1)
    cv2.putText(row, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    return row


def run(args: argparse.Namespace) -> int:
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    volume, brain = load_mni_brain()
    slices = [int(f * volume.shape[0]) for f in DEMO_SLICES]
    images = [_square(volume[z], args.size, "area") for z in slices]
    masks = [_square(brain[z], args.size, "mask") > 0.5 for z in slices]
    config = synth.SynthesisConfig(modality="brain_mri")
    seeds = iter(synth.spawn_seeds(args.seed, 10_000))
    records, sheet = [], []
    for task in synth.TASKS:
        rows = []
        for i in range(args.samples):
            k = i % len(images)
            image = np.clip(images[k], 0.0, 1.0)
            result = synth.synthesize(image, rng=next(seeds), foreground=masks[k], task=task, config=config)
            rows.append(_panel(image, result.mask, result.image, f"{task} #{i}"))
            records.append({"slice": slices[k], **result.record.to_dict()})
        figure = np.concatenate(rows, axis=0)
        cv2.imwrite(str(out_dir / f"{task}.png"), figure)
        sheet.append(rows[0])
    cv2.imwrite(str(out_dir / "gallery.png"), np.concatenate(sheet, axis=0))

    # 3D: the whole brain volume at 2 mm, one sample per task, shown as its central slice
    small = np.ascontiguousarray(volume[::2, ::2, ::2])
    small_brain = np.ascontiguousarray(brain[::2, ::2, ::2])
    rows = []
    for task in synth.TASKS:
        if task == "identity":
            continue
        result = synth.synthesize(small, rng=next(seeds), foreground=small_brain, task=task, config=config,
                                  layout="DHW")
        z = int(np.argmax(result.mask.sum(axis=(1, 2))))
        rows.append(_panel(_square(small[z], args.size, "linear"), _square(result.mask[z], args.size, "mask"),
                           _square(result.image[z], args.size, "linear"), f"3D {task} z={z}"))
        records.append({"volume": list(small.shape), **result.record.to_dict()})
    cv2.imwrite(str(out_dir / "gallery_3d.png"), np.concatenate(rows, axis=0))
    with open(out_dir / "records.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    print(f"fmclip demo: {len(records)} samples of {len(synth.TASKS)} tasks on the MNI152 brain "
          f"in {time.perf_counter() - started:.1f} s")
    print(f"  figures: {out_dir.resolve()}/<task>.png, gallery.png, gallery_3d.png "
          "(columns: normal, anomalous, mask outline, |difference|)")
    print(f"  records: {(out_dir / 'records.jsonl').resolve()}")
    return 0
