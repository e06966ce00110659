"""The package's one thread cap, shared by the CTX decoder and the quantizers, and the quantizers'
way of splitting a large search over threads (:func:`split_rows`, :func:`run_tasks`).

Every helper thread the package starts is joined before the call that started it returns; no
library or process setting is changed.  ``GCP_THREADS`` or :func:`set_threads` caps them all.
"""

from __future__ import annotations

import numbers
import os
import threading

_threads = None  # set_threads(); None: GCP_THREADS or the CPUs this process may use


def set_threads(n) -> None:
    """Cap the threads a call may use, the calling thread included (1 = the calling thread only).

    A CTX decode with 2 uses one helper thread that inflates the rank stream (the flag plane's rest
    stream, or the plain ranks) while the caller decodes the bands already inflated; with 3 or more
    also a helper for the flag plane.  zlib inflates without the GIL.  The quantizers split their
    large nearest-entry searches (and K-means' distances to moved centres) over
    ``min(cap, CPUs)`` threads; the results are the same bit for bit.  Helpers end before the
    call returns.  The cap is per call: calls made at once from several threads each get it.
    ``None`` restores the default: the environment variable ``GCP_THREADS`` if it holds an integer
    (0 counts as 1), else 3 when this process may use 2 or more CPUs and 1 otherwise."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise ValueError(f"threads must be None or an int >= 1, got {n!r}")
    _threads = None if n is None else int(n)


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads() -> int:
    """The thread cap now in force (see :func:`set_threads`)."""
    if _threads is not None:
        return _threads
    env = os.environ.get("GCP_THREADS", "").strip()
    if env.isdigit():
        return max(1, int(env))
    return 3 if cpus() >= 2 else 1


#: multiply-adds (rows x entries) from which a search is split over threads (m = 256: 8192
#: rows, ~2 ms on one thread).  Below it the thread start-up (~0.1 ms), the join and the GIL
#: hand-overs cost about what the second core saves, in wall-clock time, and add CPU time.
PARALLEL_MIN = 1 << 21

_local = threading.local()  # .busy: this thread is already one of a split's workers


def workers(work: float) -> int:
    """Threads (the calling one included) for a job of ``work`` multiply-adds: 1 below
    :data:`PARALLEL_MIN`, inside a split's worker, or when the cap or the CPUs allow one."""
    if work < PARALLEL_MIN or getattr(_local, "busy", False):
        return 1
    return max(1, min(threads(), cpus()))


def run_tasks(tasks, nt: int) -> None:
    """Call every function of ``tasks`` (no arguments) once, on ``nt`` threads at most.

    The calling thread is one of them; the helpers take tasks from the same list in order and
    are joined before this returns (also when a task raises: the first error is re-raised, a
    KeyboardInterrupt or SystemExit before any other).  A helper that cannot be started is not
    needed: the others take its share.  Inside a task, :func:`workers` returns 1, so tasks do not
    split again.
    """
    tasks = list(tasks)
    nt = min(int(nt), len(tasks))
    if nt <= 1:
        for t in tasks:
            t()
        return
    lock = threading.Lock()
    nxt = [0]
    errors = []

    def work():
        busy = getattr(_local, "busy", False)
        _local.busy = True
        try:
            while not errors:
                with lock:
                    i = nxt[0]
                    nxt[0] = i + 1
                if i >= len(tasks):
                    return
                tasks[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            errors.append(e)
        finally:
            _local.busy = busy

    helpers = []
    try:
        for _ in range(nt - 1):
            t = threading.Thread(target=work, name="pillow-gcp-split", daemon=True)
            helpers.append(t)  # before start(): a Ctrl-C inside start() still joins it below
            try:
                t.start()
            except RuntimeError:  # no thread to be had: the calling thread does the rest
                helpers.pop()
                break
        work()
    except BaseException as e:  # raised while starting the helpers: they take no further task
        errors.append(e)
        raise
    finally:
        interrupted = None
        for t in helpers:
            while t.is_alive():
                try:
                    t.join()
                except BaseException as e:  # noqa: BLE001 - e.g. Ctrl-C during the join: join, then raise it
                    interrupted = interrupted or e
                    errors.append(e)  # the helpers take no further task
        if interrupted is not None:
            raise interrupted
    if errors:
        # a Ctrl-C or exit of the calling thread outranks a task's error that came first
        raise next((e for e in errors if not isinstance(e, Exception)), errors[0])


def _ranges(n: int, unit: int, nt: int):
    """``nt`` (or fewer) consecutive ranges ``(lo, hi)`` covering ``range(n)``, every ``lo`` a
    multiple of ``unit``, of about equal size."""
    blocks = -(-n // unit)
    nt = max(1, min(nt, blocks))
    cuts = [unit * (blocks * i // nt) for i in range(nt)] + [n]
    return [(cuts[i], cuts[i + 1]) for i in range(nt) if cuts[i] < cuts[i + 1]]


#: ranges per thread: a helper that starts late (or a core that is busy) leaves more to the others
_PARTS = 2


def split_rows(n: int, unit: int, work: float, fn) -> None:
    """``fn(lo, hi)`` over :func:`_ranges` of ``range(n)`` (``_PARTS`` per thread, each ``lo`` a
    multiple of ``unit``), on :func:`workers` threads for a job of ``work`` multiply-adds."""
    nt = workers(work)
    if nt <= 1:
        fn(0, n)
        return
    run_tasks([lambda lo=lo, hi=hi: fn(lo, hi) for lo, hi in _ranges(n, unit, nt * _PARTS)], nt)
