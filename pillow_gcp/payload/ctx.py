"""Method 1, CTX (SPEC 6.4): each index coded as its *rank* in an order of the k indices that
depends on its neighbours inside a 64x64 tile -- the index above (U), and with flag LEFT also the
index to the left (L).

Encoding: count (context, index) pairs, list for each context the indices seen there at least
``LIST_MIN`` times, most frequent first (the *table*), code each pixel as its rank in its context's
order, then write the ranks in raster order as zlib streams: a zero-flag plane plus the nonzero
ranks (flag ZFLAGS), or one byte per pixel.

Decoding: inflate, scatter, then a wavefront over the tiles: step t decodes the anti-diagonal
x + y = t of every tile at once (L and U of those pixels are on diagonal t - 1), so 127 numpy
steps whatever the image size.
"""

from __future__ import annotations

import zlib

import numpy as np

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


def default_order(k: int) -> np.ndarray:
    """(k, k) uint8: row u is the default order around u (u, u-1, u+1, ... within 0..k-1).

    Closed form with (k, k) uint8 temporaries only (wrap-around in the branch not taken is harmless):
    with m = min(u, k-1-u), rank r <= 2m alternates u - ceil(r/2) (r odd) / u + r/2 (r even); beyond
    2m the order runs on along the longer side.
    """
    u = np.arange(k, dtype=np.uint8)[:, None]
    r = np.arange(k, dtype=np.uint8)[None, :]
    m = np.minimum(u, (k - 1) - u)
    d = (r >> 1) + (r & 1)
    out = np.where(r & 1, u - d, u + d).astype(np.uint8)
    far = np.where(u < (k - 1) - u, u + (r - m), u - (r - m)).astype(np.uint8)
    beyond = r > 2 * m.astype(np.uint16)
    out[beyond] = far[beyond]
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


_PARSE_ROWS = 8192  # table entries (contexts x k) validated and sorted per step (bounded scratch)


