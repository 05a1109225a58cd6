"""A training run's folder, with open_clip's habits::

    runs/NAME/config.yaml          the resolved config, the cache's identity and the code version
    runs/NAME/out.log              one line per epoch (and what the run decided: splits, feature cache)
    runs/NAME/metrics.jsonl        one JSON line per epoch
    runs/NAME/checkpoints/epoch_N.pt       the last ``train.keep`` of them
    runs/NAME/checkpoints/epoch_latest.pt  replaced atomically after every epoch
    runs/NAME/checkpoints/best.pt          the best epoch on validation (never the test set)

The job writes each checkpoint (``fmclip train``: ``model.save_checkpoint`` files whose ``extra`` holds what a
resume needs: optimiser state, epoch, step, RNG states, the best metric so far; ``fmclip pretrain``: open_clip's
``state_dict`` with the same). Only rank 0 writes. An existing run is refused unless resumed, and a resume whose
config or data differ is refused with the differences.

Example:
    >>> run = RunDir.start("runs", "brain-k16", config, resume=False)   # doctest: +SKIP
    >>> run.log("epoch 1/200 ...")                                       # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dataprep.io import atomic_write_bytes

from .train_config import differences, dump

LATEST = "epoch_latest.pt"
BEST = "best.pt"


class RunError(Exception):
    """A run folder that cannot be used as asked; the message names it and says what to do."""


def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit (with ``+dirty`` for uncommitted changes)."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("fusionmedclip")
    except PackageNotFoundError:
        package = None
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": package, "commit": commit}


def default_name(config: dict[str, Any]) -> str:
    arch = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config["model"]["arch"]))
    return f"{time.strftime('%Y_%m_%d-%H_%M_%S')}-{arch}-stage{config['model'].get('stage', 1)}"


class RunDir:
    """One run's folder; ``write`` is False on DDP ranks other than 0 (they read, never write)."""

    def __init__(self, path: Path, write: bool) -> None:
        self.path, self.write = Path(path), write
        self.checkpoints = self.path / "checkpoints"

    @classmethod
    def start(cls, out: str | Path, name: str | None, record: dict[str, Any], resume: bool,
              write: bool = True) -> RunDir:
        """Create the run (``record``: the config.yaml content), or reopen it for ``--resume latest``."""
        if resume and not name:
            raise RunError("--resume latest needs the run's --name")
        run = cls(Path(out) / (name or default_name(record["config"])), write)
        saved = run.path / "config.yaml"
        if resume:
            if not saved.is_file():
                raise RunError(f"{run.path}: no run to resume (no config.yaml); start it without --resume")
            run._check_same(saved, record)
            return run
        if run.path.exists() and any(run.path.iterdir()):
            raise RunError(f"{run.path}: the run exists; continue it with --resume latest, or choose another --name")
        if write:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(saved, dump(record).encode())
        return run

    def _check_same(self, saved: Path, record: dict[str, Any]) -> None:
        import yaml

        old = yaml.safe_load(saved.read_text()) or {}
        keys = sorted((set(old) | set(record)) - {"code"})  # what decides the results; the code may move on
        changed = differences({k: old.get(k) for k in keys}, {k: record.get(k) for k in keys})
        if changed:
            raise RunError(f"{self.path}: cannot resume with other settings or other data; differences: "
                           + "; ".join(changed))

    # ------------------------------------------------------------------ logs
    def log(self, line: str) -> None:
        if self.write:
            with open(self.path / "out.log", "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def write_text(self, name: str, text: str) -> None:
        """A file of the run, written atomically (by rank 0 only)."""
        if self.write:
            atomic_write_bytes(self.path / name, text.encode())

    def append_metrics(self, row: dict[str, Any]) -> None:
        if self.write:
            with open(self.path / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the lines of the first ``epochs`` epochs: a run killed after writing an epoch's line but
        before its checkpoint redoes that epoch, and must not log it twice."""
        if self.write:
            kept = [row for row in self.metrics() if row["epoch"] <= epochs]
            atomic_write_bytes(self.path / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())

    # ----------------------------------------------------------- checkpoints
    def save(self, write: Callable[[Path], None], epoch: int, keep: int, best: bool) -> None:
        """epoch_N.pt (``write(path)`` writes it, atomically), then epoch_latest.pt (and best.pt) from it;
        older epoch files beyond ``keep`` go."""
        if not self.write:
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        target = self.checkpoints / f"epoch_{epoch}.pt"
        write(target)
        for link in [LATEST] + ([BEST] if best else []):
            tmp = self.checkpoints / f".{link}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(target, tmp)  # the same bytes under a second name, then moved into place atomically
            except OSError:  # a file system without hard links
                shutil.copyfile(target, tmp)
            os.replace(tmp, self.checkpoints / link)
        numbered = sorted(self.checkpoints.glob("epoch_[0-9]*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in numbered[:-keep]:
            old.unlink()

    def latest(self) -> Path | None:
        path = self.checkpoints / LATEST
        return path if path.is_file() else None


def load_state(path: Path) -> dict[str, Any]:
    """A training checkpoint, safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)
