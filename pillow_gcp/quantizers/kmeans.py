"""Weighted K-means palette step (see the protocol in :mod:`pillow_gcp.quantizers`).

Everything works on the weighted histogram of unique colours, never on pixels:

1. reduce: unique colours are merged into the cells of a 2**bits grid per channel
   (weighted means; 5 bits for k <= 32, 6 bits above), so seeding and the bulk of
   Lloyd scale with occupied cells (a few thousand to ~20k for a photo); when that
   level would hold more than ``max_cells`` (24k; noisy or saturated photos fill up
   to ~90k 6-bit cells), steps 2-4 run one bit coarser and the level follows as a
   refinement;
2. seed: greedy variance-minimising splits of the weighted cells (Wu / median-cut
   like, vectorised in rounds: :func:`_split_init`); for k <= 32 five more restarts
   seeded by greedy weighted k-means++ drawn from ``seed``;
3. Lloyd on the cells: squared Euclidean, float32 distances in small BLAS blocks
   (see :mod:`.nearest`; no BLAS setting is touched),
   Hamerly upper/lower bounds so only cells whose bound test fails are re-assigned,
   stop on relative improvement < ``tol``;
4. swap moves (:func:`_swap_refine`): the centres whose removal costs least are moved
   to the worst point of the clusters with the largest error, Lloyd re-run, the move
   kept only if the error drops (escapes poor local optima; +0.05-0.1 dB);
5. polish: a few Lloyd steps on the true unique colours, starting from bounds
   inherited from each colour's cell through the triangle inequality, so only
   ambiguous colours are re-assigned (above 150k unique colours and k > 32, a
   7-bit level replaces this step: same error, a third less time; above 1M unique
   colours, e.g. noisy 24 MP photos, only the 6-bit level with 8 swap rounds);
6. round to uint8 (uint8 input) and drop duplicate rows.

K-means minimises weighted squared Euclidean error in the given space whatever
``metric`` is; ``metric`` is used only by the front door for the final exact
nearest-entry mapping (and for its repair of unused entries).
"""

from __future__ import annotations

import numpy as np

from .._threads import split_rows
from ._pcg import Pcg64
from .histogram import bin_reduce
from .nearest import lowest_rows, nearest_two, sqnorm

__all__ = ["kmeans_palette"]


