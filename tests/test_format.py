"""The container (SPEC.md sections 2-5), without Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from pillow_gcp import format as F
from pillow_gcp.errors import GCPFormatError


def _image(h=7, w=13, n=5, channels=3, seed=1):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(h, w), dtype=np.uint8)
    palette = rng.integers(0, 256, size=(n, channels), dtype=np.uint8)
    return indices, palette




def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack("<I4s", len(body), ctype) + body + struct.pack("<I", zlib.crc32(ctype + body))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("shape,n", [((1, 1), 1), ((7, 13), 5), ((3, 300), 256), ((64, 1), 2)])
def test_roundtrip(shape, n, channels):
    indices, palette = _image(*shape, n=n, channels=channels)
    data = F.encode(indices, palette)
    assert data[:8] == F.MAGIC and F.accept(data)
    got, pal, meta = F.decode(data)
    assert np.array_equal(got, indices)
    assert np.array_equal(pal, palette)
    assert meta == {}


def test_layout_matches_spec():
    indices, palette = _image(n=5, channels=4)
    data = F.encode(indices, palette, {"comment": "hi"})
    chunks = F.chunk_table(data)
    assert [c[1] for c in chunks] == [b"HEAD", b"PLTE", b"cmnt", b"DATA", b"DONE"]
    version, channels, size, width, height = struct.unpack_from("<BBHII", data, 16)
    assert (version, channels, size, width, height) == (3, 4, 5, 13, 7)
    assert data[-12:] == bytes.fromhex("00000000444f4e451f0db826")


def test_metadata_roundtrip_and_unknown_ancillary_skipped():
    indices, palette = _image()
    meta = {"icc_profile": b"\x00ICC" * 10, "exif": b"Exif\x00\x00MM", "xmp": b"<x/>", "comment": "caf\u00e9"}
    data = F.encode(indices, palette, meta)
    # insert an unknown ancillary chunk before DATA and another after it
    pos_data = [c for c in F.chunk_table(data) if c[1] == b"DATA"][0][0]
    extra = _chunk(b"zzzz", b"whatever")
    data2 = data[:pos_data] + extra + data[pos_data:-12] + extra + data[-12:]
    got, pal, m = F.decode(data2)
    assert np.array_equal(got, indices)
    assert m == meta


def _insert(data: bytes, before: bytes, *chunks: bytes) -> bytes:
    """``data`` with ``chunks`` inserted before its first chunk of type ``before``."""
    at = [c for c in F.chunk_table(data) if c[1] == before][0][0]
    return data[:at] + b"".join(chunks) + data[at:]


def test_duplicate_metadata_keeps_the_first_and_metadata_after_data_is_ignored():
    indices, palette = _image()
    data = F.encode(indices, palette, {"comment": "first", "icc_profile": b"ICC-1"})
    data = _insert(data, b"DATA", _chunk(b"cmnt", b"second"), _chunk(b"iccp", b"ICC-2"))
    data = _insert(data, b"DONE", _chunk(b"cmnt", b"after"), _chunk(b"exif", b"Exif\0\0after"))
    got, _, meta = F.decode(data)
    assert np.array_equal(got, indices)
    assert meta == {"comment": "first", "icc_profile": b"ICC-1"}
    fp = io.BytesIO(data)
    assert F.read_header(fp).metadata == meta


def test_comment_with_invalid_utf8_becomes_replacement_characters():
    indices, palette = _image()
    raw = b"ok \xff \xe2\x82 end \xf0\x9f\x98\x80"  # a bad byte, a cut 3-byte sequence, then a valid emoji
    data = _insert(F.encode(indices, palette), b"DATA", _chunk(b"cmnt", raw))
    assert F.decode(data)[2] == {"comment": "ok \ufffd \ufffd end \U0001f600"}


@pytest.mark.parametrize("ctype,ok", [(b"dATA", True), (b"hEAD", True), (b"done", True), (b"Data", False),
                                      (b"DATa", False), (b"HEAd", False), (b"CMNT", False)])
def test_chunk_types_compare_byte_for_byte(ctype, ok):
    """Only exact types are known: another case is another (ancillary: skipped, critical: an error) type."""
    indices, palette = _image()
    data = _insert(F.encode(indices, palette), b"DATA", _chunk(ctype, b"\x00" * 12))
    if ok:
        assert np.array_equal(F.decode(data)[0], indices)
        assert F.decode(data)[2] == {}
    else:
        with pytest.raises(GCPFormatError, match=f"critical chunk {ctype.decode()}"):
            F.decode(data)


def test_big_unknown_ancillary_chunk_is_checked_without_holding_it(monkeypatch):
    import tracemalloc

    indices, palette = _image()
    big = _chunk(b"zbig", bytes(range(256)) * (24 << 10))  # 6 MiB
    data = _insert(F.encode(indices, palette), b"DONE", big)
    data = _insert(data, b"DATA", big)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fp = io.BytesIO(data)
        header = F.read_header(fp)
        F.read_payload(fp, header)
        F.check_trailer(fp, fp.tell())
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20, peak  # pieces of 1 MiB, never the 6 MiB body
    bad = bytearray(data)
    bad[-40] ^= 1  # inside the second big chunk (after DATA)
    with pytest.raises(GCPFormatError, match="CRC mismatch in zbig"):
        F.decode(bytes(bad))


def test_unknown_critical_chunk_is_an_error():
    indices, palette = _image()
    data = F.encode(indices, palette)
    pos_data = [c for c in F.chunk_table(data) if c[1] == b"DATA"][0][0]
    bad = data[:pos_data] + _chunk(b"ZZZZ", b"") + data[pos_data:]
    with pytest.raises(GCPFormatError, match="critical chunk ZZZZ") as e:
        F.decode(bad)
    assert e.value.offset == pos_data + 4


def test_every_strict_prefix_fails_with_oserror():
    indices, palette = _image(5, 9, n=4)
    data = F.encode(indices, palette)
    for cut in range(len(data)):
        with pytest.raises(OSError):
            F.decode(data[:cut])


def test_every_single_bit_flip_is_detected():
    indices, palette = _image(3, 5, n=3)
    data = F.encode(indices, palette)
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(OSError):
                F.decode(bytes(bad))


def test_crc_error_names_the_chunk_and_offset():
    indices, palette = _image()
    data = bytearray(F.encode(indices, palette))
    off, _, length = [c for c in F.chunk_table(bytes(data)) if c[1] == b"PLTE"][0]
    data[off + 8] ^= 0xFF
    with pytest.raises(GCPFormatError, match="CRC mismatch in PLTE") as e:
        F.decode(bytes(data))
    assert e.value.offset == off + 8 + length


@pytest.mark.parametrize(
    "field,offset,value,message",
    [
        ("version", 16, struct.pack("<B", 1), "unsupported format version 1"),
        ("version", 16, struct.pack("<B", 2), "unsupported format version 2"),
        ("version", 16, struct.pack("<B", 4), "unsupported format version 4"),
        ("channels", 17, struct.pack("<B", 5), "palette channels"),
        ("palette_size", 18, struct.pack("<H", 0), "palette size"),
        ("palette_size", 18, struct.pack("<H", 257), "palette size"),
        ("width", 20, struct.pack("<I", 0), "width"),
        ("height", 24, struct.pack("<I", 2**31), "height"),
    ],
)
def test_bad_header_fields(field, offset, value, message):
    indices, palette = _image()
    data = bytearray(F.encode(indices, palette))
    data[offset : offset + len(value)] = value
    head = bytes(data[12:28])
    data[28:32] = struct.pack("<I", zlib.crc32(head))  # keep the CRC right: the field check must fire
    with pytest.raises(GCPFormatError, match=message) as e:
        F.decode(bytes(data))
    assert e.value.offset == offset


def test_lying_lengths_do_not_allocate():
    indices, palette = _image()
    data = bytearray(F.encode(indices, palette))
    off = [c for c in F.chunk_table(bytes(data)) if c[1] == b"DATA"][0][0]
    data[off : off + 4] = struct.pack("<I", 2**31 - 1)
    with pytest.raises(GCPFormatError, match="truncated"):
        F.decode(bytes(data))
    data[off : off + 4] = struct.pack("<I", 2**32 - 1)
    with pytest.raises(GCPFormatError, match="exceeds"):
        F.decode(bytes(data))


def test_read_header_leaves_stream_at_payload():
    indices, palette = _image()
    data = F.encode(indices, palette)
    fp = io.BytesIO(b"junk" + data)
    fp.seek(4)
    header = F.read_header(fp, offset=4)
    assert fp.tell() == header.payload_offset
    assert (header.width, header.height, header.channels) == (13, 7, 3)
    raw = F.read_payload(fp, header)
    assert np.array_equal(F.decode_payload(raw, header), indices)


@pytest.mark.parametrize(
    "indices,palette,exc",
    [
        (np.zeros((2, 2), np.int32), np.zeros((1, 3), np.uint8), TypeError),
        (np.zeros((2, 2), np.uint8), np.zeros((1, 3), np.float32), TypeError),
        (np.zeros((0, 2), np.uint8), np.zeros((1, 3), np.uint8), ValueError),
        (np.zeros((2, 2), np.uint8), np.zeros((257, 3), np.uint8), ValueError),
        (np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), ValueError),
        (np.full((2, 2), 3, np.uint8), np.zeros((3, 3), np.uint8), ValueError),
    ],
)
def test_encode_validates(indices, palette, exc):
    with pytest.raises(exc):
        F.encode(indices, palette)


def test_encode_rejects_unknown_metadata():
    indices, palette = _image()
    with pytest.raises(ValueError, match="unknown metadata key"):
        F.encode(indices, palette, {"bogus": b"x"})


def test_error_reason_and_offset_are_attributes():
    e = GCPFormatError("CRC mismatch in PLTE chunk", 41)
    assert (e.reason, e.offset) == ("CRC mismatch in PLTE chunk", 41)
    assert str(e) == "CRC mismatch in PLTE chunk (at byte 41)"
    assert isinstance(e, OSError)
    n = GCPFormatError("no offset here")
    assert (n.reason, n.offset, str(n)) == ("no offset here", None, "no offset here")
    r = e.rebased(100, "bad payload")
    assert (r.reason, r.offset) == ("bad payload: CRC mismatch in PLTE chunk", 141)
    assert (e.reason, e.offset) == ("CRC mismatch in PLTE chunk", 41)  # the original is unchanged
    assert n.rebased(7).offset is None and n.rebased(7).reason == "no offset here"


def test_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(GCPFormatError("bad thing (with parentheses)", 12)))
    assert type(e) is GCPFormatError and (e.reason, e.offset) == ("bad thing (with parentheses)", 12)
    assert str(e) == "bad thing (with parentheses) (at byte 12)"


def test_payload_errors_are_rebased_to_file_offsets_by_number():
    indices, palette = _image()
    data = F.encode(indices, palette)
    off, _, length = [c for c in F.chunk_table(data) if c[1] == b"DATA"][0]
    start = off + 8
    body = bytes([255]) + data[start + 1 : start + length]  # method byte 255: a payload error at payload offset 0
    bad = data[:off] + _chunk(b"DATA", body) + data[start + length + 4 :]
    with pytest.raises(GCPFormatError) as direct:
        F.payload.decode(body, 13, 7, 5)
    with pytest.raises(GCPFormatError) as e:
        F.decode(bad)
    assert e.value.offset == start + direct.value.offset == start
    assert e.value.reason == "bad payload: " + direct.value.reason
    # a reason that itself contains "(at byte" must survive unchanged: nothing parses the message
    fake = GCPFormatError("odd text (at byte 99) inside", 3)
    assert fake.rebased(start, "bad payload").reason == "bad payload: odd text (at byte 99) inside"


# ----------------------------------------------------------------------------- PLTZ (SPEC.md 3.2)


def _ramp(n, channels=3):
    i = np.arange(n)
    cols = [i * 255 // max(1, n - 1), (i * 7) % 256, 255 - i * 255 // max(1, n - 1), (i * 3 + 100) % 256]
    return np.stack(cols[:channels], axis=1).astype(np.uint8)


def test_spec_example_of_pltz_differences():
    pal = np.array([[10, 20, 30], [12, 20, 250]], np.uint8)
    assert F.palette_planes(pal) == bytes([10, 2, 20, 0, 30, 220])


@pytest.mark.parametrize("channels", [3, 4])
def test_pltz_is_written_when_smaller_and_decodes_to_the_palette(channels):
    indices = (np.arange(40 * 30).reshape(40, 30) % 256).astype(np.uint8)
    pal = _ramp(256, channels)
    data = F.encode(indices, pal)
    off, ctype, length = F.chunk_table(data)[1]
    assert ctype == b"PLTZ" and length < pal.size
    assert zlib.decompress(data[off + 8 : off + 8 + length]) == F.palette_planes(pal)
    got, got_pal, _ = F.decode(data)
    assert np.array_equal(got_pal, pal) and np.array_equal(got, indices)
    # a palette the stream does not shrink stays PLTE (random entries; 2 entries: zlib's 6 bytes of framing)
    for pal in (np.random.default_rng(3).integers(0, 256, (256, channels), dtype=np.uint8), _ramp(2, channels)):
        data = F.encode(indices if len(pal) == 256 else indices % len(pal), pal)
        assert F.chunk_table(data)[1][1] == b"PLTE"
        assert np.array_equal(F.decode(data)[1], pal)


def test_pltz_roundtrips_every_size_and_any_values():
    rng = np.random.default_rng(11)
    for n in (1, 2, 3, 17, 255, 256):
        for channels in (3, 4):
            for pal in (rng.integers(0, 256, (n, channels), dtype=np.uint8), _ramp(n, channels),
                        np.full((n, channels), 255, np.uint8)):
                body = zlib.compress(F.palette_planes(pal), 9)
                data = (F.MAGIC + _chunk(b"HEAD", struct.pack("<BBHII", 3, channels, n, 2, 1))
                        + _chunk(b"PLTZ", body) + _chunk(b"DATA", b"\x00" + zlib.compress(bytes(2)))
                        + _chunk(b"DONE", b""))
                assert np.array_equal(F.decode(data)[1], pal)


@pytest.mark.parametrize("stream,reason", [
    (lambda p: zlib.compress(p[:-1]), "ends after 47 of 16*3=48 bytes"),
    (lambda p: zlib.compress(p + b"\x01"), "more than the 48 bytes"),
    (lambda p: zlib.compress(p) + b"\x00", "unexpected bytes after the end"),
    (lambda p: zlib.compress(p)[:-2], "unfinished"),
    (lambda p: zlib.compress(p)[:-1] + b"\x00", "incorrect data check"),
    (lambda p: b"\x78\x9c\xff\xff\xff", "corrupt"),
    (lambda p: b"", "unfinished, after 0 of"),
    (lambda p: zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=b"ab").compress(p), "corrupt"),
])
def test_bad_pltz_is_a_palette_error_at_its_data(stream, reason):
    pal = _ramp(16)
    head = F.MAGIC + _chunk(b"HEAD", struct.pack("<BBHII", 3, 3, 16, 4, 2))
    data = head + _chunk(b"PLTZ", stream(F.palette_planes(pal))) + _chunk(b"DATA", b"\x00" + zlib.compress(bytes(8)))
    data += _chunk(b"DONE", b"")
    with pytest.raises(GCPFormatError, match="bad PLTZ palette") as e:
        F.decode(data)
    assert reason in e.value.reason
    assert e.value.offset == len(head) + 8


def test_two_palette_chunks_are_a_layout_error():
    indices = np.zeros((2, 3), np.uint8)
    pal = _ramp(64)
    data = F.encode(indices, pal)
    off, ctype, length = F.chunk_table(data)[1]
    assert ctype == b"PLTZ"
    end = off + 12 + length
    for extra in (_chunk(b"PLTE", pal.tobytes()), data[off:end]):
        bad = data[:end] + extra + data[end:]
        with pytest.raises(GCPFormatError, match=r"second palette chunk \(PLT[EZ]\)") as e:
            F.decode(bad)
        assert e.value.offset == end + 4


def test_long_pltz_is_read_in_pieces():
    # a valid PLTZ padded with 8 MB of empty stored blocks: decoded, holding ~1 MiB pieces, not the chunk
    import tracemalloc

    pal = _ramp(256)
    planes = F.palette_planes(pal)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = co.compress(planes) + co.flush(zlib.Z_FULL_FLUSH) + b"\x00\x00\x00\xff\xff" * 1_600_000 + b"\x03\x00"
    stream = b"\x78\xda" + raw + struct.pack(">I", zlib.adler32(planes))
    data = (F.MAGIC + _chunk(b"HEAD", struct.pack("<BBHII", 3, 3, 256, 2, 1)) + _chunk(b"PLTZ", stream)
            + _chunk(b"DATA", b"\x00" + zlib.compress(bytes(2))) + _chunk(b"DONE", b""))
    tracemalloc.start()
    try:
        got = F.read_header(io.BytesIO(data)).palette
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, pal)
    assert peak < 4 << 20, peak
    # a damaged CRC is reported before the stream is looked at, bytes after the stream's end after it
    bad = bytearray(data)
    crc_at = 8 + 24 + 8 + len(stream)
    bad[crc_at] ^= 1
    with pytest.raises(GCPFormatError, match="CRC mismatch in PLTZ") as e:
        F.decode(bytes(bad))
    assert e.value.offset == crc_at
    data2 = data.replace(_chunk(b"PLTZ", stream), _chunk(b"PLTZ", stream + b"\x00" * (3 << 20)))
    with pytest.raises(GCPFormatError, match="unexpected bytes after the end of the PLTZ stream") as e:
        F.decode(data2)
    assert e.value.offset == 8 + 24 + 8
