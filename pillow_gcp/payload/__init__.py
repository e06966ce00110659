"""Coding of the palette-index map (the ``.gcp`` payload, SPEC.md section 6, format version 3).

The payload's first byte names the coding:

0  ZLIB   : the N = width*height indices, raster order, as one zlib stream   (:mod:`.plain`)
1  CTX    : each index as its rank in an order chosen by its neighbours (above; with flag
            LEFT also left) inside 64x64 tiles; a table of per-context orders and the
            ranks (flag ZFLAGS: zero-flag plane + nonzero ranks), all zlib   (:mod:`.ctx`)
2  LZMA2  : the indices as one LZMA2 stream                                   (:mod:`.plain`)

:func:`encode` picks the coding with :func:`choose` (a fixed rule on the map's size and palette
size; only small maps are coded twice), :func:`decode` reads any of them. Bytes in,
arrays out; no Pillow here. The payload code starts no threads and keeps no global state.
"""

from __future__ import annotations

import numpy as np

from ..errors import GCPFormatError
from . import ctx, plain, streams

__all__ = ["encode", "decode", "encode_as", "choose", "check_level", "coding_name", "fill_order",
           "CODINGS", "METHOD_ZLIB", "METHOD_CTX", "METHOD_LZMA2", "FLAG_LEFT", "FLAG_ZFLAGS"]

METHOD_ZLIB = plain.METHOD_ZLIB
METHOD_CTX = ctx.METHOD
METHOD_LZMA2 = plain.METHOD_LZMA2
FLAG_LEFT = ctx.FLAG_LEFT
FLAG_ZFLAGS = ctx.FLAG_ZFLAGS

CODINGS = ("zlib", "ctx-up", "ctx-up-zflags", "ctx-left", "ctx-left-zflags", "lzma2")
_CTX_FLAGS = {"ctx-up": 0, "ctx-up-zflags": FLAG_ZFLAGS, "ctx-left": FLAG_LEFT,
              "ctx-left-zflags": FLAG_LEFT | FLAG_ZFLAGS}

DEFAULT_LEVEL = 6
SMALL = 1 << 16     # pixels: maps up to this size with k > 16 also try LZMA2 (sprites, tiles)
BIG = 1 << 18       # pixels: above this, k > 64 maps get plain ranks (faster to decode, < 1 % larger)


def check_level(level, name: str = "level") -> int:
    """The effort level, 0..9 (None: the default 6); ValueError naming ``name`` otherwise."""
    if level is None:
        return DEFAULT_LEVEL
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"{name} must be None or an int in 0..9, got {level!r}")
    return int(level)


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


def codings_for(k: int) -> tuple:
    """The codings valid for palette size ``k`` (LEFT needs k <= 64)."""
    return tuple(c for c in CODINGS if not (c.startswith("ctx-left") and k > ctx.LEFT_MAX_K))


def choose(shape: tuple, k: int, level: int = DEFAULT_LEVEL) -> tuple:
    """The codings :func:`encode` writes for a map of ``shape`` (H, W) and palette size ``k``
    at ``level``; when several are named, all are coded and the smallest kept.

    * levels 0-3: ZLIB at that zlib level (0 = stored blocks); k = 1: ZLIB;
    * level 9: every coding valid for k, with several zlib strategies per stream;
    * levels 4-8, the model:
      - context (L, U) (LEFT) when k <= 64; else U alone (the k^2-context table costs too much);
      - zero-flag plane (ZFLAGS), except k > 64 on maps over 2^18 pixels (plain ranks: < 1 %
        larger there, decodes faster);
      - maps of at most 2^16 pixels with k > 16 are also coded as LZMA2 over the raw indices and
        the smaller kept: LZMA2 wins on sprites and tiles (repeated 2-D patterns: 31 of the 40
        palette graphics) and on some small photos, CTX on the others (LZMA2 alone there: +4 % /
        +6 % median on the 256x256 photos of photos-more at k = 64 / 256); both are cheap at that size.
    Elsewhere exactly one coding is written below level 9.
    """
    h, w = shape
    n = h * w
    if level <= 3 or k == 1:
        return ("zlib",)
    if level == 9:
        return codings_for(k)
    left = k <= ctx.LEFT_MAX_K
    zflags = not (k > 64 and n > BIG)
    name = "ctx-" + ("left" if left else "up") + ("-zflags" if zflags else "")
    return (name, "lzma2") if n <= SMALL and k > 16 else (name,)


def encode_as(indices: np.ndarray, palette_size: int, coding: str, *, level: int = DEFAULT_LEVEL) -> bytes:
    """The payload of ``indices`` in one named coding (one of :data:`CODINGS`)."""
    a = _check_indices(indices, palette_size)
    level = check_level(level)
    if coding == "zlib":
        return plain.encode_zlib(a, level if level <= 3 else 9)
    if coding == "lzma2":
        return plain.encode_lzma2(a)
    if coding in _CTX_FLAGS:
        f = _CTX_FLAGS[coding]
        return ctx.encode(a, palette_size, left=bool(f & FLAG_LEFT), zflags=bool(f & FLAG_ZFLAGS),
                          search=level == 9)
    raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")


def encode(indices: np.ndarray, palette_size: int, *, level: int | None = None) -> bytes:
    """Encode an index map.

    Parameters
    ----------
    indices : ndarray, shape (H, W), dtype uint8, every value < palette_size
    palette_size : int, 1..256
    level : int 0..9 or None (6): effort, see :func:`choose`

    Returns
    -------
    bytes : the payload (SPEC.md section 6).
    """
    level = check_level(level)
    a = _check_indices(indices, palette_size)
    best = None
    for coding in choose(a.shape, palette_size, level):
        p = encode_as(a, palette_size, coding, level=level)
        if best is None or len(p) < len(best):
            best = p
    return best


def coding_name(head: bytes) -> str:
    """The coding a payload uses, from its first bytes: one of :data:`CODINGS`,
    ``"method N"`` for an unknown method, ``"empty"``."""
    if not head:
        return "empty"
    m = head[0]
    if m == METHOD_ZLIB:
        return "zlib"
    if m == METHOD_LZMA2:
        return "lzma2"
    if m == METHOD_CTX:
        f = head[1] if len(head) > 1 else 0
        return "ctx-" + ("left" if f & FLAG_LEFT else "up") + ("-zflags" if f & FLAG_ZFLAGS else "")
    return f"method {m}"


def fill_order(payload: bytes, width: int, height: int) -> np.ndarray:
    """(N,) intp: raster pixel numbers in the order a truncated payload fills them (all codings: raster)."""
    return np.arange(width * height, dtype=np.intp)


def decode(data, width: int, height: int, palette_size: int, *, partial: bool = False) -> np.ndarray:
    """Decode a payload to the (height, width) uint8 index map.

    ``partial=True`` (Pillow's LOAD_TRUNCATED_IMAGES): a truncated payload gives its decoded
    prefix (raster order) and index 0 elsewhere; corrupt data still raises. Raises
    :class:`GCPFormatError` with a payload offset (0 = the method byte) for bad data.
    """
    k = _check_k(palette_size)
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    width, height = int(width), int(height)
    mv = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    if len(mv) == 0:
        if partial:
            return np.zeros((height, width), np.uint8)
        raise GCPFormatError("payload empty: method byte missing", 0)
    m = mv[0]
    if m in (METHOD_ZLIB, METHOD_LZMA2):
        return plain.decode(mv, width, height, k, partial)
    if m == METHOD_CTX:
        return ctx.decode(mv, width, height, k, partial)
    raise GCPFormatError(f"unknown payload method {m} (this decoder reads 0..2)", 0)
