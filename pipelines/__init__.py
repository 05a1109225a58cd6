"""pipelines: the jobs users run (``fmclip generate``, ``verify``, ``train``, ``prepare``, ``fewshot``,
``demo``) and the synthetic-set cache's loading side. Training's job is ``pipelines.trainer.train``
(docs/train.md); its metrics are ``pipelines.metrics``.

Public API::

    from pipelines import CachedDataset, SynthDataset

The command line is ``fmclip`` (``pipelines.cli.main``); see docs/pipelines.md.
"""
from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562): the loaders import torch, which the command
# line's generate and verify, and every cache worker they start, do without.
_WHERE = {"CachedDataset": "loader", "SynthDataset": "loader"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
