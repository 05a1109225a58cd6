"""Helpers of the training tests: a tiny open_clip model in a local folder (loaded through open_clip's
``local-dir:``, as a user's own checkpoint is, so that subprocesses and torchrun ranks find it too), a
cache made from the session's small images, and the run's outputs read back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import torch

from pipelines import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
MEAN_STD = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def write_model(folder: Path, size: int = 32) -> str:
    """A random tiny CLIP saved as open_clip's local-dir layout; returns the ``pretrained`` value."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(TINY))
    cfg["vision_cfg"]["image_size"] = size
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": MEAN_STD}))
    torch.manual_seed(0)
    clip = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    return f"local-dir:{folder}"


def make_cache(data: Path, out: Path, samples: int, size: int = 32, seed: int = 3, *extra: str) -> Path:
    assert cli.main(["generate", "--data", str(data), "--out", str(out), "--samples", str(samples), "--seed",
                     str(seed), "--size", str(size), "--shard-size", "32", "--chunk-size", "16", "--workers", "1",
                     "--no-progress", *extra]) == 0
    return out


def overrides(model: str, **train) -> list[str]:
    """Settings of a short run of the tiny model: coop prompts (the UMLS ones cost more text), 32 px."""
    base = {"epochs": 3, "epoch_samples": 16, "batch_size": 4, "val_every": 1, "threads": 1}
    base.update(train)
    return [f"model.pretrained={model}", "model.image_size=32", "model.prompt_mode=coop",
            *(f"train.{k}={v}" for k, v in base.items())]


def fmclip(*args: str, **popen) -> subprocess.Popen:
    """``fmclip ...`` in a new process (the tests' own interpreter)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def trainable(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["trainable"]
