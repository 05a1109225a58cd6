"""Loading the open_clip backbone and fingerprinting its weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import open_clip
import torch
from torch import nn

from .config import FusionMedCLIPConfig, default_feature_blocks
from .text_tower import text_tower
from .vision_tower import vision_tower

_SCHEMAS = ("hf-hub:", "local-dir:")


@dataclass(frozen=True)
class BackboneInfo:
    """Dimensions the rest of the model needs, read from the loaded backbone."""

    depth: int
    width: int  # vision transformer width (patch-token channels)
    embed_dim: int  # joint image-text embedding size
    text_width: int
    patch_size: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def create_clip(config: FusionMedCLIPConfig, load_weights: bool = True) -> nn.Module:
    """Build the open_clip model the config names, through open_clip's own loaders.

    A ``hf-hub:`` or ``local-dir:`` value of ``pretrained`` is used as the model
    name (open_clip then reads architecture and weights from there); anything
    else is a pretrained tag or a checkpoint file for ``arch``. With
    ``load_weights=False`` the same architecture gets random weights (the
    weights come later, e.g. from a merged export).
    """
    src = config.pretrained
    # All weights come from `pretrained`: never the towers' own default weights (timm / Hugging Face
    # hub), which open_clip would otherwise fetch for a timm or HF tower when no CLIP checkpoint is found.
    kw = dict(force_image_size=config.image_size, pretrained_image=False, pretrained_text=False)
    if src is not None and src.startswith(_SCHEMAS):
        clip = open_clip.create_model(src, load_weights=load_weights, **kw)
    else:
        clip = open_clip.create_model(config.arch, pretrained=src if load_weights else None, **kw)
    clip.eval()
    return clip


def backbone_info(clip: nn.Module) -> BackboneInfo:
    tower = vision_tower(clip.visual)
    tower.check()
    pp = open_clip.get_model_preprocess_cfg(clip)
    mean = tuple(float(m) for m in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(s) for s in pp.get("std", open_clip.OPENAI_DATASET_STD))
    text = text_tower(clip)
    return BackboneInfo(
        depth=tower.depth,
        width=tower.width,
        embed_dim=tower.embed_dim,
        text_width=text.width if text is not None else -1,
        patch_size=tower.patch_size,
        image_size=tower.image_size,
        mean=mean,
        std=std,
    )


def resolve_blocks(config: FusionMedCLIPConfig, depth: int) -> tuple[int, ...]:
    """The 1-indexed feature blocks J, checked against the backbone depth."""
    blocks = config.feature_blocks or default_feature_blocks(depth)
    if max(blocks) > depth:
        raise ValueError(
            f"feature_blocks {blocks} do not exist in a ViT of depth {depth} (1-indexed, max {depth})"
        )
    return blocks


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over every tensor of ``module.state_dict()`` (names, dtypes, shapes, bytes), in sorted order.

    Independent of device and of the order modules were registered in, so the
    same base weights always give the same hex digest.
    """
    h = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        # bf16 and friends have no numpy dtype: hash the raw bytes through a uint8 view.
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
