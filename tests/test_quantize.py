"""Tests for pillow_gcp.quantizers: the front door, the K-means step and the protocol."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
from PIL import Image

from pillow_gcp.quantizers import (  # noqa: E402
    kmeans_palette,
    quantize,
    quantize_many,
    quantize_to_arrays,
    register_quantizer,
    registered_quantizers,
)
from pillow_gcp.quantizers import colorspace, histogram  # noqa: E402

ALGOS = [a for a in ("kmeans", "kmedoids") if a in registered_quantizers()]


# ----------------------------------------------------------------------------- helpers

def rand_rgb(h=24, w=20, seed=0, levels=256):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, levels, (h, w, 3)) * (255 // max(levels - 1, 1))
    return Image.fromarray(a.astype(np.uint8), "RGB")


def smooth_rgb(h=32, w=40, seed=0):
    """Gradient plus noise: many distinct colours, photo-like structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    a = a + rng.normal(0, 12, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def rgba_image(seed=0, h=24, w=20):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a = rng.choice(np.array([0, 255, 255, 128, 10], np.uint8), (h, w))
    return Image.fromarray(np.dstack([rgb, a]), "RGBA")


def decode(idx, pal):
    """(H, W) indices + (m, C) palette -> (H, W, C) colours."""
    return pal[idx]


def pixels_rgba(img):
    return np.asarray(img.convert("RGBA")).reshape(-1, 4)


def dist(X, P, metric):
    d = X[:, None, :].astype(np.float64) - P[None, :, :].astype(np.float64)
    if metric == "euclidean":
        return (d * d).sum(-1)
    if metric == "manhattan":
        return np.abs(d).sum(-1)
    return np.abs(d).max(-1)


def assert_nearest(img_rgb, idx, pal, metric="euclidean", space="rgb"):
    """Every pixel's entry is at minimal distance (ties allowed) among all entries."""
    X = np.asarray(img_rgb).reshape(-1, 3)
    P = pal[:, :3]
    if space == "oklab":
        Xs, Ps = colorspace.to_oklab(X).astype(np.float64), colorspace.to_oklab(P).astype(np.float64)
    else:
        Xs, Ps = X, P
    D = dist(Xs, Ps, metric)
    got = D[np.arange(len(X)), idx.ravel()]
    tol = 1e-6 if space == "rgb" else 1e-3
    assert np.all(got <= D.min(1) + tol)


# ----------------------------------------------------------------------------- basics

def test_registry_has_both_steps():
    assert "kmeans" in registered_quantizers()
    assert "kmedoids" in registered_quantizers()


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("k", [16, None])
def test_returns_p_image_with_at_most_k_colours(algo, k):
    im = smooth_rgb()
    q = quantize(im, k=k, algo=algo)
    assert q.mode == "P" and q.size == im.size
    kk = 256 if k is None else k
    idx, pal = quantize_to_arrays(im, k=k, algo=algo)
    assert pal.shape[1] == 3 and pal.shape[0] <= kk
    assert idx.dtype == np.uint8 and idx.shape == (im.size[1], im.size[0])
    assert np.array_equal(np.asarray(q), idx)
    assert q.palette.mode == "RGB"
    assert np.array_equal(np.asarray(q.convert("RGB")), decode(idx, pal))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("space", ["rgb", "oklab"])
def test_lossless_when_few_colours(algo, space):
    im = rand_rgb(levels=3, seed=1)  # at most 27 colours
    n = len(np.unique(np.asarray(im).reshape(-1, 3), axis=0))
    for k in (n, n + 5, 256):
        q = quantize(im, k=k, algo=algo, space=space)
        assert np.array_equal(np.asarray(q.convert("RGB")), np.asarray(im))
        assert len(q.getpalette()) // 3 == n


@pytest.mark.parametrize("algo", ALGOS)
def test_lossless_rgba_and_grey(algo):
    rng = np.random.default_rng(3)
    cols = np.array([[0, 0, 0, 0], [10, 20, 30, 255], [200, 100, 0, 128], [5, 5, 5, 255]], np.uint8)
    a = cols[rng.integers(0, 4, (10, 12))]
    im = Image.fromarray(a, "RGBA")
    q = quantize(im, k=4, algo=algo)
    assert np.array_equal(np.asarray(q.convert("RGBA")), a)
    g = Image.fromarray(rng.integers(0, 256, (6, 7), dtype=np.uint8), "L")
    q = quantize(g, k=256, algo=algo)
    assert np.array_equal(np.asarray(q.convert("L")), np.asarray(g))


@pytest.mark.parametrize("algo", ALGOS)
def test_deterministic(algo):
    im = smooth_rgb(seed=5)
    a1 = quantize_to_arrays(im, k=12, algo=algo, seed=7)
    a2 = quantize_to_arrays(im, k=12, algo=algo, seed=7)
    assert np.array_equal(a1[0], a2[0]) and np.array_equal(a1[1], a2[1])
    b1 = quantize_to_arrays(im, k=12, algo=algo, seed=None)
    b2 = quantize_to_arrays(im, k=12, algo=algo, seed=0)
    assert np.array_equal(b1[1], b2[1])


# ----------------------------------------------------------------------------- modes

MODES = ["RGB", "L", "1", "P", "CMYK", "YCbCr", "HSV", "LAB", "I", "F", "I;16"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode(mode):
    im = smooth_rgb().convert(mode) if mode != "P" else smooth_rgb().quantize(50)
    idx, pal = quantize_to_arrays(im, k=8)
    assert pal.shape[1] == 3 and 1 <= pal.shape[0] <= 8
    assert idx.max() < pal.shape[0]
    q = quantize(im, k=8)
    assert q.mode == "P" and q.size == im.size


def test_grey_modes_give_grey_palettes_and_exact_l():
    g = smooth_rgb().convert("L")
    idx, pal = quantize_to_arrays(g, k=256)
    assert np.array_equal(pal[idx][..., 0], np.asarray(g))
    assert np.all(pal[:, 0] == pal[:, 1]) and np.all(pal[:, 1] == pal[:, 2])
    one = g.convert("1")
    idx, pal = quantize_to_arrays(one, k=2)
    assert sorted(map(tuple, pal)) == [(0, 0, 0), (255, 255, 255)]


def test_high_bit_depth_rule():
    """16-bit: full range, round(v / 257); I and F: as Pillow's convert("L"); never min..max."""
    a16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    expected16 = ((a16.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)
    assert np.array_equal(expected16, np.clip(np.rint(a16 / 257), 0, 255).astype(np.uint8))
    im = Image.fromarray(a16)
    assert im.mode == "I;16"
    big = Image.frombytes("I;16B", im.size, a16.astype(">u2").tobytes())
    for src in (im, big):
        idx, pal = quantize_to_arrays(src, k=256)
        assert np.array_equal(pal[idx][..., 0], expected16)
    # a 16-bit image whose values stop at 189 is nearly black, not stretched
    dark = Image.fromarray(np.full((4, 4), 189, np.uint16))
    idx, pal = quantize_to_arrays(dark, k=4)
    assert pal.tolist() == [[1, 1, 1]]
    f = Image.fromarray(np.linspace(-1, 300, 64, dtype=np.float32).reshape(8, 8), "F")
    i32 = Image.fromarray(np.linspace(-50, 400, 64).astype(np.int32).reshape(8, 8), "I")
    for src in (f, i32):
        idx, pal = quantize_to_arrays(src, k=256)
        assert np.array_equal(pal[idx][..., 0], np.asarray(src.convert("L")))
        assert np.array_equal(pal[idx][..., 0], pal[idx][..., 2])
    small = Image.fromarray(np.full((4, 4), 77.0, np.float32), "F")
    idx, pal = quantize_to_arrays(small, k=4)
    assert pal.tolist() == [[77, 77, 77]]


def test_p_with_transparency_and_rgba_palette():
    p = smooth_rgb().quantize(10)
    p.info["transparency"] = 2
    idx, pal = quantize_to_arrays(p, k=256)
    assert pal.shape[1] == 4
    src = pixels_rgba(p)
    out = pal[idx].reshape(-1, 4)
    assert np.array_equal(out[src[:, 3] == 0], np.zeros((int((src[:, 3] == 0).sum()), 4), np.uint8))
    assert np.array_equal(out[src[:, 3] == 255], src[src[:, 3] == 255])
    rgba = np.asarray(rgba_image())  # a PA image built directly: before Pillow 12, RGBA -> PA dropped alpha
    p = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(16)
    pa = Image.frombytes("PA", p.size, np.dstack([np.asarray(p), rgba[..., 3]]).tobytes())
    pa.putpalette(p.getpalette())
    assert pa.getextrema()[1][0] < 255
    q = quantize(pa, k=16)
    assert q.palette.mode == "RGBA"


def test_opaque_rgba_gives_rgb_palette():
    im = smooth_rgb().convert("RGBA")
    idx, pal = quantize_to_arrays(im, k=16)
    assert pal.shape[1] == 3
    q = quantize(smooth_rgb().convert("LA"), k=4)
    assert q.palette.mode == "RGB"


# ----------------------------------------------------------------------------- alpha rules

@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("k", [3, 8, 40])
def test_alpha_rules(algo, k):
    im = rgba_image(seed=k)
    idx, pal = quantize_to_arrays(im, k=k, algo=algo)
    assert pal.shape[1] == 4 and pal.shape[0] <= k
    src = pixels_rgba(im)
    i = idx.ravel()
    tr = src[:, 3] == 0
    op = src[:, 3] == 255
    se = ~tr & ~op
    # all fully transparent pixels share one entry, (0, 0, 0, 0)
    assert len(np.unique(i[tr])) == 1
    assert pal[i[tr][0]].tolist() == [0, 0, 0, 0]
    # opaque pixels only on opaque entries
    assert np.all(pal[i[op], 3] == 255)
    # semi-transparent ones clustered in RGBA: on semi-transparent entries here
    assert np.all((pal[i[se], 3] > 0) & (pal[i[se], 3] < 255))
    # the transparent entry is used only by transparent pixels in this image
    q = quantize(im, k=k, algo=algo)
    out = pixels_rgba(q)
    assert np.all(out[tr, 3] == 0) and np.all(out[op, 3] == 255)


def test_rgba_with_only_binary_alpha():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = np.where(rng.random((16, 16)) < 0.3, 0, 255).astype(np.uint8)
    im = Image.fromarray(np.dstack([rgb, a]), "RGBA")
    idx, pal = quantize_to_arrays(im, k=16)
    assert pal.shape == (16, 4)
    assert (pal[:, 3] == 0).sum() == 1 and (pal[:, 3] == 255).sum() == 15
    assert len(np.unique(idx)) == 16


# ----------------------------------------------------------------------------- options

@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev"])
@pytest.mark.parametrize("space", ["rgb", "oklab"])
def test_mapping_is_exact_nearest(metric, space):
    im = smooth_rgb(seed=2)
    idx, pal = quantize_to_arrays(im, k=10, metric=metric, space=space)
    assert pal.shape[0] == 10
    assert_nearest(im, idx, pal, metric, space)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev"])
def test_given_palette_nearest(metric):
    im = smooth_rgb(seed=4)
    given = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 128, 255), (90, 200, 30), (0, 0, 0)]
    idx, pal = quantize_to_arrays(im, palette=given, metric=metric)
    assert pal.tolist() == [list(c) for c in given]  # exactly that palette, duplicates kept
    assert_nearest(im, idx, pal, metric)
    # a P image as the palette
    pimg = Image.new("P", (1, 1))
    pimg.putpalette(np.array(given[:5], np.uint8).tobytes())
    idx2, pal2 = quantize_to_arrays(im, palette=pimg, metric=metric)
    assert pal2.tolist()[:5] == [list(c) for c in given[:5]]
    assert_nearest(im, idx2, pal2, metric)


def test_given_palette_with_alpha():
    im = rgba_image(seed=9)
    given = [(0, 0, 0, 0), (255, 255, 255, 255), (0, 0, 0, 255), (100, 100, 100, 128)]
    idx, pal = quantize_to_arrays(im, palette=given)
    assert pal.tolist() == [list(c) for c in given]
    src = pixels_rgba(im)
    i = idx.ravel()
    assert np.all(i[src[:, 3] == 0] == 0)
    assert np.all(np.isin(i[src[:, 3] == 255], [1, 2]))


@pytest.mark.parametrize("algo", ALGOS)
def test_fixed_colors(algo):
    im = smooth_rgb(seed=6)
    fixed = [(1, 2, 3), (250, 250, 250), (0, 255, 0)]
    idx, pal = quantize_to_arrays(im, k=8, algo=algo, fixed_colors=fixed)
    assert pal.shape == (8, 3)
    rows = set(map(tuple, pal.tolist()))
    assert set(fixed) <= rows
    assert len(rows) == 8
    assert_nearest(im, idx, pal)
    # every non-fixed entry is used
    used = set(np.unique(idx).tolist())
    for j, row in enumerate(map(tuple, pal.tolist())):
        if row not in fixed:
            assert j in used
    # all k fixed: the palette is exactly them
    idx, pal = quantize_to_arrays(im, k=3, algo=algo, fixed_colors=fixed)
    assert set(map(tuple, pal.tolist())) == set(fixed)


def test_fixed_colors_with_alpha_make_rgba():
    im = smooth_rgb()
    idx, pal = quantize_to_arrays(im, k=6, fixed_colors=[(0, 0, 0, 0), (10, 20, 30, 200)])
    assert pal.shape[1] == 4
    assert [0, 0, 0, 0] in pal.tolist() and [10, 20, 30, 200] in pal.tolist()
    # opaque pixels still only on opaque entries
    assert np.all(pal[idx.ravel(), 3] == 255)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("k", [2, 16, 37])
@pytest.mark.parametrize("space", ["rgb", "oklab"])
def test_k_distinct_entries_all_used(algo, k, space):
    im = smooth_rgb(seed=k)
    idx, pal = quantize_to_arrays(im, k=k, algo=algo, space=space)
    assert pal.shape[0] == k
    assert len(np.unique(pal, axis=0)) == k
    assert len(np.unique(idx)) == k


@pytest.mark.parametrize("metric", ["manhattan", "chebyshev"])
def test_k_used_other_metrics(metric):
    for algo in ALGOS:
        idx, pal = quantize_to_arrays(smooth_rgb(seed=3), k=20, algo=algo, metric=metric)
        assert pal.shape[0] == 20 and len(np.unique(idx)) == 20


def test_duplicate_heavy_image_k_used():
    # few pixels of many colours, one colour dominating
    a = np.zeros((30, 30, 3), np.uint8)
    a[0, :30] = np.arange(30)[:, None] * 8
    im = Image.fromarray(a)
    idx, pal = quantize_to_arrays(im, k=16)
    assert len(np.unique(idx)) == 16 and len(np.unique(pal, axis=0)) == 16


def test_dither():
    im = smooth_rgb(seed=8)
    i0, p0 = quantize_to_arrays(im, k=6)
    i1, p1 = quantize_to_arrays(im, k=6, dither=True)
    assert np.array_equal(p0, p1)
    assert i1.max() < len(p1)
    assert not np.array_equal(i0, i1)
    # dithering keeps the mean colour closer than plain mapping on a smooth ramp
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (16, 1)), "L")
    a, p = quantize_to_arrays(ramp, k=2, dither=True, palette=[(0, 0, 0), (255, 255, 255)])
    assert abs(p[a][..., 0].mean() - np.asarray(ramp).mean()) < 8
    # with alpha: transparent pixels stay transparent
    q = quantize(rgba_image(), k=8, dither=True)
    src = pixels_rgba(rgba_image())
    assert np.all(pixels_rgba(q)[src[:, 3] == 0, 3] == 0)


