"""``fmclip verify CACHE.zarr [--repair]``: check a cache made by ``fmclip generate``.

1. completeness: every shard has a readable ``_done`` marker, with the right sample range;
2. integrity: each shard's files still have the CRC-32C recorded when the shard was finished;
3. reproducibility: a random subset of samples is regenerated from their records
   (``synth.replay``) and compared byte for byte with what is stored.

Every problem is reported with its shard number; exit 0 when clean, 1 when damaged (a store
whose own metadata is gone included), 2 when the path is not a cache. ``--repair`` remakes
exactly the damaged shards from the seeds and sources the cache records (the bytes
``fmclip generate`` wrote), then checks again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .cache import (
    DONE,
    CacheError,
    changed_files,
    mark_done,
    n_shards,
    read_marker,
    read_settings,
    shard_range,
    write_shard,
)
from .samples import to_stored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cache", help="the cache folder, e.g. cache.zarr")
    parser.add_argument("--replay", type=int, default=16, help="samples to regenerate and compare")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replayed subset's draw")
    parser.add_argument("--repair", action="store_true",
                        help="remake the damaged shards (as generate made them), then check again")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _marker(path: Path, shard: int) -> tuple[dict[str, Any] | None, str | None]:
    """The shard's marker, or the problem with it."""
    try:
        marker = read_marker(path, shard)
    except (OSError, ValueError) as exc:
        return None, f"unreadable marker ({type(exc).__name__})"
    if marker is None:
        return None, "missing (not finished)"
    if not isinstance(marker, dict) or not isinstance(marker.get("crc32c"), dict):
        return None, "marker without checksums"
    return marker, None


def check_shards(path: Path, settings: dict[str, Any], progress: bool = False) -> dict[int, str]:
    """Completeness and checksums: the problem of each damaged or missing shard."""
    from tqdm import tqdm

    problems: dict[int, str] = {}
    total = n_shards(settings["samples"], settings["shard_size"])
    for shard in tqdm(range(total), desc=f"verify {path.name}", unit="shard", disable=not progress,
                      dynamic_ncols=True):
        start, stop = shard_range(shard, settings["samples"], settings["shard_size"])
        where = f"shard {shard} (samples {start}-{stop - 1})"
        marker, problem = _marker(path, shard)
        if problem:
            problems[shard] = f"{where}: {problem}"
            continue
        if (marker.get("start"), marker.get("stop")) != (start, stop):
            problems[shard] = f"{where}: marker covers {marker.get('start')}-{marker.get('stop')}, expected {start}-{stop}"
            continue
        bad = changed_files(path, shard, marker)
        if bad:
            problems[shard] = f"{where}: damaged, checksum mismatch in " + ", ".join(bad)
    return problems


def check_replay(path: Path, settings: dict[str, Any], count: int, seed: int, skip: set[int]) -> dict[int, str]:
    """Regenerate ``count`` random samples (outside damaged shards) from their records."""
    import zarr

    import synth

    from .sources import DataError, SourceSet

    try:
        sources = SourceSet(json.loads((path / "sources.json").read_text()))
    except (OSError, ValueError, KeyError) as exc:
        return {-1: f"sources.json: unreadable ({type(exc).__name__}); no sample can be replayed"}
    group = zarr.open_group(str(path), mode="r")
    config = synth.SynthesisConfig.from_dict(settings["config"])
    s = settings["shard_size"]
    candidates = np.array([i for i in range(settings["samples"]) if i // s not in skip], dtype=np.int64)
    picks = np.sort(np.random.default_rng(seed).choice(candidates, min(count, len(candidates)), replace=False))
    problems: dict[int, str] = {}
    for i in picks.tolist():
        try:
            src = int(group["source_index"][i])
            image, fg = sources.read(src)
        except DataError as exc:
            problems.setdefault(i // s, f"sample {i} (shard {i // s}): source image unavailable, cannot replay ({exc})")
            continue
        except Exception as exc:  # a chunk zarr cannot decode (its checksum) is damage too
            problems.setdefault(i // s, f"sample {i} (shard {i // s}): unreadable ({type(exc).__name__}: {exc})")
            continue
        record = str(group["records"][i])
        out, mask = synth.replay(image, record, foreground=fg, config=config)
        same = (np.array_equal(to_stored(out, settings["dtype"]), group["images"][i])
                and np.array_equal((mask > 0.5).astype(np.uint8), group["masks"][i])
                and int(group["labels"][i]) == int(mask.any())
                and int(group["seeds"][i]) == json.loads(record)["seed"])
        if not same:
            problems.setdefault(i // s, f"sample {i} (shard {i // s}): regenerated from its record, differs from the store")
    return problems


def repair(path: Path, settings: dict[str, Any], shards: set[int]) -> None:
    """Remake these shards exactly as generate made them (their seeds are the store's, their sources
    those of sources.json), then commit their markers."""
    import synth

    seeds = synth.spawn_seeds(settings["seed"], settings["samples"])
    for shard in sorted(shards):
        start, stop = shard_range(shard, settings["samples"], settings["shard_size"])
        (path / DONE / f"{shard:06d}.json").unlink(missing_ok=True)
        result = write_shard(str(path), shard, seeds[start:stop])
        mark_done(path, shard, start, stop, result["crc32c"])


def run(args: argparse.Namespace) -> int:
    path = Path(args.cache)
    try:
        settings = read_settings(path)
    except CacheError as exc:
        print(f"fmclip verify: error: {exc}", file=sys.stderr)
        return 2
    if settings is None:
        if (path / DONE).is_dir():  # a cache whose metadata went: damage, not a foreign folder
            print(f"{path}: DAMAGED: zarr.json is missing or unreadable; make the cache again with "
                  "fmclip generate --overwrite", file=sys.stderr)
            return 1
        print(f"fmclip verify: error: {path}: not an fmclip cache (no zarr.json with fmclip settings)",
              file=sys.stderr)
        return 2
    problems = check_shards(path, settings, progress=not args.no_progress)
    problems.update({k: v for k, v in check_replay(path, settings, args.replay, args.seed, set(problems)).items()
                     if k not in problems})
    total = n_shards(settings["samples"], settings["shard_size"])
    for line in problems.values():
        print(f"{path}: {line}")
    damaged = {k for k in problems if k >= 0}
    if problems and args.repair and damaged and -1 not in problems:
        repair(path, settings, damaged)
        print(f"{path}: remade {len(damaged)} shard(s): {', '.join(map(str, sorted(damaged)))}; checking again")
        args.repair = False
        return run(args)
    if problems:
        how = (f"repair: fmclip verify {path} --repair (remakes exactly these {len(damaged)} shards)"
               if damaged and -1 not in problems else "make the cache again with fmclip generate --overwrite")
        print(f"{path}: DAMAGED: {len(problems)} problem(s) in {total} shards; {how}", file=sys.stderr)
        return 1
    print(f"{path}: OK: {settings['samples']} samples in {total} shards complete, checksums match, "
          f"{min(args.replay, settings['samples'])} samples regenerated identically")
    return 0
