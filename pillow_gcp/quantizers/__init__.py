"""Palette quantization for pillow-gcp: K-means and K-medoids behind one front door.

Front door
==========
``quantize(img, k=None, algo="kmeans", *, seed=0, metric="euclidean", space="rgb",
dither=False, fixed_colors=None, palette=None) -> PIL.Image`` (mode ``"P"``),
``quantize_many(images, ...) -> list[PIL.Image]`` (one shared palette),
``quantize_to_arrays(img, ...) -> (indices (H, W) uint8, palette (m, 3 or 4) uint8)``,
``register_quantizer(name, step)``.

Array level: ``quantize_array(pixels, k=None, ...) -> (indices, palette)`` takes an ``(H, W, 3)``
RGB or ``(H, W, 4)`` RGBA uint8 array; ``quantize_arrays(list_of_pixels, ...)`` fits one palette to
several. The Pillow front doors turn images into those arrays with :func:`pillow_gcp.adapter.pixels`
(the one place that does so) and back with :func:`pillow_gcp.adapter.to_image`.

The palette-step protocol
=========================
A *palette step* fits a palette to a **weighted histogram of unique colours**; it never
sees pixels.  It is any callable with this signature::

    step(colors, weights, k, *, metric, seed, fixed) -> palette

``colors``
    ``(U, C)`` array, ``C == 3`` (RGB) or ``C == 4`` (RGBA), ``U >= 1``, rows all
    distinct.  Its dtype tells the space:

    * ``uint8``: plain sRGB(A) values (``space="rgb"``, the default).
    * ``float32``: colours already transformed by the front door into a working space
      (``space="oklab"``: OKLab L, a, b multiplied by 100, so that Euclidean distance is
      DeltaE_OK x 100; alpha, when present, is ``alpha / 255 * 100``).  The step must
      treat rows as plain points of R^C and compute its metric on them directly.
``weights``
    ``(U,)`` int64, all ``> 0``: the pixel count of each colour.
``k``
    ``int >= 1``: the maximum number of palette entries to return.
``metric``
    ``"euclidean"``, ``"manhattan"`` or ``"chebyshev"`` - the distance the caller will
    use to map pixels to the palette (exact nearest entry).  K-medoids minimises the
    weighted sum of this distance.  K-means always fits centres by minimising the
    weighted sum of *squared Euclidean* distances (that is what the mean minimises);
    the metric is then only used for the final nearest-entry assignment, which the
    front door does.
``seed``
    ``int >= 0``.  Same inputs and seed -> bit-identical output, run after run.
``fixed``
    ``None`` or ``(F, C)`` array with the same dtype and space as ``colors``,
    ``F <= k``: colours that must be palette entries exactly (bitwise the same rows in
    the output).  They are fixed centres/medoids; the other ``k - F`` entries are
    fitted around them.  Fixed rows may or may not occur in ``colors``.

Returns ``(m, C)`` array of the same dtype as ``colors``, ``m <= k``, containing every
``fixed`` row.  For ``uint8`` input, rows should be distinct and each should be the
nearest entry of at least one colour.  ``m = min(k, U + F_absent)`` is expected.

What the front door does around a step (so a step need not care):

* Colours ``<= k`` (per alpha group, fixed colours counted): the step is *not* called;
  the palette is the colours themselves (lossless for every algorithm).
* Alpha: fully transparent pixels (``a == 0``) are removed before fitting and get one
  reserved entry ``(0, 0, 0, 0)``.  Opaque colours (``a == 255``) and semi-transparent
  colours (``0 < a < 255``) are fitted by **separate** step calls - opaque ones as
  ``C == 3`` RGB, semi-transparent ones as ``C == 4`` RGBA - with the budget ``k`` split
  between the two groups (see :func:`_split_budget`).  Pixels are mapped only to entries
  of their own group, so opaque pixels always land on opaque entries.  A step therefore
  never sees alpha rules.
* Float output (``space="oklab"``): rows equal to an input row are mapped back to that
  colour's exact ``uint8`` value (medoids stay true image colours); other rows are
  converted back to sRGB(A), rounded and clipped.
* Repair: duplicates after rounding are dropped, and if the image has at least ``k``
  distinct colours the palette is completed to exactly ``k`` distinct entries, each
  used by at least one pixel (an unused or missing entry is replaced by the colour
  with the largest weighted error; fixed colours are kept even when unused).
* Mapping: every unique colour goes to its exact nearest entry under ``metric`` in the
  chosen space (chunked, memory bounded by unique colours), or Floyd-Steinberg
  dithering via Pillow when ``dither=True``.

Other front-door rules
======================
* Modes: whatever :func:`pillow_gcp.adapter.pixels` makes of the image: RGB, or RGBA when
  some alpha is below 255; 16-bit samples scaled by the full range (``round(v / 257)``),
  I and F as Pillow's ``convert("L")``.
* Budget split for alpha groups: each group gets its fixed colours or at least one
  entry, the rest in proportion to (pixel count) ** 0.6.  If ``k`` is below the number
  of groups present, priority is opaque > transparent > semi-transparent, and pixels
  of a group without entries go to the nearest entry of any kind.
* Palette order: the transparent entry (if any) is index 0, then opaque entries, then
  semi-transparent ones, each group sorted by luma.
* ``palette=``: used exactly as given (duplicates kept).  Transparent pixels go to an
  entry with alpha 0 if there is one, opaque pixels to entries with alpha 255 if there
  are any, everything else to the nearest entry in RGBA.
* ``dither=True``: Pillow's Floyd-Steinberg remap over the opaque entries, for opaque
  pixels; transparent and semi-transparent pixels keep the exact nearest mapping.
  The ditherer works in RGB whatever ``metric``/``space`` are.

Registry: ``register_quantizer(name, step)`` adds a step; ``algo=`` accepts a
registered name or any callable following the protocol.  ``"kmeans"``
(:mod:`pillow_gcp.quantizers.kmeans`) and ``"kmedoids"``
(:mod:`pillow_gcp.quantizers.kmedoids`, ``kmedoids_palette``) are built in.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import adapter
from . import colorspace, histogram
from .kmeans import kmeans_palette
from .nearest import METRICS, nearest

__all__ = [
    "quantize",
    "quantize_many",
    "quantize_to_arrays",
    "quantize_array",
    "quantize_arrays",
    "check_params",
    "register_quantizer",
    "registered_quantizers",
    "kmeans_palette",
    "METRICS",
    "SPACES",
]

SPACES = ("rgb", "oklab")

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

#: a colour ``(r, g, b)`` or ``(r, g, b, a)``, 0..255
Color = Sequence[int]
#: what ``palette=`` takes: a P image, an (m, 3|4) uint8 array or a sequence of colours
PaletteLike = Union["Image.Image", np.ndarray, Sequence[Color]]
#: what ``algo=`` takes: a registered name or a palette step
Algo = Union[str, Callable[..., Any]]

_REGISTRY: Dict[str, Callable[..., Any]] = {}


def register_quantizer(name: str, step: Callable[..., Any]) -> None:
    """Register a palette step under ``name`` (see the protocol above).

    Registering an existing name replaces it.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    _REGISTRY[name] = step


