"""The Pillow plugin: registration, open/load/save in every mode, errors."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, UnidentifiedImageError

import pillow_gcp
from pillow_gcp import format as F


def _photo(w=64, h=48, seed=0):
    """A smooth RGB image with noise: thousands of colours, like a small photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 60], -1)
    rgb = rgb + rng.normal(0, 12, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _few_colours(w=37, h=23, n=6, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    bands = len(mode)
    colours = rng.integers(0, 256, size=(n, bands), dtype=np.uint8)
    if mode in ("RGBA", "LA"):
        colours[0, -1] = 0
        colours[1, -1] = 255
        colours[0, :-1] = 0
    lab = rng.integers(0, n, size=(h, w))
    arr = colours[lab]
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)


def _roundtrip(im, **params):
    buf = io.BytesIO()
    im.save(buf, "GCP", **params)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out, buf.getvalue()


def _psnr(a, b):
    a = np.asarray(a.convert("RGB"), np.float64)
    b = np.asarray(b.convert("RGB"), np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


# ------------------------------------------------------------------ registration


def test_registered():
    assert Image.registered_extensions()[".gcp"] == "GCP"
    assert Image.MIME["GCP"] == "image/x-gcp"
    assert "GCP" in Image.SAVE and "GCP" in Image.OPEN
    pillow_gcp.register()  # idempotent
    import importlib

    importlib.reload(pillow_gcp)
    assert Image.registered_extensions()[".gcp"] == "GCP"
    out, _ = _roundtrip(_few_colours())
    assert out.format == "GCP"


def test_save_by_extension(tmp_path):
    path = tmp_path / "x.gcp"
    _few_colours().save(path)
    with Image.open(path) as im:
        assert im.format == "GCP" and im.mode == "P"
        assert im.get_format_mimetype() == "image/x-gcp"


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_few_colours_are_exact(mode):
    im = _few_colours(mode=mode)
    for algo in ("kmeans", "kmedoids"):
        out, _ = _roundtrip(im, k=8, algo=algo)
        target = "RGBA" if "A" in mode else "RGB"
        assert np.array_equal(np.asarray(out.convert(target)), np.asarray(im.convert(target)))


def test_p_image_without_k_is_lossless():
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 200, size=(31, 45), dtype=np.uint8)
    palette = rng.integers(0, 256, size=256 * 3, dtype=np.uint8)
    im = Image.fromarray(indices, "P")
    im.putpalette(palette.tobytes())
    out, _ = _roundtrip(im)
    assert out.mode == "P"
    assert np.array_equal(np.asarray(out), indices)
    assert out.getpalette() == im.getpalette()


def test_p_image_transparency_kept():
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(indices, "P")
    im.putpalette(bytes([10, 20, 30, 40, 50, 60, 70, 80, 90]))
    im.info["transparency"] = 1
    out, _ = _roundtrip(im)
    assert out.info["transparency"] == 1
    assert np.array_equal(np.asarray(out.convert("RGBA")), np.asarray(im.convert("RGBA")))

    im.info["transparency"] = bytes([255, 0, 128])
    out, _ = _roundtrip(im)
    assert out.info["transparency"] == bytes([255, 0, 128])
    assert np.array_equal(np.asarray(out), indices)
    assert np.array_equal(np.asarray(out.convert("RGBA")), np.asarray(im.convert("RGBA")))


def test_p_image_with_rgba_palette():
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    im = Image.fromarray(indices, "P")
    im.putpalette(bytes([1, 2, 3, 0, 4, 5, 6, 200]), "RGBA")
    out, _ = _roundtrip(im)
    assert np.array_equal(np.asarray(out.convert("RGBA")), np.asarray(im.convert("RGBA")))


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_and_bilevel_without_k_are_lossless(mode):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(17, 29), dtype=np.uint8)
    im = Image.fromarray(arr, "L")
    if mode == "1":
        im = im.convert("1")
    out, _ = _roundtrip(im)
    assert np.array_equal(np.asarray(out.convert("L")), np.asarray(im.convert("L")))


