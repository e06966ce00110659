"""Seeded mutation fuzzer for the .gcp decoder (stdlib + numpy; optional atheris mode).

A .gcp file arrives from strangers, so every input must end in one of:

* success: ``Image.open`` + ``load()`` give a ``P`` image of the declared size whose
  RGBA pixels equal what :func:`pillow_gcp.format.decode` says;
* ``OSError`` (this includes ``PIL.UnidentifiedImageError`` and
  :class:`pillow_gcp.errors.GCPFormatError`) or ``PIL.Image.DecompressionBombError``.

Anything else is a *finding*:

``exception``  another exception type (IndexError, ValueError, MemoryError, ...);
``slow``       one target took longer than ``--time-limit`` seconds (re-measured
               without tracemalloc before it is reported);
``hang``       a target ran past ``--hard-timeout`` (interrupted with SIGALRM);
``alloc``      the tracemalloc peak of a target exceeded
               ``alloc_per_pixel * declared_pixels + alloc_per_byte * len(file) + 3 MiB``;
``mismatch``   the Pillow plugin and ``format.decode`` disagree (pixels, palette, size,
               or one accepts what the other rejects before the end of DATA);
``contract``   a successful load broke a promise (wrong size/mode, truncated load
               that is not "decoded prefix, then index 0").

Targets run on every input: ``load`` (Image.open + load, LOAD_TRUNCATED_IMAGES off),
``decode`` (format.decode, when the declared pixel count is within the fuzz limit),
``verify`` (Image.open + verify) and, when the strict load failed with a truncation
error, ``load_truncated`` (the same with LOAD_TRUNCATED_IMAGES on).

Mutations start from valid files made with ``format.encode`` (no quantizer involved):
raw byte mutations (bit flips, interesting bytes and integers, truncation, inserted,
deleted and duplicated spans, lying chunk lengths) and structure-aware ones that
recompute lengths and CRCs so the mutation reaches the field checks and the payload
decoder (extreme HEAD values with or without a matching PLTE, DATA body flips,
inserts, deletes, truncations and splices, chunk drops, duplicates, swaps and
unknown chunks).  ``Image.MAX_IMAGE_PIXELS`` is lowered to ``--max-pixels`` during
the run so that header mutations cannot make each input cost seconds.

Usage::

    python bench/fuzz.py --seconds 600            # release run (documented in notes)
    python bench/fuzz.py --iterations 2000 --seed 3 --out /tmp/fuzz-crashes
    python bench/fuzz.py --atheris -- -max_total_time=600   # if atheris is installed

Every finding is minimised and printed as a ready ``fixtures/fuzz_cases.py`` entry.
The CI runs a short seeded run through :func:`run` (tests/test_robustness.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
import json
import os
import random
import re
import signal
import struct
import sys
import threading
import time
import traceback
import tracemalloc
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image, ImageFile  # noqa: E402

from pillow_gcp import format as gcp_format  # noqa: E402
from pillow_gcp import payload  # noqa: E402
from pillow_gcp import plugin as gcp_plugin  # noqa: E402

gcp_plugin.register()

EXPECTED = (OSError, Image.DecompressionBombError)
MAGIC = gcp_format.MAGIC
_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<BBHII")

INTERESTING_U8 = [0, 1, 2, 3, 4, 5, 0x0F, 0x10, 0x3F, 0x40, 0x7E, 0x7F, 0x80, 0x81, 0xFE, 0xFF]
INTERESTING_U16 = [0, 1, 2, 255, 256, 257, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
INTERESTING_U32 = [
    0, 1, 2, 3, 4, 7, 8, 12, 16, 255, 256, 257, 4095, 4096, 65535, 65536, 65537,
    0x7FFFFFFE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
]
HEAD_VALUES = {
    "version": [0, 1, 2, 3, 4, 255],
    "channels": [0, 1, 2, 3, 4, 5, 255],
    "palette_size": [0, 1, 2, 3, 16, 255, 256, 257, 0xFFFF],
    "dim": [0, 1, 2, 3, 7, 8, 255, 256, 1000, 1023, 1024, 1025, 4096, 65535, 65536,
            0x7FFFFFFF, 0x80000000, 0xFFFFFFFF],
}


# ----------------------------------------------------------------------------- chunks


def chunk(ctype: bytes, body: bytes) -> bytes:
    """One chunk with a correct length and CRC."""
    return _U32.pack(len(body)) + ctype + body + _U32.pack(zlib.crc32(body, zlib.crc32(ctype)))


def split_chunks(data: bytes, keep_bad_crc: bool = False) -> tuple[bytes, list[list], bytes]:
    """Split a (possibly damaged) file into (signature, [[type, body], ...], tail).

    Parsing stops at the first chunk that does not fit; the rest is ``tail``.
    CRCs are recomputed by :func:`join_chunks`, except that with ``keep_bad_crc`` a
    chunk whose stored CRC is wrong keeps it (as a third item): the minimiser must not
    repair the corruption it is trying to keep.
    """
    sig, pos, chunks = data[:8], 8, []
    while pos + 12 <= len(data):
        (length,) = _U32.unpack_from(data, pos)
        if pos + 12 + length > len(data):
            break
        ctype, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        item = [ctype, body]
        stored = data[pos + 8 + length : pos + 12 + length]
        if keep_bad_crc and stored != _U32.pack(zlib.crc32(body, zlib.crc32(ctype))):
            item.append(stored)
        chunks.append(item)
        pos += 12 + length
    return sig, chunks, data[pos:]


def join_chunks(sig: bytes, chunks: list[list], tail: bytes = b"") -> bytes:
    parts = [sig]
    for c in chunks:
        if len(c) > 2:  # a deliberately wrong CRC
            parts.append(_U32.pack(len(c[1])) + c[0] + c[1] + c[2])
        else:
            parts.append(chunk(c[0], c[1]))
    return b"".join(parts) + tail


def declared_pixels(data: bytes) -> int | None:
    """width * height from the HEAD chunk, if the file starts like a .gcp file (CRC ignored)."""
    if len(data) < 28 or data[:8] != MAGIC or data[12:16] != b"HEAD":
        return None
    _, _, _, w, h = _HEAD.unpack_from(data, 16)
    return w * h


# ----------------------------------------------------------------------------- seeds


def _indices(rng: np.random.Generator, h: int, w: int, n: int, kind: str) -> np.ndarray:
    if kind == "constant":
        return np.full((h, w), n - 1, np.uint8)
    if kind == "noise":
        return rng.integers(0, n, (h, w), dtype=np.uint8)
    if kind == "stripes":
        return np.broadcast_to((np.arange(w) // 3 % n).astype(np.uint8), (h, w)).copy()
    if kind == "blocks":
        y, x = np.mgrid[0:h, 0:w]
        return ((y // 5 * 7 + x // 4) % n).astype(np.uint8)
    if kind == "runs":  # long runs with occasional noise: typical quantized photo
        base = (np.arange(h * w) // 37 % n).astype(np.uint8)
        flip = rng.random(h * w) < 0.05
        base[flip] = rng.integers(0, n, int(flip.sum()), dtype=np.uint8)
        return base.reshape(h, w)
    raise ValueError(kind)


SEED_SPECS = [
    # (height, width, palette size, channels, kind, metadata?)
    (1, 1, 1, 3, "constant", False),
    (5, 7, 3, 3, "noise", False),
    (16, 16, 256, 4, "noise", False),
    (17, 33, 16, 3, "stripes", True),
    (48, 64, 200, 4, "runs", False),
    (30, 40, 8, 3, "blocks", True),
    (300, 1, 5, 3, "runs", False),
    (1, 300, 2, 4, "stripes", False),
    (96, 128, 12, 3, "runs", False),
    (64, 64, 2, 3, "noise", False),
    (200, 150, 4, 3, "constant", False),
]


# ----------------------------------------------------------------------------- payload layouts (SPEC.md 6)
# Every coding of SPEC.md 6 written again from its byte layout (not with pillow_gcp.payload), so that the
# fuzzer, the robustness tests and the conformance files exercise the decoder with payloads its own encoder
# would never write (random context lists, every flag).

CODINGS = ("zlib", "ctx-up", "ctx-up-zflags", "ctx-left", "ctx-left-zflags", "lzma2")
M_ZLIB, M_CTX, M_LZMA2 = 0, 1, 2
F_LEFT, F_ZFLAGS = 0x01, 0x02
TILE = 64


def codings_for(k: int) -> tuple:
    """The codings SPEC.md 6 allows for palette size ``k`` (LEFT only up to 64)."""
    return tuple(c for c in CODINGS if k <= 64 or "left" not in c)


def _zlib(raw: bytes, level: int = 9, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    return c.compress(raw) + c.flush()


def _lzma2_raw(raw: bytes) -> bytes:
    import lzma  # noqa: PLC0415

    return lzma.compress(raw, format=lzma.FORMAT_RAW,
                         filters=[{"id": lzma.FILTER_LZMA2, "dict_size": max(4096, len(raw))}])


def default_order(k: int, u: int) -> np.ndarray:
    """SPEC.md 6.4: u, u-1, u+1, u-2, u+2, ... within 0..k-1."""
    s = np.arange(k)
    return np.argsort(2 * np.abs(s - u) - (s < u), kind="stable").astype(np.uint8)


def context_orders(k: int, lists) -> np.ndarray:
    """(C, k) uint8: row c is order_c (rank -> index) for the context lists (positions in the default order
    around u = c mod k)."""
    out = np.empty((len(lists), k), np.uint8)
    for c, listed in enumerate(lists):
        d = default_order(k, c % k)
        head = [int(d[p]) for p in listed]
        out[c] = head + [int(s) for s in d if s not in head]
    return out


def table_bytes(lists) -> bytes:
    """The table stream's content: every count, then every list (SPEC.md 6.4)."""
    return bytes(len(q) for q in lists) + b"".join(bytes(int(p) for p in q) for q in lists)


