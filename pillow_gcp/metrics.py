"""Quality measures on pixel arrays: MSE, PSNR and mean OKLab deltaE.

Every function takes two images as ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA ``uint8`` arrays of the
same height and width, as :func:`pillow_gcp.adapter.pixels` returns them (an indexed image is
``palette[indices]``, see :func:`expand`).

* **MSE** is taken over the R, G and B channels of every pixel; **PSNR** = 10 log10(255² / MSE)
  (``inf`` for identical images).
* **deltaE** is the Euclidean distance in OKLab times 100 (so 1.0 is about a just-noticeable
  difference), with OKLab from :mod:`pillow_gcp.quantizers.colorspace`.
* **Alpha**: when either image has an alpha channel, both are composited over black and over white
  and a measure is the mean of its values on the two composites. An alpha error thus counts as the
  colour error it causes, and the colour of a fully transparent pixel does not count at all.

Memory is bounded: float work runs over row chunks of about 256 K pixels.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Tuple

import numpy as np

__all__ = ["expand", "mse", "psnr", "psnr_from_mse", "delta_e_map", "mean_delta_e", "error_map", "sse"]

_CHUNK = 1 << 18  # pixels per float chunk


def expand(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(H, W)`` indices and an ``(m, C)`` palette -> the ``(H, W, C)`` pixel array ``palette[indices]``."""
    out: np.ndarray = np.asarray(palette, np.uint8)[np.asarray(indices)]
    return out


def _check(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, bool]:
    a, b = np.asarray(a), np.asarray(b)
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 3 or x.shape[2] not in (3, 4) or x.dtype != np.uint8:
            raise ValueError(f"{name} must be an (H, W, 3|4) uint8 array, got {x.dtype} {x.shape}")
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"images differ in size: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")
    return a, b, a.shape[2] == 4 or b.shape[2] == 4


def _composites(x: np.ndarray, alpha: bool) -> List[np.ndarray]:
    """(rows, W, C) uint8 -> the float64 (rows, W, 3) arrays a measure compares."""
    rgb = x[..., :3].astype(np.float64)
    if not alpha:
        return [rgb]
    a = x[..., 3:4] / 255.0 if x.shape[2] == 4 else np.ones(x.shape[:2] + (1,))
    over_black = rgb * a
    return [over_black, over_black + 255.0 * (1.0 - a)]


def _chunks(a: np.ndarray, b: np.ndarray) -> Iterator[Tuple[slice, List[np.ndarray], List[np.ndarray]]]:
    """Row chunks of both images as their composites."""
    a, b, alpha = _check(a, b)
    step = max(1, _CHUNK // max(1, a.shape[1]))
    for r in range(0, a.shape[0], step):
        rows = slice(r, r + step)
        yield rows, _composites(a[rows], alpha), _composites(b[rows], alpha)


def sse(a: np.ndarray, b: np.ndarray) -> float:
    """Sum over pixels of the squared R, G, B error (mean over the composites with alpha)."""
    total = 0.0
    for _, xs, ys in _chunks(a, b):
        total += sum(float(np.sum((x - y) ** 2)) for x, y in zip(xs, ys)) / len(xs)
    return total


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over R, G and B of all pixels (alpha: see the module docstring)."""
    n = np.asarray(a).shape[0] * np.asarray(a).shape[1]
    return sse(a, b) / (3 * n) if n else 0.0


def psnr_from_mse(m: float) -> float:
    """PSNR in dB for 8-bit channels; ``inf`` for a zero error."""
    return math.inf if m <= 0 else 10.0 * math.log10(255.0**2 / m)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of ``b`` against ``a``."""
    return psnr_from_mse(mse(a, b))


def _oklab(x: np.ndarray) -> np.ndarray:
    from .quantizers.colorspace import float_to_oklab

    return float_to_oklab(x.reshape(-1, 3)).reshape(x.shape)


def delta_e_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 OKLab distance x 100 between the images (alpha: mean over the composites)."""
    a = np.asarray(a)
    out = np.empty(a.shape[:2], np.float64)
    for rows, xs, ys in _chunks(a, b):
        acc = 0.0
        for x, y in zip(xs, ys):
            d = _oklab(x) - _oklab(y)
            acc = acc + np.sqrt(np.sum(d * d, axis=-1))
        out[rows] = acc / len(xs)
    return out


def mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean OKLab deltaE x 100 of ``b`` against ``a`` (0.0 for an empty image)."""
    m = delta_e_map(a, b)
    return float(m.mean()) if m.size else 0.0


def error_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 mean absolute R, G, B error (alpha: mean over the composites)."""
    a = np.asarray(a)
    out = np.empty(a.shape[:2], np.float64)
    for rows, xs, ys in _chunks(a, b):
        out[rows] = sum(np.abs(x - y).mean(axis=-1) for x, y in zip(xs, ys)) / len(xs)
    return out
