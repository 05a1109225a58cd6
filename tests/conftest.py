"""Fixtures shared by the cache and loader tests: small normal images on disk and a cache made
from them once per session (read only: tests that change a cache change a copy)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from cache_helpers import gen


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """Six small grey normal images of different textures, one of them colour (converted to grey)."""
    folder = tmp_path_factory.mktemp("normals")
    yy, xx = np.mgrid[:80, :80]
    rng = np.random.default_rng(0)
    for i in range(6):
        img = 0.45 + 0.3 * np.sin(xx / (4 + i)) * np.cos(yy / (6 + i)) + 0.05 * rng.random((80, 80))
        pixels = (img.clip(0, 1) * 255).astype(np.uint8)
        if i == 5:
            pixels = np.stack([pixels, pixels, pixels], -1)
        cv2.imwrite(str(folder / f"normal_{i}.png"), pixels)
    return folder


@pytest.fixture(scope="session")
def reference(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "one.zarr"
    assert gen(images, out, "--workers", "1") == 0
    return out
