"""Whole-file conversions: bytes in, bytes out, through ``Image.save`` only.

These are the functions behind ``gcp compress`` and ``gcp decompress``, and what a distributed
engine (Dask, Spark, a job queue) should call: they are module-level, take and return plain values
and are picklable. They hold no image maths of their own: pixels come from
:mod:`pillow_gcp.adapter`, colours from :mod:`pillow_gcp.quantizers`, measures from
:mod:`pillow_gcp.metrics`.

``compress_bytes(data, format="GCP", **params)``
    ``format="GCP"`` writes exactly what ``Image.open(f).save(out, "GCP", **params)`` writes (the effort is
    ``level`` here, the save's ``compress_level``), plus the metadata of the input (``adapter.all_metadata``:
    ICC profile, EXIF, XMP, comment) passed to the save explicitly, unless ``strip=True``. ``"PNG"`` (an optimized PNG-8), ``"GIF"`` and
    ``"WEBP"`` (lossless) store the palette image :func:`pillow_gcp.adapter.palette_image` gives for
    the same ``params``: the same palette and indices as the .gcp.
``decompress_bytes(data, format="PNG")``
    A .gcp file in any format Pillow writes, keeping what that format can hold (see
    :func:`encode_image`).

Quality targets (``target_psnr=``, ``target_de=``) choose k (:func:`search_k`); a quality floor
(``min_psnr=``) refuses with :class:`QualityError` when the written image misses it.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

__all__ = [
    "COMPRESS_FORMATS",
    "QualityError",
    "NotGCPError",
    "Compressed",
    "compress_bytes",
    "compress_image",
    "compress_shared",
    "decompress_bytes",
    "decompress_image",
    "encode_image",
    "open_bytes",
    "search_k",
    "format_for_extension",
    "compare_picture",
]

#: what ``compress`` writes: Pillow format -> usual extension
COMPRESS_FORMATS = {"GCP": ".gcp", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
_EXTENSIONS = {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
               "GCP": ".gcp"}
K_MAX = 256  # the largest palette (.gcp, PNG-8, GIF all stop there)
GIF_ALPHA_THRESHOLD = 128  # GIF has one transparent index: entries with alpha below this use it
_ALPHA_IGNORED = ("BMP", "DIB")  # Pillow writes 32-bit BMP, but readers (Pillow too) drop its alpha


class QualityError(ValueError):
    """The written image would miss the quality floor (``min_psnr``); nothing should be written."""

    def __init__(self, psnr: float, floor: float, k: int) -> None:
        self.psnr, self.floor, self.k = psnr, floor, k
        super().__init__(f"PSNR {psnr:.2f} dB at k={k} is below the minimum {floor:g} dB")


class NotGCPError(ValueError):
    """``decompress`` was given an image that is not a .gcp file."""


@dataclass
class Compressed:
    """What :func:`compress_image` produced."""

    data: bytes  # the output file
    k: Optional[int]  # the k asked of the quantizer (None: the save's default or the lossless path)
    colors: Optional[int] = None  # palette entries the output uses (measured with measure=True)
    psnr: Optional[float] = None  # PSNR (dB) of the written image against the input (measure=True)
    quality: Optional[float] = None  # the quality target's measure at k (PSNR dB or mean deltaE x100)
    warning: Optional[str] = None  # e.g. a quality target not reached at k=256
    tried: Dict[int, float] = field(default_factory=dict)  # k -> measure, of a quality search


# --------------------------------------------------------------------------- reading


def open_bytes(data: bytes) -> Image.Image:
    """An image from the bytes of a file, fully decoded (OSError/ValueError if it is not one)."""
    if not data:
        raise ValueError("empty input")
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def format_for_extension(ext: str) -> Optional[str]:
    """Pillow's format name for a file extension (``".png"`` -> ``"PNG"``), or None if unknown."""
    ext = ext.lower()
    if not ext.startswith("."):
        ext = "." + ext
    return Image.registered_extensions().get(ext)


