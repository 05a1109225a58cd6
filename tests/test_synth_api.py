"""The public face: layouts, types, seeds, replay, batches and bad input."""
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_helpers import disc_foreground, smooth_image

import synth

ROOT = Path(__file__).resolve().parents[1]


def test_replay_from_json_is_exact_for_every_task():
    image = smooth_image((60, 70), seed=1)
    fg = disc_foreground((60, 70))
    for task in synth.TASKS:
        for seed in range(3):
            out, mask, record = synth.synthesize(image, rng=seed, task=task, foreground=fg)
            again, again_mask = synth.replay(image, record.to_json(), foreground=fg)
            assert np.array_equal(out, again) and np.array_equal(mask, again_mask)


def _digest_script(seed: int) -> str:
    return textwrap.dedent(f"""
        import hashlib, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
        import numpy as np, synth
        from synth_helpers import smooth_image, disc_foreground
        h = hashlib.sha256()
        for shape, layout in (((64, 64), "HW"), ((16, 20, 24), "DHW")):
            image = smooth_image(shape, seed=2)
            res = synth.synthesize(np.stack([image] * 3), rng={seed}, layout="B" + layout,
                                   foreground=disc_foreground(shape))
            h.update(res.image.tobytes()); h.update(res.mask.tobytes())
            h.update("".join(r.to_json() for r in res.record).encode())
        # guided deformations near the anatomy's edge, where the distance bound binds
        image, fg = smooth_image((160, 160), seed=3), disc_foreground((160, 160))
        for s in range(40):
            res = synth.synthesize(image, rng={seed} * 1000 + s, task="guided_deformation", foreground=fg)
            h.update(res.image.tobytes())
        print(h.hexdigest())
    """)


