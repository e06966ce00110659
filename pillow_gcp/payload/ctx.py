"""Method 1, CTX (SPEC 6.4): each index coded as its *rank* in an order of the k indices that
depends on its neighbours inside a 64x64 tile -- the index above (U), and with flag LEFT also the
index to the left (L).

Encoding: count (context, index) pairs, list for each context the indices seen there at least
``LIST_MIN`` times, most frequent first (the *table*), code each pixel as its rank in its context's
order, then write the ranks in raster order as zlib streams: a zero-flag plane plus the nonzero
ranks (flag ZFLAGS), or one byte per pixel.

Decoding: inflate, scatter the nonzero ranks, then a wavefront over the tiles of each band of
tile rows: step t decodes the anti-diagonal x + y = t of every tile at once (L and U of those
pixels are on diagonal t - 1), so 127 numpy steps per band whatever the image width. On maps of
``THREAD_MIN`` pixels and more, helper threads inflate the rank streams while the calling thread
scatters and decodes the bands already inflated (:func:`set_threads` caps this; 1 = none).
"""

from __future__ import annotations

import functools
import threading
import zlib

import numpy as np

from .._threads import set_threads, threads  # noqa: F401 (the package's one thread cap)
from ..errors import GCPFormatError
from . import streams

METHOD = 1
FLAG_LEFT = 0x01     # context (L, U): k*k contexts (only k <= LEFT_MAX_K); else U alone: k contexts
FLAG_ZFLAGS = 0x02   # ranks as a zero-flag plane + the nonzero ranks; else one rank byte per pixel
LEFT_MAX_K = 64
TILE = 64
LIST_MIN = 3         # encoder: an index is listed for a context if seen there this often


# ----------------------------------------------------------------------------- contexts and orders

def neighbours(a: np.ndarray) -> tuple:
    """(L, U), each (H, W) uint8: the left and upper neighbour of every pixel inside its tile
    (SPEC 6.4): tile row 0: U = L; tile column 0: L = U; tile corner: L = U = 0."""
    L = np.zeros_like(a)
    L[:, 1:] = a[:, :-1]
    U = np.zeros_like(a)
    U[1:] = a[:-1]
    L[:, ::TILE] = U[:, ::TILE]
    U[::TILE] = L[::TILE]
    L[::TILE, ::TILE] = 0
    U[::TILE, ::TILE] = 0
    return L, U


def context_ids(a: np.ndarray, k: int, left: bool) -> np.ndarray:
    """(H, W) intp context of every pixel: ``L * k + U`` with LEFT, else ``U``."""
    L, U = neighbours(a)
    if left:
        return L.astype(np.intp) * k + U
    return U.astype(np.intp)


def default_positions(k: int) -> np.ndarray:
    """(k, k) intp: ``pos[u, s]`` = position of index s in the default order around u
    (u, u-1, u+1, u-2, u+2, ...: sorted by ``2*|s - u| - (s < u)``)."""
    s = np.arange(k)
    key = 2 * np.abs(s[None, :] - s[:, None]) - (s[None, :] < s[:, None])
    return np.argsort(np.argsort(key, axis=1, kind="stable"), axis=1, kind="stable")


@functools.lru_cache(maxsize=8)
def default_order(k: int) -> np.ndarray:
    """(k, k) uint8, read-only: row u is the default order around u (u, u-1, u+1, ... within 0..k-1).

    Closed form: with m = min(u, k-1-u), rank r <= 2m alternates u - ceil(r/2) (r odd) and
    u + r/2 (r even); beyond 2m the order runs on along the longer side, which makes it r (u in
    the lower half) or k-1-r (upper half).
    """
    u = np.arange(k, dtype=np.int16)[:, None]
    r = np.arange(k, dtype=np.int16)[None, :]
    m = np.minimum(u, (k - 1) - u)
    d = (r + 1) >> 1
    near = np.where(r & 1, u - d, u + d)
    far = np.where(u < (k - 1) - u, r, (k - 1) - r)
    out = np.where(r > 2 * m, far, near).astype(np.uint8)
    out.flags.writeable = False  # (memoized: a few small tables, the same for every map of this k)
    return out


