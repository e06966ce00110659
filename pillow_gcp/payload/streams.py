"""Entropy back-end helpers: zlib / LZMA2 streams written and read with exact, bounded sizes.

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
            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=lzma2_filters(bound))
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
