"""numpy's ``default_rng(seed)`` stream for the few draws K-means makes, without ``numpy.random``.

Importing ``numpy.random`` costs 13-17 ms of start-up (a dozen Cython modules, ``secrets``,
``hashlib``), more than the whole K-means seeding of a small photo.  K-means only needs uniform
doubles and weighted single draws, so this module reproduces, bit for bit, what
``numpy.random.default_rng(seed)`` gives for them: ``SeedSequence(seed)`` -> 128-bit PCG64
(XSL-RR output) -> ``random()`` doubles (53 high bits) -> ``choice(n, p=p)`` by searching the
normalised cumulative sum.  Anything else is delegated to a real ``numpy.random.Generator`` set
to the same state (:meth:`Pcg64.numpy`), so the stream stays the one numpy would give.
``tests/test_quantize.py`` checks the streams against numpy's for many seeds.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
_MULT = (2549297995355413924 << 64) + 4865540595714422341  # PCG_DEFAULT_MULTIPLIER_128


def _seed_state(seed: int) -> Tuple[int, int]:
    """(initstate, initseq) of PCG64 seeded from ``SeedSequence(seed).generate_state(4, uint64)``."""
    entropy = []
    n = int(seed)
    while True:
        entropy.append(n & _M32)
        n >>= 32
        if not n:
            break
    hash_a = 0x43B0D7E5

    def hashmix(value: int) -> int:
        nonlocal hash_a
        value ^= hash_a
        hash_a = (hash_a * 0x931E8875) & _M32
        value = (value * hash_a) & _M32
        return value ^ (value >> 16)

    def mix(x: int, y: int) -> int:
        r = (0xCA01F9DD * x - 0x4973F715 * y) & _M32
        return r ^ (r >> 16)

    pool = [hashmix(entropy[i] if i < len(entropy) else 0) for i in range(4)]
    for s in range(4):
        for d in range(4):
            if s != d:
                pool[d] = mix(pool[d], hashmix(pool[s]))
    for s in range(4, len(entropy)):
        for d in range(4):
            pool[d] = mix(pool[d], hashmix(entropy[s]))
    hash_b = 0x8B51F9DD
    words = []
    for i in range(8):
        v = pool[i % 4] ^ hash_b
        hash_b = (hash_b * 0x58F38DED) & _M32
        v = (v * hash_b) & _M32
        words.append(v ^ (v >> 16))
    u64 = [words[2 * i] | (words[2 * i + 1] << 32) for i in range(4)]  # little-endian view
    return (u64[0] << 64) | u64[1], (u64[2] << 64) | u64[3]


class Pcg64:
    """The draws of ``numpy.random.default_rng(seed)`` that K-means uses (see the module doc)."""

    def __init__(self, seed: int) -> None:
        initstate, initseq = _seed_state(seed)
        self.inc = ((initseq << 1) | 1) & _M128
        self.state = self.inc  # state 0, one step
        self.state = (self.state + initstate) & _M128
        self.state = (self.state * _MULT + self.inc) & _M128
        self._g: Optional[Any] = None  # the numpy Generator, once a draw needed it (it then makes all draws)

    def _next64(self) -> int:
        s = self.state = (self.state * _MULT + self.inc) & _M128
        v = ((s >> 64) ^ s) & _M64
        r = s >> 122
        return ((v >> r) | (v << (64 - r))) & _M64

    def random(self, n: int) -> Any:
        """``n`` uniform doubles in [0, 1), as ``Generator.random(n)``."""
        if self._g is not None:
            return self._g.random(n)
        return np.array([(self._next64() >> 11) * (1.0 / 9007199254740992.0) for _ in range(n)])

    def choice_p(self, p: Any) -> int:
        """One index drawn with probabilities ``p`` (float64, sum 1), as ``Generator.choice(len(p), p=p)``."""
        p = np.asarray(p, np.float64)
        if self._g is not None or p.ndim != 1 or p.size == 0 or not np.isfinite(p).all() or (p < 0).any() \
                or abs(float(p.sum()) - 1.0) > np.sqrt(np.finfo(np.float64).eps):
            return int(self.numpy(lambda g: g.choice(p.size, p=p)))
        cdf = p.cumsum()
        cdf /= cdf[-1]
        return int(cdf.searchsorted(self.random(1)[0], side="right"))

    def numpy(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(g)`` with ``g`` a numpy Generator at this state; ``g`` makes every later draw
        (it may hold a buffered 32-bit half that this class does not model)."""
        if self._g is None:
            g = np.random.Generator(np.random.PCG64(0))
            g.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": self.state, "inc": self.inc},
                                     "has_uint32": 0, "uinteger": 0}
            self._g = g
        return fn(self._g)
