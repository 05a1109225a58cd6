"""CPU speed of FusionMedCLIP: forward, forward+backward, and the stage-2 feature-cache speed-up.

Random weights (nothing is downloaded). Times are medians per image over a few
iterations after one warm-up.

    .venv/bin/python benchmarks/model_speed.py --threads 2 --batch 2 --cache-batch 8 --iters 3
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from model import FusionLoss, FusionMedCLIP, FusionMedCLIPConfig

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def median_time(fn, iters: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch_of(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch, 1, size, size)
    mask = torch.zeros(batch, 1, size, size)
    mask[0, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    return x, mask


def bench_stage(arch: str, size: int, batch: int, cache_batch: int, iters: int, stage: int) -> dict[str, float]:
    torch.manual_seed(0)
    x, mask = batch_of(batch, size)
    loss = FusionLoss()
    res: dict[str, float] = {}
    m = FusionMedCLIP(FusionMedCLIPConfig(arch=arch, pretrained=None, image_size=size, stage=stage))

    def fwd():
        with torch.no_grad():
            m(x)

    def step_full():
        m.zero_grad(set_to_none=True)
        loss(m(x), mask).total.backward()

    m.eval()
    res[f"stage{stage}_forward_ms"] = median_time(fwd, iters) / batch * 1e3
    m.train()
    res[f"stage{stage}_train_step_ms"] = median_time(step_full, iters) / batch * 1e3
    if stage == 3:
        return res

    # The text tower runs once per step whatever the batch, so the cache's gain depends on the
    # batch size: measure it at the training batch size (method.md: 8).
    cx, cmask = batch_of(cache_batch, size)
    feats = m.extract_features(cx)

    def step_uncached():
        m.zero_grad(set_to_none=True)
        loss(m(cx), cmask).total.backward()

    def step_cached():
        m.zero_grad(set_to_none=True)
        loss(m.forward_features(feats), cmask).total.backward()

    res[f"b{cache_batch}_stage2_step_ms"] = median_time(step_uncached, iters) / cache_batch * 1e3
    res[f"b{cache_batch}_cached_step_ms"] = median_time(step_cached, iters) / cache_batch * 1e3
    res["cache_speedup"] = res[f"b{cache_batch}_stage2_step_ms"] / res[f"b{cache_batch}_cached_step_ms"]
    with torch.no_grad():
        res["text_features_ms_per_step"] = median_time(m.text_features, iters) * 1e3
    return res


def bench_arch(arch: str, size: int, batch: int, cache_batch: int, iters: int) -> dict[str, float]:
    res = bench_stage(arch, size, batch, cache_batch, iters, stage=2)
    gc.collect()
    res.update(bench_stage(arch, size, batch, cache_batch, iters, stage=3))
    gc.collect()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--cache-batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=["tiny", "ViT-B-16", "ViT-L-14"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "fmc-tiny-bench.json").write_text(json.dumps(TINY))
        open_clip.add_model_config(d)
        for arch in args.archs:
            name, size = ("fmc-tiny-bench", 32) if arch == "tiny" else (arch, 224)
            res = bench_arch(name, size, args.batch, args.cache_batch, args.iters)
            cells = ", ".join(f"{k}={v:.2f}" for k, v in res.items())
            print(f"{arch} ({size}px, batch {args.batch}, {args.threads} threads, ms/image): {cells}", flush=True)


if __name__ == "__main__":
    main()
