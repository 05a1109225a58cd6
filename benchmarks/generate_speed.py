"""Cache generation and loading speed, measured side by side on one machine.

1. generation to a local zarr store (zarr's public API) vs raw synthesis (source draw, source
   image and ``synth.synthesize`` per sample, outputs dropped), same shards, same process layout,
   with 1 and 2 processes (targets: >= 75 % of raw; 2 processes >= 1.7x one); also the stored
   form without writing (uint8 images, binary masks, labels, record JSON), so the cost of the
   conversion and that of compressing and writing are seen apart;
2. the cached loader's samples/s with 2 workers vs the on-the-fly dataset through the same
   loader: items collated by the DataLoader, and whole batches made by the dataset and moved by
   torch's DataLoader, float32 and as stored (steady state: the second epoch of persistent workers, rounds alternating cached and on the fly; targets: >= 3,000
   samples/s at 224 x 224 through the DataLoader; >= 2x on the fly);
3. the start-up of a fresh ``fmclip generate`` process (one 256-sample shard);
4. each ``--compressor``'s encoding and decoding cost and stored size (numcodecs, as zarr calls
   it, per 64-sample chunk) on samples made from real brain MR, head CT and abdominal MR images,
   with few and many source images.

Each measure starts after an untimed ``os.sync()``, and each generated store is deleted right
after it is timed, so no measure pays for the kernel's write-back (30 s later) of files that an
earlier one wrote; a generation's own write-back to disk is in its figure only for runs over 30 s.
Source images: axial MNI152 brain slices with their brain masks (shipped in nilearn), in a
minimal prepared layout. Run: ``.venv/bin/python benchmarks/generate_speed.py --samples 32768 [--rounds 5]
[--only generate|compressors|loader] [--compressor zstd|lz4|none]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import cache, generate  # noqa: E402


def brain_slices(size: int, count: int, span: tuple[float, float] = (0.35, 0.7)) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` axial MNI152 slices evenly over ``span`` of the volume's depth, at ``size`` x
    ``size``: (image in [0, 1] float32, brain mask bool)."""
    from pipelines.brain import load_mni_brain

    volume, brain = load_mni_brain()
    picks = [int(z * volume.shape[0]) for z in np.linspace(*span, count)]
    return [(cv2.resize(volume[z], (size, size), interpolation=cv2.INTER_AREA).clip(0, 1),
             cv2.resize(brain[z].astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0) for z in picks]


def brain_dataset(folder: Path, size: int, count: int = 12) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "foreground").mkdir()
    lines = []
    for k, (img, fg) in enumerate(brain_slices(size, count)):
        cv2.imwrite(str(folder / "images" / f"s{k}.png"), (img * 65535).astype(np.uint16))
        cv2.imwrite(str(folder / "foreground" / f"s{k}.png"), fg.astype(np.uint8) * 255)
        lines.append(json.dumps({"id": f"s{k}", "split": "train", "label": 0, "image": f"images/s{k}.png",
                                 "foreground": f"foreground/s{k}.png", "mask": None, "sha256": str(k)}))
    (folder / "index.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "card.json").write_text(json.dumps({"size": size}))  # the working size it was made at
    return folder


def synthesis_only(path: str, shard: int, seeds: list[int]) -> int:
    """Raw synthesis: each sample's source draw, source image and ``synth.synthesize``; the
    outputs are dropped (no stored form, no record JSON, no writing)."""
    import synth
    from pipelines.samples import source_indices

    state = cache._state(path)
    sources, config = state["sources"], state["config"]
    for seed, src in zip(seeds, source_indices(seeds, len(sources)).tolist()):  # as make_samples draws them
        image, fg = sources.read(src)
        synth.synthesize(image, rng=int(seed), foreground=fg, config=config, source_id=sources.source_id(src))
    return len(seeds)


def stored_form(path: str, shard: int, seeds: list[int]) -> int:
    """Generation's task up to the write: the samples in stored form (uint8 images, binary
    masks, labels, record JSON), then dropped: what the on-the-fly dataset does, plus JSON."""
    from pipelines.samples import make_samples

    state = cache._state(path)
    make_samples(state["sources"], state["config"], seeds, state["settings"]["dtype"])
    return len(seeds)


def raw(path: str, jobs: dict[int, list[int]], workers: int, task=synthesis_only) -> float:
    """Seconds to run ``task`` on the shards on ``workers`` processes laid out as generation
    lays them out (this process and ``workers - 1`` spawned ones), without writing."""
    settle()
    t = time.perf_counter()
    for _ in generate._local(path, jobs, workers, task=task):
        pass
    return time.perf_counter() - t


def settle() -> None:
    """Flush every dirty page to disk, untimed, so that no measure pays for the kernel's
    write-back of files an earlier measure wrote (30 s later, on these 2 cores)."""
    os.sync()


def gen(data: Path, out: Path, samples: int, shard: int, workers: int, size: int, compressor: str = "zstd") -> float:
    """Seconds to generate a new store (an existing one is deleted first, untimed: it would be
    resumed)."""
    shutil.rmtree(out, ignore_errors=True)
    settle()
    args = argparse.Namespace(data=str(data), support=None, out=str(out), samples=samples, seed=0, size=size,
                              shard_size=shard, chunk_size=64, dtype="uint8", compressor=compressor, config=None,
                              workers=workers, dask_local=None,
                              scheduler=None, overwrite=True, no_progress=True)
    t = time.perf_counter()
    generate.generate(args)
    return time.perf_counter() - t


def make_loader(ds, workers: int):
    """Loading ``ds`` with ``workers`` persistent workers through torch's DataLoader: whole batches,
    or items collated by it."""
    from torch.utils.data import DataLoader

    return DataLoader(ds, batch_size=None if ds.batch_size else 64, num_workers=workers,
                      multiprocessing_context="spawn", persistent_workers=True)


def epoch_rate(loader) -> float:
    """samples/s of one whole epoch."""
    t, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["index"])
    return n / (time.perf_counter() - t)


