"""Command-line interface: ``gcp compress | decompress | info | compare``.

Entry points: the console script ``gcp`` and ``python -m pillow_gcp`` both
call :func:`main`, which returns the process exit status:

* 0 -- every file was processed;
* 1 -- at least one file failed (each failure is reported on stderr with its
  file name; the other files are still processed and no partial output file
  is left behind);
* 2 -- usage error (bad option, bad combination of options or paths).

Outputs are written atomically: to a temporary file in the target folder,
then :func:`os.replace` onto the final name.  An existing output is refused
unless ``--force`` is given, and an input file is never overwritten, even
with ``--force``.

Quality measures (used by ``--target-psnr``, ``--target-de`` and
``compare``):

* PSNR = 10*log10(255**2 / MSE), the MSE taken over the R, G and B channels
  of every pixel.  Images with an alpha channel are composited over black
  and over white, and the MSE is the mean of the two composites' MSEs, so
  an error in alpha counts as much as the colour error it causes, and the
  colour of fully transparent pixels does not count at all.
* mean deltaE = the mean Euclidean distance in OKLab between the original
  and the decoded pixel, times 100 (so 1.0 is roughly a just-noticeable
  difference), computed on the same composites.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import math
import os
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

K_MIN = 1
K_MAX = 256
DEFAULT_K = 256  # the library's default (quantize(k=None), save without k)
ALGOS = ("kmeans", "kmedoids")
METRICS = ("euclidean", "manhattan", "chebyshev")
SPACES = ("rgb", "oklab")
GCP_SUFFIX = ".gcp"


class UsageError(Exception):
    """A problem with the command line itself (exit status 2)."""


class FileError(Exception):
    """A problem with one file; the batch goes on (exit status 1)."""


# --------------------------------------------------------------------------
# quality measures


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear light, any shape."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_M1 = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_M2 = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)


def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB values in [0, 255] -> (..., 3) float64 OKLab (L in [0, 1])."""
    lin = _srgb_to_linear(np.asarray(rgb, dtype=np.float64) / 255.0)
    lms = lin @ _M1.T
    return np.cbrt(lms) @ _M2.T


def _has_alpha(im: Image.Image) -> bool:
    """True if ``im`` carries transparency (an alpha band, tRNS-style info or an RGBA palette)."""
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return True
    if "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def _composites(im: Image.Image, alpha: bool) -> list[np.ndarray]:
    """The (H, W, 3) float64 RGB arrays a quality measure compares.

    One array (the RGB pixels) when ``alpha`` is False; otherwise two: the
    image composited over black and over white.
    """
    if not alpha:
        return [np.asarray(im.convert("RGB"), dtype=np.float64)]
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
    a = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3]
    return [rgb * a, rgb * a + 255.0 * (1.0 - a)]


def _pair(a: Image.Image, b: Image.Image) -> list[tuple[np.ndarray, np.ndarray]]:
    """Matching composites of two same-size images (alpha composites if either has alpha)."""
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
    alpha = _has_alpha(a) or _has_alpha(b)
    return list(zip(_composites(a, alpha), _composites(b, alpha)))


def mse(a: Image.Image, b: Image.Image) -> float:
    """Mean squared error over R, G, B of all pixels (alpha: see module doc)."""
    pairs = _pair(a, b)
    return float(np.mean([np.mean((x - y) ** 2) for x, y in pairs]))


