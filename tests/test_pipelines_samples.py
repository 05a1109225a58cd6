"""Making a shard's samples: the stored form and its inverse against numpy, samples equal to plain
synthesis, source draws that depend on the seed alone, and the checksum the markers hold. The
store and its generation: test_pipelines_cache.py."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.cache import crc32c
from pipelines.samples import make_samples, source_indices, to_stored, to_unit


def test_stored_form_and_back_equal_numpy():
    rng = np.random.default_rng(0)
    image = rng.random((224, 224), dtype=np.float32)
    image[0, :6] = np.array([0.5, 1.5, 2.5, 253.5, 254.5, 255.0], np.float32) / np.float32(255)  # halfway cases
    reference = np.rint(image * np.float32(255)).astype(np.uint8)
    assert np.array_equal(to_stored(image, "uint8"), reference)
    assert np.array_equal(to_stored(image.astype(np.float64), "uint8"), reference)  # from another float type
    assert to_stored(np.array([-0.2, 1.3], np.float32), "uint8").tolist() == [0, 255]  # clipped, not wrapped
    assert np.array_equal(to_stored(image, "float16"), image.astype(np.float16))
    with pytest.raises(ValueError, match="unknown stored type"):
        to_stored(image, "int8")
    assert np.array_equal(to_unit(reference), np.divide(reference, 255, dtype=np.float32))
    out = np.full((224, 224), 7, np.float32)
    assert to_unit(image.astype(np.float16), out=out) is out and np.array_equal(out, image.astype(np.float16))


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_samples_are_plain_synthesis_in_stored_form(images, dtype):
    import synth
    from pipelines.sources import SourceSet, source_spec

    sources, config = SourceSet(source_spec(images, size=64)), synth.SynthesisConfig()
    seeds = synth.spawn_seeds(5, 40)
    made = make_samples(sources, config, seeds, dtype)
    for i, s in enumerate(seeds):
        src = int(np.random.default_rng(np.random.SeedSequence(int(s), spawn_key=(0x5EED,))).integers(len(sources)))
        image, fg = sources.read(src)
        out, mask, record = synth.synthesize(image, rng=s, foreground=fg, config=config, source_id=sources.source_id(src))
        stored = np.rint(out * np.float32(255)).astype(np.uint8) if dtype == "uint8" else out.astype(np.float16)
        assert np.array_equal(made["images"][i], stored) and made["source_index"][i] == src
        assert np.array_equal(made["masks"][i], mask > 0.5) and made["masks"][i].max() <= 1
        assert made["labels"][i] == mask.any()
        assert made["records"][i] == record.to_json() and made["tasks"][i] == record.task
    assert made["labels"].any() and not made["labels"].all()  # both kinds of sample were made
    assert "records" not in make_samples(sources, config, seeds[:2], dtype, records=False)


def test_source_draws_depend_on_the_seed_alone():
    seeds = [0, 1, 2**32 - 1, 2**64 - 1, *np.random.default_rng(3).integers(0, 2**64, 2000, dtype=np.uint64)]
    draws = source_indices(seeds, 12)
    assert draws.dtype == np.int64 and set(draws.tolist()) == set(range(12))  # every source, none outside
    assert source_indices(seeds[::-1], 12).tolist() == draws[::-1].tolist()  # not the batch's composition
    assert source_indices([seeds[7]], 12).tolist() == [draws[7]]
    counts = np.bincount(draws, minlength=12)
    assert counts.min() > 0.6 * len(seeds) / 12  # about uniform


def test_crc32c_is_the_standard_check_value():
    assert crc32c(b"123456789") == "e3069283"  # CRC-32C (Castagnoli) of "123456789"
