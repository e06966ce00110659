"""Weighted K-medoids palette step (FasterPAM-style swaps on a reduced histogram).

The palette is a set of ``k`` *medoids*: actual colours of the image, chosen to minimise
the weighted sum, over all unique colours, of the distance (``metric``, not squared) from
each colour to its nearest medoid.  Plain PAM is ``O(k U^2)`` per pass and a ``U x U``
matrix is out of the question for photos (``U`` = 20k-150k unique colours), so the search
runs in stages, all vectorised with numpy and bounded in memory:

1. **Reduce.**  The unique colours are binned on a regular grid whose resolution is
   chosen so that at most ``_MAX_POINTS`` (6144) cells are occupied.  Each occupied cell
   is one weighted *point*: its weighted mean ``mu``, per-channel variance ``var`` and
   total pixel count.  The distance from a candidate colour ``c`` to a cell is the
   surrogate ``sqrt(|c - mu|^2 + sum(var))`` (the exact root mean *squared* distance to
   the cell's pixels; manhattan / chebyshev apply the same correction per channel).
   Coarser reductions (1024, 128 cells) merge these cells.  Candidate medoids are real
   colours: for each cell the colour nearest its mean; the candidate list keeps the
   128-cell grid's representatives (coverage of rare colours) and fills up with the
   heaviest cells' (384 in all).  When ``U <= 6144`` the colours themselves are the
   points (no approximation).
2. **Swap search on the reduced problem.**  Greedy weighted k-means++ seeding, then eager
   FasterPAM-style swaps (Schubert & Rousseeuw 2021): the loss change of every
   (candidate, medoid) swap is computed for a block of 128 candidates at once from the
   nearest / second-nearest distances (the ``O(k)`` decomposition, written as two matrix
   products per block); the best improving swap of the block is applied at once, and the
   block's gains are corrected from the points whose nearest medoid or nearest /
   second-nearest distance changed (no new evaluation of the block); blocks are visited
   cyclically until all were evaluated without improvement since the last swap.  Five
   seedings run on the 1024-cell reduction; the two best are refined on the 6144-cell one
   and the best surrogate loss wins.
3. **Exact polish on all colours.**  Alternating rounds on the full histogram: assign
   every unique colour to its nearest medoid (the first round all colours, chunked; later
   rounds only those whose nearest medoid may have changed, by Hamerly's bound: a colour
   keeps its medoid when its distance to it is below a lower bound of its distance to the
   others minus their largest shift - the same assignment as a full pass), take one
   Weiszfeld-type step from each medoid towards its cluster's metric centre, and among the
   cluster members nearest that point and nearest the current medoid pick the one with
   the smallest weighted distance sum over the whole cluster (chunked float32 products;
   the choice is confirmed in float64).  The current medoid is always a candidate, so the
   exact loss never increases; rounds stop when one gains < 0.01 %, after 4 at most.

Memory: ``O(6144 * 384 + U * C + chunk * k)``; nothing of size ``U x U`` or ``pixels x k``
is built.  The same inputs and ``seed`` give bit-identical output.
"""

from __future__ import annotations

import numbers

import numpy as np

from .nearest import BLAS_MACS, _first_min, matmul_small, nearest, nearest_two, sqnorm

__all__ = ["kmedoids_palette", "palette_loss", "METRICS"]

METRICS = ("euclidean", "manhattan", "chebyshev")

#: Occupied grid cells used for the swap search (points and candidates).  The
#: surrogate error shrinks with finer cells: 4096 -> 6144 cells took the photos where
#: the loss is <= CLARA+FasterPAM's from 18/24 to 23/24 (Kodak; USC-SIPI 14/14 both)
#: for ~15 % more time (bench/bench_kmedoids.py).
_MAX_POINTS = 6144
#: Candidate medoids in the swap search.  512 -> 384 cut the K-medoids time by ~16 %
#: (with 6 -> 5 restarts) at the same median loss vs CLARA+FasterPAM (Kodak 0.9962 vs
#: 0.9964, 23/24 as before; USC-SIPI 0.9941 vs 0.9935, 14/14); 320 lost one more Kodak photo.
_MAX_CAND = 384
#: Independent seedings of the swap search (best surrogate loss kept).
_RESTARTS = 5
#: Coarse reduction used for the restarts.
_COARSE_POINTS = 1024
_COARSE_CAND = 256
#: Restart solutions refined on the fine reduction.
_KEEP = 2
#: Grid representatives always among the candidates (coverage of rare colours).
_COVER = 128
#: Candidates evaluated per block in the swap search (k <= 16; fewer for larger k).
_BLOCK = 128
#: Maximum swap passes over all candidates.
_MAX_PASSES = 8
#: Maximum alternating polish rounds on the full histogram (any k).  Up to 8 rounds for
#: k <= 32 cost 10-27 % of the time on 512x512 photos with 150-230k colours for a loss change
#: <= 0.04 % (Kodak 23/24 and USC-SIPI 14/14 vs CLARA+FasterPAM either way).
_MAX_ALT = 4
#: Candidates per cluster in the polish step.
_POLISH_CANDIDATES = 24
#: The polish stops when a round gains less than this fraction of the loss.
_POLISH_TOL = 1e-4
#: Floats per distance block when working on the full histogram.
_CHUNK_ELEMS = 1 << 21


# --------------------------------------------------------------------------- distances
def _pairwise(A, B, metric):
    """Distances between rows: ``A`` (a, C) float32, ``B`` (b, C) float32 -> (a, b) float32."""
    if metric == "euclidean":
        D = matmul_small(A, (-2.0 * B).T)
        D += sqnorm(A)[:, None]
        D += sqnorm(B)[None, :]
        np.maximum(D, 0, out=D)
        return np.sqrt(D, out=D)
    red = np.add if metric == "manhattan" else np.maximum
    D = np.abs(A[:, None, 0] - B[None, :, 0])
    for c in range(1, A.shape[1]):
        red(D, np.abs(A[:, None, c] - B[None, :, c]), out=D)
    return D


