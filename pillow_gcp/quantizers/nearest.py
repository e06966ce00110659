"""Exact nearest-palette-entry search over unique colours, chunked.

All functions take ``X`` ``(U, C)`` and ``P`` ``(m, C)`` arrays (uint8 or float) and work
in float32.  For uint8 inputs every intermediate of the squared-Euclidean computation is
an integer below 2**24, so the float32 result is exact; ties go to the lowest index.
Memory is bounded by ``chunk * m`` floats, never ``U * m``.

Large Euclidean searches with more than 48 entries (the (rows, m) layout) are split into row
ranges run on up to ``min(cap, CPUs)`` threads (the cap of :func:`pillow_gcp.set_threads` /
``GCP_THREADS``; the calling thread is one of them) by :func:`split_rows`, which K-means' own
large searches use too.  Every range starts at a multiple of the block size, so each row meets
the same BLAS calls and reductions as on one thread: the results are the same bit for bit.
numpy's products, argmin and gathers release the GIL; the helpers are joined before the search
returns.
"""

from __future__ import annotations

import numpy as np

from .._threads import split_rows

METRICS = ("euclidean", "manhattan", "chebyshev")

# BLAS without global settings.  The distance blocks are products with an inner
# dimension of C + 1 <= 5.  Explicit per-channel arithmetic (or einsum) is 2x (m = 16) to
# 5x (m = 256) slower than a single-threaded SGEMM here (bench/bench_quantize.py,
# measured), so the products stay in BLAS, but every call is kept at most
# ``BLAS_MACS`` multiply-adds: OpenBLAS runs a GEMM that small on the calling thread
# (its threshold is 65536 * GEMM_MULTITHREAD_THRESHOLD = 2**18), so no BLAS worker
# threads wake up and spin, and nothing in the process has to be reconfigured.  The
# block (<= 256 KiB of float32) also stays in L2.  Matrix-vector products and dot
# products over many rows use einsum (numpy's own loops, never BLAS).
BLAS_MACS = 1 << 18