def _expected_pixels(im):
    """The documented rule, written out independently of the adapter."""
    if im.mode.startswith("I;16"):
        g = np.clip(np.rint(np.asarray(im).astype(np.float64) / 257), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("I", "F", "L", "1"):
        return np.repeat(np.asarray(im.convert("L"))[..., None], 3, axis=2)
    rgba = np.asarray(im.convert("RGBA"))
    return rgba if (rgba[..., 3] < 255).any() else rgba[..., :3]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I;16B", "CMYK", "YCbCr", "F", "I",
                                  "PA"])
def test_every_mode_saves_and_opens(mode):
    im = _photo(40, 30)
    if mode == "RGBA":
        im = im.convert("RGBA")
        a = np.asarray(im).copy()
        a[:10, :, 3] = 0
        a[10:20, :, 3] = 255
        a[20:, :, 3] = 128
        im = Image.fromarray(a, "RGBA")
    elif mode == "PA":
        im = im.convert("RGBA").convert("PA")
    elif mode.startswith("I;16"):  # a full-range 16-bit ramp with noise
        g = np.asarray(im.convert("L")).astype(np.uint32) * 257 + np.arange(40)[None, :] * 3
        im = Image.frombytes(mode, im.size, g.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    elif mode in ("I", "F"):  # values outside 0..255 too: clipped as Pillow's convert("L") does
        g = np.asarray(im.convert("L")).astype(np.float64) * 1.3 - 30
        im = Image.fromarray(g.astype(np.int32 if mode == "I" else np.float32), mode)
    else:
        im = im.convert(mode)
    out, _ = _roundtrip(im, k=16)
    assert out.size == im.size and out.mode == "P"
    assert len(out.getcolors(256)) <= 16
    expected = _expected_pixels(im)
    idx, pal = pillow_gcp.quantizers.quantize_array(expected, k=16)
    decoded = np.asarray(out.convert("RGBA" if pal.shape[1] == 4 else "RGB"))
    assert np.array_equal(decoded, pal[idx])  # the values, not only the size


def test_alpha_rules():
    rgba = np.asarray(_photo(50, 40).convert("RGBA")).copy()
    rgba[:, :10, 3] = 0
    rgba[:, 10:25, 3] = 255
    rgba[:, 25:, 3] = np.random.default_rng(1).integers(1, 255, size=(40, 25))
    im = Image.fromarray(rgba, "RGBA")
    for algo in ("kmeans", "kmedoids"):
        out, _ = _roundtrip(im, k=12, algo=algo)
        a = np.asarray(out.convert("RGBA"))[..., 3]
        assert (a[:, :10] == 0).all()
        assert (a[:, 10:25] == 255).all()


def test_default_k_is_256_and_quality_is_sane():
    im = _photo(96, 64)
    out, data = _roundtrip(im)
    assert len(im.getcolors(1 << 24)) > 256
    assert len(out.getpalette()) // 3 <= 256
    assert _psnr(im, out) > 30


def test_quantize_returns_p_image():
    im = _photo()
    p = pillow_gcp.quantize(im, k=16, algo="kmeans")
    assert p.mode == "P" and p.size == im.size
    assert len(p.getcolors(256)) <= 16


def test_deterministic_bytes():
    im = _photo(80, 60)
    for algo in ("kmeans", "kmedoids"):
        a = _roundtrip(im, k=16, algo=algo, seed=5)[1]
        b = _roundtrip(im, k=16, algo=algo, seed=5)[1]
        assert a == b


def test_kmedoids_palette_colours_occur_in_image():
    im = _photo(60, 40)
    out, _ = _roundtrip(im, k=10, algo="kmedoids")
    image_colours = {c for _, c in im.getcolors(1 << 24)}
    used = {c for _, c in out.convert("RGB").getcolors(256)}
    assert used <= image_colours


def test_callable_algo():
    calls = []

    def first_k(colors, weights, k, *, metric, seed, fixed):
        calls.append(k)
        order = np.argsort(-weights, kind="stable")[:k]
        return colors[order]

    out, _ = _roundtrip(_photo(30, 20), k=4, algo=first_k)
    assert calls and len(out.getcolors(256)) <= 4


def test_pillow_operations():
    out, data = _roundtrip(_photo(64, 48), k=16)
    im = Image.open(io.BytesIO(data))
    im.verify()
    im = Image.open(io.BytesIO(data))
    im.thumbnail((16, 16))
    assert max(im.size) == 16
    im = Image.open(io.BytesIO(data))
    assert im.convert("RGB").size == (64, 48)
    assert im.info["gcp_palette_channels"] == 3


def test_metadata_roundtrip():
    im = _few_colours()
    out, _ = _roundtrip(im, icc_profile=b"fake-icc" * 4, exif=b"Exif\x00\x00MM\x00*", comment="hello")
    assert out.info["icc_profile"] == b"fake-icc" * 4
    assert out.info["exif"] == b"Exif\x00\x00MM\x00*"
    assert out.info["comment"] == "hello"
    # metadata travels from the source image too
    im.info["icc_profile"] = b"from-source"
    out, _ = _roundtrip(im)
    assert out.info["icc_profile"] == b"from-source"


def test_wide_image_beyond_student_limits():
    arr = np.zeros((2, 70000), np.uint8)
    arr[1, ::7] = 1
    im = Image.fromarray(arr, "L")
    out, _ = _roundtrip(im)
    assert out.size == (70000, 2)
    assert np.array_equal(np.asarray(out.convert("L")), arr)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "params,exc,name",
    [
        ({"k": 0}, ValueError, "k"),
        ({"k": 257}, ValueError, "k"),
        ({"k": 2.5}, TypeError, "k"),
        ({"k": 8, "algo": "nope"}, ValueError, "algo"),
        ({"k": 8, "metric": "cosine"}, ValueError, "metric"),
        ({"k": 8, "seed": -1}, ValueError, "seed"),
        ({"k": 8, "compress_level": 10}, ValueError, "compress_level"),
        ({"compress_level": "9"}, ValueError, "compress_level"),
    ],
)
def test_bad_parameters(tmp_path, params, exc, name):
    path = tmp_path / "out.gcp"
    with pytest.raises(exc, match=name):
        _photo(20, 10).save(path, **params)
    assert not path.exists()  # nothing half-written


