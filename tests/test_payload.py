"""Tests for pillow_gcp.payload: round trips of every method, determinism, bad input."""

from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np
import pytest

from pillow_gcp import payload as P
from pillow_gcp.errors import GCPFormatError


def blocky(h, w, k, seed=0, noise=0.05):
    """A palette map with regions, edges and some noise: (h, w) uint8 < k."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = ((xx // 7 + yy // 5 + (xx + 2 * yy) // 11) % k).astype(np.uint8)
    m = rng.random((h, w)) < noise
    a[m] = rng.integers(0, k, m.sum(), dtype=np.uint8)
    return a


def lz(b: bytes) -> bytes:
    return P._lzma2(b, 6)


def runs_payload(structure: bytes, values: bytes, flags=0, perm=b"") -> bytes:
    sz = lz(structure)
    return bytes([P.METHOD_RUNS, flags]) + perm + struct.pack("<I", len(sz)) + sz + lz(values)


def roundtrip(a, k, payload):
    d = P.decode(payload, a.shape[1], a.shape[0], k)
    assert d.dtype == np.uint8 and d.shape == a.shape
    np.testing.assert_array_equal(d, a)
    # partial=True on complete data is exact too
    np.testing.assert_array_equal(P.decode(payload, a.shape[1], a.shape[0], k, partial=True), a)


SHAPES = [(1, 1), (1, 17), (13, 1), (5, 7), (16, 33), (40, 61)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 3, 16, 64, 200, 256])
def test_every_candidate_roundtrips(shape, k):
    a = blocky(*shape, k, seed=k + shape[0])
    cands = P._candidates(a, k, 9, exhaustive=True)
    kinds = {(c[0], c[1] if c[0] != P.METHOD_STORED and c[0] != P.METHOD_ZLIB else None) for c in cands}
    # stored, zlib, lzma2 (+perm), runs lengths/bitmap (+perm), ranks with LZMA2 or zlib, in rows or
    # columns (+perm)
    assert kinds == {(0, None), (1, None), (2, 0), (2, P.FLAG_PERM), (3, 0), (3, P.FLAG_BITMAP),
                     (3, P.FLAG_PERM), (3, P.FLAG_PERM | P.FLAG_BITMAP), (4, 0), (4, P.FLAG_PERM),
                     (4, P.FLAG_ZSTREAM), (4, P.FLAG_PERM | P.FLAG_ZSTREAM)} | {
                     (4, f | P.FLAG_COLUMNS) for f in (0, P.FLAG_PERM, P.FLAG_ZSTREAM, P.FLAG_PERM | P.FLAG_ZSTREAM)}
    for c in cands:
        roundtrip(a, k, c)


@pytest.mark.parametrize("level", [None, 0, 1, 3, 4, 6, 9])
@pytest.mark.parametrize("k", [2, 16, 256])
def test_encode_levels_roundtrip_and_determinism(level, k):
    a = blocky(37, 45, k, seed=3)
    e = P.encode(a, k, level=level)
    assert e == P.encode(a.copy(), k, level=level)
    roundtrip(a, k, e)
    if level == 0:
        assert e[0] == P.METHOD_STORED


def test_random_maps_roundtrip():
    rng = np.random.default_rng(7)
    for i in range(25):
        h, w = rng.integers(1, 60, 2)
        k = int(rng.integers(1, 257))
        a = rng.integers(0, k, (h, w), dtype=np.uint8)
        if i % 2:
            a = np.repeat(a, rng.integers(1, 9), axis=1)[:, :w]
        roundtrip(a, k, P.encode(a, k))


def test_long_runs_split_at_255():
    a = np.zeros((3, 1000), np.uint8)
    a[1, 300:] = 1
    a[2, 999] = 2
    lens, vals = P._split_lengths(*P._runs(a.ravel()))
    assert lens.max() == 255 and int(lens.sum()) == a.size
    for c in P._candidates(a, 3, 9, exhaustive=True):
        roundtrip(a, 3, c)
    e = P.encode(a, 3)
    assert len(e) < 100
    roundtrip(a, 3, e)


def test_constant_and_k1():
    a = np.zeros((50, 70), np.uint8)
    for k in (1, 5, 256):
        roundtrip(a, k, P.encode(a, k))


def test_compresses_structured_maps():
    a = blocky(200, 300, 16, noise=0.02)
    assert len(P.encode(a, 16, level=9)) <= 1 + len(zlib.compress(a.tobytes(), 9))
    assert len(P.encode(a, 16)) < len(zlib.compress(a.tobytes(), 6)) * 1.2
    smooth = np.repeat(np.repeat(blocky(40, 60, 16, noise=0.0), 5, 0), 5, 1)
    assert len(P.encode(smooth, 16)) < 0.5 * len(zlib.compress(smooth.tobytes(), 9))


def test_suggest_order_is_permutation():
    a = blocky(30, 40, 50, seed=1)
    for k in (1, 2, 50, 256):
        aa = (a.astype(np.int64) % k).astype(np.uint8)
        p = P.suggest_order(aa, k)
        assert p.dtype == np.uint8 and p.shape == (k,)
        assert sorted(p.tolist()) == list(range(k))
    np.testing.assert_array_equal(P.suggest_order(a, 50), P.suggest_order(a, 50))


def test_suggest_order_groups_neighbours():
    # colours 0..7 used as a gradient but stored in scrambled order
    scramble = np.array([5, 2, 7, 0, 3, 6, 1, 4], np.uint8)
    grad = np.repeat(np.arange(8, dtype=np.uint8), 10)[None, :].repeat(20, axis=0)
    a = scramble[grad]
    p = P.suggest_order(a, 8)
    chain = p[scramble]  # new index of each gradient step
    assert np.all(np.abs(np.diff(chain.astype(int))) == 1)


# ----------------------------------------------------------------------------- argument errors

def test_encode_argument_validation():
    a = np.zeros((2, 2), np.uint8)
    with pytest.raises(TypeError, match="dtype"):
        P.encode(a.astype(np.int32), 4)
    with pytest.raises(ValueError, match="2-D"):
        P.encode(np.zeros(4, np.uint8), 4)
    with pytest.raises(ValueError, match="2-D"):
        P.encode(np.zeros((0, 3), np.uint8), 4)
    with pytest.raises(ValueError, match="palette_size"):
        P.encode(a, 0)
    with pytest.raises(ValueError, match="palette_size"):
        P.encode(a, 257)
    with pytest.raises(ValueError, match="< palette_size"):
        P.encode(a + 3, 3)
    with pytest.raises(ValueError, match="level"):
        P.encode(a, 4, level=10)


def test_decode_argument_validation():
    e = P.encode(np.zeros((2, 2), np.uint8), 4)
    with pytest.raises(ValueError, match="width"):
        P.decode(e, 0, 2, 4)
    with pytest.raises(ValueError, match="height"):
        P.decode(e, 2, -1, 4)
    with pytest.raises(ValueError, match="palette_size"):
        P.decode(e, 2, 2, 300)


# ----------------------------------------------------------------------------- bad data

def small_payloads():
    a = blocky(9, 11, 6, seed=5, noise=0.2)
    return a, P._candidates(a, 6, 9, exhaustive=True)


def test_every_truncation_raises_and_partial_returns():
    a, cands = small_payloads()
    for c in cands:
        for cut in range(len(c)):
            with pytest.raises(GCPFormatError) as ei:
                P.decode(c[:cut], 11, 9, 6)
            assert ei.value.offset is not None and 0 <= ei.value.offset <= len(c)
            d = P.decode(c[:cut], 11, 9, 6, partial=True)
            assert d.shape == (9, 11) and d.dtype == np.uint8 and int(d.max()) < 6


def test_partial_keeps_decoded_prefix():
    a = blocky(60, 80, 16, seed=2, noise=0.01)
    for c in P._candidates(a, 16, 9, exhaustive=True):
        d = P.decode(c[: len(c) * 3 // 4], 80, 60, 16, partial=True)
        flat, ref = d.ravel(), a.ravel()
        if c[0] == P.METHOD_RUNS and not (c[1] & P.FLAG_BITMAP):
            # lengths stream complete, values cut: a correct prefix, zeros after
            good = int(np.argmin(flat == ref)) if not np.array_equal(flat, ref) else flat.size
            assert good > 0
            assert not flat[good:].any() or np.array_equal(flat, ref)
        elif c[0] == P.METHOD_STORED:
            n = len(c) * 3 // 4 - 1
            np.testing.assert_array_equal(flat[:n], ref[:n])
            assert not flat[n:].any()


def test_trailing_bytes_are_errors():
    a, cands = small_payloads()
    for c in cands:
        with pytest.raises(GCPFormatError, match="after") as ei:
            P.decode(c + b"\x00", 11, 9, 6)
        assert ei.value.offset == len(c)


def test_bit_flips_never_leak_other_exceptions():
    a, cands = small_payloads()
    detected = 0
    total = 0
    for c in cands:
        for i in range(len(c)):
            for bit in (0, 3, 7):
                bad = bytearray(c)
                bad[i] ^= 1 << bit
                total += 1
                try:
                    d = P.decode(bytes(bad), 11, 9, 6)
                except GCPFormatError as e:
                    assert e.offset is not None and 0 <= e.offset <= len(c)
                    detected += 1
                else:
                    assert d.shape == (9, 11) and int(d.max()) < 6
                try:
                    P.decode(bytes(bad), 11, 9, 6, partial=True)
                except GCPFormatError:
                    pass
    assert detected > total // 2


def test_bad_method_and_flags():
    with pytest.raises(GCPFormatError, match="method") as ei:
        P.decode(b"\x07abc", 2, 2, 4)
    assert ei.value.offset == 0
    with pytest.raises(GCPFormatError, match="empty") as ei:
        P.decode(b"", 2, 2, 4)
    assert ei.value.offset == 0
    for m in (P.METHOD_LZMA2, P.METHOD_RUNS):
        with pytest.raises(GCPFormatError, match="reserved") as ei:
            P.decode(bytes([m, 0x80]) + b"\x00" * 20, 2, 2, 4)
        assert ei.value.offset == 1


def test_index_out_of_palette():
    a = np.array([[0, 1], [2, 3]], np.uint8)
    stored = bytes([0]) + a.tobytes()
    assert P.decode(stored, 2, 2, 4).tolist() == a.tolist()
    with pytest.raises(GCPFormatError, match="palette_size") as ei:
        P.decode(stored, 2, 2, 3)
    assert ei.value.offset == 1 + 3
    for c in P._candidates(a, 4, 9, exhaustive=True):
        if c[0] == P.METHOD_LZMA2 and c[1] & P.FLAG_PERM:
            continue  # the permutation table itself is rejected first, tested below
        with pytest.raises(GCPFormatError, match="palette_size|permutation|rank table"):
            P.decode(c, 2, 2, 3)


def test_bad_permutation():
    a = blocky(6, 6, 4, seed=1)
    c = next(c for c in P._candidates(a, 4, 9, exhaustive=True)
             if c[0] == P.METHOD_RUNS and c[1] == P.FLAG_PERM)
    bad = bytearray(c)
    bad[2] = bad[3]  # duplicate entry
    with pytest.raises(GCPFormatError, match="bijection") as ei:
        P.decode(bytes(bad), 6, 6, 4)
    assert ei.value.offset == 2


def test_runs_structure_errors():
    w, h, k = 4, 2, 4
    ok = runs_payload(bytes([3, 5]), bytes([1, 2]))
    assert P.decode(ok, w, h, k).ravel().tolist() == [1, 1, 1, 2, 2, 2, 2, 2]
    cases = {
        "length 0": runs_payload(bytes([3, 0, 5]), bytes([1, 2, 3])),
        "cover": runs_payload(bytes([3, 6]), bytes([1, 2])),          # 9 > 8 pixels
        "cover ": runs_payload(bytes([3, 4]), bytes([1, 2])),         # 7 < 8 pixels
        "values stream has": runs_payload(bytes([3, 5]), bytes([1])),  # too few values
        "more than": runs_payload(bytes([3, 5]), bytes([1, 2, 3])),    # too many values
        "palette_size": runs_payload(bytes([3, 5]), bytes([1, 9])),
    }
    for msg, c in cases.items():
        with pytest.raises(GCPFormatError, match=msg.strip()) as ei:
            P.decode(c, w, h, k)
        assert ei.value.offset is not None
    # structure length field pointing past the end
    bad = bytearray(ok)
    bad[2:6] = struct.pack("<I", len(ok))
    with pytest.raises(GCPFormatError, match="structure stream needs"):
        P.decode(bytes(bad), w, h, k)


def test_runs_bitmap_errors():
    w, h, k = 5, 2, 4  # 10 pixels, 2 bitmap bytes
    bm = np.packbits(np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 0], bool)).tobytes()
    ok = runs_payload(bm, bytes([1, 2, 3]), P.FLAG_BITMAP)
    assert P.decode(ok, w, h, k).ravel().tolist() == [1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
    cases = {
        "padding": np.packbits(np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1], bool)).tobytes(),
        "pixel 0": np.packbits(np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 0], bool)).tobytes(),
        "expected 2": bm[:1],
    }
    for msg, s in cases.items():
        with pytest.raises(GCPFormatError, match=msg):
            P.decode(runs_payload(s, bytes([1, 2, 3]), P.FLAG_BITMAP), w, h, k)
    with pytest.raises(GCPFormatError, match="more than"):  # bitmap longer than 2 bytes
        P.decode(runs_payload(bm + b"\x00", bytes([1, 2, 3]), P.FLAG_BITMAP), w, h, k)


def test_streams_never_inflate_past_image():
    # a 10 MB zlib / LZMA2 bomb for a 4-pixel image must stop early with an error
    big = bytes(10_000_000)
    for c in (bytes([P.METHOD_ZLIB]) + zlib.compress(big, 9),
              bytes([P.METHOD_LZMA2, 0]) + lz(big),
              runs_payload(bytes([1]) * 4, big)):
        with pytest.raises(GCPFormatError, match="more than"):
            P.decode(c, 2, 2, 4)


def test_corrupt_streams():
    a = blocky(20, 20, 8, seed=9)
    z = bytes([P.METHOD_ZLIB]) + zlib.compress(a.tobytes(), 9)
    bad = bytearray(z)
    bad[1] ^= 0xFF  # zlib header check fails
    with pytest.raises(GCPFormatError, match="corrupt zlib"):
        P.decode(bytes(bad), 20, 20, 8)
    x = bytes([P.METHOD_LZMA2, 0]) + lz(a.tobytes())
    bad = bytearray(x)
    bad[2] = 0xFF  # invalid LZMA2 control byte
    with pytest.raises(GCPFormatError, match="corrupt"):
        P.decode(bytes(bad), 20, 20, 8)
    # a short but complete stream: the end marker comes too early
    short = bytes([P.METHOD_LZMA2, 0]) + lz(a.tobytes()[:-1])
    with pytest.raises(GCPFormatError, match="truncated"):
        P.decode(short, 20, 20, 8)
    d = P.decode(short, 20, 20, 8, partial=True)
    np.testing.assert_array_equal(d.ravel()[:-1], a.ravel()[:-1])


def test_accepts_memoryview_and_bytearray():
    a = blocky(10, 12, 16)
    e = P.encode(a, 16)
    for buf in (memoryview(e), bytearray(e), memoryview(b"xx" + e)[2:]):
        np.testing.assert_array_equal(P.decode(buf, 12, 10, 16), a)


def test_lzma_stream_is_plain_raw_lzma2():
    """Interop: the LZMA2 method's stream decodes with a stock raw-LZMA2 decoder."""
    a = blocky(30, 30, 16)
    c = next(c for c in P._candidates(a, 16, 9, exhaustive=True)
             if c[0] == P.METHOD_LZMA2 and c[1] == 0)
    filt = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]
    assert lzma.decompress(c[2:], format=lzma.FORMAT_RAW, filters=filt) == a.tobytes()


