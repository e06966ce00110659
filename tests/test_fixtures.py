"""Every conformance file in fixtures/ against fixtures/manifest.json (SPEC.md)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import lzma
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import pillow_gcp  # noqa: F401  (registers the plugin)
from pillow_gcp import format as F
from pillow_gcp.errors import GCPFormatError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
VALID = [f for f in MANIFEST["files"] if f["valid"]]
INVALID = [f for f in MANIFEST["files"] if not f["valid"]]


def declared_pixels(data: bytes) -> int:
    """width * height from the HEAD chunk (0 if the file does not start with a HEAD chunk)."""
    if data[:8] != F.MAGIC or data[12:16] != b"HEAD":
        return 0
    width, height = struct.unpack_from("<II", data, 20)
    return width * height


def _rgba_sha(indices, palette):
    if palette.shape[1] == 3:
        palette = np.concatenate([palette, np.full((len(palette), 1), 255, np.uint8)], 1)
    return hashlib.sha256(np.ascontiguousarray(palette[indices]).tobytes()).hexdigest()


def _expected_metadata(entry) -> dict:
    return {k: (v if k == "comment" else bytes.fromhex(v)) for k, v in entry.get("metadata", {}).items()}


def test_manifest_lists_every_file_and_covers_the_spec():
    on_disk = sorted(p.name for p in FIXTURES.glob("*.gcp"))
    assert on_disk == sorted(f["name"] for f in MANIFEST["files"])
    assert MANIFEST["spec_version"] == F.VERSION == 3
    assert len(VALID) >= 10 and len(INVALID) >= 3
    codings = {f["payload_coding"] for f in VALID}
    assert codings == set(F.payload.CODINGS) == {"zlib", "ctx-up", "ctx-up-zflags", "ctx-left", "ctx-left-zflags",
                                                "lzma2"}
    assert sum(f["error_class"] == "payload" for f in INVALID) >= 30  # one file per payload check (SPEC.md 6.5)
    # every error class of SPEC.md 5 has a file, every file a known class
    assert {f["error_class"] for f in INVALID} == set(MANIFEST["error_classes"])
    assert set(MANIFEST["error_classes"]) == {"signature", "truncated", "chunk", "crc", "head", "layout", "palette",
                                               "payload"}
    assert {f["channels"] for f in VALID} == {3, 4}
    palette_chunks = {(f["channels"], F.chunk_table((FIXTURES / f["name"]).read_bytes())[1][1]) for f in VALID}
    assert palette_chunks == {(3, b"PLTE"), (4, b"PLTE"), (3, b"PLTZ"), (4, b"PLTZ")}
    assert {1, 256} <= {f["palette_size"] for f in VALID}
    assert any(f["after_data"] for f in INVALID)
    assert all(("offset" in f) == (f["error_class"] != "payload") for f in INVALID)  # SPEC.md 5.1 defines them


@pytest.mark.parametrize("entry", VALID, ids=[f["name"] for f in VALID])
def test_valid_file(entry):
    data = (FIXTURES / entry["name"]).read_bytes()
    indices, palette, metadata = F.decode(data)
    assert indices.shape == (entry["height"], entry["width"])
    assert palette.shape == (entry["palette_size"], entry["channels"])
    assert _rgba_sha(indices, palette) == entry["rgba_sha256"]
    assert metadata == _expected_metadata(entry)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "GCP" and im.mode == "P"
        for key, value in _expected_metadata(entry).items():
            assert im.info[key] == value
        rgba = im.convert("RGBA").tobytes()
    assert hashlib.sha256(rgba).hexdigest() == entry["rgba_sha256"]
    with Image.open(io.BytesIO(data)) as im:
        im.verify()


@pytest.mark.parametrize("entry", INVALID, ids=[f["name"] for f in INVALID])
def test_invalid_file(entry):
    data = (FIXTURES / entry["name"]).read_bytes()
    with pytest.raises(GCPFormatError) as e:
        F.decode(data)
    assert entry["error"] in str(e.value)
    if "offset" in entry:  # the offset SPEC.md 5 defines for this error
        assert e.value.offset == entry["offset"]
    # Through Pillow, open + load and open + verify each on their own. A huge declared size stops at
    # Pillow's bomb check in open(); otherwise open() succeeds for every file whose signature is right.
    if entry["error_class"] == "signature" or len(data) < len(F.MAGIC):  # Pillow tries every format, gives up
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(data))
        return
    if declared_pixels(data) > 2 * Image.MAX_IMAGE_PIXELS:
        # (a HEAD field error is found before Pillow sees the size)
        with pytest.raises(GCPFormatError if entry["error_class"] == "head" else Image.DecompressionBombError):
            Image.open(io.BytesIO(data))
        return
    if entry["after_data"]:
        # the fault lies after DATA: load() (which stops after DATA) shows the pixels, verify() rejects
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            header = F.read_header(io.BytesIO(data))
            assert im.size == (header.width, header.height)
    else:
        with pytest.raises(OSError) as e:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        assert entry["error"] in str(e.value)
    with pytest.raises(OSError) as e:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    assert entry["error"] in str(e.value)


def test_generator_reproduces_the_committed_files(tmp_path):
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = module.build(tmp_path)
    assert manifest == MANIFEST
    for entry in MANIFEST["files"]:
        assert (tmp_path / entry["name"]).read_bytes() == (FIXTURES / entry["name"]).read_bytes(), entry["name"]


# ----------------------------------------------------------------------------- SPEC.md 1-5 read independently


class SpecError(Exception):
    def __init__(self, error_class: str, offset: int | None) -> None:
        super().__init__(error_class, offset)
        self.error_class, self.offset = error_class, offset


def pltz_palette(content: bytes, k: int, channels: int, at: int) -> bytes:
    """SPEC.md 3.2 from the text: inflate exactly k x channels bytes, then undo each plane's differences."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(content, k * channels + 1)
    except zlib.error:
        raise SpecError("palette", at) from None
    if len(raw) != k * channels or not d.eof or d.unused_data:
        raise SpecError("palette", at)
    planes = []
    for c in range(channels):
        v, plane = 0, []
        for delta in raw[c * k:(c + 1) * k]:
            v = (v + delta) % 256
            plane.append(v)
        planes.append(plane)
    return bytes(planes[c][i] for i in range(k) for c in range(channels))


