"""Palette quantization for pillow-gcp: K-means and K-medoids behind one front door.

Front door
==========
``quantize(img, k=None, algo="kmeans", *, seed=0, metric="euclidean", space="rgb",
dither=False, fixed_colors=None, palette=None) -> PIL.Image`` (mode ``"P"``),
``quantize_many(images, ...) -> list[PIL.Image]`` (one shared palette),
``quantize_to_arrays(img, ...) -> (indices (H, W) uint8, palette (m, 3 or 4) uint8)``,
``register_quantizer(name, step)``.

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

* Colours ``<= k``: the step is *not* called; the palette is the colours themselves
  (lossless for every algorithm).
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

Registry: ``register_quantizer(name, step)`` adds a step; ``algo=`` accepts a
registered name or any callable following the protocol.  ``"kmeans"``
(:mod:`pillow_gcp.quantize.kmeans`) and ``"kmedoids"``
(:mod:`pillow_gcp.quantize.kmedoids`, ``kmedoids_palette``) are built in.
"""

from __future__ import annotations

from typing import Callable, Dict

__all__ = [
    "register_quantizer",
    "registered_quantizers",
]

_REGISTRY: Dict[str, Callable] = {}


def register_quantizer(name: str, step: Callable) -> None:
    """Register a palette step under ``name`` (see the module docstring protocol)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    _REGISTRY[name] = step


def registered_quantizers() -> list:
    """Sorted list of registered palette-step names."""
    return sorted(_REGISTRY)
