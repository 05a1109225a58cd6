"""``fmclip verify CACHE.zarr``: check a cache made by ``fmclip generate``.

1. completeness: every shard has its ``_done`` marker, with the right sample range;
2. integrity: each shard's files still have the checksums recorded when the shard was finished
   (crc32c; sha256 in stores written before);
3. reproducibility: a random subset of samples is regenerated from their records
   (``synth.replay``) and compared byte for byte with what is stored.

Every problem is reported with its shard number; exit 0 when clean, 1 when damaged, 2 when
the path is not a cache.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .cache import (
    CHECKSUMS,
    DONE,
    CacheError,
    file_checksums,
    n_shards,
    read_marker,
    read_settings,
    shard_range,
)
from .samples import to_stored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache", help="the cache folder, e.g. cache.zarr")
    parser.add_argument("--replay", type=int, default=16, help="samples to regenerate and compare (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replayed subset's draw")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_shards(path: Path, settings: dict[str, Any], progress: bool = False) -> list[str]:
    """Completeness and checksums; one message per damaged or missing shard."""
    from tqdm import tqdm

    problems = []
    total = n_shards(settings["samples"], settings["shard_size"])
    for shard in tqdm(range(total), desc=f"verify {path.name}", unit="shard", disable=not progress,
                      dynamic_ncols=True):
        marker = read_marker(path, shard)
        start, stop = shard_range(shard, settings["samples"], settings["shard_size"])
        if marker is None:
            problems.append(f"shard {shard} (samples {start}-{stop - 1}): missing (not finished)")
            continue
        if (marker["start"], marker["stop"]) != (start, stop):
            problems.append(f"shard {shard}: marker covers {marker['start']}-{marker['stop'] - 1}, "
                            f"expected {start}-{stop - 1}")
        algorithm = next((name for name in CHECKSUMS if name in marker), None)
        if algorithm is None:
            problems.append(f"shard {shard}: marker has no checksums ({path / DONE / f'{shard:06d}.json'})")
            continue
        actual = file_checksums(path, shard, algorithm)
        bad = [key for key, digest in marker[algorithm].items() if actual.get(key) != digest]
        if bad:
            problems.append(f"shard {shard} (samples {start}-{stop - 1}): damaged, checksum mismatch in "
                            + ", ".join(bad))
    return problems


def check_replay(path: Path, settings: dict[str, Any], count: int, seed: int, skip: set[int]) -> list[str]:
    """Regenerate ``count`` random samples (outside damaged shards) from their records."""
    import zarr

    import synth

    from .sources import DataError, SourceSet

    group = zarr.open_group(str(path), mode="r")
    sources = SourceSet(json.loads((path / "sources.json").read_text()))
    config = synth.SynthesisConfig.from_dict(settings["config"])
    s = settings["shard_size"]
    candidates = np.array([i for i in range(settings["samples"]) if i // s not in skip], dtype=np.int64)
    picks = np.sort(np.random.default_rng(seed).choice(candidates, min(count, len(candidates)), replace=False))
    problems = []
    for i in picks.tolist():
        src = int(group["source_index"][i])
        try:
            image, fg = sources.read(src)
        except DataError as exc:
            problems.append(f"sample {i} (shard {i // s}): source image unavailable, cannot replay ({exc})")
            continue
        record = str(group["records"][i])
        out, mask = synth.replay(image, record, foreground=fg, config=config)
        same = (np.array_equal(to_stored(out, settings["dtype"]), group["images"][i])
                and np.array_equal((mask > 0.5).astype(np.uint8), group["masks"][i])
                and int(group["labels"][i]) == int(mask.any())
                and int(group["seeds"][i]) == json.loads(record)["seed"])
        if not same:
            problems.append(f"sample {i} (shard {i // s}): regenerated from its record, differs from the store")
    return problems


def run(args: argparse.Namespace) -> int:
    path = Path(args.cache)
    try:
        settings = read_settings(path)
    except CacheError as exc:
        print(f"fmclip verify: error: {exc}", file=sys.stderr)
        return 2
    if settings is None:
        print(f"fmclip verify: error: {path}: not an fmclip cache (no zarr.json with fmclip settings)",
              file=sys.stderr)
        return 2
    problems = check_shards(path, settings, progress=not args.no_progress)
    damaged = {int(p.split()[1]) for p in problems}
    problems += check_replay(path, settings, args.replay, args.seed, damaged)
    total = n_shards(settings["samples"], settings["shard_size"])
    for line in problems:
        print(f"{path}: {line}")
    if problems:
        print(f"{path}: DAMAGED: {len(problems)} problem(s) in {total} shards", file=sys.stderr)
        return 1
    print(f"{path}: OK: {settings['samples']} samples in {total} shards complete, checksums match, "
          f"{min(args.replay, settings['samples'])} samples regenerated identically")
    return 0
