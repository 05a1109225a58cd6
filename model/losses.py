"""Training losses: focal loss on the image score, binary Dice on the anomaly map (stages 2 and 3);
CLIP's contrastive loss (stage 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_EPS = 1e-6


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean binary focal loss on probabilities (not logits).

    FL = -[y (1-p)^gamma log p + (1-y) p^gamma log(1-p)]; p is clamped to
    [1e-6, 1 - 1e-6] so a saturated score gives a finite loss.
    """
    p = prob.float().clamp(_EPS, 1.0 - _EPS)
    y = target.float()
    loss = -(y * (1 - p) ** gamma * torch.log(p) + (1 - y) * p**gamma * torch.log(1 - p))
    return loss.mean()


def dice_loss(prob_map: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of 1 - (2 sum(p y) + s) / (sum p + sum y + s), per image.

    Per-image with ``smooth`` = 1 so that a normal image (empty mask) still
    pulls its map towards zero instead of giving 0/0.
    """
    p = prob_map.float().flatten(1)
    y = mask.float().flatten(1)
    dice = (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return (1 - dice).mean()


def image_labels(mask: torch.Tensor) -> torch.Tensor:
    """y_img = 1 iff the mask has any positive pixel."""
    return (mask.flatten(1) > 0).any(dim=1).float()


@dataclass
class LossParts:
    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor


FOCAL_TARGETS = ("pixels", "image")


class FusionLoss(nn.Module):
    """w_img * Focal + w_seg * Dice(anomaly_map, mask); weights 1/1, gamma 2.

    ``focal_on="pixels"`` (the default) applies the focal loss to every pixel of the map against the
    mask, as MediCLIP's code does; ``"image"`` to the image score (the map's maximum) against y_img, as
    the dissertation's eq. 15 reads. With the image form the first steps drive the map into saturation,
    where the Dice gradient vanishes, and training stalls (docs/train.md, "Why the loss is per pixel").

    Example:
        >>> loss = FusionLoss()
        >>> out = {"anomaly_map": torch.full((2, 1, 4, 4), 0.5), "pred_score": torch.full((2,), 0.5)}
        >>> parts = loss(out, torch.zeros(2, 1, 4, 4))
        >>> round(parts.total.item(), 4)
        1.0622
    """

    def __init__(self, w_img: float = 1.0, w_seg: float = 1.0, gamma: float = 2.0, smooth: float = 1.0,
                 focal_on: str = "pixels") -> None:
        super().__init__()
        if focal_on not in FOCAL_TARGETS:
            raise ValueError(f"focal_on must be one of {FOCAL_TARGETS}, got {focal_on!r}")
        self.w_img, self.w_seg, self.gamma, self.smooth, self.focal_on = w_img, w_seg, gamma, smooth, focal_on

    def forward(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor) -> LossParts:
        amap = outputs["anomaly_map"]
        if mask.dim() == 3:
            mask = mask[:, None]
        if mask.shape != amap.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match anomaly_map {tuple(amap.shape)}")
        if self.focal_on == "pixels":
            focal = focal_loss(amap.flatten(), mask.flatten(), self.gamma)
        else:
            focal = focal_loss(outputs["pred_score"], image_labels(mask), self.gamma)
        dice = dice_loss(amap, mask, self.smooth)
        return LossParts(total=self.w_img * focal + self.w_seg * dice, focal=focal, dice=dice)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
              label_smoothing: float = 0.0) -> torch.Tensor:
    """CLIP's symmetric contrastive loss of matched rows (method.md section 3, the dissertation's eq. 2):
    the mean of the image-to-text and text-to-image cross-entropies of ``logit_scale * image @ text.T``,
    row i's target being column i. Both inputs are (N, D) and L2-normalised here.

    Example:
        >>> e = torch.eye(3)
        >>> round(clip_loss(e, e, 100.0).item(), 6)   # perfectly matched: the loss vanishes
        0.0
    """
    image = nn.functional.normalize(image.float(), dim=-1)
    text = nn.functional.normalize(text.float(), dim=-1)
    logits = logit_scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    ce = nn.functional.cross_entropy
    return 0.5 * (ce(logits, target, label_smoothing=label_smoothing)
                  + ce(logits.T, target, label_smoothing=label_smoothing))
