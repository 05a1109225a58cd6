"""``fmclip generate --data DATA --out CACHE.zarr --samples N --seed S``: pre-generate a synthetic
training set into a sharded zarr v3 cache, on local processes (``--workers W``) or on Dask
(``--dask-local N`` starts a local cluster, ``--scheduler ADDRESS`` joins one).

Sample i uses seed ``synth.spawn_seeds(S, N)[i]`` and a source image drawn from that seed, so
the bytes depend on neither the worker count nor the backend. Killed at any moment and run
again with the same arguments, it rewrites only the shards that have no ``_done`` marker.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .cache import (
    COMPRESSORS,
    FORMAT,
    METHOD_EPOCHS,
    THREAD_VARIABLES,
    ZSTD_LEVEL,
    CacheError,
    mark_done,
    n_shards,
    prepare_store,
    restore_environ,
    shard_range,
    single_thread,
    single_threaded,
    write_shard,
)
from .sources import DataError, source_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset (index.jsonl) or a folder of normal images")
    parser.add_argument("--support", default=None, help="few-shot support file: use only its images")
    parser.add_argument("--out", required=True, help="cache to write, e.g. cache.zarr (resumed if it exists)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"number of samples N (default {METHOD_EPOCHS} x the number of source images k: "
                             "method.md's whole training run, 200 epochs of the k images, each read once)")
    parser.add_argument("--seed", type=int, required=True, help="seed S of the whole set")
    parser.add_argument("--size", type=int, default=224, help="working size: a prepared dataset's own (another is refused); folder images are resized to it")
    parser.add_argument("--shard-size", type=int, default=256, help="samples per shard (the unit of work)")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="samples per chunk, the unit of reading (divides --shard-size; default 64, "
                             "the loader's block)")
    parser.add_argument("--dtype", choices=("uint8", "float16"), default="uint8", help="stored image type")
    parser.add_argument("--compressor", choices=COMPRESSORS, default="zstd",
                        help="of images and masks: zstd (level -7, a window over each chunk: smallest, and about as "
                             "fast as lz4), lz4 or none")
    parser.add_argument("--config", default=None, help="SynthesisConfig as JSON (SynthesisConfig.to_dict)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="local processes")
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--dask-local", type=int, default=None, metavar="N", help="start a local Dask cluster")
    backend.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="Dask scheduler, e.g. tcp://host:8786 (--out must be on a shared file system)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache made with other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_settings(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the bytes; a store is resumed only under equal settings."""
    import synth

    config = synth.SynthesisConfig()
    if args.config:
        try:
            config = synth.SynthesisConfig.from_dict(json.loads(Path(args.config).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{args.config}: cannot read the synthesis config ({exc})") from None
    return {"format": FORMAT, "engine_version": synth.ENGINE_VERSION, "config": config.to_dict(),
            "seed": int(args.seed), "samples": int(args.samples), "shard_size": int(args.shard_size),
            "chunk_size": min(int(args.chunk_size), int(args.shard_size)),
            "size": int(args.size), "dtype": args.dtype, "compressor": args.compressor,
            **({"zstd_level": ZSTD_LEVEL} if args.compressor == "zstd" else {}), "dataset": spec["identity"],
            "source_selection": "source_index(seed) = default_rng(SeedSequence(seed, spawn_key=(0x5EED,)))"
                                ".integers(number of sources)"}


def _die_with_parent() -> None:
    """Linux: a worker dies when its driver does, so a killed run leaves no orphan writing a
    shard that the next run will also write."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(1)


def _init_worker() -> None:
    _die_with_parent()
    single_thread()


def _run_shard_dask(path: str, shard: int, seeds: list[int]) -> dict[str, Any]:
    single_thread()
    return write_shard(path, shard, seeds)


def _local(path: str, jobs: dict[int, list[int]], workers: int,
           task: Callable[[str, int, list[int]], Any] = write_shard) -> Iterator[Any]:
    """``task(path, shard, seeds)`` of every job on ``workers`` local processes, results as they
    come. This process is one of them: the ``workers - 1`` spawned ones take about 1 s each to
    start (imports, numba's cached kernels), and it makes shards meanwhile instead of waiting."""
    with single_threaded():  # this process may be the user's own: its settings come back
        yield from _run_local(path, deque(jobs.items()), workers, task)


def _run_local(path: str, todo: deque, workers: int, task: Callable[[str, int, list[int]], Any]) -> Iterator[Any]:
    if workers <= 1:  # in-process only: no spawn cost, and easier to debug
        while todo:
            yield task(path, *todo.popleft())
        return
    ctx = mp.get_context("spawn")  # fork would copy the driver's threads and locks
    with cf.ProcessPoolExecutor(workers - 1, mp_context=ctx, initializer=_init_worker) as pool:
        pending: set[cf.Future] = set()
        try:
            while todo or pending:
                # One queued job per spawned worker beyond the one it runs: enough to keep it busy,
                # few enough that the last shards are shared out evenly.
                while todo and len(pending) < 2 * (workers - 1):
                    pending.add(pool.submit(task, path, *todo.popleft()))
                finished = {f for f in pending if f.done()}
                if not finished and todo:
                    yield task(path, *todo.popleft())
                    continue
                if not finished:
                    finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    pending.discard(future)
                    yield future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


_DASK_ENVIRON = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


def _dask(path: str, jobs: dict[int, list[int]], local: int | None, address: str | None) -> Iterator[dict[str, Any]]:
    from distributed import Client, LocalCluster, as_completed

    threads = dict.fromkeys(THREAD_VARIABLES, "1")
    with contextlib.ExitStack() as stack:
        if local is not None:
            # Dask's nannies set variables (MALLOC_TRIM_THRESHOLD_) in this process's environment too;
            # it may be the user's own, so they are put back as they were afterwards.
            stack.callback(restore_environ, {k: None for k in _DASK_ENVIRON} | dict(os.environ))
            cluster = stack.enter_context(LocalCluster(n_workers=local, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, env=threads))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(address, timeout="30s"))
        # pure=False and no retries: a shard is computed by exactly one task attempt per run.
        futures = [client.submit(_run_shard_dask, path, shard, seeds, pure=False, retries=0,
                                 key=f"fmclip-shard-{shard}-{os.getpid()}") for shard, seeds in jobs.items()]
        for future in as_completed(futures):
            yield future.result()


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One generate per store at a time (a second would write the same shards). The lock is keyed on the
    resolved path: a second writer through a symbolic link meets the same lock."""
    out = out.resolve()
    lock_path = out.with_name(f".{out.name}.lock")
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"{out}: another `fmclip generate` is writing this cache") from None
        yield


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the generation; returns a summary. Raises DataError / CacheError / OSError."""
    import synth

    if (args.samples is not None and args.samples < 1) or args.shard_size < 1 or args.chunk_size < 1 or args.size < 16:
        raise DataError("--samples, --shard-size and --chunk-size must be positive and --size at least 16")
    if args.seed < 0:
        raise DataError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.shard_size % min(args.chunk_size, args.shard_size):
        raise DataError(f"--chunk-size {args.chunk_size} must divide --shard-size {args.shard_size}")
    spec = source_spec(args.data, size=args.size, support=args.support)
    if args.samples is None:
        args.samples = METHOD_EPOCHS * len(spec["items"])
    settings = build_settings(args, spec)
    out = Path(args.out)
    if out.parent.exists() and not out.parent.is_dir():
        raise CacheError(f"{out}: cannot create the cache ({out.parent} is not a folder)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise CacheError(f"{out}: cannot create the cache ({out.parent} is not writable)")
    with _exclusive(out):
        done = prepare_store(out, settings, spec, args.overwrite)
        total = n_shards(args.samples, args.shard_size)
        seeds = synth.spawn_seeds(args.seed, args.samples)
        jobs: dict[int, list[int]] = {}
        for shard in range(total):
            if shard not in done:
                start, stop = shard_range(shard, args.samples, args.shard_size)
                jobs[shard] = seeds[start:stop]
        from tqdm import tqdm

        finished = sum(shard_range(s, args.samples, args.shard_size)[1] - shard_range(s, args.samples,
                                                                                    args.shard_size)[0] for s in done)
        bar = tqdm(total=args.samples, initial=finished, unit="sample", desc=f"generate {out.name}",
                   disable=args.no_progress, dynamic_ncols=True)
        if args.dask_local is not None or args.scheduler:
            results = _dask(str(out), jobs, args.dask_local, args.scheduler)
        else:
            results = _local(str(out), jobs, args.workers)
        written: set[int] = set()
        with bar:
            for result in results:
                shard = result["shard"]
                # Each shard is written by exactly one task of this run.
                assert shard in jobs and shard not in written, f"shard {shard} written twice"
                written.add(shard)
                # The marker only after the shard's files: a shard whose marker a kill cuts off is made again.
                mark_done(out, shard, result["start"], result["stop"], result["crc32c"])
                bar.update(result["stop"] - result["start"])
    return {"out": str(out), "samples": args.samples, "shards": total, "written": len(written),
            "skipped": len(done)}


def generate_cache(data: str | Path, out: str | Path, *, samples: int | None, seed: int, size: int = 224,
                   support: str | Path | None = None, config: str | Path | None = None, workers: int | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """The Python face of ``fmclip generate`` (the same options, the same checks); returns its summary."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--data", str(data), "--out", str(out), "--seed", str(seed), "--size", str(size)]
    argv += ["--samples", str(samples)] if samples is not None else []
    argv += ["--support", str(support)] if support else []
    argv += ["--config", str(config)] if config else []
    argv += ["--workers", str(workers)] if workers else []
    return generate(parser.parse_args(argv + ([] if progress else ["--no-progress"])))


def run(args: argparse.Namespace) -> int:
    try:
        summary = generate(args)
    except (DataError, CacheError) as exc:
        print(f"fmclip generate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename or args.out
        print(f"fmclip generate: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{summary['out']}: {summary['samples']} samples in {summary['shards']} shards "
          f"({summary['written']} written now, {summary['skipped']} already finished)")
    return 0
