"""Benchmark of the .gcp payload (format version 3) against PNG-8, lossless WebP and JPEG XL.

Usage::

    python bench/bench_payload.py [--sets photos photos-more palette-graphics] [--k 16 64 256]
                                  [--limit N] [--jxl-limit N] [--timing-photos N] [--sizes-only | --timing-only]

Sizes (one table per set): photos are quantized ONCE per k with libimagequant (``dithering_level=0``,
``max_colors=k``; k = the colours actually used); palette graphics are stored losslessly (their exact
indexed form, :func:`pillow_gcp.adapter.indexed`). The same index map + palette is then written as

* ours    : the whole .gcp file, ``format.encode(indices, palette)`` at the default level (6) and at 9,
* PNG-8   : Pillow ``save(..., "PNG", optimize=True)`` of the P image (tRNS for an RGBA palette),
* WebP-L  : Pillow ``save(..., "WEBP", lossless=True, quality=100, method=6)`` of the RGB(A) image,
* JXL e9  : ``imagecodecs.jpegxl_encode(rgb(a), lossless=True, effort=9)`` (first ``--jxl-limit`` maps).

Printed: medians over the maps of ours/X (and the total ratio sum(ours)/sum(X)), the level 6 / level 9
size ratio, and the codings the default level picked.

Speed: for the first ``--timing-photos`` photos of each photo set, resized (LANCZOS) to about 0.4, 1 and
4 MP plus Gaussian noise (sigma 2, so that the upscale is not unnaturally smooth), quantized at each k; and
every palette graphic at its own size. Decode = Pillow ``Image.open(BytesIO(file)).load()`` of the .gcp
against the same for the PNG-8; encode = ``im.save(BytesIO(), "GCP")`` (default level) against
``im.save(BytesIO(), "PNG", optimize=True)`` of the same P image. Times are CPU time of the process
(``time.process_time``: all threads, so the CTX decoder's helper thread on maps of 2^19 pixels and more is
counted; nothing else runs in this process), min over interleaved repeats — on a shared, loaded machine
wall-clock is unusable. Printed: median (and max) of the per-image ratios.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pillow_gcp  # noqa: E402,F401  (registers the GCP plugin)
from pillow_gcp import adapter, format as gcp_format, payload  # noqa: E402

try:
    import imagequant
except ImportError:  # pragma: no cover
    sys.exit("bench_payload needs imagequant (pip install imagequant)")
try:
    import imagecodecs
    HAVE_JXL = bool(getattr(imagecodecs, "JPEGXL", None) and imagecodecs.JPEGXL.available)
except ImportError:  # pragma: no cover
    HAVE_JXL = False

CORPUS = "/work/shared/corpus"
SIZES = {"0.4 MP": (768, 512), "1 MP": (1224, 816), "4 MP": (2450, 1630)}


def files_of(folder: str) -> list:
    return sorted(glob.glob(os.path.join(folder, "*.png")) + glob.glob(os.path.join(folder, "*.bmp")))


def quantized(rgb: Image.Image, k: int):
    q = imagequant.quantize_pil_image(rgb, dithering_level=0, max_colors=k)
    idx = np.asarray(q).copy()
    m = int(idx.max()) + 1
    pal = np.array(q.getpalette()[:3 * m], np.uint8).reshape(m, 3)
    return idx, pal


def p_image(idx: np.ndarray, pal: np.ndarray) -> Image.Image:
    return adapter.to_image(idx, pal)


def encoded(idx, pal, level=None) -> bytes:
    return gcp_format.encode(idx, pal, level=level)


def png8(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", optimize=True)
    return b.getvalue()


def webp_l(idx, pal) -> bytes:
    b = io.BytesIO()
    Image.fromarray(pal[idx]).save(b, "WEBP", lossless=True, quality=100, method=6)
    return b.getvalue()


def jxl(idx, pal) -> bytes:
    return imagecodecs.jpegxl_encode(np.ascontiguousarray(pal[idx]), lossless=True, effort=9)


def cpu_min(fn, n: int, clock=time.process_time) -> float:
    """The least time of n calls of fn (process CPU time, or ``clock``)."""
    best = float("inf")
    for _ in range(n):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def exact_indexed(im: Image.Image):
    """The exact (indices, palette) of an image with at most 256 colours (P/L/LA/PA via the adapter,
    RGB/RGBA through their distinct colours), or None."""
    got = adapter.indexed(im)
    if got is not None:
        return got
    px = adapter.pixels(im)
    flat = np.ascontiguousarray(px.reshape(-1, px.shape[-1]))
    pal, inv = np.unique(flat, axis=0, return_inverse=True)
    if len(pal) > 256:
        return None
    return inv.reshape(px.shape[:2]).astype(np.uint8), pal.astype(np.uint8)


def maps_of(name: str, k_list, limit: int):
    """[(label, k, indices, palette)] for a set."""
    files = files_of(os.path.join(CORPUS, name))[:limit or None]
    out = []
    if name == "palette-graphics":
        for f in files:
            got = exact_indexed(Image.open(f))
            if got is not None:
                out.append((os.path.basename(f), len(got[1]), got[0], got[1]))
        return out
    for f in files:
        rgb = Image.open(f).convert("RGB")
        for k in k_list:
            idx, pal = quantized(rgb, k)
            out.append((os.path.basename(f), k, idx, pal))
    return out


def size_table(name: str, maps, jxl_limit: int) -> None:
    rows = []
    jxl_seen = {}
    for label, k, idx, pal in maps:
        r = {"k": k, "ours": len(encoded(idx, pal)), "l9": len(encoded(idx, pal, 9)),
             "png": len(png8(p_image(idx, pal))), "webp": len(webp_l(idx, pal))}
        body = payload.encode(idx, len(pal))
        r["coding"] = payload.coding_name(body)
        n_jxl = jxl_seen.get(k if name != "palette-graphics" else 0, 0)
        if HAVE_JXL and n_jxl < jxl_limit:
            r["jxl"] = len(jxl(idx, pal))
            jxl_seen[k if name != "palette-graphics" else 0] = n_jxl + 1
        rows.append(r)
    groups = [("all", rows)] if name == "palette-graphics" else \
        [(f"k={k}", [r for r in rows if r["k"] == k]) for k in sorted({r["k"] for r in rows})]
    print(f"\n{name}: {len(maps)} maps; ratio = median of ours/X per map (total = sum ours / sum X)")
    print(f"{'':>6} {'n':>3} {'/PNG-8':>15} {'/WebP-L':>15} {'/JXL e9 (n)':>20} {'L6/L9':>7}  codings at level 6")
    for g, rr in groups:
        def ratio(col, sub=rr):
            sub = [r for r in sub if col in r]
            if not sub:
                return "-"
            med = np.median([r["ours"] / r[col] for r in sub])
            tot = sum(r["ours"] for r in sub) / sum(r[col] for r in sub)
            return f"{med:.3f} ({tot:.3f})"
        nj = sum(1 for r in rr if "jxl" in r)
        l69 = np.median([r["ours"] / r["l9"] for r in rr])
        codings = {}
        for r in rr:
            codings[r["coding"]] = codings.get(r["coding"], 0) + 1
        print(f"{g:>6} {len(rr):>3} {ratio('png'):>15} {ratio('webp'):>15} {ratio('jxl') + f' ({nj})':>20} "
              f"{l69:>7.3f}  " + ", ".join(f"{c}:{n}" for c, n in sorted(codings.items())))


def timing_row(im: Image.Image, idx, pal, reps: int) -> dict:
    gcp = io.BytesIO()
    im.save(gcp, "GCP")
    gcp = gcp.getvalue()
    png = png8(im)
    back = Image.open(io.BytesIO(gcp))
    assert np.array_equal(np.asarray(back), idx)
    t = {"dec": float("inf"), "png_dec": float("inf"), "enc": float("inf"), "png_enc": float("inf")}
    for _ in range(reps):  # interleaved so both see the same machine load
        t["dec"] = min(t["dec"], cpu_min(lambda: Image.open(io.BytesIO(gcp)).load(), 1))
        t["png_dec"] = min(t["png_dec"], cpu_min(lambda: Image.open(io.BytesIO(png)).load(), 1))
    for _ in range(max(1, reps // 2)):
        t["enc"] = min(t["enc"], cpu_min(lambda: im.save(io.BytesIO(), "GCP"), 1))
        t["png_enc"] = min(t["png_enc"], cpu_min(lambda: im.save(io.BytesIO(), "PNG", optimize=True), 1))
    t["size"] = len(gcp) / len(png)
    t["coding"] = payload.coding_name(gcp[gcp.index(b"DATA") + 4:][:2])
    return t


def print_timing(label: str, ts: list) -> None:
    dec = [t["dec"] / t["png_dec"] for t in ts]
    enc = [t["enc"] / t["png_enc"] for t in ts]
    print(f"{label:>26} {len(ts):>3} {np.median([t['size'] for t in ts]):>9.3f} "
          f"{np.median(dec):>6.2f} ({max(dec):.2f}) {np.median(enc):>6.2f} ({max(enc):.2f})  "
          f"{1e3 * np.median([t['dec'] for t in ts]):>7.2f} {1e3 * np.median([t['png_dec'] for t in ts]):>7.2f}"
          f" {1e3 * np.median([t['enc'] for t in ts]):>8.1f} {1e3 * np.median([t['png_enc'] for t in ts]):>8.1f}")


def print_rows(ts: list, labels: list) -> None:
    for t, label in zip(ts, labels):
        print(f"{label[:26]:>26}   {t['coding']:<16} {t['size']:>6.3f} {t['dec'] / t['png_dec']:>6.2f} {t['enc'] / t['png_enc']:>6.2f}"
              f"  {1e3 * t['dec']:>7.2f} {1e3 * t['png_dec']:>7.2f} {1e3 * t['enc']:>8.2f} {1e3 * t['png_enc']:>8.2f}")


def timing(sets, k_list, n_photos: int, reps: int, per_image: bool = False) -> None:
    print("\nspeed: CPU time ratios ours/PNG-8 through Pillow (median (max) over images); decode = open+load,"
          " encode = save at the default level vs PNG optimize=True")
    print(f"{'':>26} {'n':>3} {'size/PNG':>9} {'dec/PNG':>13} {'enc/PNG':>13}  {'dec ms':>7} {'PNG ms':>7}"
          f" {'enc ms':>8} {'PNG ms':>8}")
    rng = np.random.default_rng(0)
    for name in sets:
        if name == "palette-graphics":
            ts, labels = [], []
            for f in files_of(os.path.join(CORPUS, name)):
                got = exact_indexed(Image.open(f))
                if got is not None:
                    ts.append(timing_row(p_image(*got), got[0], got[1], reps))
                    labels.append(os.path.basename(f))
            if per_image:
                print_rows(ts, labels)
            print_timing(f"{name} (own sizes)", ts)
            continue
        if n_photos <= 0:
            continue
        srcs = [Image.open(f).convert("RGB") for f in files_of(os.path.join(CORPUS, name))[:n_photos]]
        for mp, wh in SIZES.items():
            scaled = []
            for s in srcs:
                w, h = wh if s.width >= s.height else wh[::-1]
                a = np.asarray(s.resize((w, h), Image.LANCZOS), np.float32)
                a = np.clip(a + rng.normal(0, 2, a.shape), 0, 255).astype(np.uint8)
                scaled.append(Image.fromarray(a))
            for k in k_list:
                ts = []
                for s in scaled:
                    idx, pal = quantized(s, k)
                    ts.append(timing_row(p_image(idx, pal), idx, pal, reps))
                print_timing(f"{name} {mp} k={k}", ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=["photos", "photos-more", "palette-graphics"])
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--limit", type=int, default=0, help="first N images per set for the size tables (0 = all)")
    ap.add_argument("--jxl-limit", type=int, default=6, help="JPEG XL e9 on the first N maps per k (slow)")
    ap.add_argument("--timing-photos", type=int, default=3, help="photos per set for the speed table")
    ap.add_argument("--reps", type=int, default=7, help="interleaved decode repeats (encode: half)")
    ap.add_argument("--sizes-only", action="store_true")
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--per-image", action="store_true", help="speed: one row per palette graphic (coding, size/PNG, "
                    "decode and encode ratios, ms)")
    args = ap.parse_args(argv)
    if not HAVE_JXL:
        print("note: JPEG XL column empty (imagecodecs without JPEG XL)")
    if not args.timing_only:
        for name in args.sets:
            size_table(name, maps_of(name, args.k, args.limit), args.jxl_limit)
    if not args.sizes_only:
        timing(args.sets, args.k, args.timing_photos, args.reps, args.per_image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
