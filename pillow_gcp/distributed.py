"""Many images, many machines: the conversion of ``gcp compress`` run on Dask.

The recipe of ``docs/dask.md``. Only file names travel through the scheduler: each task reads its
input, converts it with :func:`pillow_gcp.convert.compress_bytes` (bytes in, bytes out, the same
bytes as ``gcp compress``) and writes its output itself. Inputs and outputs are local paths or
fsspec URLs (``s3://``, ``gs://``, ``abfs://``, ``memory://``, ``file://`` ...; install the
filesystem's package, e.g. ``s3fs``, on the client and the workers).

``compress_files(srcs, dst_dir, **params)``
    Compress a folder, a glob or a list of files into ``dst_dir`` and return one result per input,
    in input order.
``compress_bag(srcs, dst_dir, **params)``
    The same as a lazy ``dask.bag.Bag`` of results, for inputs too many to hold the results of in
    one list (filter it, count it or write it with ``to_textfiles``).
``compress_file(src, dst, **params)``
    One file: what every task runs. Module-level and picklable, as are the functions it calls.

Each result is a dict ``{"src", "dst", "status", "bytes_in", "bytes_out", "error"}`` with
``status`` one of ``"done"``, ``"skipped"`` (the output existed and ``if_exists="skip"``) or
``"failed"`` (``error`` then says why, in one line). Arguments are checked before any task runs
(``ValueError`` / ``TypeError`` naming the parameter); a file that cannot be read, decoded or
written fails alone, the others go on (``errors="raise"`` stops at the first instead).

Local outputs are written as ``gcp compress`` writes them (a temporary file, then a rename; an
existing file is kept unless ``if_exists="overwrite"``); remote outputs are written with one
``pipe_file`` (a single PUT on object stores, so a reader never sees half a file).

Requires ``dask`` (``compress_bag``, ``compress_files``) and ``fsspec`` (URLs):
``pip install "pillow-gcp[dask]"``.
"""

from __future__ import annotations

import functools
import glob as _glob
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from PIL import Image

from .convert import COMPRESS_FORMATS, compress_bytes

if TYPE_CHECKING:  # pragma: no cover
    import dask.bag

__all__ = ["IF_EXISTS", "ERRORS", "compress_file", "compress_bag", "compress_files", "list_files", "output_path"]

#: what to do with an output that exists already
IF_EXISTS = ("error", "skip", "overwrite")
#: what a file that fails does to the run
ERRORS = ("report", "raise")
#: keyword arguments of compress_bytes besides the quantizer's
_OUTPUT_KEYS = ("level", "target_psnr", "target_de", "min_psnr")

Result = Dict[str, Any]
#: a local path (str or os.PathLike) or an fsspec URL
PathOrURL = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- paths


def _is_url(path: str) -> bool:
    return "://" in path


def _fsspec() -> Any:
    try:
        import fsspec  # type: ignore[import-untyped]  # no stubs
    except ImportError:
        raise ImportError('URLs need fsspec: pip install "pillow-gcp[dask]"') from None
    return fsspec


def _filesystem(url: str, storage_options: Optional[Mapping[str, Any]]) -> Tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a URL."""
    return _fsspec().core.url_to_fs(url, **dict(storage_options or {}))  # type: ignore[no-any-return]


def _local_path(path: str, storage_options: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The local file name of ``path`` (a plain path or a ``file://`` URL), else None."""
    if not _is_url(path):
        return path
    if path.startswith(("file://", "local://")):
        fs, inner = _filesystem(path, storage_options)
        return str(inner)
    return None


def _join(root: str, relative: str) -> str:
    if _is_url(root):
        return root.rstrip("/") + "/" + relative.replace(os.sep, "/")
    return os.path.join(root, *relative.split("/"))


def _parts(path: str) -> List[str]:
    return path.replace(os.sep, "/").split("/")


