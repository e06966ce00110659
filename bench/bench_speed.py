"""Decode and encode speed of .gcp against PNG at 0.4, 1 and 4 megapixels (issue 13, items 1 and 2).

For each photo (spread over the set) and each size, the photo is resized (LANCZOS; the 1 and 4 MP
versions get the sensor-like noise of ``bench/make_photos.py``, as a camera image has), quantized
once with ``pillow_gcp.quantize(k)``, and that one P image is saved as .gcp (default level) and as
PNG (Pillow's default, the anchor). Then ``Image.open(f).load()`` of each file from memory is timed,
interleaved: .gcp with the default thread cap, .gcp on one thread (``payload.ctx.set_threads(1)``)
and the PNG. Encoding: ``im.save(f, "GCP")`` (default level) of the P image against Pillow's PNG with
``optimize=True``. Times are wall-clock (the decoder may use a helper thread), min over the repeats;
on a shared machine run it when nothing else is busy (the minimum is robust to a little load).

    python bench/bench_speed.py                       # Kodak and photos-more, 4 photos each
    python bench/bench_speed.py --sets photos --photos 8 --reps 15
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pillow_gcp  # noqa: E402
from pillow_gcp.payload import ctx  # noqa: E402

CORPUS = os.path.join(HERE, os.pardir, os.pardir, "shared", "corpus")
SIZES = {"0.4MP": 0.4e6, "1MP": 1.0e6, "4MP": 4.0e6}


def photos(set_name: str, count: int) -> list:
    d = os.path.join(CORPUS, set_name)
    files = sorted(f for f in os.listdir(d) if f.lower().endswith((".png", ".tif", ".tiff", ".bmp")))
    if count >= len(files):
        return [os.path.join(d, f) for f in files]
    step = len(files) / count
    return [os.path.join(d, files[int(i * step)]) for i in range(count)]


def at_size(path: str, label: str) -> Image.Image:
    from make_photos import _rng, sensor_noise
    im = Image.open(path).convert("RGB")
    scale = (SIZES[label] / (im.width * im.height)) ** 0.5
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im = im.resize(size, Image.Resampling.LANCZOS)
    if label != "0.4MP":
        im = Image.fromarray(sensor_noise(np.asarray(im), _rng(os.path.basename(path), label), 0.6, 2.0))
    return im


def load_time(data: bytes) -> float:
    t = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
    return time.perf_counter() - t


def save_time(im: Image.Image, fmt: str, **kw) -> float:
    b = io.BytesIO()
    t = time.perf_counter()
    im.save(b, fmt, **kw)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["photos", "photos-more"])
    ap.add_argument("--photos", type=int, default=4, help="photos per set")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--k", nargs="+", type=int, default=[16, 64, 256])
    ap.add_argument("--reps", type=int, default=11)
    a = ap.parse_args()
    default_threads = ctx.threads()
    print(f"decode: Image.open + load from memory, wall-clock min of {a.reps} interleaved repeats; "
          f"thread cap {default_threads} (default) and 1")
    for set_name in a.sets:
        files = photos(set_name, a.photos)
        print(f"\n== {set_name}: {', '.join(os.path.basename(f) for f in files)} ==")
        print(f"{'size':<6} {'k':>4} | {'gcp/PNG':>8} {'max':>6} | {'1 thread':>8} {'max':>6} | "
              f"{'PNG ms':>7} {'gcp ms':>7} | {'size/PNG':>8} | {'enc/PNG-opt':>11} {'max':>6}")
        for label in a.sizes:
            ims = [at_size(f, label) for f in files]
            for k in a.k:
                r_def, r_one, t_png, t_gcp, sz, r_enc = [], [], [], [], [], []
                for im in ims:
                    q = pillow_gcp.quantize(im, k=k)
                    g, p = io.BytesIO(), io.BytesIO()
                    q.save(g, "GCP")
                    q.save(p, "PNG")
                    g, p = g.getvalue(), p.getvalue()
                    td, t1, tp = [], [], []
                    for _ in range(a.reps):
                        ctx.set_threads(None)
                        td.append(load_time(g))
                        ctx.set_threads(1)
                        t1.append(load_time(g))
                        tp.append(load_time(p))
                    ctx.set_threads(None)
                    ge = min(save_time(q, "GCP") for _ in range(max(3, a.reps // 3)))
                    pe = min(save_time(q, "PNG", optimize=True) for _ in range(max(3, a.reps // 3)))
                    r_enc.append(ge / pe)
                    r_def.append(min(td) / min(tp))
                    r_one.append(min(t1) / min(tp))
                    t_png.append(min(tp) * 1e3)
                    t_gcp.append(min(td) * 1e3)
                    sz.append(len(g) / len(p))
                med = statistics.median
                print(f"{label:<6} {k:>4} | {med(r_def):>8.2f} {max(r_def):>6.2f} | {med(r_one):>8.2f} "
                      f"{max(r_one):>6.2f} | {med(t_png):>7.2f} {med(t_gcp):>7.2f} | {med(sz):>8.3f} | "
                      f"{med(r_enc):>11.2f} {max(r_enc):>6.2f}", flush=True)
    print("\ntargets (issue 13): decode <= 2.0x PNG at 4 MP, <= 3.0x at 0.4 MP, no image over 4x; "
          "encode <= 1.0x PNG optimize=True")


if __name__ == "__main__":
    main()
