"""Coding of the palette-index map (the ``.gcp`` payload).

The payload is self-describing: its first byte is a *method id*, followed by
the method's parameters and data.  :func:`encode` tries the methods allowed
by ``level`` and keeps the smallest result (ties: lowest method id);
:func:`decode` reads any of them.  SPEC.md, section "Payload", is the
byte-exact definition; in short (``N = width * height``, all integers
little-endian, "LZMA2 stream" = a raw LZMA2 stream as in the .xz format,
no container, dictionary size ``max(4096, size it decodes to)``):

0  STORED : the N index bytes, row-major.
1  ZLIB   : a zlib stream (RFC 1950) inflating to exactly the N index bytes.
2  LZMA2  : flags byte, optional index permutation, LZMA2 stream of the N
            (permuted) index bytes.
3  RUNS   : flags byte, optional index permutation, the image as runs of
            equal indices in raster order (runs continue across row ends):
            a *structure* stream (run lengths 1..255, or a run-start bitmap)
            and a *values* stream (one index per run), each LZMA2.
4  RANKS  : flags byte, optional index permutation, a rank table (LZMA2) and
            the rank of every code among the codes ordered for its context
            (the code before it, restarting every 1024 pixels), as LZMA2 or
            as Huffman-only zlib (flag ZSTREAM); in raster or, with flag
            COLUMNS, column-major order.  Files using it are version 2.

The optional permutation ``perm`` (k bytes, a bijection of 0..k-1) maps a
palette index ``i`` to the stored code ``perm[i]``; the encoder derives it
from the index co-occurrence graph (spectral ordering, :func:`suggest_order`)
so that LZMA2's literal coder sees similar codes for neighbouring colours.

No Pillow import here: bytes in, arrays out.  Decoding never inflates past
what the image needs and raises only :class:`GCPFormatError` on bad data.
"""

from __future__ import annotations

import concurrent.futures
import functools
import lzma
import os
import struct
import threading
import zlib

import numpy as np

from .errors import GCPFormatError

__all__ = ["encode", "decode", "suggest_order", "coding_name",
           "METHOD_STORED", "METHOD_ZLIB", "METHOD_LZMA2", "METHOD_RUNS", "METHOD_RANKS"]

METHOD_STORED = 0
METHOD_ZLIB = 1
METHOD_LZMA2 = 2
METHOD_RUNS = 3
METHOD_RANKS = 4

FLAG_PERM = 0x01       # a k-byte permutation follows the flags byte
FLAG_BITMAP = 0x02     # RUNS only: structure is a run-start bitmap, not run lengths
FLAG_ZSTREAM = 0x02    # RANKS only: the ranks stream is a zlib stream, not LZMA2
FLAG_COLUMNS = 0x04    # RANKS only: pixels in column-major order (context: the pixel above)
_MAX_RUN = 255

_CHUNK = 1 << 16       # compressed bytes fed to a decompressor per call


# ----------------------------------------------------------------------------- helpers

def _check_k(palette_size) -> int:
    if isinstance(palette_size, bool) or not isinstance(palette_size, (int, np.integer)) \
            or not 1 <= palette_size <= 256:
        raise ValueError(f"palette_size must be an int in 1..256, got {palette_size!r}")
    return int(palette_size)


def _check_indices(indices, palette_size) -> np.ndarray:
    _check_k(palette_size)
    a = np.asarray(indices)
    if a.dtype != np.uint8:
        raise TypeError(f"indices must have dtype uint8, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"indices must be a non-empty 2-D (H, W) array, got shape {a.shape}")
    m = int(a.max())
    if m >= palette_size:
        raise ValueError(f"indices must all be < palette_size={palette_size}, found {m}")
    return np.ascontiguousarray(a)


_MAX_DICT = 1536 << 20  # liblzma's largest LZMA2 dictionary (1.5 GiB)


# Match finder for the RANKS stream: binary tree over 2-byte hashes, one candidate. On rank
# streams this is both smaller (by 1-1.5%, median over Kodak maps at k=64 and 256) and about
# 3-4x faster to encode than preset 6's defaults; on raw codes it is much worse (not used there).
FAST_MATCH = {"mf": lzma.MF_BT2, "nice_len": 64, "depth": 1}


def _lzma2_filters(decoded_size: int, preset: int = 6, lc: int = 0, fast: bool = False) -> list:
    """Filter chain: dictionary ``min(max(4096, decoded_size), 1.5 GiB)``."""
    f = {"id": lzma.FILTER_LZMA2, "preset": preset,
         "dict_size": min(max(4096, decoded_size), _MAX_DICT), "lc": lc, "lp": 0, "pb": 0}
    if fast:
        f.update(FAST_MATCH)
    return [f]


def _lzma2(raw: bytes, preset: int, lc: int = 0, fast: bool = False, dict_for: int | None = None) -> bytes:
    size = len(raw) if dict_for is None else dict_for
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma2_filters(size, preset, lc, fast))


_POOL = None
_POOL_LOCK = threading.Lock()
_PARALLEL_MIN = 1 << 18  # bytes: smaller decode jobs run inline
_ENCODE_POOL_MIN = 1 << 16  # bytes: smaller LZMA2 encode jobs run inline (bigger ones side by side:
                            # the sample trials of big maps and the candidates of small ones)


class _Done:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _forget_pool() -> None:
    global _POOL, _POOL_LOCK
    _POOL = None  # threads do not survive fork(): a child makes its own pool,
    _POOL_LOCK = threading.Lock()  # and its own lock (another thread may have held it at the fork)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


_PIECE = 2 << 20  # bytes: longer inputs are coded as independent pieces of this size


class _Spliced:
    """Independently coded pieces joined into one LZMA2 stream.

    A raw LZMA2 stream is chunks ending in the end-of-stream byte 0x00, and the
    first chunk of each piece resets the dictionary and the state; dropping
    every piece's end byte but the last gives one valid stream that decodes to
    the concatenated input (SPEC.md section 6). The pieces compress in parallel.
    """

    def __init__(self, futures):
        self.futures = futures

    def result(self) -> bytes:
        parts = [f.result() for f in self.futures]
        return b"".join(p[:-1] for p in parts[:-1]) + parts[-1]


