"""FusionMedCLIP: patch-level anomaly maps from an adapted open_clip ViT."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import AlignmentAdapter, BlockAdapter, gap_embedding, head_embedding
from .backbone import backbone_info, create_clip, resolve_blocks, weights_fingerprint
from .config import FusionMedCLIPConfig
from .lora import add_lora, merge_lora
from .prompts import PromptLearner
from .vision_tower import VisionTower, vision_tower


def check_unit_range(images: torch.Tensor, what: str = "images") -> None:
    """Raise ValueError unless every value of ``images`` lies in [0, 1] (NaN fails too).

    A pass over the data and, on CUDA, a host synchronisation: call it where data enters (a reader,
    an evaluation), not on every training step. Images of a cache are in range by construction.
    """
    if images.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
        raise ValueError(f"{what} must lie in [0, 1] (not 0-255), got values in [{lo}, {hi}]")


class FusionMedCLIP(nn.Module):
    """The adapted CLIP of method.md section 2 (stage 2, or stage 3 with LoRA and block adapters).

    ``forward`` takes images (B, 1 or 3, H, W) in [0, 1] at the configured
    size and returns ``{"anomaly_map": (B, 1, H, W), "pred_score": (B,)}``;
    the score is the maximum of the map. The backbone's own normalisation is
    applied inside.

    Example:
        >>> model = FusionMedCLIP(FusionMedCLIPConfig(arch="ViT-B-16", pretrained="openai"))  # doctest: +SKIP
        >>> out = model(torch.rand(2, 1, 224, 224))                                            # doctest: +SKIP
        >>> out["anomaly_map"].shape, out["pred_score"].shape                                   # doctest: +SKIP
        (torch.Size([2, 1, 224, 224]), torch.Size([2]))

    Args:
        config: the settings.
        clip: an already built open_clip model to use instead of building one
            from ``config`` (its weights become the base weights).
        merged: build the stage-3 structure without LoRA layers, to receive the
            weights of a merged export (see :func:`model.checkpoint.load_merged`).
    """

    def __init__(
        self, config: FusionMedCLIPConfig, clip: nn.Module | None = None, merged: bool = False
    ) -> None:
        super().__init__()
        self.config = config
        clip = create_clip(config) if clip is None else clip
        info = backbone_info(clip)
        if info.image_size != config.image_size:
            raise ValueError(
                f"backbone input size {info.image_size} != config.image_size {config.image_size}"
            )
        self.info = info
        self.blocks = resolve_blocks(config, info.depth)
        for p in clip.parameters():
            p.requires_grad_(False)
        # Before any LoRA layer exists: LoRA's merge/unmerge round trips perturb base weights by rounding.
        self.base_fingerprint = weights_fingerprint(clip)
        self.clip = clip
        self.merged = merged
        self.register_buffer("pixel_mean", torch.tensor(info.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(info.std).view(1, -1, 1, 1), persistent=False)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.prompts = PromptLearner(config, clip)
            if config.alignment == "adapter":
                self.align = nn.ModuleList(AlignmentAdapter(info.width, info.embed_dim) for _ in self.blocks)
            else:
                self.align = nn.ModuleList()
            self.block_adapters = nn.ModuleList()
            if config.stage == 3:
                self.block_adapters = nn.ModuleList(
                    BlockAdapter(info.width, config.adapter_bottleneck, config.adapter_dropout)
                    for _ in self.blocks
                )
                blocks = vision_tower(clip.visual).blocks
                for j, adapter in zip(self.blocks, self.block_adapters, strict=True):
                    # A hook keeps the backbone's module names (and so the base fingerprint and peft targets)
                    # unchanged; forward_intermediates then returns the adapted tokens, which later blocks consume.
                    blocks[j - 1].register_forward_hook(adapter.as_hook)
                if not merged:
                    self.clip.visual = add_lora(clip.visual, config)
        log_tau = torch.tensor(math.log(config.tau))
        if config.learnable_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau, persistent=False)

    # ----------------------------------------------------------------- input
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Check the batch's layout, replicate grey to RGB, apply the backbone's mean/std.

        Only metadata is checked here (no pass over the pixels, no host synchronisation on CUDA):
        the range [0, 1] is checked where data enters, with :func:`check_unit_range`.
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        b, c, h, w = images.shape
        if c not in (1, 3):
            raise ValueError(f"images must have 1 (grey) or 3 channels, got {c}")
        size = self.config.image_size
        if (h, w) != (size, size):
            raise ValueError(f"images must be {size}x{size} (config.image_size), got {h}x{w}")
        if c == 1:
            images = images.expand(b, 3, h, w)
        return (images - self.pixel_mean) / self.pixel_std

    # -------------------------------------------------------------- features
    @property
    def vision(self) -> VisionTower:
        """The vision tower's adapter (native or timm ViT), over the current (possibly LoRA-wrapped) tower."""
        return vision_tower(self.clip.visual)

    def _patch_tokens(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return self.vision.patch_tokens(pixels, [j - 1 for j in self.blocks])

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """Stage-2 feature cache: the frozen backbone's patch tokens of J, (B, |J|, width, h, w).

        Run once per sample and feed to :meth:`forward_features`; prompts and
        alignment adapters then train without running the backbone again.
        """
        if self.config.stage != 2:
            raise RuntimeError(
                "the feature cache needs a frozen backbone: stage 3 trains LoRA and block adapters"
            )
        with torch.no_grad():
            return torch.stack(self._patch_tokens(self.preprocess(images)), dim=1)

    # ------------------------------------------------------------------ maps
    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def text_features(self) -> torch.Tensor:
        """(2, embed_dim) normalised features of (normal, anomaly)."""
        return self.prompts(self.clip)

    def forward_features(
        self, features: torch.Tensor | list[torch.Tensor], output_size: int | None = None,
        text: torch.Tensor | None = None,
    ) -> dict:
        """Maps from patch tokens (from :meth:`extract_features` or the live backbone).

        ``text``: the (2, embed_dim) features of :meth:`text_features`, computed once by a caller that
        scores many batches while the prompts do not change (evaluation); by default they are computed here.
        """
        layers = list(features.unbind(1)) if isinstance(features, torch.Tensor) else list(features)
        if len(layers) != len(self.blocks):
            raise ValueError(
                f"expected features of {len(self.blocks)} blocks {self.blocks}, got {len(layers)}"
            )
        size = output_size or self.config.image_size
        text = self.text_features() if text is None else text
        maps = []
        for i, tokens in enumerate(layers):
            if tokens.dim() != 4 or tokens.shape[1] != self.info.width:
                raise ValueError(
                    f"features must be (B, {self.info.width}, h, w) per block, got {tuple(tokens.shape)}"
                )
            if len(self.align):
                emb = self.align[i](tokens)
            elif self.config.alignment == "head":
                emb = head_embedding(tokens, self.clip.visual)
            else:
                emb = gap_embedding(tokens, self.clip.visual)
            logits = torch.einsum("behw,ce->bchw", emb.float(), text) / self.tau
            prob = logits.softmax(dim=1)[:, 1:2]
            maps.append(F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=False))
        amap = torch.stack(maps).mean(0)
        return {"anomaly_map": amap, "pred_score": amap.flatten(1).amax(1)}

    def forward(self, images: torch.Tensor, text: torch.Tensor | None = None) -> dict:
        """Maps of images (B, 1 or 3, H, W) in [0, 1]; ``text`` as in :meth:`forward_features`."""
        pixels = self.preprocess(images)
        if self.config.stage == 2:
            with torch.no_grad():  # nothing to train in the backbone: save the activations' memory
                tokens = self._patch_tokens(pixels)
        else:
            tokens = self._patch_tokens(pixels)
        return self.forward_features(tokens, output_size=images.shape[-1], text=text)

    # ------------------------------------------------------------ utilities
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def merged_copy(self) -> FusionMedCLIP:
        """A copy with LoRA folded into the vision weights (peft ``merge_and_unload``); same maps."""
        if self.config.stage != 3 or self.merged:
            raise RuntimeError("only an unmerged stage-3 model has LoRA to merge")
        other = copy.deepcopy(self)
        other.clip.visual = merge_lora(other.clip.visual)
        other.merged = True
        return other
