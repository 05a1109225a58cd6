"""Making a shard's samples: the stored-form kernels against numpy, the masks' run-length zstd
frames against zstd's decoders, the source draws against numpy's generator, the shard's
checksum, and the garbage collector paused while the samples are made. The store and its
generation: test_pipelines_cache.py."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.cache import quantize
from pipelines.kernels import MIN_RUN, RUN_BLOCK_MAX, find_set_rows, run_length_frame
from pipelines.shards import _run_length, _zstd, crc32c


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
        mask = (rng.random((224, 224)) < density).astype(np.uint8)
        rows_set = np.empty(224, np.bool_)
        assert find_set_rows(mask, rows_set) == bool(density)
        assert np.array_equal(rows_set, mask.any(axis=1))
    # Rows whose width is a multiple of 8 are tested eight bytes at a time, others byte by byte:
    # a single set byte anywhere counts, in its row only, and the mask is only read.
    for shape in ((7, 9), (1, 1), (3, 8), (5, 16)):
        for where in (None, 0, 7, 20, -1):
            mask = np.zeros(shape, np.uint8)
            if where is not None and abs(where) < mask.size:
                mask.reshape(-1)[where] = 1
            keep, rows_set = mask.copy(), np.ones(shape[0], np.bool_)
            assert find_set_rows(mask, rows_set) == bool(mask.any()) and np.array_equal(mask, keep)
            assert np.array_equal(rows_set, mask.any(axis=1)), (shape, where)


def zstd_blocks(frame: bytes) -> list[tuple[int, int, bool]]:
    """(type, size, last) of each block of a one-frame zstd stream, read from RFC 8878's headers:
    type 0 raw, 1 RLE (size: bytes it stands for), 2 compressed."""
    descriptor = frame[4]
    assert frame[:4] == b"\x28\xb5\x2f\xfd" and not descriptor & 0x04 and not descriptor & 0x03  # no checksum, no dictionary
    single = bool(descriptor & 0x20)
    pos = 5 + (0 if single else 1) + {0: int(single), 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    blocks = []
    while True:
        header = int.from_bytes(frame[pos:pos + 3], "little")
        kind, size, last = (header >> 1) & 3, header >> 3, bool(header & 1)
        blocks.append((kind, size, last))
        pos += 3 + (1 if kind == 1 else size)
        if last:
            assert pos == len(frame)
            return blocks


def run_length(data: np.ndarray, rows_set: np.ndarray | None = None) -> bytes:
    flat = data.reshape(-1)
    rows_set = data.reshape(-1, data.shape[-1]).any(axis=1) if rows_set is None else rows_set
    out = np.empty(2 * flat.size + 64, np.uint8)
    return out[:run_length_frame(flat, data.shape[-1], rows_set, out)].tobytes()


def test_run_length_frames_are_zstd_frames_of_the_data():
    """Every zstd decoder the cache meets (python-zstandard's, numcodecs' as zarr calls it) reads
    the frames back as the data: runs across rows and across zstd's 128 kB block limit, runs
    shorter than MIN_RUN, a short or long last run, bytes other than 0 and 1, rows whose width
    is not a multiple of 8; only RLE and raw blocks, and RLE blocks for runs of MIN_RUN or more."""
    import numcodecs
    import zstandard

    rng = np.random.default_rng(1)
    runs = np.repeat(rng.integers(0, 3, 6000), rng.integers(1, 40, 6000))[:96000].reshape(-1, 96)
    cases = [np.zeros((1, 7)), np.ones((1, 5)), np.zeros((3, 100000)), np.ones((1, RUN_BLOCK_MAX)),
             np.ones((2, RUN_BLOCK_MAX // 2 + 1)), rng.random((3, 100001)) > 0.5, rng.integers(0, 256, (5, 52429)),
             runs, np.pad(np.ones((50, 13)), 30), rng.random((64, 37, 37)) > 0.97]
    for case in cases:
        for flip in (None, 0, -1):  # and the same with its first or last byte changed
            data = np.array(case, np.uint8)
            if flip is not None:
                data.reshape(-1)[flip] ^= 1
            frame = run_length(data)
            assert zstandard.ZstdDecompressor().decompress(frame) == data.tobytes(), (data.shape, flip)
            assert bytes(numcodecs.Zstd().decode(frame)) == data.tobytes(), (data.shape, flip)
            blocks = zstd_blocks(frame)
            assert {kind for kind, _, _ in blocks} <= {0, 1} and sum(size for _, size, _ in blocks) == data.size
            # a run is MIN_RUN or more; split at the block limit, its last block may be shorter
            assert all(size <= RUN_BLOCK_MAX for _, size, _ in blocks)
            assert all(size >= MIN_RUN or before == (1, RUN_BLOCK_MAX)
                       for before, (kind, size, _) in zip([(None, 0), *[b[:2] for b in blocks]], blocks) if kind == 1)
            assert [last for _, _, last in blocks].count(True) == 1


def test_run_length_frames_skip_rows_not_set_and_stop_when_out_is_full():
    data = np.zeros((6, 16), np.uint8)
    data[1, 3:9], data[4, :] = 1, 1
    rows_set = np.array([False, True, False, False, False, False])  # row 4 said empty: skipped unread
    expected = data.copy()
    expected[4] = 0
    import zstandard

    assert zstandard.ZstdDecompressor().decompress(run_length(data, rows_set)) == expected.tobytes()
    noise = (np.random.default_rng(2).random((64, 224)) > 0.5).astype(np.uint8).reshape(-1)
    out = np.empty(1000, np.uint8)
    assert run_length_frame(noise, 224, np.ones(64, np.bool_), out) > out.size
    # Room is checked once a row: into any smaller ``out`` the frame is whole or refused, and
    # nothing is written past the end of ``out`` (a guard region after it stays untouched).
    rng = np.random.default_rng(4)
    for data in (np.repeat(rng.integers(0, 2, 900), rng.integers(1, 60, 900))[:64 * 224].reshape(64, 224),
                 (rng.random((64, 224)) > 0.5), np.pad(np.ones((20, 100)), ((22, 22), (62, 62)))):
        data = np.ascontiguousarray(data, np.uint8)
        whole = run_length(data)
        for size in range(16, len(whole) + 64, 97):
            buffer = np.full(size + 4096, 0xAB, np.uint8)
            written = run_length_frame(data.reshape(-1), 224, data.any(axis=1), buffer[:size])
            assert (buffer[size:] == 0xAB).all(), size
            assert written > size or (written == len(whole) and buffer[:written].tobytes() == whole), size
    for rows_set in (np.ones(63, np.bool_), np.ones(65, np.bool_)):  # rows that do not cover the data
        with pytest.raises(ValueError, match="rows"):
            run_length_frame(noise, 224, rows_set, out)


def test_binary_chunks_are_run_length_frames_or_zstd_where_smaller():
    """A mask chunk becomes a run-length frame, the same whether its set rows are given or found;
    a chunk of fine noise, whose frame would pass 1/32 of the chunk, zstd's own frame."""
    import numcodecs

    encode, zstd = _run_length(-7, 128), _zstd(-7, False, whole_chunks=True)
    masks = np.zeros((16, 128, 128), np.uint8)
    yy, xx = np.mgrid[:128, :128]
    for k in range(16):
        masks[k] = (yy - 40 - k) ** 2 + (xx - 60) ** 2 < (4 + k) ** 2
    frame = encode(masks)
    assert frame == encode(masks, masks.any(axis=-1)) and frame != zstd(masks.reshape(-1))
    assert {kind for kind, _, _ in zstd_blocks(frame)} <= {0, 1} and len(frame) <= masks.size // 32
    assert bytes(numcodecs.Zstd().decode(frame)) == masks.tobytes()
    noise = (np.random.default_rng(3).random((16, 128, 128)) > 0.9).astype(np.uint8)
    assert encode(noise) == zstd(noise.reshape(-1)) and bytes(numcodecs.Zstd().decode(encode(noise))) == noise.tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_samples_are_plain_synthesis_in_stored_form(images, dtype):
    """make_samples has the engine write into reused arrays; its rows equal plain
    ``synthesize`` calls stored by numpy, also when the arrays held another shard before."""
    import synth
    from pipelines.cache import make_samples
    from pipelines.sources import SourceSet, source_indices, source_spec

    sources, config = SourceSet(source_spec(images, size=64)), synth.SynthesisConfig()
    reuse: dict = {}
    for seed in (5, 6):
        seeds = synth.spawn_seeds(seed, 40)
        made = make_samples(sources, config, seeds, dtype, reuse=reuse)
        for i, (s, src) in enumerate(zip(seeds, source_indices(seeds, len(sources)).tolist())):
            image, fg = sources.read(src)
            out, mask, record = synth.synthesize(image, rng=s, foreground=fg, config=config,
                                                 source_id=sources.source_id(src))
            stored = np.rint(out * np.float32(255)).astype(np.uint8) if dtype == "uint8" else out.astype(np.float16)
            assert np.array_equal(made["images"][i], stored)
            assert np.array_equal(made["masks"][i], mask > 0.5) and made["masks"][i].max() <= 1
            assert made["labels"][i] == mask.any() and np.array_equal(made["mask_rows"][i], mask.any(axis=1))
            assert made["records"][i] == record.to_json() and made["tasks"][i] == record.task
        assert made["labels"].any() and not made["labels"].all()  # both kinds of sample were made


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