def _rowdist(A, b, metric, squared=False):
    """Distance of each row of ``A`` (n, C) to ``b``: one point (C,) or one per row (n, C).

    -> (n,) of the common dtype; ``squared``: the squared distance for "euclidean".
    """
    d = A - b
    if metric == "euclidean":
        d2 = sqnorm(d)
        return d2 if squared else np.sqrt(d2, out=d2)
    np.abs(d, out=d)
    return d.sum(1) if metric == "manhattan" else d.max(1)


def _assign(X, M, metric):
    """Nearest medoid of every colour, chunked.

    X : (U, C) float32, M : (m, C) float32 -> labels (U,) int64, dist (U,) float32.
    Ties go to the lowest medoid index.
    """
    if metric == "euclidean":
        # argmin on squared distances (small BLAS blocks); the root only of the minima
        labels, d2 = nearest(X, M, "euclidean", return_dist=True)
        return labels, np.sqrt(d2)
    U = X.shape[0]
    m = M.shape[0]
    labels = np.empty(U, np.int64)
    dist = np.empty(U, np.float32)
    step = max(256, _CHUNK_ELEMS // max(m * 2, 1))
    for s in range(0, U, step):
        D = _pairwise(X[s:s + step], M, metric)
        j = np.argmin(D, axis=1)
        labels[s:s + step] = j
        dist[s:s + step] = D[np.arange(len(j)), j]
    return labels, dist


def palette_loss(colors, weights, palette, metric="euclidean"):
    """Weighted mean distance from each colour to its nearest palette entry.

    colors : (U, C), weights : (U,), palette : (m, C) -> float (the chosen ``metric``).
    """
    _check_metric(metric)
    X = np.asarray(colors, np.float32)
    P = np.asarray(palette, np.float32)
    w = np.asarray(weights, np.float64)
    _, d = _assign(X, P, metric)
    return float(np.einsum("i,i->", d.astype(np.float64), w) / w.sum())


# --------------------------------------------------------------------------- validation
def _check_metric(metric):
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _validate(colors, weights, k, metric, seed, fixed):
    _check_metric(metric)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int >= 1, got {type(k).__name__}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int >= 0, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] not in (3, 4) or colors.shape[0] < 1:
        raise ValueError(f"colors must have shape (U, 3) or (U, 4) with U >= 1, got {colors.shape}")
    if colors.dtype == np.uint8:
        pass
    elif colors.dtype.kind == "f":
        if not np.all(np.isfinite(colors)):
            raise ValueError("colors must be finite")
    else:
        raise TypeError(f"colors must be uint8 or float, got dtype {colors.dtype}")
    weights = np.asarray(weights)
    if weights.shape != (colors.shape[0],):
        raise ValueError(f"weights must have shape ({colors.shape[0]},), got {weights.shape}")
    if weights.dtype.kind not in "iuf":
        raise TypeError(f"weights must be numeric, got dtype {weights.dtype}")
    if weights.dtype.kind == "f" and not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite")
    if np.any(weights < 0):
        raise ValueError("weights must be >= 0")
    if not weights.sum() > 0:
        raise ValueError("weights must have a positive sum")
    if fixed is not None:
        fixed = np.asarray(fixed)
        if fixed.ndim != 2 or fixed.shape[1] != colors.shape[1]:
            raise ValueError(f"fixed must have shape (F, {colors.shape[1]}), got {fixed.shape}")
        if colors.dtype == np.uint8 and fixed.dtype != np.uint8:
            if fixed.dtype.kind not in "iu" or (fixed.size and (fixed.min() < 0 or fixed.max() > 255)):
                raise TypeError(f"fixed must be uint8 like colors, got dtype {fixed.dtype}")
        elif fixed.dtype.kind not in "iuf":
            raise TypeError(f"fixed must be numeric, got dtype {fixed.dtype}")
        fixed = fixed.astype(colors.dtype)
        if colors.dtype.kind == "f" and not np.all(np.isfinite(fixed)):
            raise ValueError("fixed must be finite")
        if fixed.shape[0] > k:
            raise ValueError(f"fixed has {fixed.shape[0]} rows, more than k={k}")
        if fixed.shape[0] and np.unique(fixed, axis=0).shape[0] != fixed.shape[0]:
            raise ValueError("fixed rows must be distinct")
        if fixed.shape[0] == 0:
            fixed = None
    return colors, weights, k, fixed


