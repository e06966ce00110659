"""The .gcp container, SPEC.md sections 1-5 in code: signature, chunks, CRCs.

Bytes in, arrays out. This module knows nothing of Pillow or of the quantizers;
the index-map coding inside the DATA chunk is :mod:`pillow_gcp.payload`
(SPEC.md section 6).

Layout (container integers little-endian)::

    signature  8 bytes  89 47 43 50 0D 0A 1A 0A
    chunk*     length u32 | type 4 ASCII letters | data (length bytes) | crc32 u32 over type+data

Chunk order: ``HEAD`` first (version 3), one palette chunk (``PLTE``: the entries
as they are; ``PLTZ``: a zlib stream of their channel planes, each plane as
differences), ``DATA`` once (after the palette), ``DONE`` last and empty.
Ancillary chunks (first letter lower-case) may stand anywhere between ``HEAD`` and ``DONE``; unknown ones are skipped
(their CRC checked in pieces, never held whole), known metadata chunks count
only before ``DATA`` and only the first of each type. Chunk types compare
byte for byte.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Dict

import numpy as np

from . import payload
from .errors import GCPFormatError
from .payload import streams

__all__ = [
    "MAGIC",
    "VERSION",
    "MAX_DIMENSION",
    "Header",
    "accept",
    "read_header",
    "read_payload",
    "decode_payload",
    "decode_indices",
    "check_crc",
    "check_trailer",
    "chunk_table",
    "encode",
    "decode",
    "write",
]

MAGIC = b"\x89GCP\r\n\x1a\n"
VERSION = 3  # the only version this module reads and writes (SPEC.md 3.1)
MAX_DIMENSION = 0x7FFFFFFF
MAX_CHUNK_LENGTH = 0x7FFFFFFF

_HEAD = struct.Struct("<BBHII")  # version, channels, palette_size, width, height
_CHUNK = struct.Struct("<I4s")  # length, type
_CRC = struct.Struct("<I")
_READ_PIECE = 1 << 20

# Ancillary metadata chunk types and the metadata keys they carry.
META_CHUNKS = {b"iccp": "icc_profile", b"exif": "exif", b"xmpd": "xmp", b"cmnt": "comment"}
META_KEYS = {v: k for k, v in META_CHUNKS.items()}


@dataclass
class Header:
    """What a reader knows after the chunks up to the start of the payload.

    ``palette`` is (palette_size, channels) uint8 with channels 3 (RGB) or 4
    (RGBA). ``payload_offset`` is the file offset of the first payload byte,
    ``payload_length`` its length in bytes (the CRC follows it).
    """

    width: int
    height: int
    palette: np.ndarray
    payload_offset: int
    payload_length: int
    metadata: Dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    @property
    def channels(self) -> int:
        return int(self.palette.shape[1])


def accept(prefix: bytes) -> bool:
    """True if ``prefix`` starts with the .gcp signature."""
    return prefix[:8] == MAGIC


class _Reader:
    """Reads exact byte counts from a stream, tracking the file offset."""

    def __init__(self, fp: IO[bytes], offset: int) -> None:
        self.fp = fp
        self.offset = offset

    def read(self, n: int, what: str) -> bytes:
        # Read big counts in pieces so a lying length field cannot make us
        # allocate more than the file really holds.
        if n <= _READ_PIECE:
            data = self.fp.read(n)
        else:
            pieces, got = [], 0
            while got < n:
                piece = self.fp.read(min(_READ_PIECE, n - got))
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            data = b"".join(pieces)
        if len(data) != n:
            raise GCPFormatError(
                f"truncated file: {what} needs {n} bytes, only {len(data)} present",
                self.offset + len(data),
            )
        self.offset += n
        return data

    def chunk(self) -> tuple[bytes, int, int]:
        """Read a chunk header: returns (type, length, offset of the chunk)."""
        start = self.offset
        length, ctype = _CHUNK.unpack(self.read(_CHUNK.size, "chunk header"))
        if not all(65 <= c <= 90 or 97 <= c <= 122 for c in ctype):
            raise GCPFormatError(f"bad chunk type {ctype!r}: must be 4 ASCII letters", start + 4)
        if length > MAX_CHUNK_LENGTH:
            raise GCPFormatError(f"chunk {ctype.decode()} length {length} exceeds 2^31-1", start)
        return ctype, length, start

    def skip(self, ctype: bytes, length: int) -> None:
        """Read past a chunk's data checking its CRC, in pieces (an unknown ancillary chunk)."""
        crc = zlib.crc32(ctype)
        left = length
        while left:
            piece = self.read(min(left, _READ_PIECE), f"{ctype.decode()} chunk data")
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
        check_crc(ctype, None, self.read(4, f"{ctype.decode()} chunk CRC"), self.offset - 4, crc=crc)

    def ancillary(self, ctype: bytes, length: int, metadata: Dict[str, Any] | None) -> None:
        """An ancillary chunk: kept in ``metadata`` if it is the first of a known type (SPEC.md 3.5),
        else skipped; its CRC is checked either way. ``metadata`` None: after DATA, nothing is kept."""
        key = META_CHUNKS.get(ctype)
        if metadata is None or key is None or key in metadata:
            self.skip(ctype, length)
            return
        body = self.body(ctype, length)
        metadata[key] = body.decode("utf-8", "replace") if key == "comment" else body

    def body(self, ctype: bytes, length: int) -> bytes:
        """Read a whole chunk's data and check its CRC."""
        data = self.read(length, f"{ctype.decode()} chunk data")
        check_crc(ctype, data, self.read(4, f"{ctype.decode()} chunk CRC"), self.offset - 4)
        return data


