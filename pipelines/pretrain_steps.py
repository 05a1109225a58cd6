"""The parts of a stage-1 step and epoch (``pipelines.pretrainer``): captions encoded once by the frozen
text tower, mixup, rows gathered over DDP ranks, validation (loss and retrieval recall), the exported
open_clip config."""
from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model import FusionMedCLIPConfig, atomic_save, clip_loss
from model.text_tower import load_tokenizer

from .metrics import retrieval_recall
from .runs import RunDir
from .runtime import Runtime

TEXT_BATCH = 256


def encode_captions(clip: torch.nn.Module, mcfg: FusionMedCLIPConfig, captions: list[str], run: RunDir,
                    rt: Runtime, progress: bool) -> torch.Tensor:
    """(N, D) L2-normalised embeddings of the captions by the frozen text tower (open_clip's tokenizer,
    its context length), on the CPU; kept in the run's ``text_features.pt`` for a resume."""
    from tqdm import tqdm

    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    saved = run.path / "text_features.pt"
    if saved.is_file():
        blob = torch.load(saved, map_location="cpu", weights_only=True)
        if blob.get("captions_sha256") == digest:
            return blob["features"]
    tokenizer = load_tokenizer(mcfg)
    clip.eval()
    parts = []
    with torch.no_grad(), rt.autocast():
        for at in tqdm(range(0, len(captions), TEXT_BATCH), desc="encode captions", unit="batch",
                       disable=not (progress and rt.main)):
            tokens = tokenizer(captions[at:at + TEXT_BATCH]).to(rt.device)
            parts.append(F.normalize(clip.encode_text(tokens).float(), dim=-1).cpu())
    features = torch.cat(parts)
    if rt.main:
        atomic_save({"captions_sha256": digest, "features": features}, saved)
    return features


def mixup(images: torch.Tensor, text: torch.Tensor, alpha: float, text_mixup: bool,
          seed: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """(images, the caption embeddings to match them with, each one's loss weight): with ``alpha`` > 0 the
    images are mixed with a permutation of themselves by lambda ~ Beta(alpha, alpha), and so are their
    captions' embeddings (``text_mixup``), or the loss is mixed instead (lambda on the own captions, 1 -
    lambda on the partners'). Drawn from ``seed``, so a resumed run mixes alike."""
    if alpha <= 0:
        return images, [text], [1.0]
    rng = np.random.default_rng(list(seed))
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    images = lam * images + (1.0 - lam) * images[perm]
    if text_mixup:
        return images, [F.normalize(lam * text + (1.0 - lam) * text[perm], dim=-1)], [1.0]
    return images, [text, text[perm]], [lam, 1.0 - lam]


def gather_rows(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order, with gradients flowing back to each rank's own (so
    the contrastive loss sees the global batch, as open_clip's ``gather_with_grad``)."""
    if rt.world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def validate(clip: torch.nn.Module, loader, text: torch.Tensor, scale: torch.Tensor, batch: int,
             rt: Runtime) -> dict[str, float]:
    """The validation pairs' contrastive loss (no mixup, no label smoothing, batches of ``batch`` in listing
    order, averaged over pairs) and image-to-text / text-to-image recall@1 and @5 over all of them;
    ``loader`` gives their images in listing order."""
    clip.eval()
    parts = []
    with torch.no_grad(), rt.autocast():
        for pixels, _ in loader:
            parts.append(clip.encode_image(pixels.to(rt.device)).float().cpu())
    clip.train()
    features = torch.cat(parts)
    losses, weights = [], []
    for at in range(0, len(features), batch):
        rows = slice(at, at + batch)
        if len(features[rows]) > 1:
            losses.append(clip_loss(features[rows], text[rows], scale.cpu()).item())
            weights.append(len(features[rows]))
    loss = float(np.average(losses, weights=weights)) if losses else float("nan")
    return {"loss": loss, **retrieval_recall(features.numpy(), text.numpy())}


def export_config(clip: torch.nn.Module, mcfg: FusionMedCLIPConfig) -> dict[str, Any]:
    """open_clip's ``open_clip_config.json`` of the trained model: the architecture (at the trained image
    size) and its preprocessing, so the folder loads as ``local-dir:``."""
    import open_clip

    source = mcfg.pretrained if mcfg.pretrained and mcfg.pretrained.startswith(("hf-hub:", "local-dir:")) else mcfg.arch
    model_cfg = copy.deepcopy(open_clip.get_model_config(source))
    model_cfg.setdefault("vision_cfg", {})["image_size"] = mcfg.image_size
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in open_clip.get_model_preprocess_cfg(clip).items()}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
