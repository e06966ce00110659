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


_LOOP = """
import sys, time
from pathlib import Path
from pillow_gcp.convert import compress_bytes
data = [Path(f).read_bytes() for f in sys.argv[1:]]
compress_bytes(data[0])
t = time.perf_counter()
for d in data:
    compress_bytes(d)
print((time.perf_counter() - t) / len(data))
"""


def env_effect(files: list, repeat: int) -> None:
    """Seconds per image of a plain loop in a fresh process, without and with Dask's worker setting
    MALLOC_TRIM_THRESHOLD_=65536 (interleaved; no Dask involved)."""
    import subprocess

    times: dict = {"unset": [], "65536": []}
    for _ in range(repeat):
        for key in times:
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
            if key != "unset":
                env["MALLOC_TRIM_THRESHOLD_"] = key
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            out = subprocess.run([sys.executable, "-c", _LOOP, *files], env=env, check=True, capture_output=True,
                                 text=True).stdout
            times[key].append(float(out))
    a, b = statistics.median(times["unset"]), statistics.median(times["65536"])
    print(f"plain loop in a fresh process, {len(files)} images: {a:.3f} s/image with MALLOC_TRIM_THRESHOLD_ unset, "
          f"{b:.3f} s/image with MALLOC_TRIM_THRESHOLD_=65536 ({b / a:.2f}x the time)")


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
    ap.add_argument("--env-effect", action="store_true",
                    help="only time a plain loop in fresh processes with and without MALLOC_TRIM_THRESHOLD_=65536")
    args = ap.parse_args(argv)
    params = _params(args)
    print(f"cpus usable: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}, "
          f"params: {params or 'defaults'}, repeat {args.repeat}")
    if args.env_effect:
        for folder in args.folders:
            print(folder)
            env_effect(list_files(folder)[: args.limit], args.repeat)
        return 0
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