def _chunk_rows(m: int, inner: int = 4) -> int:
    """Rows per block so that a (rows, inner) @ (inner, m) product is <= BLAS_MACS."""
    return max(8, BLAS_MACS // (max(int(m), 1) * max(int(inner), 1)))


def matmul_small(A, B):
    """``A (a, K) @ B (K, b)`` as BLAS calls of at most :data:`BLAS_MACS` multiply-adds each.

    Each call then runs on the calling thread (see above).  Tiles go over rows and
    columns, and over the inner dimension when it is large (partial products summed),
    which keeps the speed of one single-threaded GEMM.  A one-column ``B`` is padded to
    two columns: numpy would send it to GEMV, which OpenBLAS threads from 9216 elements.
    Returns (a, b) of numpy's result dtype.
    """
    A = np.asarray(A)
    B = np.asarray(B)
    a, K = A.shape
    b = B.shape[1]
    if b == 1:
        return matmul_small(A, np.concatenate([B, np.zeros_like(B)], axis=1))[:, :1]
    out = np.empty((a, b), np.result_type(A, B))
    if a == 0 or b == 0:
        return out
    if K == 0:
        out[:] = 0
        return out
    kb = min(K, max(16, BLAS_MACS // max(a * b, 1)))
    cb = min(b, max(2, BLAS_MACS // (2 * kb)))
    ra = max(2, BLAS_MACS // (kb * cb))
    tmp = np.empty((min(ra, a), cb), out.dtype) if kb < K else None
    for j in range(0, b, cb):
        for i in range(0, a, ra):
            o = out[i:i + ra, j:j + cb]
            for s in range(0, K, kb):
                Ai = A[i:i + ra, s:s + kb]
                Bj = B[s:s + kb, j:j + cb]
                if Ai.shape[0] == 1:  # one row: GEMV in BLAS; numpy's own loop instead
                    t = np.einsum("k,kj->j", Ai[0], Bj)[None]
                elif s == 0:
                    np.matmul(Ai, Bj, out=o)
                    continue
                else:
                    t = np.matmul(Ai, Bj, out=tmp[:Ai.shape[0], :Bj.shape[1]])
                if s == 0:
                    o[...] = t
                else:
                    o += t
    return out


#: Distances per reduction block (:func:`_nearest_two_rows`, :func:`_nearest_rows`): about 2 MiB
#: of float32, several BLAS products written with ``out=`` and then reduced at once.  As fast as 1 MiB on one thread; on two, fewer and longer GIL-free
#: numpy calls, which is what pays (a contended GIL hand-over costs more than a 10 us call).
_REDUCE_ELEMS = 1 << 19

def _augment_p(Pf):
    """(m, C) float32 -> (C + 1, m): rows -2 P^T and ||p||^2, so [x, 1] @ it = ||x-p||^2 - ||x||^2."""
    Pa = np.empty((Pf.shape[1] + 1, Pf.shape[0]), np.float32)
    Pa[:-1] = -2.0 * Pf.T
    Pa[-1] = np.einsum("ij,ij->i", Pf, Pf)
    return Pa


#: Up to this many palette entries the distance blocks are laid out (m, rows): the
#: argmin / min then run across rows, element-wise over long contiguous rows, which is
#: 2.5x faster than reducing short rows of m values (m = 16); from ~64 entries on the
#: (rows, m) layout is as fast or faster.
_TRANSPOSE_MAX = 48


def sqnorm(X):
    """``np.einsum("ij,ij->i", X, X)``, 1.5-2x faster for (n, 3) float32.

    For three float32 channels the explicit sum in channel order, which is what einsum computes
    on numpy 2.4 (bit for bit; numpy 1.19 pairs the terms, equal within rounding), without
    einsum's per-call set-up; other shapes and dtypes (einsum pairs the terms of four channels,
    and of float64 rows) go to einsum itself.
    """
    if X.dtype != np.float32 or X.ndim != 2 or X.shape[1] != 3:
        return np.einsum("ij,ij->i", X, X)
    out = X[:, 0] * X[:, 0]
    out += X[:, 1] * X[:, 1]
    out += X[:, 2] * X[:, 2]
    return out


def _first_min(D, ax):
    """``(np.argmin(D, axis=ax), np.min(D, axis=ax))`` of a float32 block, ties to the lowest index.

    For the (m, rows) layout (``ax == 0``) numpy's argmin over the short axis 0 is ~20x slower
    than ``min`` on blocks of thousands of rows; the index is found instead from the rows equal
    to the minimum: that mask (viewed as int8) times ``m - row`` has its largest value at the
    lowest such row (one comparison, one in-place int8 product, one int8 max: m = 16 at 1834
    rows 16 us against argmin's 84 and the former ``np.where`` form's 54; below 256 rows, and
    for more than 127 rows, which int8 cannot count, argmin is kept).
    """
    m = D.shape[0]
    if ax == 1 or D.shape[1] < 256 or m > 127:  # argmin: as fast on short blocks
        j = np.argmin(D, axis=ax)
        return j, (D[np.arange(m), j] if ax == 1 else D[j, np.arange(D.shape[1])])
    d = D.min(axis=0)
    return lowest_rows(D, d), d


def lowest_rows(D, d, mask=None, weights=None):
    """The lowest row of each column of the (m, n) block ``D`` (m <= 127) holding that column's value
    in ``d`` (n,), its minimum: (n,) intp. The rows equal to ``d`` (as int8) times ``m - row`` have their
    largest value at the lowest such row. ``mask``: an optional (m, n) bool buffer for the comparison;
    ``weights``: ``np.arange(m, 0, -1, dtype=np.int8)[:, None]`` when the caller keeps one."""
    m = D.shape[0]
    E = np.equal(D, d, out=mask).view(np.int8)
    E *= np.arange(m, 0, -1, dtype=np.int8)[:, None] if weights is None else weights
    j = E.max(axis=0).astype(np.intp)
    return np.subtract(m, j, out=j)


def _euclid_blocks(X, Pf, step):
    """Yield ``(start, n, D, axis)`` for blocks of ``step`` rows of X (U, C).

    ``D`` holds ``||p||^2 - 2 x.p`` for the block, (m, n) when ``axis == 0`` (small m)
    else (n, m); reduce over ``axis`` to get per-colour results.  One BLAS call of at
    most :data:`BLAS_MACS` multiply-adds per block.
    """
    U = X.shape[0]
    m, C = Pf.shape
    Pa = _augment_p(Pf)  # (C + 1, m)
    if m <= _TRANSPOSE_MAX:
        Pt = np.ascontiguousarray(Pa.T)  # (m, C + 1)
        Xa = np.ones((C + 1, min(step, U)), np.float32)
        for s in range(0, U, step):
            n = min(step, U - s)
            Xa[:-1, :n] = X[s:s + n].T
            yield s, n, Pt @ Xa[:, :n], 0
    else:
        Xa = np.ones((min(step, U), C + 1), np.float32)
        for s in range(0, U, step):
            n = min(step, U - s)
            Xa[:n, :-1] = X[s:s + n]
            yield s, n, Xa[:n] @ Pa, 1


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
    step = _chunk_rows(m, Pf.shape[1] + 1)
    if metric != "euclidean":
        step = max(64, step // 2)
    if metric == "euclidean" and m > _TRANSPOSE_MAX:
        split_rows(U, step, U * m, lambda lo, hi: _nearest_rows(X, Pf, step, idx, dist, lo, hi))
    else:
        # (m, rows) blocks (Euclidean, m <= 48) and manhattan / chebyshev: short per-block numpy
        # calls, one block at a time on this thread.  Batching the (m, rows) blocks (one matmul and
        # 3-D reductions for ~2 MiB) to make two threads pay was as fast on photos' colours but up
        # to 1.4x slower on uniformly spread ones (500k colours, m = 8-16); per-block threads lose
        _nearest_blocks(X, Pf, metric, step, idx, dist)
    return (idx, dist) if return_dist else idx


def _products(X, Pa, step, Xa, D, s, n):
    """``D[:n] = [X[s:s + n], 1] @ Pa`` as the BLAS calls of :func:`_euclid_blocks` ((rows, m)
    layout, blocks of ``step`` rows from ``s``, a multiple of ``step``): the full blocks in one
    batched matmul (numpy makes the same GEMM call for each) and the rest in one more call.
    ``Xa`` (>= n, C + 1) float32 scratch whose last column holds ones."""
    C1, m = Pa.shape
    Xa[:n, :-1] = X[s:s + n]
    nf = n // step * step
    if nf:
        np.matmul(Xa[:nf].reshape(-1, step, C1), Pa, out=D[:nf].reshape(-1, step, m))
    if nf < n:
        np.matmul(Xa[nf:n], Pa, out=D[nf:n])
    return D[:n]


def _nearest_rows(X, Pf, step, idx, dist, lo, hi):
    """Euclidean :func:`nearest` in the (rows, m) layout for rows ``lo:hi`` (``lo`` a multiple of
    ``step``): the products of :func:`_products` for ~:data:`_REDUCE_ELEMS` distances at a time,
    then one argmin per such block (the same values and the same first minimum as per product)."""
    m, C = Pf.shape
    Pa = _augment_p(Pf)
    R = min(hi - lo, max(step, (_REDUCE_ELEMS // m) // step * step))
    Xa = np.ones((R, C + 1), np.float32)
    D = np.empty((R, m), np.float32)
    for s in range(lo, hi, R):
        n = min(R, hi - s)
        Dn = _products(X, Pa, step, Xa, D, s, n)
        j = Dn.argmin(axis=1)
        idx[s:s + n] = j
        if dist is not None:
            d = Dn[np.arange(n), j]
            d += sqnorm(X[s:s + n].astype(np.float32, copy=False))
            np.maximum(d, 0, out=d)
            dist[s:s + n] = d


def _nearest_blocks(X, Pf, metric, step, idx, dist):
    """:func:`nearest` one block of ``step`` rows at a time on the calling thread, written into
    ``idx`` and ``dist`` (None unless wanted)."""
    if metric == "euclidean":
        # ||x||^2 - 2 x.p + ||p||^2 ; the argmin only needs -2x.p + ||p||^2.
        for s, n, D, ax in _euclid_blocks(X, Pf, step):
            j, dmin = _first_min(D, ax)
            idx[s:s + n] = j
            if dist is not None:
                d = dmin + sqnorm(X[s:s + n].astype(np.float32, copy=False))
                np.maximum(d, 0, out=d)
                dist[s:s + n] = d
        return
    red = np.add if metric == "manhattan" else np.maximum
    for s in range(0, X.shape[0], step):
        Xc = X[s:s + step].astype(np.float32)
        D = np.abs(Xc[:, None, 0] - Pf[None, :, 0])
        for c in range(1, Xc.shape[1]):
            red(D, np.abs(Xc[:, None, c] - Pf[None, :, c]), out=D)
        j = np.argmin(D, axis=1)
        idx[s:s + len(j)] = j
        if dist is not None:
            dist[s:s + len(j)] = D[np.arange(len(j)), j]


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
    step = _chunk_rows(m, Pf.shape[1] + 1)
    if U == 0:
        return idx, d1, d2
    if m > _TRANSPOSE_MAX:
        split_rows(U, step, U * m, lambda lo, hi: _nearest_two_rows(X, Pf, step, idx, d1, d2, lo, hi))
    else:
        # (m, rows) blocks: ~10 short numpy calls per block, which two threads only slow down
        _nearest_two_cols(X, Pf, step, idx, d1, d2)
    return idx, d1, d2


def _nearest_two_cols(X, Pf, step, idx, d1, d2):
    """:func:`nearest_two` one block of :func:`_euclid_blocks` at a time on the calling thread
    (either layout), results written into idx, d1, d2 (U,)."""
    for s, n, D, ax in _euclid_blocks(X, Pf, step):
        xn = sqnorm(X[s:s + n].astype(np.float32, copy=False))
        r = np.arange(n)
        j, dmin = _first_min(D, ax)
        idx[s:s + n] = j
        pos = (j, r) if ax == 0 else (r, j)
        a = dmin + xn
        D[pos] = np.inf
        # (rows, m) blocks: argmin along the rows is SIMD and 2-4x faster than min there
        b = (D.min(axis=0) if ax == 0 else D[r, np.argmin(D, axis=1)]) + xn
        d1[s:s + n] = np.maximum(a, 0)
        d2[s:s + n] = np.maximum(b, 0)


def _nearest_two_rows(X, Pf, step, idx, d1, d2, lo, hi):
    """:func:`nearest_two` for the (rows, m) layout, rows ``lo:hi`` of X (``lo`` a multiple of
    ``step``), results written into idx, d1, d2 (U,).

    The distances are the same BLAS products as :func:`_euclid_blocks` (blocks of ``step``
    rows, each one call of at most :data:`BLAS_MACS` multiply-adds, so every value is bit for
    bit the same), written with ``out=`` into one scratch block of several such products;
    the reductions (two argmin passes, flat gathers, the inf written over the nearest) then run
    once per scratch block instead of once per product, and the row norms, the additions and
    the clamp at 0 once over all rows: each of those is element-wise, so the results are
    unchanged, with ~12 fewer numpy calls per ``step`` rows (m = 256: per 256 rows, where one
    argmin pass costs ~10 us and a numpy call ~1-2 us).
    """
    U = hi - lo
    m, C = Pf.shape
    Pa = _augment_p(Pf)  # (C + 1, m)
    R = min(U, max(step, (_REDUCE_ELEMS // m) // step * step))
    Xa = np.ones((R, C + 1), np.float32)
    D = np.empty((R, m), np.float32)
    Df = D.reshape(-1)
    base = np.arange(0, R * m, m, dtype=np.intp)  # flat offset of each row
    flat = np.empty(R, np.intp)
    for s in range(lo, hi, R):
        n = min(R, hi - s)
        Dn = _products(X, Pa, step, Xa, D, s, n)
        j = Dn.argmin(axis=1)
        idx[s:s + n] = j
        np.add(base[:n], j, out=flat[:n])
        np.take(Df, flat[:n], out=d1[s:s + n])
        Df[flat[:n]] = np.inf
        np.add(base[:n], Dn.argmin(axis=1), out=flat[:n])
        np.take(Df, flat[:n], out=d2[s:s + n])
    xn = sqnorm(X[lo:hi].astype(np.float32, copy=False))
    d = d1[lo:hi]
    d += xn
    np.maximum(d, 0, out=d)
    d = d2[lo:hi]
    d += xn
    np.maximum(d, 0, out=d)
