"""Numba kernels of the cache's per-sample work: the stored form of one synthesised image,
straight into a row of the shard's images (one pass instead of numpy's temporaries: a float32
product, its rounding, the cast, the copy); which rows of a mask have a set pixel; the masks'
zstd frames of run-length blocks; and each sample's source image draw,
numpy's ``default_rng(SeedSequence(seed, spawn_key=(key,))).integers(n)`` without its objects
(11 us a sample through numpy).

Example:
    >>> import numpy as np
    >>> row = np.empty((2, 2), np.uint8)
    >>> to_uint8_into(np.array([[0.0, 0.5], [1.0, 2.0]], np.float32), row)
    >>> row.tolist()
    [[0, 128], [255, 255]]
"""
from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros


@numba.njit(cache=True, nogil=True)
def to_uint8_into(image: np.ndarray, out: np.ndarray) -> None:
    """``out = uint8(rint(float32(image) * 255))`` clipped to [0, 255] (numpy's cast would wrap
    values outside [0, 1]); ``out`` is a C-contiguous uint8 array of ``image``'s shape. Equals
    numpy's float32 expression (rounding half to even) on [0, 1]."""
    src, dst = image.reshape(-1), out.reshape(-1)
    for i in range(src.size):
        # Clamped before rounding (the same result, 0 and 255 being whole) and cast through
        # int32, which the compiler vectorises: 3.1 us for a 224 x 224 image, was 3.9.
        value = min(max(np.float32(src[i]) * np.float32(255.0), np.float32(0.0)), np.float32(255.0))
        dst[i] = np.uint8(np.int32(np.rint(value)))


@numba.njit(cache=True, nogil=True)
def find_set_rows(mask: np.ndarray, rows_set: np.ndarray) -> bool:
    """``rows_set[r]``: whether row r (of the last axis) of a uint8 mask has a nonzero byte, for
    ``run_length_frame``; returns whether any has (the label). 1.5 us a 224 x 224 mask."""
    width = mask.shape[-1]
    flat = mask.reshape(-1)
    if width % 8:  # byte by byte (slower; sizes that are multiples of 8 are the rule)
        for r in range(rows_set.size):
            rows_set[r] = flat[r * width:(r + 1) * width].any()
        return bool(rows_set.any())
    # Eight bytes at a time; loops over range(n) plus an offset, since those over
    # range(start, stop) did not vectorise.
    words, per_row = flat.view(np.uint64), width // 8
    found = np.uint64(0)
    for r in range(rows_set.size):
        word_start = r * per_row
        seen = np.uint64(0)
        for k in range(per_row):
            seen |= words[word_start + k]
        rows_set[r] = seen != 0
        found |= seen
    return found != 0


# zstd frames of RLE and raw blocks only (RFC 8878), which any zstd decoder reads. A binary mask
# is long runs of 0 and 1: the encoder skips rows known to be all zero and finds runs eight
# bytes at a time, 4.7 us a 224 x 224 mask against zstd's 13 (level -7), and the frames decode
# in a third of the time (memset and memcpy per block).
RUN_BLOCK_MAX = 128 * 1024  # zstd's largest block
MIN_RUN = 8  # a shorter run stays in a raw block: as an RLE block it costs 4 bytes, and 3 for the raw block after it
_ONES = np.uint64(0x0101010101010101)


@numba.njit(cache=True, nogil=True, inline="always")
def _block_header(out, pos, kind, size):
    header = (size << 3) | (kind << 1)  # bit 0, the last block's flag, is set at the end
    out[pos], out[pos + 1], out[pos + 2] = header & 0xFF, (header >> 8) & 0xFF, (header >> 16) & 0xFF
    return pos + 3


