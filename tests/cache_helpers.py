"""Helpers of the cache and loader tests: the generate call they share and reading a store
back. Their fixtures (``images``, ``reference``) are in conftest.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipelines import cli
from pipelines.cache import ARRAYS_1D

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("images", "masks", *ARRAYS_1D)


def gen(data: Path, out: Path, *extra: str, samples: int = 24, seed: int = 7) -> int:
    return cli.main(["generate", "--data", str(data), "--out", str(out), "--samples", str(samples),
                     "--seed", str(seed), "--size", "64", "--shard-size", "8", "--chunk-size", "4", "--no-progress", *extra])


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in ARRAYS}


def assert_same(a: Path, b: Path) -> None:
    x, y = arrays(a), arrays(b)
    for name in ARRAYS:
        assert np.array_equal(x[name], y[name]), name