def _lzma2_async(raw: bytes, preset: int, lc: int = 0, fast: bool = False):
    """Start an LZMA2 compression; returns an object with ``.result()``.

    liblzma releases the GIL, so big jobs run on a small thread pool (one
    thread per core, at most 4). Inputs longer than ``_PIECE`` bytes are cut
    into fixed ``_PIECE``-byte pieces coded side by side (:class:`_Spliced`);
    the output depends only on the input, never on the number of cores.
    """
    if len(raw) > _PIECE:
        view = memoryview(raw)
        return _Spliced([_lzma2_async(view[i:i + _PIECE], preset, lc, fast)
                         for i in range(0, len(raw), _PIECE)])
    if len(raw) < min(_PARALLEL_MIN, _ENCODE_POOL_MIN) or (os.cpu_count() or 1) < 2:
        return _Done(_lzma2(raw, preset, lc, fast))
    return _submit(_lzma2, raw, preset, lc, fast)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="gcp-lzma")
        return _POOL


def _submit(fn, *args):
    """``fn(*args)`` on the thread pool; inline when the pool takes no more work (interpreter
    shutdown has begun), so that callers never see the pool's RuntimeError."""
    try:
        return _pool().submit(fn, *args)
    except RuntimeError:
        return _Done(fn(*args))


def suggest_order(indices: np.ndarray, palette_size: int) -> np.ndarray:
    """A palette permutation putting colours that are often neighbours at close indices.

    Spectral ordering of the 4-neighbour co-occurrence graph of the indices
    (Fiedler vector of the normalized Laplacian; unused indices go last, ties
    broken by index).  Deterministic for a given input on a given platform.

    Parameters
    ----------
    indices : ndarray, shape (H, W), dtype uint8
    palette_size : int, 1..256

    Returns
    -------
    perm : ndarray, shape (palette_size,), dtype uint8
        ``perm[i]`` is the new index of old index ``i`` (a bijection).
    """
    a = _check_indices(indices, palette_size)
    k = palette_size
    if k <= 2:
        return np.arange(k, dtype=np.uint8)
    c = _cooccurrence(a, k)
    c = c + c.T
    np.fill_diagonal(c, 0.0)
    used = np.bincount(a.ravel(), minlength=k) > 0
    d = c.sum(axis=1)
    key = np.arange(k, dtype=np.float64) + 1e9  # unused/isolated: last, by index
    live = d > 0
    if live.sum() >= 3:
        idx = np.flatnonzero(live)
        f = _fiedler(c[np.ix_(idx, idx)], d[idx])
        key[idx] = np.round(f / max(np.abs(f).max(), 1e-300), 9)
    key[~used & ~live] = np.arange(k)[~used & ~live] + 2e9
    order = np.lexsort((np.arange(k), key))
    perm = np.empty(k, np.uint8)
    perm[order] = np.arange(k, dtype=np.uint8)
    return perm


def _fiedler(c: np.ndarray, d: np.ndarray, iters: int = 300) -> np.ndarray:
    """Approximate Fiedler vector of the graph with weights ``c`` (m, m) and degrees ``d`` (m,).

    Power iteration on ``(I + D^-1/2 C D^-1/2) / 2`` with the top eigenvector
    ``sqrt(d)`` projected out; plain numpy (no LAPACK), fixed start and
    iteration count.  Returns ``D^-1/2 v`` (m,), sign fixed so that its
    largest-magnitude entry is positive.
    """
    dm = 1.0 / np.sqrt(d)
    m = c * dm[:, None] * dm[None, :]
    top = np.sqrt(d) / np.sqrt(d.sum())
    v = np.linspace(-1.0, 1.0, len(d))
    for _ in range(iters):
        v = v - top * (top @ v)
        v = 0.5 * (v + (m * v[None, :]).sum(axis=1))
        v /= max(np.sqrt((v * v).sum()), 1e-300)
    f = v * dm
    j = int(np.argmax(np.abs(f)))
    return -f if f[j] < 0 else f


