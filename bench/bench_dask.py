"""Images per second of the Dask recipe (pillow_gcp.distributed) for 1 and 2 workers.

    python bench/bench_dask.py ../shared/corpus/photos --workers 1 2 --repeat 3

For each folder: a plain loop over ``convert.compress_bytes`` in this process (the baseline: no
Dask at all) and ``distributed.compress_files`` on a ``LocalCluster`` of N single-threaded worker
processes, run interleaved ``--repeat`` times; medians. The cluster is started before the clock
runs (its start-up time is reported apart). Every output is checked against the baseline's bytes.
Needs the dask extra: pip install ".[dask]".
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distributed import Client, LocalCluster  # noqa: E402

from pillow_gcp.convert import compress_bytes  # noqa: E402
from pillow_gcp.distributed import compress_files, list_files  # noqa: E402


def _params(args: argparse.Namespace) -> dict:
    params = {}
    if args.k is not None:
        params["k"] = args.k
    if args.algo is not None:
        params["algo"] = args.algo
    return params


def baseline(files: list, params: dict) -> tuple:
    t = time.perf_counter()
    outs = [compress_bytes(Path(f).read_bytes(), **params) for f in files]
    return time.perf_counter() - t, outs


def on_cluster(client: Client, files: list, root: str, params: dict) -> tuple:
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as out:
        t = time.perf_counter()
        results = compress_files(files, out, src_root=root, **params)
        dt = time.perf_counter() - t
        bad = [r for r in results if r["status"] != "done"]
        if bad:
            raise SystemExit(f"failed: {bad[:3]}")
        data = [Path(r["dst"]).read_bytes() for r in results]
    return dt, data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", default=[str(ROOT.parent / "shared" / "corpus" / "photos")])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="first N files of each folder")
    ap.add_argument("-k", type=int, default=None, help="palette size (default: as gcp compress, 256)")
    ap.add_argument("--algo", default=None)
    args = ap.parse_args(argv)
    params = _params(args)
    print(f"cpus usable: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}, "
          f"params: {params or 'defaults'}, repeat {args.repeat}")
    rows = []
    for folder in args.folders:
        files = list_files(folder)[: args.limit]
        if not files:
            print(f"{folder}: no images")
            continue
        times = {"loop": []}
        startup = {}
        clusters = {}
        for w in args.workers:
            t = time.perf_counter()
            cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR)
            clusters[w] = (cluster, Client(cluster, set_as_default=False))
            startup[w] = time.perf_counter() - t
            times[w] = []
        try:
            for _ in range(args.repeat):
                dt, ref = baseline(files, params)
                times["loop"].append(dt)
                for w in args.workers:
                    cluster, client = clusters[w]
                    with client.as_current():
                        dt, data = on_cluster(client, files, folder, params)
                    if data != ref:
                        raise SystemExit(f"{w} workers wrote other bytes than compress_bytes")
                    times[w].append(dt)
        finally:
            for cluster, client in clusters.values():
                client.close()
                cluster.close()
        n = len(files)
        loop = statistics.median(times["loop"])
        print(f"\n{folder}: {n} images")
        print(f"| run | images/s | vs loop | vs 1 worker | cluster start |")
        print(f"|---|---|---|---|---|")
        print(f"| plain loop in one process | {n / loop:.2f} | 1.00x | | |")
        one = statistics.median(times[args.workers[0]])
        for w in args.workers:
            med = statistics.median(times[w])
            print(f"| LocalCluster, {w} worker{'s' if w > 1 else ''} | {n / med:.2f} | {loop / med:.2f}x | "
                  f"{one / med:.2f}x | {startup[w]:.1f} s |")
            rows.append((folder, w, n / med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