def writable(fmt: str) -> bool:
    """Whether Pillow can write format ``fmt`` (loading its common plugins only when the format is not
    registered yet, and all of them only when those do not have it: that costs ~40 ms). The stub
    formats (BUFR, GRIB, HDF5, WMF) register a writer that only works with a handler the application
    installs: without it they are not writable."""
    if fmt not in Image.SAVE:
        Image.preinit()
        if fmt not in Image.SAVE:
            Image.init()
        if fmt not in Image.SAVE:
            return False
    module = sys.modules.get(getattr(Image.SAVE[fmt], "__module__", ""))
    if module is None:
        return True
    from PIL import ImageFile

    stubs = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, ImageFile.StubImageFile)
             and c is not ImageFile.StubImageFile]
    if not stubs and not hasattr(module, "_handler"):
        return True
    # a stub plugin: the handler register_handler() installs (a class attribute; a module global in older Pillow)
    handlers = [getattr(c, "_handler", None) for c in stubs] + [getattr(module, "_handler", None)]
    return any(getattr(h, "save", None) is not None for h in handlers)


def extension_for(fmt: str) -> str:
    """The usual file extension of a Pillow format (``"JPEG"`` -> ``".jpg"``)."""
    fmt = fmt.upper()
    if fmt in _EXTENSIONS:
        return _EXTENSIONS[fmt]
    return next((e for e, f in Image.registered_extensions().items() if f == fmt), "." + fmt.lower())


# --------------------------------------------------------------------------- writing


