"""Pillow glue for .gcp: the ImageFile subclass, the decoder, ``_save``.

The bytes are :mod:`pillow_gcp.format`'s business, the colours are
:mod:`pillow_gcp.quantizers`'s; this module only meets the two with Pillow.
"""

from __future__ import annotations

import re
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImagePalette

from . import format as gcp_format
from . import payload
from .quantizers import check_params, quantize_to_arrays

FORMAT = "GCP"
MIME = "image/x-gcp"
EXTENSION = ".gcp"

# one fully transparent entry, all others opaque (fullmatch: "$" would accept a trailing 0x0A)
_simple_alpha = re.compile(b"\xff*\x00\xff*")


def _accept(prefix: bytes) -> bool:
    return gcp_format.accept(prefix)


class GcpImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "GCP palette image (clustered colours)"

    def _open(self) -> None:
        assert self.fp is not None
        if not _accept(self.fp.read(8)):
            msg = "not a GCP file"
            raise SyntaxError(msg)
        self.fp.seek(-8, 1)
        start = self.fp.tell()
        header = gcp_format.read_header(self.fp, offset=start)
        self._gcp_header = header
        self._size = (header.width, header.height)
        self._mode = "P"

        palette = header.palette
        self.palette = ImagePalette.raw("RGB", palette[:, :3].tobytes())
        if header.channels == 4:
            alpha = palette[:, 3].tobytes()
            self.info["transparency"] = alpha.index(0) if _simple_alpha.fullmatch(alpha) else alpha
        self.info.update(header.metadata)
        self.info["gcp_version"] = header.version
        self.info["gcp_palette_channels"] = header.channels
        self.info["gcp_payload_bytes"] = header.payload_length
        self.tile = [
            ImageFile._Tile(
                FORMAT,
                (0, 0, *self._size),
                header.payload_offset,
                (header.payload_offset, header.payload_length, len(palette), header.version),
            )
        ]

    def verify(self) -> None:
        """Check every CRC and decode the payload, without keeping the pixels."""
        if self.fp is None:
            msg = "verify must be called directly after open"
            raise RuntimeError(msg)
        header = self._gcp_header
        self.fp.seek(header.payload_offset)
        raw = gcp_format.read_payload(self.fp, header)
        gcp_format.decode_payload(raw, header)
        gcp_format.check_trailer(self.fp, header.payload_offset + header.payload_length + 4)
        super().verify()


class GcpDecoder(ImageFile.PyDecoder):
    """Collects the DATA chunk (payload + CRC) from the buffers it is fed, then decodes.

    Works from the buffers alone, so ``ImageFile.Parser`` can feed it in pieces.
    """

    _pulls_fd = False

    def init(self, args) -> None:
        self._payload_offset, self._length, self._palette_size, self._version = args
        self._buffer = bytearray()
        self._complete = False  # the whole DATA chunk (payload + CRC) has arrived

    def decode(self, buffer) -> tuple[int, int]:
        need = self._length + 4 - len(self._buffer)
        self._buffer += buffer[:need]
        if len(self._buffer) < self._length + 4:
            return len(buffer), 0
        self._complete = True  # whatever happens now, the data is not truncated
        data = memoryview(self._buffer)[: self._length]
        gcp_format.check_crc(b"DATA", data, bytes(self._buffer[self._length :]), self._payload_offset + self._length)
        self._finish(data, partial=False)
        return -1, 0

    def _finish(self, data, *, partial: bool) -> None:
        indices = gcp_format.decode_indices(
            data, self.state.xsize, self.state.ysize, self._palette_size, self._payload_offset, partial=partial,
            version=self._version,
        )
        self.set_as_raw(indices.tobytes(), "P")

    def cleanup(self) -> None:
        # Pillow calls this after the read loop, also when decode() raised; only
        # when the file ended early (and the user asked for truncated images)
        # is there a partial image to show.
        if not self._complete and ImageFile.LOAD_TRUNCATED_IMAGES and self.im is not None:
            self._finish(memoryview(self._buffer)[: self._length], partial=True)
        self._buffer = bytearray()


# --------------------------------------------------------------------------- save

