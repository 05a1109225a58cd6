"""Benchmark: ``prepare`` of 1,000 PNG images across worker processes (target >= 200 images/s
on 2 cores).

Makes a raw anomalib Folder tree of synthetic 8-bit PNGs (512 x 512, a textured ellipse on
a black background, like a head slice) in a temporary folder, then times ``prepare_dataset`` (read,
generic modality pipeline, foreground mask, 16-bit PNG writes, index and card). The
timed run starts after one warm-up call, so MONAI's import is not counted; the pool's
start-up is counted.

    .venv/bin/python benchmarks/prepare_speed.py [--n 1000] [--workers 2] [--side 512]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_tree(root: Path, n: int, side: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    for cls, count in (("normal", n - n // 5), ("abnormal", n // 5)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            cy, cx = side / 2 + rng.normal(0, side / 40, 2)
            head = ((yy - cy) / (0.42 * side)) ** 2 + ((xx - cx) / (0.36 * side)) ** 2 <= 1
            # texture inside the anatomy, a black background: as in real scans (and as PNG sees them)
            img = np.where(head, 110 + rng.integers(0, 50, (side, side)), 0)
            cv2.imwrite(str(root / cls / f"{cls}{i:04d}.png"), img.astype(np.uint8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from dataprep import prepare_dataset

    tmp = Path(tempfile.mkdtemp(prefix="fmclip_bench_"))
    try:
        make_tree(tmp / "raw", args.n, args.side)
        make_tree(tmp / "warm", 8, args.side)
        prepare_dataset("folder", tmp / "warm", tmp / "warm_out", workers=args.workers)
        rates = []
        for r in range(args.repeats):
            out = tmp / f"out{r}"
            t0 = time.perf_counter()
            card = prepare_dataset("folder", tmp / "raw", out, workers=args.workers)
            dt = time.perf_counter() - t0
            assert card["counts"]["total"] == args.n, card["counts"]
            rates.append(args.n / dt)
            print(f"run {r}: {args.n} images in {dt:.2f} s = {args.n / dt:.0f} images/s", flush=True)
        print(f"median {sorted(rates)[len(rates) // 2]:.0f} images/s ({args.n} PNGs {args.side}x{args.side} -> 224, "
              f"{args.workers} workers)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
