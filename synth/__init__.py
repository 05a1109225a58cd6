"""synth: a numba-accelerated anomaly-synthesis engine for medical images.

Turns a normal image (float32 in [0, 1], 2D or 3D) into an anomalous one with an
exact mask and a replayable parameter record::

    import synth
    out, mask, record = synth.synthesize(image, rng=0, foreground=brain)
    again, _ = synth.replay(image, record, foreground=brain)   # identical

MONAI transforms ``RandSynthesizeAnomaly`` / ``RandSynthesizeAnomalyd`` are
imported lazily (they need MONAI and torch; the engine itself does not).
"""
from .api import LAYOUTS, Synthesis, replay, spawn_seeds, synthesize
from .blend import poisson_blend
from .config import FAMILIES, MaskConfig, SynthesisConfig, family_weights
from .engine import TaskPool
from .profiles import modalities, register_modality
from .records import ENGINE_VERSION, SynthesisRecord
from .tasks import TASKS

_LAZY = {"RandSynthesizeAnomaly", "RandSynthesizeAnomalyd", "RandSynthesizeAnomalyD",
         "RandSynthesizeAnomalyDict"}


def __getattr__(name):
    if name in _LAZY:
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'synth' has no attribute {name!r}")


__all__ = [
    "ENGINE_VERSION", "FAMILIES", "LAYOUTS", "MaskConfig", "RandSynthesizeAnomaly", "RandSynthesizeAnomalyD",
    "RandSynthesizeAnomalyDict", "RandSynthesizeAnomalyd", "Synthesis", "SynthesisConfig", "SynthesisRecord",
    "TASKS", "TaskPool", "family_weights", "modalities", "poisson_blend", "register_modality", "replay",
    "spawn_seeds", "synthesize",
]