def learn(ctx: np.ndarray, a: np.ndarray, nctx: int, k: int, list_min: int = LIST_MIN):
    """Encoder model: (table bytes, rank_of (nctx, k) uint8).

    The table is the ``nctx`` counts then the lists (positions in each context's default order).
    """
    cnt = np.bincount((ctx * k + a).ravel(), minlength=nctx * k).reshape(nctx, k)
    pos = default_positions(k)[np.arange(nctx) % k]            # default position of each index
    listed = cnt >= list_min
    order = np.lexsort((pos, np.where(listed, -cnt, 0), ~listed), axis=1)  # (nctx, k) indices
    m = listed.sum(axis=1)
    lpos = np.take_along_axis(pos, order, axis=1)              # positions, in list order
    # Drop the list's tail that the default order gives anyway: entries j..m-1 with
    # lpos[j] < lpos[j+1] < ... < lpos[m-1] < (smallest unlisted position). (Also drops the
    # implied last entry of a full list.)
    by_pos = np.zeros((nctx, k), bool)
    np.put_along_axis(by_pos, pos, listed, axis=1)
    low = np.where(by_pos.all(axis=1), k, np.argmin(by_pos, axis=1))
    j = np.arange(k)
    nxt = np.empty_like(lpos)
    nxt[:, :-1] = lpos[:, 1:]
    last = j[None, :] == (m - 1)[:, None]
    nxt[last] = low[m > 0]
    inside = j[None, :] < m[:, None]
    bad = inside & (lpos >= nxt)
    m = np.where(bad.any(axis=1), k - np.argmax(bad[:, ::-1], axis=1), 0)
    lists = lpos[np.arange(k)[None, :] < m[:, None]]
    table = m.astype(np.uint8).tobytes() + lists.astype(np.uint8).tobytes()
    rank_of = np.empty((nctx, k), np.uint8)
    np.put_along_axis(rank_of, order, np.broadcast_to(np.arange(k, dtype=np.uint8), (nctx, k)), axis=1)
    return table, rank_of


@functools.lru_cache(maxsize=8)
def _prefix_masks(k: int) -> tuple:
    """Two (k, k) bool tables, read-only: row m is ``arange(k) < m``, and its complement."""
    listed = np.arange(k)[None, :] < np.arange(k)[:, None]
    unlisted = ~listed
    listed.flags.writeable = unlisted.flags.writeable = False
    return listed, unlisted


_PARSE_CELLS = 1 << 15  # table cells (contexts x k) per pass of parse_table: scratch under 1 MiB


