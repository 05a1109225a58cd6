"""Where a training process runs: device, DDP rank and world (from torchrun's environment), precision, threads.

Example:
    >>> rt = Runtime({"device": "cpu", "precision": "auto", "threads": None})
    >>> rt.device.type, rt.precision, rt.world
    ('cpu', 'fp32', 1)
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class Runtime:
    """Device, DDP rank and world, precision and threads of this process."""

    def __init__(self, train: dict[str, Any]) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        want = train["device"]
        cuda = torch.cuda.is_available() if want == "auto" else want.startswith("cuda")
        self.device = torch.device(f"cuda:{local}" if cuda and want in ("auto", "cuda") else (want if cuda else "cpu"))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.precision = train["precision"] if train["precision"] != "auto" else (
            "amp_bf16" if self.device.type == "cuda" else "fp32")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.threads = int(train["threads"] or max(1, cores // local_world))
        torch.set_num_threads(self.threads)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "amp_bf16")

    def mean(self, values: list[float]) -> list[float]:
        """The mean over ranks of each value (the values themselves in one process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


@contextmanager
def callers_threads() -> Iterator[None]:
    """Put torch's thread count back as the caller had it: a job's :class:`Runtime` sets its own."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