def registered_quantizers() -> List[str]:
    """Sorted list of registered palette-step names."""
    return sorted(_REGISTRY)


register_quantizer("kmeans", kmeans_palette)
try:  # written by the kmedoids helper
    from .kmedoids import kmedoids_palette
except ImportError:  # pragma: no cover - module not present yet
    kmedoids_palette = None
else:
    register_quantizer("kmedoids", kmedoids_palette)
    __all__.append("kmedoids_palette")


# ----------------------------------------------------------------------------
# validation


def _check_k(k) -> int:
    if k is None:
        return 256
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int in 1..256 or None, got {type(k).__name__} {k!r}")
    k = int(k)
    if not 1 <= k <= 256:
        raise ValueError(f"k must be in 1..256 (or None for 256), got {k}")
    return k


def _check_seed(seed) -> int:
    if seed is None:
        return 0
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a non-negative int or None, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed}")
    return int(seed)


def _check_algo(algo) -> Callable:
    if callable(algo):
        return algo
    if isinstance(algo, str) and algo in _REGISTRY:
        return _REGISTRY[algo]
    raise ValueError(
        f"algo must be one of {registered_quantizers()} or a callable palette step, got {algo!r}")


def _check_choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _parse_colors(name, colors, allow_empty=False) -> np.ndarray:
    """A sequence of (r, g, b) / (r, g, b, a) ints 0..255, or an (n, 3|4) array -> (n, 4) uint8.

    3-tuples get alpha 255.  Fully transparent entries are normalised to (0, 0, 0, 0).
    """
    try:
        rows = [tuple(c) for c in colors]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of (r, g, b) or (r, g, b, a) tuples") from None
    if not rows and not allow_empty:
        raise ValueError(f"{name} must contain at least one colour")
    out = np.empty((len(rows), 4), np.uint8)
    for i, r in enumerate(rows):
        if len(r) not in (3, 4):
            raise ValueError(f"{name}[{i}] must have 3 or 4 components, got {r!r}")
        for v in r:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or not 0 <= v <= 255:
                raise ValueError(f"{name}[{i}] components must be ints in 0..255, got {r!r}")
        out[i, :len(r)] = r
        if len(r) == 3:
            out[i, 3] = 255
    out[out[:, 3] == 0] = 0
    return out


