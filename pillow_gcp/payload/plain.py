"""Methods 0 (ZLIB) and 2 (LZMA2), SPEC 6.3: the index map itself, raster order, as one
zlib or LZMA2 stream.

ZLIB is the fast path (levels 0-3), the coding of k = 1 maps and of small noisy sprites (it decodes faster
than PNG-8, where CTX's fixed cost and LZMA2's ~60 ns per byte would not); LZMA2 wins on small palette
graphics with flat areas and repeats (sprites, tiles, mazes), where its decode stays within 3x PNG-8's.
"""

from __future__ import annotations

import numpy as np

from ..errors import GCPFormatError
from . import streams

METHOD_ZLIB = 0
METHOD_LZMA2 = 2
_KIND = {METHOD_ZLIB: "zlib", METHOD_LZMA2: "lzma2"}


def encode_zlib(a: np.ndarray, level: int = 9) -> bytes:
    return bytes([METHOD_ZLIB]) + streams.deflate(a.tobytes(), level)


def encode_lzma2(a: np.ndarray) -> bytes:
    return bytes([METHOD_LZMA2]) + streams.lzma2(a.tobytes(), a.size, preset=6, lc=4)


def decode(mv: memoryview, width: int, height: int, k: int, partial: bool) -> np.ndarray:
    n = width * height
    method = mv[0]
    what = f"{_KIND[method]} index stream"
    data = streams.exact(_KIND[method], mv, 1, len(mv), n, what, partial)
    out = np.zeros(n, np.uint8)
    got = np.frombuffer(data, np.uint8)
    if got.size and int(got.max()) >= k:
        raise GCPFormatError(f"index {int(got.max())} in the {what} is >= palette size {k}", 1)
    out[:got.size] = got
    return out.reshape(height, width)
