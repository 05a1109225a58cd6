"""Configuration of the synthesis engine: frozen, hashable and JSON-serialisable."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

FAMILIES: dict[str, tuple[str, ...]] = {
    "identity": ("identity",),
    "structural": ("cutpaste", "poisson"),
    "density": ("gaussian_intensity", "pathology_texture"),
    "deformation": ("source_deformation", "guided_deformation"),
}


def family_weights(identity: float = 0.25, structural: float = 0.25, density: float = 0.25,
                   deformation: float = 0.25, enhanced: float = 0.5) -> tuple[tuple[str, float], ...]:
    """Task weights from family probabilities and the probability of the enhanced variant
    within a family (method.md: families equally likely, variants equally likely)."""
    per_family = {"identity": identity, "structural": structural, "density": density,
                  "deformation": deformation}
    weights = []
    for family, tasks in FAMILIES.items():
        if len(tasks) == 1:
            weights.append((tasks[0], per_family[family]))
        else:
            weights.append((tasks[0], per_family[family] * (1.0 - enhanced)))
            weights.append((tasks[1], per_family[family] * enhanced))
    return tuple(weights)


@dataclass(frozen=True)
class MaskConfig:
    """How anomaly masks are drawn (sizes are fractions of each image side)."""

    kinds: tuple[tuple[str, float], ...] = (("perlin", 0.5), ("ellipse", 0.25), ("rectangle", 0.25))
    perlin_min_exponent: int = 0  # lattice 2 ** U{min..max} cells per axis
    perlin_max_exponent: int = 5
    perlin_threshold: tuple[float, float] = (0.0, 0.3)
    perlin_coverage: tuple[float, float] = (0.25, 0.9)  # accepted fraction of the envelope
    perlin_envelope: float = 0.35  # weight of the (1 - d^2) envelope added to the noise
    threshold_tries: int = 4
    size_base: float = 0.03  # extent = (base + Gamma(shape, scale)) * side, clipped
    size_gamma_shape: float = 2.0
    size_gamma_scale: float = 0.1
    size_min: float = 0.06
    size_max: float = 0.6
    shear: float = 0.3
    foreground_fraction: float = 0.5  # at least this much of each anomaly on the anatomy
    max_tries: int = 24
    retry_shrink: float = 0.9


@dataclass(frozen=True)
class SynthesisConfig:
    """Everything that shapes sampling. Pixel quantities are given at ``reference_size``
    (224) and scale with the image's smallest side.

    Example:
        >>> from synth import SynthesisConfig, family_weights
        >>> cfg = SynthesisConfig(task_weights=family_weights(identity=0.0), max_anomalies=3,
        ...                       modality="brain_mri")
        >>> SynthesisConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    task_weights: tuple[tuple[str, float], ...] = field(default_factory=family_weights)
    max_anomalies: int = 2
    modality: str = "generic"
    mask: MaskConfig = field(default_factory=MaskConfig)
    reference_size: int = 224
    # structural
    cutpaste_max_rotation_deg: float = 45.0
    cutpaste_scale: tuple[float, float] = (0.8, 1.25)
    poisson_mixed_probability: float = 0.5
    # density
    intensity_gamma: tuple[float, float] = (0.4, 0.6)
    intensity_noise_sigma: tuple[float, float] = (4.0, 7.0)
    mask_blur_sigma: tuple[float, float] = (1.0, 4.0)
    texture_beta: tuple[float, float] = (0.2, 0.8)
    # deformation
    source_exponent: tuple[float, float] = (0.5, 2.0)  # strength 2 ** U(a, b)
    sink_probability: float = 0.5

    def __post_init__(self):
        names = [n for n, _ in self.task_weights]
        known = {t for tasks in FAMILIES.values() for t in tasks}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {sorted(known)}")
        if any(w < 0 for _, w in self.task_weights) or sum(w for _, w in self.task_weights) <= 0:
            raise ValueError("task weights must be non-negative with a positive sum")
        if self.max_anomalies < 1:
            raise ValueError(f"max_anomalies must be >= 1; got {self.max_anomalies}")

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> SynthesisConfig:
        data = dict(data)
        mask = MaskConfig(**_tuples(data.pop("mask", {})))
        return cls(mask=mask, **_tuples(data))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(data: dict) -> dict:
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, list) else v
    return {k: freeze(v) for k, v in data.items()}
