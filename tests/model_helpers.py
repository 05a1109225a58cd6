"""Shared checks for the model tests."""
from __future__ import annotations

import torch

from model import FusionLoss, FusionMedCLIP, build_optimizer


def train_steps(model: FusionMedCLIP, size: int, steps: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A few optimiser steps on two images (one with a square anomaly); returns the loss before and
    after them (in eval mode: dropout would make single-step losses noisy) and the frozen
    parameters as they were before training."""
    torch.manual_seed(0)  # dropout draws from the global generator: fix it so the test does not depend on order
    frozen = {n: p.detach().clone() for n, p in model.clip.named_parameters() if not p.requires_grad}
    opt = build_optimizer(model)
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, size // 4:size * 5 // 8, size // 4:size * 5 // 8] = 1
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1))

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return FusionLoss()(model(x), mask).total.item()

    before = loss()
    model.train()
    for _ in range(steps):
        parts = FusionLoss()(model(x), mask)
        opt.zero_grad()
        parts.total.backward()
        opt.step()
    return [before, loss()], frozen


def encode_text_reference(model: FusionMedCLIP, tokenizer, names: dict, template: str = "a photo of a {}") -> torch.Tensor:
    """The manual prompts' text features computed independently with open_clip's own
    ``encode_text``: per class, the normalised mean of its names' normalised features."""
    import torch.nn.functional as F

    ref = []
    for c in ("normal", "anomaly"):
        f = F.normalize(model.clip.encode_text(tokenizer([template.format(n) for n in names[c]])), dim=-1)
        ref.append(F.normalize(f.mean(0), dim=-1))
    return torch.stack(ref)
