"""Making a shard's samples: the stored-form kernels against numpy, the source draws against
numpy's generator, the shard's checksum, and the garbage collector paused while the samples are
made. The store and its generation: test_pipelines_cache.py."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.cache import quantize
from pipelines.kernels import binarize_into
from pipelines.shards import crc32c


def test_stored_form_kernels_equal_numpy():
    rng = np.random.default_rng(0)
    image = rng.random((224, 224), dtype=np.float32)
    image[0, :6] = np.array([0.5, 1.5, 2.5, 253.5, 254.5, 255.0], np.float32) / np.float32(255)  # halfway cases
    reference = np.rint(image * np.float32(255)).astype(np.uint8)
    assert np.array_equal(quantize(image, "uint8"), reference)
    out = np.full((3, 224, 224), 7, np.uint8)
    quantize(image.astype(np.float64), "uint8", out=out[1])  # into a row, from another float type
    assert np.array_equal(out[1], reference) and (out[[0, 2]] == 7).all()
    assert quantize(np.array([-0.2, 1.3], np.float32), "uint8").tolist() == [0, 255]  # clipped, not wrapped
    assert np.array_equal(quantize(image, "float16"), image.astype(np.float16))
    for density in (0.0, 0.01):
        mask = (rng.random((224, 224)) < density).astype(np.float32)
        row = np.empty((224, 224), np.uint8)
        assert binarize_into(mask, row) == bool(density) and np.array_equal(row, mask > 0.5)
    # The label is read eight bytes at a time, then the rest: a single set pixel anywhere counts.
    for shape in ((7, 9), (1, 1), (3, 8)):
        for where in (None, 0, 7, -1):
            mask = np.zeros(shape, np.float32)
            if where is not None and abs(where) < mask.size:
                mask.reshape(-1)[where] = 1.0
            row = np.full(shape, 9, np.uint8)
            assert binarize_into(mask, row) == bool(mask.any()) and np.array_equal(row, mask > 0.5), (shape, where)


def test_making_samples_pauses_garbage_collection_and_leaves_no_garbage(images, monkeypatch):
    """No collection runs while a shard's records are alive, however low the collector's
    threshold; the collector is resumed as it was found, and nothing is left for it (the
    samples form no cycles)."""
    import gc
    import weakref

    import synth
    from pipelines.cache import make_samples
    from pipelines.sources import SourceSet, source_spec

    sources, config = SourceSet(source_spec(images, size=64)), synth.SynthesisConfig()
    seeds = synth.spawn_seeds(3, 24)
    make_samples(sources, config, seeds[:2], "uint8")  # imports and compiled kernels loaded first
    records, collections = [], []  # weak references to the records made

    def alive() -> int:
        return sum(ref() is not None for ref in records)

    real = synth.synthesize

    def synthesize(*args, **kwargs):
        result = real(*args, **kwargs)
        records.append(weakref.ref(result[2]))
        return result

    def on_collection(phase, info):
        if phase == "start" and alive():
            collections.append(info["generation"])

    monkeypatch.setattr(synth, "synthesize", synthesize)
    threshold = gc.get_threshold()
    gc.collect()
    gc.callbacks.append(on_collection)
    try:
        gc.set_threshold(1, 1, 1)  # a collection at every allocation while the collector runs
        made = make_samples(sources, config, seeds, "uint8")
        assert collections == [] and len(records) == 24 and alive() == 0 and gc.isenabled()
        gc.disable()
        make_samples(sources, config, seeds[:4], "uint8")
        assert not gc.isenabled()  # a caller's own pause is left as it was
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(on_collection)
    assert len(made["records"]) == 24 and gc.collect() == 0


@pytest.mark.parametrize("n_sources", [1, 2, 12, 1000, 2**31 + 11, 3 * 2**30 + 1, 2**32 - 1, 2**32, 2**32 + 5])
def test_source_draws_equal_numpys_generator(n_sources):
    """Compiled SeedSequence + PCG64 + Lemire draws against numpy's own objects; 3 * 2**30 + 1
    rejects a quarter of the first draws, so the buffered second half and fresh draws are used."""
    from pipelines.sources import source_indices

    seeds = [0, 1, 2**32 - 1, 2**32, 2**64 - 1, *np.random.default_rng(3).integers(0, 2**64, 1500, dtype=np.uint64)]
    expected = [int(np.random.default_rng(np.random.SeedSequence(int(s), spawn_key=(0x5EED,))).integers(n_sources))
                for s in seeds]
    assert source_indices(seeds, n_sources).tolist() == expected
    assert source_indices([seeds[7]], n_sources).tolist() == [expected[7]]


def test_crc32c_is_the_standard_check_value():
    assert crc32c([b"1234", b"56789"]) == "e3069283"  # CRC-32C (Castagnoli) of "123456789"