# --------------------------------------------------------------------------- stage 1
def _reduce(X, w, max_points, V0=None):
    """Bin weighted points on a grid with at most ``max_points`` occupied cells.

    X : (U, C) float32 points, w : (U,) float64 weights, V0 : None or (U, C) float32
    per-channel variance already carried by each point (when ``X`` are cells of a
    finer reduction).
    Returns P (n, C) float32 weighted cell means, V (n, C) float32 weighted per-channel
    variances inside each cell, pw (n,) float64 cell weights, rep (n,) int64 index into
    X of each cell's representative (the member nearest the cell mean).
    """
    U, C = X.shape
    # channel rows: numpy is several times slower on the short rows of an (U, C) array
    XT = np.ascontiguousarray(X.T)
    lo = np.array([XT[c].min() for c in range(C)], X.dtype)
    span = np.maximum(np.array([XT[c].max() for c in range(C)], X.dtype) - lo, 1e-12)
    scale = (1.0 / span).astype(np.float32)
    ZT = np.empty_like(XT)  # in [0, 1]
    for c in range(C):
        np.subtract(XT[c], lo[c], out=ZT[c])
        ZT[c] *= scale[c]
    lmax = 128 if C == 3 else 40

    def occupancy(levels):
        cell = None
        for c in range(C):
            q = np.minimum((ZT[c] * np.float32(levels)).astype(np.int32), levels - 1)
            if cell is None:
                cell = q.astype(np.int64)
            else:
                cell *= levels
                cell += q
        occ = np.zeros(levels ** C, bool)
        occ[cell] = True
        return cell, occ, int(np.count_nonzero(occ))

    # photos fill a grid roughly like a surface (n ~ levels^2): secant steps in log-log
    levels = int(min(lmax, max(2, 2 * np.sqrt(max_points)))) if C == 3 else 16
    best = None
    tried = {}

    def bracket():
        """Levels tried that fit / do not fit, and the open interval between them."""
        lower = [l for l, v in tried.items() if v <= max_points]
        upper = [l for l, v in tried.items() if v > max_points]
        return lower, upper, (max(lower) if lower else 1), (min(upper) if upper else lmax + 1)

    for _ in range(5):
        cell, occ, n = occupancy(levels)
        tried[levels] = n
        if n <= max_points and (best is None or levels > best[0]):
            best = (levels, cell, occ, n)
        if best is not None and best[3] > 0.8 * max_points:
            break
        lower, upper, lo_l, hi_l = bracket()
        if hi_l - lo_l <= 1:
            break
        slope = 2.0
        if lower and upper:
            a, b = max(lower), min(upper)
            if tried[a] > 0 and tried[b] > tried[a]:
                slope = np.log(tried[b] / tried[a]) / np.log(b / a)
        guess = int(levels * (0.95 * max_points / max(n, 1)) ** (1.0 / max(slope, 1.0)))
        levels = min(max(guess, lo_l + 1), hi_l - 1)
    # the secant steps can stall on point sets that are not surface-like (sparse
    # clusters: occupancy stays ~U until cells merge whole clusters); bisect between the
    # finest level known to fit and the coarsest known not to, so the grid is never
    # needlessly coarse (before, such a set could fall back to 2 levels = 8 cells)
    while best is None or best[3] <= 0.5 * max_points:
        _, _, lo_l, hi_l = bracket()
        if hi_l - lo_l <= 1:
            break
        mid = (lo_l + hi_l) // 2
        cell, occ, n = occupancy(mid)
        tried[mid] = n
        if n <= max_points and (best is None or mid > best[0]):
            best = (mid, cell, occ, n)
    if best is None:
        best = (2,) + occupancy(2)
    levels, cell, occ, n = best
    remap = np.cumsum(occ) - 1
    cell = remap[cell]
    pw = np.bincount(cell, weights=w, minlength=n)
    PT = np.empty((C, n), np.float64)
    VT = np.empty((C, n), np.float64)
    inv = 1.0 / np.maximum(pw, 1e-300)
    for c in range(C):
        PT[c] = np.bincount(cell, weights=w * XT[c], minlength=n) * inv
        r = XT[c] - np.take(PT[c], cell)
        r *= r
        if V0 is not None:
            r += V0[:, c]
        VT[c] = np.bincount(cell, weights=w * r, minlength=n) * inv
    PT = PT.astype(np.float32)
    P = np.ascontiguousarray(PT.T)
    dT = [XT[c] - np.take(PT[c], cell) for c in range(C)]
    if C == 3:  # sqnorm's sum in channel order
        d = dT[0] * dT[0]
        d += dT[1] * dT[1]
        d += dT[2] * dT[2]
    else:
        d = sqnorm(np.stack(dT, axis=1))
    d = d.astype(np.float64)
    key = cell + d / (d.max() + 1.0)
    # the member with the smallest key of each cell, the lowest index on ties (what the
    # first of each cell in a stable argsort of key is), without sorting
    kmin = np.full(n, np.inf)
    np.minimum.at(kmin, cell, key)
    at_min = np.flatnonzero(key == kmin[cell])
    rep = np.full(n, U, np.int64)
    np.minimum.at(rep, cell[at_min], at_min)
    zero = pw <= 0
    if np.any(zero):
        P[zero] = X[rep[zero]]
    return P, np.ascontiguousarray(VT.T.astype(np.float32)), pw, rep


def _point_dist(R, P, V, metric):
    """Expected-distance surrogate from candidates to cells.

    R : (r, C) candidate colours, P : (n, C) cell means, V : (n, C) cell variances ->
    (r, n) float32.  Euclidean: ``sqrt(|r - mu|^2 + sum(var))`` (exact for the squared
    distance, a tight upper bound of the mean distance); manhattan / chebyshev: the same
    correction per channel, summed / maxed.
    """
    if metric == "euclidean":
        D = matmul_small(R, (-2.0 * P).T)
        D += sqnorm(R)[:, None]
        D += (sqnorm(P) + V.sum(1))[None, :]
        np.maximum(D, 0, out=D)
        return np.sqrt(D, out=D)
    red = np.add if metric == "manhattan" else np.maximum
    D = None
    for c in range(R.shape[1]):
        d = np.subtract.outer(R[:, c], P[:, c])
        d *= d
        d += V[None, :, c]
        np.sqrt(d, out=d)
        D = d if D is None else red(D, d, out=D)
    return D


# --------------------------------------------------------------------------- stage 2
def _near2(MD):
    """Nearest and second-nearest medoid per point.

    MD : (m, n) float32 medoid-to-point distances -> near, near2 (n,) int64 and
    dn, ds (n,) float32 (``near2 = -1``, ``ds = inf`` when ``m == 1``).  Ties go to the
    lowest index.
    """
    m, n = MD.shape
    ar = np.arange(n)
    # argmin over the short axis 0 of long blocks is slow in numpy; _first_min: same indices
    near, dn = _first_min(MD, 0)
    near = near.astype(np.int64, copy=False)
    if m == 1:
        return near, np.full(n, -1, np.int64), dn, np.full(n, np.inf, np.float32)
    saved = dn.copy()
    MD[near, ar] = np.inf
    near2, ds = _first_min(MD, 0)
    near2 = near2.astype(np.int64, copy=False)
    MD[near, ar] = saved
    return near, near2, dn, ds


