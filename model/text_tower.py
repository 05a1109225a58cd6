"""What the prompt learner needs from an open_clip text tower: token embeddings in, text features out.

CoOp replaces some token embeddings by learned vectors, so it must run the
frozen text tower from embeddings instead of token ids. open_clip has two kinds
of text tower: its own transformer (on ``CLIP`` itself, or as ``clip.text``
for ``CustomTextCLIP``) and ``HFTextEncoder`` around a Hugging Face model
(BiomedCLIP's PubMedBERT). :func:`text_tower` wraps either in a
:class:`TextTower`; both reproduce the tower's own ``encode_text`` exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import open_clip
import torch
from open_clip.hf_model import ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

from .config import FusionMedCLIPConfig

_SCHEMAS = ("hf-hub:", "local-dir:")
# Poolers that never look at padded positions: the padding after the longest prompt can be cut.
_PAD_BLIND_POOLERS = (ClsPooler, ClsLastHiddenStatePooler, MeanPooler)


def load_tokenizer(config: FusionMedCLIPConfig):
    """open_clip's tokenizer for the configured model (for ``hf-hub:``/``local-dir:`` sources, theirs)."""
    src = config.pretrained
    name = src if src is not None and src.startswith(_SCHEMAS) else config.arch
    return open_clip.get_tokenizer(name)


class TextTower(ABC):
    """A view of one open_clip text tower; built afresh from the model when needed, holds no state."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @property
    @abstractmethod
    def embedding(self) -> nn.Embedding:
        """The token embedding table (learned contexts live in its space)."""

    @property
    def width(self) -> int:
        return int(self.embedding.embedding_dim)

    @abstractmethod
    def content_ids(self, ids: torch.Tensor, tokenizer) -> torch.Tensor:
        """The tokens of one tokenized text (L,) between its start and end tokens."""

    @abstractmethod
    def encode(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features from token embeddings ``x`` (N, L, width) of ``token_ids`` (N, L)."""


class NativeTextTower(TextTower):
    """open_clip's own text transformer: ``CLIP`` (attributes copied onto the model) or a ``TextTransformer``."""

    @property
    def embedding(self) -> nn.Embedding:
        return self.module.token_embedding

    def content_ids(self, ids: torch.Tensor, tokenizer) -> torch.Tensor:
        # The end token has the highest id of CLIP's vocabulary (what argmax pooling relies on too).
        return ids[1 : int(ids.argmax())]

    def encode(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        # With a causal mask and end-token pooling, positions after the last end token cannot
        # influence the pooled feature, so the sequence is cut there: same result, a fraction of the cost.
        m = self.module
        cast_dtype = m.transformer.get_cast_dtype()
        pool = getattr(m, "text_pool_type", None) or getattr(m, "pool_type", "argmax")
        eos = getattr(m, "text_eos_id", getattr(m, "eos_id", None))
        mask = m.attn_mask
        length = x.shape[1]
        if mask is not None and pool == "argmax":
            length = int(token_ids.argmax(dim=-1).max()) + 1
            mask = mask[:length, :length]
        x = x[:, :length].to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = text_global_pool(x, token_ids[:, :length], pool, eos_token_id=eos)
        proj = m.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x


class HFTextTower(TextTower):
    """open_clip's ``HFTextEncoder``: a Hugging Face encoder (e.g. BERT), a pooler and a projection."""

    @property
    def embedding(self) -> nn.Embedding:
        return self.module.transformer.get_input_embeddings()

    def content_ids(self, ids: torch.Tensor, tokenizer) -> torch.Tensor:
        # [CLS] ... [SEP] [PAD]...: drop the framing tokens (also right when a tokenizer strips [SEP]).
        hf = tokenizer.tokenizer
        framing = (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.bos_token_id, hf.eos_token_id)
        special = torch.tensor(sorted({t for t in framing if t is not None}), dtype=ids.dtype)
        return ids[1:][~torch.isin(ids[1:], special)]

    def encode(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        # HFTextEncoder.forward with inputs_embeds in place of input_ids (the encoder's embedding
        # layer adds positions and token types to either alike), and the same padding mask.
        text = self.module
        mask = (token_ids != text.config.pad_token_id).long()
        if isinstance(text.pooler, _PAD_BLIND_POOLERS):
            # Padded keys are masked out, so cutting the padding after the longest prompt changes nothing.
            positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
            length = int((mask * positions).amax())
            x, mask = x[:, :length], mask[:, :length]
        out = text.transformer(inputs_embeds=x, attention_mask=mask)
        return text.proj(text.pooler(out, mask))


def text_tower(clip: nn.Module) -> TextTower | None:
    """The :class:`TextTower` of an open_clip model, or None when its text tower cannot run from embeddings."""
    if all(hasattr(clip, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
        return NativeTextTower(clip)
    text = getattr(clip, "text", None)
    if isinstance(text, HFTextEncoder):
        return HFTextTower(text)
    # CoCa-style class embeddings and padding masks change the computation: not reproduced here.
    if isinstance(text, TextTransformer) and text.cls_emb is None and not text.use_pad_mask:
        return NativeTextTower(text)
    return None
