"""Text side: CoOp(+UMLS) learnable contexts and manual prompts through the frozen text tower."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FusionMedCLIPConfig
from .text_tower import TextTower, load_tokenizer, text_tower
from .umls import CLASSES, PLAIN_CLASS_NAMES, UMLS_CLASS_NAMES, UMLS_CONTEXT_INIT

_PLACEHOLDER = "X"


def class_names_for(config: FusionMedCLIPConfig) -> dict[str, tuple[str, ...]]:
    if config.class_names is not None:
        return dict(config.class_names)
    return dict(UMLS_CLASS_NAMES if config.prompt_mode == "coop_umls" else PLAIN_CLASS_NAMES)


class PromptLearner(nn.Module):
    """Text features of the two classes (0 = normal, 1 = anomaly), shape (2, embed_dim), L2-normalised.

    CoOp modes learn ``n_ctx`` class-specific context vectors placed right after
    the start token, with the class name at the end: ``[SOS] ctx_1..ctx_M name . [EOS]``.
    Each class may have several names; their normalised features are averaged.
    In ``coop_umls`` mode the contexts start from the token embeddings of the
    class's UMLS definition; in ``coop`` mode from N(0, 0.02) as in CoOp.

    Example:
        >>> learner = PromptLearner(config, clip)          # doctest: +SKIP
        >>> learner(clip).shape                             # doctest: +SKIP
        torch.Size([2, 768])
    """

    def __init__(self, config: FusionMedCLIPConfig, clip: nn.Module) -> None:
        super().__init__()
        self.mode = config.prompt_mode
        self.n_ctx = config.n_ctx
        names = class_names_for(config)
        tokenizer = load_tokenizer(config)
        tower = text_tower(clip)
        if self.mode == "manual":
            texts = [config.manual_template.format(n) for c in CLASSES for n in names[c]]
        else:
            if tower is None:
                raise NotImplementedError(
                    f"CoOp prompts need a text tower that can run from token embeddings (open_clip's own "
                    f"transformer or a Hugging Face encoder), not {type(getattr(clip, 'text', clip)).__name__}; "
                    "use prompt_mode='manual' with this backbone"
                )
            prefix = " ".join([_PLACEHOLDER] * self.n_ctx)
            texts = [f"{prefix} {n}." for c in CLASSES for n in names[c]]
        ids = tokenizer(texts)
        owner = torch.tensor([i for i, c in enumerate(CLASSES) for _ in names[c]])
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("owner", owner, persistent=False)
        self.n_names = tuple(len(names[c]) for c in CLASSES)
        if self.mode != "manual":
            ctx_len = ids.shape[1]
            if self.n_ctx + 4 > ctx_len:
                raise ValueError(f"n_ctx={self.n_ctx} does not fit the text context length {ctx_len}")
            _check_placeholders(ids, tokenizer, self.n_ctx)
            self.ctx = nn.Parameter(self._init_ctx(config, tower, tokenizer))
        else:
            self.ctx = None

    def _init_ctx(self, config: FusionMedCLIPConfig, tower: TextTower, tokenizer) -> torch.Tensor:
        emb = tower.embedding
        width = emb.embedding_dim
        g = torch.Generator().manual_seed(config.init_seed)
        ctx = torch.randn(len(CLASSES), self.n_ctx, width, generator=g) * 0.02
        if self.mode == "coop_umls":
            for i, c in enumerate(CLASSES):
                content = tower.content_ids(tokenizer([UMLS_CONTEXT_INIT[c]])[0], tokenizer)[: self.n_ctx]
                with torch.no_grad():
                    ctx[i, : len(content)] = emb(content.to(emb.weight.device)).float().cpu()
        return ctx.to(emb.weight.dtype)

    def prompt_embeddings(self, clip: nn.Module) -> torch.Tensor:
        """Token embeddings of every prompt with the contexts spliced in, (n_prompts, L, width)."""
        x = text_tower(clip).embedding(self.token_ids)
        if self.ctx is None:
            return x
        ctx = self.ctx[self.owner].to(x.dtype)
        return torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx :]], dim=1)

    def forward(self, clip: nn.Module) -> torch.Tensor:
        tower = text_tower(clip)
        if tower is None:  # manual prompts on a tower that only takes token ids
            feats = clip.encode_text(self.token_ids)
        else:
            feats = tower.encode(self.prompt_embeddings(clip), self.token_ids)
        feats = F.normalize(feats.float(), dim=-1)
        per_class = [chunk.mean(0) for chunk in torch.split(feats, list(self.n_names))]
        return F.normalize(torch.stack(per_class), dim=-1)


def _check_placeholders(ids: torch.Tensor, tokenizer, n_ctx: int) -> None:
    """The contexts replace tokens 1..n_ctx: they must be the placeholder, right after a start token."""
    placeholder = tokenizer([_PLACEHOLDER])[0, 1]
    if not bool((ids[:, 1 : 1 + n_ctx] == placeholder).all()):
        raise NotImplementedError(
            f"this tokenizer does not give a start token followed by {n_ctx} single placeholder tokens; "
            "CoOp prompts cannot be placed"
        )


def encode_text_embeddings(clip: nn.Module, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """open_clip's text tower from token embeddings instead of token ids (unnormalised features).

    Equals ``clip.encode_text(token_ids)`` when ``x`` are the token embeddings of
    ``token_ids``, for every text tower :func:`model.text_tower.text_tower` supports.
    """
    tower = text_tower(clip)
    if tower is None:
        raise NotImplementedError(f"cannot run the text tower of {type(clip).__name__} from token embeddings")
    return tower.encode(x, token_ids)
