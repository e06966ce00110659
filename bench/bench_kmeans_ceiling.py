"""How much PSNR more search buys: the default K-means step vs much heavier settings.

Usage::

    python bench/bench_kmeans_ceiling.py [files...] [--k 16 256]

For each photo and k, the same weighted histogram is fitted by ``kmeans_palette`` with
the defaults and with settings that spend 10-100x the time (more k-means++ restarts,
30 swap rounds, Lloyd to a 1e-6 tolerance, 40 polish iterations on the true colours;
and the same without the grid reduction), and by 12 plain k-means++ + Lloyd runs on the
true colours (best kept).  PSNR is reported relative to libimagequant (dithering 0).
If the heavy settings gain only a few hundredths of a dB, the default sits close to
what local search on the K-means objective can reach for that photo - and since an
undithered palette image's MSE IS the K-means objective of its palette, the margin over
libimagequant cannot grow much beyond that by fitting alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pillow_gcp.quantizers import kmeans as K  # noqa: E402
from pillow_gcp.quantizers import histogram  # noqa: E402
from pillow_gcp.quantizers.nearest import nearest  # noqa: E402

import imagequant  # noqa: E402

DEFAULT = ["/work/shared/corpus/photos/kodim01.png", "/work/shared/corpus/photos/kodim23.png",
           "/work/shared/corpus/photos-more/sipi-4.2.03.png", "/work/shared/corpus/photos-more/sipi-4.1.05.png"]


def psnr_of(cols, cnt, P):
    _, d = nearest(cols, np.clip(np.rint(P), 0, 255).astype(np.uint8), return_dist=True)
    return 10 * np.log10(255 ** 2 / ((d.astype(np.float64) * cnt).sum() / cnt.sum() / 3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", default=DEFAULT)
    ap.add_argument("--k", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--no-nogrid", action="store_true", help="skip the slowest setting")
    a = ap.parse_args(argv)
    settings = [("default", {}),
                ("heavy", dict(n_init=10, swap_rounds=30, polish_iter=40, max_iter=300, tol=1e-6))]
    if not a.no_nogrid:
        settings.append(("heavy, no grid", dict(bits=(8,), n_init=6, swap_rounds=30, max_iter=300, tol=1e-7,
                                                polish_iter=0)))
    for f in a.files:
        im = Image.open(f).convert("RGB")
        cols, cnt = histogram.unique_keys(histogram.pack(np.asarray(im)))
        cols = histogram.unpack(cols, 3)
        X, w = cols.astype(np.float32), cnt.astype(np.float64)
        for k in a.k:
            q = imagequant.quantize_pil_image(im, dithering_level=0, max_colors=k)
            mse = np.mean((np.asarray(q.convert("RGB"), np.float64) - np.asarray(im, np.float64)) ** 2)
            liq = 10 * np.log10(255 ** 2 / mse)
            parts = []
            for name, kw in settings:
                t = time.process_time()
                P = K.kmeans_palette(cols, cnt, k, **kw)
                t = time.process_time() - t
                parts.append(f"{name} {psnr_of(cols, cnt, P) - liq:+.3f} dB ({t:.2f} s)")
            rng = np.random.default_rng(1)
            t = time.process_time()
            best = max(psnr_of(cols, cnt, K._lloyd(X, w, K._kmeanspp(X, w, k, rng), 0, 300, 1e-7)[0])
                       for _ in range(12))
            parts.append(f"12x k-means++ {best - liq:+.3f} dB ({time.process_time() - t:.1f} s)")
            print(f"{os.path.basename(f)} k={k} (vs libimagequant {liq:.2f} dB): " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
