"""K-means of an earlier git revision against the working tree, side by side in one process.

Usage::

    python bench/bench_vs_revision.py REV [folder ...] [--k 16 64 256] [--repeat 2]

``REV`` (a commit, tag or branch of this repository) is extracted with ``git archive`` into a
temporary directory and imported as a package of another name, so both versions and
libimagequant run interleaved in this one process on the same images.  For every image and k:
PSNR of both, the CPU time of the whole ``quantize(im, k=k)`` call (best of ``--repeat``), the
time ratios now / REV and each / libimagequant, and whether the palettes are identical; then
medians.  This is how a speed-up is shown to leave every palette as it was (or, when it does
not, by how much PSNR moved, per photo).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import pillow_gcp.quantizers as NEW  # noqa: E402

try:
    import imagequant
except ImportError:  # pragma: no cover
    imagequant = None


def load_revision(rev: str, tmp: str):
    """The ``pillow_gcp.quantizers`` package of ``rev``, imported as ``pillow_gcp_rev``."""
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "pillow_gcp"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
    os.rename(os.path.join(tmp, "pillow_gcp"), os.path.join(tmp, "pillow_gcp_rev"))
    sys.path.insert(0, tmp)
    return importlib.import_module("pillow_gcp_rev.quantizers")


def psnr(ref: np.ndarray, q: Image.Image) -> float:
    out = np.asarray(q.convert("RGB"), np.float64)
    mse = np.mean((out - ref) ** 2)
    return 99.0 if mse == 0 else float(min(99.0, 10 * np.log10(255.0 ** 2 / mse)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev")
    ap.add_argument("folders", nargs="*", default=["/work/shared/corpus/photos-more"])
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    files = []
    for d in args.folders:
        files += sorted(glob.glob(os.path.join(d, "*.png"))) if os.path.isdir(d) else [d]
    tmp = tempfile.mkdtemp(prefix="gcp-rev-")
    try:
        OLD = load_revision(args.rev, tmp)
        fns = {"rev": lambda im, k: OLD.quantize(im, k=k), "now": lambda im, k: NEW.quantize(im, k=k)}
        if imagequant is not None:
            fns["liq"] = lambda im, k: imagequant.quantize_pil_image(im, dithering_level=0, max_colors=k)
        print(f"{len(files)} images; {args.rev} vs working tree; CPU ms best of {args.repeat}")
        for k in args.k:
            rows = []
            for f in files:
                im = Image.open(f).convert("RGB")
                im.load()
                ref = np.asarray(im, np.float64)
                t = {n: float("inf") for n in fns}
                out = {}
                for _ in range(args.repeat):
                    for n, fn in fns.items():
                        c = time.process_time()
                        out[n] = fn(im, k)
                        t[n] = min(t[n], time.process_time() - c)
                p = {n: psnr(ref, o) for n, o in out.items()}
                same = out["rev"].getpalette() == out["now"].getpalette() and \
                    np.array_equal(np.asarray(out["rev"]), np.asarray(out["now"]))
                r = {"p": p, "t": t, "same": same}
                rows.append(r)
                line = (f"k={k:<3} {os.path.basename(f):<22} PSNR rev {p['rev']:.3f} now {p['now']:.3f} "
                        f"({p['now'] - p['rev']:+.3f}) | ms rev {t['rev'] * 1e3:6.1f} now {t['now'] * 1e3:6.1f} "
                        f"now/rev {t['now'] / t['rev']:.3f}")
                if "liq" in t:
                    line += f" | rev/liq {t['rev'] / t['liq']:.2f} now/liq {t['now'] / t['liq']:.2f}"
                print(line + (" same" if same else " DIFFERENT"), flush=True)
            med = statistics.median
            line = (f"k={k}: median PSNR now - rev {med(r['p']['now'] - r['p']['rev'] for r in rows):+.4f} dB "
                    f"(min {min(r['p']['now'] - r['p']['rev'] for r in rows):+.3f}); CPU now/rev "
                    f"{med(r['t']['now'] / r['t']['rev'] for r in rows):.3f}")
            if "liq" in fns:
                line += (f"; vs libimagequant: PSNR rev {med(r['p']['rev'] - r['p']['liq'] for r in rows):+.3f} "
                         f"now {med(r['p']['now'] - r['p']['liq'] for r in rows):+.3f} dB, CPU rev "
                         f"{med(r['t']['rev'] / r['t']['liq'] for r in rows):.2f}x now "
                         f"{med(r['t']['now'] / r['t']['liq'] for r in rows):.2f}x")
            print(line + f"; identical {sum(r['same'] for r in rows)}/{len(rows)}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
