"""The nearest-entry searches split over threads (pillow_gcp._threads.split_rows / run_tasks): the
same indices and distances bit for bit as on one thread, no thread left behind, the package's one
thread cap respected, and a helper that cannot start or a task that fails handled."""

import sys
import threading
import time

import numpy as np
import pytest

from pillow_gcp import _threads
from pillow_gcp.quantizers import quantize_array

Nm = sys.modules["pillow_gcp.quantizers.nearest"]
Km = sys.modules["pillow_gcp.quantizers.kmeans"]


class _Counted(threading.Thread):
    started = 0

    def start(self):
        type(self).started += 1
        super().start()


@pytest.fixture
def split(monkeypatch):
    """Every search big enough for two ranges is split over two threads (also on a 1-CPU runner);
    yields a function giving the number of helper threads started so far."""
    monkeypatch.setattr(_threads, "PARALLEL_MIN", 1)
    monkeypatch.setattr(_threads, "cpus", lambda: 2)
    monkeypatch.setattr(threading, "Thread", _Counted)
    _Counted.started = 0
    _threads.set_threads(2)
    yield lambda: _Counted.started
    _threads.set_threads(None)


def _one_thread(fn):
    _threads.set_threads(1)
    try:
        return fn()
    finally:
        _threads.set_threads(2)