# ----------------------------------------------------------------------------- quantize_many

def test_quantize_many_shared_palette():
    ims = [smooth_rgb(seed=1), smooth_rgb(seed=2, h=10, w=50), rand_rgb(levels=4)]
    outs = quantize_many(ims, k=12)
    assert len(outs) == 3
    pals = [o.getpalette() for o in outs]
    assert all(p == pals[0] for p in pals)
    assert all(o.size == i.size for o, i in zip(outs, ims))
    assert len(pals[0]) // 3 == 12
    # the palette is the one fitted to the pooled histogram: used somewhere
    used = set()
    for o in outs:
        used |= set(np.unique(np.asarray(o)).tolist())
    assert used == set(range(12))


def test_quantize_many_lossless_and_alpha():
    a = rand_rgb(levels=2, seed=1)
    b = rgba_image(seed=2).resize((5, 5))
    outs = quantize_many([a, b], k=256)
    assert outs[0].palette.mode == "RGBA"
    assert np.array_equal(np.asarray(outs[0].convert("RGB")), np.asarray(a))
    src = pixels_rgba(b)
    got = pixels_rgba(outs[1])
    keep = src[:, 3] > 0
    assert np.array_equal(got[keep], src[keep]) and np.all(got[~keep] == 0)


def test_quantize_many_single_equals_quantize():
    im = smooth_rgb()
    assert np.array_equal(np.asarray(quantize_many([im], k=9)[0]), np.asarray(quantize(im, k=9)))


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("k", [0, 257, -3])
def test_bad_k_value(k):
    with pytest.raises(ValueError, match="k"):
        quantize(smooth_rgb(), k=k)


