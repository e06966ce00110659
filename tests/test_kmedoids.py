"""Tests for the weighted K-medoids palette step (pillow_gcp.quantizers.kmedoids)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pillow_gcp.quantizers.kmedoids import METRICS, kmedoids_palette, palette_loss


# ----------------------------------------------------------------------------- helpers
def unique_colors(n, seed=0, C=3):
    """n distinct random uint8 colours (n, C) and int64 weights (n,)."""
    rng = np.random.default_rng(seed)
    cols = np.unique(rng.integers(0, 256, size=(n * 2 + 16, C), dtype=np.uint8), axis=0)
    cols = cols[rng.permutation(len(cols))[:n]]
    w = rng.integers(1, 1000, size=len(cols)).astype(np.int64)
    return cols, w


def blobs(n_blobs, per_blob, spread, seed=0):
    """Distinct colours scattered around well separated centres; returns cols, w, blob id."""
    rng = np.random.default_rng(seed)
    centres = np.array(list(itertools.product([30, 128, 225], repeat=3)))[rng.permutation(27)[:n_blobs]]
    pts = (centres[:, None, :] + rng.normal(0, spread, size=(n_blobs, per_blob, 3))).reshape(-1, 3)
    pts = np.clip(np.rint(pts), 0, 255).astype(np.uint8)
    cols = np.unique(pts, axis=0)
    d = ((cols[:, None, :].astype(float) - centres[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    w = rng.integers(1, 50, size=len(cols)).astype(np.int64)
    return cols, w, lab, centres


def dist_matrix(A, B, metric):
    d = A[:, None, :].astype(np.float64) - B[None, :, :].astype(np.float64)
    if metric == "euclidean":
        return np.sqrt((d ** 2).sum(-1))
    if metric == "manhattan":
        return np.abs(d).sum(-1)
    return np.abs(d).max(-1)


def loss_of(cols, w, pal, metric):
    return float(dist_matrix(cols, pal, metric).min(1) @ w / w.sum())


def rows_in(pal, cols):
    s = set(map(tuple, np.asarray(cols).tolist()))
    return all(tuple(r) in s for r in np.asarray(pal).tolist())


def check_invariants(cols, w, k, pal, metric="euclidean", fixed=None):
    """Every non-fixed entry is a row of cols; distinct; right size; each used."""
    F = 0 if fixed is None else len(fixed)
    assert pal.dtype == cols.dtype
    assert pal.shape[1] == cols.shape[1]
    if F:
        np.testing.assert_array_equal(pal[:F], fixed)
    assert rows_in(pal[F:], cols)
    assert len(set(map(tuple, pal.tolist()))) == len(pal)
    fixed_set = set() if fixed is None else set(map(tuple, np.asarray(fixed).tolist()))
    n_free_cols = sum(tuple(c) not in fixed_set for c in cols.tolist())
    assert len(pal) == min(k, F + n_free_cols)
    # every non-fixed entry is the nearest entry of at least one colour
    near = dist_matrix(cols, pal, metric).argmin(1)
    assert set(range(F, len(pal))) <= set(near.tolist())


# ----------------------------------------------------------------------------- basic contract
@pytest.mark.parametrize("metric", METRICS)
def test_medoids_are_distinct_used_input_rows(metric):
    cols, w = unique_colors(600, seed=1)
    pal = kmedoids_palette(cols, w, 16, metric=metric)
    assert pal.shape == (16, 3)
    check_invariants(cols, w, 16, pal, metric)


@pytest.mark.parametrize("U,k", [(1, 1), (1, 4), (5, 8), (8, 8), (9, 8)])
def test_exact_when_few_colors(U, k):
    cols, w = unique_colors(U, seed=U)
    pal = kmedoids_palette(cols, w, k)
    check_invariants(cols, w, k, pal)
    if U <= k:
        assert set(map(tuple, pal.tolist())) == set(map(tuple, cols.tolist()))
        assert loss_of(cols, w, pal, "euclidean") == 0.0


def test_k_equals_one_is_the_weighted_medoid():
    cols, w = unique_colors(300, seed=3)
    for metric in METRICS:
        pal = kmedoids_palette(cols, w, 1, metric=metric)
        cost = dist_matrix(cols, cols, metric) @ w
        assert loss_of(cols, w, pal, metric) <= cost.min() / w.sum() + 1e-9


def test_deterministic_same_seed():
    cols, w, _, _ = blobs(6, 1500, 14.0, seed=4)  # > 4096 colours: reduced path
    assert len(cols) > 4096
    a = kmedoids_palette(cols, w, 12, seed=7)
    b = kmedoids_palette(cols, w, 12, seed=7)
    np.testing.assert_array_equal(a, b)
    c = kmedoids_palette(cols.copy(), w.copy(), 12, seed=7)
    np.testing.assert_array_equal(a, c)


def test_weights_pull_the_medoid():
    # two colour groups; the heavy one decides where the single medoid goes
    cols = np.array([[10, 10, 10], [12, 10, 10], [200, 200, 200], [202, 200, 200]], np.uint8)
    pal = kmedoids_palette(cols, np.array([1, 1, 1000, 5], np.int64), 1)
    np.testing.assert_array_equal(pal, [[200, 200, 200]])
    pal = kmedoids_palette(cols, np.array([1000, 5, 1, 1], np.int64), 1)
    np.testing.assert_array_equal(pal, [[10, 10, 10]])


# ----------------------------------------------------------------------------- quality
def brute_force_best(cols, w, k, metric):
    D = dist_matrix(cols, cols, metric)
    best = np.inf
    combos = np.array(list(itertools.combinations(range(len(cols)), k)))
    for s in range(0, len(combos), 20000):
        c = combos[s:s + 20000]
        best = min(best, float((D[c].min(1) @ w).min()))
    return best / w.sum()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_close_to_exhaustive_optimum(metric, seed):
    rng = np.random.default_rng(100 + seed)
    # clustered tiny inputs: local optima exist, the optimum is found by enumeration
    cols, w, _, _ = blobs(4, 10, 25.0, seed=seed)
    cols = cols[rng.permutation(len(cols))[:30]]
    w = w[: len(cols)]
    k = 4
    pal = kmedoids_palette(cols, w, k, metric=metric, seed=seed)
    check_invariants(cols, w, k, pal, metric)
    opt = brute_force_best(cols, w, k, metric)
    assert loss_of(cols, w, pal, metric) <= opt * 1.03 + 1e-9


def test_finds_separated_blobs_on_reduced_path():
    cols, w, lab, centres = blobs(8, 1200, 10.0, seed=5)
    assert len(cols) > 4096  # exercises the grid reduction
    pal = kmedoids_palette(cols, w, 8)
    check_invariants(cols, w, 8, pal)
    # exactly one medoid per blob, each close to its blob centre
    owner = dist_matrix(pal, centres, "euclidean").argmin(1)
    assert sorted(owner.tolist()) == list(range(8))
    assert dist_matrix(pal, centres, "euclidean").min(1).max() < 8.0


def test_reduced_path_not_worse_than_random_restarts():
    cols, w, _, _ = blobs(10, 800, 18.0, seed=6)
    k = 12
    pal = kmedoids_palette(cols, w, k)
    ours = loss_of(cols, w, pal, "euclidean")
    rng = np.random.default_rng(0)
    p = w / w.sum()
    rand = min(loss_of(cols, w, cols[rng.choice(len(cols), k, replace=False, p=p)], "euclidean")
               for _ in range(20))
    assert ours < rand


@pytest.mark.parametrize("metric", METRICS)
def test_palette_loss_matches_brute_force(metric):
    cols, w = unique_colors(200, seed=8)
    pal = cols[:7]
    assert palette_loss(cols, w, pal, metric) == pytest.approx(loss_of(cols, w, pal, metric), rel=1e-5)


# ----------------------------------------------------------------------------- fixed medoids
def test_fixed_absent_from_colors():
    cols, w = unique_colors(400, seed=9)
    fixed = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    cols = cols[~np.isin(cols.view("V3").ravel(), fixed.view("V3").ravel())]
    w = w[: len(cols)]
    pal = kmedoids_palette(cols, w, 10, fixed=fixed)
    check_invariants(cols, w, 10, pal, fixed=fixed)


def test_fixed_present_in_colors_not_duplicated():
    cols, w = unique_colors(400, seed=10)
    fixed = cols[[5, 17]].copy()
    pal = kmedoids_palette(cols, w, 10, fixed=fixed)
    check_invariants(cols, w, 10, pal, fixed=fixed)
    assert len(pal) == 10


def test_fixed_fills_budget_and_small_inputs():
    cols, w = unique_colors(50, seed=11)
    fixed = cols[:3].copy()
    np.testing.assert_array_equal(kmedoids_palette(cols, w, 3, fixed=fixed), fixed)
    # 4 free colours left for a budget of 10: all of them, after the fixed ones
    small = cols[:7]
    pal = kmedoids_palette(small, w[:7], 10, fixed=fixed)
    assert len(pal) == 7
    check_invariants(small, w[:7], 10, pal, fixed=fixed)


def test_fixed_on_reduced_path_helps_loss():
    cols, w, _, centres = blobs(6, 1200, 10.0, seed=12)
    fixed = np.array([[0, 0, 0]], np.uint8)
    pal = kmedoids_palette(cols, w, 7, fixed=fixed)
    check_invariants(cols, w, 7, pal, fixed=fixed)
    # the fixed black is far from every blob: the 6 free medoids cover the 6 blobs
    owner = dist_matrix(pal[1:], centres, "euclidean").argmin(1)
    assert sorted(owner.tolist()) == list(range(6))


# ----------------------------------------------------------------------------- dtypes / channels
def test_float_colors_rows_returned_exactly():
    rng = np.random.default_rng(13)
    cols = (rng.normal(size=(700, 3)) * [20, 8, 8] + [60, 0, 0]).astype(np.float32)
    w = rng.integers(1, 100, size=700).astype(np.int64)
    for metric in METRICS:
        pal = kmedoids_palette(cols, w, 9, metric=metric)
        assert pal.dtype == np.float32
        check_invariants(cols, w, 9, pal, metric)
    # fixed rows taken from the colours (as the front door passes them in OKLab)
    fixed = cols[[3, 50, 400]].copy()
    for metric in METRICS:
        pal = kmedoids_palette(cols, w, 9, metric=metric, fixed=fixed)
        check_invariants(cols, w, 9, pal, metric, fixed=fixed)


def test_rgba_colors():
    cols, w = unique_colors(500, seed=14, C=4)
    pal = kmedoids_palette(cols, w, 11)
    assert pal.shape == (11, 4)
    check_invariants(cols, w, 11, pal)


def test_large_k():
    cols, w = unique_colors(3000, seed=15)
    pal = kmedoids_palette(cols, w, 256)
    check_invariants(cols, w, 256, pal)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        (dict(metric="cosine"), ValueError, "metric"),
        (dict(metric=None), ValueError, "metric"),
        (dict(k=0), ValueError, "k"),
        (dict(k=2.5), TypeError, "k"),
        (dict(k=True), TypeError, "k"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(weights=np.zeros(4, np.int64)), ValueError, "weights"),
        (dict(fixed=np.array([[0, 0, 300]])), TypeError, "fixed"),
        (dict(colors=np.zeros((4, 2), np.uint8)), ValueError, "colors"),
        (dict(colors=np.zeros((0, 3), np.uint8), weights=np.zeros(0, np.int64)), ValueError, "colors"),
        (dict(colors=np.zeros((4, 3), np.int32)), TypeError, "colors"),
        (dict(weights=np.ones(3, np.int64)), ValueError, "weights"),
        (dict(weights=-np.ones(4, np.int64)), ValueError, "weights"),
        (dict(fixed=np.zeros((2, 4), np.uint8)), ValueError, "fixed"),
        (dict(fixed=np.zeros((5, 3), np.uint8)), ValueError, "fixed"),
        (dict(fixed=np.zeros((2, 3), np.uint8)), ValueError, "fixed"),  # duplicate rows
    ],
)
def test_validation(kwargs, exc, word):
    args = dict(colors=np.array([[0, 0, 0], [1, 2, 3], [9, 9, 9], [200, 1, 1]], np.uint8),
                weights=np.ones(4, np.int64), k=3)
    args.update(kwargs)
    colors, weights, k = args.pop("colors"), args.pop("weights"), args.pop("k")
    with pytest.raises(exc, match=word):
        kmedoids_palette(colors, weights, k, **args)


# ----------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 12),
    seed=st.integers(0, 2 ** 16),
    metric=st.sampled_from(METRICS),
    C=st.sampled_from([3, 4]),
)
def test_invariants_property(n, k, seed, metric, C):
    cols, w = unique_colors(n, seed=seed, C=C)
    pal = kmedoids_palette(cols, w, k, metric=metric, seed=seed)
    check_invariants(cols, w, k, pal, metric)
    np.testing.assert_array_equal(pal, kmedoids_palette(cols, w, k, metric=metric, seed=seed))


# ----------------------------------------------------------------------------- swap search
@pytest.mark.parametrize("m,n_fixed", [(5, 0), (6, 2), (40, 0), (40, 3)])
def test_swap_search_ends_in_a_swap_local_optimum(m, n_fixed):
    """No single (medoid, candidate) swap improves the result: small k uses the one-hot
    product, k > 32 the segment sums; fixed medoids are never swapped out."""
    from pillow_gcp.quantizers import kmedoids as km

    rng = np.random.default_rng(m + n_fixed)
    pts = rng.random((400, 3)).astype(np.float32) * 100
    cand = rng.random((150, 3)).astype(np.float32) * 100
    fixed = rng.random((n_fixed, 3)).astype(np.float32) * 100
    w = rng.integers(1, 20, 400).astype(np.float64)
    D = km._pairwise(cand, pts, "euclidean")
    MDf = km._pairwise(fixed, pts, "euclidean") if n_fixed else np.zeros((0, 400), np.float32)
    start = rng.choice(150, m - n_fixed, replace=False)
    med = km._swap_search(D, w, MDf, start, np.ones(150, bool), rng)
    assert len(set(med.tolist())) == m - n_fixed

    def loss(meds):
        return float(np.vstack([MDf, D[meds]]).min(0) @ w)

    L = loss(med)
    assert L <= loss(start)
    for i in range(med.size):
        rest = np.delete(med, i)
        base = np.vstack([MDf, D[rest]]).min(0)
        others = np.setdiff1d(np.arange(150), med)
        best = float((np.minimum(D[others], base) @ w).min())
        assert best >= L * (1 - 1e-5)


@pytest.mark.parametrize("max_points", [1024, 4096, 6144, 8192])
def test_reduction_is_never_needlessly_coarse(max_points):
    # sparse clusters are not surface-like: the level search must still end with a grid
    # holding between half and all of the allowed cells (a fallback once gave 8 cells)
    from pillow_gcp.quantizers.kmedoids import _reduce
    cols, w, _, _ = blobs(8, 1200, 10.0, seed=5)
    P, V, pw, rep = _reduce(cols.astype(np.float32), w.astype(np.float64), max_points)
    assert 0.5 * max_points < P.shape[0] <= max_points
    assert np.isclose(pw.sum(), w.sum())


# ----------------------------------------------------------------------------- polish
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_incremental_reassignment_equals_full_assignment(metric, dtype):
    """After medoids move, the bounded re-assignment gives the nearest medoid of every
    colour (ties to the lowest index) and keeps a valid lower bound on the others."""
    from pillow_gcp.quantizers import kmedoids as km

    cols, _ = unique_colors(6000, seed=3)
    X = cols.astype(np.float32) if dtype == "uint8" else cols.astype(np.float32) * np.float32(0.391)
    slack = 1e-3 if dtype == "uint8" else float(np.sqrt(1e-6 * (1 + km.sqnorm(X).max())))
    rng = np.random.default_rng(1)
    idx = rng.choice(len(X), 16, replace=False)
    labels, dn, lb = km._near2_all(X, X[idx], metric)
    XT = np.ascontiguousarray(X.T)
    Mprev = X[idx]
    for step in range(4):  # move a few medoids, by small and by large jumps
        idx = idx.copy()
        for j in rng.choice(16, 2 + step, replace=False):
            near = np.argsort(km._rowdist(X, X[idx[j]], metric))[rng.integers(1, 40 if step % 2 else 3000)]
            if near not in idx:
                idx[j] = near
        M = X[idx]
        labels, dn, lb = km._reassign(X, XT, M, Mprev, labels, dn, lb, metric, slack)
        Mprev = M
        D = dist_matrix(X, M, metric)
        ar = np.arange(len(X))
        if dtype == "uint8":  # integer squared distances: exact, ties to the lowest index
            np.testing.assert_array_equal(labels, D.argmin(1))
        else:  # float32 rounding may break near-ties either way
            assert np.all(D[ar, labels] <= D.min(1) + 1e-3)
        np.testing.assert_allclose(dn, D[ar, labels], rtol=1e-5, atol=0.05)
        D[ar, labels] = np.inf
        assert np.all(D.min(1) >= lb - 0.05)


@pytest.mark.parametrize("metric", METRICS)
def test_polish_never_increases_the_loss(metric):
    from pillow_gcp.quantizers import kmedoids as km

    cols, w = unique_colors(20000, seed=4)
    X = cols.astype(np.float32)
    w = w.astype(np.float64)
    rng = np.random.default_rng(2)
    start = rng.choice(len(X), 12, replace=False)
    out = km._polish(X, w, np.zeros((0, 3), np.float32), start, metric)
    assert len(set(out.tolist())) == 12
    before = palette_loss(cols, w, cols[start], metric)
    after = palette_loss(cols, w, cols[out], metric)
    assert after < before  # random medoids: the polish must find something
