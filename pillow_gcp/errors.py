"""The one exception type the byte-level modules raise for bad data."""

from __future__ import annotations


class GCPFormatError(OSError):
    """A .gcp stream is malformed: truncated, corrupted or outside the spec.

    ``offset`` is the byte offset in the file (or in the payload, for
    payload-level errors, which :mod:`pillow_gcp.format` rebases to file
    offsets) where the problem was found, or ``None`` if no single offset
    applies.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message)
        self.offset = offset
