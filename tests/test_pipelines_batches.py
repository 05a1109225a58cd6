"""Training batches: every rank count and worker count gives the same global batches; resuming at a batch
gives the rest of the same stream; the split into training and validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipelines.batches import SplitError, TrainBatches, split_samples, tasks_of
from pipelines.loader import CachedDataset


def stream(ds, train, *, start=0, stop=20, rank=0, world=1, workers=0, batch=8) -> list[list[int]]:
    source = TrainBatches(ds, train, batch_size=batch, seed=5, start=start, stop=stop, rank=rank, world_size=world)
    loader = DataLoader(source, batch_size=None, num_workers=workers,
                        multiprocessing_context="spawn" if workers else None)
    return [b["index"].tolist() for b in loader]


def test_global_batches_do_not_depend_on_ranks_or_workers(reference):
    ds = CachedDataset(reference)
    train = np.arange(1, 24)  # 23 samples: 2 whole batches of 8 per pass, the 7 left over are dropped
    one = stream(ds, train)
    assert len(one) == 20 and all(len(b) == 8 for b in one)
    passes = [sorted(sum(one[i:i + 2], [])) for i in range(0, 20, 2)]
    assert all(len(set(p)) == 16 and set(p) <= set(train.tolist()) for p in passes)  # no repeat within a pass
    assert len({tuple(p) for p in passes}) > 1  # passes differ in what they drop
    halves = [stream(ds, train, rank=r, world=2) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == one  # rank r takes rows [r B/2, (r+1) B/2) of each batch
    assert stream(ds, train, workers=2) == one
    assert stream(ds, train, start=7) == one[7:]  # a resumed run sees the rest of the same stream


def test_batches_carry_the_samples_as_stored(reference):
    ds = CachedDataset(reference)
    source = TrainBatches(ds, np.arange(24), batch_size=4, seed=0, start=0, stop=3)
    for b in source:
        for row, i in enumerate(b["index"].tolist()):
            item = ds[i]
            assert torch.equal(b["image"][row], item["image"]) and torch.equal(b["gt_mask"][row], item["gt_mask"])


def test_batch_size_must_split_over_ranks(reference):
    with pytest.raises(SplitError, match="multiple of the 3 DDP ranks"):
        TrainBatches(CachedDataset(reference), np.arange(24), batch_size=8, seed=0, start=0, stop=1, world_size=3)


def test_split_holds_whole_task_families_out(reference):
    tasks = tasks_of(str(reference))
    families = {"structural": {"cutpaste", "poisson"}}
    train, val = split_samples(tasks, val_tasks=["structural"], val_fraction=0.0, val_samples=8, seed=0)
    assert not set(train) & set(val)
    assert not set(tasks[train]) & families["structural"]  # the held-out family never trains
    assert set(tasks[val]) <= families["structural"] | {"identity"}
    held = int(np.isin(tasks, list(families["structural"])).sum())
    assert (np.isin(tasks[val], list(families["structural"]))).sum() == min(4, held)
    with pytest.raises(SplitError, match="identity cannot be held out"):
        split_samples(tasks, val_tasks=["identity"], val_fraction=0.0, val_samples=8, seed=0)
    with pytest.raises(SplitError, match="unknown task or family 'tumour'"):
        split_samples(tasks, val_tasks=["tumour"], val_fraction=0.0, val_samples=8, seed=0)


def test_split_by_share_is_seeded_and_capped():
    tasks = np.array(["identity", "poisson"] * 50)
    train, val = split_samples(tasks, val_tasks=[], val_fraction=0.2, val_samples=12, seed=1)
    assert len(val) == 12 and len(train) == 88 and not set(train) & set(val)
    again = split_samples(tasks, val_tasks=[], val_fraction=0.2, val_samples=12, seed=1)[1]
    other = split_samples(tasks, val_tasks=[], val_fraction=0.2, val_samples=12, seed=2)[1]
    assert np.array_equal(val, again) and not np.array_equal(val, other)