@numba.njit(cache=True, nogil=True, inline="always")
def _emit(data, raw_start, run_start, value, run_stop, out, pos):
    """Raw blocks of ``data[raw_start:run_start]``, then RLE blocks of ``value`` up to ``run_stop``
    (``_room`` has checked that they fit)."""
    while raw_start < run_start:
        size = min(run_start - raw_start, RUN_BLOCK_MAX)
        pos = _block_header(out, pos, 0, size)
        for k in range(size):
            out[pos + k] = data[raw_start + k]
        pos += size
        raw_start += size
    while run_start < run_stop:
        size = min(run_stop - run_start, RUN_BLOCK_MAX)
        pos = _block_header(out, pos, 1, size)
        out[pos] = value
        pos += 1
        run_start += size
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _room(out, pos, raw_start, run_start, i, stop, width):
    """Whether ``out`` has room for all that encoding up to ``stop`` from ``i`` can write: the
    bytes already bound for raw blocks, the rest of the row, the current run if it ends short,
    and a header for every block (at most two per run of MIN_RUN bytes, and per RUN_BLOCK_MAX).
    Checked once a row: a check per block cost half the encoder's time (6.1 against 4.1 us)."""
    headers = 7 * ((stop - raw_start) // RUN_BLOCK_MAX + width // MIN_RUN + 3)
    return pos + (run_start - raw_start) + (stop - i) + MIN_RUN + headers <= out.size


@numba.njit(cache=True, nogil=True)
def run_length_frame(data: np.ndarray, width: int, rows_set: np.ndarray, out: np.ndarray) -> int:
    """A zstd frame of ``data`` (uint8, C-contiguous, 1 to 2**32 - 1 bytes) written into ``out``
    (16 bytes or more); returns its size, or more than ``out.size`` when it might not fit (room is
    checked once a row, with a margin of ``width + 7 * width / MIN_RUN`` bytes or so; what was
    written is then of no use). ``data`` is rows of ``width`` bytes; a row r without
    ``rows_set[r]`` must be all zeros, and is skipped unread (where ``width >= MIN_RUN``, as
    its zeros then always join an RLE block). Runs of ``MIN_RUN`` or more equal bytes become
    RLE blocks, the rest raw blocks."""
    n = data.size
    if n == 0 or rows_set.size * width != n or out.size < 16:
        raise ValueError("run_length_frame: data must be rows_set.size rows of width bytes (at least one), out 16 bytes or more")
    out[0], out[1], out[2], out[3] = 0x28, 0xB5, 0x2F, 0xFD  # magic number, little-endian
    out[4] = 0xA0  # single segment (no window descriptor), 4-byte content size, no checksum
    for k in range(4):
        out[5 + k] = (n >> (8 * k)) & 0xFF
    pos = 9
    words = data[:n - n % 8].view(np.uint64)
    raw_start = run_start = 0  # bytes before raw_start are written; the current run began at run_start
    value = np.uint64(data[0]) if rows_set[0] else np.uint64(0)
    pattern = value * _ONES
    i = 0
    for r in range(rows_set.size):
        stop = (r + 1) * width
        if not rows_set[r]:
            if value != 0:  # a run of zeros starts with this row
                if i - run_start >= MIN_RUN:
                    if not _room(out, pos, raw_start, run_start, i, i, 0):
                        return out.size + 1
                    pos = _emit(data, raw_start, run_start, value, i, out, pos)
                    raw_start = i
                value, pattern, run_start = np.uint64(0), np.uint64(0), i
            i = stop
            continue
        if not _room(out, pos, raw_start, run_start, i, stop, width):
            return out.size + 1
        while i < stop:
            if i & 7 == 0 and i + 8 <= stop:
                word = words[i >> 3]
                diff = word ^ pattern
                while diff != 0:  # each byte of the word where a new run starts
                    at = i + (trailing_zeros(diff) >> 3)
                    if at - run_start >= MIN_RUN:
                        pos = _emit(data, raw_start, run_start, value, at, out, pos)
                        raw_start = at
                    shift = np.uint64(8 * (at - i))
                    value = (word >> shift) & np.uint64(0xFF)
                    pattern = value * _ONES
                    run_start = at
                    diff = (word ^ pattern) & (~np.uint64(0) << shift)
                i += 8
            else:
                byte = np.uint64(data[i])
                if byte != value:
                    if i - run_start >= MIN_RUN:
                        pos = _emit(data, raw_start, run_start, value, i, out, pos)
                        raw_start = i
                    value, pattern, run_start = byte, byte * _ONES, i
                i += 1
    if n - run_start < MIN_RUN:
        run_start = n  # too short a last run: raw
    if not _room(out, pos, raw_start, run_start, n, n, 0):
        return out.size + 1
    last = pos
    pos = _emit(data, raw_start, run_start, value, n, out, pos)
    k = last
    while k < pos:  # find the last block's header among those just written
        last = k
        header = np.int64(out[k]) | (np.int64(out[k + 1]) << 8) | (np.int64(out[k + 2]) << 16)
        k += 3 + (1 if (header >> 1) & 3 == 1 else header >> 3)
    out[last] |= 1
    return pos


_LOW32 = np.uint64(0xFFFFFFFF)
_PCG_MULT_HIGH, _PCG_MULT_LOW = np.uint64(2549297995355413924), np.uint64(4865540595714422341)


@numba.njit(cache=True, inline="always")
def _mulhi64(a, b):
    """The high 64 bits of the 128-bit product of two uint64, from 32-bit halves."""
    a0, a1, b0, b1 = a & _LOW32, a >> np.uint64(32), b & _LOW32, b >> np.uint64(32)
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    middle = (p00 >> np.uint64(32)) + (p01 & _LOW32) + (p10 & _LOW32)
    return a1 * b1 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (middle >> np.uint64(32))


@numba.njit(cache=True, inline="always")
def _add128(high, low, add_high, add_low):
    total = low + add_low
    return high + add_high + (np.uint64(1) if total < low else np.uint64(0)), total


@numba.njit(cache=True, inline="always")
def _pcg64_step(high, low, inc_high, inc_low):
    """PCG64's 128-bit LCG step, state * multiplier + increment, on (high, low) halves."""
    product_high = _mulhi64(low, _PCG_MULT_LOW) + high * _PCG_MULT_LOW + low * _PCG_MULT_HIGH
    return _add128(product_high, low * _PCG_MULT_LOW, inc_high, inc_low)


@numba.njit(cache=True, inline="always")
def _pcg64_output(high, low):
    """PCG64's XSL-RR output of a state."""
    x, rot = high ^ low, high >> np.uint64(58)
    return (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))