def psnr_from_mse(m: float) -> float:
    """PSNR in dB for 8-bit channels; ``inf`` for identical images."""
    return math.inf if m <= 0 else 10.0 * math.log10(255.0**2 / m)


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB of ``b`` against ``a`` (see module doc)."""
    return psnr_from_mse(mse(a, b))


def delta_e_map(a: Image.Image, b: Image.Image) -> np.ndarray:
    """(H, W) OKLab distance x 100 between the images (alpha: averaged composites)."""
    maps = []
    for x, y in _pair(a, b):
        # distances of unique colour pairs would be cheaper; images here are
        # small enough (a few megapixels) to convert directly in row chunks.
        out = np.empty(x.shape[:2], dtype=np.float64)
        step = max(1, 262144 // max(1, x.shape[1]))
        for r in range(0, x.shape[0], step):
            d = srgb_to_oklab(x[r : r + step]) - srgb_to_oklab(y[r : r + step])
            out[r : r + step] = np.sqrt(np.sum(d * d, axis=-1)) * 100.0
        maps.append(out)
    return np.mean(maps, axis=0)


def mean_delta_e(a: Image.Image, b: Image.Image) -> float:
    """Mean OKLab deltaE x 100 of ``b`` against ``a``."""
    return float(np.mean(delta_e_map(a, b)))


# --------------------------------------------------------------------------
# parameters and quantization


@dataclass(frozen=True)
class QuantParams:
    """The quantizer options of ``compress`` and ``compare`` (picklable)."""

    k: int | None = 256
    algo: str = "kmeans"
    metric: str = "euclidean"
    space: str = "rgb"
    dither: bool = False
    seed: int = 0
    fixed_colors: tuple[tuple[int, int, int], ...] | None = None
    palette: tuple[tuple[int, int, int, int], ...] | None = None
    target_psnr: float | None = None
    target_de: float | None = None
    strip: bool = False
    level: int | None = None  # payload effort 0..9 (None: 6)

    def kwargs(self, k: int) -> dict:
        kw = dict(k=k, algo=self.algo, seed=self.seed, metric=self.metric, space=self.space, dither=self.dither)
        if self.fixed_colors:
            kw["fixed_colors"] = [list(c) for c in self.fixed_colors]
        if self.palette:
            kw["palette"] = [tuple(c) for c in self.palette]
        return kw

    @property
    def k_floor(self) -> int:
        return max(K_MIN, len(self.fixed_colors or ()))


def _prepare(im: Image.Image) -> Image.Image:
    """Load ``im`` and convert it to RGB, or RGBA if it has any transparency."""
    im.load()
    if im.mode in ("RGB", "RGBA"):
        return im
    if _has_alpha(im):
        return im.convert("RGBA")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _quantize(images: list[Image.Image], params: QuantParams, k: int) -> list[Image.Image]:
    import pillow_gcp

    if len(images) == 1:
        return [pillow_gcp.quantize(images[0], **params.kwargs(k))]
    return list(pillow_gcp.quantize_many(images, **params.kwargs(k)))


def _measure(params: QuantParams) -> tuple[str, float, Callable[[float], bool]]:
    """(name, target, meets(value)) of the quality target in ``params``."""
    if params.target_psnr is not None:
        return "PSNR", params.target_psnr, lambda v: v >= params.target_psnr
    return "deltaE", params.target_de, lambda v: v <= params.target_de


def _quality(originals: list[Image.Image], outs: list[Image.Image], params: QuantParams) -> float:
    """PSNR (dB) or mean deltaE x100 of ``outs`` over all pixels of all images."""
    if params.target_psnr is not None:
        n = sum(im.size[0] * im.size[1] for im in originals)
        total = sum(mse(a, b) * a.size[0] * a.size[1] for a, b in zip(originals, outs))
        return psnr_from_mse(total / n)
    n = sum(im.size[0] * im.size[1] for im in originals)
    return sum(float(np.sum(delta_e_map(a, b))) for a, b in zip(originals, outs)) / n


@dataclass
class Search:
    """Result of a quality-target search."""

    k: int
    images: list[Image.Image]
    value: float
    reached: bool
    tried: dict[int, float] = field(default_factory=dict)


def search_k(images: list[Image.Image], params: QuantParams) -> Search:
    """Smallest k whose quantization meets the quality target of ``params``.

    Doubles k from the floor (1, or the number of fixed colours) until the
    target is met (at most 256), then bisects between the last failing and
    the first meeting k.  The chosen k always meets the target and k // 2
    (when it is a valid k) is verified to fail it, with the same algorithm,
    seed and options; if quality happens not to be monotonic in k and k // 2
    also meets the target, the search continues below it.  When even k = 256
    misses the target the 256-colour result is returned with ``reached`` False.
    """
    name, target, meets = _measure(params)
    cache: dict[int, tuple[float, list[Image.Image]]] = {}

    def run(k: int) -> float:
        if k not in cache:
            outs = _quantize(images, params, k)
            v = _quality(images, outs, params)
            # keep the images only of candidates (memory: one copy per passing k)
            cache[k] = (v, outs if meets(v) or k == K_MAX else [])
        return cache[k][0]

    floor = params.k_floor
    k = floor
    while not meets(run(k)):
        if k >= K_MAX:
            v, outs = cache[K_MAX]
            return Search(K_MAX, outs, v, False, {kk: vv for kk, (vv, _) in cache.items()})
        k = min(K_MAX, k * 2)
    hi = k
    while True:
        failing = [kk for kk, (v, _) in cache.items() if kk < hi and not meets(v)]
        lo = max(failing) if failing else floor - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if meets(run(mid)):
                hi = mid
            else:
                lo = mid
        half = hi // 2
        if half < floor or not meets(run(half)):
            break
        hi = half
    v, outs = cache[hi]
    return Search(hi, outs, v, True, {kk: vv for kk, (vv, _) in cache.items()})


@dataclass
class Encoded:
    """What :func:`encode` produced."""

    blobs: list[bytes]  # one .gcp file per input image
    k: int  # the palette size asked of the quantizer
    quality: float | None = None  # PSNR or mean deltaE x100 (with a quality target)
    warning: str | None = None  # the target was not reached


def encode(images: list[Image.Image], params: QuantParams) -> Encoded:
    """Quantize ``images`` (one palette for all of them) and encode each as .gcp bytes.

    With a quality target, k is chosen by :func:`search_k`.  The ICC profile,
    EXIF, XMP and comment of each image are kept unless ``params.strip``.
    """
    warning = None
    if params.target_psnr is not None or params.target_de is not None:
        s = search_k(images, params)
        pimgs, k, value = s.images, s.k, s.value
        if not s.reached:
            name, target, _ = _measure(params)
            unit = " dB" if name == "PSNR" else ""
            warning = f"target {name} {target:g}{unit} not reached; best is {value:.2f}{unit} at k=256"
    else:
        k = params.k
        pimgs, value = _quantize(images, params, k), None
    from pillow_gcp.plugin import metadata_of  # the quantized images carry no info: take the originals'

    blobs = []
    for src, p in zip(images, pimgs):
        meta = {} if params.strip else metadata_of(src)
        buf = io.BytesIO()
        p.save(buf, "GCP", compress_level=params.level, **meta)
        blobs.append(buf.getvalue())
    return Encoded(blobs, k, value, warning)


# --------------------------------------------------------------------------
# files


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _same_file(a: str, b: str) -> bool:
    if a == "-" or b == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_output(out: str, inputs: Iterable[str], force: bool) -> None:
    """Raise FileError if writing ``out`` would clobber an input or an existing file."""
    if out == "-":
        return
    for i in inputs:
        if _same_file(out, i):
            raise FileError(f"refusing to overwrite input file {out}")
    if os.path.isdir(out):
        raise FileError(f"output {out} is a directory")
    if os.path.lexists(out) and not force:
        raise FileError(f"output {out} exists (use --force to overwrite)")


def write_atomic(path: str, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and os.replace."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if not force and os.path.lexists(path):
            raise FileError(f"output {path} exists (use --force to overwrite)")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_input(path: str, stdin_data: bytes | None = None, tiles: list | None = None) -> Image.Image:
    """Open ``path`` (``-`` = the given stdin bytes) fully decoded; OSError -> FileError.

    If ``tiles`` is a list, the image's tile descriptors (taken before
    decoding) are appended to it.
    """
    try:
        if path == "-":
            im = Image.open(io.BytesIO(stdin_data or b""))
        else:
            im = Image.open(path)
        if tiles is not None:
            tiles.extend(im.tile)
        im.load()
        return im
    except FileNotFoundError:
        raise FileError("no such file") from None
    except IsADirectoryError:
        raise FileError("is a directory") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise FileError(f"cannot read image: {e}") from None


def _display(path: str) -> str:
    return "<stdin>" if path == "-" else path


def plan_outputs(inputs: Sequence[str], out: str | None, suffix: str) -> list[str]:
    """Output path for each input; UsageError if ambiguous.

    One input: ``out`` is the file (``-`` = stdout), or a folder if it exists
    as one or ends with a separator; without ``out``, the input's name with
    ``suffix`` beside it (stdout for stdin).  Several inputs: ``out`` is a
    folder (created); two inputs that would get the same output name are a
    usage error.
    """
    if not inputs:
        raise UsageError("no input files")
    if "-" in inputs and len(inputs) > 1:
        raise UsageError("'-' (stdin) can only be used with a single input")
    if len(inputs) == 1:
        src = inputs[0]
        if out is None:
            if src == "-":
                return ["-"]
            return [os.path.splitext(src)[0] + suffix]
        if out != "-" and (os.path.isdir(out) or out.endswith(os.sep)):
            if src == "-":
                raise UsageError("with stdin input, -o must name a file, not a folder")
            os.makedirs(out, exist_ok=True)
            return [os.path.join(out, os.path.splitext(os.path.basename(src))[0] + suffix)]
        return [out]
    if out == "-":
        raise UsageError("-o - (stdout) can only be used with a single input")
    if out is not None:
        if os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"-o {out}: with several inputs, -o must be a folder")
        outs = [os.path.join(out, os.path.splitext(os.path.basename(s))[0] + suffix) for s in inputs]
    else:
        outs = [os.path.splitext(s)[0] + suffix for s in inputs]
    seen: dict[str, str] = {}
    for s, o in zip(inputs, outs):
        key = os.path.normcase(os.path.abspath(o))
        if key in seen:
            raise UsageError(f"{seen[key]} and {s} would both be written to {o}")
        seen[key] = s
    if out is not None:
        os.makedirs(out, exist_ok=True)
    return outs


# --------------------------------------------------------------------------
# progress


class Progress:
    """A one-line ``[done/total] name`` display on stderr, only when it is a terminal."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total, self.done = total, 0
        self.enabled = (sys.stderr.isatty() if enabled is None else enabled) and total > 1
        self._width = 0

    def _line(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        sys.stderr.write("\r" + text + " " * pad)
        sys.stderr.flush()
        self._width = len(text)

    def step(self, name: str) -> None:
        self.done += 1
        if self.enabled:
            self._line(f"[{self.done}/{self.total}] {name}"[:200])

    def message(self, msg: str) -> None:
        """Print a full line (an error) without garbling the progress line."""
        if self.enabled and self._width:
            self._line("")
            sys.stderr.write("\r")
            self._width = 0
        _warn(msg)

    def close(self) -> None:
        if self.enabled and self._width:
            self._line("")
            sys.stderr.write("\r")
            sys.stderr.flush()


# --------------------------------------------------------------------------
# workers (module level so that ProcessPoolExecutor can pickle them)


@dataclass(frozen=True)
class Result:
    src: str
    dst: str
    ok: bool
    message: str = ""
    in_bytes: int = 0
    out_bytes: int = 0
    pixels: int = 0
    k: int | None = None
    quality: float | None = None
    warning: str | None = None
    psnr: float | None = None


def _input_size(path: str, stdin_data: bytes | None) -> int:
    if path == "-":
        return len(stdin_data or b"")
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def compress_one(
    src: str, dst: str, params: QuantParams, force: bool, all_inputs: tuple[str, ...], stdin_data: bytes | None = None,
    verbose: bool = False,
) -> Result:
    """Compress one file; never raises for a per-file problem (returns ok=False).

    With ``verbose`` the PSNR of the written file against the input is measured too.
    """
    try:
        _check_output(dst, all_inputs, force)
        raw = _read_input(src, stdin_data)
        frames = getattr(raw, "n_frames", 1)
        im = _prepare(raw)
        try:
            enc = encode([im], params)
        except (ValueError, TypeError) as e:
            raise FileError(str(e)) from None
        blob = enc.blobs[0]
        write_atomic(dst, blob, force)
        warnings = [w for w in (enc.warning, f"{frames} frames, only the first was compressed" if frames > 1 else None)
                    if w]
        quality = psnr(im, Image.open(io.BytesIO(blob))) if verbose else None  # of the bytes written
        return Result(src, dst, True, "", _input_size(src, stdin_data), len(blob), im.size[0] * im.size[1],
                      enc.k, enc.quality, "; ".join(warnings) or None, quality)
    except FileError as e:
        return Result(src, dst, False, str(e))
    except (OSError, MemoryError) as e:
        return Result(src, dst, False, f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug somewhere: report it with the file, keep the batch going
        return Result(src, dst, False, f"internal error: {type(e).__name__}: {e}")


def decompress_one(
    src: str, dst: str, fmt: str, force: bool, all_inputs: tuple[str, ...], stdin_data: bytes | None = None
) -> Result:
    """Decode one .gcp file and save it as ``fmt``; never raises for a per-file problem."""
    try:
        _check_output(dst, all_inputs, force)
        im = _read_input(src, stdin_data)
        data = save_bytes(im, fmt)
        write_atomic(dst, data, force)
        return Result(src, dst, True, "", _input_size(src, stdin_data), len(data), im.size[0] * im.size[1])
    except FileError as e:
        return Result(src, dst, False, str(e))
    except (OSError, ValueError, MemoryError) as e:
        return Result(src, dst, False, f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug somewhere: report it with the file, keep the batch going
        return Result(src, dst, False, f"internal error: {type(e).__name__}: {e}")


def save_bytes(im: Image.Image, fmt: str) -> bytes:
    """Encode ``im`` in Pillow format ``fmt``, converting the mode if the format needs it."""
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt == "GCP":
        im.save(buf, fmt)
        return buf.getvalue()
    try:
        if fmt in ("JPEG", "MPO"):
            raise OSError("needs RGB")
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        buf = io.BytesIO()
        target = "RGBA" if _has_alpha(im) and fmt not in ("JPEG", "MPO", "BMP", "PPM", "PCX", "EPS") else "RGB"
        im.convert(target).save(buf, fmt)
    return buf.getvalue()


# --------------------------------------------------------------------------
# commands


def _run_batch(
    fn: Callable[..., Result], tasks: list[tuple], jobs: int, progress: Progress, verbose: bool = False
) -> list[Result]:
    """Run ``fn(*task)`` for every task, on ``jobs`` processes; results in task order.

    Each result is reported on stderr as it arrives: failures and warnings
    always, a size line per file with ``verbose``.
    """
    results: list[Result | None] = [None] * len(tasks)

    def report(i: int, r: Result) -> None:
        results[i] = r
        progress.step(os.path.basename(_display(r.src)))
        if verbose and r.ok:
            progress.message(_report_line(r))
        if not r.ok:
            progress.message(f"gcp: {_display(r.src)}: {r.message}")
        elif r.warning:
            progress.message(f"gcp: {_display(r.src)}: warning: {r.warning}")

    if jobs <= 1 or len(tasks) <= 1:
        for i, t in enumerate(tasks):
            report(i, fn(*t))
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as ex:
            futs = {ex.submit(fn, *t): i for i, t in enumerate(tasks)}
            for f in concurrent.futures.as_completed(futs):
                i = futs[f]
                try:
                    r = f.result()
                except Exception as e:  # a worker died (e.g. killed for memory)
                    r = Result(tasks[i][0], tasks[i][1], False, f"{type(e).__name__}: {e}")
                report(i, r)
    progress.close()
    return [r for r in results if r is not None]


def _stdin_bytes(inputs: Sequence[str]) -> bytes | None:
    return sys.stdin.buffer.read() if list(inputs) == ["-"] else None


def _refuse_tty(outs: Sequence[str]) -> None:
    if "-" in outs and sys.stdout.isatty():
        raise UsageError("refusing to write image data to a terminal; use -o FILE or redirect stdout")


def _parse_color(text: str) -> tuple[int, int, int]:
    t = text.strip().lstrip("#")
    if len(t) == 3:
        t = "".join(ch * 2 for ch in t)
    if len(t) != 6:
        raise argparse.ArgumentTypeError(f"invalid colour {text!r}: expected RRGGBB hex, e.g. ff8000")
    try:
        v = int(t, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid colour {text!r}: expected RRGGBB hex, e.g. ff8000") from None
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def _colors(text: str) -> list[tuple[int, int, int]]:
    return [_parse_color(t) for t in text.split(",") if t.strip()]


def _palette_arg(spec: str) -> tuple[tuple[int, int, int, int], ...]:
    """--palette: a palette image file (P mode: .gcp, PNG-8, GIF...) or a list of RRGGBB colours."""
    from pillow_gcp.quantizers import parse_palette

    if os.path.exists(spec):
        try:
            with Image.open(spec) as im:
                colours = parse_palette(im)
        except (OSError, ValueError) as e:
            raise UsageError(f"--palette {spec}: {e}") from None
    else:
        try:
            colours = parse_palette(_colors(spec))
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--palette: {e} (or no such palette file)") from None
        except (ValueError, TypeError) as e:
            raise UsageError(f"--palette: {e}") from None
    return tuple(tuple(int(v) for v in c) for c in colours)


def _k_type(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid k {text!r}: expected an integer in {K_MIN}..{K_MAX}") from None
    if not K_MIN <= k <= K_MAX:
        raise argparse.ArgumentTypeError(f"k must be in {K_MIN}..{K_MAX}, got {k}")
    return k


def _jobs_type(text: str) -> int:
    try:
        j = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid job count {text!r}") from None
    if j < 0:
        raise argparse.ArgumentTypeError("-j must be >= 0 (0 = one per CPU)")
    return j or (os.cpu_count() or 1)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _params(args: argparse.Namespace) -> QuantParams:
    fixed = tuple(c for group in (args.fixed_color or []) for c in group) or None
    if args.target_psnr is not None and args.target_de is not None:
        raise UsageError("--target-psnr and --target-de cannot be combined")
    target = args.target_psnr is not None or args.target_de is not None
    if target and args.k is not None:
        raise UsageError("-k and a quality target (--target-psnr/--target-de) are exclusive")
    k = args.k if args.k is not None else DEFAULT_K
    if fixed and len(fixed) > (K_MAX if target else k):
        raise UsageError(f"{len(fixed)} --fixed-color values do not fit in a palette of k={k}")
    palette = _palette_arg(args.palette) if getattr(args, "palette", None) else None
    if palette is not None and (target or fixed or args.k is not None):
        raise UsageError("--palette maps onto a given palette: it cannot be combined with -k, "
                         "--fixed-color or a quality target")
    return QuantParams(
        k=None if target else (len(palette) if palette else k),
        algo=args.algo,
        metric=args.metric,
        space=args.space,
        dither=args.dither,
        seed=args.seed,
        fixed_colors=fixed,
        palette=palette,
        target_psnr=args.target_psnr,
        target_de=args.target_de,
        strip=getattr(args, "strip", False),
        level=getattr(args, "level", None),
    )


def _validate_params(params: QuantParams) -> None:
    """Run the quantizer once on a tiny image so that invalid options are a usage error."""
    import pillow_gcp

    probe = Image.new("RGB", (4, 4))
    probe.putdata([(i * 16, 255 - i * 16, (i * 97) % 256) for i in range(16)])
    try:
        pillow_gcp.quantize(probe, **params.kwargs(params.k or max(2, params.k_floor)))
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def _report_line(r: Result) -> str:
    parts = [f"{_display(r.src)} -> {'<stdout>' if r.dst == '-' else r.dst}:"]
    if r.in_bytes:
        parts.append(f"{r.in_bytes} -> {r.out_bytes} bytes")
    else:
        parts.append(f"{r.out_bytes} bytes")
    if r.pixels:
        parts.append(f"({8.0 * r.out_bytes / r.pixels:.3f} bpp)")
    if r.k is not None:
        parts.append(f"k={r.k}")
    if r.quality is not None:
        parts.append(f"quality={r.quality:.2f}")
    if r.psnr is not None:
        parts.append(f"PSNR {r.psnr:.2f} dB")
    return " ".join(parts)


def cmd_compress(args: argparse.Namespace) -> int:
    params = _params(args)
    _validate_params(params)
    outs = plan_outputs(args.inputs, args.output, GCP_SUFFIX)
    _refuse_tty(outs)
    inputs = tuple(args.inputs)
    if args.shared_palette and len(inputs) > 1:
        return _compress_shared(args, params, inputs, outs)
    stdin = _stdin_bytes(inputs)
    tasks = [(s, d, params, args.force, inputs, stdin, args.verbose) for s, d in zip(inputs, outs)]
    results = _run_batch(compress_one, tasks, args.jobs, Progress(len(tasks)), args.verbose)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _compress_shared(args: argparse.Namespace, params: QuantParams, inputs: tuple[str, ...], outs: list[str]) -> int:
    """--shared-palette: one quantize_many() over all readable inputs, then lossless saves."""
    failed = False
    images, kept = [], []
    progress = Progress(len(inputs))
    for s, d in zip(inputs, outs):
        try:
            _check_output(d, inputs, args.force)
            images.append(_prepare(_read_input(s)))
            kept.append((s, d))
        except FileError as e:
            progress.message(f"gcp: {s}: {e}")
            failed = True
    if not images:
        return EXIT_FAILED
    try:
        enc = encode(images, params)
    except (ValueError, TypeError, OSError) as e:
        progress.message(f"gcp: shared palette over {len(images)} files failed: {e}")
        return EXIT_FAILED
    if enc.warning:
        progress.message(f"gcp: shared palette: warning: {enc.warning}")
    for (s, d), blob, im in zip(kept, enc.blobs, images):
        try:
            write_atomic(d, blob, args.force)
            quality = psnr(im, Image.open(io.BytesIO(blob))) if args.verbose else None
            r = Result(s, d, True, "", _input_size(s, None), len(blob), im.size[0] * im.size[1], enc.k, enc.quality,
                       psnr=quality)
            if args.verbose:
                progress.message(_report_line(r))
        except (FileError, OSError) as e:
            progress.message(f"gcp: {s}: {e}")
            failed = True
        progress.step(os.path.basename(s))
    progress.close()
    return EXIT_FAILED if failed else EXIT_OK


_FORMAT_EXT = {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def _format_for(name: str) -> tuple[str, str]:
    """(Pillow format, file extension) for a --format value or an extension."""
    name = name.strip().lstrip(".")
    ext_map = Image.registered_extensions()
    fmt = ext_map.get("." + name.lower())
    if fmt is None and name.upper() in Image.SAVE:
        fmt = name.upper()
    if fmt is None or fmt not in Image.SAVE:
        writable = sorted({f.lower() for f in Image.SAVE})
        raise UsageError(f"unknown or read-only --format {name!r}; choose from: {', '.join(writable)}")
    ext = _FORMAT_EXT.get(fmt) or next((e for e, f in ext_map.items() if f == fmt), "." + fmt.lower())
    return fmt, ext


def cmd_decompress(args: argparse.Namespace) -> int:
    if args.format is not None:
        fmt, ext = _format_for(args.format)
    elif args.output and args.output != "-" and len(args.inputs) == 1 and not os.path.isdir(args.output) \
            and os.path.splitext(args.output)[1]:
        try:
            fmt, ext = _format_for(os.path.splitext(args.output)[1])
        except UsageError:
            fmt, ext = "PNG", ".png"
    else:
        fmt, ext = "PNG", ".png"
    outs = plan_outputs(args.inputs, args.output, ext)
    _refuse_tty(outs)
    inputs = tuple(args.inputs)
    stdin = _stdin_bytes(inputs)
    tasks = [(s, d, fmt, args.force, inputs, stdin) for s, d in zip(inputs, outs)]
    results = _run_batch(decompress_one, tasks, args.jobs, Progress(len(tasks)), args.verbose)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _gcp_coding(path: str, stdin_data: bytes | None, tiles: list) -> str | None:
    """Name of the index-map coding of a .gcp file: the payload's method and flags (SPEC section 6)."""
    if not tiles:
        return None
    offset = tiles[0][2]
    try:
        if path == "-":
            b = (stdin_data or b"")[offset : offset + 2]
        else:
            with open(path, "rb") as f:
                f.seek(offset)
                b = f.read(2)
    except OSError:
        return None
    if not b:
        return None
    from pillow_gcp import payload

    return payload.coding_name(b)


def image_info(path: str, stdin_data: bytes | None = None) -> dict:
    """The facts ``gcp info`` prints for one file (FileError if it cannot be read)."""
    tiles: list = []
    im = _read_input(path, stdin_data, tiles)
    nbytes = _input_size(path, stdin_data)
    w, h = im.size
    d: dict = {"file": _display(path), "format": im.format, "width": w, "height": h, "mode": im.mode}
    if im.mode in ("P", "PA") and im.palette is not None:
        used = im.getcolors(256)
        d["palette_size"] = len(im.getpalette("RGB") or []) // 3
        if used is not None:
            d["colors_used"] = len(used)
    if im.format == "GCP":
        coding = im.info.get("coding") or im.info.get("gcp_coding") or _gcp_coding(path, stdin_data, tiles)
        if coding:
            d["coding"] = coding
    d["alpha"] = _has_alpha(im)
    d["bytes"] = nbytes
    d["bits_per_pixel"] = round(8.0 * nbytes / (w * h), 4) if w * h else None
    for key, value in im.info.items():
        if key in d or key in ("transparency",):
            continue
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif not isinstance(value, (str, int, float, bool, type(None), list, tuple)):
            value = str(value)
        d.setdefault(key, value)
    return d


def cmd_info(args: argparse.Namespace) -> int:
    status = EXIT_OK
    stdin = _stdin_bytes(args.inputs)
    records = []
    for path in args.inputs:
        try:
            records.append(image_info(path, stdin))
        except FileError as e:
            _warn(f"gcp: {_display(path)}: {e}")
            status = EXIT_FAILED
    if args.json:
        print(json.dumps(records if len(args.inputs) > 1 else (records[0] if records else None), indent=2))
        return status
    shown = {"file", "format", "width", "height", "mode", "palette_size", "colors_used", "alpha",
             "coding", "bytes", "bits_per_pixel"}
    for i, d in enumerate(records):
        if i:
            print()
        rows = [("format", d["format"]), ("dimensions", f"{d['width']}x{d['height']}"), ("mode", d["mode"])]
        if "palette_size" in d:
            used = f" ({d['colors_used']} used)" if "colors_used" in d else ""
            rows.append(("palette", f"{d['palette_size']} colours{used}"))
        rows.append(("alpha", "yes" if d["alpha"] else "no"))
        if "coding" in d:
            rows.append(("coding", d["coding"]))
        rows.append(("bytes", d["bytes"]))
        if d["bits_per_pixel"] is not None:
            rows.append(("bits per pixel", f"{d['bits_per_pixel']:.4f}"))
        rows += [(k, v) for k, v in d.items() if k not in shown]
        width = max(len(k) for k, _ in rows) + 2
        print(f"{d['file']}:")
        for k, v in rows:
            print(f"  {k + ':':<{width}}{v}")
    return status


def compare_picture(
    original: Image.Image, decoded: Image.Image, amplify: float, caption: str = ".gcp"
) -> Image.Image:
    """Side-by-side RGB picture: original | decoded | |error| x amplify (with labels).

    The error map is the mean absolute R, G, B difference (averaged over the
    black and white composites for images with alpha); images with alpha are
    shown over a grey checkerboard.
    """
    pairs = _pair(original, decoded)
    err = np.mean([np.abs(x - y).mean(axis=-1) for x, y in pairs], axis=0)
    err = np.clip(err * amplify + 0.5, 0, 255).astype(np.uint8)
    w, h = original.size
    if len(pairs) == 2:
        yy, xx = np.mgrid[0:h, 0:w]
        checker = np.where(((yy // 8) + (xx // 8)) % 2 == 0, 204, 153).astype(np.uint8)
        board = Image.fromarray(np.repeat(checker[..., None], 3, axis=-1), "RGB").convert("RGBA")
        views = [Image.alpha_composite(board, im.convert("RGBA")).convert("RGB") for im in (original, decoded)]
    else:
        views = [original.convert("RGB"), decoded.convert("RGB")]
    font_size = max(10, min(32, w // 24))
    try:
        font = ImageFont.load_default(size=font_size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        font = ImageFont.load_default()
    label_h = font_size + 6
    sheet = Image.new("RGB", (3 * w + 2 * 4, h + label_h), (255, 255, 255))
    panels = [*views, Image.fromarray(err, "L").convert("RGB")]
    labels = ["original", caption, f"|error| x{amplify:g}"]
    draw = ImageDraw.Draw(sheet)
    for i, (p, t) in enumerate(zip(panels, labels)):
        x = i * (w + 4)
        sheet.paste(p, (x, label_h))
        draw.text((x + 2, 2), t, fill=(0, 0, 0), font=font)
    return sheet


def cmd_compare(args: argparse.Namespace) -> int:
    src = args.input
    if args.against is not None and (args.k is not None or args.target_psnr or args.target_de):
        raise UsageError("--against compares an existing .gcp file: -k and quality targets do not apply")
    params = _params(args)
    out = args.output
    if out is None:
        out = (os.path.splitext(src)[0] if src != "-" else "compare") + ".compare.png"
    if out == "-":
        _refuse_tty([out])
    if args.against is None:
        _validate_params(params)
    try:
        _check_output(out, [src] + ([args.against] if args.against else []), args.force)
        stdin = _stdin_bytes([src])
        original = _prepare(_read_input(src, stdin))
        if args.against is not None:
            with open(args.against, "rb") as f:
                blob = f.read()
            decoded = _read_input(args.against)
            k = None
        else:
            try:
                enc = encode([original], params)
            except (ValueError, TypeError) as e:
                raise FileError(str(e)) from None
            if enc.warning:
                _warn(f"gcp: {_display(src)}: warning: {enc.warning}")
            blob, k = enc.blobs[0], enc.k
            decoded = _read_input("-", blob)
        if decoded.size != original.size:
            raise FileError(f"{args.against} is {decoded.size[0]}x{decoded.size[1]}, "
                            f"{src} is {original.size[0]}x{original.size[1]}")
        p = psnr(original, decoded)
        de = mean_delta_e(original, decoded)
        w, h = original.size
        caption = f".gcp{f' k={k}' if k is not None else ''}: {8.0 * len(blob) / (w * h):.3f} bpp, {p:.2f} dB"
        pic = compare_picture(original, decoded, args.amplify, caption)
        buf = io.BytesIO()
        pic.save(buf, "PNG")
        write_atomic(out, buf.getvalue(), args.force)
    except FileError as e:
        _warn(f"gcp: {_display(src)}: {e}")
        return EXIT_FAILED
    except OSError as e:
        _warn(f"gcp: {_display(src)}: {type(e).__name__}: {e}")
        return EXIT_FAILED
    w, h = original.size
    stream = sys.stderr if out == "-" else sys.stdout
    in_bytes = _input_size(src, stdin)
    print(f"{_display(src)}: {w}x{h}", file=stream)
    if k is not None:
        print(f"  k:              {k}", file=stream)
    if in_bytes:
        print(f"  original bytes: {in_bytes} ({8.0 * in_bytes / (w * h):.3f} bpp)", file=stream)
    print(f"  .gcp bytes:     {len(blob)} ({8.0 * len(blob) / (w * h):.3f} bpp)", file=stream)
    print(f"  PSNR:           {p:.2f} dB", file=stream)
    print(f"  mean deltaE:    {de:.2f} (OKLab x100)", file=stream)
    print(f"  picture:        {'<stdout>' if out == '-' else out}", file=stream)
    return EXIT_OK


# --------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _level_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 9:
        raise argparse.ArgumentTypeError(f"must be an integer 0..9, got {text!r}")
    return value


def _add_quant_options(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("quantizer options")
    q.add_argument("-k", "--colors", dest="k", type=_k_type, metavar="K",
                   help=f"palette size, {K_MIN}..{K_MAX} (default {DEFAULT_K}, as Image.save(..., 'GCP') "
                        "without k)")
    q.add_argument("--algo", choices=ALGOS, default="kmeans",
                   help="clustering algorithm: kmeans (fast, mean colours) or kmedoids "
                        "(palette colours are colours of the image; robust to noise) (default kmeans)")
    q.add_argument("--metric", choices=METRICS, default="euclidean",
                   help="colour distance for clustering (K-medoids) and for mapping pixels to the palette "
                        "(default euclidean)")
    q.add_argument("--space", choices=SPACES, default="rgb",
                   help="colour space the clustering works in: rgb, or oklab (perceptual) (default rgb)")
    q.add_argument("--dither", action="store_true",
                   help="Floyd-Steinberg error diffusion when mapping pixels to the palette")
    q.add_argument("--seed", type=int, default=0, metavar="N",
                   help="random seed; equal seeds give byte-identical output (default 0)")
    q.add_argument("--fixed-color", dest="fixed_color", type=_colors, action="append", metavar="RRGGBB",
                   help="a colour that must be in the palette, hex RRGGBB; repeat the option or give a "
                        "comma-separated list (e.g. --fixed-color ffffff,000000)")
    q.add_argument("--palette", metavar="FILE|RRGGBB,...",
                   help="map onto exactly this palette, no fitting: a palette image file (a .gcp, PNG-8, "
                        "GIF...) or a comma-separated list of hex colours; nearest colour under --metric")
    c = p.add_argument_group("coding options")
    c.add_argument("--level", type=_level_type, metavar="N",
                   help="payload effort 0..9 (default 6): 0 stored, 1-3 zlib, 4-5 runs only, 6 the smallest "
                        "of the codings, in bounded time on images over 1 megapixel, 7-8 slower trials "
                        "there, 9 every coding on the whole image (slow on big images)")
    t = p.add_argument_group("quality target (instead of -k)")
    t.add_argument("--target-psnr", type=_positive_float, metavar="DB",
                   help="pick the smallest k whose PSNR is at least DB (k meets it, k/2 does not)")
    t.add_argument("--target-de", type=_positive_float, metavar="DE",
                   help="pick the smallest k whose mean OKLab deltaE x100 is at most DE "
                        "(about 1 = just noticeable)")


def _wrap(text: str) -> str:
    """Fill a description for the raw formatter (keeps the epilog's line breaks)."""
    return textwrap.fill(text, 79)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``gcp`` command."""
    parser = _Parser(
        prog="gcp",
        description="Compress images to the .gcp palette format (K-means / K-medoids colour quantization), "
                    "decode them, inspect and compare them.",
        epilog="Exit status: 0 all files done, 1 some files failed, 2 usage error. "
               "Run 'gcp COMMAND --help' for the options of a command.",
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("pillow-gcp")
    except PackageNotFoundError:  # running from a source tree
        import pillow_gcp

        ver = getattr(pillow_gcp, "__version__", "unknown")
    parser.add_argument("--version", action="version", version=f"%(prog)s {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    common_out = dict(metavar="OUT")

    c = sub.add_parser(
        "compress", help="quantize images and write .gcp files",
        description=_wrap("Quantize each input to a palette of K colours and write it as .gcp. "
                    "The output is the input's name with .gcp, beside the input, unless -o is given."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  gcp compress photo.png -k 32                # -> photo.gcp\n"
               "  gcp compress *.png -o out/ -j 2             # many files into out/, 2 processes\n"
               "  gcp compress - < in.png > out.gcp           # stdin -> stdout\n"
               "  gcp compress photo.png --target-psnr 35 -v  # smallest k reaching 35 dB\n\n"
               "An existing output is refused without --force; an input is never overwritten.\n"
               "Exit status: 0 ok, 1 some files failed (named on stderr), 2 usage error.",
    )
    c.add_argument("inputs", nargs="+", metavar="IN", help="input images (any format Pillow reads); - for stdin")
    c.add_argument("-o", "--output", help="output file (one input; - for stdout) or folder (several inputs; "
                                          "created if needed)", **common_out)
    c.add_argument("-f", "--force", action="store_true", help="overwrite existing output files (inputs never)")
    c.add_argument("-j", "--jobs", type=_jobs_type, default=1, metavar="JOBS",
                   help="number of processes for several inputs (0 = one per CPU; default 1)")
    c.add_argument("--shared-palette", action="store_true",
                   help="with several inputs: quantize them together to ONE palette (quantize_many) "
                        "and store each with it")
    c.add_argument("--strip", action="store_true",
                   help="drop metadata (ICC profile, EXIF, XMP, comment) instead of copying it into the .gcp")
    c.add_argument("-v", "--verbose", action="store_true", help="print sizes, bpp and chosen k per file on stderr")
    _add_quant_options(c)
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser(
        "decompress", help="decode .gcp files to PNG (or another format)",
        description=_wrap("Decode .gcp files and save them in a standard format, beside the input unless -o is "
                          "given."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  gcp decompress photo.gcp                 # -> photo.png\n"
               "  gcp decompress *.gcp -o png/ -j 2\n"
               "  gcp decompress photo.gcp --format webp   # -> photo.webp\n"
               "  gcp decompress - < photo.gcp > photo.png",
    )
    d.add_argument("inputs", nargs="+", metavar="IN", help=".gcp files; - for stdin")
    d.add_argument("-o", "--output", help="output file (one input; - for stdout) or folder (several inputs)",
                   **common_out)
    d.add_argument("--format", metavar="FMT",
                   help="output format, any format Pillow writes (png, webp, bmp, tiff, gif, ...); "
                        "default png, or taken from the -o file's extension")
    d.add_argument("-f", "--force", action="store_true", help="overwrite existing output files (inputs never)")
    d.add_argument("-j", "--jobs", type=_jobs_type, default=1, metavar="JOBS",
                   help="number of processes for several inputs (0 = one per CPU; default 1)")
    d.add_argument("-v", "--verbose", action="store_true", help="print sizes per file on stderr")
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser(
        "info", help="show dimensions, palette, alpha, coding, size and bits per pixel",
        description=_wrap("Describe image files (.gcp or any format Pillow reads): dimensions, mode, palette size, "
                          "alpha, payload coding, bytes and bits per pixel."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  gcp info photo.gcp\n  gcp info --json *.gcp",
    )
    i.add_argument("inputs", nargs="+", metavar="FILE", help="files to describe; - for stdin")
    i.add_argument("--json", action="store_true", help="print JSON (an object, or a list for several files)")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser(
        "compare", help="compress an image and show original | .gcp | error side by side, with PSNR and deltaE",
        description=_wrap("Compress IN with the given options (or take an existing .gcp with --against), write a "
                    "side-by-side picture (original | decoded .gcp | amplified error map) and print sizes, "
                    "PSNR (dB, over R,G,B) and mean deltaE (OKLab x100)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  gcp compare photo.png -k 16 -o report.png\n"
               "  gcp compare photo.png --target-psnr 32 --algo kmedoids\n"
               "  gcp compare photo.png --against photo.gcp",
    )
    m.add_argument("input", metavar="IN", help="original image; - for stdin")
    m.add_argument("-o", "--output", metavar="PNG",
                   help="the side-by-side picture (default: IN's name + .compare.png; - for stdout)")
    m.add_argument("--against", metavar="FILE.gcp", help="compare with this existing .gcp instead of compressing")
    m.add_argument("--amplify", type=_positive_float, default=8.0, metavar="X",
                   help="error map brightness factor (default 8)")
    m.add_argument("-f", "--force", action="store_true", help="overwrite an existing picture")
    _add_quant_options(m)
    m.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gcp`` command line; returns the exit status (0, 1 or 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        _warn(f"gcp: error: {e}")
        return EXIT_USAGE
    except SystemExit as e:  # --help / --version
        return int(e.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        _warn(f"gcp: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn("gcp: interrupted")
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head)
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_FAILED
    except OSError as e:  # e.g. an output folder that cannot be created
        _warn(f"gcp: {e}")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
