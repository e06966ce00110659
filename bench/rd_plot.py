"""Rate-distortion of .gcp against palette PNG, GIF and WebP-lossless.

For every photo of the corpus and every palette size k, each codec quantizes
the image to k colours and encodes it; we record bits per pixel (file size x 8
/ pixels), PSNR (dB, R, G, B; ``pillow_gcp.metrics.psnr``) and mean OKLab deltaE
x100 of the decoded image against the original, and the wall time of
quantization + encoding, all in this one process so that the codecs are
measured side by side.

Codecs (no dithering anywhere):

* ``gcp-kmeans``    -- ``pillow_gcp.quantize(algo="kmeans", seed=0)`` + ``.gcp``
* ``gcp-kmedoids``  -- ``pillow_gcp.quantize(algo="kmedoids", seed=0)`` + ``.gcp``
* ``liq-png8``      -- ``imagequant.quantize_pil_image(dithering_level=0, max_colors=k)``
  + PNG-8 (Pillow, ``optimize=True``)
* ``mediancut-png8``-- ``Image.quantize(k, MEDIANCUT, dither=NONE)`` + PNG-8 (``optimize=True``)
* ``liq-gif``       -- the libimagequant map as GIF (Pillow)
* ``liq-webpll``    -- the libimagequant map as lossless WebP (Pillow/libwebp,
  ``method=4, quality=75`` = cwebp -lossless defaults)

Writes ``<out>/rd.csv`` (one row per image x codec x k), ``<out>/rd_mean.csv``
(mean bpp / PSNR / deltaE / seconds per codec x k over the images) and
``<out>/rd.png`` (mean bpp vs mean PSNR, one curve per codec, points at each
k).  ``--docs`` also copies the plot to ``docs/rd.png``.

Usage::

    python bench/rd_plot.py                 # all 24 Kodak photos, k = 2..256
    python bench/rd_plot.py --limit 4 -j 2  # 4 photos, 2 processes
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import glob
import io
import os
import shutil
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import pillow_gcp  # noqa: E402
from pillow_gcp.metrics import mean_delta_e, psnr  # noqa: E402

DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "corpus", "photos")
KS = (2, 4, 8, 16, 32, 64, 128, 256)
CODECS = ("gcp-kmeans", "gcp-kmedoids", "liq-png8", "mediancut-png8", "liq-gif", "liq-webpll")
STYLE = {
    "gcp-kmeans": dict(color="tab:red", marker="o", label=".gcp K-means"),
    "gcp-kmedoids": dict(color="tab:purple", marker="s", label=".gcp K-medoids"),
    "liq-png8": dict(color="tab:blue", marker="^", label="libimagequant + PNG-8"),
    "mediancut-png8": dict(color="tab:green", marker="v", label="Pillow median cut + PNG-8"),
    "liq-gif": dict(color="tab:orange", marker="D", label="libimagequant + GIF"),
    "liq-webpll": dict(color="tab:gray", marker="x", label="libimagequant + WebP lossless"),
}


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    """Decode to RGB (or RGBA if any pixel is not opaque: the measures then composite)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    rgba = im.convert("RGBA")
    if rgba.getextrema()[3][0] == 255:
        return rgba.convert("RGB")
    return rgba


def encode_all(im: Image.Image, k: int, codecs) -> dict[str, tuple[bytes, float]]:
    """{codec: (encoded bytes, seconds for quantize + encode)} for one image and k."""
    import imagequant

    out: dict[str, tuple[bytes, float]] = {}
    for algo in ("kmeans", "kmedoids"):
        name = f"gcp-{algo}"
        if name in codecs:
            t = time.perf_counter()
            p = pillow_gcp.quantize(im, k=k, algo=algo, seed=0)
            out[name] = (_save(p, "GCP"), time.perf_counter() - t)
    t = time.perf_counter()
    liq = imagequant.quantize_pil_image(im, dithering_level=0, max_colors=k)
    t_liq = time.perf_counter() - t
    for name, fmt, kw in (
        ("liq-png8", "PNG", dict(optimize=True)),
        ("liq-gif", "GIF", {}),
        ("liq-webpll", "WEBP", dict(lossless=True, method=4, quality=75)),
    ):
        if name in codecs:
            t = time.perf_counter()
            out[name] = (_save(liq, fmt, **kw), t_liq + time.perf_counter() - t)
    if "mediancut-png8" in codecs:
        t = time.perf_counter()
        mc = im.quantize(k, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out["mediancut-png8"] = (_save(mc, "PNG", optimize=True), time.perf_counter() - t)
    return out


def bench_image(path: str, ks, codecs) -> list[dict]:
    """All rows for one image."""
    im = Image.open(path).convert("RGB")
    n = im.size[0] * im.size[1]
    rows = []
    for k in ks:
        for codec, (data, secs) in encode_all(im, k, codecs).items():
            dec = _decode(data)
            colours = len(dec.getcolors(1 << 24) or [])
            rows.append(
                dict(
                    image=os.path.basename(path), codec=codec, k=k, colors=colours, bytes=len(data),
                    bpp=8.0 * len(data) / n, psnr=psnr(im, dec), delta_e=mean_delta_e(im, dec), seconds=secs,
                )
            )
    return rows


def mean_rows(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["codec"], r["k"])].append(r)
    out = []
    for (codec, k), rs in sorted(groups.items(), key=lambda kv: (CODECS.index(kv[0][0]), kv[0][1])):
        out.append(
            dict(
                codec=codec, k=k, images=len(rs),
                bpp=float(np.mean([r["bpp"] for r in rs])),
                psnr=float(np.mean([r["psnr"] for r in rs])),
                delta_e=float(np.mean([r["delta_e"] for r in rs])),
                seconds=float(np.mean([r["seconds"] for r in rs])),
            )
        )
    return out