def spec_container(data: bytes):
    """SPEC.md section 4 written again from the text alone (not from pillow_gcp.format): returns
    (version, channels, k, width, height, palette bytes, metadata, payload) or raises SpecError with the
    class and offset of SPEC.md 5.1. The payload itself is left to section 6."""
    sig = b"\x89GCP\r\n\x1a\n"
    if data[:8] != sig[: len(data[:8])]:
        raise SpecError("signature", 0)
    if len(data) < 8:
        raise SpecError("truncated", len(data))
    pos = 8

    def chunk():
        nonlocal pos
        start = pos
        if pos + 8 > len(data):
            raise SpecError("truncated", len(data))
        length = int.from_bytes(data[pos : pos + 4], "little")
        ctype = data[pos + 4 : pos + 8]
        if not all(0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A for c in ctype):
            raise SpecError("chunk", start + 4)
        if length > 2**31 - 1:
            raise SpecError("chunk", start)
        return ctype, length, start

    def body(ctype, length, start):
        nonlocal pos
        end = start + 8 + length
        if end + 4 > len(data):
            raise SpecError("truncated", len(data))
        content = data[start + 8 : end]
        if int.from_bytes(data[end : end + 4], "little") != zlib.crc32(ctype + content):
            raise SpecError("crc", end)
        pos = end + 4
        return content

    ctype, length, start = chunk()
    if ctype != b"HEAD":
        raise SpecError("layout", start + 4)
    if length != 12:
        raise SpecError("head", start)
    head = body(ctype, length, start)
    version, channels, k, width, height = struct.unpack("<BBHII", head)
    for ok, off in ((version == 3, 16), (channels in (3, 4), 17), (1 <= k <= 256, 18),
                    (1 <= width <= 2**31 - 1, 20), (1 <= height <= 2**31 - 1, 24)):
        if not ok:
            raise SpecError("head", off)
    palette, metadata = None, {}
    names = {b"iccp": "icc_profile", b"exif": "exif", b"xmpd": "xmp", b"cmnt": "comment"}
    while True:
        ctype, length, start = chunk()
        if ctype == b"PLTE" and palette is None:
            if length != k * channels:
                raise SpecError("layout", start)
            palette = body(ctype, length, start)
        elif ctype == b"PLTZ" and palette is None:
            palette = pltz_palette(body(ctype, length, start), k, channels, start + 8)
        elif ctype == b"DATA" and palette is not None:
            payload = body(ctype, length, start)
            break
        elif 0x41 <= ctype[0] <= 0x5A:
            raise SpecError("layout", start + 4)
        else:
            content = body(ctype, length, start)
            if ctype in names and names[ctype] not in metadata:
                metadata[names[ctype]] = content.decode("utf-8", "replace") if ctype == b"cmnt" else content
    while True:
        ctype, length, start = chunk()
        if ctype == b"DONE":
            if length != 0:
                raise SpecError("layout", start)
            body(ctype, length, start)
            break
        if 0x41 <= ctype[0] <= 0x5A:
            raise SpecError("layout", start + 4)
        body(ctype, length, start)
    return version, channels, k, width, height, palette, metadata, payload


def _stream(kind: str, data: bytes, exact: int | None, bound: int) -> bytes:
    """A zlib or LZMA2 stream filling all of ``data`` (SPEC.md 6.1), decoding to at most ``bound`` bytes
    (exactly ``exact`` if given)."""
    if kind == "zlib":
        d = zlib.decompressobj()
        errors = zlib.error
    else:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[
            {"id": lzma.FILTER_LZMA2, "dict_size": min(max(4096, exact if exact is not None else bound), 1536 << 20)}])
        errors = lzma.LZMAError
    try:
        out = d.decompress(data, bound + 1)
    except errors:
        raise SpecError("payload", None) from None
    if len(out) > bound or not d.eof or d.unused_data or (exact is not None and len(out) != exact):
        raise SpecError("payload", None)
    return out


