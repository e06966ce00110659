"""Command-line interface: ``gcp compress | decompress | info | compare``.

A thin shell over the library: parsing arguments, naming files, writing them safely and reporting.
Images are converted by :mod:`pillow_gcp.convert` (which goes through ``Image.save`` and
:mod:`pillow_gcp.adapter`), measured by :mod:`pillow_gcp.metrics`, and the quantizer options are
validated by :func:`pillow_gcp.quantizers.check_params`. ``gcp compress IN -o OUT.gcp [options]``
writes the same bytes as ``Image.open(IN).save(OUT, "GCP", **options, **adapter.all_metadata(im))``.

The console script ``gcp`` and ``python -m pillow_gcp`` both call :func:`main`; its exit status is
listed in :data:`EXIT_STATUS` (and in ``gcp --help`` and docs/cli.md).
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from PIL import Image

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LARGER = 98  # as pngquant's --skip-if-larger
EXIT_QUALITY = 99  # as pngquant's --quality min-max
EXIT_INTERRUPTED = 130

_COMMANDS = ("compress", "decompress", "info", "compare")

#: the exit statuses: (code, meaning, the commands that can return it)
_EXITS = (
    (EXIT_OK, "every file was written", ("compress", "decompress", "compare")),
    (EXIT_OK, "every file was read", ("info",)),
    (EXIT_FAILED, "some file failed (each is named on stderr; the other files were still done)", _COMMANDS),
    (EXIT_USAGE, "usage error (bad option or combination): nothing was written", _COMMANDS),
    (EXIT_LARGER, "--skip-if-larger: some output would have been larger than its input and was not written",
     ("compress",)),
    (EXIT_QUALITY, "--min-psnr: some image missed the floor (at -k, or at the k a target chose, at most 256)\n"
                   "       and was not written", ("compress", "compare")),
    (EXIT_INTERRUPTED, "interrupted", _COMMANDS),
)


def _exit_status(command: str) -> str:
    """The exit statuses ``command`` can return, as its ``--help`` lists them (compress's are all of
    them: :data:`EXIT_STATUS`, in ``gcp --help``)."""
    lines = ["exit status:"] + [f"  {code:<4} {text}" for code, text, commands in _EXITS if command in commands]
    if command == "compress":  # several files, several outcomes
        lines.append("With several problems in one run the first of 1, 99, 98 in this order is returned.")
    return "\n".join(lines)


EXIT_STATUS = _exit_status("compress")

#: the program's name in usage lines and messages: "pillow-gcp" when run by that console script (Debian's
#: unrelated gcp may shadow "gcp" on the PATH), else "gcp"; set by :func:`run`
_PROG = "gcp"

_SEPARATORS = tuple({"/", os.sep, os.altsep or "/"})
_WINDOWS_MAX_WORKERS = 61  # ProcessPoolExecutor's limit on Windows


class UsageError(Exception):
    """A problem with the command line itself (exit status 2)."""


class FileError(Exception):
    """A problem with one file, described in one line without the file name (exit status 1)."""


# --------------------------------------------------------------------------- messages


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _display(path: str) -> str:
    return "<stdin>" if path == "-" else path


def describe(e: BaseException) -> str:
    """One line saying what is wrong, without tracebacks, object reprs or temporary names."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, FileError):
        return str(e)
    if isinstance(e, UnidentifiedImageError):
        return "not an image file Pillow can read"
    if isinstance(e, Image.DecompressionBombError):
        return f"refused: {e}"
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    if isinstance(e, (OSError, ValueError, TypeError, SyntaxError, EOFError)):
        text = str(e) or type(e).__name__
        return text.splitlines()[0]
    return f"internal error: {type(e).__name__}: {e}"


# --------------------------------------------------------------------------- files


def _same_file(a: str, b: str) -> bool:
    if a == "-" or b == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(out: str, inputs: Sequence[str], force: bool) -> None:
    """FileError if writing ``out`` would clobber an input or an existing file, or cannot work."""
    if out == "-":
        return
    for i in inputs:
        if _same_file(out, i):
            raise FileError(f"refusing to overwrite input file {out}")
    try:
        st = os.stat(out)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise FileError(f"output {out} is a directory")
    if st is not None and stat.S_ISBLK(st.st_mode) and not force:
        raise FileError(f"output {out} is a block device (use --force to write to it)")
    if st is not None and stat.S_ISREG(st.st_mode) and not force:
        raise FileError(f"output {out} exists (use --force to overwrite)")
    if st is None and os.path.lexists(out) and not force:
        raise FileError(f"output {out} exists as a broken link (use --force to write through it)")
    _check_folder(out, os.path.dirname(os.path.abspath(os.path.realpath(out))))


def _check_folder(out: str, folder: str) -> None:
    if not os.path.isdir(folder):
        shown = os.path.dirname(out) or folder
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise FileError(f"cannot write {out}: {shown} {what}")