_LOSSLESS_MODES = ("P", "L", "1")


def _palette_of(im: Image.Image) -> np.ndarray:
    """(n, 3) or (n, 4) uint8 palette of a P image, with its transparency as alpha."""
    mode = im.palette.mode if im.palette is not None else "RGB"
    rgba = np.frombuffer(bytes(im.getpalette("RGBA") or b""), np.uint8).reshape(-1, 4).copy()
    transparency = im.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < len(rgba):
        rgba[transparency, 3] = 0
    elif isinstance(transparency, (bytes, bytearray)):
        alpha = np.frombuffer(bytes(transparency[: len(rgba)]), np.uint8)
        rgba[: len(alpha), 3] = alpha
    if mode != "RGBA" and transparency is None:
        return rgba[:, :3].copy()
    return rgba


def _lossless_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Exact (indices, palette) for P, L and 1 images: same palette, same indices for P."""
    if im.mode == "P":
        indices = np.asarray(im, dtype=np.uint8)
        palette = _palette_of(im)
        used = int(indices.max()) + 1
        if len(palette) < used:  # Pillow treats missing entries as black
            pad = np.zeros((used - len(palette), palette.shape[1]), np.uint8)
            if palette.shape[1] == 4:
                pad[:, 3] = 255
            palette = np.vstack([palette, pad])
        if len(palette) == 0:
            palette = np.zeros((1, 3), np.uint8)
        if palette.shape[1] == 4 and (palette[:, 3] == 255).all():
            palette = palette[:, :3].copy()
        return indices, palette
    levels = np.asarray(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    present = np.bincount(levels.ravel(), minlength=256) > 0
    values = np.flatnonzero(present).astype(np.uint8)
    lut = np.zeros(256, np.uint8)
    lut[values] = np.arange(len(values), dtype=np.uint8)
    palette = np.repeat(values[:, None], 3, axis=1)
    return lut[levels], palette


def metadata_of(im: Image.Image) -> dict:
    """The metadata of ``im.info`` that .gcp keeps: ICC profile, EXIF, XMP, comment.

    XMP is also taken from PNG's ``XML:com.adobe.xmp``; values of other types than
    bytes/str (or ``Image.Exif``) are left out rather than failing the save.
    """
    info = im.info
    meta = {}
    for key in gcp_format.META_KEYS:
        value = info.get(key)
        if value is None and key == "xmp":
            value = info.get("XML:com.adobe.xmp")
        if isinstance(value, Image.Exif):
            value = value.tobytes()
        if isinstance(value, (bytes, bytearray, str)) and value:
            meta[key] = value
    return meta


_QUANTIZE_KEYS = ("k", "algo", "seed", "metric", "space", "dither", "fixed_colors", "palette")


def payload_level(info: dict) -> int:
    """The payload effort of a save: ``compress_level`` 0..9 (default 6; Pillow's PNG name), or 9
    with ``optimize=True`` (every coding tried, slow on big images)."""
    if info.get("compress_level") is not None:
        return payload.check_level(info["compress_level"], "compress_level")
    return 9 if info.get("optimize") else 6


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    info = im.encoderinfo
    level = payload_level(info)
    params = {key: info[key] for key in _QUANTIZE_KEYS if key in info}
    lossless = im.mode in _LOSSLESS_MODES and not any(
        params.get(key) is not None for key in ("k", "fixed_colors", "palette")
    )
    if lossless:
        check_params(**params)  # bad arguments fail even when unused
        indices, palette = _lossless_arrays(im)
    else:
        indices, palette = quantize_to_arrays(im, **params)
    metadata = metadata_of(im)
    for key in gcp_format.META_KEYS:  # explicit save arguments win, and are validated by encode
        if info.get(key) is not None:
            value = info[key]
            metadata[key] = value.tobytes() if isinstance(value, Image.Exif) else value
    # Everything is encoded in memory first: a bad argument or a failure
    # leaves nothing half-written.
    fp.write(gcp_format.encode(indices, palette, metadata, level=level))


def register() -> None:
    """Register the GCP format with Pillow (idempotent)."""
    Image.register_open(FORMAT, GcpImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder(FORMAT, GcpDecoder)
