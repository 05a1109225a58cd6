"""Training speed through the real trainer (``pipelines.trainer.train``) from a real cache.

Random weights (nothing is downloaded). A cache of brain slices of nilearn's MNI152 template at 224 px is
made first (or ``--cache``). For each architecture and stage: steps/s at batch 8, and the share of each
step spent waiting for data (the loader reads in the training process: ``data.workers`` is 0 on CPU).
Then stage 2's feature cache: an epoch that fills it, an epoch that reads it, against the same two epochs
through the backbone, with the losses of both.

    .venv/bin/python benchmarks/train_speed.py --archs ViT-B-16 ViT-L-14 --steps 3
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pipelines import cli
from pipelines.brain import load_mni_brain
from pipelines.brain import square as _square
from pipelines.train_config import load_config
from pipelines.trainer import train


def make_cache(folder: Path, samples: int) -> Path:
    slices = folder / "slices"
    if not slices.is_dir():
        slices.mkdir()
        volume, _ = load_mni_brain()
        for z in np.linspace(0.3 * volume.shape[0], 0.75 * volume.shape[0], 16).astype(int):
            image = np.clip(_square(volume[z], 224, "area"), 0, 1)
            cv2.imwrite(str(slices / f"z{z:03d}.png"), (image * 255).astype(np.uint8))
    cache = folder / f"brain{samples}.zarr"
    assert cli.main(["generate", "--data", str(slices), "--out", str(cache), "--samples", str(samples), "--seed", "0",
                     "--workers", "2", "--no-progress"]) == 0
    return cache


def run(cache: Path, out: Path, name: str, settings: list[str]) -> list[dict]:
    config = load_config(None, [f"data.cache={cache}", "model.pretrained=null", "train.val_fraction=0",
                                "train.batch_size=8", *settings])
    path = train(config, out=out, name=name, progress=False)
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["ViT-B-16", "ViT-L-14"])
    ap.add_argument("--stages", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--steps", type=int, default=3, help="steps per timed epoch (two epochs: the first warms up)")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--cache-samples", type=int, default=64, help="samples of the feature-cache comparison (one epoch)")
    ap.add_argument("--prompts", default="coop_umls")
    ap.add_argument("--no-feature-cache", action="store_true", help="skip the feature-cache comparison")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = args.cache or make_cache(tmp, 512)
        common = [f"model.prompt_mode={args.prompts}"]
        for arch in args.archs:
            for stage in args.stages:
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                rows = run(cache, tmp, f"{arch}-{stage}", [f"model.arch={arch}", f"model.stage={stage}",
                                                             "train.epochs=2", f"train.epoch_samples={8 * args.steps}",
                                                             "train.feature_cache=off", *common])
                timed = rows[-1]
                memory = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                          if torch.cuda.is_available() else "")
                print(f"{arch} stage {stage}: {timed['samples_per_s'] / 8:.3f} steps/s "
                      f"({timed['seconds'] / args.steps:.2f} s a step of 8, after a first epoch of "
                      f"{rows[0]['seconds'] / args.steps:.2f} s a step); data wait {100 * timed['data_wait']:.2f} % "
                      f"of the epoch{memory}; whole run {time.perf_counter() - started:.0f} s", flush=True)
        if args.no_feature_cache:
            return
        # Stage 2's feature cache: a cache of n samples, two epochs of one pass each, with and without it.
        n, arch = args.cache_samples, args.archs[0]
        small = make_cache(tmp, n)
        feature = [f"model.arch={arch}", "model.stage=2", "train.epochs=2", f"train.epoch_samples={n}", *common]
        with_cache = run(small, tmp, "cached", feature)
        without = run(small, tmp, "plain", [*feature, "train.feature_cache=off"])
        print(f"{arch} stage 2, two passes over {n} samples:")
        for label, rows in (("feature cache", with_cache), ("backbone", without)):
            print(f"  {label}: epoch 1 {rows[0]['seconds']:.1f} s, epoch 2 {rows[1]['seconds']:.1f} s, "
                  f"losses {rows[0]['loss']:.7f} {rows[1]['loss']:.7f}")
        print(f"  epoch 2 through the cache is {without[1]['seconds'] / with_cache[1]['seconds']:.1f}x faster than "
              "through the backbone", flush=True)

if __name__ == "__main__":
    main()