def parse_palette(palette: PaletteLike) -> np.ndarray:
    """The colours of a ``palette=`` argument (a P image, an (m, 3|4) uint8 array or a sequence of
    colours).

    Returns (m, 4) uint8 RGBA, alpha 255 for RGB entries; a P image's ``transparency`` is
    applied. Raises ValueError/TypeError naming ``palette``.
    """
    return _parse_palette(palette)


def _parse_palette(palette) -> np.ndarray:
    """palette= argument -> (m, 4) uint8 (alpha 255 for RGB palettes)."""
    if hasattr(palette, "getpalette") and hasattr(palette, "mode"):  # a Pillow image
        out = adapter.palette_colors(palette)
    elif isinstance(palette, (str, bytes)):
        raise TypeError("palette must be a 'P' image or a sequence of colour tuples")
    else:
        out = _parse_colors("palette", palette)
    if out.shape[0] > 256:
        raise ValueError(f"palette must have at most 256 colours, got {out.shape[0]}")
    return out


def _check_pixels(pixels, name="pixels") -> np.ndarray:
    """Validate an (H, W, 3|4) uint8 array (the array-level door)."""
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape (H, W, 3) or (H, W, 4), "
                        f"got {type(pixels).__name__}")
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"{name} must have shape (H, W, 3) or (H, W, 4), got {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {pixels.dtype}")
    if pixels.shape[2] == 4 and (pixels.size == 0 or pixels[..., 3].min() == 255):
        pixels = pixels[..., :3]
    return pixels


# ----------------------------------------------------------------------------
# histogram of one or more images


class _Hist:
    """Weighted unique colours: keys (U,) uint32 sorted, counts (U,) int64, C 3 or 4.

    For C == 4, every fully transparent colour is normalised to key 0 (0, 0, 0, 0).
    """

    def __init__(self, keys, counts, C):
        self.keys = keys
        self.counts = counts
        self.C = C
        self.colors = histogram.unpack(keys, C)


def _image_keys(arr: np.ndarray, C: int) -> np.ndarray:
    """(H, W, 3|4) uint8 -> (H*W,) uint32 keys in a C-channel histogram."""
    if C == 3:
        return histogram.pack(arr).ravel()
    if arr.shape[2] == 3:
        keys = histogram.pack(arr).ravel()
        keys |= np.uint32(0xFF000000)
        return keys
    keys = histogram.pack(arr).ravel()
    keys[arr[..., 3].ravel() == 0] = 0
    return keys


# ----------------------------------------------------------------------------
# palette fitting


def _split_budget(k, sizes, weights, fixed_counts):
    """Split ``k`` entries between colour groups.

    sizes: unique colours per group not already fixed, weights: pixel counts,
    fixed_counts: fixed entries per group.  Each group gets its fixed entries, at
    least one entry if it has colours, never more than it can use, and the rest in
    proportion to ``weight ** 0.6`` (the high-resolution optimum allocation for
    3-D squared error, ignoring spread), by largest remainder.
    """
    n = [max(f, 1 if s > 0 else 0) for s, f in zip(sizes, fixed_counts)]
    cap = [s + f for s, f in zip(sizes, fixed_counts)]
    left = k - sum(n)
    while left > 0:
        open_ = [g for g in range(len(n)) if n[g] < cap[g]]
        if not open_:
            break
        share = np.array([float(weights[g]) ** 0.6 for g in open_])
        share = share / share.sum() * left
        give = np.floor(share).astype(int)
        if give.sum() == 0:
            give[int(np.argmax(share))] = 1
        for g, d in zip(open_, give):
            d = min(int(d), cap[g] - n[g], left)
            n[g] += d
            left -= d
    return n


