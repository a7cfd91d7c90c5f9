"""Backends of the engine: one protocol (:class:`Backend`), one small module per kind.

``numpy`` (default; reads the next block in a thread while BLAS works on this one),
``torch`` (``device="cuda"`` runs the block products on a GPU) and ``dask`` (graphs over the
store's guarded Zarr array, on threads, processes or a ``dask.distributed`` cluster). To add
one, implement :class:`Backend` (or subclass :class:`StreamingBackend` and say how a block
becomes a working array) and name it in :func:`make_backend`; ``tests/engine/test_backends.py``
then runs every engine operation on it against numpy.
"""

from __future__ import annotations

from ...errors import ParameterError
from .base import ArrayOps, Backend, ColumnGroups, Kernel, StreamingBackend

__all__ = ["ArrayOps", "Backend", "BACKENDS", "ColumnGroups", "Kernel", "StreamingBackend", "make_backend"]

BACKENDS = ("numpy", "torch", "dask")


def make_backend(name: str, *, block_bytes: int, device: str = "cpu", scheduler: str = "threads") -> Backend:
    """The backend called ``name`` (numpy, torch or dask), checked: an unknown device or scheduler fails here."""
    if name == "numpy":
        from .numpy import NumpyBackend

        return NumpyBackend(block_bytes)
    if name == "torch":
        from .torch import TorchBackend

        return TorchBackend(block_bytes, device)
    if name == "dask":
        from .dask import DaskBackend

        return DaskBackend(block_bytes, scheduler)
    raise ParameterError("backend", f"{name!r}: unknown backend; use one of {', '.join(BACKENDS)}")