def random_lists(contexts: int, k: int, rng: np.random.Generator, most: int = 6) -> list:
    return [rng.permutation(k)[: int(rng.integers(0, min(k - 1, most) + 1))].tolist() for _ in range(contexts)]


def neighbours(indices: np.ndarray) -> tuple:
    """(L, U) of every pixel inside its 64 x 64 tile (SPEC.md 6.4)."""
    h, w = indices.shape
    tx = (np.arange(w) % TILE)[None, :]
    ty = (np.arange(h) % TILE)[:, None]
    left = np.zeros_like(indices)
    left[:, 1:] = indices[:, :-1]
    up = np.zeros_like(indices)
    up[1:] = indices[:-1]
    zero = np.zeros_like(indices)
    lv = np.where(tx > 0, left, np.where(ty > 0, up, zero))
    uv = np.where(ty > 0, up, np.where(tx > 0, left, zero))
    return lv, uv


def ctx_ranks(indices: np.ndarray, k: int, left: bool, lists) -> np.ndarray:
    """(N,) ranks in raster order: each index's rank in the order of its context."""
    lv, uv = neighbours(np.asarray(indices, np.uint8))
    ctx = (lv.astype(np.intp) * k + uv if left else uv.astype(np.intp)).ravel()
    order = context_orders(k, lists)
    rank_of = np.empty(order.shape, np.uint8)
    rank_of[np.arange(len(order))[:, None], order] = np.arange(k, dtype=np.uint8)[None, :]
    return rank_of[ctx, np.asarray(indices, np.uint8).ravel()]


def layout_payload(indices: np.ndarray, k: int, coding: str, *, lists=None, level: int = 9) -> bytes:
    """A payload of ``coding`` (one of :data:`CODINGS`) for ``indices`` (H, W) uint8 < k, from SPEC.md 6.

    ``lists``: the CTX context lists (default: none, so every order is the default order); ``level``: zlib
    level of every zlib stream (0: stored blocks).
    """
    raw = np.ascontiguousarray(indices, np.uint8).tobytes()
    if coding == "zlib":
        return bytes([M_ZLIB]) + _zlib(raw, level)
    if coding == "lzma2":
        return bytes([M_LZMA2]) + _lzma2_raw(raw)
    if coding not in CODINGS:
        raise ValueError(coding)
    left = "left" in coding
    contexts = k * k if left else k
    lists = [[] for _ in range(contexts)] if lists is None else lists
    ranks = ctx_ranks(indices, k, left, lists)
    table = _zlib(table_bytes(lists), level)
    head = bytes([M_CTX, (F_LEFT if left else 0) | (F_ZFLAGS if "zflags" in coding else 0)])
    head += _U32.pack(len(table)) + table
    if "zflags" not in coding:
        return head + _zlib(ranks.tobytes(), level, zlib.Z_RLE)
    flags = _zlib(np.packbits(ranks != 0).tobytes(), level)
    rest = _zlib((ranks[ranks != 0] - 1).astype(np.uint8).tobytes(), level, zlib.Z_HUFFMAN_ONLY)
    return head + _U32.pack(len(flags)) + flags + rest


