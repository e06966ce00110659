"""Coding of the palette-index map (the ``.gcp`` payload).

The payload is self-describing: its first byte is a *method id*, followed by
the method's parameters and data.  :func:`encode` tries the methods allowed
by ``level`` and keeps the smallest result; :func:`decode` reads any of them.
See SPEC.md, section "Payload", for the byte-exact definition.

Methods
-------
0  STORED : the H*W index bytes, row-major.
1  ZLIB   : a zlib stream (RFC 1950) inflating to exactly H*W index bytes.
2  LZMA2  : a raw LZMA2 stream (as in .xz, no container) inflating to exactly
            H*W index bytes, dictionary size max(4096, H*W).

No Pillow import here: bytes in, arrays out.
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

from .errors import GCPFormatError

__all__ = ["encode", "decode", "METHOD_STORED", "METHOD_ZLIB", "METHOD_LZMA2"]

METHOD_STORED = 0
METHOD_ZLIB = 1
METHOD_LZMA2 = 2

_CHUNK = 1 << 16  # compressed bytes fed to a decompressor per call


def _check_args(width: int, height: int, palette_size: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if not isinstance(palette_size, (int, np.integer)) or not 1 <= palette_size <= 256:
        raise ValueError(f"palette_size must be an int in 1..256, got {palette_size!r}")


def _check_indices(indices, palette_size: int) -> np.ndarray:
    if not isinstance(palette_size, (int, np.integer)) or not 1 <= palette_size <= 256:
        raise ValueError(f"palette_size must be an int in 1..256, got {palette_size!r}")
    a = np.asarray(indices)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"indices must be a non-empty 2-D (H, W) array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise TypeError(f"indices must have dtype uint8, got {a.dtype}")
    if int(a.max()) >= palette_size:
        raise ValueError(
            f"indices must all be < palette_size={palette_size}, found {int(a.max())}")
    return np.ascontiguousarray(a)


def _lzma2_filters(n: int, preset: int = 6) -> list:
    return [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": max(4096, n),
             "lc": 0, "lp": 0, "pb": 0}]


# ----------------------------------------------------------------------------- encode

def encode(indices: np.ndarray, palette_size: int, *, level: int | None = None) -> bytes:
    """Encode an index map.

    Parameters
    ----------
    indices : ndarray, shape (H, W), dtype uint8
        Palette indices, every value < ``palette_size``.
    palette_size : int
        Number of palette entries, 1..256.
    level : int or None
        0 = stored (fastest), 1..9 = effort; None means the default (6).

    Returns
    -------
    bytes
        The payload; deterministic for given inputs and level.
    """
    a = _check_indices(indices, palette_size)
    if level is None:
        level = 6
    if not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"level must be None or an int in 0..9, got {level!r}")
    raw = a.tobytes()
    cands = [bytes([METHOD_STORED]) + raw]
    if level >= 1:
        cands.append(bytes([METHOD_ZLIB]) + zlib.compress(raw, min(level, 9)))
    if level >= 6:
        cands.append(bytes([METHOD_LZMA2]) + lzma.compress(
            raw, format=lzma.FORMAT_RAW, filters=_lzma2_filters(len(raw))))
    return min(cands, key=len)  # first of the smallest: deterministic


# ----------------------------------------------------------------------------- decode

def _inflate(kind: str, data: memoryview, start: int, n: int, partial: bool) -> bytes:
    """Stream-decompress data[start:] into exactly n bytes, never producing more than n+1."""
    if kind == "zlib":
        d = zlib.decompressobj()
        err = zlib.error
    else:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma2_filters(n))
        err = lzma.LZMAError
    out = []
    got = 0
    pos = start
    end = len(data)
    pending = b""  # zlib: unconsumed input after hitting max_length
    while True:
        if kind == "zlib":
            if pending:
                chunk = pending
            elif pos < end:
                chunk = data[pos:pos + _CHUNK]
                pos += len(chunk)
            else:
                break
            try:
                piece = d.decompress(chunk, n + 1 - got)
            except err as e:
                raise GCPFormatError(f"corrupt zlib stream: {e}", pos) from None
            pending = d.unconsumed_tail
            got += len(piece)
            out.append(piece)
            if got > n:
                raise GCPFormatError("zlib stream inflates past width*height bytes",
                                     end - len(pending))
            if d.eof:
                stream_end = pos - len(d.unused_data) - len(pending)
                if stream_end < end:
                    raise GCPFormatError("trailing bytes after the zlib stream", stream_end)
                break
        else:
            if d.needs_input:
                if pos >= end:
                    break
                chunk = data[pos:pos + _CHUNK]
                pos += len(chunk)
            else:
                chunk = b""
            try:
                piece = d.decompress(chunk, n + 1 - got)
            except err as e:
                raise GCPFormatError(f"corrupt LZMA2 stream: {e}", pos) from None
            got += len(piece)
            out.append(piece)
            if got > n:
                raise GCPFormatError("LZMA2 stream decodes past width*height bytes", pos)
            if d.eof:
                stream_end = pos - len(d.unused_data)
                if stream_end < end:
                    raise GCPFormatError("trailing bytes after the LZMA2 stream", stream_end)
                break
    buf = b"".join(out)
    if len(buf) < n or not d.eof:
        if not partial:
            if len(buf) < n:
                raise GCPFormatError(
                    f"truncated {kind} stream: {len(buf)} of {n} index bytes", end)
            raise GCPFormatError(f"truncated {kind} stream: end marker missing", end)
        buf = buf[:n] + bytes(n - min(len(buf), n))
    return buf


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
    _check_args(width, height, palette_size)
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    n = int(width) * int(height)
    if len(mv) < 1:
        if partial:
            return np.zeros((height, width), np.uint8)
        raise GCPFormatError("empty payload: method byte missing", 0)
    method = mv[0]
    if method == METHOD_STORED:
        body = mv[1:]
        if len(body) > n:
            raise GCPFormatError("trailing bytes after stored indices", 1 + n)
        if len(body) < n:
            if not partial:
                raise GCPFormatError(f"truncated stored indices: {len(body)} of {n} bytes", len(mv))
            arr = np.zeros(n, np.uint8)
            arr[:len(body)] = np.frombuffer(body, np.uint8)
        else:
            arr = np.frombuffer(body, np.uint8).copy()
        first = 1
    elif method in (METHOD_ZLIB, METHOD_LZMA2):
        buf = _inflate("zlib" if method == METHOD_ZLIB else "lzma2", mv, 1, n, partial)
        arr = np.frombuffer(buf, np.uint8).copy()
        first = 1
    else:
        raise GCPFormatError(f"unknown payload method {method}", 0)
    arr = arr.reshape(height, width)
    if palette_size < 256:
        bad = arr >= palette_size
        if bad.any():
            i = int(np.argmax(bad.ravel()))
            off = first + i if method == METHOD_STORED else first
            raise GCPFormatError(
                f"index {int(arr.flat[i])} >= palette_size {palette_size} at pixel {i}", off)
    return arr
