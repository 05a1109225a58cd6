"""The anomaly tasks of method.md section 1, by name."""
from .base import Context, Task
from .deformation import GuidedDeformation, SourceDeformation
from .density import GaussianIntensity, PathologyTexture
from .identity import Identity
from .structural import CutPaste, Poisson

TASKS: dict[str, type[Task]] = {t.name: t for t in (
    Identity, CutPaste, Poisson, GaussianIntensity, PathologyTexture, SourceDeformation, GuidedDeformation)}

__all__ = ["TASKS", "Context", "CutPaste", "GaussianIntensity", "GuidedDeformation", "Identity",
           "PathologyTexture", "Poisson", "SourceDeformation", "Task"]
