"""What scores a test image: the trained model, or one of two baselines on the same backbone.

- ``ModelScorer``: a trained FusionMedCLIP (text features computed once).
- ``zero_shot_model``: plain CLIP with manual prompts ("a photo of a normal brain" / "... abnormal brain") and
  each patch token through CLIP's own frozen head (``alignment="head"``): the same map maker with no training,
  the first row of the dissertation's ablation.
- ``PatchCoreScorer``: the patch tokens of blocks J of the k support images form a memory bank; a test patch
  scores its distance to the nearest memory patch (each block's tokens L2-normalised, blocks concatenated);
  the patch map is upsampled bilinearly and smoothed with a Gaussian of sigma 4 px, as PatchCore does; the
  image score is the map's maximum. Its scores are distances, not probabilities (no calibration error).

Every scorer gives ``(maps (B, H, W) float32, scores (B,))`` with the score the map's maximum.

Example:
    >>> scorer = ModelScorer(load_checkpoint("runs/r/checkpoints/best.pt"), "cpu")   # doctest: +SKIP
    >>> maps, scores = scorer.score(images)                                          # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from model import FusionMedCLIP, FusionMedCLIPConfig, check_unit_range

ORGANS = {"brain_mri": "brain", "breast_us": "breast", "chest_xray": "chest"}


class ModelScorer:
    """A FusionMedCLIP (trained, or the zero-shot one) scoring batches of images in [0, 1]."""

    probabilities = True

    def __init__(self, model: FusionMedCLIP, device: str | torch.device, name: str = "fusionmedclip") -> None:
        self.model, self.device, self.name = model.to(device).eval(), torch.device(device), name
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with torch.no_grad(), self.autocast:
            self.text = self.model.text_features()  # once: the prompts do not change while scoring

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_unit_range(images)
        with torch.no_grad(), self.autocast:
            out = self.model(images.to(self.device), text=self.text)
        return out["anomaly_map"][:, 0].float().cpu().numpy(), out["pred_score"].float().cpu().numpy()


def zero_shot_model(config: FusionMedCLIPConfig, organ: str) -> FusionMedCLIP:
    """The run's backbone as plain CLIP: manual prompts naming the organ, CLIP's own head per patch."""
    names = {"normal": (f"normal {organ}",), "anomaly": (f"abnormal {organ}",)}
    return FusionMedCLIP(dataclasses.replace(config, stage=2, prompt_mode="manual", alignment="head",
                                             manual_template="a photo of a {}", class_names=names))


class PatchCoreScorer:
    """Nearest-neighbour distances to the support images' patch tokens (see the module's docstring)."""

    probabilities = False
    name = "patchcore"

    def __init__(self, config: FusionMedCLIPConfig, support: torch.Tensor, device: str | torch.device,
                 sigma: float = 4.0) -> None:
        self.model = FusionMedCLIP(dataclasses.replace(config, stage=2)).to(device).eval()
        self.device, self.sigma = torch.device(device), sigma
        check_unit_range(support, "support images")
        self.bank = torch.cat([self._tokens(support[at:at + 16]) for at in range(0, len(support), 16)]).flatten(0, 2)

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, h, w, |J| width): each block's tokens L2-normalised over channels, blocks side by side."""
        feats = self.model.extract_features(images.to(self.device)).float()  # (B, J, W, h, w)
        return F.normalize(feats, dim=2).flatten(1, 2).permute(0, 2, 3, 1)

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_unit_range(images)
        with torch.no_grad():
            tokens = self._tokens(images)
            b, h, w, d = tokens.shape
            queries = tokens.reshape(-1, d)
            nearest = torch.cat([torch.cdist(queries[at:at + 4096], self.bank).amin(1)
                                 for at in range(0, len(queries), 4096)])
            patch = nearest.reshape(b, 1, h, w)
            maps = F.interpolate(patch, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps = np.stack([cv2.GaussianBlur(m, (0, 0), self.sigma) for m in maps.cpu().numpy()])
        return maps.astype(np.float32), maps.reshape(len(maps), -1).max(1)