def _common_folder(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (paths or URLs, compared part by part)."""
    split = [_parts(p)[:-1] for p in paths]
    common = split[0]
    for parts in split[1:]:
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return "/".join(common) if common else ""


def output_path(src: str, src_root: str, dst_root: str, ext: str = ".gcp") -> str:
    """Where ``src`` goes: its place under ``src_root``, under ``dst_root``, with extension ``ext``.

    ``output_path("s3://b/in/x/a.png", "s3://b/in", "s3://b/out")`` is ``"s3://b/out/x/a.gcp"``.
    """
    src_p, root_p = _parts(src), [p for p in _parts(src_root) if p != ""] if src_root else []
    src_clean = [p for p in src_p if p != ""]
    if src_clean[: len(root_p)] != root_p or len(src_clean) <= len(root_p):
        raise ValueError(f"src_root {src_root!r} does not hold {src!r}")
    relative = "/".join(src_clean[len(root_p):])
    stem, _ = os.path.splitext(relative)
    return _join(dst_root, stem + ext)


def _image_extensions() -> Tuple[str, ...]:
    Image.init()
    return tuple(sorted(ext.lower() for ext in Image.registered_extensions()))


def list_files(urlpath: str, storage_options: Optional[Mapping[str, Any]] = None) -> List[str]:
    """The files of a folder (recursively: those with an extension Pillow opens), or of a glob.

    Local folders and globs need only the standard library; URLs are listed with fsspec and come
    back as full URLs (``s3://bucket/key``), sorted.
    """
    if not isinstance(urlpath, str):
        raise TypeError(f"urlpath must be a str, got {type(urlpath).__name__}")
    exts = _image_extensions()
    local = _local_path(urlpath, storage_options)
    if local is not None:
        if os.path.isdir(local):
            found = [os.path.join(d, f) for d, _, files in os.walk(local) for f in files
                     if f.lower().endswith(exts) and not f.startswith(".")]
        elif _glob.has_magic(local):
            found = [p for p in _glob.glob(local, recursive=True) if os.path.isfile(p)]
        elif os.path.isfile(local):
            found = [local]
        else:
            raise FileNotFoundError(f"no such file or folder: {urlpath}")
        if local != urlpath:  # file:// in, file:// out
            return sorted("file://" + os.path.abspath(p) for p in found)
        return sorted(found)
    fs, inner = _filesystem(urlpath, storage_options)
    if _glob.has_magic(inner):
        paths = [p for p in fs.glob(inner) if fs.isfile(p)]
    elif fs.isdir(inner):
        paths = [p for p in fs.find(inner) if p.lower().endswith(exts)]
    elif fs.exists(inner):
        paths = [inner]
    else:
        raise FileNotFoundError(f"no such file or folder: {urlpath}")
    return sorted(fs.unstrip_protocol(p) for p in paths)


# --------------------------------------------------------------------------- one file


def _read(src: str, storage_options: Optional[Mapping[str, Any]]) -> bytes:
    local = _local_path(src, storage_options)
    if local is not None:
        with open(local, "rb") as f:
            return f.read()
    fs, inner = _filesystem(src, storage_options)
    return bytes(fs.cat_file(inner))


def _exists(dst: str, storage_options: Optional[Mapping[str, Any]]) -> bool:
    local = _local_path(dst, storage_options)
    if local is not None:
        return os.path.lexists(local)
    fs, inner = _filesystem(dst, storage_options)
    return bool(fs.exists(inner))


_OVERWRITE_HINT = "if_exists='overwrite' replaces it"


def _write(dst: str, data: bytes, overwrite: bool, storage_options: Optional[Mapping[str, Any]]) -> None:
    local = _local_path(dst, storage_options)
    if local is not None:
        from .cli import write_target  # the CLI's safe write: same rules as gcp compress

        folder = os.path.dirname(os.path.abspath(local))
        os.makedirs(folder, exist_ok=True)
        write_target(local, data, force=overwrite, force_hint=_OVERWRITE_HINT)
        return
    fs, inner = _filesystem(dst, storage_options)
    if not overwrite and fs.exists(inner):
        raise FileExistsError(f"output {dst} exists ({_OVERWRITE_HINT})")
    parent = inner.rsplit("/", 1)[0]
    if parent and parent != inner:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(inner, data)


def _message(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)) and e.strerror:
        text = e.strerror
    return f"{text}" if text else type(e).__name__


def _path(value: Any, name: str) -> str:
    """A path or URL argument as str (os.PathLike accepted); TypeError naming ``name`` otherwise."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a path or URL (str or os.PathLike), got {type(value).__name__}")
    return value


def _check_choice(name: str, value: Any, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def compress_file(src: PathOrURL, dst: PathOrURL, *, format: str = "GCP", strip: bool = False, if_exists: str = "error",
                  errors: str = "raise", storage_options: Optional[Mapping[str, Any]] = None,
                  **params: Any) -> Result:
    """Read ``src``, compress it as ``gcp compress`` does, write ``dst``; return the result dict.

    ``format``, ``strip`` and ``params`` are those of :func:`pillow_gcp.convert.compress_bytes`
    (``k``/``colors``, ``algo``, ``seed``, ``metric``, ``space``, ``dither``, ``fixed_colors``,
    ``palette``, ``level``, ``target_psnr``, ``target_de``, ``min_psnr``). ``if_exists``: ``"error"``
    (the file fails), ``"skip"`` or ``"overwrite"``. ``errors="report"`` turns a failure of this file
    into ``status="failed"`` instead of raising.
    """
    _check_choice("if_exists", if_exists, IF_EXISTS)
    _check_choice("errors", errors, ERRORS)
    src, dst = _path(src, "src"), _path(dst, "dst")
    result: Result = {"src": src, "dst": dst, "status": "failed", "bytes_in": None, "bytes_out": None,
                      "error": None}
    try:
        if if_exists == "skip" and _exists(dst, storage_options):
            result["status"] = "skipped"
            return result
        data = _read(src, storage_options)
        result["bytes_in"] = len(data)
        out = compress_bytes(data, format=format, strip=strip, **params)
        _write(dst, out, if_exists == "overwrite", storage_options)
        result["bytes_out"] = len(out)
        result["status"] = "done"
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        if errors == "raise":
            raise
        result["error"] = _message(e)
    except Exception as e:  # the CLI's FileError (an unwritable output) and the like
        if errors == "raise" or type(e).__name__ != "FileError":
            raise
        result["error"] = _message(e)
    return result


# --------------------------------------------------------------------------- many files


def _check_params(format: str, params: Mapping[str, Any]) -> None:
    """The arguments of compress_bytes, checked once on the client before any task runs."""
    from . import adapter
    from .quantizers import check_params

    if str(format).upper() not in COMPRESS_FORMATS:
        raise ValueError(f"format must be one of {sorted(COMPRESS_FORMATS)}, got {format!r}")
    unknown = set(params) - set(adapter.QUANTIZE_KEYS) - set(_OUTPUT_KEYS)
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}; allowed: "
                        f"{sorted(set(adapter.QUANTIZE_KEYS) | set(_OUTPUT_KEYS))}")
    quant = adapter.quantize_params(params)
    if isinstance(quant.get("palette"), Image.Image):
        quant["palette"] = adapter.palette_colors(quant["palette"])
    check_params(**quant)


