"""The config of ``fmclip pretrain`` (stage 1, method.md section 3): sections ``model``, ``train`` and
``data``, read and overridden by the machinery of ``fmclip train`` (``train_config.load_config``).

Example:
    >>> cfg = load_pretrain_config(None, ["train.epochs=3", "model.arch=ViT-B-16"])
    >>> cfg["train"]["lr"], cfg["train"]["layer_decay"], cfg["train"]["epochs"], cfg["model"]["arch"]
    (3e-06, 0.8, 3, 'ViT-B-16')
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .train_config import PRECISIONS, ConfigError, load_config

MODEL_DEFAULTS: dict[str, Any] = {
    "arch": "ViT-L-14",
    "pretrained": "openai",  # the starting weights: a tag, a file, hf-hub:ORG/REPO or local-dir:FOLDER
    "image_size": 224,
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "epochs": 50,  # at most: early stopping usually ends the run sooner
    "batch_size": 32,  # global, split evenly over DDP ranks
    "lr": 3.0e-6,  # the last block's; each block below it gets layer_decay times the one above
    "min_lr": 1.0e-7,
    "warmup_epochs": 5,
    "layer_decay": 0.8,
    "weight_decay": 0.05,
    "betas": [0.9, 0.999],
    "eps": 1.0e-8,
    "label_smoothing": 0.1,
    "mixup_alpha": 0.2,  # 0: no mixup
    "text_mixup": True,  # mix the captions' embeddings with the images' weights (else: mixed targets)
    "dropout": 0.1,  # on the image embedding, before normalisation
    "patience": 5,  # epochs without a validation-loss improvement larger than min_delta
    "min_delta": 1.0e-4,
    # training transforms (method.md names them; these amounts are ours)
    "crop_scale": [0.5, 1.0],
    "hflip": True,
    "color_jitter": 0.2,  # brightness and contrast
    "rotation_deg": 10.0,
    "val_fraction": 0.05,  # without data.val_pairs: a seeded share of the pairs
    "precision": "auto",  # auto: amp_bf16 on CUDA, fp32 on CPU
    "device": "auto",
    "threads": None,
    "keep": 2,  # epoch_N.pt files kept
}
DATA_DEFAULTS: dict[str, Any] = {
    "pairs": None,
    "val_pairs": None,
    "workers": None,  # null: 2 (decoding and augmenting run beside the step)
}


def pretrain_defaults() -> dict[str, Any]:
    return {"model": copy.deepcopy(MODEL_DEFAULTS), "train": copy.deepcopy(TRAIN_DEFAULTS),
            "data": copy.deepcopy(DATA_DEFAULTS)}


def check_pretrain(config: dict[str, Any]) -> None:
    """Refuse settings that cannot work, naming the key."""
    t = config["train"]
    for key in ("epochs", "batch_size", "keep", "patience"):
        if t[key] < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {t[key]}")
    if t["batch_size"] < 2:
        raise ConfigError("train.batch_size must be at least 2: the contrastive loss needs other pairs")
    for key in ("lr", "min_lr", "weight_decay", "mixup_alpha", "min_delta", "dropout", "color_jitter",
                "rotation_deg", "warmup_epochs"):
        if t[key] < 0:
            raise ConfigError(f"train.{key} must not be negative, got {t[key]}")
    for key in ("label_smoothing", "dropout", "val_fraction"):
        if not 0.0 <= t[key] < 1.0:
            raise ConfigError(f"train.{key} must lie in [0, 1), got {t[key]}")
    if not 0.0 < t["layer_decay"] <= 1.0:
        raise ConfigError(f"train.layer_decay must lie in (0, 1], got {t['layer_decay']}")
    scale = t["crop_scale"]
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ConfigError(f"train.crop_scale must be two numbers 0 < a <= b <= 1, got {t['crop_scale']}")
    if len(t["betas"]) != 2:
        raise ConfigError(f"train.betas must be two numbers, got {t['betas']}")
    if t["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {t['precision']!r}")
    if int(config["model"]["image_size"]) < 8:
        raise ConfigError(f"model.image_size must be at least 8, got {config['model']['image_size']}")


def load_pretrain_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file, then the dotted overrides, checked."""
    return load_config(path, overrides, defaults=pretrain_defaults, checked=check_pretrain)