@pytest.mark.parametrize("k", [True, 2.5, "16"])
def test_bad_k_type(k):
    with pytest.raises((TypeError, ValueError), match="k must"):
        quantize(smooth_rgb(), k=k)


def test_bad_algo_names_registered():
    with pytest.raises(ValueError, match="algo") as e:
        quantize(smooth_rgb(), algo="kmeanz")
    assert "kmeans" in str(e.value) and "kmedoids" in str(e.value)


@pytest.mark.parametrize("kw,word", [
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(seed=True), "seed"),
    (dict(metric="cosine"), "metric"), (dict(space="lab"), "space"),
    (dict(dither="yes"), "dither"),
    (dict(fixed_colors=[(1, 2)]), "fixed_colors"), (dict(fixed_colors=[(1, 2, 300)]), "fixed_colors"),
    (dict(fixed_colors=5), "fixed_colors"), (dict(k=2, fixed_colors=[(1, 1, 1), (2, 2, 2), (3, 3, 3)]), "fixed_colors"),
    (dict(palette=[]), "palette"), (dict(palette=[(1, 2, 3, 4, 5)]), "palette"),
    (dict(palette=Image.new("RGB", (1, 1))), "palette"), (dict(palette=[(0, 0, 0)] * 257), "palette"),
])
def test_validation_names_parameter(kw, word):
    with pytest.raises((ValueError, TypeError), match=word):
        quantize(smooth_rgb(), **kw)