def _is_dir(path: str, storage_options: Optional[Mapping[str, Any]]) -> bool:
    local = _local_path(path, storage_options)
    if local is not None:
        return os.path.isdir(local)
    fs, inner = _filesystem(path, storage_options)
    return bool(fs.isdir(inner))


def _pairs(srcs: Union[PathOrURL, Sequence[PathOrURL]], dst_dir: str, src_root: Optional[str], ext: str,
           storage_options: Optional[Mapping[str, Any]]) -> List[Tuple[str, str]]:
    names: List[str]
    if isinstance(srcs, (str, os.PathLike)):
        where = _path(srcs, "srcs")
        if src_root is None and _is_dir(where, storage_options):
            src_root = where
        names = list_files(where, storage_options)
        if not names:
            import warnings

            warnings.warn(f"srcs {where!r}: no image file found", stacklevel=3)
    else:
        names = [_path(s, f"srcs[{i}]") for i, s in enumerate(srcs)]
    srcs = names
    if not srcs:
        return []
    if src_root is None:
        src_root = _common_folder(srcs)
    pairs = [(s, output_path(s, src_root, dst_dir, ext)) for s in srcs]
    seen: Dict[str, str] = {}
    for s, d in pairs:
        if d in seen:
            raise ValueError(f"{seen[d]!r} and {s!r} would both be written to {d!r}")
        seen[d] = s
    return pairs