@pytest.mark.parametrize("noise", [0.0, 0.6])
@pytest.mark.parametrize("k", [16, 200])
@pytest.mark.parametrize("level", [6, 7])
def test_big_map_path(monkeypatch, noise, k, level):
    """Above the size threshold: sparse runs -> RUNS; dense -> the winner of a sampled trial
    (level 6: Huffman RANKS unless RUNS or raw LZMA2 is clearly smaller)."""
    monkeypatch.setattr(P, "_BIG", 1000)
    monkeypatch.setattr(P, "_SAMPLE_PIXELS", 600)
    a = np.repeat(blocky(40, 50, k, seed=4, noise=noise), 2, axis=0)
    e = P.encode(a, k, level=level)
    roundtrip(a, k, e)
    assert not (e[0] == P.METHOD_RUNS and e[1] & P.FLAG_BITMAP)
    if not noise:
        assert e[0] == P.METHOD_RUNS and bool(e[1] & P.FLAG_PERM) == (k > 64)
    elif level == 6:  # never RANKS with LZMA2 (slow to decode at this size)
        assert e[0] in (P.METHOD_RUNS, P.METHOD_LZMA2) or (e[0] == P.METHOD_RANKS and e[1] & P.FLAG_ZSTREAM)
    else:
        assert e[0] in (P.METHOD_RUNS, P.METHOD_RANKS, P.METHOD_LZMA2)