def _split_init(X, w, k):
    """Greedy variance splits. X (B, C) float64, w (B,) float64 -> (k', C) float64, k' <= k.

    Boxes (sets of points) are split along their highest-variance axis at the cut that
    minimises the children's summed squared error.  Splits are done in rounds: each
    round splits the boxes with the largest error reduction (at most half of the boxes,
    and never more than still needed), all candidate cuts being evaluated at once with
    segmented cumulative sums, so the cost is a few vectorised passes per round.
    """
    B, C = X.shape
    label = np.zeros(B, np.int64)
    nbox = 1
    gain = np.zeros(k, np.float64)
    right = np.zeros(B, bool)
    wX = X * w[:, None]
    lo = float(X.min()) if B else 0.0
    inv_span = 0.5 / max(float(X.max()) - lo, 1e-9) if B else 1.0

    def evaluate(pts):
        """Best cut of every box touched by ``pts`` (all points of those boxes)."""
        L = label[pts]
        # sorted box ids and each point's rank among them (np.unique's, by a table: ids < k)
        present = np.zeros(k, bool)
        present[L] = True
        ub = np.flatnonzero(present)
        nb = ub.size
        Ld = np.take(np.cumsum(present) - 1, L)
        wp = np.take(w, pts)
        W = np.bincount(Ld, weights=wp, minlength=nb)
        WX = np.empty((nb, C))
        WXX = np.empty((nb, C))
        # row gathers by np.take: 3-4x faster than fancy indexing of (n, C) rows
        Xp = np.take(X, pts, axis=0)
        wXp = np.take(wX, pts, axis=0)
        for c in range(C):
            WX[:, c] = np.bincount(Ld, weights=wXp[:, c], minlength=nb)
            WXX[:, c] = np.bincount(Ld, weights=wXp[:, c] * Xp[:, c], minlength=nb)
        var = WXX - WX * WX / W[:, None]
        axis = np.argmax(var, axis=1)
        coord = np.take_along_axis(Xp, np.take(axis, Ld)[:, None], axis=1)[:, 0]
        # sort by (box, coordinate) with one float key: box id + coordinate in [0, 0.5]
        o = np.argsort(Ld + (coord - lo) * inv_span)
        Ls = np.take(Ld, o)
        ws = np.take(wp, o)
        cw = np.cumsum(ws)
        cwx = np.cumsum(np.take(wXp, o, axis=0), axis=0)
        starts = np.flatnonzero(np.r_[True, Ls[1:] != Ls[:-1]])
        base_w = np.take(np.r_[0.0, cw], starts)
        base_x = np.take(np.vstack([np.zeros((1, C)), cwx]), starts, axis=0)
        lw = cw - np.take(base_w, Ls)
        lx = cwx - np.take(base_x, Ls, axis=0)
        rw = np.take(W, Ls) - lw
        rx = np.take(WX, Ls, axis=0) - lx
        tot = np.einsum("ij,ij->i", WX, WX) / W
        with np.errstate(divide="ignore", invalid="ignore"):
            g = (np.einsum("ij,ij->i", lx, lx) / lw + np.einsum("ij,ij->i", rx, rx) / rw
                 - tot[Ls])
        g[rw <= 1e-12 * W[Ls]] = -np.inf
        g[~np.isfinite(g)] = -np.inf
        # best position per box: first maximum in each segment
        gmax = np.maximum.reduceat(g, starts)
        is_best = g == gmax[Ls]
        pos = np.flatnonzero(is_best)
        _, first = np.unique(Ls[pos], return_index=True)
        cut = pos[first]  # position (in sorted order) of the last left point
        gain[ub] = np.where(np.isfinite(gmax), gmax, -np.inf)
        rank = np.arange(pts.size)
        right[pts[o]] = rank > cut[Ls]

    evaluate(np.arange(B))
    while nbox < k:
        cand = np.argsort(-gain[:nbox], kind="stable")
        cand = cand[gain[cand] > 0]
        if cand.size == 0:
            break
        n_split = min(k - nbox, max(1, nbox // 2), cand.size)
        chosen = cand[:n_split]
        newid = np.full(nbox, -1, np.int64)
        newid[chosen] = np.arange(nbox, nbox + n_split)
        is_ch = newid[label] >= 0
        pts = np.flatnonzero(is_ch)
        mv = pts[right[pts]]
        label[mv] = newid[label[mv]]
        nbox += n_split
        evaluate(pts)
    W = np.bincount(label, weights=w, minlength=nbox)
    cen = np.empty((nbox, C))
    for c in range(C):
        cen[:, c] = np.bincount(label, weights=wX[:, c], minlength=nbox) / W
    return cen


def _kmeanspp(X, w, k, rng, init=None):
    """Greedy weighted k-means++. X (B, C) float32, w (B,) float64 -> (k, C) float32.

    ``rng`` a :class:`._pcg.Pcg64` (the draws of ``numpy.random.default_rng(seed)``).

    Distances and the candidates' potentials are float32 (numpy's einsum is ~10x
    faster on one dtype than on a float32/float64 mix; the potentials only rank the
    ``2 + log k`` candidates); the sampling runs on float64 cumulative sums.
    """
    B, C = X.shape
    n_local = 2 + int(np.log(max(k, 2)))
    centres = np.empty((k, C), np.float32)
    nfix = 0 if init is None else len(init)
    w32 = w.astype(np.float32)
    Xc = [np.ascontiguousarray(X[:, c]) for c in range(C)]

    def sqdist(points):
        """(l, C) -> (l, B) float32 squared distances to every row of X."""
        D = np.subtract.outer(points[:, 0], Xc[0])
        D *= D
        for c in range(1, C):
            t = np.subtract.outer(points[:, c], Xc[c])
            t *= t
            D += t
        return D

    d = np.full(B, np.inf, np.float32)
    if nfix:
        centres[:nfix] = init
        for c in init:
            np.minimum(d, sqdist(np.asarray(c, np.float32)[None])[0], out=d)
        start = nfix
    else:
        first = rng.choice_p(w / w.sum())
        centres[0] = X[first]
        d = sqdist(X[first][None])[0]
        start = 1
    for i in range(start, k):
        pot = d * w
        tot = pot.sum()
        if tot <= 0:
            centres[i:] = X[rng.numpy(lambda g: g.choice(B, size=k - i, replace=B < k - i))]
            break
        cand = np.minimum(np.searchsorted(np.cumsum(pot), rng.random(n_local) * tot), B - 1)
        dc = np.minimum(sqdist(X[cand]), d[None, :])
        best = int(np.argmin(np.einsum("li,i->l", dc, w32)))
        centres[i] = X[cand[best]]
        d = dc[best]
    return centres


def _columns(X):
    """Contiguous channel columns of X (B, 3) float32 (for :func:`_dist_assigned`), else None."""
    if X.dtype == np.float32 and X.ndim == 2 and X.shape[1] == 3:
        return [np.ascontiguousarray(X[:, c]) for c in range(3)]
    return None


def _dist_assigned(X, Xc, centres, assign, rows=None, squared=False):
    """``sqrt(sqnorm(X[rows] - centres[assign[rows]]))`` (all rows when ``rows`` is None), float32;
    without the square root when ``squared``.

    With the :func:`_columns` ``Xc`` of a (B, 3) float32 X, the same sum in channel order is
    taken over gathered 1-D columns (3x faster than subtracting gathered (n, 3) rows); other
    shapes go through :func:`.nearest.sqnorm` itself.
    """
    a = assign if rows is None else np.take(assign, rows)
    if Xc is None:
        Xr = X if rows is None else np.take(X, rows, axis=0)
        d = sqnorm(Xr - np.take(centres, a, axis=0))
        return d if squared else np.sqrt(d)
    d = None
    for c in range(3):
        t = Xc[c] if rows is None else np.take(Xc[c], rows)
        t = t - np.take(centres[:, c], a)
        t *= t
        if d is None:
            d = t
        else:
            d += t
    return d if squared else np.sqrt(d, out=d)


#: at most this many centres that moved far more than the others get exact distances in
#: :func:`_drop_lower` instead of lowering every bound by their shift
_BIG_SHIFTS = 4
_BIG_RATIO = 2.0
_DROP_ROWS = 1 << 17  # rows per block of those distances (1M rows: 8.4 ms on one thread, 6.2 on two;
#                     blocks of 2^15 rows: 8.1 and 7.9, the GIL hand-overs eating the second core)


def _drop_lower(X, Xc, centres, assign, lower, shift):
    """Update Hamerly's lower bounds (distance to the second-nearest centre) in place after the
    centres moved by ``shift`` (k,).

    Plain Hamerly lowers every bound by the largest shift.  When a few centres moved much more
    than the rest (a relocated centre's first update after a swap move, a centre that lost
    most of its points), that would send nearly every point to the full search; instead the
    bound drops by the largest shift among the others, and the distance to each far-moved
    centre (other than the point's own) is measured exactly and taken as a bound too.
    """
    k = shift.size
    nb = min(_BIG_SHIFTS, k - 1)
    top = np.argsort(-shift, kind="stable")[:nb + 1] if nb > 0 else None
    if top is None or not shift[top[0]] > _BIG_RATIO * shift[top[nb]]:
        lower -= shift.max()
        return
    big = top[:nb][shift[top[:nb]] > _BIG_RATIO * shift[top[nb]]]
    lower -= shift[top[big.size]]
    Q = centres[big]
    if Xc is None:
        for j, c in enumerate(big):
            d = sqnorm(X - Q[j])
            np.sqrt(d, out=d)
            d[assign == c] = np.inf
            np.minimum(lower, d, out=lower)
        return

    def part(lo, hi):
        # row by row the same arithmetic, in blocks that stay in cache
        for s in range(lo, hi, _DROP_ROWS):
            e = min(hi, s + _DROP_ROWS)
            low = lower[s:e]
            a = assign[s:e]
            for j, c in enumerate(big):
                d = Xc[0][s:e] - Q[j, 0]
                d *= d
                for ch in (1, 2):
                    t = Xc[ch][s:e] - Q[j, ch]
                    t *= t
                    d += t
                np.sqrt(d, out=d)
                d[a == c] = np.inf
                np.minimum(low, d, out=low)

    split_rows(lower.size, _DROP_ROWS, lower.size * big.size * 8, part)


def _weighted_cols(X, w):
    """[w * X[:, c] for each channel] as contiguous float64 arrays (Lloyd's centre sums)."""
    return [X[:, c].astype(np.float64) * w for c in range(X.shape[1])]


def _lloyd(X, w, centres, nfix, max_iter, tol, assign=None, lower=None, wX=None, Xc=None,
           centres_only=False):
    """Weighted Lloyd with Hamerly bounds on X (B, C) float32, w (B,) float64.

    ``centres`` (k, C); the first ``nfix`` never move.  Optional starting ``assign``
    (B,) and valid ``lower`` (B,) bounds on the distance to the second-nearest centre;
    ``wX`` the :func:`_weighted_cols` of (X, w) and ``Xc`` the :func:`_columns` of X when the
    caller reuses them.
    Returns (centres float32, assign (B,), lower (B,), sse, dist (B,)) with ``dist`` the
    exact distance to the assigned centre and ``lower`` valid for the returned centres.
    With ``centres_only`` (the last level, whose caller keeps only the centres) the
    re-assignment after the last centre update, which only fed the returned assignment and
    error, is skipped: (centres, None, None, None, None), the same centres.
    """
    B, C = X.shape
    k = centres.shape[0]
    centres = np.asarray(centres, np.float32).copy()
    if Xc is None:
        Xc = _columns(X)
    if assign is None:
        assign, d1, d2 = nearest_two(X, centres)
        upper = np.sqrt(d1)
        lower = np.sqrt(d2)
    else:
        assign = assign.copy()
        lower = lower.astype(np.float32).copy()
        upper = _dist_assigned(X, Xc, centres, assign)
        todo = np.flatnonzero(upper >= lower)
        if todo.size:
            a, e1, e2 = nearest_two(np.take(X, todo, axis=0), centres)
            assign[todo] = a
            upper[todo] = np.sqrt(e1)
            lower[todo] = np.sqrt(e2)
    if wX is None:
        wX = _weighted_cols(X, w)
    prev = np.inf
    sse = np.inf
    for it in range(max_iter):
        wsum = np.bincount(assign, weights=w, minlength=k)
        new = centres.copy()
        ok = wsum > 0
        full = bool(ok.all())
        for c in range(C):
            s = np.bincount(assign, weights=wX[c], minlength=k)
            if full:
                new[:, c] = s / wsum
            else:
                new[ok, c] = s[ok] / wsum[ok]
        new[:nfix] = centres[:nfix]
        shift = np.sqrt(((new - centres) ** 2).sum(axis=1))
        centres = new
        if not shift.any():
            break
        if centres_only and it == max_iter - 1:
            return centres, None, None, None, None
        upper += np.take(shift, assign)
        _drop_lower(X, Xc, centres, assign, lower, shift)
        todo = np.flatnonzero(upper >= lower)
        if todo.size:
            ut = _dist_assigned(X, Xc, centres, assign, todo)
            upper[todo] = ut
            todo = todo[ut >= np.take(lower, todo)]
        if todo.size:
            a, e1, e2 = nearest_two(np.take(X, todo, axis=0), centres)
            assign[todo] = a
            upper[todo] = np.sqrt(e1)
            lower[todo] = np.sqrt(e2)
        # upper is exact for re-assigned points and an upper bound elsewhere: the
        # bound-based error estimate is monotone enough for a stopping rule.
        sse = float(np.einsum("i,i,i->", upper, upper, w))
        if prev - sse <= tol * sse:
            break
        prev = sse
    if centres_only:
        return centres, None, None, None, None
    d1 = _dist_assigned(X, Xc, centres, assign, squared=True)
    sse = float(np.einsum("i,i->", d1, w))
    return centres, assign, lower, sse, np.sqrt(d1)


def _dist_to(X, Q):
    """Euclidean distances (n, q) float32 from the rows of X (n, C) to the rows of Q (q, C).

    The same arithmetic as ``sqrt(sqnorm(X[:, None] - Q[None]))``; for three float32
    channels it runs channel by channel, without the (n, q, 3) temporary.
    """
    if X.dtype == np.float32 and Q.dtype == np.float32 and X.shape[1] == 3:
        D = np.subtract.outer(X[:, 0], Q[:, 0])
        D *= D
        for c in (1, 2):
            t = np.subtract.outer(X[:, c], Q[:, c])
            t *= t
            D += t
        return np.sqrt(D, out=D)
    D = X[:, None, :] - Q[None, :, :]
    return np.sqrt(sqnorm(D.reshape(-1, X.shape[1])).reshape(D.shape[:2]))


_MOVED_ELEMS = 1 << 16


def _nearest_moved(X, Q):
    """Index, distance and second distance (inf for one row of Q) from every row of X (B, C) to
    the nearest of the few rows of Q (q, C): ((B,) intp, (B,) float32, (B,) float32), the
    distances of :func:`_dist_to`, ties to the lowest index.

    For three float32 channels and q <= 127 the distances are laid out (q, B), the same values
    (the same subtraction, squares and sums in channel order, then the square root), and reduced
    across the q rows element-wise: the minimum, its lowest row (:func:`.nearest.lowest_rows`), then
    the minimum with that entry set to inf (numpy's argmin over rows of ~25 values costs ~50 ns a row).
    Otherwise (B, q) rows and argmin.  Split over threads when large (:func:`pillow_gcp._threads.split_rows`).
    """
    B = X.shape[0]
    q = Q.shape[0]
    jmin = np.zeros(B, np.intp)
    dmin = np.empty(B, np.float32)
    dsec = np.full(B, np.inf, np.float32)
    cols = X.dtype == np.float32 and Q.dtype == np.float32 and X.shape[1] == 3 and 1 < q <= 127
    if cols:
        Xc = [X[:, c] for c in range(3)]
        Qc = [Q[:, c, None] for c in range(3)]
        weights = np.arange(q, 0, -1, dtype=np.int8)[:, None]

    def part(lo, hi):
        if cols:
            step = max(256, _MOVED_ELEMS // q)  # columns per block: ~256 KiB of distances
            D = np.empty((q, min(step, hi - lo)), np.float32)
            t = np.empty_like(D)
            E = np.empty(D.shape, bool)
            for s in range(lo, hi, step):
                n = min(step, hi - s)
                Dn, tn, En = D[:, :n], t[:, :n], E[:, :n]
                np.subtract(Xc[0][None, s:s + n], Qc[0], out=Dn)  # (q, n): x - q as in _dist_to
                Dn *= Dn
                for c in (1, 2):
                    np.subtract(Xc[c][None, s:s + n], Qc[c], out=tn)
                    tn *= tn
                    Dn += tn
                np.sqrt(Dn, out=Dn)
                d = Dn.min(axis=0)
                j = lowest_rows(Dn, d, En, weights)
                jmin[s:s + n] = j
                dmin[s:s + n] = d
                Dn[j, np.arange(n)] = np.inf
                Dn.min(axis=0, out=dsec[s:s + n])
            return
        Dn = _dist_to(X[lo:hi], Q)
        if q == 1:
            dmin[lo:hi] = Dn[:, 0]
            return
        rows = np.arange(hi - lo)
        j = np.argmin(Dn, axis=1)
        jmin[lo:hi] = j
        dmin[lo:hi] = Dn[rows, j]
        Dn[rows, j] = np.inf
        # argmin + gather: numpy's min along short rows is 2-4x slower than argmin
        dsec[lo:hi] = Dn[rows, np.argmin(Dn, axis=1)]

    split_rows(B, 1024, B * q * 4, part)
    return jmin, dmin, dsec


def _member(labels, ids, k):
    """``np.isin(labels, ids)`` for cluster labels < k, by a table instead of a sort."""
    table = np.zeros(k, bool)
    table[ids] = True
    return table[labels]


def _swap_refine(X, w, state, nfix, rounds, frac, max_iter, tol, wX=None, Xc=None):
    """Remove-and-split moves on a converged Lloyd ``state`` (centres, assign, lower, sse, dist).

    The ``m`` centres whose removal costs least (estimated from the distance to the
    assigned centre and the lower bound on the second-nearest) are moved onto the worst
    point of the ``m`` clusters with the largest error; assignments and bounds are
    updated incrementally (distances to the moved centres only, full search only for
    points that lost their centre), Lloyd re-runs, and the move is kept only if the
    error drops.  ``m`` halves after a rejected move.  Returns the best state.
    ``wX`` / ``Xc``: as for :func:`_lloyd`.
    """
    cen, a, low, sse, up = state
    if Xc is None:
        Xc = _columns(X)
    k = cen.shape[0]
    m = max(1, int(frac * (k - nfix)))
    for _ in range(rounds):
        d1 = up.astype(np.float64) ** 2
        d2 = np.maximum(low.astype(np.float64), up) ** 2
        rem = np.bincount(a, weights=w * (d2 - d1), minlength=k)
        csse = np.bincount(a, weights=w * d1, minlength=k)
        rem[:nfix] = np.inf
        removed = np.argsort(rem, kind="stable")[:m]
        keep = np.ones(k, bool)
        keep[removed] = False
        cand = np.argsort(-np.where(keep, csse, -1.0), kind="stable")[:m]
        err = w * d1
        # worst point of each chosen cluster, in one pass
        sel = _member(a, cand, k)  # points of the chosen clusters
        idx = np.flatnonzero(sel)
        ai = np.take(a, idx)
        o = np.lexsort((-np.take(err, idx), ai))
        ao = np.take(ai, o)
        first = np.empty(ao.size, bool)
        first[:1] = True
        np.not_equal(ao[1:], ao[:-1], out=first[1:])
        worst_of = dict(zip(ao[first].tolist(), np.take(idx, o)[first].tolist()))
        new = cen.copy()
        moved = []
        for slot, j in zip(removed, cand):
            p = worst_of.get(int(j))
            if p is None or err[p] <= 0:
                continue
            new[slot] = X[p]
            moved.append(slot)
        if not moved:
            break
        moved = np.array(moved)
        # incremental assignment: removed centres only lose points; moved ones may win
        a2 = a.copy()
        u2 = up.astype(np.float32).copy()
        l2 = low.astype(np.float32).copy()
        lost = _member(a2, moved, k)
        jmin, dmin, dsec = _nearest_moved(X, new[moved])
        win = ~lost & (dmin < u2)
        l2[win] = np.minimum(np.minimum(u2[win], l2[win]), dsec[win])
        a2[win] = moved[jmin[win]]
        u2[win] = dmin[win]
        stay = ~lost & ~win
        l2[stay] = np.minimum(l2[stay], dmin[stay])
        li = np.flatnonzero(lost)
        if li.size:
            aa, e1, e2 = nearest_two(np.take(X, li, axis=0), new)
            a2[li] = aa
            u2[li] = np.sqrt(e1)
            l2[li] = np.sqrt(e2)
        if wX is None:
            wX = _weighted_cols(X, w)
        res = _lloyd(X, w, new, nfix, max_iter, tol, assign=a2, lower=l2, wX=wX, Xc=Xc)
        if res[3] < sse * (1 - 1e-6):
            cen, a, low, sse, up = res
        else:
            m //= 2
            if m == 0:
                break
    return cen, a, low, sse, up


def kmeans_palette(colors, weights, k, *, metric="euclidean", seed=0, fixed=None,
                   n_init=None, max_iter=100, tol=1e-4, bits=None, level_iter=10,
                   polish_iter=None, swap_rounds=None, swap_frac=0.1, max_cells=24_000):
    """Weighted K-means palette step.

    Parameters
    ----------
    colors : (U, C) uint8 or float32 array of distinct colours
    weights : (U,) int64 > 0 pixel counts
    k : int >= 1
    metric : accepted for the protocol; fitting is always squared Euclidean
    seed : int >= 0, drives the k-means++ restarts (deterministic)
    fixed : None or (F, C) array of colors' dtype; returned first, exactly
    n_init : restarts (default 6 for k <= 32, else 1); restart 0 is the split seed
    bits : grid bits per channel of the reduced levels, coarse to fine
    level_iter : Lloyd iterations on each finer reduced level
    max_cells : when the first level has more cells, the search runs one bit coarser
    polish_iter : Lloyd iterations on the true colours (default 8 for k <= 32, else 4)

    Returns
    -------
    (m, C) array of colors' dtype, m <= min(k, U + F), distinct rows.
    """
    colors = np.asarray(colors)
    U, C = colors.shape
    w_all = np.asarray(weights, np.float64)
    rng = Pcg64(seed)  # numpy's default_rng(seed) stream, without importing numpy.random
    fixed = None if fixed is None or len(fixed) == 0 else np.asarray(fixed, colors.dtype)
    nfix = 0 if fixed is None else len(fixed)
    if U + nfix <= k or k <= nfix:
        out = colors if fixed is None else np.concatenate([fixed, colors])
        return _dedupe(out)[:max(k, nfix)]
    small = k <= 32
    if n_init is None:
        n_init = 6 if small else 1
    huge = U > 150_000  # e.g. large photos: a 7-bit level replaces the exact polish
    # very large histograms (noisy 10-25 MP photos, > 1M colours): the 7-bit level
    # would hold ~0.5M cells and cost as much as everything else together; its gain
    # there is ~0.02 dB, about what more swap rounds on the 6-bit level give back
    giant = U > 1_000_000
    if polish_iter is None:
        polish_iter = 4 if small else (0 if huge else 3)
    if bits is None:
        bits = (5,) if small else ((6,) if giant else ((6, 7) if huge else (6,)))
    if swap_rounds is None:
        swap_rounds = 10 if small else (8 if giant else 4)
    Xt = colors.astype(np.float32)
    # multi-resolution: coarse cells, finer cells, then the true colours; each level
    # starts from the previous centres with bounds inherited through the cell means
    levels = []
    if U > 2048 and U > 4 * k:
        first_bits = None
        for b in bits:
            Xb, wb, invb = bin_reduce(colors, w_all, b)
            if Xb.shape[0] >= 2 * k and Xb.shape[0] < 0.7 * U:
                levels.append((Xb.astype(np.float32), wb, invb))
                first_bits = b if first_bits is None else first_bits
        # the seeding, restarts and swap moves cost in proportion to the cells of the
        # first level: when noise or saturation spreads the colours over too many cells
        # (a noisy photo fills 30-90k 6-bit cells, a clean one 4-14k), those moves run
        # one bit coarser and the full level follows as a refinement
        if levels and levels[0][0].shape[0] > max_cells and first_bits > 4:
            Xb, wb, invb = bin_reduce(colors, w_all, first_bits - 1)
            if Xb.shape[0] >= 2 * k:
                levels.insert(0, (Xb.astype(np.float32), wb, invb))
    fixf = None if fixed is None else fixed.astype(np.float32)
    kfree = k - nfix
    if levels:
        X0, w0, _ = levels[0]
    else:
        X0, w0 = Xt, w_all
    best = None
    wX0 = _weighted_cols(X0, w0)
    Xc0 = _columns(X0)
    for r in range(n_init):
        if r == 0:
            init = _split_init(X0.astype(np.float64), w0, kfree).astype(np.float32)
            if fixf is not None:
                init = np.concatenate([fixf, init])
        else:
            init = _kmeanspp(X0, w0, k, rng, init=fixf)
        res = _lloyd(X0, w0, init, nfix, max_iter, tol, wX=wX0, Xc=Xc0)
        if swap_rounds:
            res = _swap_refine(X0, w0, res, nfix, swap_rounds, swap_frac, max_iter, tol, wX=wX0, Xc=Xc0)
        if best is None or res[3] < best[3]:
            best = res
    cen, assign, lower = best[:3]
    # finer levels: map each finer point to the coarse cell it falls in
    prev_X, prev_inv = X0, (levels[0][2] if levels else None)
    targets = [(lv[0], lv[1], lv[2], level_iter) for lv in levels[1:]]
    if levels and polish_iter > 0:
        targets.append((Xt, w_all, np.arange(U), polish_iter))
    for t, (Xn, wn, invn, n_it) in enumerate(targets):
        # parent of each fine point: colour -> coarse cell (prev_inv) vs colour -> fine (invn)
        parent = np.empty(Xn.shape[0], np.int64)
        parent[invn] = prev_inv
        # row gathers by np.take: the same rows, 3-4x faster than fancy indexing
        dm = Xn - np.take(prev_X, parent, axis=0)
        low = np.take(lower, parent) - np.sqrt(np.einsum("ij,ij->i", dm, dm))
        cen, assign, lower, _, _ = _lloyd(Xn, wn, cen, nfix, n_it, tol, assign=np.take(assign, parent),
                                       lower=low, centres_only=t == len(targets) - 1)
        prev_X, prev_inv = Xn, invn
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
