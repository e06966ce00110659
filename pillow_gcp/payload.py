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

The optional permutation ``perm`` (k bytes, a bijection of 0..k-1) maps a
palette index ``i`` to the stored code ``perm[i]``; the encoder derives it
from the index co-occurrence graph (spectral ordering, :func:`suggest_order`)
so that LZMA2's literal coder sees similar codes for neighbouring colours.

No Pillow import here: bytes in, arrays out.  Decoding never inflates past
what the image needs and raises only :class:`GCPFormatError` on bad data.
"""

from __future__ import annotations

import concurrent.futures
import lzma
import os
import struct
import zlib

import numpy as np

from .errors import GCPFormatError

__all__ = ["encode", "decode", "suggest_order",
           "METHOD_STORED", "METHOD_ZLIB", "METHOD_LZMA2", "METHOD_RUNS"]

METHOD_STORED = 0
METHOD_ZLIB = 1
METHOD_LZMA2 = 2
METHOD_RUNS = 3

FLAG_PERM = 0x01       # a k-byte permutation follows the flags byte
FLAG_BITMAP = 0x02     # RUNS only: structure is a run-start bitmap, not run lengths
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


def _lzma2_filters(decoded_size: int, preset: int = 6, lc: int = 0) -> list:
    """Filter chain: dictionary ``min(max(4096, decoded_size), 1.5 GiB)``."""
    return [{"id": lzma.FILTER_LZMA2, "preset": preset,
             "dict_size": min(max(4096, decoded_size), _MAX_DICT), "lc": lc, "lp": 0, "pb": 0}]


def _lzma2(raw: bytes, preset: int, lc: int = 0) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma2_filters(len(raw), preset, lc))


_POOL = None
_PARALLEL_MIN = 1 << 18  # bytes: smaller jobs run inline


class _Done:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # threads do not survive fork(): a child makes its own pool


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


def _lzma2_async(raw: bytes, preset: int, lc: int = 0):
    """Start an LZMA2 compression; returns an object with ``.result()``.

    liblzma releases the GIL, so big jobs run on a small thread pool (one
    thread per core, at most 4). Inputs longer than ``_PIECE`` bytes are cut
    into fixed ``_PIECE``-byte pieces coded side by side (:class:`_Spliced`);
    the output depends only on the input, never on the number of cores.
    """
    if len(raw) > _PIECE:
        view = memoryview(raw)
        return _Spliced([_lzma2_async(view[i:i + _PIECE], preset, lc) for i in range(0, len(raw), _PIECE)])
    global _POOL
    if len(raw) < _PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        return _Done(_lzma2(raw, preset, lc))
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="gcp-lzma")
    return _POOL.submit(_lzma2, raw, preset, lc)


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

    Horizontal pairs: all.  Vertical pairs: every row pair for images up to
    512 rows, every ``ceil(H / 512)``-th row pair above that (bounded cost).
    """
    h = a.shape[0]
    step = max(1, -(-h // 512))
    parts = []
    for x, y in ((a[:, 1:], a[:, :-1]), (a[step::step], a[:-step:step])):
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
        4..8: RUNS with run lengths; from 6 also the run-start bitmap
        variant and LZMA2 over the raw indices when runs are dense (>= 1 run
        per 4 pixels), all with the palette permutation when
        palette_size > 64.  Above 2**20 pixels, levels 6..8 choose between
        RUNS (run lengths) and raw LZMA2 on a sample of rows and code only
        the winner (bounded time; no bitmap variant, which decodes slower).  9: every method and variant
        (slow on big images).  STORED is always a candidate.

    Returns
    -------
    bytes
        The smallest payload among the candidates (ties: lowest method id,
        then the order tried); deterministic.
    """
    a = _check_indices(indices, palette_size)
    if level is None:
        level = 6
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"level must be None or an int in 0..9, got {level!r}")
    cands = _candidates(a, int(palette_size), int(level))
    best = min(range(len(cands)), key=lambda i: (len(cands[i]), cands[i][0], i))
    return cands[best]


_BIG = 1 << 20        # pixels; above this, level 6..8 picks the method on a sample
_SAMPLE_ROWS = 4      # bands sampled ...
_SAMPLE_PIXELS = 1 << 18  # ... totalling about this many pixels


def _runs_payload(perm, lens, lvals, preset: int) -> bytes:
    flags = 0 if perm is None else FLAG_PERM
    ptab = b"" if perm is None else perm.tobytes()
    lz = _lzma2_async(lens.tobytes(), preset)
    vz = _lzma2_async((lvals if perm is None else perm[lvals]).tobytes(), preset,
                      0 if perm is None else 4).result()
    lz = lz.result()
    return bytes([METHOD_RUNS, flags]) + ptab + struct.pack("<I", len(lz)) + lz + vz


def _lzma2_payload(perm, flat: np.ndarray, preset: int) -> bytes:
    flags = 0 if perm is None else FLAG_PERM
    ptab = b"" if perm is None else perm.tobytes()
    body = _lzma2_async((flat if perm is None else perm[flat]).tobytes(), preset, 0 if perm is None else 4)
    return bytes([METHOD_LZMA2, flags]) + ptab + body.result()


def _encode_big(a: np.ndarray, k: int, starts: np.ndarray, values: np.ndarray, preset: int) -> bytes:
    """Level 6..8 on a big map: RUNS (run lengths) or, for dense runs, raw LZMA2, whichever
    is smaller on ``_SAMPLE_ROWS`` evenly spaced bands of rows; only the winner is coded in
    full (bounded encode time; the bitmap variant, slower to decode, is not used)."""
    h, w = a.shape
    flat = a.ravel()
    perm = suggest_order(a, k) if k > 64 else None
    use_raw = False
    if values.size * 4 >= flat.size:
        band = max(1, _SAMPLE_PIXELS // (_SAMPLE_ROWS * w))
        rows = np.concatenate([np.arange(y, min(h, y + band))
                               for y in np.linspace(0, max(0, h - band), _SAMPLE_ROWS).astype(int)])
        sample = a[np.unique(rows)].ravel()
        s_starts, s_values = _runs(sample)
        s_raw = _lzma2_async((sample if perm is None else perm[sample]).tobytes(), preset,
                             0 if perm is None else 4)
        s_runs = _runs_payload(perm, *_split_lengths(s_starts, s_values), preset)
        use_raw = len(s_raw.result()) + 2 + (0 if perm is None else k) < len(s_runs)
    if use_raw:
        return _lzma2_payload(perm, flat, preset)
    return _runs_payload(perm, *_split_lengths(starts, values), preset)


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
        return cands + [_encode_big(a, k, starts, values, preset)]
    if exhaustive or level == 9:
        perms = [None, suggest_order(a, k)]
    elif level >= 6 and k > 64:
        perms = [suggest_order(a, k)]
    else:
        perms = [None]
    lens, lvals = _split_lengths(starts, values)
    lens_z = _lzma2_async(lens.tobytes(), preset)
    dense = level >= 6 and values.size * 4 >= n  # >= 1 run per 4 pixels: raw coding may win
    bitmap_z = None
    if exhaustive or level == 9 or dense:
        bitmap_z = _lzma2_async(np.packbits(starts).tobytes(), preset)
    vcache = {}

    def vals_z(v: np.ndarray, lc: int):
        key = (v.tobytes(), lc)
        if key not in vcache:
            vcache[key] = _lzma2_async(key[0], preset, lc)
        return vcache[key]

    # start every compression first (big ones run in parallel), then assemble in order
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
    return cands


# ----------------------------------------------------------------------------- decode

class _Stream:
    """Result of bounded stream decompression."""
    __slots__ = ("buf", "complete")

    def __init__(self, buf: bytes, complete: bool):
        self.buf = buf
        self.complete = complete


def _inflate(kind: str, data: memoryview, start: int, end: int, cap: int, what: str) -> _Stream:
    """Decompress the stream occupying exactly data[start:end], producing at most ``cap`` bytes.

    Raises GCPFormatError for a corrupt stream, output beyond ``cap`` or bytes
    after the stream's end.  A stream that simply stops early is returned with
    ``complete=False`` (the caller decides whether that is an error).
    """
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
    if method > METHOD_RUNS:
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
        st = _inflate(kind, mv, pos, size, n, f"{kind} index stream")
        if not partial and (len(st.buf) < n or not st.complete):
            raise GCPFormatError(
                f"truncated {kind} index stream: {len(st.buf)} of {n} bytes"
                + ("" if len(st.buf) < n else ", end marker missing"), size)
        got = min(len(st.buf), n)
        out = _zeros(n) if got < n else np.empty(n, np.uint8)
        out[:got] = np.frombuffer(st.buf, np.uint8, count=got)
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
    else:
        return _decode_runs(mv, n, k, partial).reshape(height, width)
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


def _decode_runs(mv: memoryview, n: int, k: int, partial: bool) -> np.ndarray:
    size = len(mv)
    if size < 2:
        if partial:
            return _zeros(n)
        raise GCPFormatError("truncated payload: flags byte missing", size)
    flags = mv[1]
    if flags & ~(FLAG_PERM | FLAG_BITMAP):
        raise GCPFormatError(f"reserved flag bits set in RUNS flags 0x{flags:02x}", 1)
    pos = 2
    inv = None
    if flags & FLAG_PERM:
        inv, pos = _read_perm(mv, pos, k, partial)
        if inv is None:
            return _zeros(n)
    if size < pos + 4:
        if partial:
            return _zeros(n)
        raise GCPFormatError("truncated payload: structure stream length missing", size)
    slen = int.from_bytes(mv[pos:pos + 4], "little")
    pos += 4
    s_start = pos
    s_end = pos + slen
    if s_end > size:
        if not partial:
            raise GCPFormatError(
                f"truncated payload: structure stream needs {slen} bytes, {size - pos} left", size)
        s_end = size
    bitmap = bool(flags & FLAG_BITMAP)
    cap = (n + 7) // 8 if bitmap else n
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
