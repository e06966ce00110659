"""Exact nearest-palette-entry search over unique colours, chunked.

All functions take ``X`` ``(U, C)`` and ``P`` ``(m, C)`` arrays (uint8 or float) and work
in float32.  For uint8 inputs every intermediate of the squared-Euclidean computation is
an integer below 2**24, so the float32 result is exact; ties go to the lowest index.
Memory is bounded by ``chunk * m`` floats, never ``U * m``.
"""

from __future__ import annotations

import numpy as np

METRICS = ("euclidean", "manhattan", "chebyshev")

# Floats per distance block: 512 KiB stays in cache (4-8x faster than 8 MiB blocks).
# The front door runs with OpenBLAS single-threaded (see _threads.py).
_CHUNK_ELEMS = 1 << 17


def _chunk_rows(m: int) -> int:
    return max(64, _CHUNK_ELEMS // max(int(m), 1))


def _augment_p(Pf):
    """(m, C) float32 -> (C + 1, m): rows -2 P^T and ||p||^2, so [x, 1] @ it = ||x-p||^2 - ||x||^2."""
    Pa = np.empty((Pf.shape[1] + 1, Pf.shape[0]), np.float32)
    Pa[:-1] = -2.0 * Pf.T
    Pa[-1] = np.einsum("ij,ij->i", Pf, Pf)
    return Pa


def nearest(X, P, metric: str = "euclidean", *, return_dist: bool = False):
    """Index of the nearest row of ``P`` for every row of ``X``.

    Parameters
    ----------
    X : (U, C) array
    P : (m, C) array, ``m >= 1``
    metric : "euclidean" | "manhattan" | "chebyshev"
    return_dist : also return the distance (squared for "euclidean")

    Returns
    -------
    idx : (U,) int64 ; and ``dist`` (U,) float32 if ``return_dist``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    X = np.asarray(X)
    P = np.asarray(P)
    U = X.shape[0]
    m = P.shape[0]
    idx = np.empty(U, np.int64)
    dist = np.empty(U, np.float32) if return_dist else None
    if U == 0:
        return (idx, dist) if return_dist else idx
    Pf = P.astype(np.float32)
    step = _chunk_rows(m)
    if metric == "euclidean":
        # ||x||^2 - 2 x.p + ||p||^2 ; the argmin only needs -2x.p + ||p||^2.
        Pa = _augment_p(Pf)
        Xa = np.ones((min(step, U), Pf.shape[1] + 1), np.float32)
        for s in range(0, U, step):
            Xc = X[s:s + step]
            n = Xc.shape[0]
            Xa[:n, :-1] = Xc
            D = Xa[:n] @ Pa
            j = np.argmin(D, axis=1)
            idx[s:s + step] = j
            if return_dist:
                Xf = Xa[:n, :-1]
                d = D[np.arange(n), j] + np.einsum("ij,ij->i", Xf, Xf)
                np.maximum(d, 0, out=d)
                dist[s:s + step] = d
    else:
        red = np.add if metric == "manhattan" else np.maximum
        step = max(64, step // 2)
        for s in range(0, U, step):
            Xc = X[s:s + step].astype(np.float32)
            D = np.abs(Xc[:, None, 0] - Pf[None, :, 0])
            for c in range(1, Xc.shape[1]):
                red(D, np.abs(Xc[:, None, c] - Pf[None, :, c]), out=D)
            j = np.argmin(D, axis=1)
            idx[s:s + step] = j
            if return_dist:
                dist[s:s + step] = D[np.arange(len(j)), j]
    return (idx, dist) if return_dist else idx


def distance_to(X, P, idx, metric: str = "euclidean"):
    """Distance from each row of ``X`` to ``P[idx]`` (squared for "euclidean"), float64."""
    d = X.astype(np.float64) - P.astype(np.float64)[idx]
    if metric == "euclidean":
        return np.einsum("ij,ij->i", d, d)
    if metric == "manhattan":
        return np.abs(d).sum(axis=1)
    return np.abs(d).max(axis=1)


def nearest_two(X, P):
    """Nearest and second-nearest squared Euclidean distances, float32 brute force.

    X (U, C), P (m, C) -> (idx (U,) int64, d1 (U,) float32, d2 (U,) float32); d2 is
    inf when m == 1.  Chunked like :func:`nearest`.
    """
    X = np.asarray(X)
    Pf = np.asarray(P, np.float32)
    U = X.shape[0]
    m = Pf.shape[0]
    idx = np.empty(U, np.int64)
    d1 = np.empty(U, np.float32)
    d2 = np.empty(U, np.float32)
    Pa = _augment_p(Pf)
    step = _chunk_rows(m)
    Xa = np.ones((min(step, U), Pf.shape[1] + 1), np.float32)
    for s in range(0, U, step):
        n = min(step, U - s)
        Xa[:n, :-1] = X[s:s + step]
        Xc = Xa[:n, :-1]
        xn = np.einsum("ij,ij->i", Xc, Xc)
        D = Xa[:n] @ Pa
        r = np.arange(n)
        j = np.argmin(D, axis=1)
        idx[s:s + step] = j
        a = D[r, j] + xn
        D[r, j] = np.inf
        b = D.min(axis=1) + xn
        d1[s:s + step] = np.maximum(a, 0)
        d2[s:s + step] = np.maximum(b, 0)
    return idx, d1, d2
