"""Dithered output: pillow_gcp (Pillow's C Floyd-Steinberg over our palette) vs libimagequant.

Usage::

    python bench/bench_dither.py [folder] [--k 16 256] [--picture docs/dither.png]

For every photo and k, in one process: ours ``quantize(im, k, dither=True)`` (K-means
palette fitted without dithering, then Pillow's Floyd-Steinberg remap) and libimagequant
``quantize_pil_image(im, dithering_level=1.0, max_colors=k)`` (its own palette and its
own error diffusion, which damps the error it spreads in flat areas and on edges).
Reported medians over the set:

* PSNR over R, G, B (pixel by pixel; dithering always lowers it),
* "blurred PSNR": PSNR after a Gaussian blur of radius 1.5 px of both images - a crude
  model of viewing at a distance, where dithering is meant to work (the eye averages
  the dots; banding and colour shifts remain visible),
* the same two numbers without dithering, for reference.

``--picture``: a side-by-side figure of crops (original | ours dithered | libimagequant
dithered, at k=16 and k=256, nearest-neighbour 3x enlarged) of a smooth region of
kodim23 and of kodim03, written as PNG.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pillow_gcp.quantizers import quantize  # noqa: E402

import imagequant  # noqa: E402  (bench extra)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def scores(im: Image.Image, q: Image.Image):
    q = q.convert("RGB")
    blur = ImageFilter.GaussianBlur(1.5)
    return (_psnr(np.asarray(im), np.asarray(q)),
            _psnr(np.asarray(im.filter(blur)), np.asarray(q.filter(blur))))


def run(files, ks):
    for k in ks:
        rows = []
        for f in files:
            im = Image.open(f).convert("RGB")
            r = {
                "ours FS": scores(im, quantize(im, k=k, dither=True)),
                "liq FS": scores(im, imagequant.quantize_pil_image(im, dithering_level=1.0, max_colors=k)),
                "ours none": scores(im, quantize(im, k=k)),
                "liq none": scores(im, imagequant.quantize_pil_image(im, dithering_level=0, max_colors=k)),
            }
            rows.append(r)
        print(f"k={k} ({len(files)} photos, medians): " + " | ".join(
            f"{n} {statistics.median(x[n][0] for x in rows):.2f} dB (blurred {statistics.median(x[n][1] for x in rows):.2f})"
            for n in rows[0]))
        d = [x["ours FS"][0] - x["liq FS"][0] for x in rows]
        db = [x["ours FS"][1] - x["liq FS"][1] for x in rows]
        print(f"k={k}: dithered ours - liq: PSNR {statistics.median(d):+.2f} dB, blurred {statistics.median(db):+.2f} dB; "
              f"ours better on {sum(v > 0 for v in db)}/{len(db)} photos (blurred)")


def picture(path: str, corpus: str):
    crops = [("kodim23.png", (430, 20, 590, 140)), ("kodim03.png", (20, 20, 180, 140))]
    scale = 3
    tiles = []
    for name, box in crops:
        im = Image.open(os.path.join(corpus, name)).convert("RGB")
        for k in (16, 256):
            row = [("original", im)]
            row.append((f"ours k={k} FS", quantize(im, k=k, dither=True).convert("RGB")))
            row.append((f"libimagequant k={k}", imagequant.quantize_pil_image(
                im, dithering_level=1.0, max_colors=k).convert("RGB")))
            tiles.append([(label, x.crop(box).resize(((box[2] - box[0]) * scale, (box[3] - box[1]) * scale),
                                                     Image.Resampling.NEAREST)) for label, x in row])
    tw, th = tiles[0][0][1].size
    pad, lab = 6, 16
    W = 3 * tw + 4 * pad
    H = len(tiles) * (th + lab + pad) + pad
    out = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(out)
    for r, row in enumerate(tiles):
        y = pad + r * (th + lab + pad)
        for c, (label, t) in enumerate(row):
            x = pad + c * (tw + pad)
            d.text((x, y), label, fill=(0, 0, 0))
            out.paste(t, (x, y + lab))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out.save(path, optimize=True)
    print(f"wrote {path} ({W}x{H})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", default="/work/shared/corpus/photos")
    ap.add_argument("--k", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--picture", default=None)
    a = ap.parse_args(argv)
    files = sorted(glob.glob(os.path.join(a.folder, "*.png")))
    run(files, a.k)
    if a.picture:
        picture(a.picture, "/work/shared/corpus/photos")


if __name__ == "__main__":
    main()
