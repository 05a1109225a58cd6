"""The zarr cache: deterministic generation across worker counts and backends, resume after
SIGKILL, verify naming a damaged shard, clear input errors. Making the samples:
test_pipelines_samples.py; loading: test_pipelines_loader.py."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import google_crc32c
import numpy as np
import pytest
import zarr
from cache_helpers import ROOT, arrays, assert_same, gen

from pipelines import cli
from pipelines.cache import ARRAYS_1D, _write_arrays, file_checksums, mark_done, shard_keys
from pipelines.shards import ShardFiles


def test_store_layout_and_contents(reference):
    group = zarr.open_group(str(reference), mode="r")
    settings = group.attrs["fmclip"]
    assert settings["samples"] == 24 and settings["dataset"]["files"] == 6 and "config" in settings
    img = group["images"]
    assert img.dtype == np.uint8 and img.shape == (24, 64, 64)
    assert img.shards == (8, 64, 64) and img.chunks == (4, 64, 64)
    data = arrays(reference)
    assert set(np.unique(data["masks"])) <= {0, 1}
    # labels follow the masks, and the record carries the stored seed and task
    assert np.array_equal(data["labels"], data["masks"].reshape(24, -1).any(1).astype(np.uint8))
    for i in range(24):
        record = json.loads(data["records"][i])
        assert record["seed"] == int(data["seeds"][i]) and record["task"] == data["tasks"][i]
        assert data["source_ids"][i].startswith("normal_")
    assert len({str(t) for t in data["tasks"]}) > 2  # a real mix of tasks, not one repeated
    assert len(list((reference / "_done").glob("*.json"))) == 3


def test_two_workers_and_dask_write_the_same_arrays(images, reference, tmp_path):
    assert gen(images, tmp_path / "two.zarr", "--workers", "2") == 0
    assert_same(reference, tmp_path / "two.zarr")
    environ = {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")}
    assert gen(images, tmp_path / "dask.zarr", "--dask-local", "2") == 0
    assert_same(reference, tmp_path / "dask.zarr")
    assert environ == {k: os.environ.get(k) for k in environ}  # the nannies' settings are put back
    # same bytes on disk too, not just equal decoded values
    for shard in range(3):
        assert file_checksums(reference, shard) == file_checksums(tmp_path / "dask.zarr", shard)


@pytest.mark.parametrize(("dtype", "compressor"), [("uint8", "lz4"), ("float16", "lz4"), ("uint8", "zstd"),
                                                   ("float16", "zstd"), ("uint8", "none")])
def test_direct_shard_writer_writes_the_bytes_zarr_writes(images, tmp_path, dtype, compressor):
    """Shards are written by ShardFiles, not zarr: zarr must read its files back as the data
    written, they must be zarr's byte for byte (zarr rewriting the same data is the reference)
    except for zstd frames, which python-zstandard encodes (its zstd, not numcodecs', and for
    images with a window over the chunk, which zarr cannot ask for) or, for the masks, our
    run-length encoder; a partial shard is left to zarr."""
    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", "--dtype", dtype, "--compressor", compressor, samples=20) == 0
    expected = {"lz4": "blosc", "zstd": "zstd", "none": None}[compressor]
    codecs = [c.to_dict()["name"] for c in zarr.open_array(str(out / "images"), mode="r").compressors]
    assert codecs == ([expected] if expected else []) and len(list((out / "images" / "c").iterdir())) == 3
    names = ["images", "masks", *ARRAYS_1D]
    writer = ShardFiles.open(out, names, binary=("masks",))
    assert writer is not None, "the cache's own layout must take the direct path"
    group = zarr.open_group(str(out), mode="r+")
    arrays_ = {n: group[n] for n in names}
    zstd_coded = {n for n in names if "zstd" in [c.to_dict()["name"] for c in arrays_[n].compressors]}
    assert zstd_coded == set(ARRAYS_1D) | ({"images", "masks"} if compressor == "zstd" else set())
    for shard, (start, stop) in enumerate([(0, 8), (8, 16)]):
        data = {n: a[start:stop] for n, a in arrays_.items()}
        data.update({n: np.array([str(v) for v in data[n]], dtype=object) for n in ("tasks", "source_ids", "records")})
        for n in names:  # a distinct value in each array, so reading back the old file would fail
            data[n][0] = data[n][0] + ("~" if data[n].dtype == object else 1)
        # the masks' set rows given for one shard, found by the encoder for the other
        sums = writer.write(shard, data, {"masks": data["masks"].any(axis=-1)} if shard else None)
        ours = {k: (out / k).read_bytes() for k in shard_keys(shard)}
        assert sums == {k: f"{google_crc32c.value(b):08x}" for k, b in ours.items()}
        reread = zarr.open_group(str(out), mode="r")
        for n in names:
            assert reread[n][start:stop].tolist() == data[n].tolist(), n
        _write_arrays(arrays_, slice(start, stop), data)
        theirs = {k: (out / k).read_bytes() for k in shard_keys(shard)}
        own_frames = {k for k in ours if k.split("/")[0] in zstd_coded}
        assert {k: b for k, b in theirs.items() if k not in own_frames} == {
            k: b for k, b in ours.items() if k not in own_frames}
    partial = {n: a[16:20] for n, a in arrays_.items()}
    before = {k: (out / k).read_bytes() for k in shard_keys(2)}
    assert writer.write(2, partial) is None  # zarr pads a partial chunk with its fill value
    assert {k: (out / k).read_bytes() for k in shard_keys(2)} == before


def test_zstd_chunks_find_the_samples_repeated_anywhere_in_the_chunk(tmp_path):
    """A chunk of 64 samples cycling through 16 incompressible images holds 16 images' worth
    of information, but each repeat lies 16 images (800 kB) back: beyond zstd's fast-level
    window (512 kB) as zarr encodes it, within ShardFiles' window over the whole chunk."""
    rng = np.random.default_rng(0)
    sources = rng.integers(0, 256, (16, 224, 224), dtype=np.uint8)
    data = np.ascontiguousarray(sources[np.arange(64) % 16])
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w", zarr_format=3)
    for name in ("ours", "zarrs"):
        group.create_array(name, shape=data.shape, dtype="uint8", chunks=data.shape, shards=data.shape,
                           compressors=zarr.codecs.ZstdCodec(level=-7))
    assert ShardFiles.open(tmp_path / "z.zarr", ["ours"]).write(0, {"ours": data}) is not None
    group["zarrs"][:] = data
    ours, zarrs = ((tmp_path / "z.zarr" / n / "c" / "0" / "0" / "0").stat().st_size for n in ("ours", "zarrs"))
    assert ours < 1.05 * sources.nbytes and zarrs > 0.95 * data.nbytes
    assert np.array_equal(zarr.open_array(str(tmp_path / "z.zarr" / "ours"), mode="r")[:], data)