def check_crc(ctype: bytes, data: bytes | bytearray | memoryview | None, crc_bytes: bytes, offset: int, *,
              crc: int | None = None) -> None:
    """Raise GCPFormatError unless ``crc_bytes`` (u32 LE, at file ``offset``) is CRC-32 of type + data.

    ``crc``: the CRC-32 of type + data already computed (``data`` is then not used).
    """
    (stored,) = _CRC.unpack(crc_bytes)
    actual = zlib.crc32(data, zlib.crc32(ctype)) if crc is None else crc
    if stored != actual:
        raise GCPFormatError(
            f"CRC mismatch in {ctype.decode()} chunk: stored {stored:08x}, computed {actual:08x}",
            offset,
        )


def palette_planes(palette: np.ndarray) -> bytes:
    """What ``PLTZ`` deflates (SPEC.md 3.2): the (n, C) palette as C planes of n bytes (all R, then all G, ...),
    each byte the difference from the one before it in its plane, modulo 256 (the first from 0)."""
    planes = np.ascontiguousarray(palette.T)
    return np.diff(planes, axis=1, prepend=np.zeros((planes.shape[0], 1), np.uint8)).tobytes()


def palette_chunk(palette: np.ndarray) -> bytes:
    """The palette chunk the encoder writes: ``PLTZ`` when its zlib stream is shorter than the entries, else
    ``PLTE``."""
    raw = palette.tobytes()
    packed = streams.deflate(palette_planes(palette), 9)
    return _chunk(b"PLTZ", packed) if len(packed) < len(raw) else _chunk(b"PLTE", raw)


def _pltz(r: "_Reader", length: int, size: int, channels: int) -> np.ndarray:
    """The (size, channels) palette of a ``PLTZ`` chunk whose ``length`` data bytes ``r`` is at (SPEC.md 3.2).

    The data is read in pieces and inflated as it comes, keeping at most ``size * channels + 1`` bytes of output
    whatever the chunk's length (a valid stream may be padded with empty blocks); the CRC is checked before any
    fault of the stream is reported (class ``palette``, at the chunk's data)."""
    at, n = r.offset, size * channels
    crc = zlib.crc32(b"PLTZ")
    d = zlib.decompressobj()
    out = b""
    problem = None
    left = length
    while left:
        piece = r.read(min(left, _READ_PIECE), "PLTZ chunk data")
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
        if problem is not None:
            continue
        if d.eof:
            problem = "unexpected bytes after the end of the PLTZ stream"
            continue
        try:
            out += d.decompress(piece, n + 1 - len(out))
        except zlib.error as e:
            problem = f"corrupt PLTZ stream: {e}"
            continue
        if len(out) > n:
            problem = f"PLTZ stream decodes to more than the {n} bytes it must give"
        elif d.unused_data:
            problem = "unexpected bytes after the end of the PLTZ stream"
    check_crc(b"PLTZ", None, r.read(4, "PLTZ chunk CRC"), r.offset - 4, crc=crc)
    if problem is None and (len(out) < n or not d.eof):
        problem = (f"the stream {'ends' if d.eof else 'stops, unfinished,'} after {len(out)} of "
                   f"{size}*{channels}={n} bytes")
    if problem is not None:
        raise GCPFormatError(f"bad PLTZ palette: {problem}", at)
    planes = np.frombuffer(out, np.uint8).reshape(channels, size)
    # running sums modulo 256 down each plane, written as (size, channels) rows
    return np.add.accumulate(planes.T, axis=0, out=np.empty((size, channels), np.uint8))


