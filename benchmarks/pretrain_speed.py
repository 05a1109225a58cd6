"""Stage 1's data pipeline against its training step, on the CPU (issue: the pipeline must not be the
bottleneck, under 5 % of step time waiting).

Makes ROCO-like pairs (512 x 512 grey JPEGs with captions), then measures:
- the data pipeline alone: decode + augment to 224 px, images/s with 0 loader workers (one core);
- the training step alone: forward and backward of a random ViT-B-32 vision tower, batch 32 (the smallest
  ViT open_clip has: the method's ViT-L-14 steps are about 13x slower, so the pipeline's lead only grows);
- ``fmclip pretrain`` end to end (ViT-B-32, random weights, 2 loader workers): its logged data wait.

    .venv/bin/python benchmarks/pretrain_speed.py [--pairs 128]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_pairs(folder: Path, n: int) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    rows = []
    for i in range(n):
        img = 0.3 + 0.2 * np.sin(xx / (20 + i % 7)) * np.cos(yy / (30 + i % 5)) + 0.1 * rng.random((512, 512))
        cv2.imwrite(str(folder / "images" / f"{i}.jpg"), (img.clip(0, 1) * 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append(f"{i}.jpg,case {i}: axial computed tomography of the chest showing finding {i % 11}")
    (folder / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    return folder


def pipeline_images_per_s(folder: Path, n: int) -> float:
    from torch.utils.data import DataLoader

    from pipelines.pair_data import PairImages

    augment = {"crop_scale": [0.5, 1.0], "hflip": True, "color_jitter": 0.2, "rotation_deg": 10.0}
    data = PairImages([str(folder / "images" / f"{i}.jpg") for i in range(n)], size=224,
                      mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), augment=augment, seed=0)
    loader = DataLoader(data, batch_size=32, num_workers=0)
    next(iter(loader))  # imports and first-call costs
    started = time.perf_counter()
    seen = sum(len(batch[0]) for batch in loader)
    return seen / (time.perf_counter() - started)


def step_images_per_s(arch: str, steps: int = 2) -> float:
    import open_clip

    clip = open_clip.create_model(arch, pretrained=None)
    visual = clip.visual.train()
    optimizer = torch.optim.AdamW(visual.parameters(), lr=1e-6)
    x = torch.randn(32, 3, 224, 224)
    text = torch.nn.functional.normalize(torch.randn(32, visual.output_dim), dim=-1)
    from model import clip_loss

    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = clip_loss(visual(x), text, 100.0, 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return 32 / float(np.median(times[1:]))


def end_to_end(folder: Path, out: Path) -> list[dict]:
    from pipelines.pretrain_config import load_pretrain_config
    from pipelines.pretrainer import pretrain

    config = load_pretrain_config(None, [f"data.pairs={folder}", "model.arch=ViT-B-32", "model.pretrained=null",
                                         "train.epochs=2", "train.val_fraction=0.25", "data.workers=2"])
    run = pretrain(config, out=out, name="bench", progress=False)
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_pairs(Path(tmp) / "pairs", args.pairs)
        pipeline = pipeline_images_per_s(folder, args.pairs)
        print(f"data pipeline, 0 workers (one core): {pipeline:.1f} images/s")
        step = step_images_per_s("ViT-B-32")
        print(f"training step ViT-B-32, batch 32, {torch.get_num_threads()} threads: {step:.2f} images/s "
              f"(the pipeline is {pipeline / step:.0f}x faster)")
        for row in end_to_end(folder, Path(tmp) / "runs"):
            print(f"fmclip pretrain ViT-B-32, epoch {row['epoch']}: {row['images_per_s']:.2f} images/s, "
                  f"data wait {100 * row['data_wait']:.2f} % of the epoch")


if __name__ == "__main__":
    main()