def parse_table(buf: bytes, nctx: int, k: int, offset: int) -> np.ndarray:
    """Validate the table and return the (nctx, k) uint8 orders (``order[c, r]`` = index of rank r).

    Row c of the result is context c's default order with its list moved to the front: ranks
    0..m-1 are the listed positions in list order, ranks m..k-1 the unlisted positions in
    increasing order. Built with boolean-mask passes over the listed contexts only, no sort.
    """
    b = np.frombuffer(buf, np.uint8)
    if b.size < nctx:
        raise GCPFormatError(f"rank table ends inside its {nctx} counts", offset)
    cnt = b[:nctx]
    if int(cnt.max()) > k - 1:
        c = int(np.argmax(cnt > k - 1))
        raise GCPFormatError(f"rank table lists {int(cnt[c])} entries for context {c}, at most {k - 1}", offset)
    lists = b[nctx:]
    total = int(cnt.sum(dtype=np.int64))
    if total != lists.size:
        raise GCPFormatError(f"rank table holds {lists.size} list entries, its counts say {total}", offset)
    order = np.tile(default_order(k), (nctx // k, 1))     # nctx is k or k*k
    if int(lists.max(initial=0)) >= k:
        ctx = int(np.searchsorted(np.cumsum(cnt, dtype=np.int64), int(np.argmax(lists >= k)), side="right"))
        raise GCPFormatError(f"rank table list of context {ctx} has a position >= {k} or a repeat", offset)
    rr = np.flatnonzero(cnt)                                # the contexts that have a list
    starts = np.zeros(nctx + 1, np.int64)
    np.cumsum(cnt, out=starts[1:])
    step = max(1, _PARSE_CELLS // k)                       # contexts per pass (bounded scratch)
    for i in range(0, rr.size, step):
        ri = rr[i:i + step]
        c = cnt[ri].astype(np.intp)
        p = lists[int(starts[ri[0]]):int(starts[ri[-1] + 1])]  # (contexts in between list nothing)
        rows = np.repeat(np.arange(ri.size), c)            # row (in ri) of each list entry
        seen = np.zeros((ri.size, k), bool)
        seen[rows, p] = True
        if np.count_nonzero(seen) != rows.size:             # a repeat
            ctx = int(ri[np.argmax(np.count_nonzero(seen, axis=1) != c)])
            raise GCPFormatError(f"rank table list of context {ctx} has a position >= {k} or a repeat", offset)
        sub = order[ri]                                     # the default orders of those contexts
        new = np.empty_like(sub)
        listed, unlisted = _prefix_masks(k)
        new[listed[c]] = sub[rows, p]                       # the listed positions, in list order
        np.logical_not(seen, out=seen)
        new[unlisted[c]] = sub[seen]                        # then the others, in default order
        order[ri] = new
    return order


# ----------------------------------------------------------------------------- encode

def encode(a: np.ndarray, k: int, *, left: bool, zflags: bool, search: bool = False) -> bytes:
    """CTX payload of the (H, W) uint8 map ``a`` (indices < k)."""
    if left and k > LEFT_MAX_K:
        raise ValueError(f"LEFT needs k <= {LEFT_MAX_K}, got k={k}")
    ctx = context_ids(a, k, left)
    nctx = k * k if left else k
    table, rank_of = learn(ctx, a, nctx, k)
    ranks = rank_of.ravel()[ctx * k + a].ravel()
    zt = streams.deflate(table, 9)
    head = bytes([METHOD, (FLAG_LEFT if left else 0) | (FLAG_ZFLAGS if zflags else 0)])
    head += streams.U32.pack(len(zt)) + zt
    # flag plane and rest stream: the smaller of Huffman-only and Z_RLE (both about as fast as a
    # copy; RLE's distance-1 matches win on the long zero runs of small-k maps: -18 to -36 % at
    # k = 2 on Kodak); level 9 also tries the default strategy. (Ties keep the earlier strategy.)
    strategies = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE) if search else \
        (zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE)

    def z(raw: bytes) -> bytes:
        return min((streams.deflate(raw, 9, st) for st in strategies), key=len)
    if not zflags:
        raw = ranks.tobytes()
        if search:
            return head + min((streams.deflate(raw, 9, s) for s in
                               (zlib.Z_RLE, zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY)), key=len)
        return head + streams.deflate(raw, 9, zlib.Z_RLE)
    nz = ranks != 0
    zf = z(np.packbits(nz).tobytes())
    return head + streams.U32.pack(len(zf)) + zf + z((ranks[nz] - 1).astype(np.uint8).tobytes())


# ----------------------------------------------------------------------------- decode

def _ranks_plain(mv, pos, n, k, partial):
    got = np.frombuffer(streams.exact("zlib", mv, pos, len(mv), n, "rank stream", partial), np.uint8)
    if got.size and int(got.max()) >= k:
        raise GCPFormatError(f"rank stream holds a rank >= {k}", pos)
    return got, got.size


_BLOCK = 1 << 16  # pixels per step when scattering the nonzero ranks (bounded scratch)
_BIT = np.arange(8)


def _popcount(fbytes: np.ndarray) -> int:
    """Set bits of the flag plane (unpacked in pieces of ``_BLOCK`` bits: bounded scratch)."""
    return sum(int(np.count_nonzero(np.unpackbits(fbytes[i:i + _BLOCK // 8])))
               for i in range(0, fbytes.size, _BLOCK // 8))


def _nonzero(fbytes: np.ndarray, s: int, n: int) -> np.ndarray:
    """Positions (from pixel ``s``) of the nonzero ranks among pixels s .. s + _BLOCK - 1 (s a
    multiple of _BLOCK; the padding bits of the plane are zero)."""
    fb = fbytes[s // 8:(s + _BLOCK) // 8]
    nzb = np.flatnonzero(fb)
    if nzb.size * 4 < fb.size:  # sparse: unpack only the bytes that hold a nonzero rank
        return ((nzb * 8)[:, None] + _BIT).ravel()[np.unpackbits(fb[nzb]).view(bool)]
    return np.flatnonzero(np.unpackbits(fb, count=min(_BLOCK, n - s)).view(bool))


def _padding_set(fbytes: np.ndarray, n: int) -> bool:
    """Whether the flag plane's last byte (of a complete plane) has a padding bit set."""
    return bool(n % 8 and fbytes[-1] & ((1 << (8 - n % 8)) - 1))


def _ranks_flags(mv, pos, n, k, partial):
    """Zero-flag plane + rest stream: (ranks (n,) uint8, number of leading pixels known)."""
    flen = streams.read_u32(mv, pos, "flag stream length", partial)
    if flen is None:
        return np.zeros(n, np.uint8), 0
    fs = pos + 4
    fe = fs + flen
    if fe > len(mv):
        if not partial:
            raise GCPFormatError("truncated payload: flag stream runs past the payload end", len(mv))
        fe = len(mv)
    nb = (n + 7) // 8
    fbytes = np.frombuffer(streams.exact("zlib", mv, fs, fe, nb, f"flag stream (one bit for each of {n} pixels)",
                                         partial), np.uint8)
    if len(fbytes) == nb and _padding_set(fbytes, n):
        raise GCPFormatError("flag stream padding bits are not zero", fs)
    f_known = min(n, 8 * len(fbytes))
    ranks = np.zeros(n, np.uint8)
    if len(fbytes) < nb:  # cut inside the flag plane: the rest stream is not reached
        for s in range(0, f_known, _BLOCK):
            where = np.flatnonzero(np.unpackbits(fbytes[s // 8:(s + _BLOCK) // 8], count=min(_BLOCK, f_known - s)))
            if where.size:
                return ranks, s + int(where[0])
        return ranks, f_known
    r_n = _popcount(fbytes)
    rest = np.frombuffer(streams.exact("zlib", mv, fe, len(mv), r_n, "rest stream", partial), np.uint8)
    if rest.size and int(rest.max()) > k - 2:
        raise GCPFormatError(f"rest stream holds a rank >= {k}", fe)
    rest1 = rest + np.uint8(1)
    at = 0
    for s in range(0, n, _BLOCK):
        where = _nonzero(fbytes, s, n)
        take = rest1[at:at + where.size]
        if take.size < where.size:  # rest stream cut short: the prefix ends at the first nonzero rank not coded
            ranks[s + where[:take.size]] = take
            return ranks, s + int(where[take.size])
        ranks[s:s + _BLOCK][where] = take   # (an index scatter: several times faster than np.place)
        at += where.size
    return ranks, n


def decode(mv: memoryview, width: int, height: int, k: int, partial: bool) -> np.ndarray:
    n = width * height
    if len(mv) < 2:
        if partial:
            return np.zeros((height, width), np.uint8)
        raise GCPFormatError("truncated payload: flags byte missing", len(mv))
    flags = mv[1]
    if flags & ~(FLAG_LEFT | FLAG_ZFLAGS):
        raise GCPFormatError(f"bad CTX flags 0x{flags:02x}: bits 2-7 are reserved", 1)
    left = bool(flags & FLAG_LEFT)
    if left and k > LEFT_MAX_K:
        raise GCPFormatError(f"CTX flag LEFT needs palette size <= {LEFT_MAX_K}, got {k}", 1)
    tlen = streams.read_u32(mv, 2, "table stream length", partial)
    if tlen is None:
        return np.zeros((height, width), np.uint8)
    if 6 + tlen > len(mv):
        if partial:
            return np.zeros((height, width), np.uint8)
        raise GCPFormatError("truncated payload: table stream runs past the payload end", len(mv))
    nctx = k * k if left else k
    got = streams.inflate("zlib", mv, 6, 6 + tlen, nctx * k, "table stream")
    if not got.complete:
        if partial:
            return np.zeros((height, width), np.uint8)
        raise GCPFormatError("truncated payload: table stream incomplete", len(mv))
    order = parse_table(got.data, nctx, k, 6)
    # (the overlapped decode allocates the output first: only for payloads that can fill it, as
    # deflate expands at most 1032:1)
    cap = threads() if not partial and n >= THREAD_MIN and (len(mv) - 6 - tlen) * 1032 >= n else 1
    if cap > 1:
        out = _decode_overlapped(mv, 6 + tlen, width, height, k, order, left, bool(flags & FLAG_ZFLAGS), cap)
        if out is not None:
            return out
        # something is wrong with the rank streams: decode again on this thread, which names it
    if flags & FLAG_ZFLAGS:
        ranks, known = _ranks_flags(mv, 6 + tlen, n, k, partial)
    else:
        ranks, known = _ranks_plain(mv, 6 + tlen, n, k, partial)
    if ranks.size < n:
        full = np.zeros(n, np.uint8)
        full[:ranks.size] = ranks
        ranks = full
    out = wavefront(ranks.reshape(height, width), order, k, left)
    if known < n:
        out.reshape(-1)[known:] = 0
    return out


_BAND_BYTES = 1 << 22  # scratch of one band of tile rows (the skewed ranks): about 2 * itemsize per pixel
_SMALL_BAND = 1 << 18  # pixels: bands up to this size are skewed through a contiguous copy of their tiles


def step_table(order: np.ndarray, k: int, left: bool):
    """The wavefront's lookup table: (table, shift) with ``B = 2**shift >= k``.

    A decoded index s is kept as ``s << shift``, so that the table position of a pixel is
    ``(L << 2*shift) + (U << shift) + rank`` (without LEFT ``(U << shift) + rank``): one shift and
    two adds, all in one unsigned dtype, and ``table`` at that position holds the index already
    shifted. Entries of the padding (an index or rank >= k) are never read.
    """
    shift = max(1, (k - 1).bit_length())
    B = 1 << shift
    dt = np.uint16 if B ** (3 if left else 2) <= 1 << 16 else np.uint32
    table = (np.empty if k == B else np.zeros)((B, B, B) if left else (B, B), dt)
    if left:
        np.left_shift(order.reshape(k, k, k), shift, out=table[:k, :k, :k], dtype=dt)
    else:
        np.left_shift(order, shift, out=table[:k, :k], dtype=dt)
    return table.ravel(), shift


def wavefront(ranks: np.ndarray, order: np.ndarray, k: int, left: bool) -> np.ndarray:
    """Indices from ranks, (h, w) uint8: band by band of tile rows (bounded scratch)."""
    h, w = ranks.shape
    decode_band, bands = _band_decoder(order, k, left, h, w)
    out = np.empty((h, w), np.uint8)
    for y0, y1 in bands:
        decode_band(ranks[y0:y1], out[y0:y1])
    return out


def _band_decoder(order: np.ndarray, k: int, left: bool, h: int, w: int):
    """(decode_band, bands) for an (h, w) map: ``decode_band(ranks, out)`` decodes one band of
    tile rows, (bh, w) ranks in, indices into ``out``; ``bands`` lists the bands' (y0, y1).

    The step table is built once per map. A LEFT map narrower than a tile and taller than wide
    is decoded transposed (L and U swap roles, and so do the tile's first row and column rules),
    where the wavefront's skewed layout wastes nothing: its table, with L and U swapped, too.
    """
    table, shift = step_table(order, k, left)
    bands = _bands(h, w, table.itemsize)
    if not left:
        return (lambda r, o: _band_up(r, o, table, shift)), bands
    if not (w < TILE and h > w):
        return (lambda r, o: _band(r, o, table, shift)), bands
    B = 1 << shift
    swapped = table.reshape(B, B, B).transpose(1, 0, 2).ravel()   # [U, L, r] -> [L, U, r]

    def decode_band(r: np.ndarray, o: np.ndarray) -> None:
        bh = r.shape[0]
        if bh <= w:  # (a last band no taller than wide)
            _band(r, o, table, shift)
            return
        t_out = np.empty((w, bh), np.uint8)
        _band(np.ascontiguousarray(r.T), t_out, swapped, shift)
        o[...] = t_out.T
    return decode_band, bands


def _bands(h: int, w: int, itemsize: int):
    """(y0, y1) of the bands of whole tile rows whose scratch fits ``_BAND_BYTES``."""
    rows = TILE * max(1, _BAND_BYTES // (2 * itemsize) // (TILE * TILE * -(-w // TILE)))
    return [(y0, min(h, y0 + rows)) for y0 in range(0, h, rows)]


def _band_up(ranks: np.ndarray, out: np.ndarray, table: np.ndarray, shift: int) -> None:
    """Decode one band of tile rows without LEFT: ``ranks`` (bh, w) uint8 in, indices into ``out``.

    Context U alone needs no wavefront: row 0 of a tile takes its left neighbour as U, a chain
    along x (TILE - 1 steps over the tiles' columns x), and every later tile row y is one step over
    the whole band (its context is row y - 1). The band is kept as ``v[y, tile row, x]`` so that
    each of those steps reads and writes contiguous rows.
    """
    S = TILE
    bh, w = ranks.shape
    nfull, rem = divmod(bh, S)
    nby = nfull + (rem > 0)
    v = np.zeros((min(S, bh), nby, w), table.dtype)  # rank, then index << shift
    tiles = v.transpose(1, 0, 2)                      # (nby, S, w) view
    if nfull:
        tiles[:nfull] = ranks[:nfull * S].reshape(nfull, S, w)
    if rem:
        tiles[nfull, :rem] = ranks[nfull * S:]
    take, add = table.take, np.add
    top = v[0]                                        # row 0 of every tile row, (nby, w)
    corner = top[:, ::S]
    corner[...] = take(corner, None, None, "wrap")    # context 0
    for x in range(1, min(S, w)):
        cur = top[:, x::S]
        prev = top[:, x - 1::S][:, :cur.shape[1]]
        cur[...] = take(add(prev, cur), None, None, "wrap")
    for y in range(1, min(S, bh)):
        cur = v[y]
        take(add(v[y - 1], cur, cur), None, cur, "wrap")
    if nfull:
        np.right_shift(tiles[:nfull], shift, out=out[:nfull * S].reshape(nfull, S, w), casting="unsafe")
    if rem:
        np.right_shift(tiles[nfull, :rem], shift, out=out[nfull * S:], casting="unsafe")


def _band(ranks: np.ndarray, out: np.ndarray, table: np.ndarray, shift: int) -> None:
    """Decode one band of tile rows with LEFT: ``ranks`` (bh, w) uint8 in, indices into ``out``.

    The tiles go in lockstep, one anti-diagonal per step (at most 2*TILE - 1 steps)."""
    S = TILE
    bh, w = ranks.shape
    nby, ntx = -(-bh // S), -(-w // S)
    ny, nx, nt = min(S, bh), min(S, w), nby * ntx
    sy, sx = (S if nby > 1 else bh), (S if ntx > 1 else w)   # tile extents as stored (one short tile: its size)
    aligned = bh == nby * sy and w == ntx * sx
    if aligned:
        tiles = ranks.reshape(nby, sy, ntx, sx)
    else:
        pad = np.zeros((nby * sy, ntx * sx), np.uint8)
        pad[:bh, :w] = ranks
        tiles = pad.reshape(nby, sy, ntx, sx)
    nd = ny + nx - 1
    # sk[t, 1 + y, tile]: rank, then index << shift, of tile pixel (y, t - y); sk[t, 0] is
    # scratch (row -1). ``skew[y, x, tile]`` views the pixels by position (tile extents as
    # stored are ny, nx): one copy fills it and one copy empties it.
    sk = np.empty((nd, ny + 1, nt), table.dtype)
    st, sr, se = sk.strides
    skew = np.ndarray((ny, nx, nt), sk.dtype, sk, sr, (st + sr, st, se))   # (as_strided costs 10x more)
    if tiles.size <= _SMALL_BAND:  # from the tiles made contiguous first: 2x faster, 1 more byte per pixel
        skew[...] = np.ascontiguousarray(tiles.transpose(0, 2, 1, 3)).reshape(nt, ny, nx).transpose(1, 2, 0)
    else:
        skew.reshape(ny, nx, nby, ntx)[...] = tiles.transpose(1, 3, 0, 2)
    np.take(table, sk[0, 1], out=sk[0, 1], mode="wrap")  # tile corners: context 0
    # (mode "wrap" never wraps here: every position is < table.size; it is the fast mode)
    buf = np.empty((ny, nt), table.dtype)
    take, lshift, add = table.take, np.left_shift, np.add  # (bound once: the loop is call-bound on small maps)
    sh = np.array(shift, table.dtype)  # (a 0-d array of the same dtype: the shift's fastest form)
    for t in range(1, nd):
        lo = t - nx + 1 if t >= nx else 0
        hi = t + 1 if t < ny else ny
        prev = sk[t - 1]
        if not lo:
            prev[0] = prev[1]          # tile row 0: U = L
        if t < ny:
            prev[t + 1] = prev[t]      # tile column 0: L = U
        cur = sk[t, 1 + lo:1 + hi]
        idx = buf[:hi - lo]
        lshift(prev[1 + lo:1 + hi], sh, idx)          # L << 2*shift (L is kept << shift)
        add(idx, prev[lo:hi], idx)                    # + U << shift
        add(idx, cur, idx)                            # + rank
        take(idx, None, cur, "wrap")
    if aligned:
        tiles = out.reshape(nby, sy, ntx, sx)
    np.right_shift(sk, shift, out=sk)
    tiles.transpose(1, 3, 0, 2)[...] = skew.reshape(ny, nx, nby, ntx)
    if not aligned:
        out[...] = pad[:bh, :w]


# ----------------------------------------------------------------------------- one helper thread

THREAD_MIN = 1 << 19  # pixels: smaller maps decode on the calling thread alone (measured: no gain at 0.4 MP)


class _Inflater:
    """A zlib stream inflated by a helper thread into ``out`` (at most ``bound`` bytes), piece by
    piece, while the calling thread uses the prefix made so far (:meth:`wait`). zlib releases the
    GIL while it inflates. Only the good case is handled here: ``ok`` is False after an error,
    an overrun, a missing end marker or bytes after it, and the caller then decodes again on its
    own thread, where each fault gets its SPEC error (a payload that fails only at its last bytes
    is so decoded twice: at most twice the time)."""

    IN = 1 << 16    # input bytes fed per call (bounds the unconsumed-tail copies)
    OUT = 1 << 18   # output bytes per call (how often the caller can move on)

    def __init__(self, data: memoryview, out: np.ndarray):
        self.out = out
        self.produced = 0
        self.done = False
        self.ok = False
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(data,), name="pillow-gcp-inflate", daemon=True)
        try:
            self._thread.start()
        except Exception:       # no thread was made (interpreter shutdown, a thread limit)
            self.done = True
            raise
        except BaseException:   # interrupted while start() waited for the new thread: it runs, stop it
            self._stop = True
            with self._cond:
                self._cond.wait_for(lambda: self.done, timeout=1.0)
            raise

    def _run(self, data: memoryview) -> None:
        ok = False
        try:
            d = zlib.decompressobj()
            pos, i, bound = 0, 0, self.out.size
            while not self._stop and not d.eof and (i < len(data) or d.unconsumed_tail):
                piece = d.unconsumed_tail or data[i:i + self.IN]
                if not d.unconsumed_tail:
                    i += self.IN
                chunk = d.decompress(piece, min(self.OUT, bound + 1 - pos))
                if pos + len(chunk) > bound:
                    break
                self.out[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                pos += len(chunk)
                with self._cond:
                    self.produced = pos
                    self._cond.notify_all()
            ok = d.eof and not d.unused_data and i >= len(data)
        except Exception:  # zlib.error, MemoryError: the caller's own decode reports it
            ok = False
        finally:
            with self._cond:
                self.ok = ok
                self.done = True
                self._cond.notify_all()

    def wait(self, upto: int) -> bool:
        """True once ``upto`` bytes exist; False if the stream stopped short of them."""
        with self._cond:
            while self.produced < upto and not self.done:
                self._cond.wait()
            return self.produced >= upto

    def finish(self) -> bool:
        """Let the helper reach the stream's end (check value included) and end; True if the stream
        was whole and exact."""
        with self._cond:
            self._cond.wait_for(lambda: self.done)
        self._thread.join()
        return self.ok

    def close(self) -> None:
        """Stop the helper at its next piece and wait until it has ended."""
        self._stop = True
        with self._cond:
            self._cond.wait_for(lambda: self.done)
        if self._thread.ident is not None:
            self._thread.join()


def _decode_overlapped(mv, pos, width, height, k, order, left, zflags, cap):
    """The decode of a complete payload with its rank streams inflated by helper threads while this
    thread scatters and decodes the bands already inflated. None when anything is unusual (an
    error in a stream, no memory, no thread): the caller then decodes on one thread, which reports it.
    ``cap``: the thread cap in force (3 or more: the flag plane gets a helper too)."""
    n = width * height
    if zflags:
        if len(mv) < pos + 4:
            return None
        fs = pos + 4
        fe = fs + streams.U32.unpack_from(mv, pos)[0]
        if fe > len(mv):
            return None
    else:
        fe = pos
    nb = (n + 7) // 8
    flags = rest = None
    try:
        try:
            decode_band, bands = _band_decoder(order, k, left, height, width)
            out = np.empty((height, width), np.uint8)
            rest = _Inflater(mv[fe:], np.empty(n, np.uint8))
            if zflags:
                ranks = np.zeros(n, np.uint8)
                if cap > 2:
                    flags = _Inflater(mv[fs:fe], np.empty(nb, np.uint8))
                    fbytes = flags.out
                else:  # the flag plane on this thread while the helper inflates the rest stream
                    got = streams.inflate("zlib", mv, fs, fe, nb, "flag stream")
                    if not got.complete or len(got.data) != nb:
                        return None
                    fbytes = np.frombuffer(got.data, np.uint8)
        except (MemoryError, RuntimeError, GCPFormatError):
            return None
        if zflags:
            s = at = 0
        else:
            ranks = rest.out
            s = 0
        for y0, y1 in bands:
            upto = y1 * width
            if zflags:
                while s < upto:
                    if flags is not None and not flags.wait(min(nb, (s + _BLOCK) // 8)):
                        return None
                    if s + _BLOCK >= n and _padding_set(fbytes, n):
                        return None
                    where = _nonzero(fbytes, s, n)
                    if not rest.wait(at + where.size):
                        return None
                    take = rest.out[at:at + where.size]
                    if where.size and int(take.max()) > k - 2:
                        return None
                    ranks[s:s + _BLOCK][where] = take + np.uint8(1)
                    at += where.size
                    s += _BLOCK
            else:
                if not rest.wait(upto) or int(ranks[s:upto].max()) >= k:
                    return None
                s = upto
            decode_band(ranks[y0 * width:upto].reshape(y1 - y0, width), out[y0:y1])
        if flags is not None and not (flags.finish() and flags.produced == nb):
            return None
        return out if rest.finish() and rest.produced == (at if zflags else n) else None
    finally:
        for helper in (rest, flags):
            if helper is not None:
                helper.close()