def test_degenerate_images():
    idx, pal = quantize_to_arrays(Image.new("RGB", (0, 5)), k=4)
    assert idx.shape == (5, 0) and pal.tolist() == [[0, 0, 0]]
    idx, pal = quantize_to_arrays(Image.new("RGBA", (3, 2), (9, 9, 9, 0)), k=4)
    assert pal.tolist() == [[0, 0, 0, 0]] and np.all(idx == 0)
    idx, pal = quantize_to_arrays(Image.new("RGB", (1, 1), (3, 4, 5)), k=1)
    assert pal.tolist() == [[3, 4, 5]]


def test_bad_image_and_images():
    with pytest.raises(TypeError, match="img"):
        quantize(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="images"):
        quantize_many([])
    with pytest.raises(TypeError, match="images"):
        quantize_many(smooth_rgb())


def test_register_and_callable_steps():
    def first_k(colors, weights, k, *, metric, seed, fixed):
        order = np.argsort(-weights, kind="stable")[:k]
        out = colors[order]
        return out if fixed is None else np.concatenate([fixed, out])[:k]

    register_quantizer("test_first_k", first_k)
    assert "test_first_k" in registered_quantizers()
    im = smooth_rgb()
    idx, pal = quantize_to_arrays(im, k=7, algo="test_first_k")
    assert pal.shape[0] == 7 and len(np.unique(idx)) == 7
    idx2, pal2 = quantize_to_arrays(im, k=7, algo=first_k)
    assert np.array_equal(pal, pal2)
    with pytest.raises(TypeError):
        register_quantizer("x", 3)

    def bad_shape(colors, weights, k, **kw):
        return np.zeros((k, 5), np.uint8)

    with pytest.raises(ValueError):
        quantize(im, k=4, algo=bad_shape)


