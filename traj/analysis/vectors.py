"""(N,) arrays of an output Zarr group, filled block by block, each chunk written once and whole.

An analysis's pass over the store yields its per-weight results (labels, coefficients) for one
column block at a time, and blocks do not line up with the output's chunks. Writing each block
straight into a Zarr array would read, merge and rewrite every chunk a block edge cuts, and small
chunks would make one file per few thousand weights. :class:`ChunkedVectors` keeps the part of a
chunk written so far in memory (a chunk per array, whatever N) and writes the chunk when it is
complete, so the group is written at disk speed in chunks of :data:`CHUNK` values. Every chunk is
written, fill-valued ones too (:data:`~traj.store.derived.EVERY_CHUNK`), so the chunk files back the
arrays' shape when the file is read back (:class:`~traj.store.derived.DerivedFile`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..store.derived import EVERY_CHUNK

__all__ = ["CHUNK", "ChunkedVectors"]

#: Values per chunk of an output vector (8 MiB of float64).
CHUNK = 1 << 20


def _compressors() -> list[Any]:
    """Blosc LZ4 with byte shuffle: per-weight coefficients are near-random float64 that zstd shrinks
    by ~6 % at a sixth of the speed; labels and masks still compress well (a standard Zarr v3 codec)."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


class ChunkedVectors:
    """Arrays ``name -> dtype`` of length ``n`` in the Zarr ``group``, written through :meth:`write`.

    Blocks may come in any order; a chunk is written when all of its values have arrived, and
    :meth:`close` writes the chunks left incomplete (their missing values stay at the fill value).
    """

    def __init__(self, group: Any, arrays: Mapping[str, Any], n: int, *, chunk: int = CHUNK) -> None:
        self.n = int(n)
        self.chunk = max(1, min(self.n, int(chunk)))
        self.arrays = {name: group.create_array(name, shape=(self.n,), chunks=(self.chunk,), dtype=dtype,
                                                compressors=_compressors(), dimension_names=("param",),
                                                config=dict(EVERY_CHUNK))
                       for name, dtype in arrays.items()}
        self._pending: dict[tuple[str, int], list[Any]] = {}  # (name, chunk) -> [buffer, values still missing]

    def __getitem__(self, name: str) -> Any:
        return self.arrays[name]

    def write(self, name: str, start: int, values: np.ndarray) -> None:
        """Values of array ``name`` at ``start:start + len(values)``."""
        target = self.arrays[name]
        stop = start + len(values)
        first, last = start // self.chunk, (stop - 1) // self.chunk
        for c in range(first, last + 1):
            lo, hi = c * self.chunk, min(self.n, (c + 1) * self.chunk)
            a, b = max(lo, start), min(hi, stop)
            if a == lo and b == hi:
                target[lo:hi] = values[lo - start : hi - start]
                continue
            entry = self._pending.setdefault((name, c), [np.zeros(hi - lo, dtype=target.dtype), hi - lo])
            entry[0][a - lo : b - lo] = values[a - start : b - start]
            entry[1] -= b - a
            if entry[1] <= 0:
                target[lo:hi] = entry[0]
                del self._pending[(name, c)]

    def close(self) -> None:
        """Write every chunk still incomplete."""
        for (name, c), (buffer, _) in sorted(self._pending.items()):
            lo = c * self.chunk
            self.arrays[name][lo : lo + buffer.size] = buffer
        self._pending.clear()
