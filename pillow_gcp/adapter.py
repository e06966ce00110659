"""The one place where Pillow images become arrays, and arrays become Pillow images.

Every door into the package (``Image.save(..., "GCP")``, :func:`pillow_gcp.quantize`, the ``gcp``
command line, the bytes-in/bytes-out functions) goes through these functions, so that one image
gives one result whichever door it takes.

Arrays
======
``pixels(im)``
    ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA ``uint8``; RGBA only when some alpha is below 255.
``indexed(im)``
    ``(indices (H, W) uint8, palette (m, 3 | 4) uint8)``, the exact indexed form of a P, PA, L, LA
    or 1 image, or ``None`` when it has none with at most 256 entries.
``palette_of(im)``
    ``(m, 3 | 4) uint8``: a P image's palette with its transparency as alpha.

The rule for samples that are not 8-bit
=======================================
* ``I;16``, ``I;16L``, ``I;16B``, ``I;16N``: the full 16-bit range maps onto 8 bits,
  ``v8 = round(v16 / 257)`` (0 -> 0, 65535 -> 255).
* ``I`` and ``F``: as Pillow's own ``im.convert("L")`` (values clipped to 0..255).
* Nothing depends on the image's own minimum or maximum.

Transparency (as Pillow's PNG writer reads it)
==============================================
``transparency`` given to ``save`` wins over ``im.info["transparency"]``: for P images an index
or a bytes string of per-entry alpha; for 1, L, I and I;16 a sample value; for RGB an
``(r, g, b)`` tuple. Pixels equal to it become fully transparent. RGBA-like modes carry their own
alpha and ignore it.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "pixels",
    "indexed",
    "palette_of",
    "to_image",
    "prepare",
    "palette_image",
    "save_metadata",
    "all_metadata",
    "floyd_steinberg",
    "check_image",
    "QUANTIZE_KEYS",
]

#: the keyword arguments of a save that reach the quantizer (``colors`` is a synonym of ``k``)
QUANTIZE_KEYS = ("k", "colors", "algo", "seed", "metric", "space", "dither", "fixed_colors", "palette")

#: metadata keys of ``im.info`` that a .gcp file can hold
META_KEYS = ("icc_profile", "exif", "xmp", "comment")

_MISSING = object()
#: modes with an alpha channel (a P image may have alpha in its palette or its transparency)
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N")


def reduced_to_8_bits(im: Image.Image) -> bool:
    """Whether :func:`pixels` reduces ``im``'s samples to 8 bits (16-bit, 32-bit integer and float modes), so that
    "lossless" can only mean: of the 8-bit image."""
    return im.mode in _HIGH_DEPTH or im.mode in ("I", "F")


def check_image(im: Any, name: str = "im") -> Image.Image:
    """``im`` itself if it is a Pillow image, else TypeError naming ``name``."""
    if not isinstance(im, Image.Image):
        raise TypeError(f"{name} must be a PIL.Image.Image, got {type(im).__name__}")
    return im


def _transparency(im: Image.Image, transparency: Any) -> Any:
    """The transparency that applies: the given one, else ``im.info``'s (as PNG does)."""
    return im.info.get("transparency") if transparency is _MISSING else transparency


def _check_level(value: Any, mode: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"transparency for mode {mode!r} must be an int sample value, got {value!r}")
    return int(value)


