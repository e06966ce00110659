"""Weighted K-means palette step (see the protocol in :mod:`pillow_gcp.quantize`).

Pipeline, all on the weighted histogram of unique colours (never on pixels):

1. reduce: unique colours are merged into the cells of a 2**5 grid per channel
   (weighted means, :func:`~pillow_gcp.quantize.histogram.bin_reduce`), so the bulk
   of the fitting scales with occupied cells (a few thousand for a photo);
2. seed: greedy variance-minimising splits of the weighted cells (Wu/median-cut
   like; deterministic), plus, for small ``k``, extra k-means++ restarts drawn from
   ``seed``; the lowest error wins.  Fixed colours are extra centres that never move;
3. Lloyd on the cells (squared Euclidean, float32, Hamerly upper/lower bounds so
   only cells whose bound test fails are re-assigned; stop on relative improvement);
4. polish: Lloyd on the true unique colours, starting from bounds inherited from
   their cell (triangle inequality), so only ambiguous colours are re-assigned;
5. round to uint8 (for uint8 input).

K-means minimises weighted squared Euclidean error in the given space whatever
``metric`` is; ``metric`` is only used by the front door for the final exact
nearest-entry mapping.
"""

from __future__ import annotations

import heapq

import numpy as np

from .histogram import bin_reduce
from .nearest import nearest_two

__all__ = ["kmeans_palette"]


def _split_init(X, w, k):
    """Greedy variance splits. X (B, C) float64, w (B,) float64 -> (k', C) float64, k' <= k.

    The box with the largest error reduction is split along its highest-variance
    axis at the cut minimising the children's summed squared error.
    """
    B, C = X.shape

    def best(idx):
        if idx.size < 2:
            return 0.0, None
        Xs = X[idx]
        ws = w[idx]
        tw = ws.sum()
        mu = ws @ Xs / tw
        var = ws @ (Xs - mu) ** 2
        a = int(np.argmax(var))
        o = np.argsort(Xs[:, a], kind="stable")
        wo = ws[o]
        cw = np.cumsum(wo)[:-1]
        cwx = np.cumsum(wo[:, None] * Xs[o], axis=0)[:-1]
        twx = tw * mu
        rwx = twx - cwx
        rw = np.maximum(tw - cw, 1e-300)
        g = np.einsum("ij,ij->i", cwx, cwx) / cw + np.einsum("ij,ij->i", rwx, rwx) / rw
        i = int(np.argmax(g))
        gain = float(g[i] - twx @ twx / tw)
        return gain, (idx[o[: i + 1]], idx[o[i + 1:]])

    heap = []
    done = []
    counter = 0

    def push(idx):
        nonlocal counter
        gain, parts = best(idx)
        if parts is None or gain <= 0:
            done.append(idx)
        else:
            heapq.heappush(heap, (-gain, counter, idx, parts))
            counter += 1

    push(np.arange(B))
    while heap and len(heap) + len(done) < k:
        _, _, _, parts = heapq.heappop(heap)
        push(parts[0])
        push(parts[1])
    boxes = done + [h[2] for h in heap]
    return np.array([w[b] @ X[b] / w[b].sum() for b in boxes])


def _kmeanspp(X, w, k, rng, init=None):
    """Greedy weighted k-means++. X (B, C) float32, w (B,) float64 -> (k, C) float32."""
    B, C = X.shape
    n_local = 2 + int(np.log(max(k, 2)))
    centres = np.empty((k, C), np.float32)
    nfix = 0 if init is None else len(init)
    d = np.full(B, np.inf, np.float64)
    if nfix:
        centres[:nfix] = init
        for c in init:
            diff = X - c
            np.minimum(d, np.einsum("ij,ij->i", diff, diff), out=d)
        start = nfix
    else:
        first = rng.choice(B, p=w / w.sum())
        centres[0] = X[first]
        diff = X - X[first]
        d = np.einsum("ij,ij->i", diff, diff).astype(np.float64)
        start = 1
    for i in range(start, k):
        pot = d * w
        tot = pot.sum()
        if tot <= 0:
            centres[i:] = X[rng.choice(B, size=k - i, replace=B < k - i)]
            break
        cand = np.minimum(np.searchsorted(np.cumsum(pot), rng.random(n_local) * tot), B - 1)
        diff = X[None, :, :] - X[cand][:, None, :]
        dc = np.minimum(np.einsum("lij,lij->li", diff, diff), d[None, :])
        best = int(np.argmin(dc @ w))
        centres[i] = X[cand[best]]
        d = dc[best]
    return centres


