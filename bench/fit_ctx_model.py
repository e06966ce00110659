"""Refit ``payload.estimate``'s CTX decode-time model (run it after any change to the CTX decoder).

For the 40 palette graphics (``../shared/corpus/palette-graphics``, their own indices) and the 14 photos
of ``photos-more`` quantized to k = 4, 8, 16, 64 and 256, the map is written as a whole .gcp file in CTX
(LEFT and the flags as the default policy picks them: ``payload.uses_left``) and as PNG-8, and
``Image.open(...).load()`` of each is timed (process CPU time, min of ``--reps``, default 11, interleaved). The log of
the ratio CTX / PNG-8 is fitted by least squares, separately for k <= ``payload.LOW_K`` and, above it,
with and without LEFT, on ``[1, ln N, ln(B/N + 1e-4), ln k]`` with ``B`` the model's predicted LZMA2 bytes
(``payload.estimate(...)["bytes"]``). It prints the constants (to put in ``payload._CTX_LOWK`` /
``_CTX_LEFT`` / ``_CTX_UP``, with c0 raised by the cap's margin) and, for the model now in ``payload``, how
many maps the 4.0x cap lets through and the largest true ratio among them. (Upscaled images, whose rows
repeat, are outside the model's reach: the policy's trial sends them to LZMA2; ``bench/bench_upscaled.py``.)

``--lowk`` fits ``payload._CTX_LOWK_BIG`` instead, the k <= ``LOW_K`` model that holds up to 4 MP: maps at
k = 2, 4, 6, 8 of Kodak and photos-more at their own size, k = 4, 8 of the even-numbered Kodak photos
upscaled x2 BICUBIC and of photos-more x4 BICUBIC, of every third Kodak photo at 1 MP and every fourth at
4 MP (``bench_speed.at_size``: LANCZOS and sensor noise) and the graphics with k <= 8 (234 maps), on
``[1, ln(1 + 1e5/N), ln(B/N + 1e-4), ln k, dup, ln N]`` (``dup`` = ``estimate(...)["dup"]``).

``--check-lowk`` validates the policy at k <= ``LOW_K`` on 138 maps that neither fit used (odd-numbered Kodak
photos x2 BICUBIC; x2 NEAREST, x2.5 BILINEAR, x3 LANCZOS, x3 BICUBIC, x1.5 BICUBIC upscales of Kodak photos;
photos-more x2 BOX, x3 BILINEAR and at 4 MP with sensor noise; k = 2..8): per map the coding ``choose``
picks, the decode of that file and, when CTX, of the CTX file against PNG-8's (process CPU time, min of
``--reps``, interleaved), and the coding and size the small-map model ``_CTX_LOWK`` alone would give; then
the largest decode ratio among the maps sent to CTX and the size cost on the maps whose coding changed.

``--bigk`` fits ``payload._CTX_BIG``, the k > ``LOW_K`` model that holds up to 4 MP (``_CTX_LEFT`` /
``_CTX_UP`` are fits of maps up to 0.26 MP): the graphics with k > 8, Kodak and photos-more at their own
size at k = 16, 64, 256, the odd-numbered Kodak photos x2 BICUBIC and photos-more x4 BICUBIC at k = 16, 32,
64, 128, 256, every fourth Kodak photo x2.5 BILINEAR at k = 16, 64 and every third at 4 MP
(``bench_speed.at_size``) at k = 16, 64, 256 (318 maps), on ``[1, ln(1 + 1e5/N), ln(B/N + 1e-4), ln k, dup,
ln N, LEFT]`` (LEFT = ``payload.uses_left``). It prints how many maps over the cap the small-map models let
through and which the combined model holds back at margins 1.3, 1.4 (in payload) and 1.45x.

    python bench/fit_ctx_model.py [--reps N] [--lowk | --check-lowk | --bigk]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_payload as B  # noqa: E402
from pillow_gcp import format as F  # noqa: E402
from pillow_gcp import payload as P  # noqa: E402


def gcp_file(idx: np.ndarray, pal: np.ndarray, body: bytes) -> bytes:
    h, w = idx.shape
    return b"".join([F.MAGIC, F._chunk(b"HEAD", F._HEAD.pack(F.VERSION, pal.shape[1], len(pal), w, h)),
                     F._chunk(b"PLTE", pal.tobytes()), F._chunk(b"DATA", body), F._chunk(b"DONE", b"")])


def maps():
    for f in B.files_of(os.path.join(B.CORPUS, "palette-graphics")):
        idx, pal = B.exact_indexed(Image.open(f))
        yield os.path.basename(f), idx, pal
    for f in B.files_of(os.path.join(B.CORPUS, "photos-more")):
        rgb = Image.open(f).convert("RGB")
        for k in (4, 8, 16, 64, 256):
            idx, pal = B.quantized(rgb, k)
            yield f"{os.path.basename(f)}@{k}", idx, pal


def lowk_maps():
    """The maps of ``--lowk`` (see the module docstring)."""
    from bench_speed import at_size
    for f in B.files_of(os.path.join(B.CORPUS, "palette-graphics")):
        got = B.exact_indexed(Image.open(f))
        if got is not None and len(got[1]) <= P.LOW_K:
            yield os.path.basename(f), got[0], got[1]
    kodak = B.files_of(os.path.join(B.CORPUS, "photos"))
    more = B.files_of(os.path.join(B.CORPUS, "photos-more"))
    jobs = [(f, 1, (2, 4, 6, 8)) for f in kodak + more]
    jobs += [(f, 2, (4, 8)) for f in kodak[::2]] + [(f, 4, (4, 8)) for f in more]
    jobs += [(f, "1MP", (4, 8)) for f in kodak[::3]] + [(f, "4MP", (4, 8)) for f in kodak[::4]]
    for f, size, ks in jobs:
        rgb = Image.open(f).convert("RGB")
        if isinstance(size, str):
            rgb = at_size(f, size)
        elif size != 1:
            rgb = rgb.resize((rgb.width * size, rgb.height * size), Image.BICUBIC)
        for k in ks:
            idx, pal = B.quantized(rgb, k)
            yield f"{os.path.basename(f)} {size}@{k}", idx, pal


def bigk_maps():
    """The maps of ``--bigk`` (see the module docstring)."""
    from bench_speed import at_size
    for f in B.files_of(os.path.join(B.CORPUS, "palette-graphics")):
        got = B.exact_indexed(Image.open(f))
        if got is not None and len(got[1]) > P.LOW_K:
            yield os.path.basename(f), got[0], got[1]
    kodak = B.files_of(os.path.join(B.CORPUS, "photos"))
    more = B.files_of(os.path.join(B.CORPUS, "photos-more"))
    ks = (16, 32, 64, 128, 256)
    jobs = [(f, 1, None, (16, 64, 256)) for f in kodak + more]
    jobs += [(f, 2, Image.BICUBIC, ks) for f in kodak[1::2]] + [(f, 4, Image.BICUBIC, ks) for f in more]
    jobs += [(f, 2.5, Image.BILINEAR, (16, 64)) for f in kodak[::4]] + [(f, "4MP", None, (16, 64, 256)) for f in kodak[::3]]
    for f, size, resample, ks in jobs:
        rgb = Image.open(f).convert("RGB")
        if isinstance(size, str):
            rgb = at_size(f, size)
        elif size != 1:
            rgb = rgb.resize((int(rgb.width * size), int(rgb.height * size)), resample)
        for k in ks:
            idx, pal = B.quantized(rgb, k)
            yield f"{os.path.basename(f)} {size}@{k}", idx, pal


def bigk_features(n, k, b, dup, left) -> np.ndarray:
    """The columns of the ``_CTX_BIG`` model (arrays of N, k, B, dup and LEFT (0/1) in, (m, 7) out)."""
    return np.c_[lowk_features(n, k, b, dup), left]


def check_maps():
    """The held-out maps of ``--check-lowk`` (see the module docstring)."""
    from bench_speed import at_size
    kodak = B.files_of(os.path.join(B.CORPUS, "photos"))
    more = B.files_of(os.path.join(B.CORPUS, "photos-more"))
    jobs = [(f, 2, Image.BICUBIC, (4, 8)) for f in kodak[1::2]]
    jobs += [(f, 2, Image.NEAREST, (4, 8)) for f in kodak[::3]] + [(f, 2.5, Image.BILINEAR, (4, 8)) for f in kodak[::4]]
    jobs += [(f, 3, Image.LANCZOS, (2, 4, 8)) for f in kodak[::6]] + [(f, 3, Image.BICUBIC, (4, 6)) for f in kodak[::7]]
    jobs += [(f, 1.5, Image.BICUBIC, (2, 4, 6, 8)) for f in kodak[::5]]
    jobs += [(f, 2, Image.BOX, (2, 4, 8)) for f in more[::2]] + [(f, 3, Image.BILINEAR, (3, 4, 5)) for f in more[::3]]
    jobs += [(f, "4MP", None, (4, 8)) for f in more[::3]]
    for f, size, resample, ks in jobs:
        rgb = Image.open(f).convert("RGB")
        if isinstance(size, str):
            rgb = at_size(f, size)
        else:
            rgb = rgb.resize((int(rgb.width * size), int(rgb.height * size)), resample)
        for k in ks:
            idx, pal = B.quantized(rgb, k)
            yield f"{os.path.basename(f)} {size}{'' if resample is None else f' r{int(resample)}'}@{k}", idx, pal


def small_model_only(idx: np.ndarray, k: int) -> bytes:
    """The payload the policy wrote before ``_CTX_LOWK_BIG`` (the small-map model alone)."""
    keep = P._CTX_LOWK_BIG
    P._CTX_LOWK_BIG = (-math.inf,) + keep[1:]
    try:
        return P.encode(idx, k)
    finally:
        P._CTX_LOWK_BIG = keep


def decode_times(g: bytes, png: bytes, reps: int) -> tuple:
    """(.gcp, PNG) decode times of two whole files: process CPU time, min of ``reps``, interleaved."""
    tg = tp = math.inf
    for _ in range(reps):
        tg = min(tg, B.cpu_min(lambda: Image.open(io.BytesIO(g)).load(), 1))
        tp = min(tp, B.cpu_min(lambda: Image.open(io.BytesIO(png)).load(), 1))
    return tg, tp


def check_lowk(reps: int) -> None:
    def ratio(g, png):
        tg, tp = decode_times(g, png, reps)
        return tg / tp
    ctx_dec, changed = [], []
    print(f"{'map':<30} {'N':>8} {'k':>2}  {'coding':<16} {'dec/PNG-8':>9} {'CTX dec':>7}  {'small-model coding':<18} {'size new/old':>12}")
    for name, idx, pal in check_maps():
        k = len(pal)
        body, old = P.encode(idx, k), small_model_only(idx, k)
        png = B.png8(B.p_image(idx, pal))
        coding = P.coding_name(body[:2])
        dec = ratio(gcp_file(idx, pal, body), png)
        ctx = dec if coding.startswith("ctx") else ratio(
            gcp_file(idx, pal, P.encode_as(idx, k, P.ctx_coding(idx.size, k))), png)
        if coding.startswith("ctx"):
            ctx_dec.append(dec)
        if P.coding_name(old[:2]) != coding:
            changed.append((len(body) / len(old), ctx))
        print(f"{name[:30]:<30} {idx.size:>8} {k:>2}  {coding:<16} {dec:9.2f} {ctx:7.2f}  {P.coding_name(old[:2]):<18} "
              f"{len(body) / len(old):12.3f}", flush=True)
    sizes = np.array([c[0] for c in changed])
    print(f"{len(ctx_dec)} maps sent to CTX: decode {min(ctx_dec):.2f}-{max(ctx_dec):.2f}x PNG-8; {len(changed)} coded "
          f"otherwise than by the small-map model alone (their CTX decode {min(c[1] for c in changed):.2f}-"
          f"{max(c[1] for c in changed):.2f}x, {sum(c[1] > 4 for c in changed)} over 4x), size new/old median "
          f"{np.median(sizes):.3f} ({sizes.min():.3f}-{sizes.max():.3f})" if changed else "no map changed")


def lowk_features(n, k, b, dup) -> np.ndarray:
    """The columns of the ``_CTX_LOWK_BIG`` model (arrays of N, k, B and dup in, (m, 6) out)."""
    return np.c_[np.ones_like(n), np.log1p(1e5 / n), np.log(b / n + 1e-4), np.log(k), dup, np.log(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=11, help="timed decodes per file (the minimum is kept)")
    ap.add_argument("--lowk", action="store_true", help="fit the k <= LOW_K model of maps up to 4 MP (_CTX_LOWK_BIG)")
    ap.add_argument("--check-lowk", action="store_true", help="validate the k <= LOW_K policy on held-out maps")
    ap.add_argument("--bigk", action="store_true", help="fit the k > LOW_K model of maps up to 4 MP (_CTX_BIG)")
    args = ap.parse_args()
    reps = args.reps
    if args.check_lowk:
        check_lowk(reps)
        return
    rows = []
    for name, idx, pal in (lowk_maps() if args.lowk else bigk_maps() if args.bigk else maps()):
        k = len(pal)
        coding = P.ctx_coding(idx.size, k)
        g = gcp_file(idx, pal, P.encode_as(idx, k, coding))
        png = B.png8(B.p_image(idx, pal))
        tg, tp = decode_times(g, png, reps)
        e = P.estimate(idx, k)
        rows.append((name, idx.size, k, e["bytes"], tg / tp, e["ctx"], e["dup"]))
        print(f"{name[:26]:<26} N {idx.size:>7} k {k:>3}  CTX/PNG-8 {tg / tp:5.2f}  model {e['ctx']:5.2f}", flush=True)
    n = np.array([r[1] for r in rows], float)
    k = np.array([r[2] for r in rows], float)
    b = np.array([r[3] for r in rows], float)
    true = np.array([r[4] for r in rows])
    model = np.array([r[5] for r in rows])
    if args.lowk:
        X = lowk_features(n, k, b, np.array([r[6] for r in rows]))
        c, *_ = np.linalg.lstsq(X, np.log(true), rcond=None)
        err = np.exp(X @ c) / true - 1
        print(f"k <= {P.LOW_K}, up to 4 MP: c = ({', '.join(f'{v:.4f}' for v in c)}) before the margin; error median "
              f"{np.median(abs(err)):.3f}, at most {-err.min():.3f} too low, {err.max():.3f} too high")
        ok = model <= P.CTX_CAP
        print(f"model in payload: {ok.sum()} of {len(rows)} maps within the {P.CTX_CAP}x cap, the largest true ratio "
              f"among them {true[ok].max():.2f}x")
        return
    left = np.array([P.uses_left(int(a), int(b)) for a, b in zip(n, k)])
    if args.bigk:
        X = bigk_features(n, k, b, np.array([r[6] for r in rows]), left)
        c, *_ = np.linalg.lstsq(X, np.log(true), rcond=None)
        pred = np.exp(X @ c)
        err = pred / true - 1
        print(f"k > {P.LOW_K}, up to 4 MP: c = ({', '.join(f'{v:.4f}' for v in c)}) before the margin; error median "
              f"{np.median(abs(err)):.3f}, at most {-err.min():.3f} too low, {err.max():.3f} too high")
        small = np.array([math.exp(c0 + c1 * math.log(a) + c2 * math.log(bb / a + 1e-4) + c3 * math.log(kk))
                          for a, kk, bb, (c0, c1, c2, c3) in
                          zip(n, k, b, (P._CTX_LEFT if u else P._CTX_UP for u in left))])  # the small-map models
        ok = small <= P.CTX_CAP
        print(f"small-map models alone: {ok.sum()} of {len(rows)} maps within the cap, {(ok & (true > 4)).sum()} of "
              f"them over 4x (largest {true[ok].max():.2f}x)")
        for margin in (1.3, 1.4, 1.45):
            both = ok & (pred * margin <= P.CTX_CAP)
            print(f"with this fit at margin {margin}: {both.sum()} within the cap, the largest true ratio among them "
                  f"{true[both].max():.2f}x; held back: " + ", ".join(f"{rows[i][0]} {true[i]:.2f}x"
                                                                       for i in np.where(ok & ~both)[0]))
        ok = model <= P.CTX_CAP
        print(f"model in payload: {ok.sum()} of {len(rows)} maps within the cap, the largest true ratio among them "
              f"{true[ok].max():.2f}x")
        return
    low = k <= P.LOW_K
    for label, m in ((f"k <= {P.LOW_K}", low), ("LEFT", left & ~low), ("U only", ~left & ~low)):
        X = np.c_[np.ones(m.sum()), np.log(n[m]), np.log(b[m] / n[m] + 1e-4), np.log(k[m])]
        c, *_ = np.linalg.lstsq(X, np.log(true[m]), rcond=None)
        err = np.exp(X @ c) / true[m] - 1
        print(f"{label}: c = ({c[0]:.4f}, {c[1]:.4f}, {c[2]:.4f}, {c[3]:.4f}) before the margin; "
              f"error median {np.median(abs(err)):.3f} max {abs(err).max():.3f}")
    ok = model <= P.CTX_CAP
    print(f"model in payload: {ok.sum()} of {len(rows)} maps within the {P.CTX_CAP}x cap, the largest true ratio "
          f"among them {true[ok].max():.2f}x; photos {sum(ok[i] for i, r in enumerate(rows) if '@' in r[0])} of "
          f"{sum('@' in r[0] for r in rows)}")


if __name__ == "__main__":
    main()