def parse_table(buf: bytes, nctx: int, k: int, offset: int) -> np.ndarray:
    """Validate the table and return the (nctx, k) uint8 orders (``order[c, r]`` = index of rank r)."""
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
    dflt = default_order(k)
    order = np.empty((nctx, k), np.uint8)
    for c0 in range(0, nctx, k):
        order[c0:c0 + k] = dflt[:min(k, nctx - c0)]
    rows = np.flatnonzero(cnt)
    starts = np.zeros(nctx + 1, np.int64)
    np.cumsum(cnt, out=starts[1:])
    step = max(16, _PARSE_ROWS // k)
    for i in range(0, rows.size, step):
        rr = rows[i:i + step]
        c = cnt[rr].astype(np.intp)
        p = lists[int(starts[rr[0]]):int(starts[rr[-1] + 1])]  # empty lists in between hold no bytes
        ci = np.repeat(np.arange(rr.size), c)
        p = p.astype(np.intp)
        bad = p >= k
        if not bad.any():
            flat = ci * k + p
            bad = np.bincount(flat, minlength=rr.size * k)[flat] > 1
        if bad.any():
            ctx = int(rr[ci[np.argmax(bad)]])
            raise GCPFormatError(f"rank table list of context {ctx} has a position >= {k} or a repeat", offset)
        within = np.arange(ci.size) - np.repeat(np.cumsum(c) - c, c)
        key = np.empty((rr.size, k), np.int16)
        key[:] = np.arange(k, dtype=np.int16) + k
        key[ci, p] = within
        order[rr] = np.take_along_axis(order[rr], np.argsort(key, axis=1, kind="stable"), axis=1)
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
    z = (lambda raw: streams.deflate_best(raw, 9)) if search else \
        (lambda raw: streams.deflate(raw, 9, zlib.Z_HUFFMAN_ONLY))
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
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


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
    if len(fbytes) == nb and n % 8 and fbytes[-1] & ((1 << (8 - n % 8)) - 1):
        raise GCPFormatError("flag stream padding bits are not zero", fs)
    f_known = min(n, 8 * len(fbytes))
    ranks = np.zeros(n, np.uint8)
    if len(fbytes) < nb:  # cut inside the flag plane: the rest stream is not reached
        for s in range(0, f_known, _BLOCK):
            where = np.flatnonzero(np.unpackbits(fbytes[s // 8:(s + _BLOCK) // 8], count=min(_BLOCK, f_known - s)))
            if where.size:
                return ranks, s + int(where[0])
        return ranks, f_known
    r_n = int(_POPCOUNT[fbytes].sum(dtype=np.int64))
    rest = np.frombuffer(streams.exact("zlib", mv, fe, len(mv), r_n, "rest stream", partial), np.uint8)
    if rest.size and int(rest.max()) > k - 2:
        raise GCPFormatError(f"rest stream holds a rank >= {k}", fe)
    rest1 = rest + np.uint8(1)
    at = 0
    for s in range(0, n, _BLOCK):
        bits = np.unpackbits(fbytes[s // 8:(s + _BLOCK) // 8], count=min(_BLOCK, n - s)).view(bool)
        m = int(np.count_nonzero(bits))
        take = rest1[at:at + m]
        if take.size < m:  # rest stream cut short: the prefix ends at the first nonzero rank not coded
            where = np.flatnonzero(bits)
            ranks[s + where[:take.size]] = take
            return ranks, s + int(where[take.size])
        np.place(ranks[s:s + _BLOCK], bits, take)
        at += m
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


_BAND = 1 << 20  # pixels of tile rows decoded together (bounded scratch: about 3 bytes each)


def wavefront(ranks: np.ndarray, order: np.ndarray, k: int, left: bool) -> np.ndarray:
    """Indices from ranks, (h, w) uint8: the tiles of a band of tile rows in lockstep, one
    anti-diagonal per step (at most 2*TILE - 1 steps per band)."""
    h, w = ranks.shape
    S = TILE
    ntx = -(-w // S)
    nx = min(S, w)
    table = order.ravel()
    dt = np.uint16 if table.size <= 1 << 16 else np.uint32
    out = np.empty((h, w), np.uint8)
    band = max(1, _BAND // (S * S * ntx))  # tile rows per band
    for y0 in range(0, h, band * S):
        bh = min(h - y0, band * S)
        nby = -(-bh // S)
        ny = min(S, bh)
        nt = nby * ntx
        pad = np.zeros((nby * S, ntx * S), np.uint8)
        pad[:bh, :w] = ranks[y0:y0 + bh]
        tiles = pad.reshape(nby, S, ntx, S)
        nd = ny + nx - 1
        # sk[t, 1 + y, tile]: rank, then index, of tile pixel (y, t - y); sk[t, 0] is scratch (row -1)
        sk = np.zeros((nd, ny + 1, nt), np.uint8)
        for y in range(ny):
            sk[y:y + nx, 1 + y].reshape(nx, nby, ntx)[...] = tiles[:, y, :, :nx].transpose(2, 0, 1)
        np.take(table, sk[0, 1], out=sk[0, 1])  # tile corners: context 0
        buf = np.empty((ny, nt), dt)
        tmp = np.empty((ny, nt), dt) if left else None
        for t in range(1, nd):
            lo, hi = max(0, t - nx + 1), min(ny - 1, t) + 1
            prev = sk[t - 1]
            if lo == 0:
                prev[0] = prev[1]          # tile row 0: U = L
            if t < ny:
                prev[t + 1] = prev[t]      # tile column 0: L = U
            idx = buf[:hi - lo]
            np.multiply(prev[lo:hi], k, out=idx, dtype=dt)                # U * k
            if left:
                np.multiply(prev[1 + lo:1 + hi], k * k, out=tmp[:hi - lo], dtype=dt)
                idx += tmp[:hi - lo]                                      # + L * k * k
            cur = sk[t, 1 + lo:1 + hi]
            idx += cur                                                    # + rank
            np.take(table, idx, out=cur)
        for y in range(ny):
            tiles[:, y, :, :nx] = sk[y:y + nx, 1 + y].reshape(nx, nby, ntx).transpose(1, 2, 0)
        out[y0:y0 + bh] = pad[:bh, :w]
    return out
