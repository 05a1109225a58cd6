"""Loading a cache: every sample exactly once per epoch across DDP ranks and DataLoader workers,
batches equal to torch's collation, persistent workers following set_epoch, the on-the-fly dataset
equal to the cache, and damage or an unfinished
cache refused instead of read."""
from __future__ import annotations

import pytest
import zarr
from cache_helpers import arrays, gen


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

    from torch.utils.data import DataLoader

    # the same batches through DataLoader workers, on the fly and from the cache
    def batches(ds):
        return list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn"))

    live_batches = batches(SynthDataset(images, samples=24, seed=7, size=64, shuffle=False, batch_size=8))
    _same_batches(live_batches, batches(CachedDataset(reference, shuffle=False, batch_size=8)))
    assert [b["index"].tolist() for b in live_batches] == [list(range(0, 8)), list(range(12, 20)),
                                                          list(range(8, 12)), list(range(20, 24))]


@pytest.mark.parametrize("compressor", ["zstd", "lz4", "none"])
def test_a_damaged_chunk_is_an_error_when_read_not_another_image(images, tmp_path, compressor):
    from pipelines import CachedDataset

    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", "--compressor", compressor, samples=16) == 0
    ds = CachedDataset(out, shuffle=False)
    first = ds[0]["image"].clone()
    shard_file = out / "images" / "c" / "0" / "0" / "0"
    raw = bytearray(shard_file.read_bytes())
    raw[20] ^= 0x10  # one flipped bit inside the first chunk's data
    shard_file.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="(?i)checksum"):  # zarr's own check of each chunk
        zarr.open_array(str(out / "images"), mode="r")[0]
    with pytest.raises(Exception, match="shard 0 does not hold what fmclip generate wrote"):  # the loader's, first
        CachedDataset(out, shuffle=False)[0]
    assert CachedDataset(out, shuffle=False)[8]["image"].shape == first.shape  # the undamaged shard reads


def test_an_unfinished_cache_is_refused_at_open(images, tmp_path):
    from pipelines import CachedDataset
    from pipelines.cache import CacheError

    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", samples=16) == 0
    (out / "_done" / "000001.json").unlink()  # as if killed before its second shard was finished
    with pytest.raises(CacheError, match="unfinished cache .1 of 2 shards.*fmclip generate"):
        CachedDataset(out)


def test_swapped_or_deleted_shard_files_are_refused_not_read(images, tmp_path):
    import shutil

    from pipelines import CachedDataset
    from pipelines.cache import CacheError

    out = tmp_path / "c.zarr"
    assert gen(images, out, "--workers", "1", samples=16) == 0
    moved = tmp_path / "moved.zarr"
    shutil.copytree(out, moved)
    first, second = moved / "images" / "c" / "0" / "0" / "0", moved / "images" / "c" / "1" / "0" / "0"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)  # both intact, each in the other's place: zarr's chunk checks pass
    with pytest.raises(CacheError, match="shard 0 does not hold what fmclip generate wrote.*images/c/0/0/0"):
        CachedDataset(moved, shuffle=False)[0]
    (out / "labels" / "c" / "1").unlink()  # would read as label 0 for every sample of shard 1
    with pytest.raises(CacheError, match="damaged cache, shard 1 lacks labels/c/1"):
        CachedDataset(out)