def read_header(fp: IO[bytes], *, offset: int = 0) -> Header:
    """Parse signature, HEAD, the palette chunk (PLTE or PLTZ) and ancillary chunks up to the DATA chunk.

    ``fp`` is positioned at the signature (file offset ``offset``); on return it
    is positioned at the first payload byte. Raises :class:`GCPFormatError`
    (an ``OSError``) with the byte offset of the problem.
    """
    r = _Reader(fp, offset)
    sig = fp.read(len(MAGIC))
    if sig != MAGIC[: len(sig)]:
        raise GCPFormatError("not a GCP file: bad signature", offset)
    if len(sig) < len(MAGIC):
        raise GCPFormatError(f"truncated file: signature needs {len(MAGIC)} bytes, only {len(sig)} present",
                             offset + len(sig))
    r.offset += len(sig)

    ctype, length, start = r.chunk()
    if ctype != b"HEAD":
        raise GCPFormatError(f"first chunk must be HEAD, found {ctype!r}", start + 4)
    if length != _HEAD.size:
        raise GCPFormatError(f"HEAD chunk length must be {_HEAD.size}, found {length}", start)
    version, channels, size, width, height = _HEAD.unpack(r.body(ctype, length))
    data_at = start + 8
    if version != VERSION:
        raise GCPFormatError(f"unsupported format version {version} (this decoder reads {VERSION})", data_at)
    if channels not in (3, 4):
        raise GCPFormatError(f"palette channels must be 3 or 4, found {channels}", data_at + 1)
    if not 1 <= size <= 256:
        raise GCPFormatError(f"palette size must be 1..256, found {size}", data_at + 2)
    if not 1 <= width <= MAX_DIMENSION:
        raise GCPFormatError(f"width must be 1..{MAX_DIMENSION}, found {width}", data_at + 4)
    if not 1 <= height <= MAX_DIMENSION:
        raise GCPFormatError(f"height must be 1..{MAX_DIMENSION}, found {height}", data_at + 8)

    palette = None
    metadata: Dict[str, Any] = {}
    while True:
        ctype, length, start = r.chunk()
        if ctype in (b"PLTE", b"PLTZ"):
            if palette is not None:
                raise GCPFormatError(f"second palette chunk ({ctype.decode()})", start + 4)
            if ctype == b"PLTZ":
                palette = _pltz(r, length, size, channels)
                continue
            if length != size * channels:
                raise GCPFormatError(
                    f"PLTE chunk length must be {size}*{channels}={size * channels}, found {length}", start
                )
            palette = np.frombuffer(r.body(ctype, length), np.uint8).reshape(size, channels).copy()
        elif ctype == b"DATA":
            if palette is None:
                raise GCPFormatError("DATA chunk before the palette chunk (PLTE or PLTZ)", start + 4)
            return Header(width, height, palette, r.offset, length, metadata, version)
        elif ctype in (b"HEAD", b"DONE") or ctype[0] < 97:
            raise GCPFormatError(f"unexpected critical chunk {ctype.decode()} before DATA", start + 4)
        else:
            r.ancillary(ctype, length, metadata)


def read_payload(fp: IO[bytes], header: Header) -> bytes:
    """Read the payload and its CRC from ``fp`` (positioned at the payload) and check the CRC."""
    r = _Reader(fp, header.payload_offset)
    data = r.read(header.payload_length, "DATA chunk data")
    check_crc(b"DATA", data, r.read(4, "DATA chunk CRC"), r.offset - 4)
    return data


def decode_payload(data: bytes | bytearray | memoryview, header: Header, *, partial: bool = False) -> np.ndarray:
    """Decode the payload bytes (CRC already checked) to a (height, width) uint8 index map.

    Payload errors are re-raised with file offsets.
    """
    return decode_indices(data, header.width, header.height, len(header.palette), header.payload_offset,
                          partial=partial, version=header.version)


def decode_indices(data: bytes | bytearray | memoryview, width: int, height: int, palette_size: int,
                   payload_offset: int, *,
                   partial: bool = False, version: int = VERSION) -> np.ndarray:
    """:func:`payload.decode` with its errors rebased to file offsets (``payload_offset`` = first payload byte).

    ``version`` is the file's HEAD version, which :func:`read_header` has checked; any other value
    than :data:`VERSION` is an error here too.
    """
    if version != VERSION:
        raise GCPFormatError(f"unsupported format version {version} (this decoder reads {VERSION})", None)
    try:
        return payload.decode(data, width, height, palette_size, partial=partial)
    except GCPFormatError as e:
        raise e.rebased(payload_offset, "bad payload") from None