def _metadata_kwargs(fmt: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    """Save arguments that carry ``meta`` (icc_profile, exif, xmp, comment) into format ``fmt``,
    as far as Pillow's writer for it can hold them."""
    icc, exif, xmp, comment = (meta.get(k) for k in ("icc_profile", "exif", "xmp", "comment"))
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(comment, bytes):
        comment = comment.decode("utf-8", "replace")
    kw: Dict[str, Any] = {}
    if fmt == "GCP":
        return {k: v for k, v in meta.items()}
    if fmt in ("PNG", "JPEG", "WEBP", "TIFF", "MPO"):
        kw["icc_profile"] = icc  # None drops a profile the image carries in info
        if exif:
            kw["exif"] = exif
    if fmt == "PNG" and (xmp or comment):
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"), zip=True)
        if comment:
            info.add_itxt("Comment", comment)
        kw["pnginfo"] = info
    if fmt in ("JPEG", "MPO", "WEBP") and xmp:
        kw["xmp"] = xmp
    if fmt in ("JPEG", "MPO", "GIF"):
        kw["comment"] = comment or None
    if fmt == "TIFF":
        if xmp or exif:
            tags = Image.Exif()
            if exif:
                tags.load(exif if bytes(exif[:6]) == b"Exif\x00\x00" else b"Exif\x00\x00" + bytes(exif))
            if xmp:
                tags[700] = xmp  # XMLPacket
            kw.pop("exif", None)
            kw["tiffinfo"] = tags
        if comment:
            kw["description"] = comment
    return kw


def _has_alpha(p: Image.Image) -> bool:
    return p.mode == "P" and p.palette is not None and p.palette.mode == "RGBA"


def _gif_ready(p: Image.Image) -> Image.Image:
    """A P image with an RGBA palette -> RGB palette + ONE transparent index (GIF's rule): every
    entry with alpha below GIF_ALPHA_THRESHOLD becomes that index, the others opaque."""
    from . import adapter

    pal = adapter.palette_of(p)
    rgb = pal[:, :3].tobytes()
    if pal.shape[1] == 3:
        return p
    clear, t = _gif_clear(pal)
    out = p
    if clear:
        lut = [t if i in clear else i for i in range(256)]
        out = p.point(lut) if len(clear) > 1 else p.copy()
    else:
        out = p.copy()
    out.putpalette(rgb, "RGB")
    out.info.pop("transparency", None)
    if clear:
        out.info["transparency"] = t
    return out


def _gif_clear(pal: Any) -> Tuple[List[int], int]:
    """GIF's one transparent index for an (n, 4) palette: the entries with alpha below GIF_ALPHA_THRESHOLD, and
    the one they all become (the lowest alpha, then the lowest index; -1 when there are none)."""
    clear = [i for i in range(len(pal)) if pal[i, 3] < GIF_ALPHA_THRESHOLD]
    return clear, (min(clear, key=lambda i: (int(pal[i, 3]), i)) if clear else -1)


def _as_written(fmt: str, arrays: Tuple[Any, Any]) -> Tuple[Any, Any]:
    """(indices, palette) as a ``fmt`` file holds them: for GIF, the rule of :func:`_gif_ready` (every entry with
    alpha below GIF_ALPHA_THRESHOLD becomes the one transparent index, the others opaque), so that a quality
    target is measured on what is written; other formats unchanged."""
    indices, pal = arrays
    if fmt != "GIF" or pal.shape[1] == 3:
        return arrays
    import numpy as np

    clear, t = _gif_clear(pal)
    out = pal.copy()
    out[:, 3] = 255
    if clear:
        out[t, 3] = 0
        lut = np.arange(len(pal), dtype=np.uint8)
        lut[clear] = t
        indices = lut[indices]
    return indices, out


def _flatten(rgba: Image.Image) -> Image.Image:
    """RGBA over opaque white -> RGB (for formats without alpha)."""
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _save(im: Image.Image, fmt: str, kw: Dict[str, Any]) -> bytes:
    if fmt == "GCP":
        return _save_gcp(im, **kw)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _save_gcp(im: Image.Image, **kw: Any) -> bytes:
    """The bytes ``im.save(f, "GCP", **kw)`` writes.

    The buffer is named ``*.gcp`` and the format left to ``Image.save``, which takes it from the
    name: with a format given, Pillow first imports its five common plugins (BMP, GIF, JPEG, PPM,
    PNG: ``Image.preinit``, ~5 ms at a command's start), which a GCP save never uses. The same save
    handler gets the same arguments; if ``.gcp`` names another format here, the format is given.
    """
    buf = io.BytesIO()
    if Image.EXTENSION.get(".gcp") == "GCP":
        buf.name = "pillow-gcp-output.gcp"
        im.save(buf, **kw)
    else:
        im.save(buf, "GCP", **kw)
    return buf.getvalue()


def encode_image(im: Image.Image, fmt: str, meta: Optional[Dict[str, Any]] = None,
                 options: Optional[Dict[str, Any]] = None) -> bytes:
    """``im`` (a P image, or the RGB / RGBA image of :func:`adapter.pixels`) as a ``fmt`` file.

    * PNG keeps a P image as PNG-8 (its alpha as tRNS); GIF gets one transparent index (entries with
      alpha below 128); WebP is lossless.
    * Other formats: a P image is written as P if the format takes it, else as RGBA when the image
      has alpha and the format holds it, else as RGB; alpha that the format cannot hold (JPEG, BMP,
      PPM...) is flattened over white.
    * ``meta`` (icc_profile, exif, xmp, comment) goes into the file as far as the format holds it.
    """
    fmt = fmt.upper()
    kw = _metadata_kwargs(fmt, meta or {})
    if fmt == "WEBP":
        kw.setdefault("lossless", True)
        kw.setdefault("quality", 100)
    kw.update(options or {})
    if fmt == "GIF" and im.mode == "P":
        return _save(_gif_ready(im), fmt, kw)
    alpha = _has_alpha(im) or im.mode == "RGBA"
    if alpha and fmt in _ALPHA_IGNORED:
        return _save(_flatten(im.convert("RGBA")), fmt, kw)
    if im.mode == "P" and (fmt in ("PNG", "GCP") or not alpha):
        try:
            return _save(im, fmt, kw)
        except (OSError, ValueError, KeyError):
            if fmt in ("PNG", "GCP"):
                raise
    if alpha:
        rgba = im.convert("RGBA")
        try:
            return _save(rgba, fmt, kw)
        except (OSError, ValueError, KeyError):
            return _save(_flatten(rgba), fmt, kw)
    return _save(im if im.mode == "RGB" else im.convert("RGB"), fmt, kw)


# --------------------------------------------------------------------------- quality search


def search_k(measure: Callable[[int], float], meets: Callable[[float], bool], floor: int = 1,
             k_max: int = K_MAX) -> Tuple[int, bool, Dict[int, float]]:
    """Smallest k in ``floor..k_max`` whose ``measure(k)`` ``meets`` the target.

    Doubles k from ``floor`` until the target is met, then bisects between the last failing and
    the first meeting k. The k returned meets the target and k // 2 (when >= floor) is checked to
    miss it; if quality is not monotonic in k and k // 2 meets it too, the search goes on below.
    Returns ``(k, reached, tried)``; when even ``k_max`` misses, ``(k_max, False, tried)``.
    ``measure`` is called at most once per k.
    """
    tried: Dict[int, float] = {}

    def ok(k: int) -> bool:
        if k not in tried:
            tried[k] = measure(k)
        return meets(tried[k])

    k = floor
    while not ok(k):
        if k >= k_max:
            return k_max, False, tried
        k = min(k_max, k * 2)
    hi = k
    while True:
        failing = [kk for kk, v in tried.items() if kk < hi and not meets(v)]
        lo = max(failing) if failing else floor - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        half = hi // 2
        if half < floor or not ok(half):
            return hi, True, tried
        hi = half


def _target(target_psnr: Optional[float], target_de: Optional[float]
            ) -> Tuple[str, str, Callable[[float], bool], float]:
    """(name, unit, measure(orig, pair-list) , meets) of a quality target."""
    if target_psnr is not None and target_de is not None:
        raise ValueError("give target_psnr or target_de, not both")
    if target_psnr is not None:
        goal = float(target_psnr)
        return "PSNR", " dB", lambda v: v >= goal, goal
    if target_de is None:
        raise ValueError("give target_psnr or target_de")
    limit = float(target_de)
    return "deltaE", " (OKLab x100)", lambda v: v <= limit, limit


def _quality(pairs: Sequence[Tuple[Any, Any]], psnr_target: bool) -> float:
    """PSNR (dB) or mean deltaE x100 over all pixels of (original, result) array pairs."""
    from . import metrics

    n = sum(a.shape[0] * a.shape[1] for a, _ in pairs)
    if psnr_target:
        return metrics.psnr_from_mse(sum(metrics.sse(a, b) for a, b in pairs) / (3 * n) if n else 0.0)
    return sum(float(metrics.delta_e_map(a, b).sum()) for a, b in pairs) / n if n else 0.0


def _floor_k(params: Dict[str, Any]) -> int:
    fixed = params.get("fixed_colors")
    return max(1, len({tuple(c) for c in fixed})) if fixed else 1


def _search(originals: List[Any], run: Callable[[int], List[Tuple[Any, Any]]], params: Dict[str, Any],
            target_psnr: Optional[float], target_de: Optional[float]
            ) -> Tuple[int, List[Tuple[Any, Any]], float, Optional[str], Dict[int, float]]:
    """Quality search over k: returns (k, results at k, value, warning, tried)."""
    from . import metrics

    name, unit, meets, goal = _target(target_psnr, target_de)
    kept: Dict[int, List[Tuple[Any, Any]]] = {}

    def measure(k: int) -> float:
        res = run(k)
        v = _quality([(o, metrics.expand(*r)) for o, r in zip(originals, res)], target_psnr is not None)
        if meets(v):  # a meeting k: results above it are never chosen any more
            for kk in [kk for kk in kept if kk > k]:
                del kept[kk]
        if meets(v) or k == K_MAX:
            kept[k] = res
        return v

    k, reached, tried = search_k(measure, meets, _floor_k(params))
    warning = None
    if not reached:
        warning = f"target {name} {goal:g}{unit} not reached; best is {tried[k]:.2f}{unit} at k={k}"
    return k, kept[k], tried[k], warning, tried


# --------------------------------------------------------------------------- compress


def _check_format(fmt: str) -> str:
    f = str(fmt).upper()
    if f not in COMPRESS_FORMATS:
        raise ValueError(f"format must be one of {sorted(COMPRESS_FORMATS)}, got {fmt!r}")
    return f


def _meta(im: Image.Image, strip: bool) -> Dict[str, Any]:
    from . import adapter

    if strip:  # explicit None: the save must not fall back on im.info
        return {"icc_profile": None, "comment": None}
    return adapter.all_metadata(im)


def _output_options(fmt: str, level: Optional[int]) -> Dict[str, Any]:
    if fmt == "GCP":
        return {} if level is None else {"compress_level": level}
    if fmt == "PNG":
        return {"optimize": True}
    if fmt == "WEBP":
        return {"lossless": True, "quality": 100}  # method 4 (default): method 5-6 are ~10 % smaller, 6-50x slower
    return {}


def _measured(result: Compressed, original_pixels: Any, min_psnr: Optional[float], measure: bool) -> Compressed:
    """Fill in colours and PSNR of the written bytes; QualityError below ``min_psnr``."""
    if not (measure or min_psnr is not None):
        return result
    from . import adapter, metrics

    with Image.open(io.BytesIO(result.data)) as out:
        out.load()
        used = out.getcolors(K_MAX) if out.mode == "P" else None
        result.colors = len(used) if used is not None else None
        result.psnr = metrics.psnr(original_pixels, adapter.pixels(out))
    if min_psnr is not None and result.psnr < min_psnr:
        raise QualityError(result.psnr, min_psnr, result.k if result.k is not None else K_MAX)
    return result


def _opaque_palette_warning(im: Image.Image, palette: Any) -> Optional[str]:
    """A warning when a given palette has no transparent entry but ``im`` has transparent pixels
    (they are mapped to opaque colours), else None."""
    from . import adapter

    if palette is None or not (im.mode in adapter.ALPHA_MODES or "transparency" in im.info or _has_alpha(im)):
        return None

    colors = adapter.palette_colors(palette) if isinstance(palette, Image.Image) else palette
    if any(len(c) == 4 and int(c[3]) < 255 for c in colors):  # (rows of an array, or colour tuples)
        return None
    if adapter.pixels(im).shape[-1] != 4:  # (RGBA only when some alpha is below 255)
        return None
    return "the image has transparent pixels but the palette has no transparent entry: they became opaque"


def _check_quantizer_args(params: Dict[str, Any]) -> None:
    """TypeError naming any of ``params`` that is no quantizer argument (a typo is no silent default)."""
    from . import adapter

    unknown = set(params) - set(adapter.QUANTIZE_KEYS)
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}; allowed: format, strip, level, target_psnr, "
                        f"target_de, min_psnr, measure, {', '.join(adapter.QUANTIZE_KEYS)}")