def _same(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def _data(U, m, C, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return (rng.integers(0, 256, (U, C), dtype=np.uint8), rng.integers(0, 256, (m, C), dtype=np.uint8))
    return ((rng.random((U, C)) * 255).astype(np.float32), (rng.random((m, C)) * 255).astype(np.float32))


@pytest.mark.parametrize("m", [1, 2, 16, 48, 49, 64, 256])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_threaded_nearest_equals_one_thread(split, m, dtype):
    n_threads = threading.active_count()
    step = Nm._chunk_rows(m, 4)
    for C in (3, 4):
        for U in (1, step - 1, 2 * step, 5 * step + 7, 40_000):
            X, P = _data(U, m, C, dtype, U + m + C)
            for metric in ("euclidean", "manhattan", "chebyshev"):
                got = Nm.nearest(X, P, metric, return_dist=True)
                assert _same(got, _one_thread(lambda X=X, P=P, metric=metric: Nm.nearest(X, P, metric, return_dist=True)))
                assert _same(Nm.nearest(X, P, metric), got[0])
            got = Nm.nearest_two(X, P)
            assert _same(got, _one_thread(lambda X=X, P=P: Nm.nearest_two(X, P)))
    # only the (rows, m) layout of more than 48 entries is split; small palettes stay on one thread
    assert (split() > 0) == (m > Nm._TRANSPOSE_MAX)
    assert threading.active_count() == n_threads


@pytest.mark.parametrize("m", [2, 16, 48])
def test_small_palette_nearest_matches_the_per_block_reduction(m):
    # nearest() for m <= 48: bit for bit one (m, step) BLAS block at a time through _first_min, on
    # non-integer float32 input, across block edges
    rng = np.random.default_rng(m)
    step = Nm._chunk_rows(m, 4)
    nb = Nm._REDUCE_ELEMS // m // step
    for U in (step - 1, step, nb * step, nb * step + 1, 3 * nb * step + step + 5):
        X = (rng.random((U, 3)) * 255).astype(np.float32)
        P = (rng.random((m, 3)) * 255).astype(np.float32)
        P[m // 2] = P[0]  # an exact tie: the lowest index wins
        idx, dist = Nm.nearest(X, P, return_dist=True)
        rj, rd = [], []
        for s, n, B, ax in Nm._euclid_blocks(X, P, step):
            assert ax == 0
            j, d = Nm._first_min(B, ax)
            rj.append(j)
            rd.append(np.maximum(d + Nm.sqnorm(X[s:s + n]), 0))
        assert np.array_equal(idx, np.concatenate(rj))
        assert np.array_equal(dist, np.concatenate(rd))


def test_threaded_moved_centre_search_equals_one_thread(split):
    rng = np.random.default_rng(5)
    X = (rng.random((30_000, 3)) * 255).astype(np.float32)
    for q in (1, 2, 25):
        Q = (rng.random((q, 3)) * 255).astype(np.float32)
        got = Km._nearest_moved(X, Q)
        assert _same(got, _one_thread(lambda Q=Q: Km._nearest_moved(X, Q)))
    assert split() > 0


def _photo_like(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w) + 64], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("k", [16, 64, 256])
def test_threaded_quantize_equals_one_thread_and_leaves_no_thread(split, k):
    arr = _photo_like(160, 240, k)
    n_threads = threading.active_count()
    idx, pal = quantize_array(arr, k)
    assert split() > 0
    assert threading.active_count() == n_threads
    idx1, pal1 = _one_thread(lambda: quantize_array(arr, k))
    assert np.array_equal(pal, pal1) and np.array_equal(idx, idx1)


def test_thread_cap_of_one_starts_no_thread(split, monkeypatch):
    X, P = _data(50_000, 256, 3, np.uint8, 1)
    _threads.set_threads(1)
    Nm.nearest(X, P)
    Nm.nearest_two(X, P)
    assert split() == 0
    _threads.set_threads(None)
    monkeypatch.setenv("GCP_THREADS", "1")
    Nm.nearest_two(X, P)
    assert split() == 0
    monkeypatch.setenv("GCP_THREADS", "2")
    Nm.nearest_two(X, P)
    assert split() == 1


def test_search_falls_back_to_one_thread_when_no_thread_can_start(split, monkeypatch):
    X, P = _data(50_000, 256, 3, np.float32, 2)
    want = _one_thread(lambda: Nm.nearest_two(X, P))

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_Counted, "start", refuse)
    n_threads = threading.active_count()
    assert _same(Nm.nearest_two(X, P), want)
    assert threading.active_count() == n_threads


def test_a_failing_task_is_raised_after_every_helper_ended(split):
    n_threads = threading.active_count()
    ran = []

    def ok(i):
        ran.append(i)

    def bad():
        raise ValueError("task failed")

    with pytest.raises(ValueError, match="task failed"):
        _threads.run_tasks([lambda: ok(0), bad, lambda: ok(2), lambda: ok(3)], 2)
    assert threading.active_count() == n_threads
    # tasks do not split again: a search inside a task stays on its thread
    seen = []
    _threads.run_tasks([lambda: seen.append(_threads.workers(1 << 30)) for _ in range(4)], 2)
    assert seen == [1, 1, 1, 1]
    assert _threads.workers(1 << 30) == 2
    assert _threads.workers(0) == 1


@pytest.mark.parametrize("q", [1, 2, 25, 127, 128])
def test_moved_centre_search_matches_the_row_argmin(q):
    # _nearest_moved reduces (q, B) columns for 1 < q <= 127 (three float32 channels): bit for bit
    # the row-wise argmin / gather over _dist_to's (B, q) distances, ties to the lowest index
    rng = np.random.default_rng(q)
    for B in (1, 300, 70_000):
        X = (rng.random((B, 3)) * 255).astype(np.float32)
        X[::3] = np.round(X[::3])
        Q = X[rng.integers(0, B, q)].copy() + (rng.random((q, 3)) < 0.5).astype(np.float32)
        Q[q // 2] = Q[0]  # an exact tie
        jmin, dmin, dsec = Km._nearest_moved(X, Q)
        D = Km._dist_to(X, Q)
        rows = np.arange(B)
        j = D.argmin(1)
        assert np.array_equal(jmin, j) and np.array_equal(dmin, D[rows, j])
        if q > 1:
            D[rows, j] = np.inf
            assert np.array_equal(dsec, D.min(1))
        else:
            assert np.isinf(dsec).all()


def test_lower_bound_update_in_blocks_equals_the_whole_array_form(split, monkeypatch):
    # _drop_lower measures the distances to far-moved centres in row blocks (split over threads when
    # large): bit for bit the former whole-array arithmetic
    monkeypatch.setattr(Km, "_DROP_ROWS", 4096)
    rng = np.random.default_rng(11)
    B, k = 50_000, 16
    X = (rng.random((B, 3)) * 255).astype(np.float32)
    cen = (rng.random((k, 3)) * 255).astype(np.float32)
    assign = rng.integers(0, k, B)
    shift = (rng.random(k) * 0.5).astype(np.float32)
    shift[[3, 7]] = (50, 40)
    low0 = (rng.random(B) * 30).astype(np.float32)
    want = low0 - shift[np.argsort(-shift, kind="stable")[2]]
    for c in (3, 7):
        d = X[:, 0] - cen[c, 0]
        d *= d
        for ch in (1, 2):
            t = X[:, ch] - cen[c, ch]
            t *= t
            d += t
        np.sqrt(d, out=d)
        d[assign == c] = np.inf
        np.minimum(want, d, out=want)
    for threads in (1, 2):
        _threads.set_threads(threads)
        got = low0.copy()
        Km._drop_lower(X, Km._columns(X), cen, assign, got, shift)
        assert np.array_equal(got, want)
    assert split() > 0


def test_ctrl_c_in_the_calling_thread_outranks_a_helpers_earlier_error(split):
    # the helper's task fails first; the caller's task is then interrupted: after every helper has
    # ended, the KeyboardInterrupt is what the caller sees, not the helper's error
    n_threads = threading.active_count()
    main = threading.get_ident()
    caller_in, helper_failed = threading.Event(), threading.Event()

    def task():
        if threading.get_ident() != main:
            assert caller_in.wait(10)
            helper_failed.set()
            raise ValueError("helper failed")
        caller_in.set()
        assert helper_failed.wait(10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _threads.run_tasks([task, task], 2)
    assert threading.active_count() == n_threads
    assert not getattr(_threads._local, "busy", False)


def test_ctrl_c_while_starting_a_helper_still_joins_it(split, monkeypatch):
    # the helper is running when the interrupt reaches start(): run_tasks joins it before raising,
    # and it takes no task after the one it is on
    n_threads = threading.active_count()
    ran = []

    def start_then_interrupt(self):
        super(_Counted, self).start()
        raise KeyboardInterrupt

    def task(i):
        time.sleep(0.05)
        ran.append(i)

    monkeypatch.setattr(_Counted, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _threads.run_tasks([lambda i=i: task(i) for i in range(8)], 2)
    assert threading.active_count() == n_threads
    assert len(ran) <= 1