def test_random_bytes_are_unidentified():
    rng = np.random.default_rng(0)
    for n in (0, 5, 8, 100, 5000):
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(rng.integers(0, 256, n, dtype=np.uint8).tobytes()))


def _load(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im


def test_every_strict_prefix_raises_oserror():
    _, data = _roundtrip(_photo(24, 16), k=8)
    for cut in range(len(data) - 12):  # the DONE chunk is not needed by load()
        with pytest.raises(OSError):
            _load(data[:cut])


def test_corrupted_payload_raises_oserror_naming_crc():
    _, data = _roundtrip(_photo(24, 16), k=8)
    bad = bytearray(data)
    bad[len(data) - 20] ^= 0x10  # inside DATA
    with pytest.raises(OSError, match="CRC"):
        _load(bytes(bad))


def test_truncated_load_with_load_truncated_images():
    _, data = _roundtrip(_photo(64, 48), k=8)
    cut = data[: len(data) - 40]
    with pytest.raises(OSError, match="truncated"):
        _load(cut)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        im = _load(cut)
        assert im.size == (64, 48)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_decompression_bomb_checked_before_allocation():
    indices = np.zeros((1, 1), np.uint8)
    data = bytearray(F.encode(indices, np.zeros((1, 3), np.uint8)))
    data[20:28] = struct.pack("<II", 200_000, 200_000)  # 4e10 pixels
    data[28:32] = struct.pack("<I", zlib.crc32(bytes(data[12:28])))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bytes(data)))


def test_incremental_parser():
    _, data = _roundtrip(_photo(40, 30), k=12)
    parser = ImageFile.Parser()
    for i in range(0, len(data), 7):
        parser.feed(data[i : i + 7])
    im = parser.close()
    ref = _load(data)
    assert np.array_equal(np.asarray(im), np.asarray(ref))