def test_thread_pool_gives_identical_output(monkeypatch):
    a = blocky(50, 70, 100, seed=8, noise=0.3)
    inline = P._candidates(a, 100, 9, exhaustive=True)
    inline6 = P.encode(a, 100)
    monkeypatch.setattr(P, "_PARALLEL_MIN", 0)
    assert P._candidates(a, 100, 9, exhaustive=True) == inline
    assert P.encode(a, 100) == inline6


def test_partial_pads_with_index_zero_under_permutation():
    a = blocky(30, 40, 150, seed=6, noise=0.2)
    for c in P._candidates(a, 150, 9, exhaustive=True):
        if c[0] not in (P.METHOD_LZMA2, P.METHOD_RUNS) or not c[1] & P.FLAG_PERM:
            continue
        for cut in (len(c) // 2, len(c) - 3):
            d = P.decode(c[:cut], 40, 30, 150, partial=True).ravel()
            ref = a.ravel()
            good = d.size if np.array_equal(d, ref) else int(np.argmin(d == ref))
            assert not d[good:].any() or np.array_equal(d[good:], ref[good:])
            if c[0] == P.METHOD_LZMA2:  # a prefix, then zeros
                nz = np.flatnonzero(d != ref)
                assert nz.size == 0 or not d[nz[0]:].any()


def test_huge_declared_size_is_a_format_error_not_value_error():
    a = np.zeros((4, 4), np.uint8)
    for c in P._candidates(a, 2, 9, exhaustive=True):
        try:
            P.decode(c, 70000, 70000, 2)  # 4.9e9 pixels declared
        except GCPFormatError:
            pass


def test_long_lzma2_streams_are_spliced_pieces_and_independent_of_cores(monkeypatch):
    """Streams over 2 MiB are coded as independent pieces joined into one LZMA2 stream
    (a dictionary reset at each piece): they decode with any LZMA2 decoder, and the
    bytes do not depend on how many cores did the work."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 200, size=(1500, 1600), dtype=np.uint8)
    blob = P._RawJob(None, a.ravel(), 6).result()  # what levels 7..9 write when raw LZMA2 wins
    assert blob[0] == P.METHOD_LZMA2
    assert np.array_equal(P.decode(blob, 1600, 1500, 200), a)
    # one stream: stock liblzma decodes the body to the whole map and stops at its end marker
    body = blob[2 + (200 if blob[1] & P.FLAG_PERM else 0):]
    d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=P._lzma2_filters(a.size))
    assert len(d.decompress(body)) == a.size and d.eof and not d.unused_data
    monkeypatch.setattr(P.os, "cpu_count", lambda: 1)
    assert P._RawJob(None, a.ravel(), 6).result() == blob


# ----------------------------------------------------------------------------- RANKS (method 4)

def test_default_order_is_c_then_alternating_neighbours():
    assert P.default_order(5).tolist() == [[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [2, 1, 3, 0, 4],
                                           [3, 2, 4, 1, 0], [4, 3, 2, 1, 0]]
    assert P.default_order(1).tolist() == [[0]]


def test_rank_order_lists_first_then_default():
    order = P.rank_order(5, [[], [4, 2], [], [], []])
    # context 1: default order is 1,0,2,3,4; positions 4 and 2 are symbols 4 and 2
    assert order[1].tolist() == [4, 2, 1, 0, 3]
    assert order[0].tolist() == [0, 1, 2, 3, 4]


def test_rank_contexts_restart_every_segment():
    codes = np.arange(3000, dtype=np.int64).astype(np.uint8)
    ctx = P.rank_contexts(codes)
    assert ctx[0] == 0 and ctx[P.SEGMENT] == 0 and ctx[2 * P.SEGMENT] == 0
    assert ctx[1] == codes[0] and ctx[P.SEGMENT + 1] == codes[P.SEGMENT]


@pytest.mark.parametrize("n", [1, 2, 1023, 1024, 1025, 16 * 1024 - 1, 16 * 1024, 40000])
@pytest.mark.parametrize("k", [1, 2, 7, 256])
def test_ranks_transform_inverts(n, k):
    rng = np.random.default_rng(n + k)
    codes = np.minimum(np.repeat(rng.integers(0, k, n // 3 + 1), 3)[:n], k - 1).astype(np.uint8)
    lists = P._rank_lists(codes, k)
    order = P.rank_order(k, lists)
    ranks = P.to_ranks(codes, order)
    assert ranks.max(initial=0) < k
    np.testing.assert_array_equal(P.from_ranks(ranks, order), codes)


def test_ranks_python_and_numpy_paths_agree():
    """from_ranks uses plain Python below 16 segments and numpy lanes above: same result."""
    rng = np.random.default_rng(5)
    k = 9
    order = P.rank_order(k, [rng.permutation(k)[:4] for _ in range(k)])
    ranks = rng.integers(0, k, 20 * P.SEGMENT + 17).astype(np.uint8)
    whole = P.from_ranks(ranks, order)
    m = 15 * P.SEGMENT  # a prefix of whole segments is decoded the same on its own
    np.testing.assert_array_equal(P.from_ranks(ranks[:m], order), whole[:m])


@pytest.mark.parametrize("big", [False, True])
def test_ranks_is_chosen_on_dense_maps_and_wins_there(monkeypatch, big):
    rng = np.random.default_rng(1)
    # a noisy gradient: dense runs, neighbouring codes close, like a photo at k=256
    base = (np.add.outer(np.arange(96), np.arange(128)) // 2 % 200).astype(np.int64)
    a = np.clip(base + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    if big:  # the bounded-time path for big maps: RANKS with Huffman-coded ranks
        monkeypatch.setattr(P, "_BIG", 1000)
        monkeypatch.setattr(P, "_SAMPLE_PIXELS", 3000)
    e = P.encode(a, 256)
    roundtrip(a, 256, e)
    assert e[0] == P.METHOD_RANKS
    if big:
        assert e[1] & P.FLAG_ZSTREAM


def _ranks_payload(a, k, huffman=False):
    return P._RanksJob(None, a.ravel(), k, 6, huffman=huffman).result()


@pytest.mark.parametrize("huffman", [False, True])
def test_ranks_errors_and_truncation(huffman):
    a = blocky(40, 61, 16, seed=2)
    e = _ranks_payload(a, 16, huffman)
    roundtrip(a, 16, e)
    with pytest.raises(GCPFormatError, match="reserved flag bits"):
        P.decode(e[:1] + b"\x08" + e[2:], 61, 40, 16)
    with pytest.raises(GCPFormatError, match="ranks stream"):  # the other stream kind
        P.decode(e[:1] + bytes([e[1] ^ P.FLAG_ZSTREAM]) + e[2:], 61, 40, 16)
    with pytest.raises(GCPFormatError, match="rank table length missing"):
        P.decode(e[:4], 61, 40, 16)
    # a table for the wrong palette size: it lists too few contexts, or a position >= k
    with pytest.raises(GCPFormatError, match="rank table"):
        P.decode(e, 61, 40, 8)
    for cut in range(3, len(e), max(1, len(e) // 25)):
        with pytest.raises(GCPFormatError, match="truncated"):
            P.decode(e[:cut], 61, 40, 16)
        part = P.decode(e[:cut], 61, 40, 16, partial=True)
        flat, ref = part.ravel(), a.ravel()
        good = int(np.argmax(flat != ref)) if (flat != ref).any() else flat.size
        assert (flat[good:] == 0).all()  # decoded prefix, then index 0
    with pytest.raises(GCPFormatError, match="unexpected bytes"):
        P.decode(e + b"\x00", 61, 40, 16)


def _spy_pieces(monkeypatch):
    """Record the piece jobs of the parallel LZMA2 decode."""
    calls = []
    real = P._decode_piece

    def spy(piece, cap, size, then=None):
        calls.append(size)
        return real(piece, cap, size, then)

    monkeypatch.setattr(P, "_decode_piece", spy)
    return calls


def test_parallel_decode_of_pieces_matches_sequential_and_falls_back_on_errors(monkeypatch):
    """A stream of independently coded pieces is decoded piece by piece on the pool; the
    result equals one sequential decoder's, and damage anywhere gives the sequential error."""
    monkeypatch.setattr(P, "_PIECE", 1 << 12)  # many small pieces ...
    monkeypatch.setattr(P, "_MIN_PIECE", 1 << 13)  # ... merged two by two for decoding
    monkeypatch.setattr(P, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    calls = _spy_pieces(monkeypatch)
    rng = np.random.default_rng(3)
    a = np.repeat(rng.integers(0, 60, size=(120, 100), dtype=np.uint8), 2, axis=1)
    body = P._lzma2_async(a.tobytes(), 6).result()
    mv = memoryview(body)
    pieces = P._lzma2_pieces(mv, 0, len(body), a.size)
    assert pieces is not None and len(pieces) == a.size // (1 << 13) + (a.size % (1 << 13) > 0)
    assert sum(size for _, _, size in pieces) == a.size
    blob = bytes([P.METHOD_LZMA2, 0]) + body
    np.testing.assert_array_equal(P.decode(blob, 200, 120, 60), a)
    assert len(calls) == len(pieces)  # the parallel path ran
    monkeypatch.setattr(P.os, "cpu_count", lambda: 1)  # sequential reference
    np.testing.assert_array_equal(P.decode(blob, 200, 120, 60), a)
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    # a declared size past the cap, trailing bytes, a bad control byte: no split
    assert P._lzma2_pieces(mv, 0, len(body), a.size - 1) is None
    assert P._lzma2_pieces(memoryview(body + b"\x00"), 0, len(body) + 1, a.size) is None
    assert P._lzma2_pieces(memoryview(b"\x05" + body), 0, len(body) + 1, a.size) is None
    # damage inside the second piece: the error is the sequential decoder's
    bad = bytearray(blob)
    bad[2 + pieces[1][0] + 20] ^= 0xFF
    with pytest.raises(GCPFormatError) as par:
        P.decode(bytes(bad), 200, 120, 60)
    monkeypatch.setattr(P.os, "cpu_count", lambda: 1)
    with pytest.raises(GCPFormatError) as seq:
        P.decode(bytes(bad), 200, 120, 60)
    assert str(par.value) == str(seq.value) and par.value.offset == seq.value.offset


def test_parallel_ranks_pieces_and_a_bad_rank_in_a_later_piece(monkeypatch):
    monkeypatch.setattr(P, "_PIECE", 1 << 12)
    monkeypatch.setattr(P, "_MIN_PIECE", 1 << 12)
    monkeypatch.setattr(P, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    calls = _spy_pieces(monkeypatch)
    a = blocky(100, 90, 40, seed=9, noise=0.2)
    e = P._RanksJob(None, a.ravel(), 40, 6).result()
    roundtrip(a, 40, e)
    assert len(calls) >= 2
    # the same payload with one rank >= k inside the third piece: the sequential error
    tlen = int.from_bytes(e[2:6], "little")
    ranks = bytearray(P._inflate("lzma2", memoryview(e), 6 + tlen, len(e), a.size, "r").buf)
    ranks[2 * 4096 + 7] = 40
    bad = e[:6 + tlen] + P._lzma2_async(bytes(ranks), 6, 0, True).result()
    with pytest.raises(GCPFormatError, match="rank 40 >= palette_size 40 at pixel 8199"):
        P.decode(bad, 90, 100, 40)


def test_hostile_stream_of_tiny_pieces_stays_cheap(monkeypatch):
    """Thousands of dictionary resets: merged into few pieces (or one sequential decoder)."""
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    calls = _spy_pieces(monkeypatch)
    piece = P._lzma2(bytes(16), 6)[:-1]  # one 16-byte chunk with a full reset, no end marker
    n = 16 * 20000
    blob = bytes([P.METHOD_LZMA2, 0]) + piece * 20000 + b"\x00"
    np.testing.assert_array_equal(P.decode(blob, 640, 500, 2), np.zeros((500, 640), np.uint8))
    assert len(calls) <= n // P._MIN_PIECE + 1


def test_ranks_columns_on_one_row_or_column_is_the_same_order():
    for shape in ((1, 50), (50, 1)):
        a = blocky(*shape, 5, seed=1)
        e = P._RanksJob(None, a.ravel(), 5, 6, columns=True).result()
        roundtrip(a, 5, e)


@pytest.mark.parametrize("huffman", [False, True])
def test_ranks_in_columns_roundtrip_and_truncate_in_column_order(huffman):
    """COLUMNS: the map is coded column by column (context: the pixel above); a truncated payload
    gives the pixels decoded in that order, then index 0."""
    a = blocky(40, 61, 16, seed=5)
    cols = np.ascontiguousarray(a.T).ravel()
    e = P._RanksJob(None, cols, 16, 6, huffman=huffman, columns=True).result()
    assert e[1] & P.FLAG_COLUMNS
    roundtrip(a, 16, e)
    previous = 0
    for cut in range(3, len(e), max(1, len(e) // 20)):
        part = P.decode(e[:cut], 61, 40, 16, partial=True)
        got, ref = part.T.ravel(), cols  # column order
        good = int(np.argmax(got != ref)) if (got != ref).any() else got.size
        assert not got[good:].any() and good >= previous
        previous = good


def test_runs_leaves_no_decoding_running_after_an_error(monkeypatch):
    """RUNS decodes its values stream ahead on the pool; when the structure stream is bad the
    call raises only after that job is done (no work escapes the caller's time)."""
    monkeypatch.setattr(P, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    jobs = []
    real = P._submit

    def spy(fn, *args):
        jobs.append(real(fn, *args))
        return jobs[-1]

    monkeypatch.setattr(P, "_submit", spy)
    a = blocky(60, 70, 16, seed=4, noise=0.3)
    e = P._RunsJob(None, *P._split_lengths(*P._runs(a.ravel())), 6).result()
    roundtrip(a, 16, e)
    bad = bytearray(e)
    bad[6] = 0x05  # first control byte of the structure stream: invalid
    with pytest.raises(GCPFormatError):
        P.decode(bytes(bad), 70, 60, 16)
    assert jobs and all(j.done() for j in jobs)


def test_corrupt_rank_table_inside_the_payload_is_an_error_even_when_lenient():
    a = blocky(30, 40, 16, seed=2)
    e = P._RanksJob(None, a.ravel(), 16, 6).result()
    tlen = int.from_bytes(e[2:6], "little")
    short = e[:2] + (tlen - 1).to_bytes(4, "little") + e[6:6 + tlen - 1] + e[6 + tlen:]  # no end marker
    for partial in (False, True):
        with pytest.raises(GCPFormatError, match="no end marker"):
            P.decode(short, 40, 30, 16, partial=partial)
