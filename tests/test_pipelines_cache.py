"""The zarr cache: deterministic generation across worker counts and backends, resume after
SIGKILL, clear input errors. Making the samples: test_pipelines_samples.py; loading:
test_pipelines_loader.py; checking and repairing a store: test_pipelines_verify.py."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import google_crc32c
import numpy as np
import pytest
import zarr
from cache_helpers import ROOT, arrays, assert_same, gen

from pipelines import cli
from pipelines.cache import file_checksums, shard_keys


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


@pytest.mark.parametrize(("dtype", "compressor"), [("uint8", "lz4"), ("float16", "zstd"), ("uint8", "none")])
def test_the_store_is_zarrs_own_with_a_checksum_per_chunk(images, tmp_path, dtype, compressor):
    """Written through zarr's public API: plain zarr reads it, its codecs are the stated ones with a
    CRC-32C after each chunk, and each marker holds the CRC-32C of each file of its shard."""
    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", "--dtype", dtype, "--compressor", compressor, samples=20) == 0
    images_array = zarr.open_array(str(out / "images"), mode="r")
    expected = {"lz4": ["blosc"], "zstd": ["zstd"], "none": []}[compressor]
    assert [c.to_dict()["name"] for c in images_array.compressors] == [*expected, "crc32c"]
    assert images_array.dtype == np.dtype(dtype) and len(list((out / "images" / "c").iterdir())) == 3
    for shard in range(3):
        marker = json.loads((out / "_done" / f"{shard:06d}.json").read_text())
        assert marker["crc32c"] == {k: f"{google_crc32c.value((out / k).read_bytes()):08x}" for k in shard_keys(shard)}


def test_a_cache_of_the_old_format_is_refused_with_what_to_do(reference, tmp_path, capsys):
    old = tmp_path / "old.zarr"
    subprocess.run(["cp", "-r", str(reference), str(old)], check=True)
    meta = json.loads((old / "zarr.json").read_text())
    meta["attributes"]["fmclip"]["format"] = "fmclip-cache/1"
    (old / "zarr.json").write_text(json.dumps(meta))
    assert cli.main(["verify", str(old)]) == 2
    err = capsys.readouterr().err
    assert "fmclip-cache/1" in err and "--overwrite" in err and "Traceback" not in err


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

    # prepare owns the working size: a prepared set is never resized a second time
    assert cli.main(["generate", "--data", str(prepared), "--out", str(tmp_path / "other.zarr"), "--samples", "8",
                     "--seed", "0", "--size", "32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "prepared at 64 px, and --size is 32" in err and "--size 64" in err


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


def test_a_cache_worker_does_not_import_torch(reference, tmp_path):
    """A spawned generate worker pays for every import before its first shard: it needs zarr,
    not torch (seconds)."""
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
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules), pipelines.__all__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[] ['CachedDataset', 'SynthDataset']", out.stdout + out.stderr
    assert_same(store, reference)  # the shard rewritten, byte for byte the same


def test_a_resumed_run_removes_orphan_temporary_files(images, tmp_path):
    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", samples=8) == 0
    orphans = [out / "_done" / ".000000.json.k3j2.tmp", out / ".sources.json.a9x.tmp"]
    for orphan in orphans:  # what a kill or a full disk leaves mid-write
        orphan.write_bytes(b"half")
    assert gen(images, out, "--workers", "1", samples=8) == 0
    assert not any(o.exists() for o in orphans)
