"""Robustness of the .gcp decoder: fuzzing, bombs, truncation, threads, incremental parsing, integrity.

A .gcp file comes from strangers: whatever the bytes, ``Image.open`` + ``load`` must
either give the image or raise ``OSError`` / ``DecompressionBombError``, quickly and
without allocating more than a small constant times the declared pixel count.
The long fuzz run is ``python bench/fuzz.py --seconds 600`` (see bench/fuzz.py).
"""

from __future__ import annotations

import importlib.util
import io
import os
import random
import struct
import sys
import threading
import traceback
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import pillow_gcp  # noqa: F401  (registers the format once the package is assembled)
from pillow_gcp import format as F
from pillow_gcp import plugin
from pillow_gcp.errors import GCPFormatError

plugin.register()  # idempotent; makes the tests independent of the package __init__

ROOT = Path(__file__).resolve().parents[1]


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


fuzz = _load_module("gcp_bench_fuzz", ROOT / "bench" / "fuzz.py")
fuzz_cases = _load_module("gcp_fixtures_fuzz_cases", ROOT / "fixtures" / "fuzz_cases.py")


# ----------------------------------------------------------------------------- helpers


def _image(h=30, w=40, n=12, channels=3, seed=0):
    """(indices, palette): long runs with 10 % noise, like a quantized photo."""
    rng = np.random.default_rng(seed)
    base = (np.arange(h * w) // 23 % n).astype(np.uint8)
    noise = rng.random(h * w) < 0.1
    base[noise] = rng.integers(0, n, int(noise.sum()), dtype=np.uint8)
    palette = rng.integers(0, 256, (n, channels), dtype=np.uint8)
    return base.reshape(h, w), palette




def _chunk_at(data, ctype):
    return next((off, length) for off, t, length in F.chunk_table(data) if t == ctype)


def _with_head(data, width, height):
    """The same file with other HEAD dimensions and a correct HEAD CRC."""
    b = bytearray(data)
    b[20:28] = struct.pack("<II", width, height)
    b[28:32] = struct.pack("<I", zlib.crc32(bytes(b[12:28])))
    return bytes(b)


def _with_data(data, body):
    """The same file with another DATA body (length and CRC fixed)."""
    sig, chunks, tail = fuzz.split_chunks(data)
    for c in chunks:
        if c[0] == b"DATA":
            c[1] = body
    return fuzz.join_chunks(sig, chunks, tail)


def _open_load(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _peak(fn, *args):
    """(result or exception, tracemalloc peak in bytes) of fn(*args)."""
    Image.init()
    fuzz.seed_corpus(0)  # (cached) decodes every payload variant once: first-call imports are not measured
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def truncated_images(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)


# ----------------------------------------------------------------------------- fuzzing


def test_short_seeded_fuzz_run_finds_nothing():
    # No per-input time limit here (no timing assertions in CI); a hang is still caught by SIGALRM.
    limits = fuzz.Limits(time_limit=None, hard_timeout=30.0)
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    report = fuzz.run(seed=20261127, iterations=300, limits=limits, minimise_findings=False)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before  # global state restored
    details = {sig: f.detail + "\n" + f.data.hex() for sig, f in report.findings.items()}
    assert not report.findings, details
    s = report.summary()
    assert s["inputs"] == 300
    # The mutations get past the CRCs: some load fine, many are rejected by the payload decoder.
    assert s["load_ok"] > 20
    assert s["load_errors_in_payload_decoder"] > 30
    assert s["distinct_load_outcomes"] > 15
    assert len(s["loaded_by_payload_method"]) == 3  # ZLIB, UPRANK and LZMA2 payloads all decoded


def test_fuzz_run_is_reproducible():
    limits = fuzz.Limits(time_limit=None)
    corpus = fuzz.seed_corpus(0)[:12]
    a = fuzz.run(seed=5, iterations=40, limits=limits, corpus=corpus, minimise_findings=False)
    b = fuzz.run(seed=5, iterations=40, limits=limits, corpus=corpus, minimise_findings=False)
    strip = lambda r: {k: v for k, v in r.stats.items() if not k.startswith("max_")}  # noqa: E731
    assert strip(a) == strip(b) and a.mutators == b.mutators


def test_mutators_keep_crcs_right_so_payload_is_reached():
    corpus = fuzz.seed_corpus(0)
    rnd = random.Random(0)
    for data in corpus:
        assert F.decode(data)  # the seeds are valid
    for _ in range(50):
        mutated = fuzz.m_data(rnd, corpus[4], corpus)
        try:
            F.decode(mutated)
        except GCPFormatError as e:
            assert "CRC" not in str(e), str(e)


@pytest.mark.parametrize("bug", ["exception", "alloc", "pixels"])
def test_fuzz_oracle_catches_planted_bugs(monkeypatch, bug):
    """The harness is only worth something if it fails on a broken decoder."""
    real = F.payload.decode

    def broken(data, width, height, palette_size, **kw):
        if bug == "exception":
            raise IndexError("planted")
        if bug == "alloc":
            junk = np.ones(64 * width * height + (8 << 20), np.uint8)  # far beyond the budget
            del junk
        out = real(data, width, height, palette_size, **kw)
        if bug == "pixels" and any(fr.name == "_finish" for fr in traceback.extract_stack()):  # only in the plugin
            out = out.copy()
            out.flat[0] = (int(out.flat[0]) + 1) % palette_size if palette_size > 1 else out.flat[0]
        return out

    monkeypatch.setattr(F.payload, "decode", broken)
    indices, palette = _image(20, 30, n=6)
    data = F.encode(indices, palette)
    with fuzz.fuzz_environment(fuzz.Limits()):
        found = fuzz.check_input(data, fuzz.Limits(time_limit=None))
    kinds = {f.kind for f in found}
    assert {"exception": "exception", "alloc": "alloc", "pixels": "mismatch"}[bug] in kinds, found


@pytest.mark.parametrize("load_truncated", [False, True])
def test_fuzz_cases_are_rejected_with_their_message(monkeypatch, load_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    assert isinstance(fuzz_cases.CASES, list)
    for case in fuzz_cases.CASES:
        assert case["name"].startswith("fuzz-") and case["name"].endswith(".gcp")
        data = bytes.fromhex(case["hex"])
        assert case["description"]
        with pytest.raises(OSError) as e:
            F.decode(data)
        assert case["error"] in str(e.value), (case["name"], str(e.value))
        try:
            _open_load(data)
        except Image.DecompressionBombError:
            continue  # the declared size is above Pillow's limit: refused before any decoding
        except OSError as e:
            assert case["error"] in str(e), (case["name"], str(e))
        else:
            pytest.fail(f"{case['name']} loaded")


# ----------------------------------------------------------------------------- bombs


@pytest.mark.parametrize("width,height", [(2**31 - 1, 2**31 - 1), (2**31 - 1, 1), (100_000, 100_000)])
def test_bomb_header_raises_before_anything_is_allocated(width, height):
    indices, palette = _image(4, 4, n=2)
    data = _with_head(F.encode(indices, palette), width, height)
    result, peak = _peak(Image.open, io.BytesIO(data))
    assert isinstance(result, Image.DecompressionBombError), result
    assert peak < 256 << 10
    parser = ImageFile.Parser()
    with pytest.raises(Image.DecompressionBombError):
        parser.feed(data)


def test_bomb_limit_is_pillows(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    indices, palette = _image(40, 50, n=3)  # 2000 pixels = 2 x limit: allowed, with a warning
    data = F.encode(indices, palette)
    with pytest.warns(Image.DecompressionBombWarning):
        assert np.array_equal(np.asarray(_open_load(data)), indices)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(_with_head(data, 50, 41)))  # 2050 > 2 x limit


# every payload coding SPEC.md 6 allows for k = 12, built from its layout by bench/fuzz.py
N_VARIANTS = len(fuzz._payload_variants(_image(8, 9, n=12)[0], 12, np.random.default_rng(0)))
assert N_VARIANTS == len(F.payload.CODINGS)


_BIG = np.zeros((1000, 1000), np.uint8)
_BIG[::7, ::3] = 1
_BIG_VARIANTS = []  # (label, file) for every payload variant of a 1 M-pixel image; filled on first use


def _big_variants():
    if not _BIG_VARIANTS:
        base = F.encode(_BIG, np.array([[0, 0, 0], [255, 255, 255]], np.uint8))
        _BIG_VARIANTS.append(("encoder", base))
        for body in fuzz._payload_variants(_BIG, 2, np.random.default_rng(0)):
            _BIG_VARIANTS.append((F.payload.coding_name(body), _with_data(base, body)))
    return _BIG_VARIANTS


@pytest.mark.parametrize("declared", [(10, 10), (1000, 999), (1, 1)])
def test_payload_is_never_inflated_past_the_declared_size(declared):
    """A payload holding 1 M pixels under a header declaring fewer is rejected without inflating it,
    whatever the payload method (SPEC 6)."""
    w, h = declared
    budget = 16 * w * h + (1 << 20)  # a small constant times the *declared* count
    for label, data in _big_variants():
        data = _with_head(data, w, h)
        for fn in (F.decode, _open_load):
            result, peak = _peak(fn, data)
            assert isinstance(result, OSError), (label, result)
            assert peak < budget + 2 * len(data), (label, fn.__name__, peak, budget)


def test_short_payload_for_a_huge_declared_size_is_rejected_cheaply():
    """A 20-pixel payload under a header declaring 16 M pixels: rejected without 16 M-sized intermediates."""
    indices, palette = _image(4, 5, n=3)
    data = _with_head(F.encode(indices, palette), 4000, 4000)
    result, peak = _peak(F.decode, data)
    assert isinstance(result, OSError), result
    assert peak < 4000 * 4000 // 4, peak  # not even one full-size uint8 intermediate


@pytest.mark.parametrize("coding", fuzz.CODINGS)
def test_every_coding_of_a_short_payload_under_a_huge_size_is_rejected_cheaply(coding):
    """The same for every coding built from its layout (SPEC 6): no stream may cost memory in proportion to
    the declared size before the data has shown it can fill it (for LZMA2: not even the dictionary)."""
    indices, palette = _image(4, 5, n=3)
    body = fuzz.layout_payload(indices, 3, coding)
    data = _with_head(_with_data(F.encode(indices, palette), body), 4000, 4000)
    result, peak = _peak(F.decode, data)
    assert isinstance(result, OSError), result
    assert peak < 4000 * 4000 // 4, (coding, peak)


_RSS_PROBE = """
import io, resource, sys
from PIL import Image, ImageFile
import pillow_gcp
ImageFile.LOAD_TRUNCATED_IMAGES = sys.argv[1] == "1"
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    Image.open(io.BytesIO(data)).load()
    print("loaded")
except OSError as e:
    print("OSError", e)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux behaviour")
@pytest.mark.parametrize("load_truncated", ["0", "1"])
def test_hostile_declared_size_costs_no_resident_memory(load_truncated):
    """81 M declared pixels (under Pillow's limit) with a complete 9-pixel payload: error, and the process's
    peak resident memory grows by far less than the 81 MB a decoded image would take (C allocations
    included). The file is not truncated (DATA and its CRC are all there), so LOAD_TRUNCATED_IMAGES must
    not change anything."""
    import subprocess

    indices, palette = _image(3, 3, n=2)
    data = _with_head(F.encode(indices, palette), 9000, 9000)
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, load_truncated], input=data, capture_output=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    status, growth_mb = out.stdout.decode().splitlines()
    assert status.startswith("OSError") and "81000000" in status, status  # a complete 9-pixel stream, short
    assert int(growth_mb) < 20, growth_mb


@pytest.mark.parametrize("kind", ["noise", "runs", "constant"])
def test_decode_memory_is_linear_in_declared_pixels(kind):
    rng = np.random.default_rng(1)
    h, w, n = 384, 512, 256
    if kind == "noise":
        indices = rng.integers(0, n, (h, w), dtype=np.uint8)
    elif kind == "runs":
        indices, _ = _image(h, w, n=n)
    else:
        indices = np.full((h, w), 7, np.uint8)
    palette = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    data = F.encode(indices, palette)
    for fn in (F.decode, _open_load):
        result, peak = _peak(fn, data)
        assert not isinstance(result, Exception), result
        assert peak <= 8 * h * w + 2 * len(data) + (1 << 20), (fn.__name__, peak / (h * w))


@pytest.mark.parametrize("kind", ["noise", "runs"])
def test_every_payload_variant_decodes_in_linear_memory(kind):
    """The encoder writes only the smallest payload, a hostile file may use any method/flags (SPEC 6):
    each must decode within the same small constant per declared pixel (8 B, plus 2 B per file byte
    for the payload and its copy)."""
    rng = np.random.default_rng(2)
    h, w, n = 384, 512, 256
    indices = rng.integers(0, n, (h, w), dtype=np.uint8) if kind == "noise" else _image(h, w, n=n)[0]
    palette = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    base = F.encode(indices, palette)
    variants = fuzz._payload_variants(indices, n, rng)
    assert {F.payload.coding_name(v) for v in variants} == set(F.payload.codings_for(n))  # (k = 256: no LEFT)
    too_much = {}
    for body in variants:
        data = _with_data(base, body)
        result, peak = _peak(F.decode, data)
        assert not isinstance(result, Exception), (body[:2], result)
        assert np.array_equal(result[0], indices)
        if peak > 8 * h * w + 2 * len(data) + (256 << 10):
            too_much[F.payload.coding_name(body)] = round(peak / (h * w), 1)
    assert not too_much, f"traced bytes per pixel: {too_much}"


# ----------------------------------------------------------------------------- truncation


def _payload_span(data):
    off, length = _chunk_at(data, b"DATA")
    return off + 8, off + 8 + length


def test_truncated_file_raises_by_default():
    indices, palette = _image()
    data = F.encode(indices, palette)
    start, end = _payload_span(data)
    for cut in list(range(start, end + 4, 3)) + [end + 3]:
        with pytest.raises(OSError, match="truncated"):
            _open_load(data[:cut])


@pytest.mark.parametrize("variant", ["encoder", *range(N_VARIANTS)])
def test_truncated_file_loads_decoded_prefix_then_index_0(truncated_images, variant):
    """Every payload method / flag variant (SPEC 6), cut at every byte of DATA and its CRC."""
    indices, palette = _image(30, 40, n=12, seed=3)
    data = F.encode(indices, palette)
    if variant != "encoder":
        data = _with_data(data, fuzz._payload_variants(indices, 12, np.random.default_rng(0))[variant])
    start, end = _payload_span(data)
    fill = fuzz.fill_order(data[start:end], 40, 30)  # the order in which a cut payload fills the pixels
    order = lambda m: np.ravel(m)[fill]  # noqa: E731
    flat = order(indices)
    previous = 0
    for cut in range(start, end + 4):
        im = _open_load(data[:cut])
        assert im.size == (40, 30) and im.mode == "P"
        got = order(np.asarray(im))
        k = int(np.argmax(got != flat)) if (got != flat).any() else len(flat)  # length of the correct prefix
        assert not got[k:].any(), f"cut {cut}: pixels after the decoded prefix ({k}) are not index 0"
        assert k >= previous, f"cut {cut}: more data decoded fewer pixels ({k} < {previous})"
        previous = k
        if cut >= end:  # the whole payload is there, only the CRC is cut
            assert k == len(flat)
    assert previous == len(flat)


def test_truncated_header_still_raises_with_load_truncated_images(truncated_images):
    indices, palette = _image()
    data = F.encode(indices, palette)
    start, _ = _payload_span(data)
    for cut in range(0, start):
        with pytest.raises(OSError):
            _open_load(data[:cut])


def test_truncated_and_corrupted_payload(truncated_images):
    """A truncated payload whose bytes are also damaged: an image or OSError, nothing else."""
    indices, palette = _image(30, 40, n=12, seed=4)
    data = F.encode(indices, palette)
    start, end = _payload_span(data)
    rnd = random.Random(0)
    for _ in range(150):
        cut = rnd.randrange(start + 1, end)
        b = bytearray(data[:cut])
        for _ in range(rnd.randint(1, 3)):
            b[rnd.randrange(start, cut)] ^= 1 << rnd.randrange(8)
        try:
            im = _open_load(bytes(b))
        except OSError:
            continue
        assert im.size == (40, 30)
        assert int(np.asarray(im).max()) < 12


# ----------------------------------------------------------------------------- concurrency


def _p_image(seed):
    indices, palette = _image(37 + seed, 53 + 2 * seed, n=5 + seed, seed=seed)
    im = Image.fromarray(indices, "P")
    im.putpalette(palette.tobytes())
    return im


def _save_bytes(im, **params):
    buf = io.BytesIO()
    im.save(buf, "GCP", **params)
    return buf.getvalue()


def test_threads_give_the_same_bytes_and_pixels_as_sequential_use():
    images = [_p_image(s) for s in range(6)]
    raw = [F.encode(*_image(25 + s, 31, n=3 + 20 * s, channels=3 + s % 2, seed=s)) for s in range(6)]

    def job(i):
        saved = _save_bytes(images[i % 6])
        loaded = _open_load(raw[i % 6])
        parser = ImageFile.Parser()
        for j in range(0, len(raw[i % 6]), 97):
            parser.feed(raw[i % 6][j : j + 97])
        parsed = parser.close()
        decoded = F.decode(saved)[0]
        return saved, np.asarray(loaded.convert("RGBA")), np.asarray(parsed), decoded

    sequential = [job(i) for i in range(6)]
    barrier = threading.Barrier(8)

    def threaded(i):
        barrier.wait(timeout=60)  # maximise overlap
        return job(i)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(threaded, range(48), timeout=120))
    for i, (saved, rgba, parsed, decoded) in enumerate(results):
        s_saved, s_rgba, s_parsed, s_decoded = sequential[i % 6]
        assert saved == s_saved
        assert np.array_equal(rgba, s_rgba)
        assert np.array_equal(parsed, s_parsed)
        assert np.array_equal(decoded, s_decoded)
        assert np.array_equal(decoded, np.asarray(images[i % 6]))


def test_threads_quantized_save_is_deterministic():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")
    expected = _save_bytes(photo, k=8, seed=3)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _save_bytes(photo, k=8, seed=3), range(8), timeout=300))
    assert all(r == expected for r in results)


_FORK_PROBE = """
import os, signal, sys, numpy as np
from PIL import Image
import pillow_gcp
rng = np.random.default_rng(0)
flat = (np.arange(1536 * 1536) // 23 % 64).astype(np.uint8)
noise = rng.random(flat.size) < 0.1
flat[noise] = rng.integers(0, 64, int(noise.sum()), dtype=np.uint8)
im = Image.fromarray(flat.reshape(1536, 1536), "P")
im.putpalette(bytes(range(192)))
def save():
    import io
    buf = io.BytesIO()
    im.save(buf, "GCP")
    return buf.getvalue()
parent = save()  # may start worker threads in the parent
pid = os.fork()
if pid == 0:
    signal.alarm(int(sys.argv[1]))  # a deadlocked child dies of SIGALRM
    os._exit(0 if save() == parent else 3)
_, status = os.waitpid(pid, 0)
print(os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_save_in_a_forked_child_after_saving_in_the_parent():
    """multiprocessing's fork start method, gunicorn --preload, ...: a child process inherits the
    parent's module state but not its threads. Saving there must work (and give the same bytes)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _FORK_PROBE, "15"], capture_output=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=180)
    assert out.returncode == 0, out.stderr.decode()
    status = int(out.stdout.decode().split()[-1])
    assert status != -14, "the child deadlocked (killed by SIGALRM after 15 s)"
    assert status == 0, f"child exit status {status}"


# ----------------------------------------------------------------------------- incremental parsing


@pytest.mark.parametrize("channels,meta", [(3, False), (4, True)])
def test_parser_in_small_chunks_matches_open(channels, meta):
    indices, palette = _image(33, 47, n=40, channels=channels, seed=7)
    if channels == 4:
        palette[3, 3] = 0
        palette[5, 3] = 128
    metadata = {"comment": "incremental", "icc_profile": bytes(range(200)) * 3} if meta else None
    data = F.encode(indices, palette, metadata) + b"bytes after DONE are ignored"
    ref = _open_load(data)
    rnd = random.Random(channels)
    splits = [[1] * len(data), [2] * len(data), [7] * len(data), [64] * len(data), [4096],
              [rnd.randint(1, 50) for _ in range(len(data))]]
    for sizes in splits:
        parser = ImageFile.Parser()
        pos = 0
        for size in sizes:
            if pos >= len(data):
                break
            parser.feed(data[pos : pos + size])
            pos += size
        im = parser.close()
        assert im.size == ref.size and im.mode == "P"
        assert np.array_equal(np.asarray(im), np.asarray(ref))
        assert np.array_equal(np.asarray(im.convert("RGBA")), np.asarray(ref.convert("RGBA")))
        assert im.info.get("comment") == ref.info.get("comment")
        assert im.info.get("transparency") == ref.info.get("transparency")


def test_parser_rejects_truncated_and_corrupted_streams():
    indices, palette = _image(seed=8)
    data = F.encode(indices, palette)
    start, end = _payload_span(data)
    for cut in (5, start - 3, start + 10, end + 2):
        parser = ImageFile.Parser()
        for i in range(0, cut, 9):
            parser.feed(data[i : min(i + 9, cut)])
        with pytest.raises(OSError):
            parser.close()
    bad = bytearray(data)
    bad[(start + end) // 2] ^= 0x04
    parser = ImageFile.Parser()
    with pytest.raises(OSError, match="CRC mismatch in DATA"):
        for i in range(0, len(bad), 9):
            parser.feed(bytes(bad[i : i + 9]))
        parser.close()


# ----------------------------------------------------------------------------- integrity


@pytest.mark.parametrize("ctype,load_truncated", [(b"HEAD", False), (b"PLTE", False), (b"PLTZ", False),
                                                  (b"DATA", False), (b"DATA", True)])
def test_every_bit_flip_in_a_chunk_is_caught_by_its_crc(monkeypatch, ctype, load_truncated):
    # LOAD_TRUNCATED_IMAGES is about short files: it must not turn a CRC error into another error.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    indices, palette = _image(6, 9, n=4, channels=4, seed=9)
    if ctype == b"PLTZ":  # a grey ramp of 32 entries: its planes deflate to less than the entries
        palette = np.repeat(np.arange(0, 256, 8, dtype=np.uint8)[:, None], 4, axis=1)
    data = F.encode(indices, palette)
    off, length = _chunk_at(data, ctype)
    crc_at = off + 8 + length
    for pos in range(off + 8, crc_at + 4):  # the data and the CRC field itself
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(GCPFormatError, match=f"CRC mismatch in {ctype.decode()} chunk") as e:
                _open_load(bytes(bad))
            assert e.value.offset == crc_at
            with pytest.raises(GCPFormatError, match=f"CRC mismatch in {ctype.decode()} chunk"):
                F.decode(bytes(bad))


def test_bit_flip_after_data_is_caught_by_verify():
    indices, palette = _image(6, 9, n=4, seed=10)
    data = F.encode(indices, palette, {"comment": "x"})
    sig, chunks, tail = fuzz.split_chunks(data)
    chunks.insert(len(chunks) - 1, [b"cmnt", b"after the data"])
    data = fuzz.join_chunks(sig, chunks, tail)
    off, length = [(o, n) for o, t, n in F.chunk_table(data) if t == b"cmnt"][-1]
    for pos in (off + 8, len(data) - 1):  # the trailing comment, the DONE CRC
        bad = bytearray(data)
        bad[pos] ^= 0x01
        _open_load(bytes(bad))  # load() stops after DATA
        with Image.open(io.BytesIO(bytes(bad))) as im, pytest.raises(OSError, match="CRC mismatch"):
            im.verify()


def test_palette_alpha_survives_every_value():
    """Each alpha value in the last palette entry must reach the RGBA pixels (also 0x0A, a newline byte)."""
    for a in range(256):
        palette = np.array([[10, 20, 30, 255], [0, 0, 0, 0], [200, 100, 50, a]], np.uint8)
        indices = np.array([[0, 1, 2]], np.uint8)
        rgba = np.asarray(_open_load(F.encode(indices, palette)).convert("RGBA"))
        assert np.array_equal(rgba[0], palette), f"alpha {a}: {rgba[0].tolist()}"