def test_step_receives_protocol_arguments():
    seen = {}

    def spy(colors, weights, k, *, metric, seed, fixed):
        seen.setdefault("calls", []).append((colors.dtype, colors.shape[1], int(weights.sum()), k, metric, seed,
                                             None if fixed is None else fixed.shape))
        return kmeans_palette(colors, weights, k, metric=metric, seed=seed, fixed=fixed)

    quantize(smooth_rgb(), k=5, algo=spy, metric="manhattan", seed=3, space="oklab", fixed_colors=[(9, 9, 9)])
    (dt, C, wsum, k, metric, seed, fshape), = seen["calls"]
    assert dt == np.float32 and C == 3 and wsum == 32 * 40 and k == 5
    assert metric == "manhattan" and seed == 3 and fshape == (1, 3)
    seen.clear()
    quantize(rgba_image(), k=9, algo=spy)
    kinds = sorted((c[0] == np.uint8, c[1]) for c in seen["calls"])
    assert kinds == [(True, 3), (True, 4)]  # opaque group as RGB, semi-transparent as RGBA


# ----------------------------------------------------------------------------- the K-means step

def test_kmeans_step_direct():
    rng = np.random.default_rng(0)
    colors = np.unique(rng.integers(0, 256, (3000, 3)).astype(np.uint8), axis=0)
    w = rng.integers(1, 50, len(colors)).astype(np.int64)
    fixed = np.array([[7, 7, 7], [200, 1, 1]], np.uint8)
    P = kmeans_palette(colors, w, 20, seed=1, fixed=fixed)
    assert P.dtype == np.uint8 and P.shape == (20, 3)
    assert np.array_equal(P[:2], fixed)
    assert np.array_equal(P, kmeans_palette(colors, w, 20, seed=1, fixed=fixed))
    # lower error than the weighted-random palette of the same size
    def sse(P):
        return (dist(colors, P, "euclidean").min(1) * w).sum()
    rnd = colors[rng.choice(len(colors), 20, replace=False)]
    assert sse(P) < sse(rnd)
    # float (OKLab) input returns float
    Pf = kmeans_palette(colorspace.to_oklab(colors), w, 5)
    assert Pf.dtype == np.float32 and Pf.shape == (5, 3)
    # fewer colours than k: the colours themselves
    assert kmeans_palette(colors[:4], w[:4], 10).shape == (4, 3)


def test_histogram_helpers():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, (50, 3)).astype(np.uint8) * 60
    keys = histogram.pack(a)
    uk, cnt = histogram.unique_keys(keys)
    ref, rc = np.unique(a, axis=0, return_counts=True)
    got = histogram.unpack(uk, 3)
    order = np.lexsort(got.T[::-1])
    assert np.array_equal(got[order], ref) and np.array_equal(cnt[order], rc)
    mk, mc = histogram.merge_histograms([(uk, cnt), (uk[:3], cnt[:3])])
    assert np.array_equal(mk, uk) and mc.sum() == cnt.sum() + cnt[:3].sum()
    vals = np.arange(len(uk))
    assert np.array_equal(uk[histogram.map_keys(keys, uk, vals)], keys)


@pytest.mark.parametrize("C", [3, 4])
def test_map_keys_lookup_table_paths(C):
    rng = np.random.default_rng(C)
    a = rng.integers(0, 256, (300, 300, C)).astype(np.uint8)
    if C == 4:
        a[..., 3] = rng.choice(np.array([0, 17, 255, 255], np.uint8), (300, 300))
    keys = histogram.pack(a)
    uk, cnt = histogram.unique_keys(keys)
    vals = (np.arange(uk.size) % 251).astype(np.uint8)
    got = histogram.map_keys(keys, uk, vals)  # >= _TABLE_MIN keys: table path
    assert keys.size >= histogram._TABLE_MIN
    assert got.shape == keys.shape
    assert np.array_equal(got, vals[np.searchsorted(uk, keys)])


def test_oklab_roundtrip():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 256, (2000, 4)).astype(np.uint8)
    assert np.array_equal(colorspace.from_oklab(colorspace.to_oklab(c)), c)
    lab = colorspace.to_oklab(np.array([[255, 255, 255]], np.uint8))
    assert abs(lab[0, 0] - 100) < 1e-3 and abs(lab[0, 1]) < 1e-3


def test_nearest_chunked_matches_brute():
    Nm = sys.modules["pillow_gcp.quantizers.nearest"]
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (5000, 3)).astype(np.uint8)
    P = rng.integers(0, 256, (300, 3)).astype(np.uint8)
    for metric in ("euclidean", "manhattan", "chebyshev"):
        D = dist(X, P, metric)
        idx = Nm.nearest(X, P, metric)
        assert np.array_equal(D[np.arange(len(X)), idx], D.min(1))
    i2, d1, d2 = Nm.nearest_two(X, P)
    D = dist(X, P, "euclidean")
    Ds = np.sort(D, 1)
    assert np.allclose(d1, Ds[:, 0]) and np.allclose(d2, Ds[:, 1])