def test_direct_shard_writer_declines_layouts_it_does_not_encode(tmp_path):
    group = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    group.create_array("gz", shape=(8,), chunks=(4,), dtype="uint8", compressors=zarr.codecs.GzipCodec())
    group.create_array("zs", shape=(8, 4), chunks=(4, 4), shards=(8, 4), dtype="uint8",
                       compressors=zarr.codecs.ZstdCodec(level=1))
    group.create_array("split", shape=(8, 4), chunks=(4, 2), shards=(8, 4), dtype="uint8")
    assert ShardFiles.open(tmp_path / "other.zarr", ["zs"]) is not None
    for name in ("gz", "split"):
        assert ShardFiles.open(tmp_path / "other.zarr", ["zs", name]) is None, name
    assert ShardFiles.open(tmp_path / "other.zarr", ["missing"]) is None


def test_resume_after_sigkill_matches_uninterrupted_run(images, tmp_path):
    n = 480
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "pipelines.cli", "generate", "--data", str(images), "--out", str(out),
           "--samples", str(n), "--seed", "3", "--size", "64", "--shard-size", "8", "--chunk-size", "4", "--workers", "2",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    done = out / "_done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(done.glob("*.json")) if done.is_dir() else []) < 3:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-way
    proc.wait()
    finished = sorted(done.glob("*.json"))
    assert 3 <= len(finished) < n // 8, "the run was not interrupted mid-way"
    shards = [int(p.stem) for p in finished]
    before = {p: p.stat().st_mtime_ns for s in shards for p in
              [out / k for k in file_checksums(out, s)] + [done / f"{s:06d}.json"] if p.exists()}

    assert gen(images, out, "--workers", "2", samples=n, seed=3) == 0
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before, "a finished shard was rewritten"
    assert len(list(done.glob("*.json"))) == n // 8
    assert gen(images, tmp_path / "whole.zarr", "--workers", "1", samples=n, seed=3) == 0
    assert_same(out, tmp_path / "whole.zarr")
    assert len(set(arrays(out)["seeds"].tolist())) == n  # no sample missing or duplicated


def test_other_settings_are_refused_unless_overwrite(images, reference, tmp_path, capsys):
    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1") == 0
    assert gen(images, out, "--workers", "1", seed=8) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "--overwrite" in err and "Traceback" not in err
    assert_same(out, reference)  # untouched
    assert gen(images, out, "--workers", "1", "--overwrite", seed=8) == 0
    assert not np.array_equal(arrays(out)["seeds"], arrays(reference)["seeds"])


