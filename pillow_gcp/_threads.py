"""The package's one thread cap, shared by the CTX decoder and the quantizers.

Every helper thread the package starts is joined before the call that started it returns; no
library or process setting is changed.  ``GCP_THREADS`` or :func:`set_threads` caps them all.
"""

from __future__ import annotations

import numbers
import os

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