def test_save_to_file_object_and_path_agree(tmp_path):
    im = _photo(30, 20)
    path = tmp_path / "a.gcp"
    im.save(path, k=8, seed=1)
    buf = io.BytesIO()
    im.save(buf, "GCP", k=8, seed=1)
    assert path.read_bytes() == buf.getvalue()
    assert os.path.getsize(path) > 0


def test_metadata_follows_pillow_save_conventions():
    im = _few_colours()
    im.info["XML:com.adobe.xmp"] = "<x:xmpmeta/>"  # where PngImagePlugin puts XMP
    im.info["xmp"] = b"<x:xmpmeta/>"
    im.info["exif"] = b"Exif\x00\x00MM\x00*GPS"
    im.info["icc_profile"] = b"from-source"
    im.info["comment"] = 42  # not bytes/str: left out, the save must not fail
    out, _ = _roundtrip(im)
    # EXIF and XMP are written only when passed (as Pillow's PNG writer does); ICC is kept
    assert "xmp" not in out.info and "exif" not in out.info
    assert out.info["icc_profile"] == b"from-source"
    assert "comment" not in out.info
    out, _ = _roundtrip(im, exif=im.info["exif"], xmp=im.info["xmp"], icc_profile=None)
    assert out.info["exif"] == b"Exif\x00\x00MM\x00*GPS" and out.info["xmp"] == b"<x:xmpmeta/>"
    assert "icc_profile" not in out.info  # icc_profile=None drops the source's profile
    with pytest.raises(TypeError, match="comment"):  # an explicit argument is validated
        _roundtrip(im, comment=42)


def test_compress_level_and_optimize_set_the_payload_effort():
    rng = np.random.default_rng(3)
    im = Image.fromarray(np.repeat(rng.integers(0, 40, (30, 20), dtype=np.uint8), 3, axis=1)).convert("P")
    blobs = {}
    for kw in ({}, {"compress_level": 0}, {"compress_level": 2}, {"optimize": True}, {"compress_level": 9}):
        b = io.BytesIO()
        im.save(b, "GCP", **kw)
        blobs[tuple(kw.items())] = data = b.getvalue()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(im))
    method = {key: data[data.index(b"DATA") + 4] for key, data in blobs.items()}
    assert method[(("compress_level", 0),)] == 0 and method[(("compress_level", 2),)] in (0, 1)
    assert blobs[(("optimize", True),)] == blobs[(("compress_level", 9),)]
    assert len(blobs[(("optimize", True),)]) <= len(blobs[()])


@pytest.mark.parametrize("typo, meant", [("colours", "colors"), ("level", "compress_level"), ("dithering", "dither"),
                                         ("algorithm", "algo"), ("seeds", "seed"), ("fixed_color", "fixed_colors")])
def test_misspelt_save_option_raises_before_writing(tmp_path, typo, meant):
    """A misspelt option is a TypeError naming it and the option meant, not a silent default; nothing is
    written to a stream. Options of other formats (quality, method) are ignored, as Pillow's formats do."""
    im = Image.new("RGB", (8, 8), (10, 20, 30))
    buf = io.BytesIO()
    with pytest.raises(TypeError, match=f"{typo!r}; did you mean {meant!r}"):
        im.save(buf, "GCP", **{typo: 1})
    assert buf.getvalue() == b""
    plain = io.BytesIO()
    im.save(plain, "GCP")
    other = io.BytesIO()
    im.save(other, "GCP", quality=90, method=6)
    assert other.getvalue() == plain.getvalue()


def test_compress_bytes_rejects_unknown_arguments():
    from pillow_gcp.convert import compress_bytes

    b = io.BytesIO()
    Image.new("RGB", (4, 4)).save(b, "PNG")
    with pytest.raises(TypeError, match=r"unexpected arguments: \['bogus'\]"):
        compress_bytes(b.getvalue(), bogus=1)


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_saving_an_empty_image_says_so(size):
    with pytest.raises(ValueError, match=r"cannot save an empty image \(\d+x\d+\) as GCP"):
        Image.new("RGB", size).save(io.BytesIO(), "GCP")