def _payload_variants(indices: np.ndarray, k: int, rng: np.random.Generator) -> list[bytes]:
    """Payloads of every coding SPEC.md 6 allows for ``k``, built from the layout (CTX with random context
    lists). The encoder writes only one; a hostile file may use any."""
    out = []
    for coding in codings_for(k):
        contexts = k * k if "left" in coding else k
        lists = random_lists(contexts, k, rng) if coding.startswith("ctx") else None
        out.append(layout_payload(indices, k, coding, lists=lists))
    return out


def fill_order(body: bytes, width: int, height: int) -> np.ndarray:
    """(N,) raster pixel numbers in the order a truncated payload fills them: SPEC.md 6.6 says every coding's
    decoded prefix is a prefix in raster order (every other pixel index 0)."""
    return np.arange(width * height)


def seed_corpus(seed: int = 0) -> list[bytes]:
    """Valid .gcp files covering palette sizes 1-256, RGB/RGBA, metadata, trailing chunks and
    every payload coding and flag (see :func:`_payload_variants`)."""
    return list(_seed_corpus(seed))


@functools.lru_cache(maxsize=4)
def _seed_corpus(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w, n, c, kind, meta) in enumerate(SEED_SPECS):
        palette = rng.integers(0, 256, (n, c), dtype=np.uint8)
        if n >= 12 and i % 2 == 0:  # ramps: the encoder writes PLTZ (SPEC.md 3.2)
            palette = (np.arange(n)[:, None] * np.array([1, 3, 7, 2][:c]) % 256).astype(np.uint8)
        if c == 4:
            palette[0, 3] = 0
        metadata = {"comment": "fuzz seed", "icc_profile": bytes(range(40)), "exif": b"Exif\0\0MM"} if meta else None
        out.append(gcp_format.encode(_indices(rng, h, w, n, kind), palette, metadata))
    # ancillary chunks after DATA, and an unknown ancillary chunk before it
    sig, chunks, tail = split_chunks(out[3])
    chunks.insert(2, [b"zzTe", b"unknown ancillary"])
    chunks.insert(len(chunks) - 1, [b"cmnt", "après DATA".encode()])
    out.append(join_chunks(sig, chunks, tail + b"trailing garbage after DONE"))
    # the same images with every payload variant (kept only if the decoder reads them back exactly)
    for h, w, n, kind in ((20, 30, 5, "runs"), (24, 40, 100, "blocks"), (32, 32, 200, "noise")):
        indices = _indices(rng, h, w, n, kind)
        palette = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        sig, chunks, tail = split_chunks(gcp_format.encode(indices, palette))
        i = _find(chunks, b"DATA")
        for body in _payload_variants(indices, n, rng):
            chunks[i][1] = body
            data = join_chunks(sig, chunks, tail)
            try:
                ok = np.array_equal(gcp_format.decode(data)[0], indices)
            except OSError:
                ok = False
            if ok and data not in out:
                out.append(data)
    return tuple(out)


# ----------------------------------------------------------------------------- mutators


def _span(rnd: random.Random, n: int, maxlen: int = 64) -> tuple[int, int]:
    a = rnd.randrange(n + 1)
    return a, min(n, a + rnd.randint(1, maxlen))


def _bytes_mutation(rnd: random.Random, b: bytes, donors: list[bytes]) -> bytes:
    """One raw mutation of a byte string (used on whole files and on chunk bodies)."""
    b = bytearray(b)
    n = len(b)
    op = rnd.randrange(11)
    if n == 0 and op < 8:
        op = 8
    if op == 0:  # flip 1-4 bits
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(n)] ^= 1 << rnd.randrange(8)
    elif op == 1:  # interesting byte
        b[rnd.randrange(n)] = rnd.choice(INTERESTING_U8)
    elif op == 2:  # interesting u16/u32, either endianness
        width = rnd.choice((2, 4))
        vals = INTERESTING_U16 if width == 2 else INTERESTING_U32
        v = rnd.choice(vals) & ((1 << (8 * width)) - 1)
        raw = v.to_bytes(width, rnd.choice(("little", "big")))
        at = rnd.randrange(n)
        b[at : at + width] = raw[: max(0, n - at)]
    elif op == 3:  # truncate
        del b[rnd.randrange(n) :]
    elif op == 4:  # delete a span
        a, z = _span(rnd, n)
        del b[a:z]
    elif op == 5:  # duplicate a span
        a, z = _span(rnd, n)
        at = rnd.randrange(n + 1)
        b[at:at] = b[a:z]
    elif op == 6:  # random bytes over a span
        a, z = _span(rnd, n, 16)
        b[a:z] = rnd.randbytes(z - a)
    elif op == 7:  # arithmetic on one byte
        at = rnd.randrange(n)
        b[at] = (b[at] + rnd.choice((-2, -1, 1, 2, 16, -16))) & 0xFF
    elif op == 8:  # insert random bytes
        at = rnd.randrange(n + 1)
        b[at:at] = rnd.randbytes(rnd.randint(1, 32))
    elif op == 9:  # insert a span of a donor
        d = rnd.choice(donors) if donors else bytes(b)
        if d:
            a, z = _span(rnd, len(d))
            at = rnd.randrange(n + 1)
            b[at:at] = d[a:z]
    else:  # repeat one byte many times (long runs)
        at = rnd.randrange(n + 1)
        b[at:at] = bytes([rnd.choice(INTERESTING_U8)]) * rnd.randint(2, 300)
    return bytes(b)


def m_raw(rnd, data, corpus):
    """Raw byte mutation anywhere in the file (CRC not fixed)."""
    return _bytes_mutation(rnd, data, corpus)


def m_truncate(rnd, data, corpus):
    return data[: rnd.randrange(len(data))] if data else data


def m_length_lie(rnd, data, corpus):
    """Set a chunk's length field to an interesting value (CRC and layout not fixed)."""
    sig, chunks, tail = split_chunks(data)
    if not chunks:
        return m_raw(rnd, data, corpus)
    i = rnd.randrange(len(chunks))
    pos = 8 + sum(12 + len(c[1]) for c in chunks[:i])
    v = rnd.choice(INTERESTING_U32 + [len(chunks[i][1]) + d for d in (-1, 1, 4, -4)])
    return data[:pos] + _U32.pack(v & 0xFFFFFFFF) + data[pos + 4 :]


def _find(chunks, ctype):
    for i, c in enumerate(chunks):
        if c[0] == ctype:
            return i
    return None