def spec_payload(p: bytes, width: int, height: int, k: int) -> np.ndarray:
    """SPEC.md 6 written again from the text alone (strict: every error raises SpecError); CTX walks the
    pixels in raster order."""
    n = width * height
    if not p or p[0] > 2:
        raise SpecError("payload", 0)
    if p[0] in (0, 2):
        out = np.frombuffer(_stream("zlib" if p[0] == 0 else "lzma2", p[1:], n, n), np.uint8)
        if out.size and int(out.max()) >= k:
            raise SpecError("payload", 1)
        return out.reshape(height, width)
    if len(p) < 6:
        raise SpecError("payload", len(p))
    flags, tlen = p[1], int.from_bytes(p[2:6], "little")
    left, zflags = bool(flags & 1), bool(flags & 2)
    if flags & ~3 or (left and k > 64):
        raise SpecError("payload", 1)
    if 6 + tlen > len(p):
        raise SpecError("payload", len(p))
    contexts = k * k if left else k
    table = _stream("zlib", p[6 : 6 + tlen], None, contexts * k)
    if len(table) < contexts or max(table[:contexts]) > k - 1 or len(table) != contexts + sum(table[:contexts]):
        raise SpecError("payload", 6)
    orders, pos = [], contexts
    for c in range(contexts):
        listed = list(table[pos : pos + table[c]])
        pos += table[c]
        if any(q >= k for q in listed) or len(set(listed)) != len(listed):
            raise SpecError("payload", 6)
        u = c % k
        dflt = sorted(range(k), key=lambda s: 2 * abs(s - u) - (1 if s < u else 0))
        head = [dflt[q] for q in listed]
        orders.append(head + [s for s in dflt if s not in head])
    t = 6 + tlen
    if not zflags:
        ranks = np.frombuffer(_stream("zlib", p[t:], n, n), np.uint8)
        if ranks.size and int(ranks.max()) >= k:
            raise SpecError("payload", t)
    else:
        if len(p) < t + 4:
            raise SpecError("payload", len(p))
        flen = int.from_bytes(p[t : t + 4], "little")
        if t + 4 + flen > len(p):
            raise SpecError("payload", len(p))
        packed = np.frombuffer(_stream("zlib", p[t + 4 : t + 4 + flen], -(-n // 8), -(-n // 8)), np.uint8)
        bits = np.unpackbits(packed)
        if bits[n:].any():
            raise SpecError("payload", t + 4)
        nonzero = bits[:n].astype(bool)
        rest = np.frombuffer(_stream("zlib", p[t + 4 + flen :], int(nonzero.sum()), int(nonzero.sum())), np.uint8)
        if rest.size and int(rest.max()) > k - 2:
            raise SpecError("payload", t + 4 + flen)
        ranks = np.zeros(n, np.uint8)
        ranks[nonzero] = rest + 1
    out = np.zeros((height, width), np.uint8)
    rank = ranks.reshape(height, width)
    for y in range(height):
        for x in range(width):
            tx, ty = x % 64, y % 64
            if tx and ty:
                lv, uv = out[y, x - 1], out[y - 1, x]
            elif tx:
                lv = uv = out[y, x - 1]
            elif ty:
                lv = uv = out[y - 1, x]
            else:
                lv = uv = 0
            out[y, x] = orders[int(lv) * k + int(uv) if left else int(uv)][rank[y, x]]
    return out


@pytest.mark.parametrize("entry", MANIFEST["files"], ids=[f["name"] for f in MANIFEST["files"]])
def test_spec_text_alone_gives_the_manifest(entry):
    """An implementer who reads only SPEC.md (above: sections 1-5 and 6) agrees with the manifest: container
    errors by class and offset, payload errors, valid files by size, palette, metadata and pixels."""
    data = (FIXTURES / entry["name"]).read_bytes()
    if not entry["valid"] and entry["error_class"] != "payload":
        with pytest.raises(SpecError) as e:
            spec_container(data)
        assert (e.value.error_class, e.value.offset) == (entry["error_class"], entry["offset"])
        return
    _, channels, k, width, height, palette, metadata, payload = spec_container(data)
    if not entry["valid"]:  # a payload error: the container is fine, section 6 rejects the payload
        with pytest.raises(SpecError):
            spec_payload(payload, width, height, k)
        return
    assert (width, height, k, channels) == (entry["width"], entry["height"], entry["palette_size"],
                                            entry["channels"])
    assert metadata == _expected_metadata(entry)
    indices = spec_payload(payload, width, height, k)
    pal = np.frombuffer(palette, np.uint8).reshape(k, channels)
    assert _rgba_sha(indices, pal) == entry["rgba_sha256"]