def _write_special(path: str, mode: int, data: bytes) -> None:
    """Write to a FIFO, device or socket directly (it is never replaced)."""
    if stat.S_ISSOCK(mode):
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(data)
        return
    fd = os.open(path, os.O_WRONLY)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by a regular file meanwhile: refuse to truncate
            raise FileError(f"output {path} changed while being written")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_target(path: str, data: bytes, force: bool, force_hint: str = "use --force to overwrite") -> None:
    """Write ``data`` to ``path`` safely, whatever ``path`` is (``force_hint``: how the caller's user
    allows replacing a file, for the error that refuses it).

    * ``-``: standard output.
    * A FIFO, character or block device or socket: written to directly, never renamed over.
    * A regular file (or none yet): written to a temporary file beside it, then renamed onto it, so
      a failure leaves no partial output; an existing file keeps its permission bits, and a symbolic
      link keeps pointing where it did (its target is replaced). Without ``force`` an existing file
      is never replaced, even when it appears meanwhile.
    """
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        st: Optional[os.stat_result] = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise FileError(f"cannot write {path}: {describe(e)}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise FileError(f"output {path} is a directory")
        try:
            _write_special(path, st.st_mode, data)
        except OSError as e:
            raise FileError(f"cannot write {path}: {describe(e)}") from None
        return
    target = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(os.path.abspath(target))
    _check_folder(path, folder)
    tmp = fd = None
    for _ in range(100):
        name = os.path.join(folder, f".{os.path.basename(target)}.{os.urandom(4).hex()}.tmp")
        try:  # 0o666 minus the umask, as a plain open() would give a new file
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            tmp = name
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise FileError(f"cannot write {path}: {describe(e)}") from None
    if tmp is None or fd is None:
        raise FileError(f"cannot write {path}: no temporary name free in {folder}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if hasattr(os, "chown") and hasattr(os, "geteuid") and os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        if force:
            os.replace(tmp, target)
        else:
            _rename_no_clobber(tmp, target, path, force_hint)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise FileError(f"cannot write {path}: {describe(e)}") from None
        raise


def _rename_no_clobber(tmp: str, target: str, shown: str, force_hint: str) -> None:
    """Move ``tmp`` to ``target`` unless ``target`` exists (atomically where hard links work)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileError(f"output {shown} exists ({force_hint})") from None
    except OSError:  # no hard links here (some network or FAT file systems)
        if os.path.lexists(target):
            raise FileError(f"output {shown} exists ({force_hint})") from None
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


def _input_size(path: str, stdin_data: Optional[bytes]) -> int:
    if path == "-":
        return len(stdin_data or b"")
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read_image(path: str, stdin_data: Optional[bytes] = None, tiles: Optional[List[Any]] = None) -> "Image.Image":
    """The fully decoded image in ``path`` (``-``: the stdin bytes); FileError saying what is wrong.

    If ``tiles`` is a list, the image's tile descriptors (taken before decoding) are added to it.
    """
    import io

    from PIL import Image

    try:
        if path == "-":
            if not stdin_data:
                raise FileError("empty input (nothing on stdin)")
            im = Image.open(io.BytesIO(stdin_data))
        else:
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                raise FileError("empty file")
            im = Image.open(path)
        if tiles is not None:
            tiles.extend(im.tile)
        im.load()
        return im
    except (FileError, BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise FileError(f"cannot read: {describe(e)}" if not isinstance(e, OSError) or e.strerror is None
                        else describe(e)) from None


def plan_outputs(inputs: Sequence[str], out: Optional[str], suffix: str) -> List[str]:
    """The output path of each input; UsageError if ambiguous.

    One input: ``out`` is the file (``-`` = stdout), or a folder if it exists as one or ends with
    ``/``; without ``out``, the input's name with ``suffix`` beside it (stdout for stdin). Several
    inputs: ``out`` must be a folder (existing, ending with ``/``, or a new name without an
    extension: created); two inputs that would get the same output name are a usage error.
    """
    if not inputs:
        raise UsageError("no input files")
    if "-" in inputs and len(inputs) > 1:
        raise UsageError("'-' (stdin) can only be used with a single input")

    def stem(s: str) -> str:
        return os.path.splitext(os.path.basename(s))[0]

    if len(inputs) == 1:
        src = inputs[0]
        if out is None:
            return ["-"] if src == "-" else [os.path.splitext(src)[0] + suffix]
        if out != "-" and (os.path.isdir(out) or out.endswith(_SEPARATORS)):
            if src == "-":
                raise UsageError("with stdin input, -o must name a file, not a folder")
            _make_folder(out)
            return [os.path.join(out, stem(src) + suffix)]
        return [out]
    if out == "-":
        raise UsageError("-o - (stdout) can only be used with a single input")
    if out is not None:
        if not os.path.isdir(out):
            if os.path.lexists(out):
                raise UsageError(f"-o {out}: with several inputs -o must be a folder, and {out} is a file")
            if os.path.splitext(out.rstrip("/" + os.sep))[1] and not out.endswith(_SEPARATORS):
                raise UsageError(f"-o {out}: with several inputs -o must be a folder "
                                 f"(end it with / to create a folder of that name)")
        outs = [os.path.join(out, stem(s) + suffix) for s in inputs]
    else:
        outs = [os.path.splitext(s)[0] + suffix for s in inputs]
    seen: Dict[str, str] = {}
    for s, o in zip(inputs, outs):
        key = os.path.normcase(os.path.abspath(o))
        if key in seen:
            raise UsageError(f"{seen[key]} and {s} would both be written to {o}")
        seen[key] = s
    if out is not None:
        _make_folder(out)
    return outs


def _make_folder(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {path}: {describe(e)}") from None


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line ``[done/total] name`` display on stderr, only when it is a terminal."""

    def __init__(self, total: int, enabled: Optional[bool] = None) -> None:
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


# --------------------------------------------------------------------------- per-file work
# (module level so that ProcessPoolExecutor can pickle it)


@dataclass(frozen=True)
class Options:
    """What ``compress`` does to each file (picklable)."""

    format: str = "GCP"
    params: Tuple[Tuple[str, Any], ...] = ()  # quantizer arguments of Image.save, as given
    level: Optional[int] = None
    strip: bool = False
    target_psnr: Optional[float] = None
    target_de: Optional[float] = None
    min_psnr: Optional[float] = None
    skip_if_larger: bool = False
    force: bool = False
    verbose: bool = False

    def convert_kwargs(self) -> Dict[str, Any]:
        return dict(self.params, format=self.format, strip=self.strip, level=self.level,
                    target_psnr=self.target_psnr, target_de=self.target_de, min_psnr=self.min_psnr,
                    measure=self.verbose)


@dataclass
class Result:
    src: str
    dst: str
    status: str = "ok"  # ok | failed | larger | quality
    message: str = ""
    in_bytes: int = 0
    out_bytes: int = 0
    pixels: int = 0
    eight_bit: bool = False  # the input's samples were reduced to 8 bits (16-bit, I, F): PSNR is of that image
    k: Optional[int] = None
    colors: Optional[int] = None
    psnr: Optional[float] = None
    quality: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _finish(r: Result, c: Any, opts: Options, data_len: int, write: Callable[[], None]) -> Result:
    """Fill ``r`` from a Compressed ``c``; write unless --skip-if-larger refuses."""
    r.out_bytes, r.k, r.colors, r.psnr = data_len, c.k, c.colors, c.psnr
    if c.quality is not None:
        r.quality = f"PSNR {c.quality:.2f} dB" if opts.target_psnr is not None else \
            f"deltaE {c.quality:.2f} (OKLab x100)"
    if c.warning:
        r.warnings.append(c.warning)
    if opts.skip_if_larger and r.in_bytes and data_len > r.in_bytes:
        r.status = "larger"
        r.message = (f"not written: {data_len} bytes would be larger than the input's {r.in_bytes} "
                     f"(--skip-if-larger)")
        return r
    write()
    return r


def _quality_message(e: Any) -> str:
    return f"not written: PSNR {e.psnr:.2f} dB at k={e.k} is below --min-psnr {e.floor:g}"


def compress_one(src: str, dst: str, opts: Options, all_inputs: Tuple[str, ...],
                 stdin_data: Optional[bytes] = None, read: Optional[Callable[[], "Image.Image"]] = None) -> Result:
    """Compress one file; never raises for a problem with it (see Result.status).

    ``read``: gives the image of ``src`` (as :func:`read_image` does) when it has been read already.
    """
    from . import adapter
    from .convert import QualityError, compress_image

    r = Result(src, dst, in_bytes=_input_size(src, stdin_data))
    try:
        check_output(dst, all_inputs, opts.force)
        im = read() if read is not None else read_image(src, stdin_data)
        r.pixels = im.size[0] * im.size[1]
        r.eight_bit = adapter.reduced_to_8_bits(im)
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            r.warnings.append(f"{frames} frames, only the first was compressed")
        c = compress_image(im, **opts.convert_kwargs())
        return _finish(r, c, opts, len(c.data), lambda: write_target(dst, c.data, opts.force))
    except QualityError as e:
        r.status, r.message = "quality", _quality_message(e)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as e:
        r.status, r.message = "failed", describe(e)
    return r


def decompress_one(src: str, dst: str, fmt: str, force: bool, any_input: bool, all_inputs: Tuple[str, ...],
                   stdin_data: Optional[bytes] = None) -> Result:
    """Decode one .gcp file to format ``fmt``; never raises for a problem with it."""
    from .convert import NotGCPError, decompress_image

    r = Result(src, dst, in_bytes=_input_size(src, stdin_data))
    try:
        check_output(dst, all_inputs, force)
        im = read_image(src, stdin_data)
        r.pixels = im.size[0] * im.size[1]
        try:
            data = decompress_image(im, fmt, any_input=any_input)
        except NotGCPError as e:
            raise FileError(f"{e}; --any-input converts other images too") from None
        r.out_bytes = len(data)
        write_target(dst, data, force)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as e:
        r.status, r.message = "failed", describe(e)
    return r


# --------------------------------------------------------------------------- batches


def _workers(jobs: int, tasks: int) -> int:
    n = min(jobs, tasks)
    return min(n, _WINDOWS_MAX_WORKERS) if sys.platform == "win32" else n


def _worker_threads(n: int) -> None:
    """A ``-j`` worker process's start: the package's thread cap (quantize's searches, a .gcp's
    decode) set to ``n``, the worker's share of the parent's threads, so that workers on every core
    do not each start helpers on the same cores."""
    from . import _threads

    _threads.set_threads(n)


def _report_line(r: Result) -> str:
    parts = [f"{_display(r.src)} -> {'<stdout>' if r.dst == '-' else r.dst}:"]
    parts.append(f"{r.in_bytes} -> {r.out_bytes} bytes" if r.in_bytes else f"{r.out_bytes} bytes")
    if r.pixels:
        parts.append(f"({8.0 * r.out_bytes / r.pixels:.3f} bpp)")
    if r.colors is not None:
        parts.append(f"k={r.colors}")
    elif r.k is not None:
        parts.append(f"k={r.k}")
    if r.psnr is not None:
        parts.append("lossless" if r.psnr == float("inf") else f"PSNR {r.psnr:.2f} dB")
        if r.eight_bit:
            parts.append("(of the image reduced to 8 bits per sample)")
    if r.quality is not None:
        parts.append(f"(target measure: {r.quality})")
    return " ".join(parts)


def _run_batch(fn: Callable[..., Result], tasks: List[Tuple[Any, ...]], jobs: int,
               verbose: bool = False) -> List[Result]:
    """Run ``fn(*task)`` for every task on ``jobs`` processes; report each result on stderr as it
    arrives (problems and warnings always, a size line with ``verbose``); results in task order."""
    progress = Progress(len(tasks))
    results: List[Optional[Result]] = [None] * len(tasks)

    def report(i: int, r: Result) -> None:
        results[i] = r
        progress.step(os.path.basename(_display(r.src)))
        if not r.ok:
            progress.message(f"{_PROG}: {_display(r.src)}: {r.message}")
            return
        for w in r.warnings:
            progress.message(f"{_PROG}: {_display(r.src)}: warning: {w}")
        if verbose:
            progress.message(_report_line(r))

    workers = _workers(jobs, len(tasks))
    if workers <= 1:
        for i, t in enumerate(tasks):
            report(i, fn(*t))
    else:
        import concurrent.futures

        from . import _threads

        share = max(1, min(_threads.threads(), _threads.cpus()) // workers)
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, initializer=_worker_threads,
                                                    initargs=(share,)) as ex:
            # One task per worker in flight, the next submitted as one ends: on Ctrl-C, or a SIGINT to this
            # process alone, the files begun are finished (whole) and no other starts (the executor queues
            # submitted tasks where cancelling cannot reach them).
            todo = iter(enumerate(tasks))
            running: Dict[Any, int] = {}

            def submit() -> None:
                for i, t in todo:
                    try:
                        running[ex.submit(fn, *t)] = i
                    except concurrent.futures.BrokenExecutor as e:  # a worker died: the pool takes no more
                        report(i, Result(t[0], t[1], "failed", f"worker failed: {describe(e)}"))
                        continue
                    return

            for _ in range(workers):
                submit()
            while running:
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for f in done:
                    i = running.pop(f)
                    try:
                        r = f.result()
                    except Exception as e:  # a worker died (e.g. killed for memory)
                        r = Result(tasks[i][0], tasks[i][1], "failed", f"worker failed: {describe(e)}")
                    submit()
                    report(i, r)
    progress.close()
    return [r for r in results if r is not None]


def _status(results: Sequence[Result]) -> int:
    statuses = {r.status for r in results}
    for status, code in (("failed", EXIT_FAILED), ("quality", EXIT_QUALITY), ("larger", EXIT_LARGER)):
        if status in statuses:
            return code
    return EXIT_OK


def _stdin_bytes(inputs: Sequence[str]) -> Optional[bytes]:
    return sys.stdin.buffer.read() if list(inputs) == ["-"] else None


def _refuse_tty(outs: Sequence[str]) -> None:
    if "-" in outs and sys.stdout.isatty():
        raise UsageError("refusing to write image data to a terminal; use -o FILE or redirect stdout")


# --------------------------------------------------------------------------- argument types


def _parse_color(text: str) -> Tuple[int, ...]:
    """RRGGBB or RRGGBBAA hex (a leading # allowed) -> a 3- or 4-tuple of ints. No short forms: CSS's
    4-digit one would read ``ff00`` as a transparent yellow."""
    t = text.strip()
    t = t[1:] if t.startswith("#") else t
    if len(t) not in (6, 8) or any(ch not in "0123456789abcdefABCDEF" for ch in t):
        raise argparse.ArgumentTypeError(f"invalid colour {text!r}: expected hex RRGGBB or RRGGBBAA, e.g. ff8000")
    return tuple(int(t[i:i + 2], 16) for i in range(0, len(t), 2))


def _colors(text: str) -> List[Tuple[int, ...]]:
    return [_parse_color(t) for t in text.split(",") if t.strip()]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _ranged(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer in low..high (no upper bound when ``high`` is None)."""
    def parse(text: str) -> int:
        value = _int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {text}" if high is not None
                                             else f"must be an integer >= {low}, got {text}")
        return value
    parse.__name__ = "integer"
    return parse


def _jobs_type(text: str) -> int:
    j = _int(text)
    if j < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 = one per usable CPU)")
    if j == 0:
        try:
            j = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            j = os.cpu_count() or 1
    return j


def _positive_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _palette_arg(spec: str) -> Tuple[Tuple[int, ...], ...]:
    """--palette: a palette image file (.gcp, PNG-8, GIF...) or a comma-separated list of hex colours."""
    from .quantizers import parse_palette

    if os.path.exists(spec):
        try:
            from PIL import Image

            with Image.open(spec) as im:
                colours = parse_palette(im)
        except Exception as e:
            raise UsageError(f"--palette {spec}: {describe(e)}") from None
    else:
        try:
            colours = parse_palette(_colors(spec))
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--palette: {e} (and no file of that name)") from None
        except (ValueError, TypeError) as e:
            raise UsageError(f"--palette: {e}") from None
    return tuple(tuple(int(v) for v in c) for c in colours)


def _quant_params(args: argparse.Namespace) -> Dict[str, Any]:
    """The Image.save quantizer arguments the options give (only those given), validated by the
    library (UsageError with its message)."""
    from .quantizers import check_params

    fixed = [c for group in (args.fixed_color or []) for c in group]
    target = args.target_psnr is not None or args.target_de is not None
    if args.target_psnr is not None and args.target_de is not None:
        raise UsageError("--target-psnr and --target-de cannot be combined")
    if target and args.k is not None:
        raise UsageError("-k and a quality target (--target-psnr/--target-de) are exclusive")
    if args.min_psnr is not None and args.target_psnr is not None and args.min_psnr > args.target_psnr:
        raise UsageError(f"--min-psnr {args.min_psnr:g} is above --target-psnr {args.target_psnr:g}")
    params: Dict[str, Any] = {}
    if args.palette:
        if target or fixed or args.k is not None:
            raise UsageError("--palette maps onto a given palette: it cannot be combined with -k, "
                             "--fixed-color or a quality target")
        params["palette"] = _palette_arg(args.palette)
    if args.k is not None:
        params["k"] = args.k
    for name in ("algo", "metric", "space", "seed"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if args.dither:
        params["dither"] = True
    if fixed:
        params["fixed_colors"] = fixed
    options = {"k": "-k", "algo": "--algo", "metric": "--metric", "space": "--space", "seed": "--seed",
               "dither": "--dither", "fixed_colors": "--fixed-color", "palette": "--palette"}
    for name, value in params.items():  # one by one, so that the message can name the option
        try:
            check_params(**{name: value})
        except (ValueError, TypeError) as e:
            raise UsageError(f"{options.get(name, name)}: {e}") from None
    try:
        k_for_target: Dict[str, Any] = {"k": 256} if target else {}
        check_params(**k_for_target, **params)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    return params


def _level(args: argparse.Namespace) -> Optional[int]:
    if args.level is None:
        return None
    from .payload import check_level

    try:
        return check_level(args.level, "--level")
    except ValueError as e:
        raise UsageError(str(e)) from None


# --------------------------------------------------------------------------- compress


def _compress_format(args: argparse.Namespace) -> Tuple[str, str]:
    """(format, output suffix) of ``compress``: --format, else the -o file's or --ext's extension."""
    from .convert import COMPRESS_FORMATS

    writable = ", ".join(COMPRESS_FORMATS[f] for f in COMPRESS_FORMATS)
    fmt = args.format.upper() if args.format else None
    named = None  # the extension that names the format
    if args.output and args.output != "-" and len(args.inputs) == 1 and not os.path.isdir(args.output) \
            and not args.output.endswith(_SEPARATORS):
        named = ("-o", os.path.splitext(args.output)[1])
    elif args.ext:
        named = ("--ext", os.path.splitext("x" + args.ext)[1] or args.ext)
    if fmt is None and named is not None and named[1]:
        fmt = next((f for f, e in COMPRESS_FORMATS.items() if e == named[1].lower()), None)
        if fmt is None:
            raise UsageError(f"{named[0]} {args.output if named[0] == '-o' else args.ext}: compress writes "
                             f"{writable} files, not {named[1]} (--format chooses the format)")
    fmt = fmt or "GCP"
    from .convert import writable as pillow_writes

    if not pillow_writes(fmt):
        raise UsageError(f"this Pillow cannot write {fmt} (built without its library); choose another format")
    suffix = args.ext if args.ext else COMPRESS_FORMATS[fmt]
    return fmt, suffix


class _Prefetch:
    """:func:`read_image` of one file on a helper thread, while the command imports numpy and the
    quantizers and checks its options: Pillow's decoders release the GIL, so on a machine with a
    second core the decoding costs no wall time (~10 ms of a 0.4-megapixel PNG). :meth:`get` gives
    the image or raises what :func:`read_image` raised; the caller joins the thread (:meth:`close`)
    before returning, whatever happens."""

    def __init__(self, path: str) -> None:
        import threading

        self._image: Optional["Image.Image"] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="gcp-read")
        self._thread.start()

    def _run(self, path: str) -> None:
        try:
            self._image = read_image(path)
        except BaseException as e:  # handed to the main thread by get()
            self._error = e

    def get(self) -> "Image.Image":
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._image is not None
        return self._image

    def close(self) -> None:
        self._thread.join()


def _prefetch(inputs: Sequence[str], shared: bool) -> Optional[_Prefetch]:
    """A :class:`_Prefetch` of the input when there is one, and it is a regular file (reading a FIFO
    or a device early would consume it; several inputs are read one by one, or by workers)."""
    if len(inputs) != 1 or inputs[0] == "-" or shared:
        return None
    try:
        if not stat.S_ISREG(os.stat(inputs[0]).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return _Prefetch(inputs[0])


def cmd_compress(args: argparse.Namespace) -> int:
    prefetch = _prefetch(args.inputs, args.shared_palette)
    try:
        return _compress(args, prefetch)
    finally:
        if prefetch is not None:
            prefetch.close()


def _compress(args: argparse.Namespace, prefetch: Optional[_Prefetch]) -> int:
    params = _quant_params(args)
    fmt, suffix = _compress_format(args)
    opts = Options(format=fmt, params=tuple(params.items()), level=_level(args), strip=args.strip,
                   target_psnr=args.target_psnr, target_de=args.target_de, min_psnr=args.min_psnr,
                   skip_if_larger=args.skip_if_larger, force=args.force, verbose=args.verbose)
    outs = plan_outputs(args.inputs, args.output, suffix)
    _refuse_tty(outs)
    inputs = tuple(args.inputs)
    if args.shared_palette and len(inputs) > 1:
        return _compress_shared(opts, inputs, outs)
    stdin = _stdin_bytes(inputs)
    tasks = [(s, d, opts, inputs, stdin) for s, d in zip(inputs, outs)]
    if prefetch is not None:  # one input: compress_one takes the image read meanwhile, in this process
        return _status(_run_batch(compress_one, [tasks[0] + (prefetch.get,)], 1, args.verbose))
    return _status(_run_batch(compress_one, tasks, args.jobs, args.verbose))


def _compress_shared(opts: Options, inputs: Tuple[str, ...], outs: List[str]) -> int:
    """--shared-palette: one palette over all readable inputs (quantize_many), then each written."""
    from .convert import QualityError, compress_shared

    progress = Progress(len(inputs))
    failed = False
    images, kept = [], []
    for s, d in zip(inputs, outs):
        try:
            check_output(d, inputs, opts.force)
            images.append(read_image(s))
            kept.append(Result(s, d, in_bytes=_input_size(s, None)))
        except FileError as e:
            progress.message(f"{_PROG}: {s}: {e}")
            failed = True
    if not images:
        return EXIT_FAILED
    kw = opts.convert_kwargs()
    try:
        outs_c = compress_shared(images, **kw)
    except QualityError as e:
        progress.message(f"{_PROG}: shared palette over {len(images)} files: {_quality_message(e)}")
        progress.close()
        return EXIT_FAILED if failed else EXIT_QUALITY
    except Exception as e:
        progress.message(f"{_PROG}: shared palette over {len(images)} files: {describe(e)}")
        progress.close()
        return EXIT_FAILED
    if outs_c and outs_c[0].warning:
        progress.message(f"{_PROG}: shared palette: warning: {outs_c[0].warning}")
    results = []
    for r, im, c in zip(kept, images, outs_c):
        r.pixels = im.size[0] * im.size[1]
        c.warning = None
        try:
            _finish(r, c, opts, len(c.data), lambda: write_target(r.dst, c.data, opts.force))
        except FileError as e:
            r.status, r.message = "failed", str(e)
        results.append(r)
        progress.step(os.path.basename(r.src))
        if not r.ok:
            progress.message(f"{_PROG}: {r.src}: {r.message}")
        elif opts.verbose:
            progress.message(_report_line(r))
    progress.close()
    code = _status(results)
    return EXIT_FAILED if failed else code


# --------------------------------------------------------------------------- decompress


def _decompress_format(args: argparse.Namespace) -> Tuple[str, str]:
    """(Pillow format, suffix) of ``decompress``: --format, else the -o file's extension, else PNG."""
    from PIL import Image

    from .convert import extension_for, format_for_extension, writable as can_write

    Image.init()  # Pillow loads its writers lazily

    def writable() -> str:
        return ", ".join(sorted(f.lower() for f in Image.SAVE if can_write(f)))

    if args.format is not None:
        name = args.format.strip().lstrip(".")
        fmt = format_for_extension("." + name) or (name.upper() if name.upper() in Image.SAVE else None)
        if fmt is None or not can_write(fmt):
            raise UsageError(f"--format {args.format}: not a format Pillow writes; choose from: {writable()}")
        return fmt, extension_for(fmt)
    out = args.output
    if out and out != "-" and len(args.inputs) == 1 and not os.path.isdir(out) and not out.endswith(_SEPARATORS):
        ext = os.path.splitext(out)[1]
        if ext:
            fmt = format_for_extension(ext)
            if fmt is None or not can_write(fmt):
                raise UsageError(f"-o {out}: {ext} is not an extension of a format Pillow writes "
                                 f"(--format chooses one of: {writable()})")
            return fmt, ext
    return "PNG", ".png"


def cmd_decompress(args: argparse.Namespace) -> int:
    fmt, suffix = _decompress_format(args)
    outs = plan_outputs(args.inputs, args.output, suffix)
    _refuse_tty(outs)
    inputs = tuple(args.inputs)
    stdin = _stdin_bytes(inputs)
    tasks = [(s, d, fmt, args.force, args.any_input, inputs, stdin) for s, d in zip(inputs, outs)]
    return _status(_run_batch(decompress_one, tasks, args.jobs, args.verbose))


# --------------------------------------------------------------------------- info


def _gcp_coding(path: str, stdin_data: Optional[bytes], tiles: List[Any]) -> Optional[str]:
    """Name of the index-map coding of a .gcp file: the payload's method and flags (SPEC section 6)."""
    if not tiles:
        return None
    offset = tiles[0][2]
    try:
        if path == "-":
            b = (stdin_data or b"")[offset:offset + 2]
        else:
            with open(path, "rb") as f:
                f.seek(offset)
                b = f.read(2)
    except OSError:
        return None
    if not b:
        return None
    from .payload import coding_name

    return coding_name(b)


def image_info(path: str, stdin_data: Optional[bytes] = None) -> Dict[str, Any]:
    """The facts ``gcp info`` prints for one file (FileError if it cannot be read)."""
    from . import adapter

    tiles: List[Any] = []
    im = read_image(path, stdin_data, tiles)
    nbytes = _input_size(path, stdin_data)
    w, h = im.size
    d: Dict[str, Any] = {"file": _display(path), "format": im.format, "width": w, "height": h, "mode": im.mode}
    if im.mode in ("P", "PA") and im.palette is not None:
        d["palette_size"] = len(adapter.palette_of(im))
        used = im.getcolors(256)
        if used is not None:
            d["colors_used"] = len(used)
    if im.format == "GCP":
        coding = _gcp_coding(path, stdin_data, tiles)
        if coding:
            d["coding"] = coding
    d["alpha"] = adapter.pixels(im).shape[2] == 4
    d["bytes"] = nbytes
    d["bits_per_pixel"] = round(8.0 * nbytes / (w * h), 4) if w * h else None
    for key, value in im.info.items():
        if key in d or key == "transparency":
            continue
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif not isinstance(value, (str, int, float, bool, type(None), list, tuple)):
            value = str(value)
        d.setdefault(str(key), value)
    return d


def cmd_info(args: argparse.Namespace) -> int:
    status = EXIT_OK
    stdin = _stdin_bytes(args.inputs)
    records = []
    for path in args.inputs:
        try:
            records.append(image_info(path, stdin))
        except FileError as e:
            _warn(f"{_PROG}: {_display(path)}: {e}")
            status = EXIT_FAILED
    if args.json:
        import json

        print(json.dumps(records, indent=2))
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


# --------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    src, against = args.input, args.against
    if against is not None and (args.k is not None or args.target_psnr or args.target_de or args.palette
                                or args.fixed_color or args.min_psnr):
        raise UsageError("--against compares an existing .gcp file: -k, --palette, --fixed-color and "
                         "quality options do not apply")
    params = _quant_params(args) if against is None else {}
    out = args.output or ((os.path.splitext(src)[0] if src != "-" else "stdin") + ".compare.png")
    if out == "-":
        _refuse_tty([out])
    elif not out.lower().endswith(".png"):
        raise UsageError(f"-o {out}: the picture is a PNG; give a name ending in .png (or - for stdout)")
    from . import adapter, metrics
    from .convert import QualityError, compare_picture, compress_image, open_bytes

    blamed = src
    try:
        check_output(out, [src] + ([against] if against else []), args.force)
        stdin = _stdin_bytes([src])
        original = read_image(src, stdin)
        k = None
        if against is not None:
            blamed = against
            decoded = read_image(against)
            if decoded.format != "GCP":
                raise FileError(f"not a .gcp file (it is {decoded.format}); --against takes a .gcp file")
            blob_size = _input_size(against, None)
            if decoded.size != original.size:
                raise FileError(f"is {decoded.size[0]}x{decoded.size[1]}, but {_display(src)} is "
                                f"{original.size[0]}x{original.size[1]}")
        else:
            c = compress_image(original, level=_level(args), target_psnr=args.target_psnr,
                               target_de=args.target_de, min_psnr=args.min_psnr, **params)
            if c.warning:
                _warn(f"{_PROG}: {_display(src)}: warning: {c.warning}")
            decoded, blob_size, k = open_bytes(c.data), len(c.data), c.k
        a, b = adapter.pixels(original), adapter.pixels(decoded)
        p, de = metrics.psnr(a, b), metrics.mean_delta_e(a, b)
        w, h = original.size
        db = "lossless" if p == float("inf") else f"{p:.2f} dB"
        caption = f".gcp{f' k={k}' if k is not None else ''}: {8.0 * blob_size / (w * h):.3f} bpp, {db}"
        pic = compare_picture(original, decoded, args.amplify, caption)
        import io

        buf = io.BytesIO()
        pic.save(buf, "PNG")
        blamed = out
        write_target(out, buf.getvalue(), args.force)
    except QualityError as e:
        _warn(f"{_PROG}: {_display(src)}: {_quality_message(e)}")
        return EXIT_QUALITY
    except FileError as e:
        _warn(f"{_PROG}: {_display(blamed)}: {e}")
        return EXIT_FAILED
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as e:
        _warn(f"{_PROG}: {_display(blamed)}: {describe(e)}")
        return EXIT_FAILED
    stream = sys.stderr if out == "-" else sys.stdout
    in_bytes = _input_size(src, stdin)
    print(f"{_display(src)}: {w}x{h}", file=stream)
    if k is not None:
        print(f"  k:              {k}", file=stream)
    if in_bytes:
        print(f"  original bytes: {in_bytes} ({8.0 * in_bytes / (w * h):.3f} bpp)", file=stream)
    print(f"  .gcp bytes:     {blob_size} ({8.0 * blob_size / (w * h):.3f} bpp)", file=stream)
    print(f"  PSNR:           {db}", file=stream)
    print(f"  mean deltaE:    {de:.2f} (OKLab x100)", file=stream)
    print(f"  picture:        {'<stdout>' if out == '-' else out}", file=stream)
    return EXIT_OK


# --------------------------------------------------------------------------- argument parsing


def _columns() -> int:
    """``shutil.get_terminal_size().columns`` (COLUMNS, else the terminal's, else 80), without
    importing shutil (and zlib, bz2, lzma with it) at every start just to build the parser."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's RawDescriptionHelpFormatter, the width found by :func:`_columns`."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        if len(args) < 3 and kwargs.get("width") is None:
            kwargs["width"] = _columns() - 2  # as argparse does
        super().__init__(prog, *args, **kwargs)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _choices(kind: str) -> Tuple[str, ...]:
    from . import quantizers

    if kind == "algo":
        return tuple(quantizers.registered_quantizers())
    return tuple(getattr(quantizers, kind))


class _Choices:
    """The choices of a quantizer option, looked up (importing numpy and the quantizers) only when
    argparse checks a value given for it or prints help: building the parser does not need them, and
    nor does the usage line, which names the option's value by a word (argparse formats the usage
    before parsing an intermixed command line; listing the choices there would load numpy before the
    input's read starts on its helper thread)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _values(self) -> Tuple[str, ...]:
        return _choices(self.kind)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()

    def __len__(self) -> int:
        return len(self._values())

    def __getitem__(self, i: int) -> str:
        return self._values()[i]


def _choice_option(group: Any, flag: str, kind: str, metavar: str, help: str) -> None:
    group.add_argument(flag, choices=_Choices(kind), metavar=metavar, help=help)


def _add_quant_options(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("quantizer options (the keyword arguments of Image.save(..., 'GCP'))")
    q.add_argument("-k", "--colors", dest="k", type=_ranged(1, 256), metavar="K",
                   help="palette size, 1..256 (default: as Image.save without k: 256 colours, "
                        "or the exact palette of a palette/grey image)")
    _choice_option(q, "--algo", "algo", "ALGO",
                   help="clustering algorithm, one of %(choices)s: kmeans (fast, mean colours) or kmedoids "
                        "(palette colours are colours of the image; robust to noise) (default kmeans)")
    _choice_option(q, "--metric", "METRICS", "METRIC",
                   help="colour distance for clustering (K-medoids) and for mapping pixels to the palette: "
                        "%(choices)s (default euclidean)")
    _choice_option(q, "--space", "SPACES", "SPACE",
                   help="colour space the clustering works in, one of %(choices)s: rgb, or oklab (perceptual) "
                        "(default rgb)")
    q.add_argument("--dither", action="store_true",
                   help="Floyd-Steinberg error diffusion when mapping pixels to the palette")
    q.add_argument("--seed", type=_ranged(0), metavar="N",
                   help="random seed; equal seeds give byte-identical output (default 0)")
    q.add_argument("--fixed-color", dest="fixed_color", type=_colors, action="append", metavar="RRGGBB[AA]",
                   help="a colour that must be in the palette, hex RRGGBB or RRGGBBAA (# allowed); repeat the option or "
                        "give a comma-separated list (e.g. --fixed-color ffffff,00000000)")
    q.add_argument("--palette", metavar="FILE|RRGGBB,...",
                   help="map onto exactly this palette, no fitting: a palette image file (a .gcp, PNG-8, "
                        "GIF...) or a comma-separated list of hex colours; nearest colour under --metric")
    c = p.add_argument_group("coding options")
    c.add_argument("--level", type=_ranged(0, 9), metavar="N",
                   help="payload effort 0..9 (default 6; compress_level of Image.save): 0 stored, 1-3 zlib at "
                        "that level, 4-8 one coding chosen by the encoder's cost model (the same at each), 9 "
                        "every coding tried (slow on big images)")
    t = p.add_argument_group("quality (instead of -k: choose k; or a floor that refuses)")
    t.add_argument("--target-psnr", type=_positive_float, metavar="DB",
                   help="the smallest k whose PSNR is at least DB (k meets it, k/2 does not); if even k=256 "
                        "misses it, k=256 is written with a warning")
    t.add_argument("--target-de", type=_positive_float, metavar="DE",
                   help="the smallest k whose mean OKLab deltaE x100 is at most DE (about 1 = just noticeable)")
    t.add_argument("--min-psnr", type=_positive_float, metavar="DB",
                   help="refuse (write nothing, exit 99) an image whose PSNR stays below DB; alone it checks "
                        "-k's result, with --target-psnr/--target-de the chosen k's (at most 256)")


def _version() -> str:
    from . import __version__  # the package metadata takes its version from here

    return __version__


class _VersionAction(argparse.Action):
    """--version without looking the version up unless asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: Optional[str] = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _add_compress(sub: Any, raw: Any) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "compress", help="quantize images and write .gcp (or PNG-8, GIF, WebP) files", formatter_class=raw,
        description="Quantize each input to a palette of K colours and write it as .gcp, or as PNG-8, GIF or\n"
                    "lossless WebP with the same palette: the format is what the output name says (.gcp, .png,\n"
                    ".gif, .webp) or --format. The output is the input's name with .gcp (or --ext), beside the\n"
                    "input, unless -o is given. Metadata (ICC, EXIF, XMP, comment) is copied unless --strip.",
        epilog="examples:\n"
               "  gcp compress photo.png -k 32                # -> photo.gcp\n"
               "  gcp compress photo.png -k 64 -o small.png   # PNG-8 with our palette (like pngquant)\n"
               "  gcp compress *.png -o out/ -j 2             # many files into out/, 2 processes\n"
               "  gcp compress *.png --ext -gcp8.png          # a-gcp8.png beside a.png, ...\n"
               "  gcp compress - < in.png > out.gcp           # stdin -> stdout\n"
               "  gcp compress photo.png --target-psnr 38 --min-psnr 34 -v\n\n"
               "An existing output is refused without --force; an input is never overwritten; a FIFO or\n"
               "device (-o /dev/stdout) is written to directly.\n\n" + _exit_status("compress"),
    )
    c.add_argument("inputs", nargs="+", metavar="IN", help="input images (any format Pillow reads); - for stdin")
    c.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input; - for stdout) or folder (an existing one, a name ending with /, "
                        "or with several inputs a new name without extension: created)")
    c.add_argument("--format", type=str.lower, choices=("gcp", "png", "gif", "webp"),
                   help="output format (default: from the -o name or --ext, else gcp)")
    c.add_argument("--ext", metavar="SUFFIX",
                   help="suffix of the output names instead of .gcp, e.g. .png or -fs8.png (it names the format "
                        "unless --format is given)")
    c.add_argument("-f", "--force", action="store_true", help="overwrite existing output files (inputs never)")
    c.add_argument("--skip-if-larger", action="store_true",
                   help="write nothing for an image whose output would be larger than the input file (exit 98)")
    c.add_argument("-j", "--jobs", type=_jobs_type, default=1, metavar="JOBS",
                   help="processes for several inputs (0 = one per usable CPU; default 1); same output as -j 1")
    c.add_argument("--shared-palette", action="store_true",
                   help="with several inputs: quantize them together to ONE palette (quantize_many)")
    c.add_argument("--strip", action="store_true",
                   help="drop metadata (ICC profile, EXIF, XMP, comment) instead of copying it")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="per file on stderr: sizes, bits per pixel, colours used (k) and PSNR of the file written")
    _add_quant_options(c)
    c.set_defaults(func=cmd_compress)
    return c


def _add_decompress(sub: Any, raw: Any) -> argparse.ArgumentParser:
    d = sub.add_parser(
        "decompress", help="decode .gcp files to PNG (or another format)", formatter_class=raw,
        description="Decode .gcp files and save them in a standard format, beside the input unless -o is given.\n"
                    "EXIF, ICC profile, XMP, comment and transparency are kept as far as the format holds\n"
                    "them; alpha that it cannot hold (JPEG) is flattened over white, GIF gets one transparent\n"
                    "index (entries with alpha below 128).",
        epilog="examples:\n"
               "  gcp decompress photo.gcp                 # -> photo.png\n"
               "  gcp decompress *.gcp -o png/ -j 2\n"
               "  gcp decompress photo.gcp --format webp   # -> photo.webp (lossless)\n"
               "  gcp decompress photo.gcp -o photo.jpg    # format from the extension\n"
               "  gcp decompress - < photo.gcp > photo.png\n\n" + _exit_status("decompress"),
    )
    d.add_argument("inputs", nargs="+", metavar="IN", help=".gcp files; - for stdin")
    d.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input; - for stdout) or folder (see compress)")
    d.add_argument("--format", metavar="FMT",
                   help="output format, any format Pillow writes (png, webp, bmp, tiff, gif, jpeg, ...); "
                        "default: from the -o extension, else png")
    d.add_argument("--any-input", action="store_true", help="also convert inputs that are not .gcp files")
    d.add_argument("-f", "--force", action="store_true", help="overwrite existing output files (inputs never)")
    d.add_argument("-j", "--jobs", type=_jobs_type, default=1, metavar="JOBS",
                   help="processes for several inputs (0 = one per usable CPU; default 1)")
    d.add_argument("-v", "--verbose", action="store_true", help="print sizes per file on stderr")
    d.set_defaults(func=cmd_decompress)
    return d


def _add_info(sub: Any, raw: Any) -> argparse.ArgumentParser:
    i = sub.add_parser(
        "info", help="show dimensions, palette, alpha, coding, size and bits per pixel", formatter_class=raw,
        description="Describe image files (.gcp or any format Pillow reads): dimensions, mode, palette size,\n"
                    "alpha, payload coding, bytes and bits per pixel.",
        epilog="examples:\n  gcp info photo.gcp\n  gcp info --json *.gcp      # always a JSON list, one object per file\n\n"
               + _exit_status("info"),
    )
    i.add_argument("inputs", nargs="+", metavar="FILE", help="files to describe; - for stdin")
    i.add_argument("--json", action="store_true", help="print a JSON list with one object per file read")
    i.set_defaults(func=cmd_info)
    return i


def _add_compare(sub: Any, raw: Any) -> argparse.ArgumentParser:
    m = sub.add_parser(
        "compare", formatter_class=raw,
        help="compress an image and show original | .gcp | error side by side, with PSNR and deltaE",
        description="Compress IN with the given options (or take an existing .gcp with --against), write a\n"
                    "side-by-side picture (original | decoded .gcp | amplified error map) and print sizes,\n"
                    "PSNR (dB, over R,G,B) and mean deltaE (OKLab x100).",
        epilog="examples:\n"
               "  gcp compare photo.png -k 16 -o report.png\n"
               "  gcp compare photo.png --target-psnr 32 --algo kmedoids\n"
               "  gcp compare photo.png --against photo.gcp\n\n" + _exit_status("compare"),
    )
    m.add_argument("input", metavar="IN", help="original image; - for stdin")
    m.add_argument("-o", "--output", metavar="PNG",
                   help="the side-by-side picture, a PNG (default: IN's name with its extension replaced by "
                        ".compare.png, beside it; stdin.compare.png for stdin; - for stdout)")
    m.add_argument("--against", metavar="FILE.gcp", help="compare with this existing .gcp instead of compressing")
    m.add_argument("--amplify", type=_positive_float, default=8.0, metavar="X",
                   help="error map brightness factor (default 8)")
    m.add_argument("-f", "--force", action="store_true", help="overwrite an existing picture")
    _add_quant_options(m)
    m.set_defaults(func=cmd_compare)
    return m


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The argparse parser of the ``gcp`` command; with ``command`` (a sub-command name), only that
    sub-command is added (see :func:`_parsers`)."""
    return _parsers(command)[0]


def _parsers(command: Optional[str]) -> Tuple[argparse.ArgumentParser, Dict[str, argparse.ArgumentParser]]:
    """The ``gcp`` parser and its sub-commands' parsers by name: all of them, or only ``command``'s
    (:func:`main` parses a command line that starts with a command with that command's parser alone,
    and builds the whole parser for ``gcp --help`` and errors)."""
    raw = _Formatter
    parser = _Parser(
        prog=_PROG, formatter_class=raw,
        description="Compress images to the .gcp palette format (or to PNG-8, GIF, WebP with the same\n"
                    "palette), decode them, inspect and compare them.",
        epilog=EXIT_STATUS + "\n\nRun 'gcp COMMAND --help' for the options of a command; docs/cli.md has them all.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    adders = dict(zip(_COMMANDS, (_add_compress, _add_decompress, _add_info, _add_compare)))
    return parser, {name: add(sub, raw) for name, add in adders.items() if command in (None, name)}



def _quiet_stdout() -> None:
    """After a closed stdout (a pipe into ``head``): no further writes, no error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _parse_intermixed(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """``parser.parse_intermixed_args(argv)``, with ``--`` ending the options as usual: argparse's intermixed
    parsing (Python 3.9-3.13) drops the arguments after ``--`` that start with ``-`` (``gcp compress -- -a.png``:
    "the following arguments are required"), so those are parsed as stand-ins and put back."""
    if "--" not in argv:
        return parser.parse_intermixed_args(argv)
    cut = argv.index("--")
    names = argv[cut + 1:]
    stand_in = {f"\0gcp-argument-{i}": name for i, name in enumerate(names)}
    args = parser.parse_intermixed_args(argv[:cut] + ["--"] + list(stand_in))
    for key, value in vars(args).items():
        if isinstance(value, list):
            setattr(args, key, [stand_in.get(v, v) if isinstance(v, str) else v for v in value])
        elif isinstance(value, str) and value in stand_in:
            setattr(args, key, stand_in[value])
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``gcp`` command line; returns the exit status (see EXIT_STATUS). ``argv``: the
    arguments after the program name (None: ``sys.argv[1:]``)."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        for i in range(len(argv) - 1):  # --ext -fs8.png: a suffix may start with "-" (as in pngquant)
            if argv[i] == "--ext" and argv[i + 1].startswith("-") and argv[i + 1] != "-":
                argv[i:i + 2] = [f"--ext={argv[i + 1]}", ""]
        argv = [a for a in argv if a != ""]
        command = argv[0] if argv and argv[0] in _COMMANDS else None
        parser, commands = _parsers(command)
        try:
            if command is None:
                args = parser.parse_args(argv)
            else:  # options may come between the inputs: gcp compress a.png -k 4 b.png -o out/
                args = _parse_intermixed(commands[command], argv[1:])
                args.command = command
        except SystemExit as e:  # --help / --version
            return int(e.code or 0)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except UsageError as e:
        _warn(f"{_PROG}: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn(f"{_PROG}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): end quietly
        _quiet_stdout()
        return EXIT_FAILED
    except OSError as e:
        _warn(f"{_PROG}: {describe(e)}")
        return EXIT_FAILED


def run() -> int:
    """The ``gcp`` / ``pillow-gcp`` console scripts and ``python -m pillow_gcp``: :func:`main`, then
    :func:`gc.freeze`, as the process is about to end: the objects left (numpy's, Pillow's, ...) move
    to the collector's permanent generation, so that the interpreter's shutdown does not walk them
    in a last full collection (10-20 ms of a 0.2 s run). Files, standard streams, ``atexit``
    handlers and the exit status are as without it. Call :func:`main` from Python instead: it
    leaves the collector alone."""
    global _PROG
    if os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0] == "pillow-gcp":
        _PROG = "pillow-gcp"
    restore = _one_blas_thread()
    import warnings

    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return main()
    finally:
        warnings.showwarning = shown
        restore()
        import gc

        gc.freeze()


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    """Python warnings (Pillow's DecompressionBombWarning, ...) as the command's own one-line warnings, not with
    a source path and line of library code."""
    _warn(f"{_PROG}: warning: {message}")


_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def _one_blas_thread() -> Callable[[], None]:
    """For the command's own process: ``OPENBLAS_NUM_THREADS=1`` while it runs, when numpy is not imported yet
    and no thread count for BLAS is set; returns what puts the environment back. Every product the package
    computes is at most ``nearest.BLAS_MACS`` multiply-adds, which OpenBLAS runs on the calling thread anyway,
    so its thread pool is never used; started at numpy's import, it spins on the other core while the command
    decodes its input there: ``gcp compress kodim05.png -k 256`` (hyperfine, 2 x 20 runs) 0.38 -> 0.29 s of CPU
    time (user + system; -k 16: 0.30 -> 0.20 s), wall-clock the same within its noise (0.25 s). The ``-j``
    workers inherit it. The files are the same bit for bit. (A Python program that calls :func:`run` before
    importing numpy gets numpy's OpenBLAS on one thread for the rest of its life; :func:`main` never sets it.)"""
    if "numpy" in sys.modules or any(v in os.environ for v in _BLAS_THREAD_VARS):
        return lambda: None
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

    def restore() -> None:
        if os.environ.get("OPENBLAS_NUM_THREADS") == "1":
            del os.environ["OPENBLAS_NUM_THREADS"]

    return restore


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