def _repair(X, colors8, w, P8, target, nfix, metric, to_space):
    """Make ``P8`` (m, C) uint8 exactly ``target`` distinct entries, all used.

    Returns ``(P8, idx)``: the palette and the exact nearest entry of every colour.

    X (U, C) colours in the mapping space, w (U,) weights, the first ``nfix`` rows of
    P8 are fixed (kept even if unused).  Needs U + (fixed rows absent from X) >= target.
    Unused or missing entries are replaced by the worst-represented colours; a final
    fallback snaps every free entry onto one of its own member colours, which makes
    each of them its own nearest entry.
    """
    P8 = _dedupe_rows(P8, nfix)
    for attempt in range(12):
        Ps = to_space(P8)
        idx, d = nearest(X, Ps, metric, return_dist=True)
        cnt = np.bincount(idx, minlength=P8.shape[0])
        free_unused = np.flatnonzero(cnt[nfix:] == 0) + nfix
        missing = target - P8.shape[0]
        if missing <= 0 and free_unused.size == 0:
            return P8, idx
        need = max(missing, 0) + free_unused.size
        err = d.astype(np.float64) * w
        err[d <= 0] = -1.0  # colours already in the palette
        order = np.argsort(-err, kind="stable")[:need]
        order = order[err[order] > 0]
        newc = colors8[order]
        keep = np.ones(P8.shape[0], bool)
        n_replace = min(free_unused.size, newc.shape[0])
        P8 = P8.copy()
        P8[free_unused[:n_replace]] = newc[:n_replace]
        extra = newc[n_replace:][: max(missing, 0)]
        if free_unused.size > n_replace:
            keep[free_unused[n_replace:]] = False
        P8 = np.concatenate([P8[keep], extra])
        P8 = _dedupe_rows(P8, nfix)
        if attempt >= 3:
            break
    # fallback: every free entry becomes a true colour of its own cluster
    Ps = to_space(P8)
    idx, d = nearest(X, Ps, metric, return_dist=True)
    m = P8.shape[0]
    best_member = np.full(m, -1, np.int64)
    order = np.lexsort((d, idx))  # by entry, then distance
    first = np.ones(order.size, bool)
    first[1:] = idx[order][1:] != idx[order][:-1]
    best_member[idx[order][first]] = order[first]
    P8 = P8.copy()
    used_free = [j for j in range(nfix, m) if best_member[j] >= 0]
    P8[used_free] = colors8[best_member[used_free]]
    unused = [j for j in range(nfix, m) if best_member[j] < 0]
    P8 = np.delete(P8, unused, axis=0)
    need = target - P8.shape[0]
    if need > 0:
        present = np.isin(histogram.pack(colors8), histogram.pack(P8))
        cand = np.flatnonzero(~present)
        cand = cand[np.argsort(-(d[cand].astype(np.float64) * w[cand]), kind="stable")][:need]
        P8 = np.concatenate([P8, colors8[cand]])
    return P8, nearest(X, to_space(P8), metric)


def _dedupe_rows(P, nfix=0):
    """Drop repeated rows (first occurrence wins, so fixed rows survive), keep order."""
    if P.shape[0] == 0:
        return P
    _, first = np.unique(P, axis=0, return_index=True)
    return P[np.sort(first)]


def _to_space_fn(space):
    if space == "rgb":
        return lambda P8: P8
    return colorspace.to_oklab


def _from_step(out, colors_sp, colors8, space, C):
    """Step output -> (m, C) uint8; float rows equal to an input row map back exactly."""
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[1] != C:
        raise ValueError(f"palette step returned shape {out.shape}, expected (m, {C})")
    if space == "rgb":
        if out.dtype != np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out
    out = out.astype(np.float32)
    res = colorspace.from_oklab(out)
    if out.shape[0]:
        idx, d = nearest(out, colors_sp, "euclidean", return_dist=True)
        exact = d == 0
        res[exact] = colors8[idx[exact]]
    return res


def _fit_group(colors8, weights, n, fixed8, step, metric, space, seed):
    """Fit ``n`` entries to one alpha group. colors8 (U, C) uint8 distinct, fixed8 (F, C).

    Returns ``(palette (m, C) uint8, idx (U,))``, idx the exact nearest entry of each colour.
    """
    C = colors8.shape[1]
    F = fixed8.shape[0]
    to_space = _to_space_fn(space)
    if n <= 0:
        return np.zeros((0, C), np.uint8), None
    # lossless when everything fits
    if colors8.shape[0] + F <= n:
        P8 = _dedupe_rows(np.concatenate([fixed8, colors8]))
        return P8, nearest(to_space(colors8), to_space(P8), metric)
    X = to_space(colors8)
    fixed_sp = to_space(fixed8) if F else None
    out = step(X, weights, n, metric=metric, seed=seed, fixed=fixed_sp)
    P8 = _from_step(out, X, colors8, space, C)
    if P8.shape[0] + F == 0:
        raise ValueError(f"palette step returned no entries for {colors8.shape[0]} colours; "
                         f"it must return 1..{n} rows")
    if F:
        # fixed colours first and exact, whatever the step did with them
        P8 = np.concatenate([fixed8, P8])
    P8 = _dedupe_rows(P8, F)
    return _repair(X, colors8, weights.astype(np.float64), P8, n, F, metric, to_space)


# ----------------------------------------------------------------------------
# the pipeline