def _cooccurrence(a: np.ndarray, k: int) -> np.ndarray:
    """Counts of unequal 4-neighbour index pairs, (k, k) float64 (not symmetrized).

    Images up to 512 rows: every horizontal and vertical pair. Taller: the
    pairs of every ``ceil(H / 512)``-th row and row pair (bounded cost).
    """
    h = a.shape[0]
    step = max(1, -(-h // 512))
    parts = []
    for x, y in ((a[::step, 1:], a[::step, :-1]), (a[step::step], a[:-step:step])):
        m = x != y
        parts.append(x[m].astype(np.int32) * k + y[m])
    pairs = np.concatenate(parts)
    return np.bincount(pairs, minlength=k * k).reshape(k, k).astype(np.float64)


def _runs(flat: np.ndarray):
    """Raster-order runs of a 1-D uint8 array: (start flags bool (N,), values (R,))."""
    starts = np.empty(flat.size, bool)
    starts[0] = True
    np.not_equal(flat[1:], flat[:-1], out=starts[1:])
    return starts, flat[starts]


def _split_lengths(starts_flags: np.ndarray, values: np.ndarray):
    """Run lengths split into pieces of at most 255: (lengths uint8 (R',), values uint8 (R',))."""
    pos = np.flatnonzero(starts_flags)
    ln = np.diff(np.append(pos, starts_flags.size))
    if ln.max() <= _MAX_RUN:
        return ln.astype(np.uint8), values
    pieces = (ln + _MAX_RUN - 1) // _MAX_RUN
    vals = np.repeat(values, pieces)
    out = np.full(int(pieces.sum()), _MAX_RUN, np.uint8)
    last = np.cumsum(pieces) - 1
    out[last] = (ln - _MAX_RUN * (pieces - 1)).astype(np.uint8)
    return out, vals


SEGMENT = 1024     # RANKS: the context chain restarts every SEGMENT pixels (decoder lanes)
_LIST_MIN = 3      # RANKS encoder: a symbol is listed for a context if seen >= this often there


@functools.lru_cache(maxsize=None)
def default_order(k: int) -> np.ndarray:
    """RANKS default order, (k, k) uint8: row ``c`` is c, c-1, c+1, c-2, c+2, ... within 0..k-1."""
    steps = np.zeros(2 * k - 1, np.int16)
    steps[1::2] = -np.arange(1, k, dtype=np.int16)
    steps[2::2] = np.arange(1, k, dtype=np.int16)
    order = np.empty((k, k), np.uint8)
    for c in range(k):  # O(k) scratch per row: the decoder's memory stays small for tiny images
        cand = steps + c
        order[c] = cand[(cand >= 0) & (cand < k)]
    order.flags.writeable = False
    return order


def rank_contexts(codes: np.ndarray) -> np.ndarray:
    """RANKS context of every pixel of ``codes`` (N,) uint8 in coding order: the code before it,
    0 every SEGMENT pixels."""
    ctx = np.empty_like(codes)
    ctx[1:] = codes[:-1]
    ctx[::SEGMENT] = 0
    return ctx


def rank_order(k: int, lists) -> np.ndarray:
    """Symbol order per context, (k, k) uint8: ``lists[c]`` (default-order positions) first,
    then the other symbols in default order. ``order[c, r]`` is the code of rank ``r``."""
    dflt = default_order(k)
    order = dflt.copy()
    rest = np.empty(k, bool)
    for c, pos in enumerate(lists):
        if len(pos):
            pos = np.asarray(pos, np.intp)
            rest.fill(True)
            rest[pos] = False
            m = len(pos)
            order[c, :m] = dflt[c, pos]
            order[c, m:] = dflt[c, rest]
    return order


def _rank_lists(codes: np.ndarray, k: int) -> list:
    """Encoder's table: per context, the default-order positions of the symbols seen there at
    least ``_LIST_MIN`` times, most frequent first (ties: default order), without the tail
    that the default order gives anyway; at most min(k - 1, 255) entries."""
    counts = np.bincount(rank_contexts(codes).astype(np.intp) * k + codes, minlength=k * k).reshape(k, k)
    dflt = default_order(k).astype(np.intp)
    by_pos = np.take_along_axis(counts, dflt, axis=1)  # by_pos[c, p]: count of symbol dflt[c, p]
    lists = []
    for c in range(k):
        row = by_pos[c]
        pos = np.flatnonzero(row >= _LIST_MIN)
        pos = pos[np.argsort(-row[pos], kind="stable")][:min(k - 1, 255)]
        # drop the tail that coincides with "the rest in default order"
        m = len(pos)
        while m and pos[m - 1] == _first_unlisted(pos[:m - 1], k):
            m -= 1
        lists.append(pos[:m])
    return lists


def _first_unlisted(pos: np.ndarray, k: int) -> int:
    seen = np.zeros(k, bool)
    seen[pos] = True
    return int(np.argmin(seen))


def _rank_table_bytes(lists) -> bytes:
    return b"".join(bytes([len(p)]) + np.asarray(p, np.uint8).tobytes() for p in lists)


def to_ranks(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Ranks of ``codes`` (N,) uint8 under ``order`` (k, k): the RANKS forward transform."""
    k = order.shape[0]
    rank = np.empty((k, k), np.uint8)
    np.put_along_axis(rank, order.astype(np.intp), np.broadcast_to(np.arange(k, dtype=np.uint8), (k, k)), axis=1)
    return rank.ravel()[rank_contexts(codes).astype(np.intp) * k + codes]


def from_ranks(ranks: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_ranks`: codes (N,) uint8 from ranks (N,) uint8 (every rank < k).

    Each run of SEGMENT pixels is a chain (a pixel's context is the code before it), and the
    chains are independent: step ``j`` decodes pixel ``j`` of every segment at once.
    """
    k = order.shape[0]
    n = ranks.size
    table = order.ravel()
    lanes = -(-n // SEGMENT)
    steps = min(n, SEGMENT)
    if lanes < 16:  # few chains: plain Python is quicker than numpy calls on tiny arrays
        t = table.tolist()
        r = ranks.tolist()
        out = bytearray(n)
        for i in range(n):
            out[i] = t[(0 if i % SEGMENT == 0 else out[i - 1]) * k + r[i]]
        return np.frombuffer(out, np.uint8)
    rt = np.zeros(lanes * SEGMENT, np.uint16)
    rt[:n] = ranks
    rt = np.ascontiguousarray(rt.reshape(lanes, SEGMENT).T)  # (SEGMENT, lanes)
    out = np.empty((SEGMENT, lanes), np.uint8)
    np.take(table, rt[0], out=out[0])  # context 0
    idx = np.empty(lanes, np.uint16)
    for j in range(1, steps):
        np.multiply(out[j - 1], k, out=idx, dtype=np.uint16)
        idx += rt[j]
        np.take(table, idx, out=out[j])
    return out.T.ravel()[:n]


def coding_name(head: bytes) -> str:
    """The coding named by a payload's first bytes (method, flags), e.g. ``"runs-bitmap-perm"``,
    ``"ranks-zlib-columns-perm"``; ``"method N"`` for an unknown method."""
    if not head:
        return "empty"
    method = head[0]
    names = {METHOD_STORED: "stored", METHOD_ZLIB: "zlib", METHOD_LZMA2: "lzma2", METHOD_RUNS: "runs",
             METHOD_RANKS: "ranks"}
    if method not in names:
        return f"method {method}"
    name = names[method]
    if method >= METHOD_LZMA2 and len(head) > 1:
        flags = head[1]
        if method == METHOD_RUNS:
            name += "-bitmap" if flags & FLAG_BITMAP else "-lengths"
        if method == METHOD_RANKS:
            name += ("-zlib" if flags & FLAG_ZSTREAM else "-lzma2") + ("-columns" if flags & FLAG_COLUMNS else "")
        if flags & FLAG_PERM:
            name += "-perm"
    return name


# ----------------------------------------------------------------------------- encode

def encode(indices: np.ndarray, palette_size: int, *, level: int | None = None) -> bytes:
    """Encode an index map into payload bytes.

    Parameters
    ----------
    indices : ndarray, shape (H, W), dtype uint8
        Palette indices, every value < ``palette_size``.
    palette_size : int
        Number of palette entries, 1..256.
    level : int or None
        Effort 0..9; None means 6.  0: STORED.  1..3: ZLIB at that level.
        4..8: RUNS with run lengths; from 6 also, when runs are dense (>= 1
        run per 4 pixels), the run-start bitmap variant, LZMA2 over the raw
        indices and RANKS (LZMA2 and Huffman ranks), with the palette
        permutation when palette_size > 64 (RANKS: > 2).  Above 2**20
        pixels, levels 6..8 work in bounded time: sparse maps get RUNS;
        dense maps get Huffman RANKS unless RUNS or raw LZMA2 is at least 8%
        smaller on a sample of rows (levels 7..8: the smallest on the
        sample, LZMA2 RANKS included); only the winner is coded in full.
        9: every method and variant (slow on big images).  STORED is always
        a candidate.

    Returns
    -------
    bytes
        The smallest payload among the candidates (ties: lowest method id,
        then the order tried); deterministic.
    """
    a = _check_indices(indices, palette_size)
    level = check_level(level)
    cands = _candidates(a, int(palette_size), int(level))
    best = min(range(len(cands)), key=lambda i: (len(cands[i]), cands[i][0], i))
    return cands[best]


def check_level(level, name: str = "level") -> int:
    """The effort level, 0..9 (None: the default 6); ValueError naming ``name`` otherwise."""
    if level is None:
        return 6
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"{name} must be None or an int in 0..9, got {level!r}")
    return int(level)


_BIG = 1 << 20        # pixels; above this, level 6..8 picks the method on a sample
_SAMPLE_ROWS = 4      # bands sampled ...
_SAMPLE_PIXELS = 1 << 17  # ... totalling about this many pixels


class _RunsJob:
    """A RUNS (run lengths) payload being coded."""

    def __init__(self, perm, lens: np.ndarray, lvals: np.ndarray, preset: int):
        self.perm = perm
        self.lens = _lzma2_async(lens.tobytes(), preset)
        self.vals = _lzma2_async((lvals if perm is None else perm[lvals]).tobytes(), preset,
                                 0 if perm is None else 4)

    def result(self) -> bytes:
        flags = 0 if self.perm is None else FLAG_PERM
        ptab = b"" if self.perm is None else self.perm.tobytes()
        lz = self.lens.result()
        return bytes([METHOD_RUNS, flags]) + ptab + struct.pack("<I", len(lz)) + lz + self.vals.result()


class _RawJob:
    """An LZMA2 (raw codes) payload being coded."""

    def __init__(self, perm, flat: np.ndarray, preset: int):
        self.perm = perm
        self.body = _lzma2_async((flat if perm is None else perm[flat]).tobytes(), preset,
                                 0 if perm is None else 4)

    def result(self) -> bytes:
        flags = 0 if self.perm is None else FLAG_PERM
        ptab = b"" if self.perm is None else self.perm.tobytes()
        return bytes([METHOD_LZMA2, flags]) + ptab + self.body.result()


def _huffman(raw: bytes) -> bytes:
    """A zlib stream of ``raw`` with Huffman coding only (no matches), in 32K-symbol blocks.

    On rank streams this is as small as LZMA2 (the context did the modelling: what is left is
    nearly memoryless) and both ways an order of magnitude faster."""
    co = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return co.compress(raw) + co.flush()


class _Ranked:
    """Codes in coding order turned into RANKS data, once for both stream kinds: the table
    (``lists``, default: the encoder's choice for these codes), the coded table, the ranks."""

    def __init__(self, codes: np.ndarray, k: int, preset: int, lists=None):
        self.lists = _rank_lists(codes, k) if lists is None else lists
        self.table = _lzma2(_rank_table_bytes(self.lists), preset, dict_for=k * k)
        self.ranks = to_ranks(codes, rank_order(k, self.lists)).tobytes()


class _RanksJob:
    """A RANKS payload being coded: the rank table and the ranks of ``codes`` (an array, or a
    :class:`_Ranked` shared between jobs) under it; the ranks stream as Huffman-only zlib
    (``huffman``, flag ZSTREAM) or LZMA2. With ``columns`` (flag COLUMNS) ``codes`` is the map in
    column-major order (``a.T.ravel()``)."""

    def __init__(self, perm, codes, k: int, preset: int, lists=None, huffman: bool = False,
                 columns: bool = False):
        self.perm, self.huffman, self.columns = perm, huffman, columns
        ranked = codes if isinstance(codes, _Ranked) else _Ranked(codes, k, preset, lists)
        self.table = ranked.table
        self.ranks = _Done(_huffman(ranked.ranks)) if huffman else _lzma2_async(ranked.ranks, preset, 0, True)

    def result(self) -> bytes:
        flags = ((0 if self.perm is None else FLAG_PERM) | (FLAG_ZSTREAM if self.huffman else 0)
                 | (FLAG_COLUMNS if self.columns else 0))
        ptab = b"" if self.perm is None else self.perm.tobytes()
        tz = self.table
        return bytes([METHOD_RANKS, flags]) + ptab + struct.pack("<I", len(tz)) + tz + self.ranks.result()


_SLOW_GAIN = 0.92  # level 6, big dense maps: a slow coding must be this much smaller to be chosen


def _encode_big(a: np.ndarray, k: int, starts: np.ndarray, values: np.ndarray, preset: int,
                level: int) -> bytes:
    """Level 6..8 on a big map, in bounded time: only the winner of a trial on a sample is coded
    in full (the bitmap variant, slower to decode, is not used).

    Sparse runs (< 1 run per 4 pixels): RUNS (run lengths). Dense: RANKS with Huffman-coded
    ranks in rows and in columns (fast both ways), RUNS and raw LZMA2 (several times slower to
    encode: LZMA2 with optimal parsing over about a byte per pixel) are coded on
    ``_SAMPLE_ROWS`` evenly spaced bands of rows (of columns, for RANKS in columns). Level 6 takes a
    slow coding only if it is smaller than ``_SLOW_GAIN`` times the best Huffman RANKS; levels 7..8
    take the smallest, RANKS with LZMA2 included.
    """
    flat = a.ravel()
    if values.size * 4 < flat.size:
        perm = suggest_order(a, k) if k > 64 else None
        return _RunsJob(perm, *_split_lengths(starts, values), preset).result()
    spectral = suggest_order(a, k)  # (the identity for k <= 2: no PERM then)
    rperm = spectral if k > 64 else None
    rank_perm = spectral if k > 2 else None
    trials, full = {}, {}
    for cols in (False, True):  # RANKS in rows (context: the left pixel) and in columns (the one above)
        m = np.ascontiguousarray(a.T) if cols else a
        codes = spectral[m.ravel()]
        lists = _rank_lists(codes, k)
        sample = _sample_rows(m)
        ranked = _Ranked(spectral[sample], k, preset, lists)
        for z in (True, False) if level >= 7 else (True,):
            name = ("huffman" if z else "lzma") + ("-columns" if cols else "")
            trials[name] = _RanksJob(rank_perm, ranked, k, preset, huffman=z, columns=cols)
            full[name] = (codes, lists, z, cols, sample.size)
    sample = _sample_rows(a)
    s_starts, s_values = _runs(sample)
    trials["raw"] = _RawJob(rperm, sample, preset)
    trials["runs"] = _RunsJob(rperm, *_split_lengths(s_starts, s_values), preset)
    size = {}
    for name, job in trials.items():
        size[name] = len(job.result())
        if name in full:  # the rank table covers the whole map: count only the sample's share of it
            size[name] -= len(job.table) * (1 - full[name][4] / flat.size)
    if level == 6:
        for name in ("raw", "runs"):
            size[name] /= _SLOW_GAIN
    best = min(size, key=size.get)
    if best in full:
        codes, lists, z, cols, _ = full[best]
        return _RanksJob(rank_perm, codes, k, preset, lists, huffman=z, columns=cols).result()
    if best == "raw":
        return _RawJob(rperm, flat, preset).result()
    return _RunsJob(rperm, *_split_lengths(starts, values), preset).result()


def _sample_rows(m: np.ndarray) -> np.ndarray:
    """``_SAMPLE_ROWS`` evenly spaced bands of rows of ``m`` (about ``_SAMPLE_PIXELS`` in all), flat."""
    h, w = m.shape
    band = max(1, _SAMPLE_PIXELS // (_SAMPLE_ROWS * w))
    rows = np.concatenate([np.arange(y, min(h, y + band))
                           for y in np.linspace(0, max(0, h - band), _SAMPLE_ROWS).astype(int)])
    return m[np.unique(rows)].ravel()


def _candidates(a: np.ndarray, k: int, level: int, exhaustive: bool = False) -> list:
    """All payloads tried at ``level`` (every method and variant if ``exhaustive``)."""
    flat = a.ravel()
    raw = flat.tobytes()
    n = flat.size
    cands = [bytes([METHOD_STORED]) + raw]
    if level == 0 and not exhaustive:
        return cands
    if 1 <= level <= 3 or level == 9 or exhaustive:
        cands.append(bytes([METHOD_ZLIB]) + zlib.compress(raw, min(level, 9) or 1))
    if level <= 3 and not exhaustive:
        return cands
    preset = 6 if level >= 6 else 4
    starts, values = _runs(flat)
    if 6 <= level <= 8 and not exhaustive and n > _BIG:
        return cands + [_encode_big(a, k, starts, values, preset, level)]
    spectral = suggest_order(a, k) if (exhaustive or level >= 6) else None
    if exhaustive or level == 9:
        perms = [None, spectral]
    elif level >= 6 and k > 64:
        perms = [spectral]
    else:
        perms = [None]
    lens, lvals = _split_lengths(starts, values)
    lens_z = _lzma2_async(lens.tobytes(), preset)
    dense = level >= 6 and values.size * 4 >= n  # >= 1 run per 4 pixels: raw coding may win
    bitmap_z = None
    if exhaustive or level == 9 or dense:
        bitmap_z = _lzma2_async(np.packbits(starts).tobytes(), preset, 0, True)
    vcache = {}

    def vals_z(v: np.ndarray, lc: int):
        key = (v.tobytes(), lc)
        if key not in vcache:
            vcache[key] = _lzma2_async(key[0], preset, lc)
        return vcache[key]

    # start every compression first (big ones run in parallel), then assemble in order
    ranks = []
    if exhaustive or level == 9 or dense:
        by_col = np.ascontiguousarray(a.T).ravel()
        for p in ((None, spectral) if exhaustive or level == 9 else (spectral if k > 2 else None,)):
            for cols, src in ((False, flat), (True, by_col)):
                ranked = _Ranked(src if p is None else p[src], k, preset)
                ranks += [_RanksJob(p, ranked, k, preset, huffman=z, columns=cols) for z in (False, True)]
    jobs = []
    for perm in perms:
        lc = 0 if perm is None else 4
        jobs.append(vals_z(lvals if perm is None else perm[lvals], lc))
        if bitmap_z is not None:
            jobs.append(vals_z(values if perm is None else perm[values], lc))
        if level == 9 or exhaustive or dense:
            jobs.append(_lzma2_async(raw if perm is None else perm[flat].tobytes(), preset, lc))
    jobs = iter(jobs)
    lens_z = lens_z.result()
    if bitmap_z is not None:
        bitmap_z = bitmap_z.result()

    for perm in perms:
        flags = 0 if perm is None else FLAG_PERM
        ptab = b"" if perm is None else perm.tobytes()
        cands.append(bytes([METHOD_RUNS, flags]) + ptab + struct.pack("<I", len(lens_z))
                     + lens_z + next(jobs).result())
        if bitmap_z is not None:
            cands.append(bytes([METHOD_RUNS, flags | FLAG_BITMAP]) + ptab
                         + struct.pack("<I", len(bitmap_z)) + bitmap_z + next(jobs).result())
        if level == 9 or exhaustive or dense:
            cands.append(bytes([METHOD_LZMA2, flags]) + ptab + next(jobs).result())
    return cands + [job.result() for job in ranks]


# ----------------------------------------------------------------------------- decode

class _Stream:
    """Result of bounded stream decompression."""
    __slots__ = ("buf", "complete")

    def __init__(self, buf: bytes, complete: bool):
        self.buf = buf
        self.complete = complete


_MIN_PIECE = 1 << 20  # decoded bytes: pieces split for parallel decoding are at least this long


def _lzma2_pieces(data: memoryview, start: int, end: int, cap: int):
    """Split a complete LZMA2 stream at its full resets, for decoding the pieces side by side.

    Walks the chunk headers of data[start:end] (no decoding). A chunk with control byte
    0xE0..0xFF resets dictionary, state and properties, so the chunks from there on do not
    depend on anything before; consecutive pieces are merged up to at least ``_MIN_PIECE``
    decoded bytes. Returns ``[(piece_start, piece_end, unpacked_size), ...]``, or
    None when the walk finds anything unusual (bad control byte, truncation, bytes after the end
    marker, more than ``cap`` bytes declared, a single piece): the caller then decodes the whole
    stream in one go, which also gives the precise error.
    """
    pieces = []
    pos = start
    piece_start, piece_size, total = start, 0, 0
    # a normal stream has chunks of up to 64 KiB packed / 2 MiB unpacked: stop walking a stream of
    # far more, smaller chunks (hostile), and let one sequential decoder take it
    chunks_left = 64 + (end - start) // 4096 + cap // (1 << 18)
    while pos < end:
        chunks_left -= 1
        if chunks_left < 0:
            return None
        control = data[pos]
        if control == 0x00:
            if pos + 1 != end:
                return None
            pieces.append((piece_start, pos, piece_size))
            return pieces if len(pieces) > 1 and total <= cap else None
        if control in (0x01, 0x02):
            if pos + 3 > end:
                return None
            unpacked = (data[pos + 1] << 8 | data[pos + 2]) + 1
            step = 3 + unpacked
        elif control >= 0x80:
            if pos + 5 > end:
                return None
            unpacked = ((control & 0x1F) << 16 | data[pos + 1] << 8 | data[pos + 2]) + 1
            step = 5 + (data[pos + 3] << 8 | data[pos + 4]) + 1 + (control >= 0xC0)
            if control >= 0xE0 and pos > start and piece_size >= _MIN_PIECE:  # small ones merge
                pieces.append((piece_start, pos, piece_size))
                piece_start, piece_size = pos, 0
        else:
            return None
        piece_size += unpacked
        total += unpacked
        if total > cap:
            return None
        pos += step
    return None


def _decode_piece(piece: bytes, cap: int, size: int, then=None):
    """One piece of :func:`_lzma2_pieces` (end byte appended), optionally passed through ``then``;
    None if it does not decode to exactly ``size`` bytes (the caller falls back)."""
    try:
        # the piece starts with a dictionary reset and decodes to ``size`` bytes: no match reaches
        # further back, so a dictionary of that size decodes it exactly as the stream's own would
        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma2_filters(min(size, cap)))
        out = d.decompress(piece, size + 1)
    except (ValueError, lzma.LZMAError, MemoryError):
        return None
    if not d.eof or len(out) != size:
        return None
    return out if then is None else then(out)


def _parallel_pieces(data: memoryview, start: int, end: int, cap: int, then=None, align: int = 1):
    """Decode a complete multi-piece LZMA2 stream piece by piece on the pool, each piece passed
    through ``then`` (in the worker); None unless it has several pieces, all but the last a
    multiple of ``align`` bytes long, and every one decodes cleanly."""
    if end - start < _PARALLEL_MIN // 4 or (os.cpu_count() or 1) < 2:
        return None
    pieces = _lzma2_pieces(data, start, end, cap)
    if not pieces or any(size % align for _, _, size in pieces[:-1]):
        return None
    jobs = [_submit(_decode_piece, bytes(data[a:b]) + b"\x00", cap, size, then)
            for a, b, size in pieces]
    parts = []
    for j in jobs:  # wait for every job: none is left running
        try:
            parts.append(j.result())
        except Exception:  # noqa: BLE001  (the sequential fallback reports the problem)
            parts.append(None)
    return None if any(p is None for p in parts) else parts


def _inflate(kind: str, data: memoryview, start: int, end: int, cap: int, what: str,
             parallel: bool = True) -> _Stream:
    """Decompress the stream occupying exactly data[start:end], producing at most ``cap`` bytes.

    A big LZMA2 stream made of independently coded pieces (see :func:`_lzma2_pieces`) is decoded
    piece by piece on the thread pool; anything unusual falls back to one sequential decoder.

    Raises GCPFormatError for a corrupt stream, output beyond ``cap`` or bytes
    after the stream's end.  A stream that simply stops early is returned with
    ``complete=False`` (the caller decides whether that is an error).
    """
    if kind == "lzma2" and parallel:
        parts = _parallel_pieces(data, start, end, cap)
        if parts is not None:
            return _Stream(bytearray().join(parts), True)
    if kind == "zlib":
        d = zlib.decompressobj()
        err = zlib.error
    else:
        try:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma2_filters(cap))
        except (ValueError, lzma.LZMAError, MemoryError) as e:
            raise GCPFormatError(f"cannot set up the LZMA2 decoder for the {what}: {e}",
                                 start) from None
        err = (lzma.LZMAError, MemoryError)
    out = bytearray()
    got = 0
    pos = start
    pending = b""
    step = 1 << 18  # output bytes per call: bounded scratch beyond the result
    last = 0
    while True:
        if kind == "zlib":
            if pending:
                chunk = pending
            elif pos < end:
                chunk = data[pos:min(end, pos + _CHUNK)]
                pos += len(chunk)
            elif last:  # input all fed; zlib may still hold output (limited by step)
                chunk = b""
            else:
                break
            try:
                piece = d.decompress(chunk, min(step, cap + 1 - got))
            except err as e:
                raise GCPFormatError(f"corrupt {what}: {e}", pos - len(chunk)) from None
            pending = d.unconsumed_tail
            unused = len(d.unused_data)
        else:
            if d.needs_input:
                if pos >= end:
                    break
                chunk = data[pos:min(end, pos + _CHUNK)]
                pos += len(chunk)
            else:
                chunk = b""
            try:
                piece = d.decompress(chunk, min(step, cap + 1 - got))
            except err as e:
                raise GCPFormatError(f"corrupt {what}: {e}", pos - len(chunk)) from None
            unused = len(d.unused_data)
        got += len(piece)
        last = len(piece)
        out += piece
        if got > cap:
            raise GCPFormatError(f"{what} decodes to more than the {cap} bytes the image needs",
                                 pos - len(pending))
        if d.eof:
            stream_end = pos - unused - len(pending)
            if stream_end < end:
                raise GCPFormatError(f"unexpected bytes after the end of the {what}", stream_end)
            return _Stream(out, True)
    return _Stream(out, False)


def _inflate_n(kind: str, mv: memoryview, start: int, n: int, what: str, partial: bool) -> np.ndarray:
    """The stream from ``start`` to the end of the payload, which must decode to exactly ``n``
    bytes: (got,) uint8 with got == n, or got <= n when ``partial`` (truncated data)."""
    st = _inflate(kind, mv, start, len(mv), n, what)
    if not partial and (len(st.buf) < n or not st.complete):
        raise GCPFormatError(f"truncated {what}: {len(st.buf)} of {n} bytes"
                             + ("" if len(st.buf) < n else ", end marker missing"), len(mv))
    return np.frombuffer(st.buf, np.uint8, count=min(len(st.buf), n))


def _read_perm(mv: memoryview, pos: int, k: int, partial: bool):
    if len(mv) < pos + k:
        if partial:
            return None, len(mv)
        raise GCPFormatError("truncated payload: palette permutation incomplete", len(mv))
    perm = np.frombuffer(mv[pos:pos + k], np.uint8)
    if int(perm.max()) >= k or np.unique(perm).size != k:
        raise GCPFormatError("palette permutation is not a bijection of 0..k-1", pos)
    inv = np.empty(k, np.uint8)
    inv[perm] = np.arange(k, dtype=np.uint8)
    return inv, pos + k


def decode(data, width: int, height: int, palette_size: int, *, partial: bool = False) -> np.ndarray:
    """Decode a payload made by :func:`encode`.

    Parameters
    ----------
    data : bytes, bytearray or memoryview
        The payload.
    width, height : int
        Image size (>= 1), validated by the container.
    palette_size : int
        1..256; every decoded index must be below it.
    partial : bool
        If True, truncated data yields the decodable part with the rest 0
        instead of an error.  Corrupt data still raises.

    Returns
    -------
    ndarray, shape (height, width), dtype uint8

    Raises
    ------
    GCPFormatError
        On any malformed data, with ``offset`` = byte offset in ``data``.
    """
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    k = _check_k(palette_size)
    mv = memoryview(data).cast("B")
    width, height = int(width), int(height)
    n = width * height
    size = len(mv)
    if size < 1:
        if partial:
            return _zeros(n).reshape(height, width)
        raise GCPFormatError("empty payload: method byte missing", 0)
    method = mv[0]
    if method > METHOD_RANKS:
        raise GCPFormatError(f"unknown payload method {method}", 0)
    # the output is allocated only once the data has shown it can fill it (or partial=True)
    inv = None
    if method == METHOD_STORED:
        body = mv[1:]
        if len(body) > n:
            raise GCPFormatError("unexpected bytes after the stored indices", 1 + n)
        if len(body) < n and not partial:
            raise GCPFormatError(f"truncated stored indices: {len(body)} of {n} bytes", size)
        out = _zeros(n)
        out[:len(body)] = np.frombuffer(body, np.uint8)
        data_start = 1
    elif method in (METHOD_ZLIB, METHOD_LZMA2):
        pos = 1
        if method == METHOD_LZMA2:
            if size < 2:
                if partial:
                    return _zeros(n).reshape(height, width)
                raise GCPFormatError("truncated payload: flags byte missing", size)
            flags = mv[1]
            if flags & ~FLAG_PERM:
                raise GCPFormatError(f"reserved flag bits set in LZMA2 flags 0x{flags:02x}", 1)
            pos = 2
            if flags & FLAG_PERM:
                inv, pos = _read_perm(mv, pos, k, partial)
                if inv is None:
                    return _zeros(n).reshape(height, width)
        kind = "zlib" if method == METHOD_ZLIB else "lzma2"
        buf = _inflate_n(kind, mv, pos, n, f"{kind} index stream", partial)
        got = len(buf)
        out = _zeros(n) if got < n else np.empty(n, np.uint8)
        out[:got] = buf
        data_start = pos
        if inv is not None:
            # codes >= k would index past inv: check first; map only the decoded prefix
            # (pixels a truncated stream did not reach stay index 0)
            if got and int(out[:got].max()) >= k:
                i = int(np.argmax(out[:got] >= k))
                raise GCPFormatError(f"stored code {int(out[i])} >= palette_size {k} at pixel {i}",
                                     data_start)
            out[:got] = inv[out[:got]]
            return out.reshape(height, width)
    elif method == METHOD_RUNS:
        return _decode_runs(mv, n, k, partial).reshape(height, width)
    else:
        return _decode_ranks(mv, width, height, k, partial).reshape(height, width)
    if k < 256 and int(out.max()) >= k:
        i = int(np.argmax(out >= k))
        off = 1 + i if method == METHOD_STORED else data_start
        raise GCPFormatError(f"index {int(out[i])} >= palette_size {k} at pixel {i}", off)
    return out.reshape(height, width)


def _zeros(n: int) -> np.ndarray:
    """The (n,) uint8 output, zero-filled; an impossible size is a format error, not MemoryError."""
    try:
        return np.zeros(n, np.uint8)
    except (MemoryError, ValueError):
        raise GCPFormatError(f"cannot allocate the {n}-pixel index map", 0) from None


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)
_BLOCK = 1 << 16  # pixels (bitmap) or runs (lengths) expanded per step: bounded scratch memory


def _read_front(mv: memoryview, k: int, partial: bool, name: str, allowed: int, first: str):
    """Flags, optional permutation and the uint32 length of the first stream (RUNS, RANKS).

    Returns ``(flags, inv, start, length)`` with ``start`` the first stream's offset, or None
    when ``partial`` and the payload stops before them (the caller returns all zeros).
    """
    size = len(mv)
    if size < 2:
        if partial:
            return None
        raise GCPFormatError("truncated payload: flags byte missing", size)
    flags = mv[1]
    if flags & ~allowed:
        raise GCPFormatError(f"reserved flag bits set in {name} flags 0x{flags:02x}", 1)
    pos = 2
    inv = None
    if flags & FLAG_PERM:
        inv, pos = _read_perm(mv, pos, k, partial)
        if inv is None:
            return None
    if size < pos + 4:
        if partial:
            return None
        raise GCPFormatError(f"truncated payload: {first} length missing", size)
    return flags, inv, pos + 4, int.from_bytes(mv[pos:pos + 4], "little")


def _decode_runs(mv: memoryview, n: int, k: int, partial: bool) -> np.ndarray:
    size = len(mv)
    front = _read_front(mv, k, partial, "RUNS", FLAG_PERM | FLAG_BITMAP, "structure stream")
    if front is None:
        return _zeros(n)
    flags, inv, pos, slen = front
    s_start = pos
    s_end = pos + slen
    if s_end > size:
        if not partial:
            raise GCPFormatError(
                f"truncated payload: structure stream needs {slen} bytes, {size - pos} left", size)
        s_end = size
    bitmap = bool(flags & FLAG_BITMAP)
    cap = (n + 7) // 8 if bitmap else n
    ahead = None  # complete data: decode the values stream (at most n bytes) side by side
    if not partial and size - s_end >= _PARALLEL_MIN // 16 and (os.cpu_count() or 1) >= 2:
        ahead = _submit(_inflate, "lzma2", mv, s_end, size, n, "values stream", False)
    try:
        return _runs_from(mv, n, k, partial, flags, inv, s_start, s_end, cap, ahead)
    finally:  # whatever happened, no decoding is left running once this returns or raises
        if ahead is not None and not ahead.cancel():
            concurrent.futures.wait([ahead])


def _runs_from(mv, n, k, partial, flags, inv, s_start, s_end, cap, ahead) -> np.ndarray:
    """RUNS after its fixed fields: the structure stream, the values stream (``ahead``: a job
    already decoding it, or None), the expansion."""
    size = len(mv)
    bitmap = bool(flags & FLAG_BITMAP)
    st = _inflate("lzma2", mv, s_start, s_end, cap, "structure stream")
    if not st.complete and not partial:
        raise GCPFormatError("truncated structure stream", s_end)
    sbuf = np.frombuffer(st.buf, np.uint8)
    if bitmap:
        if st.complete and sbuf.size != cap:
            raise GCPFormatError(f"run-start bitmap has {sbuf.size} bytes, expected {cap}", s_start)
        npix = min(8 * sbuf.size, n)
        if sbuf.size == cap and n % 8 and sbuf[-1] & ((1 << (8 - n % 8)) - 1):
            raise GCPFormatError("non-zero padding bits after the run-start bitmap", s_start)
        if npix and not sbuf[0] & 0x80:
            raise GCPFormatError("run-start bitmap does not start a run at pixel 0", s_start)
        nruns = 0
        for b0 in range(0, sbuf.size, _BLOCK):
            nruns += int(_POPCOUNT[sbuf[b0:b0 + _BLOCK]].sum(dtype=np.int64))
        lengths = None
        covered = npix
    else:
        lengths = sbuf
        if lengths.size and not lengths.all():
            raise GCPFormatError("run length 0 in the structure stream", s_start)
        total = int(lengths.sum(dtype=np.int64))
        if total > n or (st.complete and total != n):
            raise GCPFormatError(f"run lengths cover {total} pixels, image has {n}", s_start)
        nruns = lengths.size
        covered = total
    v_start = s_end
    if v_start >= size and nruns:
        if partial:
            return _zeros(n)
        raise GCPFormatError("truncated payload: values stream missing", size)
    vs = None
    if ahead is not None:
        try:
            vs = ahead.result()
        except GCPFormatError:
            vs = None
        if vs is not None and (not vs.complete or len(vs.buf) != nruns):
            vs = None  # not clean: decode again below, bounded by R, for the exact error
    if vs is None:
        vs = _inflate("lzma2", mv, v_start, size, max(nruns, 1), "values stream")
    vals = np.frombuffer(vs.buf, np.uint8)
    if vs.complete and vals.size != nruns:
        raise GCPFormatError(f"values stream has {vals.size} values for {nruns} runs", v_start)
    if not vs.complete and not partial:
        raise GCPFormatError("truncated values stream", size)
    m = min(nruns, vals.size)
    if m and int(vals[:m].max()) >= k:
        i = int(np.argmax(vals[:m] >= k))
        raise GCPFormatError(f"run {i} has code {int(vals[i])} >= palette_size {k}", v_start)
    if inv is not None:
        vals = inv[vals[:m]]
    out = _zeros(n) if (m < nruns or covered < n) else np.empty(n, np.uint8)
    if not m:
        return out
    if bitmap:
        # run index of pixel p = (number of run starts at or before p) - 1
        seen = 0
        for p0 in range(0, covered, _BLOCK):
            p1 = min(covered, p0 + _BLOCK)
            bits = np.unpackbits(sbuf[p0 // 8:(p1 + 7) // 8], count=p1 - p0)
            ridx = np.cumsum(bits, dtype=np.int32)
            ridx += seen - 1
            seen = int(ridx[-1]) + 1
            if seen > m:  # partial: values ran out inside this block
                ok = ridx < m
                out[p0:p1][ok] = vals[ridx[ok]]
                break
            out[p0:p1] = vals[ridx]
        return out
    p = 0
    for r0 in range(0, m, _BLOCK):
        r1 = min(m, r0 + _BLOCK)
        piece = np.repeat(vals[r0:r1], lengths[r0:r1])
        out[p:p + piece.size] = piece
        p += piece.size
    return out


def _parse_rank_table(buf: bytes, k: int, offset: int) -> list:
    """The RANKS table: for each context 0..k-1, a count m (< k) and m distinct positions (< k)."""
    lists = []
    pos = 0
    for c in range(k):
        if pos >= len(buf):
            raise GCPFormatError(f"rank table ends before context {c} of {k}", offset)
        m = buf[pos]
        if m >= k:
            raise GCPFormatError(f"rank table lists {m} symbols for context {c}, at most {k - 1}", offset)
        if pos + 1 + m > len(buf):
            raise GCPFormatError(f"rank table ends inside context {c}", offset)
        lists.append(np.frombuffer(buf, np.uint8, count=m, offset=pos + 1))
        pos += 1 + m
    if pos != len(buf):
        raise GCPFormatError(f"{len(buf) - pos} unexpected bytes after the rank table", offset)
    # every position < k and no repeat within a list: one count over all (context, position) pairs
    ctx = np.repeat(np.arange(k), [len(p) for p in lists])
    pairs = np.concatenate(lists).astype(np.intp) if ctx.size else np.zeros(0, np.intp)
    bad = pairs >= k
    if not bad.any():
        counts = np.bincount(ctx * k + pairs, minlength=k * k)
        bad = counts[ctx * k + pairs] > 1
    if bad.any():
        c = int(ctx[np.argmax(bad)])
        raise GCPFormatError(f"rank table list of context {c} has a position >= {k} or a repeat", offset)
    return lists


def _decode_ranks(mv: memoryview, width: int, height: int, k: int, partial: bool) -> np.ndarray:
    out = _decode_rank_codes(mv, width * height, k, partial)
    if len(mv) > 1 and mv[1] & FLAG_COLUMNS and width > 1 and height > 1:
        out = np.ascontiguousarray(out.reshape(width, height).T).ravel()
    return out


def _decode_rank_codes(mv: memoryview, n: int, k: int, partial: bool) -> np.ndarray:
    """The N indices of a RANKS payload in its own order (column-major with COLUMNS)."""
    size = len(mv)
    front = _read_front(mv, k, partial, "RANKS", FLAG_PERM | FLAG_ZSTREAM | FLAG_COLUMNS, "rank table")
    if front is None:
        return _zeros(n)
    flags, inv, t_start, tlen = front
    kind = "zlib" if flags & FLAG_ZSTREAM else "lzma2"
    t_end = t_start + tlen
    if t_end > size:
        if not partial:
            raise GCPFormatError(
                f"truncated payload: rank table stream needs {tlen} bytes, {size - t_start} left", size)
        return _zeros(n)
    ts = _inflate("lzma2", mv, t_start, t_end, k * k, "rank table stream")
    if not ts.complete:
        if t_end < size:  # its tlen bytes are all there, the payload goes on: corrupt, not short
            raise GCPFormatError("rank table stream has no end marker within its tlen bytes", t_start)
        if partial:
            return _zeros(n)
        raise GCPFormatError("truncated rank table stream", t_end)
    order = rank_order(k, _parse_rank_table(bytes(ts.buf), k, t_start))
    if t_end >= size:
        if partial:
            return _zeros(n)
        raise GCPFormatError("truncated payload: ranks stream missing", size)

    def codes_of(piece: bytes):  # in a worker: ranks -> codes, None if a rank is out of range
        r = np.frombuffer(piece, np.uint8)
        return None if r.size and int(r.max()) >= k else from_ranks(r, order)

    parts = _parallel_pieces(mv, t_end, size, n, codes_of, SEGMENT) if kind == "lzma2" else None
    if parts is not None and sum(p.size for p in parts) == n:
        out = np.concatenate(parts)
        return out if inv is None else inv[out]
    ranks = _inflate_n(kind, mv, t_end, n, "ranks stream", partial)
    got = ranks.size
    if got and int(ranks.max()) >= k:
        i = int(np.argmax(ranks >= k))
        raise GCPFormatError(f"rank {int(ranks[i])} >= palette_size {k} at pixel {i}", t_end)
    if got < n:
        ranks = np.concatenate([ranks, _zeros(n - got)])
    out = from_ranks(ranks, order)
    if inv is not None:
        out = inv[out]
    if got < n:
        out[got:] = 0
    return out
