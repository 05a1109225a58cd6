"""The zarr cache: deterministic generation across worker counts and backends, resume after
SIGKILL, verify naming a damaged shard, exactly-once loading, clear input errors."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from pipelines import cli
from pipelines.cache import ARRAYS_1D, _write_arrays, file_checksums, mark_done, shard_keys
from pipelines.shards import ShardFiles

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("images", "masks", *ARRAYS_1D)


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "one.zarr"
    assert gen(images, out, "--workers", "1") == 0
    return out


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
    assert gen(images, tmp_path / "dask.zarr", "--dask-local", "2") == 0
    assert_same(reference, tmp_path / "dask.zarr")
    # same bytes on disk too, not just equal decoded values
    for shard in range(3):
        assert file_checksums(reference, shard) == file_checksums(tmp_path / "dask.zarr", shard)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_direct_shard_writer_writes_the_bytes_zarr_writes(images, tmp_path, dtype):
    """Shards are written by ShardFiles, not zarr: its files must be zarr's, byte for byte
    (zarr rewriting the same data is the reference), and a partial shard is left to zarr."""
    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", "--dtype", dtype, samples=20) == 0  # shards of 8, 8 and 4
    names = ["images", "masks", *ARRAYS_1D]
    writer = ShardFiles.open(out, names)
    assert writer is not None, "the cache's own layout must take the direct path"
    group = zarr.open_group(str(out), mode="r+")
    arrays_ = {n: group[n] for n in names}
    for shard, (start, stop) in enumerate([(0, 8), (8, 16)]):
        data = {n: a[start:stop] for n, a in arrays_.items()}
        data.update({n: np.array([str(v) for v in data[n]], dtype=object) for n in ("tasks", "source_ids", "records")})
        sums = writer.write(shard, data)
        ours = {k: (out / k).read_bytes() for k in shard_keys(shard)}
        assert sums == {k: hashlib.sha256(b).hexdigest() for k, b in ours.items()}
        _write_arrays(arrays_, slice(start, stop), data)
        assert {k: (out / k).read_bytes() for k in shard_keys(shard)} == ours
    partial = {n: a[16:20] for n, a in arrays_.items()}
    before = {k: (out / k).read_bytes() for k in shard_keys(2)}
    assert writer.write(2, partial) is None  # zarr pads a partial chunk with its fill value
    assert {k: (out / k).read_bytes() for k in shard_keys(2)} == before


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


def test_loader_two_workers_two_ranks_every_sample_once(reference):
    import torch
    from torch.utils.data import DataLoader

    from pipelines.loader import CachedDataset

    stored = arrays(reference)
    epochs: list[list[int]] = []
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in (0, 1):
            ds = CachedDataset(reference, seed=1, window=4, block=4, rank=rank, world_size=2)
            assert len(ds) == 12
            ds.set_epoch(epoch)
            loader = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="spawn")
            got = []
            for batch in loader:
                assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (1, 64, 64)
                for k, i in enumerate(batch["index"].tolist()):
                    assert torch.equal(batch["image"][k, 0], torch.from_numpy(stored["images"][i]).float() / 255)
                    assert torch.equal(batch["gt_mask"][k, 0], torch.from_numpy(stored["masks"][i]).bool())
                    assert batch["gt_label"][k].item() == stored["labels"][i]
                    assert batch["task"][k] == stored["tasks"][i]
                    assert batch["source_id"][k] == stored["source_ids"][i]
                got += batch["index"].tolist()
            assert len(got) == 12
            seen += got
        assert sorted(seen) == list(range(24))  # both ranks, both workers each: every sample exactly once
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled between epochs


def test_batched_loader_equals_collated_items_and_covers_every_sample_once(reference):
    import torch
    from torch.utils.data import DataLoader, default_collate

    from pipelines.loader import CachedDataset

    stored = arrays(reference)
    seen: list[int] = []
    for rank in (0, 1):
        ds = CachedDataset(reference, seed=3, window=8, block=4, batch_size=5, rank=rank, world_size=2)
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
        sizes = []
        for batch in loader:
            # the reference: torch's own collation of the same samples read one by one
            expected = default_collate([ds[i] for i in batch["index"].tolist()])
            assert batch.keys() == expected.keys()
            for key, value in expected.items():
                if isinstance(value, torch.Tensor):
                    assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key
                else:
                    assert batch[key] == value, key
            sizes.append(len(batch["index"]))
            seen += batch["index"].tolist()
        assert sorted(sizes) == [1, 1, 5, 5]  # 6 samples per worker: one full batch and the remainder each
    assert sorted(seen) == list(range(24))
    assert seen != sorted(seen)  # shuffled
    for i in (0, 13):
        assert torch.equal(CachedDataset(reference)[i]["image"][0], torch.from_numpy(stored["images"][i]).float() / 255)

    unshuffled = CachedDataset(reference, shuffle=False, batch_size=7, drop_last=True)
    batches = list(unshuffled)
    assert [b["index"].tolist() for b in batches] == [list(range(k, k + 7)) for k in (0, 7, 14)]

    (whole,) = list(CachedDataset(reference, shuffle=False, batch_size=24, as_stored=True))
    assert whole["image"].dtype == torch.uint8 and torch.equal(whole["image"][:, 0], torch.from_numpy(stored["images"]))


def test_persistent_workers_move_one_epoch_per_pass_like_set_epoch(reference):
    from torch.utils.data import DataLoader

    from pipelines.loader import CachedDataset

    def order(loader) -> list[int]:
        return [i for batch in loader for i in batch["index"].tolist()]

    ds = CachedDataset(reference, seed=5, window=8, block=4, batch_size=4)
    persistent = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn",
                            persistent_workers=True)
    passes = []
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)  # the workers' copies do not see this; they count passes instead
        passes.append(order(persistent))
    fresh = []
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        fresh.append(order(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")))
    assert passes == fresh
    assert all(sorted(p) == list(range(24)) for p in passes) and len({tuple(p) for p in passes}) == 3


def _same_batches(got: list[dict], expected: list[dict]) -> None:
    import torch

    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, torch.Tensor):
                assert a[key].dtype == value.dtype and a[key].shape == value.shape and torch.equal(a[key], value), key
            else:
                assert a[key] == value, key


@pytest.mark.parametrize("as_stored", [False, True])
def test_batch_loader_gives_the_dataloaders_batches_and_kept_batches_stay_intact(reference, as_stored):
    import torch
    from torch.utils.data import DataLoader

    from pipelines.loader import CachedDataset
    from pipelines.ring import BatchLoader

    for rank in (0, 1):
        ds = CachedDataset(reference, seed=3, window=4, block=4, batch_size=1 if as_stored else 5,
                           as_stored=as_stored, rank=rank, world_size=2)
        # the reference: the same dataset through torch's DataLoader, new shared memory per batch
        expected = list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn"))
        # prefetch_factor=1: 3 slots per worker; batch_size=1 gives each worker 6 batches, so slots
        # are reused while the earlier batches are still held here
        loader = BatchLoader(ds, num_workers=2, prefetch_factor=1, persistent_workers=False)
        got = list(loader)
        _same_batches(got, expected)
        assert len(loader) == len(got)
        assert got[0]["image"].dtype == (torch.uint8 if as_stored else torch.float32)


def test_batch_loader_recovers_its_slots_after_a_pass_left_early(reference):
    from pipelines.loader import CachedDataset
    from pipelines.ring import BatchLoader

    ds = CachedDataset(reference, seed=5, window=4, block=4, batch_size=1)
    # persistent workers, 3 slots each; a timeout turns a worker stuck waiting for a slot into an error
    loader = BatchLoader(ds, num_workers=2, prefetch_factor=1, timeout=60)
    for epoch in range(6):
        ds.set_epoch(epoch)
        for k, _ in enumerate(loader):
            if k == 3:
                break  # a batch in flight per worker is dropped uncopied: its slot is never released
    ds.set_epoch(6)
    seen = [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(24))
    ds.set_epoch(7)
    assert sorted(i for batch in loader for i in batch["index"].tolist()) == list(range(24))

    in_process = BatchLoader(ds, num_workers=0)  # reads in this process: the dataset's own batches
    ds.set_epoch(0)
    got = list(in_process)
    ds.set_epoch(0)
    _same_batches(got, list(ds))
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(CachedDataset(reference), num_workers=2)


def test_on_the_fly_dataset_equals_the_cache(images, reference):
    import torch

    from pipelines.loader import CachedDataset, SynthDataset

    cached = CachedDataset(reference)
    live = SynthDataset(images, samples=24, seed=7, size=64, shuffle=False)
    for i in (0, 9, 23):
        a, b = cached[i], live[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["gt_mask"], b["gt_mask"])
        assert a["task"] == b["task"] and a["source_id"] == b["source_id"]
    assert [item["index"] for item in live] == list(range(24))

    from pipelines import BatchLoader

    # the same batches through BatchLoader's ring, on the fly and from the cache
    live_batches = list(BatchLoader(SynthDataset(images, samples=24, seed=7, size=64, shuffle=False, batch_size=8),
                                    num_workers=2, persistent_workers=False))
    _same_batches(live_batches, list(BatchLoader(CachedDataset(reference, shuffle=False, batch_size=8),
                                                 num_workers=2, persistent_workers=False)))
    assert [b["index"].tolist() for b in live_batches] == [list(range(0, 8)), list(range(12, 20)),
                                                          list(range(8, 12)), list(range(20, 24))]


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