def _grey8(im: Image.Image) -> np.ndarray:
    """(H, W) uint8 grey levels of a single-band image under the non-8-bit rule."""
    if im.mode in _HIGH_DEPTH:
        a = np.asarray(im).astype(np.uint32)
        return ((a * 2 + 257) // 514).astype(np.uint8)  # round(v / 257), halves up
    if im.mode in ("I", "F"):
        return np.asarray(im.convert("L"))
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    return np.asarray(im)


def _transparent(im: Image.Image, trns: Any) -> Optional[np.ndarray]:
    """(H, W) bool mask of the pixels of a 1/L/I/I;16 image equal to ``trns``, or None if none are.

    The comparison is on the raw samples (for mode 1: the bit 0/1, or its level 0/255).
    """
    if trns is None:
        return None
    value = _check_level(trns, im.mode)
    if im.mode == "1":
        bit = np.asarray(im).astype(np.uint8)
        hit = (bit == value) | (bit * 255 == value)
    else:
        hit = np.asarray(im) == value
    return hit if hit.any() else None


def pixels(im: Image.Image, *, transparency: Any = _MISSING) -> np.ndarray:
    """Any Pillow image -> ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array.

    RGBA is returned only when some alpha is below 255. Fully transparent pixels keep their
    colour values (the quantizer normalises them, the lossless path keeps them).
    ``transparency`` overrides ``im.info["transparency"]`` (see the module docstring).
    """
    check_image(im)
    mode = im.mode
    trns = _transparency(im, transparency)
    if mode == "P" or mode == "PA":
        idx, pal = _p_arrays(im, trns)
        rgba = pal[idx] if pal.shape[1] == 4 else None
        if mode == "PA":
            alpha = np.asarray(im.getchannel("A"))
            base = pal[idx] if rgba is None else rgba
            out = np.empty(idx.shape + (4,), np.uint8)
            out[..., :3] = base[..., :3]
            out[..., 3] = alpha if rgba is None else np.minimum(alpha, rgba[..., 3])
            return _drop_opaque_alpha(out)
        return _drop_opaque_alpha(rgba) if rgba is not None else pal[idx]
    if mode in ("1", "L", "I", "F") or mode in _HIGH_DEPTH:
        g = _grey8(im)
        rgb = np.repeat(g[:, :, None], 3, axis=2)
        hit = _transparent(im, trns) if mode != "F" else None
        if hit is not None:
            out = np.empty(g.shape + (4,), np.uint8)
            out[..., :3] = rgb
            out[..., 3] = np.where(hit, 0, 255)
            return out
        return rgb
    if mode in ALPHA_MODES:
        if mode == "La":  # Pillow converts premultiplied La only to LA
            im = im.convert("LA")
        arr = np.asarray(im if im.mode == "RGBA" else im.convert("RGBA"))
        return _drop_opaque_alpha(arr)
    rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    if mode == "RGB" and trns is not None:
        key = _rgb_key(trns)
        hit = (rgb == np.array(key, np.uint8)).all(axis=2)
        if hit.any():
            out = np.empty(rgb.shape[:2] + (4,), np.uint8)
            out[..., :3] = rgb
            out[..., 3] = np.where(hit, 0, 255)
            return out
    if "A" in im.getbands():  # other modes with alpha
        return _drop_opaque_alpha(np.asarray(im.convert("RGBA")))
    return rgb


def _rgb_key(trns: Any) -> Tuple[int, int, int]:
    if isinstance(trns, (list, tuple)) and len(trns) == 3 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in trns
    ):
        return tuple(int(v) for v in trns)  # type: ignore[return-value]
    raise ValueError(f"transparency for mode 'RGB' must be an (r, g, b) tuple of ints, got {trns!r}")