def compress_image(im: Image.Image, *, format: str = "GCP", strip: bool = False, level: Optional[int] = None,
                   target_psnr: Optional[float] = None, target_de: Optional[float] = None,
                   min_psnr: Optional[float] = None, measure: bool = False, **params: Any) -> Compressed:
    """Compress one opened image to a ``format`` file (GCP, PNG, GIF or WEBP); see the module doc.

    ``params`` are the quantizer arguments of ``Image.save(..., "GCP")`` (k / colors, algo, seed,
    metric, space, dither, fixed_colors, palette). With ``target_psnr`` / ``target_de`` k is the
    smallest meeting the target (not given: k). ``measure`` fills in ``colors`` and ``psnr``.
    Raises ValueError / TypeError for bad arguments, QualityError below ``min_psnr``.
    """
    from . import adapter

    _check_quantizer_args(params)
    fmt = _check_format(format)
    meta = _meta(im, strip)
    options = _output_options(fmt, level)
    original = adapter.pixels(im) if (measure or min_psnr is not None or target_psnr or target_de) else None
    if target_psnr is None and target_de is None:
        k = params.get("k", params.get("colors"))
        if fmt == "GCP":
            result = Compressed(_save_gcp(im, **options, **params, **meta), k)
        else:
            result = Compressed(encode_image(adapter.palette_image(im, **params), fmt, meta, options), k)
        result.warning = _opaque_palette_warning(im, params.get("palette"))
        return _measured(result, original, min_psnr, measure)
    if params.get("k") is not None or params.get("colors") is not None:
        raise ValueError("a quality target chooses k: do not give k as well")
    from .quantizers import check_params

    check_params(**params)
    k, (arrays,), value, warning, tried = _search(
        [original], lambda k: [_as_written(fmt, adapter.prepare(im, k=k, **params))], params, target_psnr, target_de)
    data = encode_image(adapter.to_image(*arrays), fmt, meta, options)
    return _measured(Compressed(data, k, None, None, value, warning, tried), original, min_psnr, measure)