def plot(means: list[dict], path: str, n_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    by_codec: dict[str, list[dict]] = defaultdict(list)
    for r in means:
        by_codec[r["codec"]].append(r)
    for codec in CODECS:
        rs = sorted(by_codec.get(codec, []), key=lambda r: r["k"])
        if not rs:
            continue
        st = STYLE[codec]
        ax.plot([r["bpp"] for r in rs], [r["psnr"] for r in rs], marker=st["marker"], color=st["color"],
                label=st["label"], linewidth=1.5, markersize=5)
        if codec == "gcp-kmeans":
            for r in rs:
                ax.annotate(f"k={r['k']}", (r["bpp"], r["psnr"]), textcoords="offset points", xytext=(-6, 5),
                            ha="right", fontsize=8, color=st["color"])
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("bits per pixel (log scale)")
    ax.set_ylabel("PSNR (dB, R,G,B)")
    ax.set_title(f"Rate-distortion, mean over {n_images} Kodak photo(s); palette k = 2..256, no dithering")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="folder of PNG photos (default: shared Kodak set)")
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N images (default all)")
    ap.add_argument("-k", dest="ks", type=int, nargs="+", default=list(KS), help="palette sizes (default 2 4 ... 256)")
    ap.add_argument("--codecs", nargs="+", choices=CODECS, default=list(CODECS), help="codecs to run (default all)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="processes, one image each (default 1; timings are "
                                                               "only comparable between codecs, not across -j)")
    ap.add_argument("-o", "--out", default=os.path.join(HERE, "out"), help="output folder (default bench/out)")
    ap.add_argument("--docs", action="store_true", help="also copy the plot to docs/rd.png")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from <out>/rd.csv")
    args = ap.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    rows: list[dict] = []
    t0 = time.perf_counter()
    if args.replot:
        with open(os.path.join(args.out, "rd.csv"), newline="") as f:
            for r in csv.DictReader(f):
                rows.append({**r, "k": int(r["k"]), **{c: float(r[c]) for c in ("bpp", "psnr", "delta_e", "seconds")}})
        paths = sorted({r["image"] for r in rows})
    else:
        paths = sorted(glob.glob(os.path.join(args.corpus, "*.png")))[: args.limit]
        if not paths:
            ap.error(f"no PNG files in {args.corpus}")
    if args.replot:
        pass
    elif args.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as ex:
            futs = [ex.submit(bench_image, p, args.ks, args.codecs) for p in paths]
            for p, f in zip(paths, futs):
                rows += f.result()
                print(f"{os.path.basename(p)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    else:
        for p in paths:
            rows += bench_image(p, args.ks, args.codecs)
            print(f"{os.path.basename(p)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    means = mean_rows(rows)
    write_csv(os.path.join(args.out, "rd.csv"), rows)
    write_csv(os.path.join(args.out, "rd_mean.csv"), means)
    png = os.path.join(args.out, "rd.png")
    plot(means, png, len(paths))
    print(f"{'codec':<16}{'k':>5}{'bpp':>9}{'PSNR':>8}{'dE':>7}{'sec':>8}")
    for r in means:
        print(f"{r['codec']:<16}{r['k']:>5}{r['bpp']:>9.3f}{r['psnr']:>8.2f}{r['delta_e']:>7.2f}{r['seconds']:>8.3f}")
    print(f"wrote {png}, rd.csv, rd_mean.csv in {args.out}", file=sys.stderr)
    if args.docs:
        os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
        shutil.copyfile(png, os.path.join(ROOT, "docs", "rd.png"))
        print("copied to docs/rd.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
