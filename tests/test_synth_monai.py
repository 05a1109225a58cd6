"""The MONAI transforms inside Compose and a multi-worker MONAI DataLoader."""
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped
from synth_helpers import disc_foreground, smooth_image

import synth


def _dataset(n=8):
    data = [{"image": smooth_image((48, 48), seed=i)[None], "foreground": disc_foreground((48, 48))[None]}
            for i in range(n)]
    transform = Compose([EnsureTyped(keys=["image", "foreground"]),
                         synth.RandSynthesizeAnomalyd(keys="image", foreground_key="foreground", prob=0.9)])
    return data, Dataset(data, transform)


def _epoch(seed):
    data, dataset = _dataset()
    dataset.transform.set_random_state(seed)
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    return data, list(loader)


def test_dataloader_with_two_workers_is_reproducible_and_replayable():
    data, first = _epoch(0)
    _, second = _epoch(0)
    assert len(first) == 4
    for a, b in zip(first, second):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["gt_mask"], b["gt_mask"])
    records = [synth.SynthesisRecord.from_json(r) for batch in first for r in batch["synthesis_record"]]
    assert len({r.seed for r in records}) == len(records)  # workers do not repeat each other's draws
    images = torch.cat([b["image"] for b in first]).numpy()
    masks = torch.cat([b["gt_mask"] for b in first]).numpy()
    labels = torch.cat([torch.as_tensor(b["gt_label"]) for b in first]).numpy()
    for i, record in enumerate(records):
        out, mask = synth.replay(data[i]["image"], record, foreground=data[i]["foreground"], layout="CHW")
        assert np.array_equal(out, images[i]) and np.array_equal(mask, masks[i])
        assert labels[i] == int(mask.any()) == int(record.task != "identity")


def test_array_transform_and_set_random_state():
    image = smooth_image((32, 32))[None]
    t = synth.RandSynthesizeAnomaly(prob=1.0, task="cutpaste")
    t.set_random_state(seed=3)
    a, ma = t(image)
    t.set_random_state(seed=3)
    b, mb = t(image)
    assert np.array_equal(a, b) and np.array_equal(ma, mb) and ma.shape == (1, 32, 32)
    assert t.last_record.task == "cutpaste"
    off = synth.RandSynthesizeAnomaly(prob=0.0)
    c, mc = off(image)
    assert np.array_equal(c, image) and mc.sum() == 0 and off.last_record.task == "identity"


def test_aliases():
    assert synth.RandSynthesizeAnomalyD is synth.RandSynthesizeAnomalyd is synth.RandSynthesizeAnomalyDict