def _drop_opaque_alpha(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 4 and (arr.size == 0 or arr[..., 3].min() == 255):
        return arr[..., :3]
    return arr


def palette_of(im: Image.Image, *, transparency: Any = _MISSING) -> np.ndarray:
    """A P (or PA) image's palette as ``(m, 3)`` RGB, or ``(m, 4)`` RGBA when it has transparency.

    ``m`` is the number of entries the image's palette holds. The alpha comes from an RGBA
    palette, then from ``transparency`` (an index, or bytes of per-entry alpha).
    """
    check_image(im)
    if im.mode not in ("P", "PA"):
        raise ValueError(f"palette_of needs a 'P' or 'PA' image, got mode {im.mode!r}")
    return _palette(im, _transparency(im, transparency))


def _palette(im: Image.Image, trns: Any) -> np.ndarray:
    mode = im.palette.mode if im.palette is not None else "RGB"
    rgba: np.ndarray = np.frombuffer(bytes(im.getpalette("RGBA") or b""), np.uint8).reshape(-1, 4).copy()
    if trns is not None and not isinstance(trns, (bytes, bytearray)):
        if isinstance(trns, (bool, np.bool_)) or not isinstance(trns, numbers.Integral):
            raise ValueError(f"transparency for mode 'P' must be an int index or bytes, got {trns!r}")
    if isinstance(trns, numbers.Integral) and 0 <= int(trns) < len(rgba):
        rgba[int(trns), 3] = 0
    elif isinstance(trns, (bytes, bytearray)):
        alpha = np.frombuffer(bytes(trns[: len(rgba)]), np.uint8)
        rgba[: len(alpha), 3] = alpha
    if mode != "RGBA" and trns is None:
        rgb: np.ndarray = rgba[:, :3].copy()
        return rgb
    return rgba


def _p_arrays(im: Image.Image, trns: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(indices (H, W), palette (m, 3|4)) of a P image, the palette padded to cover every index
    (Pillow shows missing entries as opaque black)."""
    indices = np.asarray(im if im.mode == "P" else im.getchannel("P"), dtype=np.uint8)
    palette = _palette(im, trns)
    used = int(indices.max()) + 1 if indices.size else 1
    if len(palette) < used:
        pad = np.zeros((used - len(palette), palette.shape[1]), np.uint8)
        if palette.shape[1] == 4:
            pad[:, 3] = 255
        palette = np.vstack([palette, pad])
    return indices, palette


def indexed(im: Image.Image, *, transparency: Any = _MISSING) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The exact indexed form of a P, PA, L, LA or 1 image, or ``None``.

    Returns ``(indices (H, W) uint8, palette (m, 3 | 4) uint8)`` with ``palette[indices]`` equal
    to :func:`pixels` of the image, and ``m <= 256``:

    * P: the image's own indices and palette, unchanged (the palette padded to cover every index,
      alpha dropped when every entry is opaque).
    * L and 1: the grey levels present, in increasing order.
    * PA and LA: the distinct (index, alpha) / (level, alpha) pairs, in increasing order; ``None``
      when there are more than 256 of them.
    * any other mode: ``None``.
    """
    check_image(im)
    mode = im.mode
    trns = _transparency(im, transparency)
    if mode == "P":
        indices, palette = _p_arrays(im, trns)
        if len(palette) == 0:
            palette = np.zeros((1, 3), np.uint8)
        if palette.shape[1] == 4 and (palette[:, 3] == 255).all():
            palette = palette[:, :3].copy()
        return indices, palette
    if mode in ("L", "1"):
        levels = _grey8(im)
        hit = _transparent(im, trns)
        if hit is None:
            present = np.bincount(levels.ravel(), minlength=256) > 0
            values = np.flatnonzero(present).astype(np.uint8)
            lut = np.zeros(256, np.uint8)
            lut[values] = np.arange(len(values), dtype=np.uint8)
            return lut[levels], np.repeat(values[:, None], 3, axis=1)
        return _pairs(levels, np.where(hit, 0, 255).astype(np.uint8), np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))
    if mode in ("PA", "LA"):
        if mode == "PA":
            base, palette = _p_arrays(im, trns)
        else:
            base = np.asarray(im.getchannel("L"))
            palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        alpha = np.asarray(im.getchannel("A"))
        if palette.shape[1] == 4:  # an RGBA palette and the A band: the pixel shows the lower alpha
            alpha = np.minimum(alpha, palette[base, 3])
            palette = palette[:, :3]
        return _pairs(base, alpha, palette)
    return None


def _pairs(base: np.ndarray, alpha: np.ndarray, palette: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Index the distinct (base, alpha) pairs; palette (n, 3) gives the colour of each base value."""
    key = base.astype(np.uint16) << 8 | alpha
    present = np.flatnonzero(np.bincount(key.ravel(), minlength=1 << 16))
    if len(present) > 256:
        return None
    lut = np.zeros(1 << 16, np.uint8)
    lut[present] = np.arange(len(present), dtype=np.uint8)
    out = np.empty((len(present), 4), np.uint8)
    out[:, :3] = palette[present >> 8]
    out[:, 3] = present & 0xFF
    if (out[:, 3] == 255).all():
        out = out[:, :3].copy()
    return lut[key], out


def to_image(indices: np.ndarray, palette: np.ndarray) -> Image.Image:
    """``(H, W)`` uint8 indices and an ``(m, 3 | 4)`` uint8 palette -> a mode "P" image.

    An ``(m, 4)`` palette becomes an RGBA palette (Pillow's PNG, GIF and WebP writers read its
    alpha).
    """
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    palette = np.ascontiguousarray(palette, dtype=np.uint8)
    # frombytes, not fromarray(..., "P"): Pillow 11.3 deprecated fromarray's mode argument
    im = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    im.putpalette(palette.tobytes(), "RGBA" if palette.shape[1] == 4 else "RGB")
    return im


def floyd_steinberg(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Pillow's C Floyd-Steinberg remap of ``rgb`` (H, W, 3) uint8 onto ``palette`` (n, 3) uint8.

    Returns (H, W) uint8 indices into ``palette``; a value ``>= n`` means Pillow picked a
    padding entry (the caller keeps its own mapping for those pixels).
    """
    pal_img = Image.new("P", (1, 1))
    pal_img.putpalette(np.ascontiguousarray(palette[:, :3], dtype=np.uint8).tobytes(), "RGB")
    src = Image.fromarray(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8))  # (H, W, 3) uint8 -> RGB
    return np.asarray(src.quantize(palette=pal_img, dither=Image.Dither.FLOYDSTEINBERG))


# --------------------------------------------------------------------------- the save door


#: keyword arguments of ``im.save(f, "GCP", ...)`` besides the quantizer's and the metadata's
SAVE_KEYS = ("compress_level", "optimize", "transparency", "save_all", "append_images")
#: misspellings of those that are no option of another format either: a TypeError, not silence
_MISSPELT = {"level": "compress_level", "algorithm": "algo", "colours": "colors", "n_colors": "k",
             "num_colors": "k", "dithering": "dither", "fixed_colours": "fixed_colors", "colour_space": "space",
             "color_space": "space", "distance": "metric"}


def check_save_options(options: Mapping[str, Any]) -> None:
    """TypeError for a keyword of a GCP save that misspells one of its options (``colours``,
    ``level``, ``dithering``, ...: :data:`_MISSPELT`, or within edit distance of an option's
    name). Other unknown keywords are ignored, as every Pillow format ignores the options of the
    others (a caller may pass ``quality`` to any format)."""
    import difflib

    known = QUANTIZE_KEYS + META_KEYS + SAVE_KEYS
    for key in options:
        if key in known:
            continue
        meant = _MISSPELT.get(key) or next(iter(difflib.get_close_matches(key, known, 1, 0.8)), None)
        if meant is not None:
            raise TypeError(f"unknown GCP save option {key!r}; did you mean {meant!r}?")


def quantize_params(options: Mapping[str, Any]) -> Dict[str, Any]:
    """The quantizer arguments in ``options`` (a save's keyword arguments), ``colors`` folded into ``k``.

    Raises ValueError when both ``k`` and ``colors`` are given.
    """
    params = {key: options[key] for key in QUANTIZE_KEYS if key in options}
    if "colors" in params:
        colors = params.pop("colors")
        params["k"] = k_or_colors(params.get("k"), colors)
    return params


def k_or_colors(k: Any, colors: Any) -> Any:
    """``k``, or ``colors``, its synonym (Pillow's name); ValueError when both are given."""
    if colors is None:
        return k
    if k is not None:
        raise ValueError("give k or colors (its synonym), not both")
    return colors


def prepare(im: Image.Image, *, transparency: Any = _MISSING, **params: Any) -> Tuple[np.ndarray, np.ndarray]:
    """What ``im.save(f, "GCP", **params)`` stores: ``(indices (H, W) uint8, palette (m, 3|4) uint8)``.

    P, PA, L, LA and 1 images saved without ``k``/``colors``, ``fixed_colors`` or ``palette`` keep
    their exact indexed form (:func:`indexed`); everything else goes to the quantizer
    (:func:`pillow_gcp.quantizers.quantize_array`). Arguments are validated first, also when unused.
    """
    from .quantizers import check_params, quantize_array

    check_image(im)
    params = quantize_params(params)
    unknown = set(params) - set(QUANTIZE_KEYS)
    if unknown:
        raise TypeError(f"unexpected quantizer arguments: {sorted(unknown)}")
    palette = params.get("palette")
    if isinstance(palette, Image.Image):
        params["palette"] = palette_colors(palette)
    check_params(**params)
    if not any(params.get(key) is not None for key in ("k", "fixed_colors", "palette")):
        exact = indexed(im, transparency=transparency)
        if exact is not None:
            return exact
    return quantize_array(pixels(im, transparency=transparency), **params)


def palette_colors(im: Image.Image) -> np.ndarray:
    """The colours of a P image given as ``palette=``: ``(m, 4)`` uint8 RGBA (alpha 255 for opaque
    entries, fully transparent entries as (0, 0, 0, 0)). Raises ValueError naming ``palette``."""
    check_image(im, "palette")
    if im.mode not in ("P", "PA"):
        raise ValueError(f"palette image must have mode 'P', got {im.mode!r}")
    pal = _palette(im, im.info.get("transparency"))
    out = np.full((pal.shape[0], 4), 255, np.uint8)
    out[:, : pal.shape[1]] = pal
    out[out[:, 3] == 0] = 0
    if out.shape[0] == 0:
        raise ValueError("palette image has an empty palette")
    return out


def palette_image(im: Image.Image, **params: Any) -> Image.Image:
    """The mode "P" image that a .gcp save with ``params`` stores (same palette, same indices).

    Saving it as PNG, GIF or WebP gives those formats exactly the .gcp's colours. ``icc_profile``
    is carried over in ``info``; other metadata is the caller's to pass to ``save``.
    """
    transparency = params.pop("transparency", _MISSING)
    out = to_image(*prepare(im, transparency=transparency, **params))
    if im.info.get("icc_profile"):
        out.info["icc_profile"] = im.info["icc_profile"]
    return out


def _meta_bytes(value: Any) -> Any:
    if isinstance(value, Image.Exif):
        return value.tobytes()
    return value


def save_metadata(im: Image.Image, encoderinfo: Mapping[str, Any]) -> Dict[str, Any]:
    """The metadata a save writes, by Pillow's conventions.

    The ICC profile is kept from ``im.info`` unless ``icc_profile`` is passed (``None`` or
    ``b""`` drops it), as PNG does; the comment likewise, as JPEG and GIF do. EXIF and XMP are
    written only when passed (``exif=``, ``xmp=``), as Pillow's PNG writer does, so GPS data
    never travels unasked. Values are checked by the format encoder.
    """
    meta: Dict[str, Any] = {}
    for key in META_KEYS:
        if key in encoderinfo:
            value = encoderinfo[key]
        elif key in ("icc_profile", "comment"):
            value = im.info.get(key)
            if not isinstance(value, (bytes, bytearray, str)):
                value = None  # an odd-typed info value is not the caller's fault
        else:
            value = None
        value = _meta_bytes(value)
        if value is None or (isinstance(value, (bytes, bytearray, str)) and not value):
            continue
        meta[key] = value  # wrong types are reported, naming the key, by the format encoder
    return meta


def all_metadata(im: Image.Image) -> Dict[str, Any]:
    """Save keyword arguments that copy every piece of metadata .gcp can hold from an opened image:
    ``icc_profile``, ``exif``, ``xmp`` (also PNG's ``XML:com.adobe.xmp``) and ``comment``.

    Values of other types than bytes/str (or ``Image.Exif``) are left out.
    """
    info = im.info
    out = {}
    for key in META_KEYS:
        value = info.get(key)
        if value is None and key == "xmp":
            value = info.get("XML:com.adobe.xmp")
        value = _meta_bytes(value)
        if isinstance(value, (bytes, bytearray, str)) and value:
            out[key] = value
    return out
