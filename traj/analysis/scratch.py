"""Vectors of length N kept on disk while an analysis runs (issue 23: memory does not grow with the model).

:class:`ScratchArrays` is a private temporary directory of raw little-endian files, one per
vector (θ, a score, a mask), written block by block and read back in pieces of :data:`PIECE`
coordinates with ``np.fromfile`` (no memory map: an address-space limit counts mapped files).
The directory is deleted with the object. Nothing here is a derived file of traj's: outputs
(``masks.zarr``, exports) are written from it by :mod:`traj.analysis.masks`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["PIECE", "ScratchArrays"]

#: Coordinates per piece read back (8 MiB of float64).
PIECE = 1 << 20


class ScratchArrays:
    """Named (N,) vectors in a temporary directory (``dir``: where it is made; default the system's)."""

    def __init__(self, n: int, *, dir: str | os.PathLike[str] | None = None) -> None:  # noqa: A002 - tempfile's name
        self.path = Path(tempfile.mkdtemp(prefix=".traj-scratch-", dir=dir))
        # deleted with the object, or at exit (no ResourceWarning: going with the object is the contract)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self.n = int(n)
        self._dtypes: dict[str, np.dtype] = {}

    def __repr__(self) -> str:
        return f"ScratchArrays(n={self.n}, names={sorted(self._dtypes)})"

    def close(self) -> None:
        """Delete the directory now (it goes with the object otherwise)."""
        self._cleanup()

    def __contains__(self, name: str) -> bool:
        return name in self._dtypes

    def _file(self, name: str) -> Path:
        return self.path / f"{name}.bin"

    def create(self, name: str, dtype: np.dtype | str) -> None:
        """An array of zeros (a sparse file: nothing is written until a block is)."""
        dtype = np.dtype(dtype).newbyteorder("<")
        with open(self._file(name), "wb") as f:
            f.truncate(self.n * dtype.itemsize)
        self._dtypes[name] = dtype

    def write(self, name: str, start: int, values: np.ndarray) -> None:
        """Write ``values`` at coordinates ``start:start + len(values)``."""
        dtype = self._dtypes[name]
        with open(self._file(name), "r+b") as f:
            f.seek(start * dtype.itemsize)
            f.write(np.ascontiguousarray(values, dtype=dtype).data)  # a view, not a copy (blocks can be 64 MiB)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Coordinates ``start:stop`` (default to the end) of an array."""
        dtype = self._dtypes[name]
        stop = self.n if stop is None else stop
        values = np.fromfile(self._file(name), dtype=dtype, count=stop - start, offset=start * dtype.itemsize)
        return values.astype(dtype.newbyteorder("="), copy=False)

    def pieces(self, start: int = 0, stop: int | None = None, size: int | None = None) -> Iterator[tuple[int, int]]:
        """``(lo, hi)`` of consecutive pieces of at most ``size`` (default :data:`PIECE`) coordinates covering
        ``start:stop``."""
        stop = self.n if stop is None else stop
        size = size or PIECE
        for lo in range(start, stop, size):
            yield lo, min(stop, lo + size)

    def append_writer(self, name: str, dtype: np.dtype | str) -> _Appender:
        """A writer that fills an array from the start, piece after piece (masks)."""
        self._dtypes[name] = np.dtype(dtype).newbyteorder("<")
        return _Appender(self._file(name), self._dtypes[name])


class _Appender:
    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._dtype = dtype

    def write(self, values: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(values, dtype=self._dtype).data)

    def close(self) -> None:
        self._file.close()