def test_same_seed_gives_the_same_bytes_across_processes():
    digests = {subprocess.run([sys.executable, "-c", _digest_script(42)], capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(3)}
    assert len(digests) == 1
    other = subprocess.run([sys.executable, "-c", _digest_script(43)], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert other not in digests


@pytest.mark.parametrize("layout,shape", [
    ("HW", (40, 44)), ("CHW", (2, 40, 44)), ("DHW", (12, 20, 22)), ("CDHW", (1, 12, 20, 22)),
    ("BHW", (3, 40, 44)), ("BCHW", (3, 2, 40, 44)), ("BDHW", (2, 12, 20, 22)), ("BCDHW", (2, 1, 12, 20, 22))])
def test_layouts_and_batch_equals_loop(layout, shape):
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 0.9, size=shape).astype(np.float32)
    out, mask, records = synth.synthesize(image, rng=9, layout=layout)
    assert out.shape == image.shape
    spatial = shape[-3:] if "D" in layout else shape[-2:]
    expected_mask = tuple(shape[: layout.index("C")]) + (1,) + tuple(spatial) if "C" in layout else \
        (shape[0],) + tuple(spatial) if "B" in layout else tuple(spatial)
    assert mask.shape == expected_mask
    if "B" not in layout:
        return
    item_layout = layout[1:]
    for i, seed in enumerate(synth.spawn_seeds(9, shape[0])):
        item_out, item_mask, item_record = synth.synthesize(image[i], rng=seed, layout=item_layout)
        assert np.array_equal(item_out, out[i]) and np.array_equal(item_mask, mask[i])
        assert item_record == records[i]


@pytest.mark.parametrize("seed", [0, 1, 9, 2**32 - 1, 2**32, 2**64 + 5, 2**127, 2**128 + 3, 2**200 + 99])
def test_spawn_seeds_equal_numpys_seed_sequence(seed):
    expected = [int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(seed).spawn(300)]
    assert synth.spawn_seeds(seed, 300) == expected
    assert synth.spawn_seeds(seed, 0) == []


@pytest.mark.parametrize("child", [2**32 - 1, 2**32, 2**32 + 7, 2**63 + 1, 2**64 - 1])
def test_spawned_seeds_of_wide_child_indices_equal_numpys(child):
    from synth.kernels.seeds import entropy_words, spawned_seeds

    for seed in (0, 5, 2**130):
        expected = int(np.random.SeedSequence(seed, spawn_key=(child,)).generate_state(1, np.uint64)[0])
        assert int(spawned_seeds(entropy_words(seed), np.uint64(child), 1)[0]) == expected


@pytest.mark.parametrize("seed, n", [(-1, 3), (1.5, 3), (True, 3), (0, -1)])
def test_spawn_seeds_refuses_bad_arguments(seed, n):
    with pytest.raises(ValueError, match="non-negative"):
        synth.spawn_seeds(seed, n)


def test_channels_share_one_anomaly():
    base = smooth_image((48, 48), seed=3)
    image = np.stack([base, base])
    out, mask, _ = synth.synthesize(image, rng=4, layout="CHW", task="gaussian_intensity")
    assert np.array_equal(out[0], out[1]) and mask.shape == (1, 48, 48)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_numpy_dtype_is_kept(dtype):
    image = smooth_image((32, 32)).astype(dtype)
    out, mask, _ = synth.synthesize(image, rng=1, task="cutpaste")
    assert isinstance(out, np.ndarray) and out.dtype == dtype and mask.dtype == np.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_torch_type_dtype_and_device_are_kept(dtype):
    image = torch.from_numpy(smooth_image((32, 32))).to(dtype)[None]
    out, mask, record = synth.synthesize(image, rng=1, layout="CHW", task="poisson")
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device == image.device
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.float32 and tuple(mask.shape) == (1, 32, 32)
    ref, _, _ = synth.synthesize(image.float().numpy(), rng=1, layout="CHW", task="poisson")
    assert np.allclose(out.float().numpy(), ref, atol=1e-3 if dtype == torch.float16 else 0)


def test_metatensor_keeps_its_metadata():
    from monai.data import MetaTensor

    image = MetaTensor(torch.from_numpy(smooth_image((32, 32)))[None], meta={"filename_or_obj": "x.nii"})
    out, _, _ = synth.synthesize(image, rng=2, layout="CHW")
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.nii"


def test_generator_and_none_seeds():
    image = smooth_image((32, 32))
    a = synth.synthesize(image, rng=np.random.default_rng(5))
    b = synth.synthesize(image, rng=np.random.default_rng(5))
    assert a.record == b.record and np.array_equal(a.image, b.image)
    c = synth.synthesize(image)  # fresh entropy, still replayable
    assert np.array_equal(synth.replay(image, c.record)[0], c.image)


def test_record_round_trips_and_is_read_only():
    image = smooth_image((40, 40))
    record = synth.synthesize(image, rng=3, task="pathology_texture").record
    assert synth.SynthesisRecord.from_json(record.to_json()) == record
    for task in synth.TASKS:  # the encoder reads the frozen params: every value back exactly
        rec = synth.synthesize(smooth_image((48, 48)), rng=5, task=task, foreground=disc_foreground((48, 48)),
                               source_id="case-1").record
        text = rec.to_json()
        assert json.loads(text) == rec.to_dict() and ", " not in text and ": " not in text
        assert list(json.loads(text)) == sorted(rec.to_dict())
    with pytest.raises(TypeError):
        record.params["lesions"][0]["beta"] = 0.5
    for change in (lambda p: p.update(x=1), lambda p: p.pop("lesions"), lambda p: p.setdefault("x", 1),
                   lambda p: p.clear(), lambda p: p.__delitem__("lesions"), lambda p: p.popitem()):
        with pytest.raises(TypeError):
            change(record.params)
    assert "lesions" in record.params and pickle.loads(pickle.dumps(record)) == record  # e.g. to DataLoader workers


@pytest.mark.parametrize("fast", [True, False])
def test_record_json_keeps_every_value(fast, monkeypatch):
    """orjson (when installed) and json write the same values: NaN, infinity, None, integers
    beyond 64 bits and tiny floats come back as they went in."""
    from synth import records

    if not fast:
        monkeypatch.setattr(records, "orjson", None)
    edge = {"z": [1e-05, 2.5e-07, -0.0, 5e-324, 1.7976931348623157e308], "a": {"seed": 2**64 - 1, "n": 3}}
    for extra in ({}, {"gap": None}, {"nan": float("nan"), "inf": float("inf")}, {"big": 2**70}):
        record = synth.SynthesisRecord("cutpaste", 9, (8, 8), {**edge, **extra}, source_id="s")
        back = json.loads(record.to_json())
        assert back["params"]["z"] == edge["z"] and str(back["params"]["z"][2]) == "-0.0"
        assert back["params"]["a"] == edge["a"] and list(back["params"]) == sorted(back["params"])
        for key, value in extra.items():
            got = back["params"][key]
            assert got == value or (value != value and got != got), (key, got)


def _bad(value, where=(0, 0)):
    image = smooth_image((24, 24))
    image[where] = value
    return image


@pytest.mark.parametrize("image,match", [
    (_bad(np.nan), "NaN"), (_bad(np.inf), "NaN or inf"), (_bad(1.5), "outside"), (_bad(-0.1), "outside"),
    ((smooth_image((24, 24)) * 255).astype(np.uint8), "floating"), (np.zeros(5, np.float32), "ambiguous"),
    (np.zeros((2, 2, 2, 2, 2, 2), np.float32), "ambiguous")])
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        synth.synthesize(image, rng=0)


def test_bad_arguments_raise():
    image = smooth_image((24, 24))
    with pytest.raises(ValueError, match="ambiguous"):
        synth.synthesize(np.stack([image, image]), rng=0)
    with pytest.raises(ValueError, match="layout"):
        synth.synthesize(image, rng=0, layout="CHW")
    with pytest.raises(ValueError, match="foreground is empty"):
        synth.synthesize(image, rng=0, foreground=np.zeros((24, 24), bool))
    with pytest.raises(ValueError, match="foreground shape"):
        synth.synthesize(image, rng=0, foreground=np.ones((20, 24), bool))
    with pytest.raises(ValueError, match="0 and 1"):
        synth.synthesize(image, rng=0, foreground=np.full((24, 24), 0.3))
    with pytest.raises(ValueError, match="source shape"):
        synth.synthesize(image, rng=0, source=image[:20])
    with pytest.raises(ValueError, match="unknown task"):
        synth.synthesize(image, rng=0, task="nope")
    with pytest.raises(ValueError, match="unknown modality"):
        synth.synthesize(image, rng=0, task="pathology_texture", config=synth.SynthesisConfig(modality="nope"))
    with pytest.raises(ValueError, match="unknown task"):
        synth.SynthesisConfig(task_weights=(("nope", 1.0),))
    record = synth.synthesize(image, rng=0, task="cutpaste").record
    with pytest.raises(ValueError, match="spatial shape"):
        synth.replay(smooth_image((20, 24)), record)
    fg = disc_foreground((24, 24), 0.45)
    guided = synth.synthesize(image, rng=0, task="guided_deformation", foreground=fg).record
    with pytest.raises(ValueError, match="foreground"):
        synth.replay(image, guided)


def test_inputs_are_not_modified():
    image = smooth_image((40, 40))
    keep = image.copy()
    for task in synth.TASKS:
        synth.synthesize(image, rng=1, task=task)
    assert np.array_equal(image, keep)


def test_batch_foregrounds_one_per_item_or_shared():
    image = np.stack([smooth_image((32, 32), seed=i) for i in range(3)])
    fg = disc_foreground((32, 32), 0.3)
    shared = synth.synthesize(image, rng=4, layout="BHW", foreground=fg, task="guided_deformation")
    per_item = synth.synthesize(image, rng=4, layout="BHW", foreground=np.stack([fg] * 3)[:, None],
                                task="guided_deformation")
    assert np.array_equal(shared.image, per_item.image)
    with pytest.raises(ValueError, match="batch item 1"):
        synth.synthesize(image, rng=4, layout="BHW", foreground=np.stack([fg, np.zeros_like(fg), fg]))


def test_pools_are_shared_by_equal_configs_and_never_by_others():
    from synth.engine import pool_for

    config = synth.SynthesisConfig(max_anomalies=3)
    assert pool_for(config) is pool_for(synth.SynthesisConfig.from_dict(config.to_dict())) is pool_for(config)
    assert pool_for(None).config == synth.SynthesisConfig() and pool_for(config).config == config
    # Configs made and dropped one after another (their ids are reused) each get their own pool,
    # through more of them than the cache holds.
    for k in range(100):
        weights = synth.family_weights(identity=1.0, structural=0.0, density=0.0, deformation=0.0) if k % 2 else None
        made = synth.SynthesisConfig(max_anomalies=1 + k % 7, **({"task_weights": weights} if weights else {}))
        assert pool_for(made).config == made
    only_identity = synth.SynthesisConfig(
        task_weights=synth.family_weights(identity=1.0, structural=0.0, density=0.0, deformation=0.0))
    image = smooth_image((32, 32))
    tasks = {synth.synthesize(image, rng=seed, config=only_identity).record.task for seed in range(8)}
    assert tasks == {"identity"}