@numba.njit(cache=True)
def bounded_draws(states, n):
    """For each row of ``states`` (``SeedSequence.generate_state(4, np.uint64)``, as
    ``synth.kernels.keyed_pcg64_states`` gives them): ``Generator(PCG64)`` seeded with it, then
    ``.integers(n)``, for 1 <= n <= 2**32 (Lemire's method on 32-bit draws, numpy's way)."""
    out = np.empty(len(states), np.int64)
    bound = np.uint64(n - 1)
    span = bound + np.uint64(1)
    # A draw is kept when the low half of draw * span reaches this; numpy computes it only
    # when a draw may fall below it, but it depends on n alone.
    threshold = (_LOW32 - bound) % span if bound < _LOW32 else np.uint64(0)
    for k in range(len(states)):
        if bound == 0:
            out[k] = 0
            continue
        inc_high = (states[k, 2] << np.uint64(1)) | (states[k, 3] >> np.uint64(63))
        inc_low = (states[k, 3] << np.uint64(1)) | np.uint64(1)
        # Seeding: the zero state steps to the increment, adds the initial state, steps again.
        high, low = _add128(inc_high, inc_low, states[k, 0], states[k, 1])
        high, low = _pcg64_step(high, low, inc_high, inc_low)
        buffered, has_buffered = np.uint64(0), False  # 32-bit draws: a 64-bit output's low half, then its high
        while True:
            if has_buffered:
                draw, has_buffered = buffered, False
            else:
                high, low = _pcg64_step(high, low, inc_high, inc_low)
                word = _pcg64_output(high, low)
                draw, buffered, has_buffered = word & _LOW32, word >> np.uint64(32), True
            if bound == _LOW32:
                result = draw
                break
            product = draw * span
            if product & _LOW32 >= threshold:
                result = product >> np.uint64(32)
                break
        out[k] = np.int64(result)
    return out
