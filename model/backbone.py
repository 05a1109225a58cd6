"""Loading the open_clip backbone and fingerprinting its weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import open_clip
import torch
from torch import nn

from .config import FusionMedCLIPConfig, default_feature_blocks

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


def create_clip(config: FusionMedCLIPConfig) -> nn.Module:
    """Build the open_clip model the config names, through open_clip's own loaders.

    A ``hf-hub:`` or ``local-dir:`` value of ``pretrained`` is used as the model
    name (open_clip then reads architecture and weights from there); anything
    else is a pretrained tag or a checkpoint file for ``arch``.
    """
    src = config.pretrained
    if src is not None and src.startswith(_SCHEMAS):
        clip = open_clip.create_model(src, force_image_size=config.image_size)
    else:
        clip = open_clip.create_model(config.arch, pretrained=src, force_image_size=config.image_size)
    clip.eval()
    return clip


def vision_transformer(clip: nn.Module) -> nn.Module:
    """The native open_clip VisionTransformer, or a clear error for other towers."""
    visual = clip.visual
    if not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise NotImplementedError(
            f"FusionMedCLIP needs open_clip's native VisionTransformer tower; this model has "
            f"{type(visual).__name__} (e.g. timm towers such as BiomedCLIP's are not supported yet)"
        )
    return visual


def backbone_info(clip: nn.Module) -> BackboneInfo:
    visual = vision_transformer(clip)
    pp = open_clip.get_model_preprocess_cfg(clip)
    mean = tuple(float(m) for m in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(s) for s in pp.get("std", open_clip.OPENAI_DATASET_STD))
    patch = visual.patch_size
    image = visual.image_size
    if patch[0] != patch[1] or image[0] != image[1]:
        raise NotImplementedError("only square patches and square input sizes are supported")
    text_width = clip.token_embedding.embedding_dim if hasattr(clip, "token_embedding") else -1
    return BackboneInfo(
        depth=len(visual.transformer.resblocks),
        width=visual.transformer.width,
        embed_dim=int(visual.output_dim),
        text_width=int(text_width),
        patch_size=int(patch[0]),
        image_size=int(image[0]),
        mean=mean,
        std=std,
    )


def resolve_blocks(config: FusionMedCLIPConfig, depth: int) -> tuple[int, ...]:
    """The 1-indexed feature blocks J, checked against the backbone depth."""
    blocks = config.feature_blocks or default_feature_blocks(depth)
    if max(blocks) > depth:
        raise ValueError(f"feature_blocks {blocks} do not exist in a ViT of depth {depth} (1-indexed, max {depth})")
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
