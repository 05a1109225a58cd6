"""The adapted CLIP of FusionMedCLIP: features, prompts, adapters, LoRA, maps, losses, checkpoints.

Public API::

    from model import FusionMedCLIP, FusionMedCLIPConfig, FusionLoss, build_optimizer
"""

from .adapters import AlignmentAdapter, BlockAdapter, gap_embedding, head_embedding
from .backbone import BackboneInfo, create_clip, weights_fingerprint
from .checkpoint import (
    atomic_save,
    check_fingerprint,
    load_checkpoint,
    load_merged,
    save_checkpoint,
    save_merged,
)
from .config import FusionMedCLIPConfig, default_feature_blocks
from .fusion import FusionMedCLIP, check_unit_range
from .lora import VISION_LORA_TARGETS
from .losses import FusionLoss, LossParts, clip_loss, dice_loss, focal_loss, image_labels
from .optim import LEARNING_RATES, build_optimizer, layer_decay_groups, param_groups
from .prompts import PromptLearner, encode_text_embeddings
from .text_tower import TextTower, text_tower
from .vision_tower import VisionTower, vision_tower

__all__ = [
    "AlignmentAdapter",
    "BackboneInfo",
    "BlockAdapter",
    "FusionLoss",
    "FusionMedCLIP",
    "FusionMedCLIPConfig",
    "LEARNING_RATES",
    "LossParts",
    "PromptLearner",
    "TextTower",
    "VISION_LORA_TARGETS",
    "VisionTower",
    "atomic_save",
    "build_optimizer",
    "check_fingerprint",
    "check_unit_range",
    "clip_loss",
    "create_clip",
    "default_feature_blocks",
    "dice_loss",
    "encode_text_embeddings",
    "focal_loss",
    "gap_embedding",
    "head_embedding",
    "image_labels",
    "layer_decay_groups",
    "load_checkpoint",
    "load_merged",
    "param_groups",
    "save_checkpoint",
    "save_merged",
    "text_tower",
    "vision_tower",
    "weights_fingerprint",
]