def _seed_pp(D, pw, MDfixed, n_free, allowed, rng):
    """Greedy weighted k-means++ seeding on the reduced problem.

    D : (r, n) candidate-to-point distances, pw : (n,) point weights,
    MDfixed : (F, n) fixed-medoid distances, allowed : (r,) bool candidate mask.
    Points are drawn with probability ~ weight * distance^2; each draw proposes the
    allowed candidate nearest to the drawn point, and of ``2 + log(k)`` proposals the
    one that lowers the surrogate loss most is kept.  Returns (n_free,) int64.
    """
    r, n = D.shape
    trials = 2 + int(np.log(max(n_free, 1)))
    avail = allowed.copy()

    def proposals(js):
        # nearest still-available candidate of each drawn point
        sub = D[:, js]
        sub = np.where(avail[:, None], sub, np.inf)
        return np.unique(np.argmin(sub, axis=0))

    chosen = []
    if MDfixed.shape[0]:
        cur = MDfixed.min(0)
    else:
        heavy = proposals(np.argsort(-pw, kind="stable")[: min(32, n)])
        c0 = int(heavy[np.argmin(np.einsum("ij,j->i", D[heavy], pw))])
        chosen.append(c0)
        avail[c0] = False
        cur = D[c0].copy()
    while len(chosen) < n_free:
        p = pw * cur.astype(np.float64) ** 2
        tot = p.sum()
        props = proposals(rng.choice(n, size=trials, p=p / tot)) if tot > 0 else np.zeros(0, np.int64)
        props = props[avail[props]]
        if props.size == 0:
            free = np.flatnonzero(avail)
            props = free[rng.choice(free.size, size=min(trials, free.size), replace=False)]
        cost = np.einsum("ij,j->i", np.minimum(D[props], cur[None, :]), pw)
        c = int(props[np.argmin(cost)])
        chosen.append(c)
        avail[c] = False
        np.minimum(cur, D[c], out=cur)
    return np.asarray(chosen, np.int64)