class _Opts:
    __slots__ = ("k", "step", "seed", "metric", "space", "dither", "fixed", "palette")


def _validate(k, algo, seed, metric, space, dither, fixed_colors, palette) -> _Opts:
    o = _Opts()
    o.k = _check_k(k)
    o.step = _check_algo(algo)
    o.seed = _check_seed(seed)
    o.metric = _check_choice("metric", metric, METRICS)
    o.space = _check_choice("space", space, SPACES)
    o.dither = _check_bool("dither", dither)
    o.palette = None if palette is None else _parse_palette(palette)
    if fixed_colors is None:
        o.fixed = np.zeros((0, 4), np.uint8)
    else:
        if o.palette is not None:
            raise ValueError("fixed_colors and palette cannot be combined: palette= is used as is")
        f = _parse_colors("fixed_colors", fixed_colors, allow_empty=True)
        f = _dedupe_rows(f)
        if f.shape[0] > o.k:
            raise ValueError(f"fixed_colors has {f.shape[0]} distinct colours, more than k={o.k}")
        o.fixed = f
    return o


def check_params(k: Optional[int] = None, algo: Algo = "kmeans", *, seed: int = 0, metric: str = "euclidean",
                 space: str = "rgb", dither: bool = False, fixed_colors: Optional[Sequence[Color]] = None,
                 palette: Optional[PaletteLike] = None) -> None:
    """Validate quantizer arguments without quantizing anything.

    Raises the same ``ValueError`` / ``TypeError`` (naming the parameter) as
    :func:`quantize`; used where an argument would otherwise go unused, such as
    a lossless save of a P image.
    """
    _validate(k, algo, seed, metric, space, dither, fixed_colors, palette)


def _alpha_groups(colors4: np.ndarray):
    """(U, 4) uint8 -> boolean masks (transparent, opaque, semi)."""
    a = colors4[:, 3]
    return a == 0, a == 255, (a > 0) & (a < 255)


def _luma_order(P):
    """Stable order of palette rows by Rec.601 luma, then by the raw colour."""
    if P.shape[0] < 2:
        return np.arange(P.shape[0])
    luma = P[:, :3].astype(np.int64) @ np.array([299, 587, 114])
    keys = [P[:, c] for c in range(P.shape[1] - 1, -1, -1)] + [luma]
    return np.lexsort(keys)


def _map_group(colors_g, cand, P4, metric, space):
    """Exact nearest entry of P4[cand] (cand: global indices) for colours_g (n, C) uint8."""
    C = colors_g.shape[1]
    to_space = _to_space_fn(space)
    Pc = P4[cand][:, :C]
    idx = nearest(to_space(colors_g), to_space(Pc), metric)
    return cand[idx]


def _assign(colors: np.ndarray, C: int, P4: np.ndarray, metric: str, space: str) -> np.ndarray:
    """Global palette index for every unique colour (U, C) under the alpha rules.

    P4 (m, 4) uint8 palette.  Opaque colours go to opaque entries (RGB metric),
    transparent ones to a transparent entry, semi-transparent ones to any entry
    (RGBA metric); a group whose kind of entry is absent uses all entries (RGBA).
    """
    U = colors.shape[0]
    out = np.zeros(U, np.int64)
    m = P4.shape[0]
    allidx = np.arange(m)
    if C == 3:
        cand = np.flatnonzero(P4[:, 3] == 255)
        if cand.size:
            out[:] = _map_group(colors, cand, P4, metric, space)
        else:
            c4 = np.concatenate([colors, np.full((U, 1), 255, np.uint8)], axis=1)
            out[:] = _map_group(c4, allidx, P4, metric, space)
        return out
    tr, op, se = _alpha_groups(colors)
    pa = P4[:, 3]
    if op.any():
        cand = np.flatnonzero(pa == 255)
        if cand.size:
            out[op] = _map_group(colors[op][:, :3], cand, P4, metric, space)
        else:
            out[op] = _map_group(colors[op], allidx, P4, metric, space)
    if tr.any():
        cand = np.flatnonzero(pa == 0)
        out[tr] = cand[0] if cand.size else _map_group(colors[tr], allidx, P4, metric, space)
    if se.any():
        cand = np.flatnonzero((pa > 0) & (pa < 255))
        if not cand.size:
            cand = allidx
        out[se] = _map_group(colors[se], cand, P4, metric, space)
    return out


