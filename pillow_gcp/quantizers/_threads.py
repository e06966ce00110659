"""Keep OpenBLAS single-threaded while the quantizer runs (stdlib ctypes only).

The quantizer issues thousands of small, cache-sized matrix products.  A threaded
BLAS gains nothing on them, and its worker threads spin between calls, which on a
loaded or small machine makes the whole call several times slower.  ``single_thread()``
sets the number of OpenBLAS threads to 1 for the duration of a ``with`` block and
restores the previous value.  When no OpenBLAS library with a known thread API is
loaded (other platforms or BLAS builds), it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
              "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
              "openblas_get_num_threads64_", "openblas_get_num_threads")

_api = None
_lock = threading.Lock()
_depth = 0
_saved = None


def _find_api():
    """(set, get) ctypes functions of the loaded OpenBLAS, or (None, None)."""
    paths = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                p = line.rsplit(None, 1)[-1]
                if "openblas" in p.lower() and p.endswith(".so") or ".so." in p and "openblas" in p.lower():
                    if p not in paths:
                        paths.append(p)
    except OSError:
        return None, None
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for sn, gn in zip(_SET_NAMES, _GET_NAMES):
            s = getattr(lib, sn, None)
            g = getattr(lib, gn, None)
            if s is not None and g is not None:
                s.argtypes = [ctypes.c_int]
                s.restype = None
                g.argtypes = []
                g.restype = ctypes.c_int
                return s, g
    return None, None


@contextlib.contextmanager
def single_thread():
    """Context manager: OpenBLAS uses one thread inside the block (re-entrant)."""
    global _api, _depth, _saved
    with _lock:
        if _api is None:
            import numpy  # noqa: F401  (make sure numpy's BLAS is loaded)
            _api = _find_api()
        setter, getter = _api
        if setter is not None and _depth == 0:
            try:
                _saved = int(getter())
                if _saved != 1:
                    setter(1)
            except Exception:  # pragma: no cover - defensive: never break quantizing
                _saved = None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if setter is not None and _depth == 0 and _saved is not None and _saved != 1:
                try:
                    setter(_saved)
                except Exception:  # pragma: no cover
                    pass
