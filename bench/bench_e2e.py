"""End to end, as processes: ``gcp compress IN -o OUT.gcp -k K`` vs ``pngquant --nofs K``.

Usage::

    python bench/bench_e2e.py [--runs 7] [--k 16 256] [--photo kodim05 ...] [--sizes 0.1 0.4 4] [--gcp PATH]
    python bench/bench_e2e.py --photo kodim01 kodim05 kodim13 kodim19 kodim23 --sizes 0.4 --runs 9
    python bench/bench_e2e.py --photo /work/shared/corpus/photos-more/sipi-4.2.03.png --sizes 0.4

Inputs, per photo (``--photo``: a Kodak name, ``/work/shared/corpus/photos/NAME.png``, or the path of
any photo; several may be given): ``0.4`` is the photo at 768 x 512 pixels' count (a Kodak photo as
it is; another photo resampled with LANCZOS, aspect kept, to ~0.39 megapixels, sensor-like noise
added if that is an upscale, as ``bench_quantize.py --mp`` does), ``4`` a 4-megapixel photo made
from it (a Kodak photo: LANCZOS upscale to 2448 x 1632 plus sensor-like noise, the ``big`` recipe of
``bench/make_photos.py``; another photo: resampled to ~4 megapixels, aspect kept, plus that noise).
All are cached in /tmp/gcp-e2e.  With several photos a summary gives the median time ratio per size
and k.

Each command is timed with hyperfine (``--warmup 1 --runs N``, median of the runs; the
whole process: interpreter start, imports, decode, quantize, encode, file written; also
the CPU time, user + system - hyperfine 1.x gives its mean - steadier on a shared machine), then
run once more to measure the output: file size in bytes and PSNR over R, G, B against
the input (the .gcp decoded with the pillow_gcp plugin, pngquant's PNG with Pillow).
pngquant is the system one (``/usr/bin/pngquant``, ``--nofs``: no dithering, ``--force
--output``); ``gcp`` is the console script of the active environment.  Without hyperfine
the script falls back to its own loop (same statistics).

``--interleave`` times the commands alternately (gcp, pngquant, [installed gcp], then the reverse
order, ``--runs`` rounds after a warm-up round) in the script's own loop, the CPU time of each run
from ``wait4``: on a shared machine whose load drifts, hyperfine's blocks of runs of one command can
meet different loads.

Byte code: before each ``gcp`` timing the package's modules are byte-compiled into their
``__pycache__`` (``compileall``, only stale files), as ``pip install`` does for an installed
package.  Without it, an editable checkout in an environment with ``PYTHONDONTWRITEBYTECODE=1``
(this machine's) recompiles every pillow_gcp module from source on every run, ~40-50 ms of
start-up no installed copy pays; ``--no-compile`` measures that case.

``--installed`` also times the command as a regular (wheel) install runs it: a throwaway virtual
environment holding a byte-compiled copy of the package and pip's console-script template, numpy
and Pillow taken from the current environment through a path line.  The editable install of the
development environment loads its import finder (pathlib, importlib.util, ...) at every interpreter
start, ~11 ms a regular install does not pay; the ``inst s`` / ``inst r`` columns show that case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


KODAK = "/work/shared/corpus/photos"
SMALL_PIXELS = 768 * 512  # a Kodak photo's


def _resampled(im, pixels: int, name: str, kind: str):
    """``im`` resampled (LANCZOS, aspect kept) to about ``pixels``; sensor-like noise if upscaled."""
    from make_photos import _rng, sensor_noise

    s = (pixels / (im.width * im.height)) ** 0.5
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    if size == im.size:
        return im
    im = im.resize(size, Image.Resampling.LANCZOS)
    if s > 1:
        im = Image.fromarray(sensor_noise(np.asarray(im), _rng(name, kind), 0.6, 2.0))
    return im


def make_inputs(photo: str, out: str, sizes=(0.4, 4)):
    """The input files of ``photo`` (a Kodak name or a path) at each of ``sizes`` (0.1, 0.4, 4 MP)."""
    sys.path.insert(0, HERE)
    from make_photos import _rng, sensor_noise

    os.makedirs(out, exist_ok=True)
    kodak = os.sep not in photo and not photo.endswith(".png")
    src = os.path.join(KODAK, photo + ".png") if kodak else photo
    name = os.path.splitext(os.path.basename(src))[0]
    files = []
    for mp in sizes:
        if mp == 0.4:
            path = os.path.join(out, f"{name}-768x512.png" if kodak else f"{name}-0.4mp.png")
            if not os.path.exists(path):
                if kodak:
                    shutil.copyfile(src, path)
                else:
                    _resampled(Image.open(src).convert("RGB"), SMALL_PIXELS, name, "e2e-0.4").save(path)
        elif mp == 0.1:  # a small image (a quarter of a Kodak photo's pixels: 384 x 256), no noise
            path = os.path.join(out, f"{name}-0.1mp.png")
            if not os.path.exists(path):
                _resampled(Image.open(src).convert("RGB"), SMALL_PIXELS // 4, name, "e2e-0.1").save(path)
        elif mp == 4:
            path = os.path.join(out, f"{name}-4mp.png")
            if not os.path.exists(path):
                im = Image.open(src).convert("RGB")
                if kodak:
                    if im.height > im.width:
                        im = im.transpose(Image.Transpose.ROTATE_90)
                    up = im.resize((2448, 1632), Image.Resampling.LANCZOS)
                    big = Image.fromarray(sensor_noise(np.asarray(up), _rng(name, "4mp"), 0.6, 2.0))
                else:
                    big = _resampled(im, 2448 * 1632, name, "e2e-4")
                big.save(path, compress_level=1)
        else:
            raise SystemExit(f"--sizes takes 0.1, 0.4 and 4, not {mp}")
        files.append(path)
    return files


def time_cmd(cmd: list, runs: int) -> list:
    """Wall times (s) of ``runs`` runs of cmd after one warm-up (hyperfine also gives
    the CPU time, user + system, of each run: ``time_cmd.cpu``; else None)."""
    time_cmd.cpu = None
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            jpath = fh.name
        try:
            subprocess.run(["hyperfine", "-N", "--warmup", "1", "--runs", str(runs), "--export-json", jpath,
                            "--style", "none", " ".join(_q(c) for c in cmd)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(jpath) as fh:
                r = json.load(fh)["results"][0]
            if isinstance(r.get("user"), list):
                time_cmd.cpu = [u + s for u, s in zip(r["user"], r["system"])]
            elif isinstance(r.get("user"), (int, float)):  # hyperfine 1.x: means only
                time_cmd.cpu = [r["user"] + r["system"]]
            return r["times"]
        finally:
            os.unlink(jpath)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def time_interleaved(cmds: list, runs: int):
    """Wall and CPU (user + system, from wait4) times of ``runs`` rounds in which every command of
    ``cmds`` runs once, the order reversed every other round, after one warm-up round: a drift of
    the machine's load hits all the commands alike."""
    walls = [[] for _ in cmds]
    cpus = [[] for _ in cmds]
    for r in range(runs + 1):
        order = list(range(len(cmds))) if r % 2 == 0 else list(range(len(cmds)))[::-1]
        for i in order:
            t = time.perf_counter()
            p = subprocess.Popen(cmds[i], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode:
                raise subprocess.CalledProcessError(p.returncode, cmds[i])
            if r:
                walls[i].append(wall)
                cpus[i].append(ru.ru_utime + ru.ru_stime)
    return walls, cpus


def _q(s: str) -> str:
    return s if all(c.isalnum() or c in "/._-=+" for c in s) else "'" + s.replace("'", "'\\''") + "'"


def compile_package() -> None:
    """Byte-compile pillow_gcp (stale modules only), as pip does when it installs the package."""
    import compileall

    import pillow_gcp

    compileall.compile_dir(os.path.dirname(pillow_gcp.__file__), quiet=1)


def installed_copy(tmp: str) -> str:
    """Path of a ``gcp`` script in a fresh venv laid out as ``pip install pillow-gcp`` leaves it."""
    import compileall

    import PIL

    import pillow_gcp

    venv = os.path.join(tmp, "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    site = subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    deps = sorted({os.path.dirname(os.path.dirname(m.__file__)) for m in (np, PIL)})
    with open(os.path.join(site, "zz_bench_deps.pth"), "w") as fh:  # paths only: their .pth files are not run
        fh.write("\n".join(deps) + "\n")
    dst = os.path.join(site, "pillow_gcp")
    shutil.copytree(os.path.dirname(pillow_gcp.__file__), dst, ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(dst, quiet=1)
    script = os.path.join(venv, "bin", "gcp")
    with open(script, "w") as fh:  # pip's console-script template
        fh.write(f"#!{py}\nimport sys\nfrom pillow_gcp.cli import run\nif __name__ == '__main__':\n"
                 "    sys.exit(run())\n")
    os.chmod(script, 0o755)
    return script


def psnr(ref: np.ndarray, path: str) -> float:
    if path.endswith(".gcp"):
        import pillow_gcp  # noqa: F401  (registers the plugin)
    out = np.asarray(Image.open(path).convert("RGB"), np.float64)
    mse = np.mean((out - ref) ** 2)
    return 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--k", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--photo", nargs="+", default=["kodim05"],
                    help="Kodak names (kodim05) or paths of photos (default kodim05)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.4, 4], choices=[0.1, 0.4, 4],
                    help="0.1: a small image (a quarter of 768x512's pixels), 0.4: 768x512 (or resampled to "
                         "as many pixels), 4: 4 megapixels (default 0.4 and 4)")
    ap.add_argument("--gcp", default=shutil.which("gcp") or "gcp")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile pillow_gcp before timing gcp (see the module doc)")
    ap.add_argument("--interleave", action="store_true",
                    help="time gcp and pngquant alternately, run by run (own loop, CPU from wait4) instead of "
                         "hyperfine's blocks: steadier on a shared machine whose load drifts")
    ap.add_argument("--installed", action="store_true",
                    help="also time gcp as a regular (non-editable) install runs it (see the module doc)")
    a = ap.parse_args(argv)
    inputs = [f for p in a.photo for f in make_inputs(p, "/tmp/gcp-e2e", a.sizes)]
    tmp = tempfile.mkdtemp(prefix="gcp-e2e-")
    inst = installed_copy(tmp) if a.installed else None
    print(f"runs={a.runs} (median), gcp={a.gcp}, pngquant={shutil.which('pngquant')}, "
          f"{'no byte-compile' if a.no_compile else 'pillow_gcp byte-compiled before each gcp timing'}")
    print(f"{'input':<26}{'k':>4} | {'gcp s':>7} {'cpu s':>6} {'bytes':>9} {'PSNR':>6} | {'pngquant s':>10} "
          f"{'cpu s':>6} {'bytes':>9} {'PSNR':>6} | {'time r':>6} {'size r':>6} {'dPSNR':>6}"
          + (f" | {'inst s':>6} {'inst r':>6}" if inst else ""))
    ratios = {}  # (size label, k) -> time ratios gcp / pngquant
    try:
        for inp in inputs:
            ref = np.asarray(Image.open(inp).convert("RGB"), np.float64)
            for k in a.k:
                og = os.path.join(tmp, "out.gcp")
                op = os.path.join(tmp, "out.png")
                cg = [a.gcp, "compress", inp, "-o", og, "-k", str(k), "-f"]
                cp = ["pngquant", "--nofs", "--force", "--output", op, str(k), inp]
                if not a.no_compile:
                    compile_package()
                if a.interleave:
                    walls, cpus = time_interleaved([cg, cp] + ([[inst] + cg[1:]] if inst else []), a.runs)
                    tg, tp = statistics.median(walls[0]), statistics.median(walls[1])
                    cgc, cpc = statistics.median(cpus[0]), statistics.median(cpus[1])
                    ti = statistics.median(walls[2]) if inst else None
                else:
                    tg = statistics.median(time_cmd(cg, a.runs))
                    cgc = statistics.median(time_cmd.cpu) if time_cmd.cpu else float("nan")
                    tp = statistics.median(time_cmd(cp, a.runs))
                    cpc = statistics.median(time_cmd.cpu) if time_cmd.cpu else float("nan")
                    ti = statistics.median(time_cmd([inst] + cg[1:], a.runs)) if inst else None
                subprocess.run(cg, check=True)
                subprocess.run(cp, check=True)
                sg, sp = os.path.getsize(og), os.path.getsize(op)
                pg, pp = psnr(ref, og), psnr(ref, op)
                w, h = Image.open(inp).size
                label = f"{os.path.basename(inp)[:-4]} {w * h / 1e6:.1f}MP"
                ratios.setdefault((f"{w * h / 1e6:.1f}MP", k), []).append(tg / tp)
                print(f"{label:<26}{k:>4} | {tg:>7.3f} {cgc:>6.2f} {sg:>9} "
                      f"{pg:>6.2f} | {tp:>10.3f} {cpc:>6.2f} {sp:>9} {pp:>6.2f} | {tg / tp:>6.2f} {sg / sp:>6.3f} "
                      f"{pg - pp:>+6.2f}" + (f" | {ti:>6.3f} {ti / tp:>6.2f}" if inst else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(a.photo) > 1:
        print("median time ratio gcp / pngquant over the photos: " + ", ".join(
            f"{size} k={k}: {statistics.median(r):.2f} (max {max(r):.2f}, n={len(r)})"
            for (size, k), r in sorted(ratios.items())))
    print("targets (issue 14 item 4): time r <= 1, size r < 1, dPSNR > 0")


if __name__ == "__main__":
    main()
