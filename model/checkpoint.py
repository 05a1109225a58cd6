"""Checkpoints of the trained parts only, tied to the base weights by a fingerprint; merged exports."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .backbone import create_clip
from .config import FusionMedCLIPConfig
from .fusion import FusionMedCLIP

FORMAT = "fusionmedclip-trainable-v1"
MERGED_FORMAT = "fusionmedclip-merged-v1"


def atomic_save(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then renamed: a crash mid-write never leaves a truncated file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _read(path: str | os.PathLike, expected: str) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != expected:
        raise ValueError(
            f"{path} is not a {expected} file (format {blob.get('format') if isinstance(blob, dict) else None})"
        )
    return blob


def save_checkpoint(model: FusionMedCLIP, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Save the trainable parameters, the config (JSON) and the base-weight fingerprint.

    Example:
        >>> save_checkpoint(model, "run/epoch_3.pt")                # doctest: +SKIP
        >>> model = load_checkpoint("run/epoch_3.pt")               # doctest: +SKIP
    """
    state = {n: p.detach().cpu().clone() for n, p in model.trainable_parameters().items()}
    atomic_save(
        {
            "format": FORMAT,
            "config": model.config.to_json(),
            "base_fingerprint": model.base_fingerprint,
            "trainable": state,
            "extra": extra or {},
        },
        path,
    )


def check_fingerprint(expected: str, actual: str) -> None:
    if expected != actual:
        raise ValueError(
            "checkpoint was trained on other base weights: checkpoint base fingerprint "
            f"{expected}, this model's base fingerprint {actual}. Build the model with the same "
            "`pretrained` source the checkpoint was trained with."
        )


def load_checkpoint(path: str | os.PathLike, model: FusionMedCLIP | None = None) -> FusionMedCLIP:
    """Load trained parts into ``model`` (or into a model built from the stored config).

    Refuses (ValueError, naming both fingerprints) when the model's base weights differ
    from those the checkpoint was trained on, and when parameter names or shapes differ.
    """
    blob = _read(path, FORMAT)
    if model is None:
        model = FusionMedCLIP(FusionMedCLIPConfig.from_json(blob["config"]))
    check_fingerprint(blob["base_fingerprint"], model.base_fingerprint)
    own = model.trainable_parameters()
    saved = blob["trainable"]
    if set(own) != set(saved):
        missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        raise ValueError(
            f"checkpoint does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name, p in own.items():
            if p.shape != saved[name].shape:
                raise ValueError(
                    f"shape of {name}: checkpoint {tuple(saved[name].shape)}, model {tuple(p.shape)}"
                )
            p.copy_(saved[name])
    return model


def save_merged(model: FusionMedCLIP, path: str | os.PathLike) -> None:
    """Deployable export: LoRA folded into the weights, full state dict, no base weights needed to load."""
    merged = model.merged_copy() if model.config.stage == 3 and not model.merged else model
    state = {k: v.detach().cpu().clone() for k, v in merged.state_dict().items()}
    atomic_save(
        {
            "format": MERGED_FORMAT,
            "config": model.config.to_json(),
            "base_fingerprint": model.base_fingerprint,
            "state": state,
        },
        path,
    )


def load_merged(path: str | os.PathLike) -> FusionMedCLIP:
    """Rebuild a merged export with random base weights (no base weights read), then load every weight.

    The architecture still comes from the configured source: for ``hf-hub:``
    models open_clip reads the repo's config and tokenizer (from its cache or
    the hub), for ``local-dir:`` the folder's.
    """
    blob = _read(path, MERGED_FORMAT)
    config = FusionMedCLIPConfig.from_json(blob["config"])
    clip = create_clip(config, load_weights=False)
    model = FusionMedCLIP(config, clip=clip, merged=config.stage == 3)
    model.load_state_dict(blob["state"], strict=True)
    model.base_fingerprint = blob["base_fingerprint"]
    return model
