"""The model's settings: one serialisable dataclass."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROMPT_MODES = ("coop_umls", "coop", "manual")
ALIGNMENTS = ("adapter", "gap", "head")


@dataclass
class FusionMedCLIPConfig:
    """Settings of :class:`model.FusionMedCLIP` (method.md section 2).

    ``pretrained`` goes straight to open_clip: a pretrained tag (``"openai"``),
    a local checkpoint file, ``None`` for random weights, or an
    ``hf-hub:org/repo`` / ``local-dir:path`` name (then ``arch`` is ignored and
    the architecture comes from the hub or folder).

    Example:
        >>> cfg = FusionMedCLIPConfig(arch="ViT-B-16", stage=3)
        >>> FusionMedCLIPConfig.from_json(cfg.to_json()) == cfg
        True
    """

    arch: str = "ViT-L-14"
    pretrained: str | None = "openai"
    image_size: int = 224
    # 1-indexed transformer blocks whose patch tokens make the maps; None -> (d/2, 3d/4, d).
    feature_blocks: tuple[int, ...] | None = None
    prompt_mode: str = "coop_umls"
    n_ctx: int = 8
    # None -> UMLS synonyms ("coop_umls") or a single plain name per class.
    class_names: dict[str, tuple[str, ...]] | None = None
    manual_template: str = "a photo of a {}"
    alignment: str = "adapter"
    tau: float = 0.07
    learnable_tau: bool = False
    stage: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    adapter_bottleneck: int = 64
    adapter_dropout: float = 0.1
    # Seed for the randomly initialised trainable parts (contexts without UMLS, adapters, LoRA A).
    init_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.feature_blocks is not None:
            self.feature_blocks = tuple(int(j) for j in self.feature_blocks)
        if self.class_names is not None:
            self.class_names = {k: tuple(v) for k, v in self.class_names.items()}
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on settings that cannot work, naming the setting."""
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.stage not in (2, 3):
            raise ValueError(f"stage must be 2 or 3, got {self.stage!r}")
        if self.stage == 3 and self.alignment != "adapter":
            raise ValueError(f"stage 3 trains through the alignment adapter; alignment={self.alignment!r} "
                             "is a stage-2 setting (an ablation or the zero-shot baseline)")
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.lora_r < 1 or self.adapter_bottleneck < 1:
            raise ValueError("lora_r and adapter_bottleneck must be >= 1")
        if self.feature_blocks is not None:
            j = self.feature_blocks
            if len(j) == 0 or any(b < 1 for b in j) or list(j) != sorted(set(j)):
                raise ValueError(
                    f"feature_blocks must be strictly increasing 1-indexed block numbers, got {j}"
                )
        if self.class_names is not None:
            if set(self.class_names) != {"normal", "anomaly"}:
                raise ValueError(
                    f"class_names needs exactly the keys 'normal' and 'anomaly', got {sorted(self.class_names)}"
                )
            if any(len(v) == 0 for v in self.class_names.values()):
                raise ValueError("class_names needs at least one name per class")
        if "{}" not in self.manual_template:
            raise ValueError(f"manual_template needs a '{{}}' slot, got {self.manual_template!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["feature_blocks"] is not None:
            d["feature_blocks"] = list(d["feature_blocks"])
        if d["class_names"] is not None:
            d["class_names"] = {k: list(v) for k, v in d["class_names"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionMedCLIPConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FusionMedCLIPConfig keys: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FusionMedCLIPConfig:
        return cls.from_dict(json.loads(text))


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """(d/2, 3d/4, d), 1-indexed; duplicates (tiny depths) collapse."""
    return tuple(sorted({max(1, depth // 2), max(1, (3 * depth) // 4), depth}))
