"""A real 24-megapixel photo at k=256: time and peak memory of ``quantize_array``.

Usage::

    python bench/bench_24mp.py [--name kodim05] [--k 256] [--repeat 3] [--no-liq]

The photo is made by ``bench/make_photos.py --big24 NAME`` (a Kodak photo upscaled to
6000 x 4000 with LANCZOS plus signal-dependent sensor noise; cached in /tmp/gcp-24mp).
Each timing runs in a FRESH process (so the memory high-water mark belongs to one call):
the child decodes the PNG to an (H, W, 3) array, records its resident set size (VmRSS),
runs ``pillow_gcp.quantizers.quantize_array(pixels, k)`` and reports the wall time and
the growth of the high-water mark (VmHWM) over the RSS with the image loaded.  The
process CPU time is reported too: the quantizer is single-threaded, so on an idle machine
wall time ~ CPU time, and CPU time is the steadier number when other jobs share the cores.
libimagequant (``quantize_pil_image``, dithering 0) is timed the same way for reference.
Targets (issue 14): <= 3 s and <= 600 MB over the loaded image on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from PIL import Image

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

which, path, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
im = Image.open(path).convert("RGB")
im.load()
if which == "ours":
    from pillow_gcp.quantizers import quantize_array
    px = np.asarray(im)
    del im
    rss0 = status("VmRSS")
    c0 = time.process_time()
    t0 = time.perf_counter()
    idx, pal = quantize_array(px, k)
    t = time.perf_counter() - t0
    c = time.process_time() - c0
    out = pal[idx]
else:
    import imagequant
    px = np.asarray(im)
    rss0 = status("VmRSS")
    c0 = time.process_time()
    t0 = time.perf_counter()
    q = imagequant.quantize_pil_image(im, dithering_level=0, max_colors=k)
    t = time.perf_counter() - t0
    c = time.process_time() - c0
    out = np.asarray(q.convert("RGB"))
hwm = status("VmHWM")
err = 0.0
for s in range(0, px.shape[0], 500):
    d = px[s:s + 500].astype(np.float64) - out[s:s + 500]
    err += float((d * d).sum())
mse = err / px.size
print(json.dumps({{"t": t, "cpu": c, "grow": hwm - rss0, "psnr": 10 * np.log10(255 ** 2 / mse), "rss0": rss0}}))
"""


def run(which, path, k):
    code = CHILD.format(root=os.path.dirname(HERE))
    r = subprocess.run([sys.executable, "-c", code, which, path, str(k)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="kodim05")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-liq", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    from make_photos import make_24mp

    path = make_24mp(a.name, "/tmp/gcp-24mp")
    names = ["ours"] + ([] if a.no_liq else ["liq"])
    res = {n: [] for n in names}
    for _ in range(a.repeat):
        for n in names:
            res[n].append(run(n, path, a.k))
    for n in names:
        t = statistics.median(r["t"] for r in res[n])
        c = statistics.median(r["cpu"] for r in res[n])
        g = max(r["grow"] for r in res[n]) / 2 ** 20
        print(f"{n:>5}: {os.path.basename(path)} 6000x4000 k={a.k}: median {t:.2f} s "
              f"(runs {', '.join('%.2f' % r['t'] for r in res[n])}; CPU time {c:.2f} s), peak RSS over the loaded image "
              f"{g:.0f} MiB, PSNR {res[n][0]['psnr']:.2f} dB")
    print("targets: ours <= 3 s, <= 600 MB")


if __name__ == "__main__":
    main()
