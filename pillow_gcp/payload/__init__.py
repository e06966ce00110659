"""Coding of the palette-index map (the ``.gcp`` payload, SPEC.md section 6, format version 3).

The payload's first byte names the coding:

0  ZLIB   : the N = width*height indices, raster order, as one zlib stream   (:mod:`.plain`)
1  CTX    : each index as its rank in an order chosen by its neighbours (above; with flag
            LEFT also left) inside 64x64 tiles; a table of per-context orders and the
            ranks (flag ZFLAGS: zero-flag plane + nonzero ranks), all zlib   (:mod:`.ctx`)
2  LZMA2  : the indices as one LZMA2 stream                                   (:mod:`.plain`)

:func:`encode` picks the coding with :func:`choose` (a cost model of the map's size, palette size
and share of pixels unlike their neighbours; one coding below level 9), :func:`decode` reads any of them. Bytes in,
arrays out; no Pillow here. Encoding starts no threads; decoding a CTX map of 0.5 MP or more inflates
its rank streams on helper threads that end before :func:`decode` returns (:func:`.ctx.set_threads`).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import GCPFormatError
from . import ctx, plain, streams  # noqa: F401  (streams: the back-end module, part of the package API)

__all__ = ["encode", "decode", "encode_as", "choose", "estimate", "check_level", "coding_name", "fill_order",
           "CODINGS", "METHOD_ZLIB", "METHOD_CTX", "METHOD_LZMA2", "FLAG_LEFT", "FLAG_ZFLAGS"]

METHOD_ZLIB = plain.METHOD_ZLIB
METHOD_CTX = ctx.METHOD
METHOD_LZMA2 = plain.METHOD_LZMA2
FLAG_LEFT = ctx.FLAG_LEFT
FLAG_ZFLAGS = ctx.FLAG_ZFLAGS

CODINGS = ("zlib", "ctx-up", "ctx-up-zflags", "ctx-left", "ctx-left-zflags", "lzma2")
_CTX_FLAGS = {"ctx-up": 0, "ctx-up-zflags": FLAG_ZFLAGS, "ctx-left": FLAG_LEFT,
              "ctx-left-zflags": FLAG_LEFT | FLAG_ZFLAGS}

DEFAULT_LEVEL = 6
BIG = 1 << 18       # pixels: above this, k > 64 maps get plain ranks (faster to decode, < 1 % larger)
# Levels 4-8 write no coding predicted (by :func:`estimate`) to decode slower than CAP x PNG-8's time; issue 13
# asks for no image over 4x. LZMA2 keeps a margin (the model's ratio error is ~15 % median, up to ~45 %; in the
# fit data no map predicted <= 3.1 decodes over 3.44x). The CTX ratio model carries its margin inside (its
# predictions are scaled up by 1.11 with LEFT and 1.22 without, see estimate(); its error is 9-11 % median,
# repeated measurements of the same small map vary by up to 20 %).
LZMA2_CAP = 3.1
CTX_CAP = 4.0
SAMPLE_ABOVE = 1 << 20  # pixels: estimate() reads a quarter of the rows of bigger maps
LZ_FRIENDLY = 1 / 128  # predicted LZMA2 bytes per pixel below which LZMA2 beats CTX (long exact repeats: mazes)
# CTX with LEFT has k*k contexts: it pays only with enough pixels per context. Measured (photos-more and every
# third Kodak photo at full and half size, k = 24..64: 176 maps), LEFT / U-only payload size, median by
# N / k^2: < 8 px: 1.09, 16-24: 1.02, 24-32: 1.00, 32-48: 0.96, 64-96: 0.96, 128+: 0.89; U alone also decodes
# 1.5-2x faster on those small maps (no wavefront).
LEFT_MIN = 32  # pixels per LEFT context (N >= LEFT_MIN * k^2) for the model to choose LEFT
# Maps whose rows often repeat the row above exactly (upscaled images) hold repeats that LZMA2 uses and CTX
# cannot (CTX measured 1.1-2.3x LZMA2's size there, up to 1.4x PNG-8's, and 5-10x PNG-8's decode time). When
# at least TRIAL_DUP of a map's 64-pixel row segments equal the segment above (estimate()'s "dup": an upscale
# by 2 or more that repeats rows has >= 0.5; natural photos measured 0.00-0.17 at k >= 16, up to 0.6 at k = 4)
# and CTX is allowed, a sample of the map is coded with CTX, ZLIB and LZMA2 and the smallest coding kept.
TRIAL_DUP = 0.45
TRIAL_BANDS = 4        # the sample: at least this many tile rows (64 whole rows each), evenly spaced, and
TRIAL_SHARE = 8        # at least 1/TRIAL_SHARE of the map (the whole map when that is most of it)
# estimate()'s CTX decode-time ratio model, (c0, c1, c2, c3), the cap's margin folded into c0
# (refit at the decoder of commit eb4884c with LEFT chosen by uses_left(); margins e^0.1 = 1.11x with LEFT, e^0.2
# = 1.22x without: in the two fit runs no map so predicted within the cap decoded over 2.97x PNG-8's time)
_CTX_LEFT = (3.5956 + 0.1, -0.3094, -0.2909, 0.1702)
_CTX_UP = (4.5219 + 0.2, -0.4522, -0.1597, 0.2688)
# k <= LOW_K: PNG-8 packs 1, 2 or 4 bits per pixel and decodes several times faster per pixel than at k > 16,
# so CTX's ratio is higher there (65 K pixel photos at k = 4: 4.8-7.3x). Two models, and CTX must pass both:
# _CTX_LOWK, fitted on the photos-more maps at k = 4 and 8 and the graphics with k <= 8 (N <= 0.26 MP; median
# error 7 %, at most 15 % too low; margin e^0.2 = 1.22x), falls as N^-0.3, which is wrong beyond its data:
# PNG-8 and CTX both cost a fixed time per pixel on big maps (k = 4: ~1.2-2.5 and ~5-8 ns), and it
# under-predicted 1-4 MP maps by 15-50 % (a x2 BICUBIC upscale at k = 4 decoded at 4.3x). _CTX_LOWK_BIG, on
# [1, ln(1 + 1e5/N), ln(B/N + 1e-4), ln k, dup, ln N], is fitted on the 234 maps of bench/fit_ctx_model.py
# --lowk, 12 K-4 MP at k = 2-8 (Kodak and photos-more at own size, Kodak x2 BICUBIC, photos-more x4 BICUBIC, 1
# and 4 MP photos with sensor noise, the graphics; 1 Dec, min of 7 interleaved): median error 7 %, at most 22 %
# too low (30 % on held-out maps; single timings of a 1.5 MP map vary by 15 % from run to run); margin 1.25x
# (+0.2231). It grows with N (the wavefront's scratch leaves the caches), rows that repeat
# (dup) make PNG-8 faster. On 138 held-out maps (fit_ctx_model.py --check-lowk: other upscales, photos-more at
# 4 MP) the 43 sent to CTX decode at 1.6-3.2x; the small-map model alone sent 39 more, 10 of them over 4x.
LOW_K = 8
_CTX_LOWK = (4.7722 + 0.2, -0.2964, -0.2805, -0.4450)
_CTX_LOWK_BIG = (-0.0944 + 0.2231, 0.6246, -0.1679, -0.4480, 0.1028, 0.0913)
# k > LOW_K: _CTX_LEFT and _CTX_UP, fitted on maps of at most 0.26 MP, fall as N^-0.3 / N^-0.45 and
# under-predicted 1-4 MP smooth upscales by 1.2-2.4x (photos-more x4 BICUBIC at k = 32 / 64 decoded at 4.0-4.5x
# PNG-8, predicted 1.7-2.6x). CTX must also pass _CTX_BIG, on [1, ln(1 + 1e5/N), ln(B/N + 1e-4), ln k, dup,
# ln N, LEFT] (LEFT = uses_left()), fitted (bench/fit_ctx_model.py --bigk) on 318 maps of 9 K-4 MP at
# k = 16-256 (Kodak and photos-more at own size, odd-numbered Kodak x2 BICUBIC, Kodak x2.5 BILINEAR,
# photos-more x4 BICUBIC, 4 MP photos with sensor noise, the graphics; process CPU time, min of 7
# interleaved): median error 8 %, at most 44 % too low (a 37 K pixel graphic, which the small-map model
# holds back); 11 % / 42 % on 125 held-out maps. Margin 1.4x (+0.3365): in the fit data the 5 maps over 4x
# that the small-map models let through are held back, the largest passed measured 3.54x; of the 125
# held-out maps (other Kodak photos x2 BICUBIC, x3 LANCZOS, x1.5 BICUBIC, x2 NEAREST; photos-more x2 BOX,
# x3 BILINEAR and at 4 MP with noise) the 85 sent to CTX measured 1.2-4.0x. 1.45x would move photos-more's
# 256x256 photos at k = 16 (2.3-2.6x) off CTX.
_CTX_BIG = (-1.7612 + 0.3365, 0.6638, -0.2347, 0.2319, 0.1614, 0.0447, 0.5952)


def estimate(a: np.ndarray, k: int) -> dict:
    """The encoder's cost model of an (H, W) map: predicted LZMA2 size and decode time of each coding.

    A pixel is *new* when it differs from its left and its upper neighbour. With ``f`` the share of new
    pixels and ``H`` the entropy (bits) of the indices of the new pixels, the LZMA2 stream is predicted at
    ``N (0.766 f H + 1.402 h(f)) / 8`` bytes (h = binary entropy); decode times (seconds, least squares over
    the 40 palette graphics and the photos-more maps at k = 16/64/256 on the reference machine, Pillow open +
    load of whole files, process CPU time, CTX decoder of commit a898dd8):

    * PNG-8 (the yardstick): ``64.5e-6 + 2.36e-9 N + 10.1e-9 B``
    * ZLIB: at most PNG's (measured 0.55-1.0x; not modelled)
    * LZMA2: ``82.8e-6 + 0.653e-9 N + 62.2e-9 B`` (LZMA decodes ~60 ns per compressed byte)
    * CTX, as a ratio to PNG-8 directly (the decoder of commit eb4884c: with LEFT a wavefront of ~127 numpy
      steps per band, without it a chain and a step per tile row; least squares on the log ratio over the
      same maps, LEFT as :func:`uses_left` picks it, median error 9 % with LEFT and 11 % without, at most
      55 % / 93 % too low), then scaled by the margin of the cap (1.11 with LEFT, 1.22 without):
      ``exp(c0 + c1 ln N + c2 ln(B/N + 1e-4) + c3 ln k)`` with ``(c0, c1, c2, c3)`` = ``_CTX_LOWK`` when
      k <= ``LOW_K`` (PNG-8 packs bits there), else ``_CTX_LEFT`` or ``_CTX_UP``; these are fits of maps
      up to 0.26 MP, so the larger of that and a model of maps up to 4 MP is used, ``exp(d0 + d1 ln(1 + 1e5/N)
      + d2 ln(B/N + 1e-4) + d3 ln k + d4 dup + d5 ln N [+ d6 LEFT])``: ``_CTX_LOWK_BIG`` at k <= ``LOW_K``,
      ``_CTX_BIG`` (with the LEFT term) above

    Returns ``{"bytes": B, "lzma2": ratio, "ctx": ratio, "dup": share}`` (ratios = predicted time / PNG-8's;
    ``dup`` the share of the 64-pixel row segments, aligned, equal to the segment above). Costs two
    comparisons and one bincount over the map; maps over ``SAMPLE_ABOVE`` pixels are sampled (a quarter
    of their rows, in bands of 8).
    """
    n = a.size
    rows = np.arange(a.shape[0])
    if n > SAMPLE_ABOVE:  # big maps: bands of 8 rows out of every 32 (statistics, not exact counts)
        rows = rows[(rows >> 3) % 4 == 0]
    s = a[rows]
    above = np.zeros_like(s)
    above[rows > 0] = a[rows[rows > 0] - 1]                # the real upper neighbour (0 above row 0)
    new = np.empty(s.shape, bool)
    np.not_equal(s[:, 1:], s[:, :-1], out=new[:, 1:])     # differs from the left neighbour
    np.not_equal(s[:, 0], 0, out=new[:, 0])                # (0 left of column 0)
    unlike_up = s != above
    new &= unlike_up                                       # ... and from the upper one
    w64 = s.shape[1] // 64 * 64                            # row segments of 64 equal to the one above:
    seg = unlike_up[:, :w64].reshape(-1, 64).any(axis=1)
    dup = 1.0 - float(seg.mean()) if seg.size else 0.0
    sel = s[new]
    m = sel.size
    f = m / s.size
    cnt = np.bincount(sel, minlength=k)
    p = cnt[cnt > 0] / max(m, 1)
    h_new = float(-(p * np.log2(p)).sum())
    h_f = 0.0 if f <= 0 or f >= 1 else -(f * np.log2(f) + (1 - f) * np.log2(1 - f))
    b = n * (0.766 * f * h_new + 1.402 * h_f) / 8
    c0, c1, c2, c3 = _CTX_LOWK if k <= LOW_K else _CTX_LEFT if uses_left(n, k) else _CTX_UP
    ln_bn = math.log(b / n + 1e-4)
    ctx_ratio = math.exp(c0 + c1 * math.log(n) + c2 * ln_bn + c3 * math.log(k))
    # the model of maps up to 4 MP; _CTX_LOWK_BIG has no LEFT term (zip stops at its six)
    big = (1.0, math.log1p(1e5 / n), ln_bn, math.log(k), dup, math.log(n), float(uses_left(n, k)))
    d = _CTX_LOWK_BIG if k <= LOW_K else _CTX_BIG
    ctx_ratio = max(ctx_ratio, math.exp(sum(di * x for di, x in zip(d, big))))
    return {"bytes": b, "lzma2": _lzma2_ratio(n, b), "ctx": ctx_ratio, "dup": dup}


def _lzma2_ratio(n: float, b: float) -> float:
    """The model's LZMA2 decode time over PNG-8's for n pixels and b LZMA2 bytes (see :func:`estimate`)."""
    return (82.8e-6 + 0.653e-9 * n + 62.2e-9 * b) / (64.5e-6 + 2.36e-9 * n + 10.1e-9 * b)


def check_level(level, name: str = "level") -> int:
    """The effort level, 0..9 (None: the default 6); ValueError naming ``name`` otherwise."""
    if level is None:
        return DEFAULT_LEVEL
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"{name} must be None or an int in 0..9, got {level!r}")
    return int(level)


def _check_k(palette_size) -> int:
    if isinstance(palette_size, bool) or not isinstance(palette_size, (int, np.integer)) \
            or not 1 <= palette_size <= 256:
        raise ValueError(f"palette_size must be an int in 1..256, got {palette_size!r}")
    return int(palette_size)


def _check_indices(indices, palette_size) -> np.ndarray:
    _check_k(palette_size)
    a = np.asarray(indices)
    if a.dtype != np.uint8:
        raise TypeError(f"indices must have dtype uint8, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"indices must be a non-empty 2-D (H, W) array, got shape {a.shape}")
    m = int(a.max())
    if m >= palette_size:
        raise ValueError(f"indices must all be < palette_size={palette_size}, found {m}")
    return np.ascontiguousarray(a)


def uses_left(n: int, k: int) -> bool:
    """Whether the model's CTX coding of an n-pixel map with palette size k has LEFT: k <= 64 and at
    least ``LEFT_MIN`` pixels per (L, U) context."""
    return k <= ctx.LEFT_MAX_K and n >= LEFT_MIN * k * k


def ctx_coding(n: int, k: int) -> str:
    """The CTX coding the model writes for an n-pixel map with palette size k: LEFT as :func:`uses_left`
    says, ZFLAGS unless k > 64 on maps over ``BIG`` pixels."""
    return "ctx-" + ("left" if uses_left(n, k) else "up") + ("" if k > 64 and n > BIG else "-zflags")


def codings_for(k: int) -> tuple:
    """The codings valid for palette size ``k`` (LEFT needs k <= 64)."""
    return tuple(c for c in CODINGS if not (c.startswith("ctx-left") and k > ctx.LEFT_MAX_K))


def choose(indices: np.ndarray, k: int, level: int = DEFAULT_LEVEL) -> tuple:
    """The codings :func:`encode` writes for the (H, W) map ``indices`` with palette size ``k`` at
    ``level``; when several are named, all are coded and the smallest kept.

    * levels 0-3: ZLIB at that zlib level (0 = stored blocks); k = 1: ZLIB;
    * level 9: every coding valid for k, with several zlib strategies per stream;
    * levels 4-8, exactly one coding, from the model of :func:`estimate` (no trial encode of the map, but
      for very compressible maps one of a sample of it):
      CTX when it is predicted to decode within ``CTX_CAP`` x PNG-8's time (maps of about 0.1 MP and
      more: its ~127 numpy steps cost ~1 ms), unless LZMA2 is predicted within its cap and below
      ``LZ_FRIENDLY`` bytes per pixel (long exact repeats: maze maps), or ``TRIAL_DUP`` of its row
      segments repeat the row above and ZLIB or LZMA2 codes :func:`trial_sample` smaller than CTX
      (upscaled images, :func:`_trial`); else LZMA2 when it is predicted
      within ``LZMA2_CAP`` (sprites, tiles, icons with repeats: ~7 % smaller than ZLIB there); else ZLIB
      at ``level`` (small noisy sprites: ZLIB decodes faster than PNG, LZMA2 at 60 ns per byte does not).
      CTX flags: LEFT (context (L, U)) when k <= 64 and the map has ``LEFT_MIN`` pixels per (L, U)
      context, else U alone (the k^2-context table costs more than it saves); ZFLAGS except k > 64 on maps over 2^18 pixels (plain ranks: < 1 % larger, faster to decode).
    """
    return _plan(np.asarray(indices), k, level)[0]


def _plan(a: np.ndarray, k: int, level: int) -> tuple:
    """(codings, payload): :func:`choose`'s codings, and the payload of the one chosen when the trial
    coded the whole map already (else None)."""
    n = a.size
    if level <= 3 or k == 1:
        return ("zlib",), None
    if level == 9:
        return codings_for(k), None
    est = estimate(a, k)
    lz_ok = est["lzma2"] <= LZMA2_CAP
    if est["ctx"] <= CTX_CAP and not (lz_ok and est["bytes"] < LZ_FRIENDLY * n):
        coding = ctx_coding(n, k)
        if est["dup"] >= TRIAL_DUP:
            return _trial(a, k, coding, level)
        return (coding,), None
    return (("lzma2",) if lz_ok else ("zlib",)), None


def trial_sample(a: np.ndarray) -> np.ndarray:
    """The rows of the (H, W) map ``a`` that :func:`choose`'s trial codes: whole tile rows (64 rows, starting
    at a multiple of 64, where CTX's contexts restart anyway), ``TRIAL_BANDS`` or 1/``TRIAL_SHARE`` of them,
    whichever is more, evenly spaced; all of ``a`` when that would be half of it or more."""
    rows = -(-a.shape[0] // ctx.TILE)
    bands = max(TRIAL_BANDS, -(-rows // TRIAL_SHARE))
    if 2 * bands >= rows:
        return a
    tiles = np.arange(bands) * (rows - 2) // (bands - 1)    # from the first to the last full tile row
    return np.concatenate([a[t * ctx.TILE:(t + 1) * ctx.TILE] for t in tiles])


def _trial(a: np.ndarray, k: int, coding: str, level: int) -> tuple:
    """:func:`_plan` for a map with repeats: ``coding``, LZMA2 or ZLIB at ``level``, whichever codes
    :func:`trial_sample` of ``a`` smallest (CTX's table left out when the sample is part of the map: on the
    whole map it is shared by many more pixels), LZMA2 only if its decode time, predicted from its real size,
    is within ``LZMA2_CAP``; when the sample is the whole map, with its payload."""
    s = np.ascontiguousarray(trial_sample(a))
    f = _CTX_FLAGS[coding]
    c = ctx.encode(s, k, left=bool(f & FLAG_LEFT), zflags=bool(f & FLAG_ZFLAGS))
    z = plain.encode_lzma2(s)
    whole = s.size == a.size
    table = 0 if whole else streams.U32.unpack_from(c, 2)[0]
    fast = _lzma2_ratio(a.size, len(z) * a.size / s.size) <= LZMA2_CAP  # (LZMA2's bytes scaled from the sample)
    d = plain.encode_zlib(s, level)
    trials = [(len(c) - table, coding, c), (len(d), "zlib", d)] + ([(len(z), "lzma2", z)] if fast else [])
    _, best, payload = min(trials, key=lambda t: t[0])
    return (best,), (payload if whole else None)


def encode_as(indices: np.ndarray, palette_size: int, coding: str, *, level: int = DEFAULT_LEVEL) -> bytes:
    """The payload of ``indices`` in one named coding (one of :data:`CODINGS`)."""
    a = _check_indices(indices, palette_size)
    level = check_level(level)
    if coding == "zlib":
        return plain.encode_zlib(a, level)
    if coding == "lzma2":
        return plain.encode_lzma2(a)
    if coding in _CTX_FLAGS:
        f = _CTX_FLAGS[coding]
        return ctx.encode(a, palette_size, left=bool(f & FLAG_LEFT), zflags=bool(f & FLAG_ZFLAGS),
                          search=level == 9)
    raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")


def encode(indices: np.ndarray, palette_size: int, *, level: int | None = None) -> bytes:
    """Encode an index map.

    Parameters
    ----------
    indices : ndarray, shape (H, W), dtype uint8, every value < palette_size
    palette_size : int, 1..256
    level : int 0..9 or None (6): effort, see :func:`choose`

    Returns
    -------
    bytes : the payload (SPEC.md section 6).
    """
    level = check_level(level)
    a = _check_indices(indices, palette_size)
    codings, ready = _plan(a, palette_size, level)
    if ready is not None:  # the trial coded the whole map already
        return ready
    best = None
    for coding in codings:
        p = encode_as(a, palette_size, coding, level=level)
        if best is None or len(p) < len(best):
            best = p
    return best


def coding_name(head: bytes) -> str:
    """The coding a payload uses, from its first bytes: one of :data:`CODINGS`,
    ``"method N"`` for an unknown method, ``"empty"``."""
    if not head:
        return "empty"
    m = head[0]
    if m == METHOD_ZLIB:
        return "zlib"
    if m == METHOD_LZMA2:
        return "lzma2"
    if m == METHOD_CTX:
        f = head[1] if len(head) > 1 else 0
        return "ctx-" + ("left" if f & FLAG_LEFT else "up") + ("-zflags" if f & FLAG_ZFLAGS else "")
    return f"method {m}"


def fill_order(payload: bytes, width: int, height: int) -> np.ndarray:
    """(N,) intp: raster pixel numbers in the order a truncated payload fills them (all codings: raster)."""
    return np.arange(width * height, dtype=np.intp)


def decode(data, width: int, height: int, palette_size: int, *, partial: bool = False) -> np.ndarray:
    """Decode a payload to the (height, width) uint8 index map.

    ``partial=True`` (Pillow's LOAD_TRUNCATED_IMAGES): a truncated payload gives its decoded
    prefix (raster order) and index 0 elsewhere; corrupt data still raises. Raises
    :class:`GCPFormatError` with a payload offset (0 = the method byte) for bad data.
    """
    k = _check_k(palette_size)
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    width, height = int(width), int(height)
    mv = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    if len(mv) == 0:
        if partial:
            return np.zeros((height, width), np.uint8)
        raise GCPFormatError("payload empty: method byte missing", 0)
    m = mv[0]
    if m in (METHOD_ZLIB, METHOD_LZMA2):
        return plain.decode(mv, width, height, k, partial)
    if m == METHOD_CTX:
        return ctx.decode(mv, width, height, k, partial)
    raise GCPFormatError(f"unknown payload method {m} (this decoder reads 0..2)", 0)