def _swap_search(D, pw, MDfixed, med, allowed, rng):
    """Eager block FasterPAM on the reduced problem.

    D : (r, n) float32 candidate-to-point distances, pw : (n,) float64 point weights,
    MDfixed : (F, n) float32, med : (n_free,) int64 initial candidate indices,
    allowed : (r,) bool candidates that may become medoids.  Returns improved ``med``.

    For a block of candidates ``c`` and every medoid slot ``i`` the loss change of the
    swap (remove medoid ``i``, add ``c``) is, with ``dn``/``ds`` the distance of each
    point to its nearest / second-nearest medoid and ``W[o, i] = w_o [near(o) = i]``::

        delta[c, i] = min(max(D, dn), ds)[c] @ W[:, i] + min(D, dn)[c] @ w
                      - sum(w dn) - sum_{near(o) = i} w_o dn_o

    (Schubert & Rousseeuw's O(k) decomposition: a shared gain plus a per-medoid
    removal loss and correction): a matrix-vector product plus per-medoid sums per
    block (a product with the one-hot ``W`` for ``m <= 32``, segment sums over the
    points sorted by nearest medoid otherwise).  The best improving swap of the block
    is applied, then the block is evaluated again.  After a swap only the points whose
    nearest or second-nearest medoid was replaced are rescanned.
    """
    r, n = D.shape
    F = MDfixed.shape[0]
    m = F + med.size
    med = med.copy()
    w32 = pw.astype(np.float32)
    w32p = np.stack([w32, np.zeros_like(w32)], axis=1)  # matmul_small pads one column to two
    MD = np.vstack([MDfixed, D[med]]).astype(np.float32)
    use_mm = m <= 32  # per-medoid sums: one-hot product for small k, segment sums else

    def full_state():
        near, near2, dn, ds = _near2(MD)
        return near, near2, dn, ds, float(np.einsum("i,i->", dn, pw))

    def swapped(st, slot):
        """State after MD[slot] changed, updating only the points it can affect."""
        near, near2, dn, ds, _ = st
        new = MD[slot]
        near, near2, dn, ds = near.copy(), near2.copy(), dn.copy(), ds.copy()
        aff = (near == slot) | (near2 == slot)
        closer = ~aff & (new < dn)
        mid = ~aff & ~closer & (new < ds)
        near2[closer] = near[closer]
        ds[closer] = dn[closer]
        near[closer] = slot
        dn[closer] = new[closer]
        near2[mid] = slot
        ds[mid] = new[mid]
        idx = np.flatnonzero(aff)
        if idx.size:
            a, b, c, d = _near2(MD[:, idx])
            near[idx], near2[idx], dn[idx], ds[idx] = a, b, c, d
        return near, near2, dn, ds, float(np.einsum("i,i->", dn, pw))

    def sums_setup(st):
        near, _, dn, _, loss = st
        const = (loss + np.bincount(near, weights=pw * dn, minlength=m)).astype(np.float32)
        if use_mm:
            W = np.zeros((n, m), np.float32)
            W[np.arange(n), near] = w32
            return const, W, None, None
        perm = np.argsort(near, kind="stable")
        bounds = np.searchsorted(near[perm], np.arange(m + 1))
        ne = bounds[:-1] < bounds[1:]
        return const, None, (perm, w32[perm]), (bounds[:-1][ne], ne)

    def per_medoid(A, setup):
        """(b, n) -> (b, m): sum of A * w over the points of each medoid."""
        _, W, pp, seg = setup
        if use_mm:
            return matmul_small(A, W)
        perm, wperm = pp
        G = A[:, perm]
        G *= wperm
        out = np.zeros((A.shape[0], m), np.float32)
        out[:, seg[1]] = np.add.reduceat(G, seg[0], axis=1)
        return out

    st = full_state()
    setup = sums_setup(st)
    # candidates in a random order, stored contiguously so that blocks are views
    order = rng.permutation(np.flatnonzero(allowed))
    Dp = D[order]
    pos = np.full(r, -1, np.int64)
    pos[order] = np.arange(order.size)
    med_mask = np.zeros(order.size, bool)
    med_mask[pos[med][pos[med] >= 0]] = True
    # a swap re-evaluates its block: smaller blocks when many swaps are expected
    B = int(max(32, min(_BLOCK, _BLOCK * 16 // m)))
    sub = int(min(B, max(16, (1 << 18) // max(n, 1))))
    buf = np.empty((min(sub, max(order.size, 1)), n), np.float32)
    starts = list(range(0, order.size, B))
    # blocks are visited cyclically; stop once every block was evaluated without an
    # improving swap since the last swap (FasterPAM's termination rule, per block)
    quiet = 0
    visits = 0
    bi_block = 0
    while quiet < len(starts) and visits < _MAX_PASSES * len(starts):
        s = starts[bi_block]
        bi_block = (bi_block + 1) % len(starts)
        visits += 1
        quiet += 1
        Dc = Dp[s:s + B]
        blk = None  # (shared (b,), per-medoid (b, m)) of this block for the state st
        while True:
            near, _, dn, ds, loss = st
            if blk is None:
                if setup is None:
                    setup = sums_setup(st)
                blk = (np.empty(Dc.shape[0], np.float32), np.empty((Dc.shape[0], m), np.float32))
                # in sub-blocks of ~1 MiB: the three element-wise passes and both products
                # then work on data in the L2 cache (~20 % faster than whole blocks)
                for a in range(0, Dc.shape[0], sub):
                    Ds = Dc[a:a + sub]
                    A = buf[: Ds.shape[0]]
                    np.minimum(Ds, dn, out=A)
                    blk[0][a:a + sub] = matmul_small(A, w32p)[:, 0]
                    np.maximum(Ds, dn, out=A)
                    np.minimum(A, ds, out=A)
                    blk[1][a:a + sub] = per_medoid(A, setup)
                const = setup[0]
            else:
                const = (loss + np.bincount(near, weights=pw * dn, minlength=m)).astype(np.float32)
            delta = blk[1] + blk[0][:, None]
            delta -= const[None, :]
            delta[med_mask[s:s + B]] = np.inf
            if F:
                delta[:, :F] = np.inf
            j = int(np.argmin(delta))
            bi, slot = divmod(j, m)
            if not delta[bi, slot] < -1e-6 * loss:
                break
            c = int(order[s + bi])
            old = int(med[slot - F])
            MD[slot] = D[c]
            st2 = swapped(st, slot)
            if not st2[4] < loss:  # float safety: never accept a non-improvement
                MD[slot] = D[old]
                break
            if pos[old] >= 0:
                med_mask[pos[old]] = False
            med_mask[s + bi] = True
            med[slot - F] = c
            # the block's sums for the new state: only the points whose nearest medoid,
            # or nearest / second-nearest distance, changed contribute a correction
            J = np.flatnonzero((st2[0] != near) | (st2[2] != dn) | (st2[3] != ds))
            if J.size:
                DJ = Dc[:, J]
                for sign, (nr, dj, sj) in ((-1, (near[J], dn[J], ds[J])),
                                           (1, (st2[0][J], st2[2][J], st2[3][J]))):
                    wp = np.zeros((J.size, 2), np.float32)
                    wp[:, 0] = w32[J]
                    A = np.minimum(DJ, dj)
                    sh = matmul_small(A, wp)[:, 0]
                    np.maximum(DJ, dj, out=A)
                    np.minimum(A, sj, out=A)
                    WJ = np.zeros((J.size, m), np.float32)
                    WJ[np.arange(J.size), nr] = w32[J]
                    pm = matmul_small(A, WJ)
                    if sign < 0:
                        blk[0][...] -= sh
                        blk[1][...] -= pm
                    else:
                        blk[0][...] += sh
                        blk[1][...] += pm
            st = st2
            setup = None
            quiet = 1
    return med


# --------------------------------------------------------------------------- stage 3
def _near2_all(X, M, metric):
    """Nearest medoid of every colour, its distance and the second-nearest distance, chunked.

    X : (U, C) float32, M : (m, C) float32 -> labels (U,) int64, dn, ds (U,) float32
    (``ds = inf`` when ``m == 1``).  Ties go to the lowest medoid index;
    ``labels`` and ``dn`` are those of :func:`_assign`.
    """
    if metric == "euclidean":
        labels, d1, d2 = nearest_two(X, M)
        return labels, np.sqrt(d1, out=d1), np.sqrt(d2, out=d2)
    U = X.shape[0]
    m = M.shape[0]
    labels = np.empty(U, np.int64)
    dn = np.empty(U, np.float32)
    ds = np.full(U, np.inf, np.float32)
    step = max(256, _CHUNK_ELEMS // max(m * 2, 1))
    for s in range(0, U, step):
        D = _pairwise(X[s:s + step], M, metric)
        r = np.arange(D.shape[0])
        j = np.argmin(D, axis=1)
        labels[s:s + step] = j
        dn[s:s + step] = D[r, j]
        if m > 1:
            D[r, j] = np.inf
            ds[s:s + step] = D.min(1)
    return labels, dn, ds


def _coldist(XT, b, metric, squared=False):
    """Distances of the columns of ``XT`` (C, n) to ``b``: one point (C,) or one per column
    ((C, n), or a list of C rows of n).

    -> (n,) float32; ``squared``: the squared distance for "euclidean".  Channel by
    channel over contiguous rows (numpy is slow on the short rows of an (n, C) array);
    the channels are summed in order, as :func:`~pillow_gcp.quantizers.nearest.sqnorm`.
    """
    out = None
    for c in range(XT.shape[0]):
        d = XT[c] - b[c]
        if metric == "euclidean":
            d *= d
        else:
            np.abs(d, out=d)
        if out is None:
            out = d
        elif metric == "chebyshev":
            np.maximum(out, d, out=out)
        else:
            out += d
    if metric == "euclidean" and not squared:
        np.sqrt(out, out=out)
    return out


def _reassign(X, XT, M, Mprev, labels, dn, lb, metric, slack):
    """Nearest medoids after some medoids moved, rescanning only where they may differ.

    X : (U, C) float32 colours, XT : (C, U) the same transposed; ``labels`` / ``dn``
    (U,) are the nearest medoid and distance of every colour for the medoids ``Mprev``
    (m, C), ``lb`` (U,) float32 a lower bound of its distance to every other medoid.  A
    medoid that moved by ``delta`` is at least ``lb - delta`` from the colour (triangle
    inequality; Hamerly's bound), so a colour whose distance to its own (possibly moved)
    medoid is below ``lb`` minus the largest shift of the other medoids, minus ``slack``
    (rounding), keeps it; the others are assigned again against all medoids.  The result
    is the nearest-medoid assignment of ``M`` (ties to the lowest index, as
    :func:`_near2_all`).  The arrays are updated in place and returned.
    """
    m = M.shape[0]
    moved = _rowdist(M.astype(np.float64), Mprev.astype(np.float64), metric)
    if not np.any(moved > 0):
        return labels, dn, lb
    # the largest shift of a medoid other than the colour's own (rounded up)
    top = np.argsort(-moved, kind="stable")
    shift = np.full(m, moved[top[0]], np.float32)
    shift[top[0]] = moved[top[1]] if m > 1 else 0.0
    lb -= np.nextafter(shift, np.float32(np.inf))[labels]
    own_mask = (moved > 0)[labels]
    MT = np.ascontiguousarray(M.T)
    if 2 * np.count_nonzero(own_mask) > labels.size:
        # most colours: their own-medoid distance for all, no gather of colours
        d = _coldist(XT, [np.take(MT[c], labels) for c in range(MT.shape[0])], metric)
        np.copyto(dn, d, where=own_mask)
    else:
        own = np.flatnonzero(own_mask)
        lo = labels[own]
        dn[own] = _coldist(np.take(XT, own, axis=1), [np.take(MT[c], lo) for c in range(MT.shape[0])],
                           metric)
    redo = np.flatnonzero(~(dn + slack < lb))
    if redo.size:
        labels[redo], dn[redo], lb[redo] = _near2_all(np.take(X, redo, axis=0), M, metric)
    return labels, dn, lb


def _descent_point(XmT, wm, dm, Mi, metric):
    """One Weiszfeld-type step from a medoid towards its cluster's metric centre.

    XmT : (C, n) float32 members (transposed), wm : (n,) float64 weights, dm : (n,)
    float32 their distances to the medoid ``Mi`` (C,) -> (C,) float32 target point.
    Euclidean: the Weiszfeld step of the weighted geometric median (members weighted by
    ``w / d``); manhattan: the same step per channel (``w / |x_c - m_c|``, the 1-D
    median); chebyshev: the Euclidean-style step with Chebyshev ``d``.  Members at
    distance 0 are left out, as in the modified Weiszfeld algorithm.
    """
    Y = Mi.astype(np.float64)
    if metric == "manhattan":
        for c in range(XmT.shape[0]):
            d = np.abs(XmT[c] - Mi[c]).astype(np.float64)
            iw = np.divide(wm, d, out=np.zeros_like(d), where=d > 0)
            den = iw.sum()
            if den > 0:
                Y[c] = np.einsum("i,i->", iw, XmT[c].astype(np.float64)) / den
        return Y.astype(np.float32)
    d = dm.astype(np.float64)
    iw = np.divide(wm, d, out=np.zeros_like(d), where=d > 0)
    den = iw.sum()
    if den > 0:
        Y = np.einsum("ji,i->j", XmT.astype(np.float64), iw) / den
    return Y.astype(np.float32)


def _cluster_costs(Mc, XmT, wm, metric):
    """Weighted distance sums of candidates over a cluster, float32 products, chunked.

    Mc : (r, C) float32 candidates, XmT : (C, n) float32 members (transposed), wm : (n,)
    float64 weights -> (r,) float64 ``sum_j wm_j d(Mc_i, x_j)`` (float32 partial sums:
    they rank the candidates; the chosen one is checked in float64 by :func:`_cost64`).
    """
    r, C = Mc.shape
    n = XmT.shape[1]
    cost = np.zeros(r, np.float64)
    step = max(256, _CHUNK_ELEMS // max(r, 1))
    wp = np.zeros((min(step, n), 2), np.float32)  # matmul_small pads one column to two
    if metric == "euclidean":
        # |c|^2 - 2 c.x + |x|^2 as one product: [c, |c|^2, 1] @ [-2 x; 1; |x|^2]
        A = np.empty((r, C + 2), np.float32)
        A[:, :C] = Mc
        A[:, C] = sqnorm(Mc)
        A[:, C + 1] = 1.0
        Bt = np.empty((C + 2, min(step, n)), np.float32)
        cols = max(16, BLAS_MACS // (r * (C + 2)))
    for s in range(0, n, step):
        Xc = XmT[:, s:s + step]
        b = Xc.shape[1]
        if metric == "euclidean":
            B = Bt[:, :b]
            np.multiply(Xc, -2.0, out=B[:C])
            B[C] = 1.0
            B[C + 1] = _coldist(Xc, np.zeros(C, np.float32), metric, squared=True)
            # column tiles of <= BLAS_MACS multiply-adds: one single-threaded GEMM each
            # (matmul_small would tile the rows of this short-inner product instead)
            D = np.empty((r, b), np.float32)
            for t in range(0, b, cols):
                np.matmul(A, B[:, t:t + cols], out=D[:, t:t + cols])
            np.maximum(D, 0, out=D)
            np.sqrt(D, out=D)
        else:
            D = _pairwise(Mc, np.ascontiguousarray(Xc.T), metric)
        wp[:b, 0] = wm[s:s + step]
        cost += matmul_small(D, wp[:b])[:, 0]
    return cost


def _cost64(XmT, wm, cs, metric):
    """Weighted distance sums of candidates ``cs`` (k, C) over ``XmT`` (C, n), in float64 -> (k,)."""
    X64 = XmT.T.astype(np.float64)
    return [float(np.einsum("i,i->", _rowdist(X64, c.astype(np.float64), metric), wm)) for c in cs]


def _polish(X, w, Fx, midx, metric, allowed=None, slack=1e-3):
    """Alternating exact polish on the full histogram.

    X : (U, C) float32, w : (U,) float64, Fx : (F, C) float32 fixed medoids,
    midx : (m,) int64 rows of X that are the free medoids, allowed : None or (U,) bool
    rows that may become medoids (not equal to a fixed row), slack : rounding margin of
    the distances (see :func:`_reassign`).  Returns the improved ``midx``; the weighted
    loss never increases.

    Each round assigns every colour to its nearest medoid (the first round all colours,
    later rounds only those whose nearest medoid may have changed, :func:`_reassign`),
    takes one Weiszfeld-type step from each medoid towards its cluster centre, and
    evaluates (over all members of the cluster, chunked) the cost of the members
    nearest that point and nearest the current medoid; the cheapest becomes the medoid
    if its float64 cost is below the current medoid's.
    """
    F = Fx.shape[0]
    midx = midx.copy()
    m = F + midx.size
    XT = np.ascontiguousarray(X.T)
    prev = np.inf
    Mprev = None
    for it in range(_MAX_ALT):
        M = np.concatenate([Fx, X[midx]])
        if Mprev is None:
            labels, dist, lb = _near2_all(X, M, metric)
        else:
            labels, dist, lb = _reassign(X, XT, M, Mprev, labels, dist, lb, metric, slack)
        Mprev = M
        loss = float(np.einsum("i,i->", dist.astype(np.float64), w))
        if not loss < prev * (1 - _POLISH_TOL):
            break
        prev = loss
        # stable order by medoid; uint8 labels (m <= 256) get numpy's radix sort
        order = np.argsort(labels.astype(np.uint8 if m <= 256 else np.int32), kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(m + 1))
        changed = False
        for i in range(F, m):
            mem = order[bounds[i]:bounds[i + 1]]
            if mem.size <= 1:
                continue
            XmT = np.take(XT, mem, axis=1)
            wm = np.take(w, mem)
            Y = _descent_point(XmT, wm, np.take(dist, mem), M[i], metric)
            t = min(_POLISH_CANDIDATES, mem.size)
            cand = [np.flatnonzero(mem == midx[i - F])]
            for cvec, tt in ((Y, t), (M[i], max(1, t // 3))):
                if tt < mem.size:
                    dc = _coldist(XmT, cvec, metric, squared=True)
                    cand.append(np.argpartition(dc, tt - 1)[:tt])
                else:
                    cand.append(np.arange(mem.size))
            cand = np.unique(np.concatenate(cand))
            if allowed is not None:
                cand = cand[allowed[mem[cand]] | (mem[cand] == midx[i - F])]
            cost = _cluster_costs(np.ascontiguousarray(XmT[:, cand].T), XmT, wm, metric)
            best = int(np.argmin(cost))
            new = int(mem[cand[best]])
            if new == midx[i - F]:
                continue
            cur = np.flatnonzero(mem[cand] == midx[i - F])
            if cur.size:
                c_new, c_cur = _cost64(XmT, wm, XmT[:, [cand[best], cand[cur[0]]]].T, metric)
                if not c_new < c_cur * (1 - 1e-7):
                    continue
            midx[i - F] = new
            changed = True
        if not changed:
            break
    return midx


# --------------------------------------------------------------------------- front
def kmedoids_palette(colors, weights, k, *, metric="euclidean", seed=0, fixed=None):
    """Weighted K-medoids palette of a unique-colour histogram.

    Parameters
    ----------
    colors : (U, C) uint8 or float array, C = 3 or 4
        Distinct colours (uint8 sRGB(A), or float32 points of a working space).
    weights : (U,) int64
        Pixel count of each colour.
    k : int >= 1
        Palette size (including the fixed entries).
    metric : "euclidean" | "manhattan" | "chebyshev"
        Distance minimised (weighted sum of distances to the nearest medoid).
    seed : int >= 0
        Random seed; same inputs and seed give identical output.
    fixed : None or (F, C) array, F <= k
        Colours that are always palette entries (fixed medoids); they need not occur
        in ``colors``.

    Returns
    -------
    (m, C) array of ``colors.dtype``: the ``F`` fixed rows first (in the given order),
    then the medoids, each an exact row of ``colors``; ``m = min(k, F + U')`` where
    ``U'`` is the number of colours not equal to a fixed row.  Entries are distinct, and
    every non-fixed entry is the nearest entry of at least one colour (itself).

    Raises
    ------
    ValueError
        ``metric`` not one of :data:`METRICS`; ``k < 1``; ``seed < 0``; ``colors`` not
        ``(U, 3|4)`` with ``U >= 1`` or not finite; ``weights`` of the wrong shape,
        negative, not finite or summing to 0; ``fixed`` of the wrong shape, with more
        than ``k`` rows or with repeated rows.
    TypeError
        ``k`` / ``seed`` not integers; ``colors`` neither uint8 nor float; ``weights``
        or ``fixed`` of a non-numeric dtype (``fixed`` for uint8 ``colors``: integers in
        0..255).

    Notes
    -----
    Rows of ``colors`` are expected to be distinct (the histogram's unique colours).
    """
    colors, weights, k, fixed = _validate(colors, weights, k, metric, seed, fixed)
    return _kmedoids(colors, weights, k, metric, seed, fixed)


def _kmedoids(colors, weights, k, metric, seed, fixed):
    U, C = colors.shape
    F = 0 if fixed is None else fixed.shape[0]
    fixedX = np.zeros((0, C), colors.dtype) if fixed is None else fixed
    # colours equal to a fixed row cannot be picked again
    allowed_col = np.ones(U, bool)
    if F:
        both = np.concatenate([fixedX, colors])
        _, inv = np.unique(both, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        allowed_col = ~np.isin(inv[F:], inv[:F])
    n_free = k - F
    free_idx = np.flatnonzero(allowed_col)
    if n_free <= 0:
        return fixedX.copy()
    if free_idx.size <= n_free:
        return np.concatenate([fixedX, colors[free_idx]])

    rng = np.random.default_rng(seed)
    X = colors.astype(np.float32)
    w = weights.astype(np.float64)
    Fx = fixedX.astype(np.float32)

    # the finest reduction is computed once; coarser ones merge its cells
    n_fine = max(_MAX_POINTS, 8 * k)
    if U <= n_fine:
        base = (X, np.zeros_like(X), w, np.arange(U))
    else:
        base = _reduce(X, w, n_fine)
    reductions = {}

    def reduction(n_points):
        """(P, V, pw, rep) with at most n_points cells; rep indexes X."""
        if base[0].shape[0] <= n_points:
            return base
        if n_points not in reductions:
            P, V, pw, r = _reduce(base[0], base[2], n_points, base[1])
            reductions[n_points] = (P, V, pw, base[3][r])
        return reductions[n_points]

    def level(n_points, n_cand, extra=None):
        """Reduced problem: cell weights, candidate rows of X, distances, fixed rows."""
        P, V, pw, prep = reduction(n_points)
        if prep.size <= n_cand:
            cand = prep
        else:
            # a coarse grid's representatives for coverage, then the heaviest cells
            crep = reduction(max(n_cand // 4, min(_COVER, n_cand // 2)))[3]
            heavy = prep[np.argsort(-pw, kind="stable")]
            heavy = heavy[~np.isin(heavy, crep)]
            cand = np.concatenate([crep, heavy[: n_cand - crep.size]])
        if extra is not None:
            cand = np.concatenate([cand, extra])
        cand = np.unique(cand)
        cand = cand[allowed_col[cand]]
        if cand.size < n_free:
            more = free_idx[np.argsort(-w[free_idx], kind="stable")]
            more = more[~np.isin(more, cand)][: n_free - cand.size]
            cand = np.unique(np.concatenate([cand, more]))
        D = _point_dist(X[cand], P, V, metric)  # (r, n) candidate x point
        MDf = _point_dist(Fx, P, V, metric) if F else np.zeros((0, P.shape[0]), np.float32)
        return pw, cand, D, MDf

    def surrogate(D, pw, MDf, med):
        return float(np.einsum("i,i->", np.vstack([MDf, D[med]]).min(0), pw))

    # stage 2a: several cheap seedings + swap searches on a coarse reduction
    pw1, cand1, D1, MDf1 = level(max(_COARSE_POINTS, 4 * k), max(_COARSE_CAND, 2 * k))
    allowed1 = np.ones(cand1.size, bool)
    # many medoids: each search is long and restarts matter less
    restarts = _RESTARTS if k <= 32 else (2 if k <= 96 else 1)
    sols = []
    for _ in range(restarts):
        med = _seed_pp(D1, pw1, MDf1, n_free, allowed1, rng)
        med = _swap_search(D1, pw1, MDf1, med, allowed1, rng)
        sols.append((surrogate(D1, pw1, MDf1, med), cand1[med]))
    sols.sort(key=lambda t: t[0])
    sols = [sol for _, sol in sols[:_KEEP]]
    # stage 2b: refine the best ones on a fine reduction
    pw, cand, D, MDf = level(max(_MAX_POINTS, 8 * k), max(_MAX_CAND, 4 * k), np.concatenate(sols))
    allowed = np.ones(cand.size, bool)
    best = None
    for sol in sols:
        med = np.searchsorted(cand, sol)
        med = _swap_search(D, pw, MDf, med, allowed, rng)
        L = surrogate(D, pw, MDf, med)
        if best is None or L < best[0]:
            best = (L, med)
    if colors.dtype == np.uint8:
        slack = 1e-3  # integer squared distances are exact in float32: only the root rounds
    else:  # |x|^2 - 2 x.p + |p|^2 in float32 loses ~1e-7 of the squared norms
        slack = float(np.sqrt(1e-6 * (1.0 + np.max(sqnorm(X)) + (np.max(sqnorm(Fx)) if F else 0.0))))
    midx = _polish(X, w, Fx, cand[best[1]], metric, allowed_col if F else None, slack)
    return np.concatenate([fixedX, colors[midx]])