def measure_generation(data: Path, tmp: Path, samples: int, shard_size: int, size: int, rounds: int,
                       compressor: str) -> None:
    """Rounds alternate raw synthesis (plain, into arrays), the stored form without writing, and
    generation (in reverse order every other round), so that a slow spell of this shared machine
    hits all of them; ratios are medians of the per-round ratios."""
    import synth

    store = tmp / "c.zarr"
    gen(data, store, 2 * shard_size, shard_size, 1, size, compressor)  # warm numba's cache, make the store
    seeds = synth.spawn_seeds(0, samples)
    jobs = {s: seeds[s * shard_size:(s + 1) * shard_size] for s in range(samples // shard_size)}
    rates: dict[str, list[float]] = {}

    def generate_seconds(workers: int) -> float:
        out = tmp / f"g{workers}.zarr"
        seconds = gen(data, out, samples, shard_size, workers, size, compressor)
        shutil.rmtree(out)  # before the kernel writes it back during the next measure
        return seconds

    for round_ in range(rounds):
        for workers in (1, 2):
            measures = [(f"raw synthesis, {workers}p", partial(raw, str(store), jobs, workers)),
                        (f"stored form, no writing, {workers}p", partial(raw, str(store), jobs, workers, stored_form)),
                        (f"generate to zarr, {workers}p", partial(generate_seconds, workers))]
            # Every other round in reverse order, so that a machine slowing down or speeding up
            # over a round does not favour the measure that always comes first.
            for name, seconds in measures[::-1 if round_ % 2 else 1]:
                rates.setdefault(name, []).append(samples / seconds())
    for name, values in rates.items():
        print(f"{name:30s} {np.median(values):8.0f} samples/s (rounds: {', '.join(f'{v:.0f}' for v in values)})")

    def ratio(a: str, b: str, label: str, fmt: str = "{:.0%}") -> None:
        per_round = np.divide(rates[a], rates[b])
        print(f"{label}: {fmt.format(np.median(per_round))} (rounds: {', '.join(fmt.format(v) for v in per_round)})")

    for w in (1, 2):
        ratio(f"generate to zarr, {w}p", f"raw synthesis, {w}p", f"generate / raw synthesis, {w}p")
        ratio(f"generate to zarr, {w}p", f"stored form, no writing, {w}p", f"generate / stored form, {w}p")
    ratio("generate to zarr, 2p", "generate to zarr, 1p", "generate 2 / 1 processes", "{:.2f}x")
    ratio("raw synthesis, 2p", "raw synthesis, 1p", "raw synthesis 2 / 1 processes", "{:.2f}x")


def stored_samples(kind: str, sources: int, size: int, n: int = 256) -> np.ndarray:
    """``n`` synthetic samples in stored form (uint8), each from one of ``sources`` real images
    drawn as generation draws them: ``brain`` (MNI152 axial slices with their brain masks,
    nilearn), ``ct`` (head CT slices) or ``mr`` (an abdominal MR slice, full frame), the last two
    shipped with pydicom. Few sources recur within a chunk, which a compressor with a long
    enough window exploits."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    import synth
    from pipelines.samples import source_indices, to_stored

    if kind == "brain":
        images = brain_slices(size, sources, (0.3, 0.7))
    else:
        files = {"ct": ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"], "mr": ["examples_overlay.dcm"]}[kind][:sources]
        images = []
        for name in files:
            pixels = dcmread(get_testdata_file(name)).pixel_array.astype(np.float32)
            low, high = np.percentile(pixels, [0.5, 99.5])
            images.append((cv2.resize(np.clip((pixels - low) / (high - low), 0, 1), (size, size),
                                      interpolation=cv2.INTER_AREA).clip(0, 1), None))
    seeds = synth.spawn_seeds(0, n)
    out = np.empty((n, size, size), np.uint8)
    for i, (seed, src) in enumerate(zip(seeds, source_indices(seeds, len(images)).tolist())):
        image, foreground = images[src]
        out[i] = to_stored(synth.synthesize(image, rng=seed, foreground=foreground).image, "uint8")
    return out


def measure_compressors(size: int, rounds: int) -> None:
    """Encoding and decoding cost of each ``--compressor`` per sample and the stored size, on
    samples made from real images of three kinds with several numbers of source images, in the
    cache's 64-sample chunks (one process; medians of ``rounds`` passes)."""
    from numcodecs import Blosc, Zstd

    for kind, sources in (("brain", 4), ("brain", 12), ("brain", 48), ("ct", 2), ("mr", 1)):
        images = stored_samples(kind, sources, size)
        chunks = [np.ascontiguousarray(images[k:k + 64]).reshape(-1) for k in range(0, len(images), 64)]
        codecs = {"lz4": Blosc(cname="lz4", clevel=1, shuffle=Blosc.NOSHUFFLE), "zstd": Zstd(level=cache.ZSTD_LEVEL)}
        for name, codec in codecs.items():
            encode, decode = codec.encode, codec.decode
            enc, dec = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                packed = [encode(c) for c in chunks]
                enc.append(time.perf_counter() - t)
                rows = np.empty_like(chunks[0])
                t = time.perf_counter()
                for p in packed:
                    decode(p, out=rows)
                dec.append(time.perf_counter() - t)
            kb = sum(map(len, packed)) / len(images) / 1024
            print(f"{kind:5s} ({sources:2d} sources) {name:14s}: encode {np.median(enc) / len(images) * 1e3:.4f} ms, "
                  f"decode {np.median(dec) / len(images) * 1e3:.4f} ms a sample; {kb:.1f} kB a sample "
                  f"({images[0].nbytes / 1024:.0f} kB uncompressed)", flush=True)


def measure_startup(data: Path, tmp: Path, size: int, rounds: int) -> None:
    """Seconds a fresh ``fmclip generate`` process takes for one 256-sample shard on one
    process: almost all of it is start-up (imports, numba's cached kernels, the store), which
    the in-process measures above pay once, untimed."""
    import subprocess

    times = []
    for k in range(rounds):
        out = tmp / f"startup{k}.zarr"
        cmd = [sys.executable, "-m", "pipelines.cli", "generate", "--data", str(data), "--out", str(out),
               "--samples", "256", "--seed", "0", "--size", str(size), "--workers", "1", "--no-progress"]
        settle()
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        times.append(time.perf_counter() - t)
        shutil.rmtree(out)
    print(f"fresh `fmclip generate`, 256 samples, 1 process: {np.median(times):.2f} s "
          f"(rounds: {', '.join(f'{t:.2f}' for t in times)})")


def measure_loader(data: Path, tmp: Path, samples: int, shard_size: int, size: int, rounds: int,
                   compressor: str) -> None:
    """Per loading mode: a cached and an on-the-fly loader (persistent workers, started and
    warmed by one untimed epoch each), then ``rounds`` rounds timing one epoch of each in
    turn; the ratio is the median of the per-round ratios."""
    from pipelines.loader import CachedDataset, SynthDataset

    store = tmp / "loader.zarr"
    gen(data, store, samples, shard_size, 2, size, compressor)
    settle()
    live_data = dict(data=data, samples=min(samples, 4096), seed=0, size=size)
    modes = {"items, DataLoader batch 64": {},
             "batches of 64, DataLoader(batch_size=None)": {"batch_size": 64},
             "batches of 64, uint8 images (as_stored), DataLoader": {"batch_size": 64, "as_stored": True}}
    for mode, kw in modes.items():
        cached = make_loader(CachedDataset(store, seed=0, **kw), 2)
        live = make_loader(SynthDataset(**live_data, **kw), 2)
        epoch_rate(cached), epoch_rate(live)  # start the workers, open the store, warm numba
        pairs = [(epoch_rate(cached), epoch_rate(live)) for _ in range(rounds)]
        ratios = [c / v for c, v in pairs]
        print(f"{mode}: cached {np.median([c for c, _ in pairs]):6.0f} samples/s, on the fly "
              f"{np.median([v for _, v in pairs]):6.0f} (2 workers each; medians); ratio {np.median(ratios):.1f}x "
              f"(rounds: {', '.join(f'{r:.1f}' for r in ratios)})", flush=True)
        del cached, live  # their workers exit before the next mode starts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2048, help="per measure; 32768 keeps pool start-up small")
    p.add_argument("--rounds", type=int, default=5, help="rounds of each measure")
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard (fmclip generate's default)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--compressor", choices=cache.COMPRESSORS, default="zstd", help="of the generated caches")
    p.add_argument("--only", choices=("generate", "compressors", "loader"), default=None, help="run one part")
    a = p.parse_args()
    cache.single_thread()
    with tempfile.TemporaryDirectory() as tmp:
        data = brain_dataset(Path(tmp) / "brain", a.size)
        if a.only in (None, "compressors"):
            measure_compressors(a.size, a.rounds)
        if a.only in (None, "generate"):
            measure_generation(data, Path(tmp), a.samples, a.shard_size, a.size, a.rounds, a.compressor)
            measure_startup(data, Path(tmp), a.size, a.rounds)
        if a.only in (None, "loader"):
            measure_loader(data, Path(tmp), a.samples, a.shard_size, a.size, a.rounds, a.compressor)


if __name__ == "__main__":
    main()
