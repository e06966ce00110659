"""The CTX decoder's helper threads (payload.ctx.set_threads): same indices and the same errors as
the one-thread decode, no thread left running, the cap validated."""

import json
import os
import threading
import zlib

import numpy as np
import pytest

from pillow_gcp import format as gcp_format
from pillow_gcp import payload as P
from pillow_gcp.errors import GCPFormatError
from pillow_gcp.payload import ctx as C

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures")


@pytest.fixture
def threaded(monkeypatch):
    """Every CTX decode of a complete payload goes through the helper threads."""
    monkeypatch.setattr(C, "THREAD_MIN", 1)
    yield
    C.set_threads(None)


def _outcome(fn):
    try:
        return ("ok", fn())
    except GCPFormatError as e:
        return ("error", str(e), e.offset)


def _same(a, b):
    assert a[0] == b[0], (a, b)
    if a[0] == "ok":
        np.testing.assert_array_equal(a[1], b[1])
    else:
        assert a[1:] == b[1:]


def _maps():
    rng = np.random.default_rng(5)
    for k, (h, w) in ((2, (70, 131)), (16, (128, 128)), (16, (200, 67)), (64, (130, 190)), (200, (150, 260))):
        base = rng.integers(0, k, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
        noise = rng.random((h, w)) < 0.2
        yield np.where(noise, rng.integers(0, k, (h, w)), base).astype(np.uint8), k


def test_threaded_decode_gives_the_same_indices_for_every_ctx_coding(threaded):
    for a, k in _maps():
        for coding in P.codings_for(k):
            if not coding.startswith("ctx"):
                continue
            data = P.encode_as(a, k, coding)
            C.set_threads(1)
            one = P.decode(data, a.shape[1], a.shape[0], k)
            C.set_threads(2)
            two = P.decode(data, a.shape[1], a.shape[0], k)
            np.testing.assert_array_equal(one, a)
            np.testing.assert_array_equal(two, a)


def test_threaded_decode_reports_the_same_errors_on_damaged_streams(threaded):
    rng = np.random.default_rng(11)
    for a, k in _maps():
        for coding in ("ctx-up-zflags", "ctx-up") + (("ctx-left-zflags",) if k <= 64 else ()):
            data = bytearray(P.encode_as(a, k, coding))
            for trial in range(12):
                bad = bytearray(data)
                if trial < 4:  # cut
                    bad = bad[:int(rng.integers(8, len(bad)))]
                elif trial < 8:  # flip bytes past the table
                    for _ in range(3):
                        bad[int(rng.integers(8, len(bad)))] ^= int(rng.integers(1, 256))
                else:  # extra bytes at the end
                    bad += bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
                C.set_threads(1)
                one = _outcome(lambda: P.decode(bytes(bad), a.shape[1], a.shape[0], k))
                C.set_threads(2)
                two = _outcome(lambda: P.decode(bytes(bad), a.shape[1], a.shape[0], k))
                _same(one, two)


def test_threaded_decode_of_every_fixture_matches_the_one_thread_decode(threaded):
    with open(os.path.join(FIXTURES, "manifest.json")) as f:
        files = json.load(f)["files"]
    for entry in files:
        with open(os.path.join(FIXTURES, entry["name"]), "rb") as f:
            data = f.read()
        C.set_threads(1)
        one = _outcome(lambda: gcp_format.decode(data)[0])
        C.set_threads(2)
        two = _outcome(lambda: gcp_format.decode(data)[0])
        _same(one, two)


def test_no_thread_outlives_a_decode(threaded):
    a, k = next(_maps())
    data = P.encode_as(a, k, "ctx-up-zflags")
    before = threading.active_count()
    C.set_threads(2)
    P.decode(data, a.shape[1], a.shape[0], k)
    with pytest.raises(GCPFormatError):
        P.decode(data[:-5] + zlib.compress(b"x")[:5], a.shape[1], a.shape[0], k)
    assert threading.active_count() == before


def test_thread_cap_is_validated_and_defaults_sensibly(monkeypatch):
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads"):
            C.set_threads(bad)
    C.set_threads(1)
    assert C.threads() == 1
    C.set_threads(None)
    monkeypatch.setenv("GCP_THREADS", "1")
    assert C.threads() == 1
    monkeypatch.setenv("GCP_THREADS", "3")
    assert C.threads() == 3
    monkeypatch.setenv("GCP_THREADS", "0")
    assert C.threads() == 1
    monkeypatch.setenv("GCP_THREADS", "many")
    default = C.threads()
    monkeypatch.delenv("GCP_THREADS")
    assert C.threads() == default
    assert default in (1, 3)  # 3 (caller + two helpers) when the process may use 2 CPUs


def test_decode_falls_back_to_one_thread_when_no_thread_can_start(threaded, monkeypatch):
    a, k = next(_maps())
    data = P.encode_as(a, k, "ctx-up-zflags")
    started = []

    def refuse(self):
        started.append(self)
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    C.set_threads(2)
    np.testing.assert_array_equal(P.decode(data, a.shape[1], a.shape[0], k), a)
    assert started  # the helper was tried


def _peak(fn):
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_thin_maps_decode_in_linear_memory():
    # one row, one column, a few rows: the skewed layout must not pad a short tile to 64 x 64
    for h, w in ((1, 1 << 16), (1 << 16, 1), (2, 1 << 15), (1 << 15, 3)):
        a = ((np.arange(h * w) % 7 == 0) * 3).astype(np.uint8).reshape(h, w)
        for coding in ("ctx-left-zflags", "ctx-left", "ctx-up-zflags", "ctx-up"):
            data = P.encode_as(a, 16, coding)
            peak = _peak(lambda: P.decode(data, w, h, 16))
            assert peak < 8.5 * h * w + (1 << 20), (h, w, coding, peak / (h * w))


def test_a_maximal_rank_table_parses_in_bounded_memory():
    k, nctx = 64, 64 * 64
    rng = np.random.default_rng(1)
    table = bytes([k - 1] * nctx) + b"".join(bytes(rng.permutation(k)[:k - 1].astype(np.uint8)) for _ in range(nctx))
    order = C.parse_table(table, nctx, k, 0)
    assert order.shape == (nctx, k)
    assert _peak(lambda: C.parse_table(table, nctx, k, 0)) < 2 << 20


def test_no_memory_for_the_helpers_falls_back_to_one_thread(threaded, monkeypatch):
    a, k = next(_maps())
    data = P.encode_as(a, k, "ctx-up-zflags")
    before = threading.active_count()

    def no_memory(self, *args):
        raise MemoryError("no room for the helper's buffer")

    monkeypatch.setattr(C._Inflater, "__init__", no_memory)
    C.set_threads(3)
    np.testing.assert_array_equal(P.decode(data, a.shape[1], a.shape[0], k), a)
    assert threading.active_count() == before


def test_a_valid_payload_is_decoded_once(threaded, monkeypatch):
    # the helper feeds zlib one byte at a time: it reaches the end of the data before the check
    # value is confirmed, which must not count as a failure (no one-thread re-decode)
    monkeypatch.setattr(C._Inflater, "IN", 1)
    calls = []
    real = C._ranks_flags
    monkeypatch.setattr(C, "_ranks_flags", lambda *a: calls.append(1) or real(*a))
    for a, k in _maps():
        data = P.encode_as(a, k, "ctx-up-zflags")
        for cap in (2, 3):
            C.set_threads(cap)
            np.testing.assert_array_equal(P.decode(data, a.shape[1], a.shape[0], k), a)
    assert not calls
