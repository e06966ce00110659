"""Nearest-entry distance blocks: BLAS in small calls vs per-channel arithmetic vs einsum.

Usage::

    python bench/bench_blas.py [--n 200000] [--m 16 256] [--repeat 5]

For ``n`` random RGB colours and ``m`` palette entries, the argmin over ``||p||^2 - 2 x.p``
computed block by block (best of ``repeat``):

* ``sgemm 2^17``: (rows, 4) @ (4, m) SGEMM on blocks of 2^17 floats - big enough that
  OpenBLAS may run it on several threads (what the package did before, with the BLAS
  thread count forced to 1 around each call);
* ``sgemm small``: blocks of at most 2^18 multiply-adds, which OpenBLAS runs on the
  calling thread (what ``pillow_gcp.quantizers.nearest`` does now, no global setting);
* ``per-channel``: the same distances with three broadcast multiply-adds (no BLAS);
* ``einsum``: ``np.einsum("ik,kj->ij")`` (numpy's own loop, no BLAS).

Nothing here changes BLAS settings; run it under different loads to see the threaded
variant's sensitivity.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def run(X, P, step, fn):
    out = np.empty(X.shape[0], np.int64)
    for s in range(0, X.shape[0], step):
        out[s:s + step] = fn(X[s:s + step])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--m", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (a.n, 3)).astype(np.float32)
    for m in a.m:
        P = rng.integers(0, 256, (m, 3)).astype(np.float32)
        Pa = np.vstack([-2 * P.T, (P * P).sum(1)]).astype(np.float32)
        pn = (P * P).sum(1).astype(np.float32)
        P2 = (-2 * P).astype(np.float32)

        def blas(Xc):
            Xa = np.ones((Xc.shape[0], 4), np.float32)
            Xa[:, :3] = Xc
            return np.argmin(Xa @ Pa, axis=1)

        def chan(Xc):
            D = np.multiply.outer(Xc[:, 0], P2[:, 0])
            D += pn
            for c in (1, 2):
                D += np.multiply.outer(Xc[:, c], P2[:, c])
            return np.argmin(D, axis=1)

        def ein(Xc):
            D = np.einsum("ik,kj->ij", Xc, P2.T)
            D += pn
            return np.argmin(D, axis=1)

        variants = [("sgemm 2^17 floats", (1 << 17) // m, blas), ("sgemm <= 2^18 MACs", (1 << 16) // m, blas),
                    ("per-channel", (1 << 16) // m, chan), ("einsum", (1 << 16) // m, ein)]
        ref = None
        res = []
        for name, step, fn in variants:
            best = float("inf")
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                out = run(X, P, max(8, step), fn)
                best = min(best, time.perf_counter() - t0)
            ref = out if ref is None else ref
            assert np.array_equal(out, ref)
            res.append(f"{name} {best * 1000:.1f} ms")
        print(f"n={a.n} m={m}: " + " | ".join(res))


if __name__ == "__main__":
    main()
