"""A fixed random sketch of a snapshot: p numbers that keep what DMD needs of N (docs/methods.md §7.1).

:class:`Sketch` is the linear map S: Rᴺ → Rᵖ of a sparse sign projection with one non-zero per
coordinate (a count sketch): coordinate i goes to bucket i mod p with the sign s(⌊i/p⌋) = ±1,
the signs drawn from a counter-based hash of (seed, ⌊i/p⌋), so nothing of size N is stored and
any block of coordinates is sketched on its own. Applying it is one matrix-vector product over
the snapshot read once (N multiply-adds), block by block in float64. E‖Sx‖² = ‖x‖² for every x.

Where N ≤ p the snapshot itself is kept (S = I). Compressed DMD (Brunton, Proctor, Tu & Kutz
2015; Erichson, Mathelin, Kutz & Brunton 2019) rests on one fact: when S is injective on the span
of a window's snapshots (rank SD = rank D, true for almost every S once p ≥ the window's length),
exact DMD of SD at full rank has exactly the eigenvalues of exact DMD of D. A truncated fit keeps
the directions the sketch's singular values rank first, which agree with D's to O(1/√p).
"""

from __future__ import annotations

import numpy as np

from ..store.dtypes import decode

__all__ = ["Sketch"]

#: Snapshot values sketched per block (8 MiB of float64).
BLOCK_VALUES = 1 << 20

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a well-mixed 64-bit hash of each element (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        z = x * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class Sketch:
    """S: Rᴺ → Rᵖ, fixed by ``seed`` (see the module's docstring); ``size`` = p."""

    def __init__(self, n: int, size: int, *, seed: int = 0) -> None:
        self.n = int(n)
        self.exact = self.n <= int(size)
        self.size = self.n if self.exact else int(size)
        self.seed = int(seed)
        self._key = _splitmix(np.array([self.seed], dtype=np.uint64))[0]

    def __repr__(self) -> str:
        return f"Sketch(n={self.n}, size={self.size}, seed={self.seed}{', exact' if self.exact else ''})"

    @property
    def flops(self) -> int:
        """Multiply-adds per snapshot (0 where the snapshot is kept as it is)."""
        return 0 if self.exact else self.n

    def signs(self, first_row: int, stop_row: int) -> np.ndarray:
        """s(r) = ±1 for rows ``first_row:stop_row`` of the (N/p, p) view, float64."""
        rows = np.arange(first_row, stop_row, dtype=np.uint64)
        bits = _splitmix(rows ^ self._key) >> np.uint64(63)
        return 1.0 - 2.0 * bits.astype(np.float64)

    def apply(self, values: np.ndarray, dtype: str = "float64") -> np.ndarray:
        """S x for a snapshot ``values`` of length N, as stored (``dtype``: its snapshot dtype, e.g.
        uint16 bit patterns for "bfloat16"); float64 of length p."""
        values = np.asarray(values).reshape(-1)
        if values.size != self.n:
            raise ValueError(f"a snapshot of {values.size} values, the sketch takes {self.n}")
        if self.exact:
            return np.asarray(decode(values, dtype), dtype=np.float64)
        p = self.size
        full = self.n // p
        out = np.zeros(p)
        step = max(1, BLOCK_VALUES // p)
        for r0 in range(0, full, step):
            r1 = min(full, r0 + step)
            block = np.asarray(decode(values[r0 * p : r1 * p], dtype), dtype=np.float64).reshape(r1 - r0, p)
            out += np.einsum("i,ij->j", self.signs(r0, r1), block)  # not BLAS: no thread pool beside training's
        tail = self.n - full * p
        if tail:
            out[:tail] += self.signs(full, full + 1)[0] * np.asarray(decode(values[full * p :], dtype), dtype=np.float64)
        return out