def compress_shared(images: Sequence[Image.Image], *, format: str = "GCP", strip: bool = False,
                    level: Optional[int] = None, target_psnr: Optional[float] = None,
                    target_de: Optional[float] = None, min_psnr: Optional[float] = None, measure: bool = False,
                    **params: Any) -> List[Compressed]:
    """Quantize ``images`` together to ONE palette (:func:`pillow_gcp.quantize_many`) and write each
    one with it. A quality target / floor applies to all the images together."""
    from . import adapter, metrics
    from .quantizers import check_params, quantize_many

    _check_quantizer_args(params)
    fmt = _check_format(format)
    params = adapter.quantize_params(params)
    check_params(**params)
    options = _output_options(fmt, level)
    originals = [adapter.pixels(im) for im in images]

    def run(k: Optional[int]) -> List[Tuple[Any, Any]]:
        p = dict(params, k=k)
        out = []
        for q in quantize_many(list(images), **p):
            arrays = adapter.indexed(q)
            assert arrays is not None  # a P image always has its exact indexed form
            out.append(_as_written(fmt, arrays))
        return out

    warning: Optional[str] = None
    value: Optional[float] = None
    tried: Dict[int, float] = {}
    if target_psnr is None and target_de is None:
        k = params.pop("k", None)
        results = run(k)
    else:
        if params.get("k") is not None:
            raise ValueError("a quality target chooses k: do not give k as well")
        params.pop("k", None)
        k, results, value, warning, tried = _search(originals, run, params, target_psnr, target_de)
    out = [Compressed(encode_image(adapter.to_image(*r), fmt, _meta(im, strip), options), k, None, None, value,
                      warning, tried) for im, r in zip(images, results)]
    if measure or min_psnr is not None:
        decoded = []
        for c in out:
            with Image.open(io.BytesIO(c.data)) as d:
                d.load()
                used = d.getcolors(K_MAX) if d.mode == "P" else None
                c.colors = len(used) if used is not None else None
                decoded.append(adapter.pixels(d))
        for c, o, d in zip(out, originals, decoded):
            c.psnr = metrics.psnr(o, d)
        joint = _quality(list(zip(originals, decoded)), True)
        if min_psnr is not None and joint < min_psnr:
            raise QualityError(joint, min_psnr, k if k is not None else K_MAX)
    return out


