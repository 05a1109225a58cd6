"""Text side: CoOp(+UMLS) learnable contexts and manual prompts through the frozen text tower."""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .config import FusionMedCLIPConfig
from .umls import CLASSES, PLAIN_CLASS_NAMES, UMLS_CLASS_NAMES, UMLS_CONTEXT_INIT

_PLACEHOLDER = "X"


def class_names_for(config: FusionMedCLIPConfig) -> dict[str, tuple[str, ...]]:
    if config.class_names is not None:
        return dict(config.class_names)
    return dict(UMLS_CLASS_NAMES if config.prompt_mode == "coop_umls" else PLAIN_CLASS_NAMES)


def _has_native_text(clip: nn.Module) -> bool:
    return all(hasattr(clip, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final"))


def _tokenizer_name(config: FusionMedCLIPConfig) -> str:
    src = config.pretrained
    return src if src is not None and src.startswith(("hf-hub:", "local-dir:")) else config.arch


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
        tokenizer = open_clip.get_tokenizer(_tokenizer_name(config))
        if self.mode == "manual":
            texts = [config.manual_template.format(n) for c in CLASSES for n in names[c]]
        else:
            if not _has_native_text(clip):
                raise NotImplementedError(
                    "CoOp prompts need open_clip's native text transformer; use prompt_mode='manual' "
                    "with this backbone"
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
            self.ctx = nn.Parameter(self._init_ctx(config, clip, tokenizer))
        else:
            self.ctx = None

    def _init_ctx(self, config: FusionMedCLIPConfig, clip: nn.Module, tokenizer) -> torch.Tensor:
        emb = clip.token_embedding
        width = emb.embedding_dim
        g = torch.Generator().manual_seed(config.init_seed)
        ctx = torch.randn(len(CLASSES), self.n_ctx, width, generator=g) * 0.02
        if self.mode == "coop_umls":
            for i, c in enumerate(CLASSES):
                ids = tokenizer([UMLS_CONTEXT_INIT[c]])[0]
                eot = int(ids.argmax())
                # Content tokens sit between the start token and the end token.
                content = ids[1:eot][: self.n_ctx]
                with torch.no_grad():
                    ctx[i, : len(content)] = emb(content.to(emb.weight.device)).float().cpu()
        return ctx.to(emb.weight.dtype)

    def prompt_embeddings(self, clip: nn.Module) -> torch.Tensor:
        """Token embeddings of every prompt with the contexts spliced in, (n_prompts, L, width)."""
        x = clip.token_embedding(self.token_ids)
        if self.ctx is None:
            return x
        ctx = self.ctx[self.owner].to(x.dtype)
        return torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx :]], dim=1)

    def forward(self, clip: nn.Module) -> torch.Tensor:
        if self.ctx is None and not _has_native_text(clip):
            feats = clip.encode_text(self.token_ids)
        else:
            feats = encode_text_embeddings(clip, self.prompt_embeddings(clip), self.token_ids)
        feats = F.normalize(feats.float(), dim=-1)
        per_class = [chunk.mean(0) for chunk in torch.split(feats, list(self.n_names))]
        return F.normalize(torch.stack(per_class), dim=-1)


def encode_text_embeddings(clip: nn.Module, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """open_clip's text tower from token embeddings instead of token ids (unnormalised features).

    With a causal mask and end-token pooling, positions after the last end token
    cannot influence the pooled feature, so the sequence is cut there: the
    result equals ``clip.encode_text(token_ids)`` at a fraction of the cost.
    """
    cast_dtype = clip.transformer.get_cast_dtype()
    pool = getattr(clip, "text_pool_type", "argmax")
    mask = clip.attn_mask
    length = x.shape[1]
    if mask is not None and pool == "argmax":
        length = int(token_ids.argmax(dim=-1).max()) + 1
        mask = mask[:length, :length]
    x = x[:, :length].to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=mask)
    x = clip.ln_final(x)
    x = open_clip.transformer.text_global_pool(
        x, token_ids[:, :length], pool, eos_token_id=getattr(clip, "text_eos_id", None)
    )
    proj = clip.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x