# ----------------------------------------------------------------------------- property test

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 12), w=st.integers(1, 12), levels=st.sampled_from([2, 3, 8, 256]),
    k=st.integers(1, 40), seed=st.integers(0, 2**16), alpha=st.booleans(),
)
def test_invariants_property(h, w, levels, k, seed, alpha):
    rng = np.random.default_rng(seed)
    step = 255 // (levels - 1)
    a = (rng.integers(0, levels, (h, w, 4 if alpha else 3)) * step).astype(np.uint8)
    if alpha:
        a[..., 3] = rng.choice(np.array([0, 255, 128], np.uint8), (h, w))
    im = Image.fromarray(a, "RGBA" if alpha else "RGB")
    idx, pal = quantize_to_arrays(im, k=k, seed=seed % 7)
    src = a.reshape(h * w, -1)
    if alpha:
        src = src.copy()
        src[src[:, 3] == 0] = 0
    uniq = np.unique(src, axis=0)
    has_alpha = alpha and (src[:, 3] < 255).any()
    assert pal.shape[0] <= k and idx.max() < pal.shape[0]
    assert len(np.unique(pal, axis=0)) == pal.shape[0]
    out = pal[idx].reshape(h * w, -1)
    if has_alpha:
        groups = (int((uniq[:, 3] == 0).any()) + int((uniq[:, 3] == 255).any())
                  + int(((uniq[:, 3] > 0) & (uniq[:, 3] < 255)).any()))
    else:
        groups = 1
    if len(uniq) <= k:
        assert np.array_equal(out, src[:, :pal.shape[1]])
    if k >= groups:
        assert pal.shape[1] == (4 if has_alpha else 3)
    if len(uniq) > k >= groups:
        assert pal.shape[0] == k and len(np.unique(idx)) == k
        if has_alpha:
            assert np.all(out[src[:, 3] == 0] == 0)
            assert np.all(out[src[:, 3] == 255, 3] == 255)
    if not has_alpha:
        assert_nearest(Image.fromarray(a[..., :3]), idx, pal)


# --- no process-wide side effects; exact nearest search in both block layouts ---------


def test_quantize_leaves_environment_and_threads_as_found():
    import os
    import threading

    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    env = dict(os.environ)
    n_threads = threading.active_count()
    from pillow_gcp.quantizers import quantize_array
    for algo in ("kmeans", "kmedoids"):
        quantize_array(arr, 16, algo)
    assert dict(os.environ) == env
    assert threading.active_count() == n_threads


@pytest.mark.parametrize("m", [1, 2, 16, 48, 49, 256])
def test_nearest_is_exact_in_both_layouts(m):
    from pillow_gcp.quantizers.nearest import nearest, nearest_two
    rng = np.random.default_rng(m)
    X = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    P = rng.integers(0, 256, (m, 3), dtype=np.uint8)
    D = ((X[:, None, :].astype(np.int64) - P[None, :, :]) ** 2).sum(2)
    idx, d = nearest(X, P, return_dist=True)
    assert np.array_equal(idx, D.argmin(1))  # ties to the lowest index
    assert np.array_equal(d, D.min(1))
    j, d1, d2 = nearest_two(X, P)
    assert np.array_equal(j, D.argmin(1)) and np.array_equal(d1, D.min(1))
    if m > 1:
        assert np.array_equal(d2, np.sort(D, axis=1)[:, 1])


@pytest.mark.parametrize("m", [49, 64, 128, 256])
def test_nearest_two_row_layout_with_ties_and_block_edges(m):
    # nearest_two for m > 48 reduces several BLAS blocks at once (_nearest_two_rows): against a
    # brute force with many exact ties (lowest index wins), and, for non-integer float32 input,
    # bit for bit against one BLAS block per step reduced on its own (the former per-block path)
    Nm = sys.modules["pillow_gcp.quantizers.nearest"]
    rng = np.random.default_rng(m + 1)
    step = Nm._chunk_rows(m, 4)
    R = max(step, (Nm._REDUCE_ELEMS // m) // step * step)
    for U in (1, step - 1, step, R, R + 1, 2 * R + step + 3):
        X = rng.integers(0, 6, (U, 3)).astype(np.float32)  # a 6^3 grid: many tied distances
        P = rng.integers(0, 6, (m, 3)).astype(np.float32)
        D = ((X[:, None, :].astype(np.int64) - P[None, :, :].astype(np.int64)) ** 2).sum(2)
        j, d1, d2 = Nm.nearest_two(X, P)
        assert np.array_equal(j, D.argmin(1)) and np.array_equal(d1, D.min(1))
        assert np.array_equal(d2, np.sort(D, axis=1)[:, 1])
        Xf = (rng.random((U, 3)) * 255).astype(np.float32)
        Pf = (rng.random((m, 3)) * 255).astype(np.float32)
        j, d1, d2 = Nm.nearest_two(Xf, Pf)
        rj, r1, r2 = [], [], []
        for s, n, B, ax in Nm._euclid_blocks(Xf, Pf, step):
            assert ax == 1
            B = B.copy()
            a = B.argmin(1)
            rj.append(a)
            r1.append(B[np.arange(n), a])
            B[np.arange(n), a] = np.inf
            r2.append(B.min(1))
        xn = Nm.sqnorm(Xf)
        assert np.array_equal(j, np.concatenate(rj))
        assert np.array_equal(d1, np.maximum(np.concatenate(r1) + xn, 0))
        assert np.array_equal(d2, np.maximum(np.concatenate(r2) + xn, 0))


@pytest.mark.parametrize("shape", [(1, 4, 300), (5000, 4, 256), (128, 4096, 16), (3, 7000, 1), (7, 0, 3)])
def test_matmul_small_matches_matmul(shape):
    from pillow_gcp.quantizers.nearest import matmul_small
    a, K, b = shape
    rng = np.random.default_rng(a + K + b)
    A = rng.integers(-50, 50, (a, K)).astype(np.float32)
    B = rng.integers(-50, 50, (K, b)).astype(np.float32)
    assert np.array_equal(matmul_small(A, B), A.astype(np.int64) @ B.astype(np.int64))


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**32 - 1, 2**32, 2**63 + 5, 10**30])
def test_kmeans_rng_is_numpys_default_rng_stream(seed):
    # K-means draws from a pure-Python copy of default_rng(seed) (no numpy.random import at
    # start-up); its draws must be numpy's, bit for bit, also after handing over to numpy
    from pillow_gcp.quantizers._pcg import Pcg64

    ours, ref = Pcg64(seed), np.random.default_rng(seed)
    assert ours.state == ref.bit_generator.state["state"]["state"]
    p = np.random.default_rng(seed % 97).random(40) + 1e-3
    p /= p.sum()
    for _ in range(5):
        assert np.array_equal(ours.random(3), ref.random(3))
        assert ours.choice_p(p) == ref.choice(40, p=p)
    got = ours.numpy(lambda g: g.choice(40, size=6, replace=True))
    assert np.array_equal(got, ref.choice(40, size=6, replace=True))
    assert np.array_equal(ours.random(4), ref.random(4)) and ours.choice_p(p) == ref.choice(40, p=p)