def _fit_palette(colors: np.ndarray, counts: np.ndarray, C: int, o: _Opts):
    """Fit the palette to a histogram. colors (U, C) uint8 distinct, counts (U,).

    Returns ``(P4 (m, 4) uint8, gidx (U,) int64 or None)``: the palette and, when the
    groups' own mappings cover every colour, the global entry of each colour (else
    None and the caller maps with :func:`_assign`).

    Order: the transparent entry (if any) first, then opaque entries, then
    semi-transparent ones, each group sorted by luma.
    """
    fx = o.fixed
    f_tr = fx[fx[:, 3] == 0]
    f_op = fx[fx[:, 3] == 255][:, :3]
    f_se = fx[(fx[:, 3] > 0) & (fx[:, 3] < 255)]
    if C == 3:
        c_op, w_op = colors, counts
        c_se, w_se = np.zeros((0, 4), np.uint8), np.zeros(0, np.int64)
        has_tr = False
        op = se = None
    else:
        tr, op, se = _alpha_groups(colors)
        c_op, w_op = colors[op][:, :3], counts[op]
        c_se, w_se = colors[se], counts[se]
        has_tr = bool(tr.any())
    has_tr_pixels = has_tr
    has_tr = has_tr or f_tr.shape[0] > 0

    def absent(fixed_g, colors_g):
        if not fixed_g.shape[0]:
            return 0
        return int((~np.isin(histogram.pack(fixed_g), histogram.pack(colors_g))).sum())

    # group sizes counted without colours that are also fixed
    sizes = [c_op.shape[0] - (f_op.shape[0] - absent(f_op, c_op)),
             c_se.shape[0] - (f_se.shape[0] - absent(f_se, c_se))]
    # minimum entries per group; when k cannot hold them all, priority goes to
    # opaque, then transparent, then semi-transparent (pixels of a group left without
    # entries are mapped to the nearest entry of any kind)
    need_op = max(f_op.shape[0], 1 if c_op.shape[0] else 0)
    need_se = max(f_se.shape[0], 1 if c_se.shape[0] else 0)
    if need_op + (1 if has_tr else 0) + need_se <= o.k:
        keep_tr = has_tr
        n_op, n_se = _split_budget(o.k - (1 if has_tr else 0), sizes,
                                   [int(w_op.sum()), int(w_se.sum())],
                                   [f_op.shape[0], f_se.shape[0]])
    else:
        n_op = min(need_op, o.k)
        keep_tr = has_tr and n_op < o.k
        n_se = o.k - n_op - (1 if keep_tr else 0)
    seed = o.seed
    empty3, empty4 = np.zeros((0, 3), np.uint8), np.zeros((0, 4), np.uint8)
    P_op, i_op = (_fit_group(c_op, w_op, n_op, f_op, o.step, o.metric, o.space, seed)
                  if c_op.shape[0] or f_op.shape[0] else (empty3, None))
    P_se, i_se = (_fit_group(c_se, w_se, n_se, f_se, o.step, o.metric, o.space, seed)
                  if c_se.shape[0] or f_se.shape[0] else (empty4, None))
    r_op = _luma_order(P_op)
    r_se = _luma_order(P_se)
    P_op, P_se = P_op[r_op], P_se[r_se]
    parts = []
    if keep_tr:
        parts.append(np.zeros((1, 4), np.uint8))
    parts.append(np.concatenate([P_op, np.full((P_op.shape[0], 1), 255, np.uint8)], axis=1))
    parts.append(P_se)
    P4 = np.concatenate(parts)
    # global index of every unique colour, from the groups' own exact mappings
    gidx = None
    if i_op is not None and (i_se is not None or not c_se.shape[0]) and (keep_tr or not has_tr_pixels) \
            and (c_op.shape[0] == 0 or P_op.shape[0]) and P4.shape[0] <= o.k:
        off_op = 1 if keep_tr else 0
        off_se = off_op + P_op.shape[0]
        inv_op = np.empty(r_op.size, np.int64)
        inv_op[r_op] = np.arange(r_op.size)
        gidx = np.zeros(colors.shape[0], np.int64)
        if C == 3:
            gidx[:] = off_op + inv_op[i_op]
        else:
            gidx[op] = off_op + inv_op[i_op]
            if c_se.shape[0]:
                inv_se = np.empty(r_se.size, np.int64)
                inv_se[r_se] = np.arange(r_se.size)
                gidx[se] = off_se + inv_se[i_se]
    return P4[: o.k], gidx