def compress_bag(srcs: Union[PathOrURL, Sequence[PathOrURL]], dst_dir: PathOrURL, *,
                 src_root: Optional[PathOrURL] = None,
                 format: str = "GCP", strip: bool = False, if_exists: str = "error", errors: str = "report",
                 storage_options: Optional[Mapping[str, Any]] = None, npartitions: Optional[int] = None,
                 **params: Any) -> "dask.bag.Bag":
    """A lazy ``dask.bag.Bag`` of the results of compressing ``srcs`` into ``dst_dir``.

    ``srcs``: a folder (its image files, recursively), a glob, or a sequence of paths / URLs.
    Each output keeps its place under ``src_root`` (default: the folder given, or the deepest
    folder holding all the inputs), with the extension of ``format``. Nothing runs until the bag
    is computed; on a ``distributed.Client`` it runs on that cluster.
    """
    import dask.bag as db

    _check_choice("if_exists", if_exists, IF_EXISTS)
    _check_choice("errors", errors, ERRORS)
    dst_dir = _path(dst_dir, "dst_dir")
    src_root = None if src_root is None else _path(src_root, "src_root")
    if not dst_dir:
        raise ValueError("dst_dir must not be empty")
    _check_params(format, params)
    if npartitions is not None and (not isinstance(npartitions, int) or npartitions < 1):
        raise ValueError(f"npartitions must be a positive int or None, got {npartitions!r}")
    ext = COMPRESS_FORMATS[str(format).upper()]
    pairs = _pairs(srcs, dst_dir, src_root, ext, storage_options)
    task = functools.partial(compress_file, format=format, strip=strip, if_exists=if_exists, errors=errors,
                             storage_options=dict(storage_options) if storage_options else None, **params)
    if not pairs:
        return db.from_sequence([], npartitions=1)  # type: ignore[no-any-return]
    if npartitions is None:  # one file per task up to 256 files, then up to 100 files per task
        npartitions = min(len(pairs), max(256, -(-len(pairs) // 100)))
    return db.from_sequence(pairs, npartitions=min(npartitions, len(pairs))).starmap(task)  # type: ignore[no-any-return]


def compress_files(srcs: Union[PathOrURL, Sequence[PathOrURL]], dst_dir: PathOrURL, *,
                   src_root: Optional[PathOrURL] = None,
                   format: str = "GCP", strip: bool = False, if_exists: str = "error", errors: str = "report",
                   storage_options: Optional[Mapping[str, Any]] = None, npartitions: Optional[int] = None,
                   scheduler: Optional[str] = None, **params: Any) -> List[Result]:
    """Compress ``srcs`` into ``dst_dir`` with Dask and return one result dict per input, in order.

    See :func:`compress_bag` for the arguments; ``scheduler`` is passed to ``compute`` (None: the
    active ``distributed.Client`` if there is one, else Dask's default for bags).
    """
    bag = compress_bag(srcs, dst_dir, src_root=src_root, format=format, strip=strip, if_exists=if_exists,
                       errors=errors, storage_options=storage_options, npartitions=npartitions, **params)
    return list(bag.compute(scheduler=scheduler))
