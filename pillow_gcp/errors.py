"""The one exception type the byte-level modules raise for bad data."""

from __future__ import annotations


class GCPFormatError(OSError):
    """A .gcp stream is malformed: truncated, corrupted or outside the spec.

    Attributes
    ----------
    reason : str
        What is wrong, without the offset.
    offset : int or None
        Byte offset where the problem was found: in the file for errors raised by
        :mod:`pillow_gcp.format`; in the payload (0 = the method byte) for errors raised by
        the payload decoder, which :mod:`pillow_gcp.format` turns into file offsets with
        :meth:`rebased`. ``None`` if no single offset applies.

    ``str(error)`` is ``"<reason> (at byte <offset>)"``, or the reason alone without an offset.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = str(reason)
        self.offset = None if offset is None else int(offset)
        super().__init__(self.reason if self.offset is None else f"{self.reason} (at byte {self.offset})")

    def rebased(self, base: int, context: str | None = None) -> GCPFormatError:
        """The same error with ``base`` added to its offset (e.g. payload -> file offset).

        ``context``, if given, is put before the reason (``"<context>: <reason>"``). An error
        without an offset keeps none.
        """
        reason = self.reason if context is None else f"{context}: {self.reason}"
        return type(self)(reason, None if self.offset is None else base + self.offset)

    # pickling (multiprocessing): keep reason and offset, not the joined message
    def __reduce__(self) -> tuple[type[GCPFormatError], tuple[str, int | None]]:
        return type(self), (self.reason, self.offset)
