"""Images per second of the Dask recipe (pillow_gcp.distributed) for 1 and 2 workers.

    python bench/bench_dask.py ../shared/corpus/photos ../shared/corpus/photos-more --repeat 3

For each folder: a plain loop over ``convert.compress_bytes`` in this process (the baseline: no
Dask at all) and ``distributed.compress_files`` on a ``LocalCluster`` of N single-threaded worker
processes, run interleaved ``--repeat`` times; medians. Each worker count runs twice: with Dask's
default worker environment, and with ``MALLOC_TRIM_THRESHOLD_`` left unset (Dask sets it to 65536
in every worker process; glibc then stops raising its mmap threshold, so every large numpy array
is a fresh mmap: the conversion runs about half as fast; docs/dask.md). The clusters are started
before the clock runs (start-up time reported apart). Every output is checked against the
baseline's bytes. Needs the dask extra: pip install ".[dask]".
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dask  # noqa: E402
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
    """Wall and CPU seconds of the plain loop, and its outputs."""
    t, c = time.perf_counter(), time.process_time()
    outs = [compress_bytes(Path(f).read_bytes(), **params) for f in files]
    return time.perf_counter() - t, time.process_time() - c, outs


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


def start_clusters(workers: list) -> dict:
    """(workers, environment) -> (cluster, client, start-up seconds). The "trim unset" clusters come
    first: a default LocalCluster also writes MALLOC_TRIM_THRESHOLD_ into this process's os.environ,
    which every worker started later inherits."""
    clusters = {}
    for env in ("trim unset", "dask default"):
        for w in workers:
            unset = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
            t = time.perf_counter()
            with dask.config.set(unset) if env == "trim unset" else contextlib.nullcontext():
                cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR)
            client = Client(cluster, set_as_default=False)
            clusters[(w, env)] = (cluster, client, time.perf_counter() - t)
            seen = set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values())
            if seen != ({None} if env == "trim unset" else {"65536"}):
                raise SystemExit(f"{w} workers, {env}: workers have MALLOC_TRIM_THRESHOLD_={seen}")
    return clusters


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
    clusters = start_clusters(args.workers)
    try:
        for folder in args.folders:
            files = list_files(folder)[: args.limit]
            if not files:
                print(f"{folder}: no images")
                continue
            times: dict = {"loop": [], "loop cpu": []}
            for _ in range(args.repeat):
                dt, cpu, ref = baseline(files, params)
                times["loop"].append(dt)
                times["loop cpu"].append(cpu)
                for v, (cluster, client, _) in clusters.items():
                    with client.as_current():
                        dt, data = on_cluster(client, files, folder, params)
                    if data != ref:
                        raise SystemExit(f"{v} wrote other bytes than compress_bytes")
                    times.setdefault(v, []).append(dt)
            n = len(files)
            loop = statistics.median(times["loop"])
            cores = statistics.median(c / w for c, w in zip(times["loop cpu"], times["loop"]))
            print(f"\n{folder}: {n} images")
            print("| run | worker environment | images/s | vs loop | vs 1 worker | cluster start |")
            print("|---|---|---|---|---|---|")
            print(f"| plain loop in one process (keeps {cores:.2f} cores busy) | | {n / loop:.2f} | 1.00x | | |")
            for v, (_, _, startup) in clusters.items():
                w, env = v
                med = statistics.median(times[v])
                one = statistics.median(times[(args.workers[0], env)])
                print(f"| LocalCluster, {w} worker{'s' if w > 1 else ''} | {env} | {n / med:.2f} | "
                      f"{loop / med:.2f}x | {one / med:.2f}x | {startup:.1f} s |")
    finally:
        logging.getLogger("distributed").setLevel(logging.CRITICAL)  # workers going away is no news here
        for cluster, client, _ in clusters.values():
            client.close()
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
