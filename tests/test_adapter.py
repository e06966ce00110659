"""The adapter: the one place where Pillow images become arrays, and Pillow's save conventions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import pillow_gcp
from pillow_gcp import adapter
from pillow_gcp.quantizers import quantize_array, quantize_to_arrays


def _gcp(im, **params):
    buf = io.BytesIO()
    im.save(buf, "GCP", **params)
    return buf.getvalue()


def _open(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _p_image(w=23, h=17, n=12, seed=0):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, n, (h, w), dtype=np.uint8), "P")
    im.putpalette(rng.integers(0, 256, 3 * n, dtype=np.uint8).tobytes())
    return im


# ----------------------------------------------------------------------------- pixels


def test_pixels_rule_for_every_mode():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    base = Image.fromarray(rgb, "RGB")
    for mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = base.convert(mode) if mode != "LAB" else base.convert("LAB") if "LAB" in Image.MODES else base
        px = adapter.pixels(im)
        assert px.shape == (9, 11, 3) and px.dtype == np.uint8
        assert np.array_equal(px, np.asarray(im.convert("RGB")))
    grey = base.convert("L")
    for mode in ("L", "1"):
        im = grey.convert(mode)
        px = adapter.pixels(im)
        assert np.array_equal(px[..., 0], np.asarray(im.convert("L")))
        assert np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2])
    rgba = np.concatenate([rgb, rng.integers(0, 256, (9, 11, 1), dtype=np.uint8)], axis=2)
    px = adapter.pixels(Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(px, rgba)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert adapter.pixels(Image.fromarray(opaque, "RGBA")).shape == (9, 11, 3)  # alpha dropped when all 255
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    px = adapter.pixels(la)
    assert np.array_equal(px[..., 0], rgba[..., 0]) and np.array_equal(px[..., 3], rgba[..., 3])


def test_pixels_16_bit_full_range_and_i_f_as_pillow():
    v = np.array([[0, 128, 129, 189, 255, 256, 32767, 65535]], np.uint16)
    expected = np.array([[0, 0, 1, 1, 1, 1, 127, 255]], np.uint8)
    for mode, raw in (("I;16", v.astype("<u2")), ("I;16B", v.astype(">u2"))):
        im = Image.frombytes(mode, (8, 1), raw.tobytes())
        assert np.array_equal(adapter.pixels(im)[..., 0], expected)
    f = Image.fromarray(np.array([[-5, 0.4, 100.7, 254.5, 300, np.nan]], np.float32), "F")
    assert np.array_equal(adapter.pixels(f)[..., 0], np.asarray(f.convert("L")))
    i = Image.fromarray(np.array([[-5, 0, 100, 255, 300, 70000]], np.int32), "I")
    assert np.array_equal(adapter.pixels(i)[..., 0], np.asarray(i.convert("L")))
    # the result depends on each value alone, never on the image's min..max
    a = Image.fromarray(np.array([[10.0, 20.0]], np.float32), "F")
    b = Image.fromarray(np.array([[10.0, 2000.0]], np.float32), "F")
    assert adapter.pixels(a)[0, 0, 0] == adapter.pixels(b)[0, 0, 0] == 10


# ----------------------------------------------------------------------------- indexed


def test_indexed_p_keeps_palette_and_indices():
    im = _p_image()
    idx, pal = adapter.indexed(im)
    assert np.array_equal(idx, np.asarray(im))
    assert np.array_equal(pal, np.frombuffer(bytes(im.getpalette()), np.uint8).reshape(-1, 3))


@pytest.mark.parametrize("mode", ["LA", "PA"])
def test_la_and_pa_are_exact_without_k(mode):
    rng = np.random.default_rng(2)
    if mode == "LA":
        arr = np.stack([rng.integers(0, 256, (13, 19)), rng.choice([0, 128, 255], (13, 19))], -1)
        im = Image.fromarray(arr.astype(np.uint8), "LA")
    else:
        im = _p_image(19, 13).convert("PA")
        a = np.asarray(im).copy()
        a[..., 1] = rng.choice([0, 90, 255], (13, 19))
        im = Image.frombytes("PA", im.size, a.tobytes())
        im.putpalette(_p_image(19, 13).getpalette())
    idx, pal = adapter.indexed(im)
    assert pal.shape[1] == 4 and len(pal) <= 256
    assert np.array_equal(pal[idx], adapter.pixels(im))
    out = _open(_gcp(im))
    assert np.array_equal(np.asarray(out.convert("RGBA")), adapter.pixels(im))


def test_la_with_too_many_pairs_is_quantized():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (40, 40, 2), dtype=np.uint8)
    im = Image.fromarray(arr, "LA")
    assert adapter.indexed(im) is None
    idx, pal = adapter.prepare(im)
    assert len(pal) <= 256


# ----------------------------------------------------------------------------- save conventions


def test_transparency_argument_is_honoured_as_png_does():
    p = _p_image()
    out = _open(_gcp(p, transparency=3))
    assert out.info["transparency"] == 3
    alpha = bytes([255, 0, 128] + [255] * 9)
    out = _open(_gcp(p, transparency=alpha))
    pal = np.asarray(out.convert("RGBA"))
    src = np.asarray(p)
    assert (pal[src == 1][:, 3] == 0).all() and (pal[src == 2][:, 3] == 128).all()

    grey = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8), "L")
    out = _open(_gcp(grey, transparency=7))
    rgba = np.asarray(out.convert("RGBA"))
    assert rgba[0, 7, 3] == 0 and (np.delete(rgba.reshape(-1, 4), 7, axis=0)[:, 3] == 255).all()

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    rgb[3, 4] = (200, 100, 0)
    out = _open(_gcp(Image.fromarray(rgb, "RGB"), transparency=(10, 20, 30)))
    a = np.asarray(out.convert("RGBA"))[..., 3]
    assert a[1, 2] == 0 and a.sum() == 255 * 19
    # the image's own info["transparency"] counts too, as PNG's writer reads it
    im = Image.fromarray(rgb, "RGB")
    im.info["transparency"] = (200, 100, 0)
    assert np.asarray(_open(_gcp(im)).convert("RGBA"))[3, 4, 3] == 0


@pytest.mark.parametrize(
    "mode,value",
    [("P", (1, 2, 3)), ("L", "7"), ("RGB", 5), ("RGB", (1, 2))],
)
def test_bad_transparency_names_the_argument(tmp_path, mode, value):
    im = _p_image() if mode == "P" else Image.new(mode, (4, 4))
    path = tmp_path / "x.gcp"
    with pytest.raises(ValueError, match="transparency"):
        im.save(path, transparency=value)
    assert not path.exists()


def test_colors_is_a_synonym_of_k():
    im = Image.fromarray(np.random.default_rng(4).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    assert _gcp(im, colors=9, seed=1) == _gcp(im, k=9, seed=1)
    assert len(_open(_gcp(im, colors=9)).getcolors(256)) <= 9
    with pytest.raises(ValueError, match="colors"):
        _gcp(im, k=9, colors=9)
    with pytest.raises(ValueError, match="k"):
        _gcp(im, colors=300)


def test_save_all_is_refused_clearly(tmp_path):
    path = tmp_path / "anim.gcp"
    im = _p_image()
    with pytest.raises(ValueError, match="GCP holds one image"):
        im.save(path, save_all=True)
    with pytest.raises(ValueError, match="GCP holds one image"):
        im.save(path, append_images=[im])
    assert not path.exists()


def test_palette_image_is_what_gcp_stores():
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 0
    rgba[4:10, :, 3] = 255
    for im, params in (
        (Image.fromarray(rgba, "RGBA"), {"k": 12, "seed": 3}),
        (_p_image(), {}),
        (Image.fromarray(rgba[..., :3], "RGB"), {"colors": 7, "algo": "kmedoids"}),
    ):
        p = adapter.palette_image(im, **params)
        out = _open(_gcp(im, **params))
        assert np.array_equal(np.asarray(p), np.asarray(out))
        assert np.array_equal(np.asarray(p.convert("RGBA")), np.asarray(out.convert("RGBA")))


def test_all_metadata_copies_everything():
    im = _p_image()
    im.info.update({"icc_profile": b"icc", "exif": b"Exif\x00\x00II*\x00", "XML:com.adobe.xmp": "<x/>",
                    "comment": b"hi", "dpi": (72, 72)})
    meta = adapter.all_metadata(im)
    assert meta == {"icc_profile": b"icc", "exif": b"Exif\x00\x00II*\x00", "xmp": "<x/>", "comment": b"hi"}
    out = _open(_gcp(im, **meta))
    assert out.info["exif"] == b"Exif\x00\x00II*\x00" and out.info["xmp"] == b"<x/>"


# ----------------------------------------------------------------------------- array level


def test_quantize_array_matches_the_image_door():
    rng = np.random.default_rng(6)
    arr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    a = quantize_array(arr, k=16, seed=2)
    b = quantize_to_arrays(Image.fromarray(arr), k=16, seed=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (30, 40) and a[0].dtype == np.uint8 and a[1].shape[1] == 3


@pytest.mark.parametrize(
    "bad,exc",
    [(np.zeros((4, 4), np.uint8), ValueError), (np.zeros((4, 4, 2), np.uint8), ValueError),
     (np.zeros((4, 4, 3), np.float32), TypeError), ([[1, 2, 3]], TypeError)],
)
def test_quantize_array_validates_pixels(bad, exc):
    with pytest.raises(exc, match="pixels"):
        quantize_array(bad, k=4)


def test_no_blas_or_environment_changes():
    import os

    env = dict(os.environ)
    arr = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pillow_gcp.quantize(Image.fromarray(arr), k=32)
    assert dict(os.environ) == env
    import pillow_gcp.quantizers as q

    assert not hasattr(q, "single_thread")


def test_premultiplied_la_is_read_like_la():
    """Pillow converts premultiplied "La" only to "LA": pixels() goes through it (was a ValueError)."""
    la = Image.new("LA", (5, 3), (100, 128))
    assert (adapter.pixels(la.convert("La")) == adapter.pixels(la.convert("La").convert("LA"))).all()
    assert adapter.pixels(la.convert("La"))[0, 0].tolist() == [99, 99, 99, 128]