def test_kmeans_does_not_import_numpy_random():
    import subprocess

    plain = subprocess.run([sys.executable, "-c", "import sys, numpy; print('numpy.random' in sys.modules)"],
                           capture_output=True, text=True, check=True).stdout
    if plain.strip() == "True":  # numpy < 1.25 (the declared floor, 1.19) imports numpy.random itself
        pytest.skip("this numpy imports numpy.random on `import numpy`")
    code = ("import sys, numpy as np; from pillow_gcp.quantizers import quantize_array; "
            "a = np.arange(96 * 80 * 3, dtype=np.uint32).reshape(96, 80, 3) * 2654435761 % 251; "
            "quantize_array(a.astype(np.uint8), 16); quantize_array(a.astype(np.uint8), 200); "
            "print('numpy.random' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("m", [1, 2, 16, 48, 127, 128])
def test_first_min_is_numpys_argmin_with_ties(m):
    # the fast path of long (m, rows) blocks must give argmin's first index, ties included
    from pillow_gcp.quantizers.nearest import _first_min
    rng = np.random.default_rng(m)
    for rows in (100, 256, 300, 5000):
        D = rng.integers(-20, 20, (m, rows)).astype(np.float32)  # many ties
        j, d = _first_min(D, 0)
        assert np.array_equal(j, np.argmin(D, axis=0)) and np.array_equal(d, D.min(axis=0))
        j, d = _first_min(np.ascontiguousarray(D.T), 1)
        assert np.array_equal(j, np.argmin(D, axis=0)) and np.array_equal(d, D.min(axis=0))


@pytest.mark.parametrize("shape,dtype", [((777, 3), np.float32), ((777, 4), np.float32), ((777, 3), np.float64)])
def test_sqnorm_is_the_channel_order_sum(shape, dtype):
    from pillow_gcp.quantizers.nearest import sqnorm
    X = (np.random.default_rng(5).random(shape) * 300 - 20).astype(dtype)
    einsum = np.einsum("ij,ij->i", X, X)
    if shape[1] == 3 and dtype == np.float32:
        # the explicit sum in channel order, exactly; einsum sums in that order on the numpy this
        # was written with (2.4: bit for bit), other versions may pair terms: equal within rounding
        ref = X[:, 0] * X[:, 0]
        ref = ref + X[:, 1] * X[:, 1]
        ref = ref + X[:, 2] * X[:, 2]
        assert np.array_equal(sqnorm(X), ref)
        np.testing.assert_allclose(sqnorm(X), einsum, rtol=1e-6)
    else:
        assert np.array_equal(sqnorm(X), einsum)


# --------------------------------------------------------------------------- K-means internals


def _kmeans_mod():
    import importlib

    return importlib.import_module("pillow_gcp.quantizers.kmeans")


@pytest.mark.parametrize("C", [3, 4])
def test_kmeans_dist_assigned_equals_gathered_rows(C):
    """The channel-column distance to the assigned centre is the sqnorm of the gathered rows, bit for bit."""
    from pillow_gcp.quantizers.nearest import sqnorm

    km = _kmeans_mod()
    rng = np.random.default_rng(5)
    X = (rng.random((3000, C)) * 255).astype(np.float32)
    cen = (rng.random((17, C)) * 255).astype(np.float32)
    a = rng.integers(0, 17, 3000)
    rows = np.sort(rng.choice(3000, 700, replace=False))
    Xc = km._columns(X)
    assert (Xc is None) == (C != 3)
    full = np.sqrt(sqnorm(X - cen[a]))
    np.testing.assert_array_equal(km._dist_assigned(X, Xc, cen, a), full)
    np.testing.assert_array_equal(km._dist_assigned(X, Xc, cen, a, rows), full[rows])
    np.testing.assert_array_equal(km._dist_assigned(X, Xc, cen, a, squared=True), sqnorm(X - cen[a]))


@pytest.mark.parametrize("big", [0, 1, 3, 6])
def test_kmeans_drop_lower_keeps_valid_bounds(big):
    """After centres move (``big`` of them far), every lower bound stays below the true distance to
    the nearest centre other than the point's own."""
    km = _kmeans_mod()
    rng = np.random.default_rng(big)
    X = (rng.random((4000, 3)) * 255).astype(np.float32)
    cen = (rng.random((32, 3)) * 255).astype(np.float32)
    D = np.sqrt(((X[:, None, :] - cen[None]) ** 2).sum(axis=2))
    a = np.argmin(D, axis=1)
    rows = np.arange(X.shape[0])
    D2 = D.copy()
    D2[rows, a] = np.inf
    lower = D2.min(axis=1).astype(np.float32)
    new = cen + rng.normal(0, 1.0, cen.shape).astype(np.float32)
    moved = rng.choice(32, big, replace=False)
    new[moved] = (rng.random((big, 3)) * 255).astype(np.float32)
    shift = np.sqrt(((new - cen) ** 2).sum(axis=1)).astype(np.float32)
    km._drop_lower(X, km._columns(X), new, a, lower, shift)
    Dn = np.sqrt(((X[:, None, :].astype(np.float64) - new[None]) ** 2).sum(axis=2))
    Dn[rows, a] = np.inf
    assert (lower <= Dn.min(axis=1) + 1e-3).all()
    if big:  # the far-moved centres are measured, not subtracted: bounds stay useful
        plain = D2.min(axis=1) - shift.max()
        assert np.median(lower) > np.median(plain)


def test_kmeans_lloyd_matches_brute_force():
    """Lloyd with the bounds (incl. the far-moved centres' exact distances) assigns every point to its
    nearest centre, as a brute-force Lloyd from the same start does."""
    km = _kmeans_mod()
    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(m, 12, (800, 3)) for m in (40, 120, 200)]).clip(0, 255).astype(np.float32)
    w = rng.integers(1, 50, X.shape[0]).astype(np.float64)
    init = X[rng.choice(X.shape[0], 24, replace=False)]
    cen, assign, lower, sse, dist = km._lloyd(X, w, init, 0, 100, 0.0)
    D = ((X[:, None, :].astype(np.float64) - cen[None].astype(np.float64)) ** 2).sum(axis=2)
    best = D.min(axis=1)
    np.testing.assert_allclose(D[np.arange(X.shape[0]), assign], best, rtol=1e-5, atol=1e-3)
    D[np.arange(X.shape[0]), assign] = np.inf
    # float32 distances from the ||x||^2 - 2 x.p + ||p||^2 expansion: ~1e-3 slop at 255-scale colours
    assert (lower <= np.sqrt(D.min(axis=1)) + 1e-2).all()


