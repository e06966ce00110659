"""Upscaled photos: the payload policy against PNG-8 on maps that repeat rows and runs.

Photos of ``../shared/corpus`` (Kodak and USC-SIPI) are upscaled ×2 to ×8 (NEAREST, which repeats rows and
columns, and BILINEAR / BICUBIC, which do not repeat them exactly), quantized with libimagequant to k = 4, 16,
64 and 256 (``bench_payload.quantized``), and coded at the default level. Per map: the coding chosen, the
trial statistic ``dup`` (share of 64-pixel row segments equal to the one above), size against PNG-8 (Pillow,
optimize=True) and against level 9 (maps up to 1 MP), the payload encode against PNG optimize's time (process
CPU time, one run), and the decode of the whole file against PNG-8's (Pillow open + load, wall-clock, min of 5).

    python bench/bench_upscaled.py
"""

from __future__ import annotations

import io
import os
import sys
import time

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_payload as B  # noqa: E402
import fit_ctx_model as M  # noqa: E402
from pillow_gcp import payload as P  # noqa: E402

CASES = [("kodim05", "photos/kodim05.png", 3.2, Image.NEAREST),
         ("kodim23", "photos/kodim23.png", 2, Image.NEAREST),
         ("kodim23", "photos/kodim23.png", 2, Image.BICUBIC),
         ("sipi-4.1.07", "photos-more/sipi-4.1.07.png", 4, Image.NEAREST),
         ("sipi-4.1.07", "photos-more/sipi-4.1.07.png", 8, Image.BILINEAR),
         ("sipi-4.2.03", "photos-more/sipi-4.2.03.png", 2, Image.NEAREST)]
FILTER = {Image.NEAREST: "NEAREST", Image.BILINEAR: "BILINEAR", Image.BICUBIC: "BICUBIC"}


def main() -> None:
    print(f"{'map':<26} {'size':>11} {'k':>3}  {'coding':<16} {'dup':>5}  {'/PNG-8':>6}  {'L6/L9':>5}  "
          f"{'enc/PNG-opt':>11}  {'dec/PNG':>7}")
    for name, rel, factor, resample in CASES:
        im = Image.open(os.path.join(B.CORPUS, rel)).convert("RGB")
        im = im.resize((int(im.width * factor), int(im.height * factor)), resample)
        for k in (4, 16, 64, 256):
            idx, pal = B.quantized(im, k)
            k = len(pal)
            pim = B.p_image(idx, pal)
            t0 = time.process_time()
            png = B.png8(pim)
            t_png = time.process_time() - t0
            t0 = time.process_time()
            body = P.encode(idx, k)
            t_enc = time.process_time() - t0
            l9 = f"{len(body) / len(P.encode(idx, k, level=9)):.3f}" if idx.size <= 1 << 20 else "-"
            g = M.gcp_file(idx, pal, body)
            dec = (B.cpu_min(lambda: Image.open(io.BytesIO(g)).load(), 5, clock=time.perf_counter)
                   / B.cpu_min(lambda: Image.open(io.BytesIO(png)).load(), 5, clock=time.perf_counter))
            label = f"{name} x{factor:g} {FILTER[resample]}"
            print(f"{label:<26} {idx.shape[1]:>5}x{idx.shape[0]:<5} {k:>3}  {P.coding_name(body[:2]):<16} "
                  f"{P.estimate(idx, k)['dup']:5.2f}  {len(g) / len(png):6.3f}  {l9:>5}  {t_enc / t_png:11.2f}  "
                  f"{dec:7.2f}", flush=True)


if __name__ == "__main__":
    main()