def _dither_indices(arr: np.ndarray, P4: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Floyd-Steinberg via Pillow's C remap for the opaque pixels of arr (H, W, C).

    base (H, W) exact-nearest indices; returns a copy with opaque pixels dithered
    over the opaque entries.  Transparent and semi-transparent pixels keep ``base``.
    """
    cand = np.flatnonzero(P4[:, 3] == 255)
    if cand.size == 0:
        return base
    q = adapter.floyd_steinberg(arr[..., :3], P4[cand, :3])
    ok = q < cand.size
    out = base.copy()
    sel = ok if arr.shape[2] == 3 else ok & (arr[..., 3] == 255)
    out[sel] = cand[q[sel]]
    return out


def _index_image(arr: np.ndarray, C: int, ukeys: np.ndarray, gidx: np.ndarray,
                 P4: np.ndarray, dither: bool, keys=None) -> np.ndarray:
    """(H, W, 3|4) uint8 image -> (H, W) uint8 palette indices."""
    if keys is None:
        keys = _image_keys(arr, C)
    idx = histogram.map_keys(keys, ukeys, gidx.astype(np.uint8)).reshape(arr.shape[:2])
    if dither:
        idx = _dither_indices(arr, P4, idx)
    return idx


def _out_palette(P4: np.ndarray) -> np.ndarray:
    """RGBA palette -> RGB when every entry is opaque."""
    return P4[:, :3].copy() if (P4[:, 3] == 255).all() else P4


def _run(sources: Sequence[Callable[[], np.ndarray]], o: _Opts):
    """Shared implementation: list of pixel sources -> (list of (H, W) uint8, palette (m, 3|4)).

    Each source is a callable giving an (H, W, 3|4) uint8 array; with several sources each is
    called twice (histogram pass, then mapping pass), so images are never held all at once.
    """
    # pass 1: histograms, one image at a time (no stacking).  A single image keeps
    # its array and keys for the mapping pass; several images are re-read then.
    hists = []
    C = 3
    single = len(sources) == 1
    keep = None
    for source in sources:
        arr = source()
        c = arr.shape[2]
        C = max(C, c)
        keys = _image_keys(arr, c)
        hists.append((histogram.unique_keys(keys), c))
        if single:
            keep = (arr, keys, c)
        del arr, keys
    if o.palette is not None and (o.palette[:, 3] < 255).any():
        C = 4
    if (o.fixed[:, 3] < 255).any():
        C = 4
    if C == 4:  # RGB histograms become opaque RGBA ones (order is preserved)
        hists = [((keys | np.uint32(0xFF000000), cnt) if c == 3 else (keys, cnt))
                 for (keys, cnt), c in hists]
    else:
        hists = [h for h, _ in hists]
    ukeys, counts = hists[0] if len(hists) == 1 else histogram.merge_histograms(hists)
    del hists
    colors = histogram.unpack(ukeys, C)
    gidx = None
    if o.palette is not None:
        P4 = o.palette
    else:
        P4, gidx = _fit_palette(colors, counts, C, o)
    if P4.shape[0] == 0:  # empty image: a one-entry palette keeps consumers simple
        P4 = np.array([[0, 0, 0, 255]], np.uint8)
    if o.palette is not None or gidx is None:
        gidx = _assign(colors, C, P4, o.metric, o.space)
    if single:
        arr, keys, c = keep
        del keep
        if c != C:
            keys |= np.uint32(0xFF000000)
        out = [_index_image(arr, C, ukeys, gidx, P4, o.dither, keys=keys)]
    else:
        out = [_index_image(source(), C, ukeys, gidx, P4, o.dither) for source in sources]
    if o.palette is not None:
        pal = P4[:, :3].copy() if o.palette.shape[1] == 4 and (o.palette[:, 3] == 255).all() else P4
    else:
        pal = _out_palette(P4)
    return out, pal


_DOC_PARAMS = """k : int in 1..256, or None for 256
    algo : registered name ("kmeans", "kmedoids", see :func:`registered_quantizers`) or a
        palette step callable
    seed : int >= 0 (None means 0); same seed -> same result
    metric : "euclidean" (default), "manhattan" or "chebyshev" - nearest-entry mapping
        (and the K-medoids objective)
    space : "rgb" (default) or "oklab" (perceptual; fitting and mapping in OKLab)
    dither : Floyd-Steinberg error diffusion (Pillow's C remap) when True
    fixed_colors : sequence of (r, g, b) or (r, g, b, a) that must be palette entries
    palette : a "P" image, an (m, 3|4) uint8 array or a sequence of colours: map onto exactly
        that palette"""


def quantize_array(pixels: np.ndarray, k: Optional[int] = None, algo: Algo = "kmeans", *, seed: int = 0,
                   metric: str = "euclidean", space: str = "rgb", dither: bool = False,
                   fixed_colors: Optional[Sequence[Color]] = None, palette: Optional[PaletteLike] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Quantize an array of pixels to at most ``k`` colours (the array-level core).

    Parameters
    ----------
    pixels : (H, W, 3) RGB or (H, W, 4) RGBA uint8 array
    {params}

    Returns
    -------
    indices : (H, W) uint8
    palette : (m, 3) uint8, or (m, 4) RGBA when some alpha (of the image, fixed colours or
        given palette) is below 255; ``m <= k``, every entry used unless fixed or given.
    """
    o = _validate(k, algo, seed, metric, space, dither, fixed_colors, palette)
    arr = _check_pixels(pixels)
    out, pal = _run([lambda: arr], o)
    return out[0], pal


def quantize_arrays(pixels_list: Sequence[np.ndarray], k: Optional[int] = None, algo: Algo = "kmeans", *,
                    seed: int = 0, metric: str = "euclidean", space: str = "rgb", dither: bool = False,
                    fixed_colors: Optional[Sequence[Color]] = None, palette: Optional[PaletteLike] = None
                    ) -> Tuple[List[np.ndarray], np.ndarray]:
    """Quantize several pixel arrays with one shared palette (see :func:`quantize_array`).

    Returns ``(list of (H_i, W_i) uint8 indices, palette (m, 3|4) uint8)``.
    """
    arrays = [_check_pixels(a, f"pixels_list[{i}]") for i, a in enumerate(pixels_list)]
    if not arrays:
        raise ValueError("pixels_list must contain at least one array")
    o = _validate(k, algo, seed, metric, space, dither, fixed_colors, palette)
    return _run([(lambda a=a: a) for a in arrays], o)


def quantize_to_arrays(img: Image.Image, k: Optional[int] = None, algo: Algo = "kmeans", *, seed: int = 0,
                       metric: str = "euclidean", space: str = "rgb", dither: bool = False,
                       fixed_colors: Optional[Sequence[Color]] = None, palette: Optional[PaletteLike] = None
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Quantize a Pillow image: ``(indices (H, W) uint8, palette (m, 3|4) uint8)``.

    The image becomes pixels through :func:`pillow_gcp.adapter.pixels`; see :func:`quantize`.
    """
    adapter.check_image(img, "img")
    o = _validate(k, algo, seed, metric, space, dither, fixed_colors, palette)
    out, pal = _run([lambda: adapter.pixels(img)], o)
    return out[0], pal


def quantize(img: Image.Image, k: Optional[int] = None, algo: Algo = "kmeans", *, seed: int = 0,
             metric: str = "euclidean", space: str = "rgb", dither: bool = False,
             fixed_colors: Optional[Sequence[Color]] = None, palette: Optional[PaletteLike] = None,
             colors: Optional[int] = None) -> Image.Image:
    """Quantize ``img`` to a mode "P" image of at most ``k`` colours.

    Parameters
    ----------
    img : PIL.Image.Image, any mode (RGB, RGBA, L, LA, P, PA, 1, I;16, I, F, CMYK, YCbCr, HSV, LAB...)
    {params}
    colors : synonym of ``k`` (the name of ``Image.quantize`` and of the GCP save); give one of them

    Returns
    -------
    PIL.Image.Image, mode "P", palette "RGB" or "RGBA" (when any alpha < 255).
    """
    idx, pal = quantize_to_arrays(img, adapter.k_or_colors(k, colors), algo, seed=seed, metric=metric, space=space,
                                  dither=dither, fixed_colors=fixed_colors, palette=palette)
    return adapter.to_image(idx, pal)



def quantize_many(images: Sequence[Image.Image], k: Optional[int] = None, algo: Algo = "kmeans", *,
                  seed: int = 0, metric: str = "euclidean", space: str = "rgb", dither: bool = False,
                  fixed_colors: Optional[Sequence[Color]] = None, palette: Optional[PaletteLike] = None,
                  colors: Optional[int] = None) -> List[Image.Image]:
    """Quantize several images with one shared palette fitted to their pooled colours.

    The fit works on the merged weighted histogram of unique colours (memory bounded
    by unique colours; images are never stacked).  Returns a list of mode "P" images
    with identical palettes, in the order given.
    """
    if hasattr(images, "getpalette") and hasattr(images, "mode"):
        raise TypeError("images must be a sequence of PIL images; use quantize() for one image")
    images = list(images)
    if not images:
        raise ValueError("images must contain at least one image")
    for i, im in enumerate(images):
        adapter.check_image(im, f"images[{i}]")
    o = _validate(adapter.k_or_colors(k, colors), algo, seed, metric, space, dither, fixed_colors, palette)
    out, pal = _run([(lambda im=im: adapter.pixels(im)) for im in images], o)
    return [adapter.to_image(idx, pal) for idx in out]


for _fn in (quantize_array, quantize):
    _fn.__doc__ = _fn.__doc__.replace("{params}", _DOC_PARAMS.strip("\n"))
del _fn
