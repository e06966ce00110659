"""`gcp compress -o x.png` against pngquant: PNG-8 file size and PSNR at equal k.

Usage::

    python bench/bench_pngquant.py [FOLDER ...] [--k 16 64 256] [-j 2] [--limit N]

Default folders: the Kodak photos and photos-more of ../shared/corpus, each reported separately.
For every image and k:

* **ours**: ``pillow_gcp.convert.compress_image(im, format="PNG", k=k, strip=True)``, the code path of
  ``gcp compress IN -k K -o OUT.png --strip`` (K-means, no dithering, an optimized PNG-8); the .gcp of
  the same palette image is sized too.
* **pngquant**: ``pngquant --nofs --strip K`` (the system package; no dithering, its default speed 4,
  no quality limits), run as a subprocess on the same file.

PSNR is over R, G, B of all pixels (``pillow_gcp.metrics.psnr``, the same function for both). Reported
per set and k: median bits per pixel of each file, median per-image size ratio ours/pngquant, median PSNR
of each (``inf``: lossless), the median per-image PSNR difference (0 when both are lossless) and how many
results are lossless. Per-image rows go to ``bench/out/pngquant.csv``.
Sizes and PSNR do not depend on machine load, so ``-j 2`` is safe for them; no timings are reported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import glob
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from PIL import Image  # noqa: E402

from pillow_gcp import adapter, convert, metrics  # noqa: E402

CORPUS = os.path.join(HERE, "..", "..", "shared", "corpus")


def _diff(a: float, b: float) -> float:
    """PSNR difference; two lossless results (inf, inf) differ by 0."""
    return 0.0 if math.isinf(a) and math.isinf(b) else a - b


def _pngquant(path: str, k: int, tmp: str) -> bytes:
    out = os.path.join(tmp, f"pq-{k}.png")
    subprocess.run(["pngquant", "--nofs", "--strip", "--force", "--output", out, str(k), "--", path],
                   check=True, capture_output=True)
    with open(out, "rb") as f:
        return f.read()


def one(path: str, ks: list) -> list:
    """Rows (name, k, ours_png, gcp, pngquant bytes, ours PSNR, pngquant PSNR, pixels) of one image."""
    with Image.open(path) as im:
        im.load()
        px = adapter.pixels(im)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for k in ks:
                ours = convert.compress_image(im, format="PNG", k=k, strip=True)
                gcp = convert.compress_image(im, format="GCP", k=k, strip=True)
                pq = _pngquant(path, k, tmp)
                psnr = []
                for data in (ours.data, pq):
                    out = convert.open_bytes(data)
                    psnr.append(metrics.psnr(px, adapter.pixels(out)))
                rows.append((os.path.basename(path), k, len(ours.data), len(gcp.data), len(pq), psnr[0], psnr[1],
                             im.size[0] * im.size[1]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", default=[os.path.join(CORPUS, "photos"), os.path.join(CORPUS, "photos-more")])
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="at most N images per folder")
    ap.add_argument("--csv", default=os.path.join(HERE, "out", "pngquant.csv"))
    args = ap.parse_args(argv)
    if shutil.which("pngquant") is None:
        print("pngquant not found (apt install pngquant)", file=sys.stderr)
        return 1
    version = subprocess.run(["pngquant", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"pngquant {version}; ours: pillow_gcp K-means, k as given, no dithering; PSNR over R,G,B")
    all_rows = []
    for folder in args.folders:
        files = sorted(glob.glob(os.path.join(folder, "*.png")))
        if args.limit:
            files = files[: args.limit]
        if not files:
            print(f"{folder}: no PNG files", file=sys.stderr)
            continue
        if args.jobs > 1:
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(args.jobs, 2)) as ex:
                rows = [r for rs in ex.map(one, files, [args.k] * len(files)) for r in rs]
        else:
            rows = [r for f in files for r in one(f, args.k)]
        set_name = os.path.basename(os.path.normpath(folder))
        all_rows += [(set_name, *r) for r in rows]
        print(f"\n{set_name} ({len(files)} images), medians over images:")
        print("| k | ours PNG-8 bpp | pngquant bpp | size ours/pngquant | ours PSNR dB | pngquant PSNR dB "
              "| PSNR ours - pngquant | lossless ours / pngquant | .gcp bpp |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in args.k:
            rk = [r for r in rows if r[1] == k]
            med = lambda xs: statistics.median(xs)  # noqa: E731
            bpp = lambda i: med([8.0 * r[i] / r[7] for r in rk])  # noqa: E731
            print(f"| {k} | {bpp(2):.3f} | {bpp(4):.3f} | {med([r[2] / r[4] for r in rk]):.3f} "
                  f"| {med([r[5] for r in rk]):.2f} | {med([r[6] for r in rk]):.2f} "
                  f"| {med([_diff(r[5], r[6]) for r in rk]):+.2f} "
                  f"| {sum(math.isinf(r[5]) for r in rk)} / {sum(math.isinf(r[6]) for r in rk)} | {bpp(3):.3f} |")
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "image", "k", "ours_png_bytes", "gcp_bytes", "pngquant_bytes", "ours_psnr",
                    "pngquant_psnr", "pixels"])
        w.writerows(all_rows)
    print(f"\nper image: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