def compress_bytes(data: bytes, *, format: str = "GCP", strip: bool = False, **params: Any) -> bytes:
    """The bytes of an image file -> the bytes of its compressed ``format`` file (see module doc).

    ``params``: the quantizer arguments, ``level``, ``target_psnr`` / ``target_de``, ``min_psnr``.
    """
    return compress_image(open_bytes(data), format=format, strip=strip, **params).data


# --------------------------------------------------------------------------- decompress


def decompress_image(im: Image.Image, format: str = "PNG", *, any_input: bool = False) -> bytes:
    """An opened .gcp image (any image with ``any_input``) as a ``format`` file, with its metadata
    (ICC profile, EXIF, XMP, comment) and transparency as far as the format holds them."""
    from . import adapter

    if im.format != "GCP" and not any_input:
        raise NotGCPError(f"not a .gcp file (it is {im.format or 'an image of unknown format'})")
    fmt = str(format).upper()
    if not writable(fmt):
        raise ValueError(f"Pillow cannot write format {format!r}")
    exact = adapter.indexed(im)
    out = adapter.to_image(*exact) if exact is not None else Image.fromarray(adapter.pixels(im))
    return encode_image(out, fmt, adapter.all_metadata(im))


def decompress_bytes(data: bytes, *, format: str = "PNG", any_input: bool = False) -> bytes:
    """The bytes of a .gcp file -> the bytes of a ``format`` file (see :func:`decompress_image`)."""
    return decompress_image(open_bytes(data), format, any_input=any_input)


# --------------------------------------------------------------------------- compare


def compare_picture(original: Image.Image, decoded: Image.Image, amplify: float = 8.0,
                    caption: str = ".gcp") -> Image.Image:
    """Side-by-side RGB picture *original | decoded | |error| x amplify*, with labels.

    The error is :func:`pillow_gcp.metrics.error_map`; images with alpha are shown over a grey
    checkerboard.
    """
    import numpy as np
    from PIL import ImageDraw, ImageFont

    from . import adapter, metrics

    a, b = adapter.pixels(original), adapter.pixels(decoded)
    err = np.clip(metrics.error_map(a, b) * amplify + 0.5, 0, 255).astype(np.uint8)
    w, h = original.size
    if a.shape[2] == 4 or b.shape[2] == 4:
        board = Image.new("RGBA", (w, h), (204, 204, 204, 255))
        draw = ImageDraw.Draw(board)
        for y in range(0, h, 8):
            for x in range((y // 8) % 2 * 8, w, 16):
                draw.rectangle((x, y, x + 7, y + 7), fill=(153, 153, 153, 255))
        views = [Image.alpha_composite(board, Image.fromarray(v).convert("RGBA")).convert("RGB") for v in (a, b)]
    else:
        views = [Image.fromarray(a), Image.fromarray(b)]
    font_size = max(10, min(32, w // 24))
    try:
        font = ImageFont.load_default(size=font_size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        font = ImageFont.load_default()
    label_h = font_size + 6
    sheet = Image.new("RGB", (3 * w + 2 * 4, h + label_h), (255, 255, 255))
    panels = [*views, Image.fromarray(err).convert("RGB")]  # (H, W) uint8 -> L
    labels = ["original", caption, f"|error| x{amplify:g}"]
    draw = ImageDraw.Draw(sheet)
    for i, (p, t) in enumerate(zip(panels, labels)):
        x = i * (w + 4)
        sheet.paste(p, (x, label_h))
        draw.text((x + 2, 2), t, fill=(0, 0, 0), font=font)
    return sheet
