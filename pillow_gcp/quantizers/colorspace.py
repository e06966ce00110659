"""sRGB <-> OKLab conversion for colour arrays (Bjorn Ottosson's OKLab, 2020).

The working space used by ``space="oklab"`` is OKLab with L, a, b multiplied by
``SCALE`` (100), so that Euclidean distance there is DeltaE_OK x 100 (roughly the
magnitude of CIE DeltaE76).  Alpha, when present, becomes ``alpha / 255 * SCALE``.
"""

from __future__ import annotations

import numpy as np

SCALE = 100.0

_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                [0.2119034982, 0.6806995451, 0.1073969566],
                [0.0883024619, 0.2817188376, 0.6299787005]])
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                [1.9779984951, -2.4285922050, 0.4505937099],
                [0.0259040371, 0.7827717662, -0.8086757660]])
_M1_INV = np.linalg.inv(_M1)
_M2_INV = np.linalg.inv(_M2)

_LUT = None


def _linear_lut():
    global _LUT
    if _LUT is None:
        c = np.arange(256) / 255.0
        _LUT = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return _LUT


def _mat3(A, M):
    """(n, 3) @ M.T without BLAS (tiny inner dimension; avoids threaded gemm)."""
    return A[:, 0:1] * M[:, 0] + A[:, 1:2] * M[:, 1] + A[:, 2:3] * M[:, 2]


def srgb_to_linear(c):
    """sRGB in [0, 1] -> linear light, float64."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    """Linear light -> sRGB in [0, 1] (unclipped), float64."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0) ** (1 / 2.4) - 0.055)


def to_oklab(colors: np.ndarray) -> np.ndarray:
    """(U, 3 or 4) uint8 sRGB(A) -> (U, C) float32 working space (OKLab x 100, alpha/255 x 100)."""
    colors = np.asarray(colors)
    lin = _linear_lut()[colors[:, :3]]
    lms = np.cbrt(_mat3(lin, _M1))
    lab = _mat3(lms, _M2) * SCALE
    if colors.shape[1] == 4:
        lab = np.concatenate([lab, colors[:, 3:4] / 255.0 * SCALE], axis=1)
    return lab.astype(np.float32)


def float_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) float sRGB values in [0, 255] (e.g. alpha composites) -> (N, 3) float64 OKLab x 100."""
    lin = srgb_to_linear(np.asarray(rgb, np.float64) / 255.0)
    return _mat3(np.cbrt(_mat3(lin, _M1)), _M2) * SCALE


def from_oklab(lab: np.ndarray) -> np.ndarray:
    """(m, 3 or 4) float working space -> (m, C) uint8 sRGB(A), rounded and clipped."""
    lab = np.asarray(lab, np.float64)
    lms = _mat3(lab[:, :3] / SCALE, _M2_INV)
    lin = _mat3(lms ** 3, _M1_INV)
    rgb = linear_to_srgb(lin) * 255.0
    out = rgb
    if lab.shape[1] == 4:
        out = np.concatenate([rgb, lab[:, 3:4] / SCALE * 255.0], axis=1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def delta_e_ok(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row OKLab Euclidean distance x 100 between two (N, 3) uint8 sRGB arrays."""
    d = to_oklab(a).astype(np.float64) - to_oklab(b)
    return np.sqrt((d * d).sum(axis=1))