def test_a_store_remade_in_the_same_process_is_written_with_its_new_settings(images, reference, tmp_path):
    """The worker state this process keeps per store is for the store as it is now: replaced
    with --overwrite and other settings, the new store is written as a fresh run writes it."""
    out, fresh = tmp_path / "c.zarr", tmp_path / "fresh.zarr"
    assert gen(images, out, "--workers", "1") == 0
    other = ("--workers", "1", "--dtype", "float16", "--shard-size", "12", "--chunk-size", "6")
    assert gen(images, out, *other, "--overwrite") == 0
    assert gen(images, fresh, *other) == 0
    assert arrays(out)["images"].dtype == np.float16
    assert_same(out, fresh)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's allocator only")
def test_workers_keep_freed_memory_for_the_next_shard():
    """zstd's pattern (a buffer of its bound, shrunk to the output, freed) faults its pages in
    again on every call under glibc's defaults; not once a worker keeps freed memory. After a
    run (the driver may be the user's process) a batch-sized array is reused as glibc's own
    dynamic thresholds would reuse it, not mapped afresh on every call."""
    script = textwrap.dedent(f"""
        import ctypes, resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pipelines.generate import keep_freed_memory
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = libc.realloc.restype = ctypes.c_void_p
        libc.malloc.argtypes, libc.realloc.argtypes = [ctypes.c_size_t], [ctypes.c_void_p, ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]

        def faults_per_call(pattern, calls=20):
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(calls):
                pattern()
            return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / calls

        def zstd_like():
            p = libc.malloc(3_200_000)
            ctypes.memset(p, 1, 850_000)
            libc.free(libc.realloc(p, 850_000))

        def batch():  # a 64 x 224 x 224 float32 batch, written whole
            p = libc.malloc(12_845_056)
            ctypes.memset(p, 1, 12_845_056)
            libc.free(p)

        before = faults_per_call(zstd_like)
        faults_per_call(batch, 2)
        batch_defaults = faults_per_call(batch)
        keep_freed_memory()
        faults_per_call(zstd_like, 2)
        kept = faults_per_call(zstd_like)
        keep_freed_memory(False)
        faults_per_call(batch, 2)
        print(before, batch_defaults, kept, faults_per_call(batch))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    before, batch_defaults, kept, batch_after = map(float, out.split())
    assert before >= 150 and kept <= 2  # 850 kB is 208 pages
    assert batch_after <= batch_defaults + 2  # 3,136 pages if mapped afresh each time


def test_a_local_run_gives_the_calling_process_its_thread_settings_back(images, tmp_path, monkeypatch):
    """The command's own process makes shards single-threaded beside its workers; it may be the
    user's process, so OpenCV's and blosc's thread counts and the thread variables come back."""
    import cv2
    import numcodecs.blosc

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    opencv, blosc = cv2.getNumThreads(), numcodecs.blosc.get_nthreads()
    cv2.setNumThreads(2)
    numcodecs.blosc.set_nthreads(2)
    try:
        assert gen(images, tmp_path / "c.zarr", "--workers", "1", samples=8) == 0
        assert os.environ["OMP_NUM_THREADS"] == "3" and "OPENBLAS_NUM_THREADS" not in os.environ
        assert cv2.getNumThreads() == 2 and numcodecs.blosc.get_nthreads() == 2
    finally:
        cv2.setNumThreads(opencv)
        numcodecs.blosc.set_nthreads(blosc)


def test_a_worker_leaves_without_teardown_but_with_its_output():
    """A pool worker's exit skips the interpreter's teardown (the handlers registered before
    the worker's, and the garbage collections after them) but still flushes what it wrote."""
    script = textwrap.dedent(f"""
        import atexit, sys
        sys.path.insert(0, {str(ROOT)!r})
        atexit.register(print, "teardown ran")
        from pipelines.generate import _init_worker
        _init_worker()
        print("buffered line")
        sys.stderr.write("error line")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe: stdout block-buffered
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "buffered line\n" and done.stderr.endswith("error line")


def test_verify_passes_then_names_the_corrupted_shard(reference, tmp_path, capsys):
    from pipelines.cli import main

    assert main(["verify", str(reference), "--replay", "24"]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.zarr"
    subprocess.run(["cp", "-r", str(reference), str(bad)], check=True)
    shard_file = bad / "images" / "c" / "1" / "0" / "0"
    raw = bytearray(shard_file.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside one chunk of shard 1
    shard_file.write_bytes(bytes(raw))
    assert main(["verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "shard 1 " in out and "images/c/1/0/0" in out
    assert "shard 0" not in out and "shard 2" not in out


def test_verify_reads_sha256_markers_of_older_stores(reference, tmp_path, capsys):
    old = tmp_path / "old.zarr"
    subprocess.run(["cp", "-r", str(reference), str(old)], check=True)
    for shard in (0, 1):
        marker = old / "_done" / f"{shard:06d}.json"
        record = json.loads(marker.read_text())
        del record["crc32c"]
        record["sha256"] = {k: hashlib.sha256((old / k).read_bytes()).hexdigest() for k in shard_keys(shard)}
        marker.write_text(json.dumps(record))
    assert cli.main(["verify", str(old), "--replay", "0"]) == 0
    (old / "masks" / "c" / "1" / "0" / "0").write_bytes(b"\0")
    assert cli.main(["verify", str(old), "--replay", "0"]) == 1
    out = capsys.readouterr().out
    assert "shard 1 " in out and "masks/c/1/0/0" in out and "shard 0 " not in out


def test_verify_regenerates_and_catches_a_changed_sample(reference, tmp_path, capsys):
    bad = tmp_path / "changed.zarr"
    subprocess.run(["cp", "-r", str(reference), str(bad)], check=True)
    group = zarr.open_group(str(bad), mode="r+")
    images = group["images"][16:24]
    images[3] = 255 - images[3]
    group["images"][16:24] = images  # a whole-shard write, then a fresh checksum: only replay can tell
    mark_done(bad, 2, 16, 24, file_checksums(bad, 2))
    assert cli.main(["verify", str(bad), "--replay", "24"]) == 1
    out = capsys.readouterr().out
    assert "sample 19 (shard 2)" in out and "sample 18" not in out


def test_prepared_dataset_with_support_uses_only_the_support_images(images, tmp_path, capsys):
    import dataprep as dp

    raw = tmp_path / "raw"
    (raw / "normal").mkdir(parents=True)
    (raw / "abnormal").mkdir()
    for i, f in enumerate(sorted(images.iterdir())):
        (raw / ("abnormal" if i == 5 else "normal") / f.name).write_bytes(f.read_bytes())
    prepared = tmp_path / "prepared"
    dp.prepare_dataset("folder", raw, prepared, size=64)
    support = tmp_path / "k2.json"
    assert cli.main(["fewshot", str(prepared), "--k", "2", "--seed", "1", "--out", str(support)]) == 0
    chosen = set(json.loads(support.read_text())["support"])
    assert len(chosen) == 2

    out = tmp_path / "support.zarr"
    assert gen(prepared, out, "--support", str(support), "--workers", "1") == 0
    data = arrays(out)
    used = {str(s) for s in data["source_ids"]}
    assert used <= chosen and len(used) == 2  # 24 samples from exactly the two support images
    identity = zarr.open_group(str(out), mode="r").attrs["fmclip"]["dataset"]
    assert identity["ids_sha256"] == hashlib.sha256("\n".join(sorted(chosen)).encode()).hexdigest()

    # Reading a prepared set (generate's driver, verify, fewshot) imports neither MONAI nor
    # torch, which prepare's transforms need: 6 s in every process that starts.
    code = ("import sys\nfrom pipelines.sources import source_spec\nfrom dataprep.fewshot import load_support\n"
            f"spec = source_spec({str(prepared)!r}, 64, {str(support)!r})\n"
            "print(len(spec['items']), sorted(m for m in ('monai', 'torch') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout.strip() == "2 []", run.stdout + run.stderr

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert gen(prepared, tmp_path / "bad.zarr", "--support", str(bad)) == 2
    assert "bad.json" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "file"])
def test_bad_data_is_a_clear_error(case, tmp_path, capsys):
    data = tmp_path / "data"
    if case == "empty":
        data.mkdir()
    elif case == "unreadable":
        data.mkdir()
        (data / "broken.png").write_bytes(b"not a png at all")
    elif case == "file":
        data.write_text("x")
    assert gen(data, tmp_path / "c.zarr") == 2
    err = capsys.readouterr().err
    assert str(data) in err and "error" in err and "Traceback" not in err
    assert not (tmp_path / "c.zarr").exists()


def test_unwritable_out_is_a_clear_error(images, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "c.zarr"  # its parent is a file: nothing can be created there, even as root
    assert gen(images, out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a folder" in err and "Traceback" not in err


def test_a_cache_worker_imports_neither_torch_nor_zarr(reference, tmp_path):
    """A spawned generate worker pays for every import before its first shard: it writes
    whole shards through ShardFiles, so it needs neither torch nor zarr."""
    from pipelines.cache import read_settings

    store = tmp_path / "copy.zarr"
    subprocess.run(["cp", "-r", str(reference), str(store)], check=True)
    settings = read_settings(store)
    code = (
        "import sys, synth\n"
        "from pipelines.cache import write_shard\n"
        f"seeds = synth.spawn_seeds({settings['seed']}, {settings['samples']})[:8]\n"
        f"write_shard({str(store)!r}, 0, seeds)\n"
        "import pipelines\n"
        "print(sorted(m for m in ('torch', 'zarr') if m in sys.modules), pipelines.__all__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[] ['CachedDataset', 'SynthDataset', 'BatchLoader']", out.stdout + out.stderr
    assert_same(store, reference)  # the shard rewritten, byte for byte the same
