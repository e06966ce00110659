"""Entropy back-end helpers (SPEC 6.2): zlib / LZMA2 streams written and read with exact, bounded sizes.

A *stream* occupies a known extent ``data[start:end]`` of the payload and must decode to a
known number of bytes. :func:`inflate` never produces more than that bound (plus one byte to
notice an overrun), so memory stays linear in the declared image size whatever the input.
No threads, no global state.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from typing import NamedTuple

from ..errors import GCPFormatError

MAX_DICT = 1536 << 20  # liblzma's largest LZMA2 dictionary (1.5 GiB)
U32 = struct.Struct("<I")


def lzma2_filters(decoded_size: int, preset: int = 6, lc: int = 4) -> list:
    """LZMA2 filter chain; dictionary ``min(max(4096, decoded_size), 1.5 GiB)`` (SPEC 6)."""
    return [{"id": lzma.FILTER_LZMA2, "preset": preset,
             "dict_size": min(max(4096, decoded_size), MAX_DICT), "lc": lc, "lp": 0, "pb": 0}]


def lzma2(raw, decoded_size: int | None = None, *, preset: int = 6, lc: int = 4) -> bytes:
    """A raw LZMA2 stream (no container) of ``raw``."""
    size = len(raw) if decoded_size is None else decoded_size
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=lzma2_filters(size, preset, lc))


def deflate(raw, level: int = 9, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    """A zlib stream (RFC 1950, 32 KiB window, memLevel 9) of ``raw``."""
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    return c.compress(raw) + c.flush()


def deflate_best(raw, level: int = 9) -> bytes:
    """The smaller of the default-strategy and Huffman-only zlib streams (ties: default)."""
    a = deflate(raw, level)
    b = deflate(raw, level, zlib.Z_HUFFMAN_ONLY)
    return b if len(b) < len(a) else a


class Decoded(NamedTuple):
    data: bytes     # what the stream produced (at most the bound)
    complete: bool  # the end marker was reached (and exactly at the extent's end)


_WALK_MAX = 1 << 16  # LZMA2 chunk headers read ahead at most (a real stream has one per <= 2 MiB of output)


def lzma2_most(mv: memoryview, start: int, end: int, bound: int) -> int:
    """The most the LZMA2 stream in ``mv[start:end]`` can produce, capped at ``bound``: the unpacked sizes its
    chunk headers declare (SPEC 6.2), read without decoding. The dictionary never needs to be larger (no
    match reaches further back than the output), so a tiny stream under a huge declared image costs a tiny
    dictionary; an unusual stream (more than ``_WALK_MAX`` chunks) gets ``bound``."""
    total, pos = 0, start
    for _ in range(_WALK_MAX):
        if pos >= end or total >= bound:
            return min(total, bound)
        c = mv[pos]
        if c == 0x00 or 0x03 <= c <= 0x7F:  # end marker, or a control byte liblzma rejects
            return min(total, bound)
        if c <= 0x02:  # uncompressed chunk: u16 BE size - 1, then the data
            if pos + 3 > end:
                return min(total, bound)
            size = (mv[pos + 1] << 8 | mv[pos + 2]) + 1
            total += size
            pos += 3 + size
        else:  # LZMA chunk: 5 bits + u16 BE unpacked - 1, u16 BE packed - 1, [properties from 0xC0], data
            if pos + 5 > end:
                return min(total, bound)
            total += ((c & 0x1F) << 16 | mv[pos + 1] << 8 | mv[pos + 2]) + 1
            pos += 5 + (c >= 0xC0) + (mv[pos + 3] << 8 | mv[pos + 4]) + 1
    return bound


def inflate(kind: str, mv: memoryview, start: int, end: int, bound: int, what: str) -> Decoded:
    """Decode the ``kind`` ("zlib" or "lzma2") stream occupying exactly ``mv[start:end]``.

    At most ``bound`` bytes are produced; more is an error (at ``start``). Bytes left in the
    extent after the end marker are an error (at the first of them). Corrupt data is an error at
    ``start`` (where this decoder fed it: SPEC offsets inside a stream are informative). A stream
    that stops before its end marker is returned with ``complete=False``: the caller decides
    whether truncation is an error.
    """
    if kind == "zlib":
        d = zlib.decompressobj()
        errors: tuple = (zlib.error,)
    else:
        try:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=lzma2_filters(lzma2_most(mv, start, end, bound)))
        except (ValueError, lzma.LZMAError, MemoryError) as e:  # pragma: no cover - liblzma limits
            raise GCPFormatError(f"cannot set up the LZMA2 decoder for the {what}: {e}", start) from None
        errors = (lzma.LZMAError, MemoryError, EOFError)
    try:
        out = d.decompress(mv[start:end], bound + 1)
    except errors as e:
        raise GCPFormatError(f"corrupt {what}: {e}", start) from None
    if len(out) > bound:
        raise GCPFormatError(f"{what} decodes to more than the {bound} bytes it must give", start)
    if not d.eof:
        if kind == "zlib" and d.unconsumed_tail:  # pragma: no cover - only when out > bound
            raise GCPFormatError(f"{what} decodes to more than the {bound} bytes it must give", start)
        return Decoded(out, False)
    extra = len(d.unused_data)
    if extra:
        raise GCPFormatError(f"unexpected bytes after the end of the {what}", end - extra)
    return Decoded(out, True)


def exact(kind: str, mv: memoryview, start: int, end: int, n: int, what: str, partial: bool) -> bytes:
    """A stream that must decode to exactly ``n`` bytes; with ``partial`` a truncated stream
    returns its decoded prefix (shorter than ``n``). A complete stream that is short is always an error."""
    got = inflate(kind, mv, start, end, n, what)
    if len(got.data) < n or not got.complete:
        if got.complete:
            raise GCPFormatError(f"{what} ends after {len(got.data)} of {n} bytes", start)
        if not partial:
            raise GCPFormatError(f"truncated payload: {what} stops after {len(got.data)} of {n} bytes"
                                 + ("" if len(got.data) < n else ", end marker missing"), len(mv))
    return got.data


def read_u32(mv: memoryview, pos: int, what: str, partial: bool) -> int | None:
    """The u32 at ``pos``; None (partial) or a truncation error when the payload is shorter."""
    if len(mv) < pos + 4:
        if partial:
            return None
        raise GCPFormatError(f"truncated payload: {what} incomplete", len(mv))
    return U32.unpack_from(mv, pos)[0]