def check_trailer(fp: IO[bytes], offset: int) -> None:
    """Read and check the chunks after DATA up to DONE (``fp`` just after the DATA CRC, at file ``offset``).

    Ancillary chunks there are CRC-checked and skipped: metadata counts only before DATA
    (SPEC.md 3.5). Used by :func:`decode` and ``verify()``.
    """
    r = _Reader(fp, offset)
    while True:
        ctype, length, start = r.chunk()
        if ctype == b"DONE":
            if length != 0:
                raise GCPFormatError(f"DONE chunk must be empty, found length {length}", start)
            r.body(ctype, 0)
            return
        if ctype[0] < 97:
            raise GCPFormatError(f"unexpected critical chunk {ctype.decode()} after DATA", start + 4)
        r.ancillary(ctype, length, None)


def chunk_table(data: bytes) -> list[tuple[int, bytes, int]]:
    """``[(offset, type, length), ...]`` of the chunks of a file, for tools and tests.

    Walks the length fields only: no CRC or order checks, and it stops at the
    first chunk header that runs past the end of ``data``.
    """
    out, pos = [], len(MAGIC)
    while pos + _CHUNK.size <= len(data):
        length, ctype = _CHUNK.unpack_from(data, pos)
        out.append((pos, ctype, length))
        pos += _CHUNK.size + length + _CRC.size
    return out


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return _CHUNK.pack(len(data), ctype) + data + _CRC.pack(zlib.crc32(data, zlib.crc32(ctype)))


def _check_arrays(indices: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices)
    palette = np.asarray(palette)
    if indices.ndim != 2 or indices.shape[0] < 1 or indices.shape[1] < 1:
        raise ValueError(f"indices must be a non-empty (height, width) array, got shape {indices.shape}")
    if indices.dtype != np.uint8:
        raise TypeError(f"indices must be uint8, got {indices.dtype}")
    if palette.ndim != 2 or palette.shape[1] not in (3, 4) or not 1 <= palette.shape[0] <= 256:
        raise ValueError(f"palette must be (n, 3) or (n, 4) with 1 <= n <= 256, got shape {palette.shape}")
    if palette.dtype != np.uint8:
        raise TypeError(f"palette must be uint8, got {palette.dtype}")
    h, w = indices.shape
    if w > MAX_DIMENSION or h > MAX_DIMENSION:
        raise ValueError(f"image dimensions must be at most {MAX_DIMENSION}, got {w}x{h}")
    if int(indices.max()) >= palette.shape[0]:
        raise ValueError(f"indices reference entry {int(indices.max())} of a {palette.shape[0]}-entry palette")
    return np.ascontiguousarray(indices), np.ascontiguousarray(palette)


def encode(indices: np.ndarray, palette: np.ndarray, metadata: Dict[str, Any] | None = None, *,
           level: int | None = None) -> bytes:
    """Encode a whole .gcp file.

    indices: (height, width) uint8, each < len(palette). palette: (n, 3) or
    (n, 4) uint8, 1 <= n <= 256. metadata: optional dict with any of the keys
    ``icc_profile``, ``exif``, ``xmp`` (bytes) and ``comment`` (str or bytes).
    level: payload effort 0..9 (None: 6), see :func:`payload.encode`.
    """
    payload.check_level(level)
    indices, palette = _check_arrays(indices, palette)
    h, w = indices.shape
    n, channels = palette.shape
    meta = []  # metadata checked before the (possibly long) payload encode
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        if key not in META_KEYS:
            raise ValueError(f"unknown metadata key {key!r}; allowed: {sorted(META_KEYS)}")
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"metadata {key!r} must be bytes or str, got {type(value).__name__}")
        if len(value) > MAX_CHUNK_LENGTH:
            raise ValueError(f"metadata {key!r} is too large ({len(value)} bytes)")
        meta.append(_chunk(META_KEYS[key], bytes(value)))
    body = payload.encode(indices, n, level=level)
    parts = [MAGIC, _chunk(b"HEAD", _HEAD.pack(VERSION, channels, n, w, h)), palette_chunk(palette)]
    parts += meta
    parts.append(_chunk(b"DATA", body))
    parts.append(_chunk(b"DONE", b""))
    return b"".join(parts)


def write(fp: BinaryIO, indices: np.ndarray, palette: np.ndarray, metadata: Dict[str, Any] | None = None, *,
          level: int | None = None) -> None:
    """Encode fully in memory, then write in one call (nothing half-encoded is written)."""
    fp.write(encode(indices, palette, metadata, level=level))


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Decode a whole .gcp file from bytes.

    Returns ``(indices, palette, metadata)``: indices (height, width) uint8,
    palette (n, 3 or 4) uint8, metadata dict. Raises :class:`GCPFormatError`.
    """
    fp = io.BytesIO(data)
    header = read_header(fp)
    raw = read_payload(fp, header)
    indices = decode_payload(raw, header)
    check_trailer(fp, fp.tell())
    return indices, header.palette, dict(header.metadata)
