"""pipelines: the jobs users run (``fmclip generate``, ``verify``, ``prepare``, ``fewshot``,
``demo``) and the synthetic-set cache's loading side.

Public API::

    from pipelines import CachedDataset, SynthDataset, BatchLoader

The command line is ``fmclip`` (``pipelines.cli.main``); see docs/pipelines.md.
"""
from __future__ import annotations

import importlib

# Names are imported on first use: the loaders import torch, which the command line's
# generate and verify, and every cache worker they start, do without.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "loader": ("CachedDataset", "SynthDataset"),
    "ring": ("BatchLoader",),
}
_WHERE = {name: module for module, names in _SUBMODULES.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = ["CachedDataset", "SynthDataset", "BatchLoader"]