def _lloyd(X, w, centres, nfix, max_iter, tol, assign=None, lower=None):
    """Weighted Lloyd with Hamerly bounds on X (B, C) float32, w (B,) float64.

    ``centres`` (k, C); the first ``nfix`` never move.  Optional starting ``assign``
    (B,) and valid ``lower`` (B,) bounds on the distance to the second-nearest centre.
    Returns (centres float32, assign (B,), lower (B,), sse).
    """
    B, C = X.shape
    k = centres.shape[0]
    centres = np.asarray(centres, np.float32).copy()
    if assign is None:
        assign, d1, d2 = nearest_two(X, centres)
        upper = np.sqrt(d1)
        lower = np.sqrt(d2)
    else:
        assign = assign.copy()
        lower = lower.astype(np.float32).copy()
        diff = X - centres[assign]
        upper = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        todo = np.flatnonzero(upper >= lower)
        if todo.size:
            a, e1, e2 = nearest_two(X[todo], centres)
            assign[todo] = a
            upper[todo] = np.sqrt(e1)
            lower[todo] = np.sqrt(e2)
    wX = X.astype(np.float64) * w[:, None]
    prev = np.inf
    sse = np.inf
    for it in range(max_iter):
        wsum = np.bincount(assign, weights=w, minlength=k)
        new = centres.copy()
        ok = wsum > 0
        for c in range(C):
            s = np.bincount(assign, weights=wX[:, c], minlength=k)
            new[ok, c] = s[ok] / wsum[ok]
        new[:nfix] = centres[:nfix]
        shift = np.sqrt(((new - centres) ** 2).sum(axis=1))
        centres = new
        if not shift.any():
            break
        upper += shift[assign]
        lower -= shift.max()
        todo = np.flatnonzero(upper >= lower)
        if todo.size:
            diff = X[todo] - centres[assign[todo]]
            upper[todo] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            todo = todo[upper[todo] >= lower[todo]]
        if todo.size:
            a, e1, e2 = nearest_two(X[todo], centres)
            assign[todo] = a
            upper[todo] = np.sqrt(e1)
            lower[todo] = np.sqrt(e2)
        # upper is exact for re-assigned points and an upper bound elsewhere: the
        # bound-based error estimate is monotone enough for a stopping rule.
        sse = float(np.dot(upper * upper, w))
        if prev - sse <= tol * sse:
            break
        prev = sse
    diff = X - centres[assign]
    sse = float(np.dot(np.einsum("ij,ij->i", diff, diff), w))
    return centres, assign, lower, sse


def kmeans_palette(colors, weights, k, *, metric="euclidean", seed=0, fixed=None,
                   n_init=None, max_iter=100, tol=1e-4, bits=5, polish_iter=None):
    """Weighted K-means palette step.

    Parameters
    ----------
    colors : (U, C) uint8 or float32 array of distinct colours
    weights : (U,) int64 > 0 pixel counts
    k : int >= 1
    metric : accepted for the protocol; fitting is always squared Euclidean
    seed : int >= 0, drives the k-means++ restarts (deterministic)
    fixed : None or (F, C) array of colors' dtype; returned first, exactly
    n_init : restarts (default 4 for k <= 32, else 1); restart 0 is the split seed
    bits : grid bits per channel for the reduced fitting stage
    polish_iter : Lloyd iterations on the true colours (default 8 for k <= 32, else 4)

    Returns
    -------
    (m, C) array of colors' dtype, m <= min(k, U + F), distinct rows.
    """
    colors = np.asarray(colors)
    U, C = colors.shape
    w_all = np.asarray(weights, np.float64)
    rng = np.random.default_rng(seed)
    fixed = None if fixed is None or len(fixed) == 0 else np.asarray(fixed, colors.dtype)
    nfix = 0 if fixed is None else len(fixed)
    if U + nfix <= k or k <= nfix:
        out = colors if fixed is None else np.concatenate([fixed, colors])
        return _dedupe(out)[:max(k, nfix)]
    if n_init is None:
        n_init = 4 if k <= 32 else 1
    if polish_iter is None:
        polish_iter = 8 if k <= 32 else 4
    Xt = colors.astype(np.float32)
    if U > 2048 and U > 4 * k:
        Xr64, wr, inv = bin_reduce(colors, w_all, bits)
        if Xr64.shape[0] < 2 * k:
            Xr64, wr, inv = Xt.astype(np.float64), w_all, None
    else:
        Xr64, wr, inv = Xt.astype(np.float64), w_all, None
    Xr = Xr64.astype(np.float32)
    fixf = None if fixed is None else fixed.astype(np.float32)
    kfree = k - nfix
    best = None
    for r in range(n_init):
        if r == 0:
            init = _split_init(Xr64, wr, kfree).astype(np.float32)
            if fixf is not None:
                init = np.concatenate([fixf, init])
        else:
            init = _kmeanspp(Xr, wr, k, rng, init=fixf)
        res = _lloyd(Xr, wr, init, nfix, max_iter, tol)
        if best is None or res[3] < best[3]:
            best = res
    cen, assign, lower, _ = best
    if inv is not None and polish_iter > 0:
        # inherit bounds from the cell: d(x, c_j) >= lower_cell - d(x, cell_mean)
        dm = Xt - Xr[inv]
        r = np.sqrt(np.einsum("ij,ij->i", dm, dm))
        low = lower[inv] - r
        cen, _, _, _ = _lloyd(Xt, w_all, cen, nfix, polish_iter, tol,
                              assign=assign[inv], lower=low)
    if colors.dtype == np.uint8:
        out = np.clip(np.rint(cen), 0, 255).astype(np.uint8)
    else:
        out = cen.astype(colors.dtype)
    if nfix:
        out[:nfix] = fixed
    return _dedupe(out)


def _dedupe(P):
    """Drop repeated rows, keeping the first occurrence and the order."""
    _, first = np.unique(P, axis=0, return_index=True)
    return P[np.sort(first)]
