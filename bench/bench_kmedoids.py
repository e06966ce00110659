"""K-medoids palette: pillow_gcp vs CLARA + FasterPAM (PyPI ``kmedoids``), side by side.

Usage::

    python bench/bench_kmedoids.py [folder] [--k 16] [--metric euclidean] [--seed 0]
                                   [--repeat 3] [--limit N] [--n-cpu 1] [--set NAME=VALUE ...]

``--set`` overrides a tuning constant of ``pillow_gcp.quantizers.kmedoids`` for the run (e.g.
``--set _MAX_CAND=512 --set _RESTARTS=6``, the setting before 30 Nov 21:36 UTC), to compare
settings on the same photos.

For every image of ``folder`` (default ``/work/shared/corpus/photos``), in one process:

* **ours**: histogram of unique colours, as ``quantize`` makes it (one uint32 key per pixel,
  ``pillow_gcp.quantizers.histogram.unique_keys``: a sort and run boundaries; timed on its own
  and included in our time) + ``kmedoids_palette(colors, counts, k)``.  (Before 21:30 UTC on
  30 Nov the bench used ``np.unique(..., return_counts=True)`` here: 1-13 ms more per photo.)
* **anchor, CLARA + FasterPAM**: 5 random samples of 4000 pixels (without replacement);
  for each, the 4000 x 4000 float32 dissimilarity matrix of the chosen metric and
  ``kmedoids.fasterpam(diss, k, random_state=seed + s, n_cpu=N)`` (package defaults
  otherwise: ``init="random"``, ``max_iter=100``); each sample's medoids are scored by the
  mean distance of ALL pixels to their nearest medoid and the best of 5 is kept
  (Kaufman & Rousseeuw's CLARA, as in Schubert & Rousseeuw 2021).  ``--n-cpu`` defaults
  to 1: on this 2-core machine the threaded FasterPAM (package default ``-1``) was slower
  in both wall and CPU time, so 1 is the stronger (faster) anchor.

Reported per image: unique colours, mean distance of all pixels to their nearest palette
colour (the chosen metric, on RGB 0..255) for both, loss ratio ours / anchor, times (the
minimum over ``--repeat`` runs of each whole call) and time ratio ours / anchor, plus the
ratio of process CPU times (all threads; steadier than wall time on a shared machine, and
it charges any worker threads); then the medians.  Every palette colour of both
is checked to occur in the image.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pillow_gcp.quantizers.histogram import pack, unique_keys, unpack  # noqa: E402
from pillow_gcp.quantizers.kmedoids import kmedoids_palette  # noqa: E402
from pillow_gcp.quantizers.nearest import matmul_small  # noqa: E402

import kmedoids  # noqa: E402  (bench extra)

CHUNK = 1 << 16


def pairwise(A, B, metric):
    """(a, C) x (b, C) -> (a, b) float32 distances (per-channel accumulation)."""
    A = A.astype(np.float32)
    B = B.astype(np.float32)
    D = None
    for c in range(A.shape[1]):
        d = np.subtract.outer(A[:, c], B[:, c])
        if metric == "euclidean":
            d *= d
        else:
            np.abs(d, out=d)
        if D is None:
            D = d
        elif metric == "chebyshev":
            np.maximum(D, d, out=D)
        else:
            D += d
    return np.sqrt(D, out=D) if metric == "euclidean" else D


def mean_nearest(px, pal, metric, weights=None):
    """Mean (weighted) distance from every row of ``px`` to its nearest row of ``pal``.

    Euclidean uses the ``|x|^2 - 2 x.p + |p|^2`` product form (one small matrix product
    per chunk, exact in float32 for 8-bit values); the others accumulate per channel.
    """
    pal32 = pal.astype(np.float32)
    pn = np.einsum("ij,ij->i", pal32, pal32)
    tot = 0.0
    for s in range(0, len(px), CHUNK):
        x = px[s:s + CHUNK].astype(np.float32)
        if metric == "euclidean":
            # small BLAS tiles: no BLAS worker threads, as in the package itself
            d2 = (matmul_small(x, (-2.0 * pal32).T) + pn).min(1) + np.einsum("ij,ij->i", x, x)
            d = np.sqrt(np.maximum(d2, 0)).astype(np.float64)
        else:
            d = pairwise(x, pal32, metric).min(1).astype(np.float64)
        tot += d.sum() if weights is None else d @ weights[s:s + CHUNK]
    return tot / (len(px) if weights is None else weights.sum())


def histogram(px):
    """Unique colours (U, 3) uint8 and counts (U,) int64 of (N, 3) uint8 pixels, the way the
    quantizer front door computes them (packed uint32 keys, sort + run boundaries)."""
    keys, cnt = unique_keys(pack(px))
    return unpack(keys, 3), cnt


def clara_fasterpam(px, k, metric, seed, samples=5, size=4000, n_cpu=1):
    """CLARA with FasterPAM: best of ``samples`` by the mean distance over all pixels."""
    rng = np.random.default_rng(seed)
    best = None
    for s in range(samples):
        idx = rng.choice(len(px), size=min(size, len(px)), replace=False)
        samp = px[idx]
        diss = pairwise(samp, samp, metric)
        res = kmedoids.fasterpam(diss, k, random_state=seed + s, n_cpu=n_cpu)
        med = samp[np.asarray(res.medoids)]
        loss = mean_nearest(px, med, metric)
        if best is None or loss < best[0]:
            best = (loss, med)
    return best[1]


def ours(px, k, metric, seed):
    t0 = time.perf_counter()
    cols, cnt = histogram(px)
    t1 = time.perf_counter()
    pal = kmedoids_palette(cols, cnt, k, metric=metric, seed=seed)
    return pal, cols, cnt, t1 - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="/work/shared/corpus/photos")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--metric", default="euclidean", choices=["euclidean", "manhattan", "chebyshev"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per method (min is kept)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--n-cpu", type=int, default=1,
                    help="threads of kmedoids.fasterpam (-1: package default)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override an integer tuning constant of pillow_gcp.quantizers.kmedoids "
                         "(e.g. _MAX_CAND=512)")
    a = ap.parse_args(argv)
    import importlib

    kmed_mod = importlib.import_module("pillow_gcp.quantizers.kmedoids")
    for item in a.set:
        name, _, value = item.partition("=")
        if not name.startswith("_") or not isinstance(getattr(kmed_mod, name, None), int):
            ap.error(f"--set {item}: not an integer constant of pillow_gcp.quantizers.kmedoids")
        setattr(kmed_mod, name, int(value))
        print(f"set {name} = {int(value)}")
    files = sorted(f for ext in ("png", "bmp", "jpg", "ppm", "tif")
                   for f in glob.glob(os.path.join(a.folder, "*." + ext)))
    if a.limit:
        files = files[: a.limit]
    if not files:
        ap.error(f"no images in {a.folder}")
    print(f"k={a.k} metric={a.metric} seed={a.seed} repeat={a.repeat} n_cpu={a.n_cpu}  "
          f"(loss = mean {a.metric} "
          f"distance of all pixels to the nearest palette colour, RGB 0..255)")
    hdr = (f"{'image':<16}{'U':>7} {'ours':>8} {'CLARA':>8} {'loss r':>7} "
           f"{'ours ms':>8} {'(hist)':>7} {'CLARA ms':>9} {'time r':>7} {'cpu r':>7}")
    print(hdr)
    rows = []
    for f in files:
        px = np.ascontiguousarray(np.asarray(Image.open(f).convert("RGB")).reshape(-1, 3))
        t_ours, t_hist, t_anchor, c_ours, c_anchor = [], [], [], [], []
        for _ in range(max(1, a.repeat)):
            t, c = time.perf_counter(), time.process_time()
            pal, cols, cnt, th = ours(px, a.k, a.metric, a.seed)
            t_ours.append(time.perf_counter() - t)
            c_ours.append(time.process_time() - c)
            t_hist.append(th)
            t, c = time.perf_counter(), time.process_time()
            med = clara_fasterpam(px, a.k, a.metric, a.seed, n_cpu=a.n_cpu)
            t_anchor.append(time.perf_counter() - t)
            c_anchor.append(time.process_time() - c)
        # every palette colour must occur in the image
        present = set(map(tuple, cols.tolist()))
        assert all(tuple(c) in present for c in pal.tolist()), f"{f}: palette colour not in image"
        assert all(tuple(c) in present for c in med.tolist()), f"{f}: CLARA medoid not in image"
        assert len(set(map(tuple, pal.tolist()))) == len(pal)
        lo = mean_nearest(cols, pal, a.metric, cnt.astype(np.float64))
        la = mean_nearest(px, med, a.metric)
        to, ta = min(t_ours), min(t_anchor)
        co, ca = min(c_ours), min(c_anchor)
        rows.append((lo / la, to / ta, lo, la, to, ta, co / ca))
        print(f"{os.path.basename(f):<16}{len(cols):>7} {lo:>8.3f} {la:>8.3f} {lo / la:>7.4f} "
              f"{1000 * to:>8.1f} {1000 * min(t_hist):>7.1f} {1000 * ta:>9.1f} {to / ta:>7.4f} "
              f"{co / ca:>7.4f}", flush=True)
    r = np.array(rows)
    med = np.median(r, axis=0)
    print(f"{'median':<16}{'':>7} {med[2]:>8.3f} {med[3]:>8.3f} {med[0]:>7.4f} "
          f"{1000 * med[4]:>8.1f} {'':>7} {1000 * med[5]:>9.1f} {med[1]:>7.4f} {med[6]:>7.4f}")
    print(f"loss ratio: median {med[0]:.4f}, max {r[:, 0].max():.4f}, images with ratio <= 1: "
          f"{int((r[:, 0] <= 1).sum())}/{len(r)};  "
          f"time ratio: median {med[1]:.4f}, max {r[:, 1].max():.4f};  "
          f"CPU-time ratio: median {med[6]:.4f}, max {r[:, 6].max():.4f}")


if __name__ == "__main__":
    main()
