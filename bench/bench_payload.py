"""Benchmark of the .gcp payload coding against PNG-8, GIF, WebP lossless, JPEG XL and a naive RLE.

Usage::

    python bench/bench_payload.py [folder] [--k 16 64 256] [--timing-photos 3] [--no-jxl]

For every RGB photo in ``folder`` (default /work/shared/corpus/photos) and
every k, libimagequant makes ONE palette image (``dithering_level=0``,
``max_colors=k``); that same index map is then stored as

* ours   : ``payload.encode(indices, palette_size)`` + 3 bytes per palette
           entry (the palette the container stores; container header not
           counted: a few dozen bytes),
* PNG-8  : Pillow ``save(buf, "PNG", optimize=True)`` of the P image,
* GIF    : Pillow ``save(buf, "GIF")`` of the P image,
* WebP   : lossless, quality=100, method=6, of the RGB conversion,
* JPEG XL: ``imagecodecs.jpegxl_encode(rgb, lossless=True, effort=9)`` (skipped
           with a note if unavailable or with ``--no-jxl``),
* student: headerless run-length, 4 bytes per run (raster-order runs).

It prints per k the median over the photos of the size ratio ours / X.

Timing ("4 MP"): the first ``--timing-photos`` photos resized to 2450x1630
with LANCZOS, then quantized as above; whole files through Pillow:
``Image.open(BytesIO(gcp)).load()`` vs the same for the PNG-8, and the
lossless ``save(buf, "GCP")`` of the P image vs Pillow's PNG ``optimize=True``
save, each the best of 5 (encode: 3) runs, interleaved in one process.
Printed: median over those photos of the time ratios (size/PNG there is the
whole .gcp file over the PNG-8 file).
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
from pillow_gcp import payload  # noqa: E402

try:
    import imagequant
except ImportError:  # pragma: no cover
    sys.exit("bench_payload needs imagequant (pip install imagequant)")

try:
    import imagecodecs
    HAVE_JXL = bool(getattr(imagecodecs, "JPEGXL", None) and imagecodecs.JPEGXL.available)
except ImportError:  # pragma: no cover
    imagecodecs = None
    HAVE_JXL = False


def quantize(rgb: Image.Image, k: int) -> Image.Image:
    return imagequant.quantize_pil_image(rgb, dithering_level=0, max_colors=k)


def palette_size(q: Image.Image, idx: np.ndarray) -> int:
    pal = q.getpalette() or []
    return max(int(idx.max()) + 1, min(256, len(pal) // 3)) if pal else int(idx.max()) + 1


def student_size(idx: np.ndarray) -> int:
    f = idx.ravel()
    return 4 * (1 + int(np.count_nonzero(f[1:] != f[:-1])))


def sizes_for(q: Image.Image, use_jxl: bool) -> dict:
    idx = np.asarray(q)
    k = palette_size(q, idx)
    out = {"ours": len(payload.encode(idx, k)) + 3 * k, "method": payload.encode(idx, k)[0]}
    b = io.BytesIO()
    q.save(b, "PNG", optimize=True)
    out["PNG-8"] = len(b.getvalue())
    b = io.BytesIO()
    q.save(b, "GIF")
    out["GIF"] = len(b.getvalue())
    rgb = q.convert("RGB")
    b = io.BytesIO()
    rgb.save(b, "WEBP", lossless=True, quality=100, method=6)
    out["WebP-LL"] = len(b.getvalue())
    if use_jxl:
        out["JXL-LL"] = len(imagecodecs.jpegxl_encode(np.asarray(rgb), lossless=True, effort=9))
    out["student"] = student_size(idx)
    return out


def best_of(fn, n):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def timing_for(q: Image.Image) -> dict:
    """Whole-file times through Pillow, as a user sees them: ``Image.open(...).load()`` of the
    .gcp against the PNG-8, and the lossless ``save(..., "GCP")`` of the same P image against
    ``save(..., "PNG", optimize=True)``."""
    idx = np.asarray(q)
    b = io.BytesIO()
    q.save(b, "PNG", optimize=True)
    png = b.getvalue()
    b = io.BytesIO()
    q.save(b, "GCP")
    gcp = b.getvalue()
    back = Image.open(io.BytesIO(gcp))
    assert np.array_equal(np.asarray(back), idx)
    method = gcp[gcp.index(b"DATA") + 4]  # the payload method byte (SPEC.md section 6)
    t_dec = t_png_dec = t_enc = t_png_enc = float("inf")
    for _ in range(5):  # interleaved so both see the same machine load
        t_dec = min(t_dec, best_of(lambda: Image.open(io.BytesIO(gcp)).load(), 1))
        t_png_dec = min(t_png_dec, best_of(lambda: Image.open(io.BytesIO(png)).load(), 1))
    for _ in range(3):
        t_enc = min(t_enc, best_of(lambda: q.save(io.BytesIO(), "GCP"), 1))
        t_png_enc = min(t_png_enc, best_of(lambda: q.save(io.BytesIO(), "PNG", optimize=True), 1))
    return {"dec": t_dec, "png_dec": t_png_dec, "enc": t_enc, "png_enc": t_png_enc,
            "size": len(gcp) / len(png), "method": method}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", default="/work/shared/corpus/photos")
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--timing-photos", type=int, default=3,
                    help="photos upscaled to ~4 MP for the time ratios (0 = skip timing)")
    ap.add_argument("--no-jxl", action="store_true", help="skip JPEG XL (slow at effort 9)")
    ap.add_argument("--skip-sizes", action="store_true", help="only the 4 MP timing part")
    args = ap.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.folder, "*.png")) +
                   glob.glob(os.path.join(args.folder, "*.bmp")))
    if not files:
        sys.exit(f"no .png/.bmp images in {args.folder}")
    use_jxl = HAVE_JXL and not args.no_jxl
    if not use_jxl:
        print("note: JPEG XL column skipped (" +
              ("--no-jxl" if args.no_jxl else "imagecodecs has no JPEG XL") + ")")
    rgbs = [Image.open(f).convert("RGB") for f in files]
    cols = ["PNG-8", "GIF", "WebP-LL"] + (["JXL-LL"] if use_jxl else []) + ["student"]
    print(f"{len(files)} images from {args.folder}; libimagequant dithering 0; "
          "ours = payload + 3*palette_size bytes")
    print("median size ratio ours / X, and median bits per pixel of ours and of X:")
    print(f"{'k':>4} " + " ".join(f"{c:>9}" for c in cols) + "   bpp ours  " +
          " ".join(f"{c:>8}" for c in cols) + "  methods")
    for k in ([] if args.skip_sizes else args.k):
        rows = [sizes_for(quantize(im, k), use_jxl) for im in rgbs]
        npix = [im.size[0] * im.size[1] for im in rgbs]
        ratio = {c: float(np.median([r["ours"] / r[c] for r in rows])) for c in cols}
        bpp = {c: float(np.median([8 * r[c] / p for r, p in zip(rows, npix)])) for c in cols + ["ours"]}
        methods = np.bincount([r["method"] for r in rows], minlength=5)
        print(f"{k:>4} " + " ".join(f"{ratio[c]:>8.3f}x" for c in cols) +
              f"   {bpp['ours']:>8.3f}  " + " ".join(f"{bpp[c]:>8.3f}" for c in cols) +
              "  " + ",".join(f"{m}:{c}" for m, c in enumerate(methods) if c))
    if args.timing_photos:
        print(f"\ntiming on {min(args.timing_photos, len(rgbs))} photo(s) resized to 2450x1630 "
              "(LANCZOS) then quantized; median over photos of best-of-N times")
        print(f"{'k':>4} {'size/PNG':>9} {'dec/PNG':>8} {'enc/PNG':>8}   "
              f"{'dec ms':>7} {'PNG dec':>8} {'enc ms':>7} {'PNG enc':>8}")
        big = [im.resize((2450, 1630), Image.LANCZOS) for im in rgbs[:args.timing_photos]]
        for k in args.k:
            ts = [timing_for(quantize(im, k)) for im in big]
            med = {key: float(np.median([t[key] for t in ts])) for key in ts[0]}
            dr = float(np.median([t["dec"] / t["png_dec"] for t in ts]))
            er = float(np.median([t["enc"] / t["png_enc"] for t in ts]))
            per = "  per photo dec/enc: " + " ".join(
                f"{t['dec'] / t['png_dec']:.2f}/{t['enc'] / t['png_enc']:.2f}({t['method']})" for t in ts)
            print(f"{k:>4} {med['size']:>8.3f}x {dr:>7.2f}x {er:>7.2f}x   "
                  f"{1e3 * med['dec']:>7.1f} {1e3 * med['png_dec']:>8.1f} "
                  f"{1e3 * med['enc']:>7.1f} {1e3 * med['png_enc']:>8.1f}" + per)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