@pytest.mark.parametrize("C,bits,dtype", [(3, 4, np.uint8), (3, 5, np.uint8), (3, 7, np.uint8), (4, 6, np.uint8),
                                          (4, 8, np.uint8), (3, 5, np.float32)])
def test_bin_reduce_matches_a_plain_grid_reduction(C, bits, dtype):
    # cells, weighted means, weights and each colour's cell, against np.unique on the grid rows
    rng = np.random.default_rng(bits * C)
    n = 40000  # 3 x 4-5 bits: the counting path (dense keys); 3 x 7, 4 x 6-8: the sort path
    X = rng.integers(0, 256, (n, C)).astype(np.uint8)
    X = np.unique(X, axis=0)
    if dtype == np.float32:
        X = X.astype(np.float32) / 255 - 0.3
    w = rng.integers(1, 50, X.shape[0]).astype(np.float64)
    means, wsum, inv = histogram.bin_reduce(X, w, bits)
    if dtype == np.uint8:
        q = (X >> (8 - bits)).astype(np.int64)
    else:
        lo, span = X.min(axis=0), X.max(axis=0) - X.min(axis=0)
        q = np.minimum(((X - lo) / span * (1 << bits)).astype(np.int64), (1 << bits) - 1)
    cells, ref_inv = np.unique(q, axis=0, return_inverse=True)
    ref_inv = ref_inv.ravel()
    assert means.shape == (cells.shape[0], C) and wsum.shape == (cells.shape[0],)
    # same partition (cell ids in the same order: both sort the cell keys)
    assert np.array_equal(inv, ref_inv)
    ref_w = np.bincount(ref_inv, weights=w)
    assert np.allclose(wsum, ref_w, rtol=0, atol=1e-9)
    for c in range(C):
        ref_m = np.bincount(ref_inv, weights=X[:, c].astype(np.float64) * w) / ref_w
        assert np.allclose(means[:, c], ref_m, rtol=1e-12, atol=1e-9)


def test_colors_is_a_synonym_of_k():
    """quantize(im, colors=16), as Image.quantize and the GCP save name it; both at once is an error."""
    im = Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    a = quantize(im, colors=16)
    b = quantize(im, 16)
    assert a.tobytes() == b.tobytes() and a.getpalette() == b.getpalette()
    assert [m.tobytes() for m in quantize_many([im, im], colors=8)] == \
        [m.tobytes() for m in quantize_many([im, im], 8)]
    with pytest.raises(ValueError, match="give k or colors"):
        quantize(im, 16, colors=16)


def test_a_palette_step_that_returns_nothing_is_named_in_the_error():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"palette step returned no entries for 400 colours; it must return 1\.\.4"):
        quantize(im, k=4, algo=lambda c, w, k, *, metric, seed, fixed: c[:0])
    # with a fixed colour the palette is not empty: the front door completes it to k entries
    q = quantize(im, k=4, algo=lambda c, w, k, *, metric, seed, fixed: c[:0], fixed_colors=[(1, 2, 3)])
    assert len(q.getcolors()) == 4