def m_head(rnd, data, corpus):
    """Extreme HEAD values with the CRC fixed; half the time PLTE is resized to match."""
    sig, chunks, tail = split_chunks(data)
    i = _find(chunks, b"HEAD")
    if i is None or len(chunks[i][1]) != 12:
        return m_raw(rnd, data, corpus)
    version, channels, size, w, h = _HEAD.unpack(chunks[i][1])
    for _ in range(rnd.randint(1, 2)):
        f = rnd.choice(("version", "channels", "palette_size", "width", "height", "width", "height", "swap"))
        if f == "version":
            version = rnd.choice(HEAD_VALUES["version"])
        elif f == "channels":
            channels = rnd.choice(HEAD_VALUES["channels"])
        elif f == "palette_size":
            size = rnd.choice(HEAD_VALUES["palette_size"] + [max(1, size - 1), size + 1])
        elif f == "swap":
            w, h = h, w
        else:
            v = rnd.choice(HEAD_VALUES["dim"] + [max(0, (w if f == "width" else h) + d) for d in (-1, 1, 2)])
            if f == "width":
                w = v
            else:
                h = v
    chunks[i][1] = _HEAD.pack(version & 0xFF, channels & 0xFF, size & 0xFFFF, w & 0xFFFFFFFF, h & 0xFFFFFFFF)
    j = _find(chunks, b"PLTE")
    z = _find(chunks, b"PLTZ") if j is None else None
    j = z if j is None else j
    if j is not None and rnd.random() < 0.5 and 0 < size * channels <= 65536 * 4:
        body = chunks[j][1]
        if z is not None:
            body = _inflated(body)
        need = size * channels
        body = (body * (need // max(1, len(body)) + 1))[:need] if body else bytes(need)
        chunks[j][1] = zlib.compress(body) if z is not None else body
    return join_chunks(sig, chunks, tail)


def _inflated(body: bytes) -> bytes:
    """What a PLTZ body inflates to (b"" when it is not a zlib stream)."""
    try:
        return zlib.decompress(body)
    except zlib.error:
        return b""


def m_data(rnd, data, corpus):
    """Mutate the DATA body (1-3 ops) and fix its length and CRC: exercises the payload decoder."""
    sig, chunks, tail = split_chunks(data)
    i = _find(chunks, b"DATA")
    if i is None:
        return m_raw(rnd, data, corpus)
    donors = [c[1] for d in corpus for c in split_chunks(d)[1] if c[0] == b"DATA"]
    body = chunks[i][1]
    for _ in range(rnd.randint(1, 3)):
        body = _bytes_mutation(rnd, body, donors)
    chunks[i][1] = body
    return join_chunks(sig, chunks, tail)


def m_splice_data(rnd, data, corpus):
    """Replace DATA by another seed's DATA (other dimensions / palette size), CRC fixed."""
    sig, chunks, tail = split_chunks(data)
    i = _find(chunks, b"DATA")
    donors = [c[1] for d in corpus for c in split_chunks(d)[1] if c[0] == b"DATA"]
    if i is None or not donors:
        return m_raw(rnd, data, corpus)
    chunks[i][1] = rnd.choice(donors)
    if rnd.random() < 0.3:
        chunks[i][1] = chunks[i][1] + rnd.choice(donors)
    return join_chunks(sig, chunks, tail)


def m_plte(rnd, data, corpus):
    """Mutate the palette chunk, CRC fixed: PLTE's values or length; PLTZ's stream bytes, or a valid zlib stream
    of mutated planes (another length); now and then one kind of palette chunk turned into the other."""
    sig, chunks, tail = split_chunks(data)
    i = _find(chunks, b"PLTE")
    i = _find(chunks, b"PLTZ") if i is None else i
    if i is None:
        return m_raw(rnd, data, corpus)
    ctype, body = chunks[i][0], chunks[i][1]
    if rnd.random() < 0.15:  # the other kind of palette chunk, holding the same bytes
        chunks[i] = [b"PLTZ", zlib.compress(body)] if ctype == b"PLTE" else [b"PLTE", _inflated(body)]
    elif ctype == b"PLTZ" and rnd.random() < 0.6:  # a valid stream of other planes (other values or length)
        chunks[i][1] = zlib.compress(_bytes_mutation(rnd, _inflated(body), []), rnd.choice((0, 1, 9)))
    else:
        chunks[i][1] = _bytes_mutation(rnd, body, [])
    return join_chunks(sig, chunks, tail)


def m_chunks(rnd, data, corpus):
    """Drop, duplicate, swap or insert whole chunks (CRCs correct)."""
    sig, chunks, tail = split_chunks(data)
    op = rnd.randrange(7)
    n = len(chunks)
    if op == 0 and n:
        del chunks[rnd.randrange(n)]
    elif op == 1 and n:
        k = rnd.randrange(n)
        chunks.insert(rnd.randrange(n + 1), list(chunks[k]))
    elif op == 2 and n >= 2:
        a, b = rnd.randrange(n), rnd.randrange(n)
        chunks[a], chunks[b] = chunks[b], chunks[a]
    elif op == 3:
        ctype = rnd.choice([b"abCd", b"ABCD", b"iccp", b"exif", b"xmpd", b"cmnt", b"HEAD", b"DONE", b"PLTE", b"PLTZ",
                            b"DATA", b"a1cd", b"\x00\x00\x00\x00", b"dATA", b"Done", b"anim", b"fram"])
        body = rnd.randbytes(rnd.choice((0, 1, 12, 100)))
        chunks.insert(rnd.randrange(n + 1), [ctype, body])
    elif op == 4:  # garbage or a second file after the end
        tail = tail + rnd.choice(corpus + [rnd.randbytes(20)])
    elif op == 5 and n:  # non-empty DONE, or invalid utf-8 comment
        k = _find(chunks, b"DONE")
        if k is not None:
            chunks[k][1] = rnd.randbytes(rnd.randint(1, 8))
        else:
            chunks.insert(1, [b"cmnt", b"\xff\xfe\xc3(\x80"])
    else:  # lower/upper-case one type letter
        if n:
            k = rnd.randrange(n)
            t = bytearray(chunks[k][0])
            t[rnd.randrange(4)] ^= 0x20
            chunks[k][0] = bytes(t)
    return join_chunks(sig, chunks, tail)


def m_crossover(rnd, data, corpus):
    """HEAD/PLTE of one file with the rest of another (CRCs correct)."""
    other = rnd.choice(corpus)
    sig, a, tail = split_chunks(data)
    _, b, tail_b = split_chunks(other)
    cut_a, cut_b = rnd.randint(0, len(a)), rnd.randint(0, len(b))
    return join_chunks(sig, a[:cut_a] + b[cut_b:], tail_b)


MUTATORS = {
    "raw": (m_raw, 3),
    "truncate": (m_truncate, 2),
    "length_lie": (m_length_lie, 1),
    "head": (m_head, 3),
    "data": (m_data, 6),
    "splice_data": (m_splice_data, 1),
    "plte": (m_plte, 1),
    "chunks": (m_chunks, 2),
    "crossover": (m_crossover, 1),
}


def mutate(rnd: random.Random, data: bytes, corpus: list[bytes]) -> tuple[bytes, str]:
    """Apply 1-3 weighted mutators; returns (new bytes, name of the first mutator)."""
    names = list(MUTATORS)
    weights = [MUTATORS[k][1] for k in names]
    first = None
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        name = rnd.choices(names, weights)[0]
        first = first or name
        data = MUTATORS[name][0](rnd, data, corpus)
    return data, first


# ----------------------------------------------------------------------------- oracle


class _Hang(BaseException):
    """Raised by SIGALRM; a BaseException so that `except Exception` in the code under test cannot eat it."""


@dataclass
class Finding:
    kind: str  # exception | slow | hang | alloc | mismatch | contract
    target: str
    detail: str
    data: bytes
    signature: str = ""

    def as_case(self, expected_error: str = "") -> dict:
        """A fixtures/fuzz_cases.py entry (the expected message is filled in once the owner decides it)."""
        return {
            "name": f"fuzz-{self.kind}-{zlib.crc32(self.data):08x}.gcp",
            "hex": self.data.hex(),
            "error": expected_error,
        }


@dataclass
class Outcome:
    ok: bool
    error: BaseException | None
    seconds: float
    peak: int
    value: object = None


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame of the traceback inside pillow_gcp or PIL."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        if "pillow_gcp" in fr.filename or "PIL" in fr.filename:
            return f"{os.path.basename(fr.filename)}:{fr.lineno}"
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"


_DIGITS = re.compile(r"<[^>]* at 0x[0-9a-f]+>|b?'[^']*'|b?\"[^\"]*\"|\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{8}\b|\d+")


def message_class(exc: BaseException) -> str:
    """The error message with numbers and quoted values removed (used for statistics)."""
    return f"{type(exc).__name__}: " + _DIGITS.sub("#", str(exc))[:90]


@contextlib.contextmanager
def _hard_timeout(seconds: float | None):
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _measure(fn, data, *, trace: bool, hard_timeout: float | None) -> Outcome:
    """Run fn(data); peak = traced bytes allocated above the level at the start (tracemalloc is
    kept running by :func:`fuzz_environment`; starting and stopping it per call costs more than the call)."""
    started = False
    if trace:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            started = True
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    try:
        with _hard_timeout(hard_timeout) if hard_timeout else contextlib.nullcontext():
            value = fn(data)
        err = None
    except _Hang as e:
        value, err = None, e
    except Exception as e:  # noqa: BLE001 - classifying every exception is the point
        value, err = None, e
    seconds = time.perf_counter() - t0
    peak = 0
    if trace:
        peak = max(0, tracemalloc.get_traced_memory()[1] - base)
        if started:
            tracemalloc.stop()
    return Outcome(err is None, err, seconds, peak, value)


def _target_load(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def _target_verify(data):
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    return True


def _target_decode(data):
    return gcp_format.decode(data)


def _target_parser(data):
    """ImageFile.Parser fed in pieces of 1-700 bytes (sizes derived from the data, so reproducible)."""
    parser = ImageFile.Parser()
    rnd = random.Random(zlib.crc32(data))
    pos = 0
    while pos < len(data):
        step = rnd.choice((1, 7, 64, 700))
        parser.feed(data[pos : pos + step])
        pos += step
    return parser.close()


def _target_load_truncated(data):
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        return _target_load(data)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


@dataclass
class Limits:
    time_limit: float | None = 1.0  # seconds per target; None: not checked (CI)
    hard_timeout: float | None = 20.0  # SIGALRM guard against hangs
    alloc_per_pixel: float = 8.0  # traced bytes per declared pixel
    alloc_per_byte: float = 4.0  # traced bytes per input byte
    alloc_base: int = 3 << 20  # CTX tables (up to 4096 x 64 orders and a 2^18-entry uint32 step table) + Pillow
    max_pixels: int = 1 << 20  # Image.MAX_IMAGE_PIXELS during the run (bomb error above 2x)


def _rgba(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    pal = palette if palette.shape[1] == 4 else np.concatenate([palette, np.full((len(palette), 1), 255, np.uint8)], 1)
    return pal[indices]


def check_input(data: bytes, limits: Limits, stats: Counter | None = None) -> list[Finding]:
    """Run every target on ``data``; return the findings (empty list: the decoder behaved).

    One SIGALRM guard (``limits.hard_timeout`` per target) covers the whole input; the target
    that is running when it fires is reported as a ``hang``.
    """
    guard = limits.hard_timeout * 6 if limits.hard_timeout else None
    with _hard_timeout(guard):
        return _check_input(data, limits, stats)


def _check_input(data: bytes, limits: Limits, stats: Counter | None) -> list[Finding]:
    # Free the previous input's cyclic garbage (tracebacks, frames) now: freed inside a measured
    # target it would lower that target's peak and hide an allocation.
    gc.collect(1)
    stats = stats if stats is not None else Counter()
    findings: list[Finding] = []
    pixels = declared_pixels(data)
    within = pixels is not None and pixels <= 2 * limits.max_pixels
    budget = limits.alloc_base + limits.alloc_per_byte * len(data)
    if pixels is not None:
        budget += limits.alloc_per_pixel * min(pixels, 2 * limits.max_pixels)

    def run(name, fn, check_alloc=True):
        out = _measure(fn, data, trace=True, hard_timeout=None)
        err = out.error
        if isinstance(err, _Hang):
            findings.append(Finding("hang", name, f"the input ran past {6 * limits.hard_timeout} s", data))
            return out
        if err is not None and not isinstance(err, EXPECTED):
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
            findings.append(Finding("exception", name, f"{type(err).__name__}: {err}\n{tb}", data,
                                    f"exception:{name}:{type(err).__name__}:{_where(err)}"))
        if check_alloc and out.peak > budget:
            findings.append(Finding("alloc", name, f"tracemalloc peak {out.peak} > budget {int(budget)} "
                                    f"(declared pixels {pixels}, file {len(data)} bytes)", data, f"alloc:{name}"))
        if limits.time_limit and out.seconds > limits.time_limit:
            again = _measure(fn, data, trace=False, hard_timeout=None)
            if again.seconds > limits.time_limit:
                findings.append(Finding("slow", name, f"{again.seconds:.2f} s (declared pixels {pixels})", data,
                                        f"slow:{name}"))
        if pixels and within and pixels >= 1 << 18:  # smaller images: the constant part (~0.5 MB) dominates
            stats["max_peak_per_pixel_x1000"] = max(stats["max_peak_per_pixel_x1000"], int(1000 * out.peak / pixels))
        stats["max_seconds_x1000"] = max(stats["max_seconds_x1000"], int(1000 * out.seconds))
        stats[f"{name}:" + ("ok" if out.ok else message_class(err))] += 1
        if name == "load" and out.ok:
            try:
                header = gcp_format.read_header(io.BytesIO(data))
                stats[f"ok_payload_method:{data[header.payload_offset]}"] += 1
            except (OSError, IndexError):
                pass
        return out

    load = run("load", _target_load)
    verify = run("verify", _target_verify)
    parsed = run("parser", _target_parser)
    decode = run("decode", _target_decode) if within else None
    if pixels is not None and not within:
        # format.decode has no pixel limit (that is Pillow's business): a huge declared size must
        # still give a clean error (or an image) on its own, streaming, without a Pillow bomb check.
        # Memory is not checked here: a legitimately small, highly compressed payload may decode.
        run("decode_unbounded", _target_decode, check_alloc=False)

    # --- contracts of a successful load
    if load.ok:
        im = load.value
        w, h = _HEAD.unpack_from(data, 16)[3:]
        if im.size != (w, h) or im.mode != "P":
            findings.append(Finding("contract", "load", f"size {im.size} mode {im.mode}, header says {w}x{h}",
                                    data, "contract:size"))
    # --- differential: ImageFile.Parser gives what Image.open gives
    if not isinstance(parsed.error, _Hang) and not isinstance(load.error, _Hang):
        if parsed.ok != load.ok:
            findings.append(Finding("mismatch", "parser/load",
                                    f"parser {'ok' if parsed.ok else message_class(parsed.error)}; "
                                    f"load {'ok' if load.ok else message_class(load.error)}", data,
                                    "mismatch:parser-load"))
        elif parsed.ok and not np.array_equal(np.asarray(parsed.value.convert("RGBA")),
                                              np.asarray(load.value.convert("RGBA"))):
            findings.append(Finding("mismatch", "parser/load", "different pixels", data, "mismatch:parser-pixels"))
    # --- differential: verify and format.decode check the same things
    if decode is not None and (verify.ok != decode.ok) and not isinstance(verify.error, _Hang):
        findings.append(Finding("mismatch", "verify/decode",
                                f"verify {'ok' if verify.ok else message_class(verify.error)}; "
                                f"decode {'ok' if decode.ok else message_class(decode.error)}", data,
                                "mismatch:verify-decode"))
    if decode is not None and decode.ok and not load.ok and isinstance(load.error, EXPECTED) \
            and not isinstance(load.error, Image.DecompressionBombError):
        findings.append(Finding("mismatch", "load/decode", f"decode ok, load {message_class(load.error)}", data,
                                "mismatch:load-rejects"))
    if decode is not None and not decode.ok and load.ok and isinstance(decode.error, gcp_format.GCPFormatError):
        # load() stops after DATA: the only errors it may miss are in the chunks after DATA
        try:
            header = gcp_format.read_header(io.BytesIO(data))
            end = header.payload_offset + header.payload_length + 4
        except OSError:
            end = None
        if end is None or decode.error.offset is None or decode.error.offset < end:
            findings.append(Finding("mismatch", "load/decode", f"load ok, decode {message_class(decode.error)}",
                                    data, "mismatch:load-accepts"))
    if decode is not None and decode.ok and load.ok:
        indices, palette, _ = decode.value
        ours = np.asarray(load.value.convert("RGBA"))
        theirs = _rgba(indices, palette)
        if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
            bad = "shape" if ours.shape != theirs.shape else f"{int((ours != theirs).any(-1).sum())} pixels differ"
            findings.append(Finding("mismatch", "load/decode", f"RGBA of the plugin != palette[indices]: {bad}",
                                    data, "mismatch:pixels"))

    # --- a valid file cut inside DATA loads, with LOAD_TRUNCATED_IMAGES, as a prefix of its pixels then index 0
    if load.ok and decode is not None and decode.ok:
        try:
            header = gcp_format.read_header(io.BytesIO(data))
        except OSError:
            header = None
        if header is not None and header.payload_length > 0:
            cut = header.payload_offset + zlib.crc32(data) % header.payload_length
            part = _measure(_target_load_truncated, data[:cut], trace=False, hard_timeout=None)
            pay = data[header.payload_offset:header.payload_offset + header.payload_length]
            fill = fill_order(pay, header.width, header.height)
            order = lambda m: np.ravel(m)[fill]  # noqa: E731  the pixels in the order a cut payload fills them
            full = order(decode.value[0])
            if part.ok:
                got = order(np.asarray(part.value))
                bad = got != full
                k = int(np.argmax(bad)) if bad.any() else full.size
                if got.size != full.size or got[k:].any():
                    findings.append(Finding("contract", "load_truncated",
                                            f"cut at byte {cut}: pixels after the decoded prefix ({k}) are not "
                                            f"index 0 (values {np.unique(got[k:])[:8].tolist()})", data[:cut],
                                            "contract:truncated-prefix"))
            elif not isinstance(part.error, OSError):
                findings.append(Finding("exception", "load_truncated", f"{type(part.error).__name__}: {part.error}",
                                        data[:cut], f"exception:load_truncated-cut:{type(part.error).__name__}"))
    # --- LOAD_TRUNCATED_IMAGES: a truncated file gives a full-size image (or an error); any other
    # error must stay exactly the same error (the option is about truncation, not about corruption)
    if not load.ok and isinstance(load.error, OSError):
        lt = run("load_truncated", _target_load_truncated)
        truncation = "truncated" in str(load.error)
        if lt.ok and truncation:
            w, h = _HEAD.unpack_from(data, 16)[3:]
            if lt.value.size != (w, h):
                findings.append(Finding("contract", "load_truncated", f"size {lt.value.size} != {w}x{h}", data,
                                        "contract:truncated-size"))
        elif not truncation and (lt.ok or message_class(lt.error) != message_class(load.error)):
            findings.append(Finding("contract", "load_truncated",
                                    f"LOAD_TRUNCATED_IMAGES changes a non-truncation error: {load.error} -> "
                                    f"{'an image' if lt.ok else lt.error}", data,
                                    f"contract:truncated-mode-changes-error:{message_class(load.error)[:40]}"))
        if not truncation and lt.peak > 2 * load.peak + (1 << 20):
            # confirm in a clean heap: garbage of earlier inputs freed during a target lowers its peak
            gc.collect()
            strict_peak = _measure(_target_load, data, trace=True, hard_timeout=None).peak
            gc.collect()
            lt_peak = _measure(_target_load_truncated, data, trace=True, hard_timeout=None).peak
            if lt_peak > 2 * strict_peak + (1 << 20):
                findings.append(Finding("contract", "load_truncated",
                                        f"LOAD_TRUNCATED_IMAGES makes a non-truncation error cost more memory: "
                                        f"peak {lt_peak} vs {strict_peak} bytes ({load.error})", data,
                                        "contract:truncated-mode-extra-memory"))
    for f in findings:
        f.signature = f.signature or f"{f.kind}:{f.target}"
    return findings


# ----------------------------------------------------------------------------- minimiser


def minimise(data: bytes, signature: str, limits: Limits, budget_seconds: float = 20.0) -> bytes:
    """Shrink ``data`` while a finding with the same signature persists (chunk-aware, CRCs recomputed)."""
    deadline = time.monotonic() + budget_seconds
    def still(candidate: bytes) -> bool:
        if time.monotonic() > deadline:
            return False
        return any(f.signature == signature for f in check_input(candidate, limits))

    best = data
    # 1. drop trailing bytes (largest cut first)
    for keep in (len(best) // 4, len(best) // 2, 3 * len(best) // 4, len(best) - 12, len(best) - 4, len(best) - 1):
        if 0 < keep < len(best) and still(best[:keep]):
            best = best[:keep]
    # 2. drop whole chunks / shrink chunk bodies (CRC fixed), then raw spans
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        sig, chunks, tail = split_chunks(best, keep_bad_crc=True)
        cands = []
        if tail:
            cands.append(join_chunks(sig, chunks))
        for i in range(len(chunks)):
            cands.append(join_chunks(sig, chunks[:i] + chunks[i + 1 :], tail))
        for i, c in enumerate(chunks):
            body = c[1]
            step = len(body) // 2
            while step >= 1:
                for a in range(0, len(body) - step + 1, step):
                    nb = body[:a] + body[a + step :]
                    cands.append(join_chunks(sig, chunks[:i] + [[c[0], nb, *c[2:]]] + chunks[i + 1 :], tail))
                step //= 2
        for cand in cands:
            if len(cand) < len(best) and still(cand):
                best, improved = cand, True
                break
    return best


# ----------------------------------------------------------------------------- driver


@dataclass
class Report:
    seed: int
    inputs: int = 0
    seconds: float = 0.0
    findings: dict = field(default_factory=dict)  # signature -> Finding
    mutators: Counter = field(default_factory=Counter)
    stats: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        outcomes = Counter()
        for k, v in self.stats.items():
            if k.startswith("load:"):
                outcomes[k[5:]] += v
        reached_payload = sum(v for k, v in self.stats.items() if k.startswith("load:") and "bad payload" in k)
        return {
            "seed": self.seed,
            "inputs": self.inputs,
            "seconds": round(self.seconds, 1),
            "inputs_per_second": round(self.inputs / max(self.seconds, 1e-9), 1),
            "findings": {k: f.detail.splitlines()[0] for k, f in self.findings.items()},
            "ignored_known_findings": self.stats.get("ignored", 0),
            "load_ok": self.stats.get("load:ok", 0),
            "load_errors_in_payload_decoder": reached_payload,
            "loaded_by_payload_method": {k.split(":")[1]: v for k, v in sorted(self.stats.items())
                                         if k.startswith("ok_payload_method:")},
            "distinct_load_outcomes": len(outcomes),
            "max_seconds_per_target": self.stats.get("max_seconds_x1000", 0) / 1000,
            "max_traced_peak_bytes_per_declared_pixel": self.stats.get("max_peak_per_pixel_x1000", 0) / 1000,
            "mutators": dict(self.mutators),
            "top_load_outcomes": outcomes.most_common(25),
        }


@contextlib.contextmanager
def fuzz_environment(limits: Limits):
    """Lower MAX_IMAGE_PIXELS, silence bomb warnings, restore global Pillow state afterwards."""
    old_max, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    Image.init()  # import every Pillow plugin now, not inside the first measured open()
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        if started:
            tracemalloc.stop()
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_trunc


def run(seed: int = 0, iterations: int | None = None, seconds: float | None = None, limits: Limits | None = None,
        corpus: list[bytes] | None = None, minimise_findings: bool = True, out_dir: str | None = None,
        progress: bool = False, ignore: tuple = ()) -> Report:
    """Fuzz until ``iterations`` inputs or ``seconds`` elapsed (whichever comes first).

    Findings whose signature contains one of the ``ignore`` strings are counted in
    ``report.stats["ignored"]`` but not reported (known bugs, so the run can look further).
    """
    if iterations is None and seconds is None:
        raise ValueError("give iterations or seconds (or both)")
    limits = limits or Limits()
    rnd = random.Random(seed)
    report = Report(seed)
    t0 = time.monotonic()
    with fuzz_environment(limits):
        corpus = list(corpus) if corpus is not None else seed_corpus(seed)
        pool = list(corpus)  # grows with inputs that decode fine or reach the payload decoder
        for data in corpus:
            for f in check_input(data, limits, report.stats):
                if any(i in f.signature for i in ignore):
                    report.stats["ignored"] += 1
                elif f.signature not in report.findings:
                    report.findings[f.signature] = f
                    if progress:
                        print(f"FINDING (seed) {f.signature}: {f.detail.splitlines()[0]}", file=sys.stderr, flush=True)
        last = t0
        while True:
            if iterations is not None and report.inputs >= iterations:
                break
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            parent = rnd.choice(pool)
            data, name = mutate(rnd, parent, corpus)
            report.inputs += 1
            report.mutators[name] += 1
            before = report.stats.get("load:ok", 0)
            for f in check_input(data, limits, report.stats):
                if any(i in f.signature for i in ignore):
                    report.stats["ignored"] += 1
                    continue
                if f.signature not in report.findings:
                    if minimise_findings:
                        f.data = minimise(f.data, f.signature, limits)
                    report.findings[f.signature] = f
                    if out_dir:
                        os.makedirs(out_dir, exist_ok=True)
                        with open(os.path.join(out_dir, f.as_case()["name"]), "wb") as fh:
                            fh.write(f.data)
                    if progress:
                        print(f"FINDING {f.signature}: {f.detail.splitlines()[0]}", file=sys.stderr, flush=True)
            # keep valid mutants (new shapes) as parents, bounded
            if report.stats.get("load:ok", 0) > before and len(pool) < 200 and len(data) < 1 << 16:
                pool.append(data)
            if progress and time.monotonic() - last > 30:
                last = time.monotonic()
                print(f"[{last - t0:6.0f}s] {report.inputs} inputs, {len(report.findings)} findings",
                      file=sys.stderr, flush=True)
    report.seconds = time.monotonic() - t0
    return report


def memory_table(sizes=((512, 768), (2048, 2048))) -> list[dict]:
    """Traced peak bytes per pixel and seconds of ``format.decode`` and ``Image.open+load``, for the
    encoder's payload and every method/flag variant, on noise / runs / constant index maps."""
    rng = np.random.default_rng(0)
    rows = []
    Image.init()
    for h, w in sizes:
        for kind in ("noise", "runs", "constant"):
            k = 256
            indices = _indices(rng, h, w, k, kind)
            palette = rng.integers(0, 256, (k, 3), dtype=np.uint8)
            base = gcp_format.encode(indices, palette)
            sig, chunks, tail = split_chunks(base)
            i = _find(chunks, b"DATA")
            bodies = [("encoder", chunks[i][1])] + [
                (payload.coding_name(b), b) for b in _payload_variants(indices, k, rng)]
            for name, body in bodies:
                chunks[i][1] = body
                data = join_chunks(sig, chunks, tail)
                row = {"size": f"{w}x{h}", "kind": kind, "payload": name if name != "encoder"
                       else f"encoder ({payload.coding_name(body)})", "file_bytes": len(data)}
                for tname, fn in (("decode", _target_decode), ("load", _target_load)):
                    out = _measure(fn, data, trace=True, hard_timeout=None)
                    if not out.ok:
                        row[tname] = f"error {out.error}"
                        continue
                    again = _measure(fn, data, trace=False, hard_timeout=None)
                    row[f"{tname}_B_per_px"] = round(out.peak / (h * w), 2)
                    row[f"{tname}_s"] = round(again.seconds, 3)
                rows.append(row)
    return rows


def _atheris_main(argv: list[str], limits: Limits, ignore: tuple = ()) -> None:
    import atheris  # noqa: PLC0415 - optional

    corpus = seed_corpus(0)

    def test_one(data: bytes) -> None:
        with fuzz_environment(limits):
            found = [f for f in check_input(data, limits) if not any(i in f.signature for i in ignore)]
        if found:
            raise RuntimeError(f"{found[0].signature}: {found[0].detail}")

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rnd = random.Random(seed)
        if not data.startswith(MAGIC) or rnd.random() < 0.2:
            data = rnd.choice(corpus)
        if rnd.random() < 0.25:
            return atheris.Mutate(data, max_size)
        return mutate(rnd, data, corpus)[0][:max_size]

    if not any(not a.startswith("-") for a in argv):  # no corpus directory given: start from the seeds
        import tempfile  # noqa: PLC0415

        seeds = tempfile.mkdtemp(prefix="gcp-fuzz-corpus-")
        for i, data in enumerate(corpus):
            with open(os.path.join(seeds, f"seed{i:02d}.gcp"), "wb") as fh:
                fh.write(data)
        argv = [*argv, seeds]
    if not any(a.startswith("-artifact_prefix=") for a in argv):  # crash files go to a temp dir, not the cwd
        import tempfile  # noqa: PLC0415

        argv = [f"-artifact_prefix={tempfile.mkdtemp(prefix='gcp-fuzz-crash-')}/", *argv]
    atheris.instrument_all()  # coverage feedback for pillow_gcp (and PIL's Python code)
    atheris.Setup([sys.argv[0], *argv], test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="run this long (default 60 if no --iterations)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=1.0, help="max seconds per target and input")
    p.add_argument("--hard-timeout", type=float, default=20.0)
    p.add_argument("--max-pixels", type=int, default=1 << 20, help="Image.MAX_IMAGE_PIXELS during the run")
    p.add_argument("--alloc-per-pixel", type=float, default=8.0)
    p.add_argument("--rlimit-mb", type=int, default=0, help="RLIMIT_AS for the process (0: none)")
    p.add_argument("--out", default=None, help="write each (minimised) finding here as a .gcp file")
    p.add_argument("--json", default=None, help="write the summary here")
    p.add_argument("--no-minimise", action="store_true")
    p.add_argument("--atheris", action="store_true", help="libFuzzer-driven mode (extra args after --)")
    p.add_argument("--ignore", action="append", default=[], metavar="TEXT",
                   help="skip findings whose signature contains TEXT (known, reported bugs); repeatable")
    p.add_argument("--memory-table", action="store_true",
                   help="print decode memory (traced B/px) and time for every payload variant, then exit")
    p.add_argument("--threads-from", type=int, default=None, metavar="PIXELS",
                   help="decode CTX maps of this many pixels and more with the helper threads (the default "
                        "0.5 MP is larger than most fuzz inputs: 1 sends every complete CTX payload long enough to fill its "
                        "pixels at deflate's 1032:1 through them)")
    args, rest = p.parse_known_args(argv)
    if args.threads_from is not None:
        from pillow_gcp.payload import ctx as _ctx  # noqa: PLC0415

        _ctx.THREAD_MIN = args.threads_from
        _ctx.set_threads(2)
    if args.memory_table:
        for row in memory_table():
            print(json.dumps(row))
        return 0
    limits = Limits(time_limit=args.time_limit, hard_timeout=args.hard_timeout, max_pixels=args.max_pixels,
                    alloc_per_pixel=args.alloc_per_pixel)
    if args.rlimit_mb:
        import resource  # noqa: PLC0415

        resource.setrlimit(resource.RLIMIT_AS, (args.rlimit_mb << 20, args.rlimit_mb << 20))
    if args.atheris:
        try:
            import atheris  # noqa: F401, PLC0415
        except ImportError:
            print("atheris is not installed (pip install atheris); use the built-in mutator", file=sys.stderr)
            return 2
        _atheris_main([a for a in rest if a != "--"], limits, tuple(args.ignore))
        return 0
    seconds = args.seconds if args.seconds is not None or args.iterations is not None else 60.0
    report = run(args.seed, args.iterations, seconds, limits, minimise_findings=not args.no_minimise,
                 out_dir=args.out, progress=True, ignore=tuple(args.ignore))
    summary = report.summary()
    print(json.dumps(summary, indent=1))
    for sig, f in report.findings.items():
        print(f"\n== {sig}\n{f.detail}\nfuzz_cases entry: {json.dumps(f.as_case())}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**summary, "cases": [f.as_case() for f in report.findings.values()],
                       "details": {k: f.detail for k, f in report.findings.items()}}, fh, indent=1)
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
