"""Pillow glue for .gcp: the ImageFile subclass, the decoder, ``_save``.

The bytes are :mod:`pillow_gcp.format`'s business, the colours are
:mod:`pillow_gcp.quantizers`'s; this module only meets the two with Pillow.
"""

from __future__ import annotations

import re
from typing import IO, Any, Dict, Tuple

from PIL import Image, ImageFile, ImagePalette

# adapter, format and payload (numpy) are imported where used: ``import pillow_gcp`` registers the
# plugin without loading numpy, and identifying another format's file never needs them.

FORMAT = "GCP"
MIME = "image/x-gcp"
EXTENSION = ".gcp"

#: the .gcp signature (pillow_gcp.format.MAGIC, SPEC.md section 1), checked without importing format
_MAGIC = b"\x89GCP\r\n\x1a\n"

# one fully transparent entry, all others opaque (fullmatch: "$" would accept a trailing 0x0A)
_simple_alpha = re.compile(b"\xff*\x00\xff*")


def _accept(prefix: bytes) -> bool:
    return prefix[:8] == _MAGIC


class GcpImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "GCP palette image (clustered colours)"

    def _open(self) -> None:
        from . import format as gcp_format

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
        # a plain tuple: Pillow's stubs name the private ImageFile._Tile, which older Pillows lack
        self.tile = [
            (  # type: ignore[list-item]
                FORMAT,
                (0, 0, *self._size),
                header.payload_offset,
                (header.payload_offset, header.payload_length, len(palette), header.version),
            )
        ]

    def verify(self) -> None:
        """Check every CRC and decode the payload, without keeping the pixels."""
        from . import format as gcp_format

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

    def init(self, args: Tuple[int, int, int, int]) -> None:
        self._payload_offset, self._length, self._palette_size, self._version = args
        self._buffer = bytearray()
        self._complete = False  # the whole DATA chunk (payload + CRC) has arrived

    def decode(self, buffer: Any) -> tuple[int, int]:  # bytes from Pillow's read loop
        from . import format as gcp_format

        need = self._length + 4 - len(self._buffer)
        self._buffer += buffer[:need]
        if len(self._buffer) < self._length + 4:
            return len(buffer), 0
        self._complete = True  # whatever happens now, the data is not truncated
        data = memoryview(self._buffer)[: self._length]
        gcp_format.check_crc(b"DATA", data, bytes(self._buffer[self._length :]), self._payload_offset + self._length)
        self._finish(data, partial=False)
        return -1, 0

    def _finish(self, data: bytes | bytearray | memoryview, *, partial: bool) -> None:
        from . import format as gcp_format

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


def payload_level(info: Dict[str, Any]) -> int:
    """The payload effort of a save: ``compress_level`` 0..9 (default 6; Pillow's PNG name), or 9
    with ``optimize=True`` (every coding tried, slow on big images)."""
    from . import payload

    if info.get("compress_level") is not None:
        return payload.check_level(info["compress_level"], "compress_level")
    return 9 if info.get("optimize") else 6


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from . import adapter
    from . import format as gcp_format

    info = im.encoderinfo
    adapter.check_save_options(info)
    if im.width < 1 or im.height < 1:
        msg = f"cannot save an empty image ({im.width}x{im.height}) as GCP: it needs at least one pixel"
        raise ValueError(msg)
    if info.get("append_images"):  # Pillow before 12 sends append_images without save_all here
        _save_all(im, fp, filename)
    level = payload_level(info)
    extra = {"transparency": info["transparency"]} if "transparency" in info else {}
    indices, palette = adapter.prepare(im, **extra, **adapter.quantize_params(info))
    metadata = adapter.save_metadata(im, info)
    # Everything is encoded in memory first: a bad argument or a failure
    # leaves nothing half-written.
    fp.write(gcp_format.encode(indices, palette, metadata, level=level))


def _save_all(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    msg = "GCP holds one image: save_all and append_images are not supported"
    raise ValueError(msg)


def register() -> None:
    """Register the GCP format with Pillow (idempotent)."""
    Image.register_open(FORMAT, GcpImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_save_all(FORMAT, _save_all)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder(FORMAT, GcpDecoder)
