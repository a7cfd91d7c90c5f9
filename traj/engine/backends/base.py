"""What every backend implements, and the streaming loop the numpy and torch backends share.

A backend computes the engine's reductions over a run store's blocks. The engine checks and
normalises the arguments (windows, column groups, indices, coefficient shapes) once and hands
a backend only well-formed ones; a backend reads through :class:`~traj.store.RunStore` only
(``iter_blocks``, or the guarded ``zarr_array`` for dask), so every read passes the store's
checks of damaged chunks.

Kernels given to ``map_blocks`` are written once for every backend against :class:`ArrayOps`:
the block arrives in the backend's array type (a numpy array, a torch tensor on a device) with
the operations that work on it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ...progress import Progress
from ...store import RunStore

__all__ = ["ArrayOps", "Backend", "ColumnGroups", "Kernel", "Products", "StreamingBackend", "blas_threads",
           "intersections", "span"]

#: name -> sorted, non-empty column slices of θ (a layer, a set of layers, everything)
ColumnGroups = Mapping[str, Sequence[slice]]
#: name -> (left rows, right rows, M): the products G[left, right] @ M of ``gram_times``
Products = Mapping[str, tuple[slice, slice, np.ndarray]]


class ArrayOps(Protocol):
    """The array operations a kernel may use on a block, in the backend's array type."""

    def asarray(self, array: np.ndarray) -> Any:
        """A numpy array as the backend's float64 (or complex128) array."""

    def to_numpy(self, array: Any) -> np.ndarray: ...

    def take(self, array: Any, index: np.ndarray, axis: int) -> Any: ...

    def sum(self, array: Any, axis: int | None = None) -> Any: ...

    def mean(self, array: Any, axis: int) -> Any: ...

    def sum_squares(self, array: Any, axis: int) -> Any:
        """Σ x² along ``axis``, without an array-sized temporary where the backend can."""

    def isfinite(self, array: Any) -> Any: ...

    def all(self, array: Any, axis: int) -> Any: ...

    def where(self, condition: Any, array: Any, other: float) -> Any: ...


#: ``kernel(block, ops)`` -> anything picklable (dask may run it in another process), never a view of
#: ``block`` (a backend may reuse the block's memory for the next one)
Kernel = Callable[[Any, ArrayOps], Any]


class Backend(Protocol):
    """The engine's operations on one kind of hardware or scheduler (see :class:`~traj.engine.Engine`)."""

    label: str

    def gram(self, store: RunStore, rows: slice, groups: ColumnGroups, progress: Progress | None
             ) -> dict[str, np.ndarray]: ...

    def collect(self, store: RunStore, rows: slice, columns: slice | np.ndarray, array: str,
                progress: Progress | None) -> np.ndarray: ...

    def map_blocks(self, store: RunStore, rows: slice, kernel: Kernel, array: str, progress: Progress | None
                   ) -> Iterator[tuple[slice, Any]]: ...

    def gram_times(self, store: RunStore, rows: slice, columns: Sequence[slice], products: Products,
                   progress: Progress | None) -> tuple[dict[str, np.ndarray], float]: ...

    def project_blocks(self, store: RunStore, rows: slice, coefficients: np.ndarray, columns: slice,
                       progress: Progress | None) -> Iterator[tuple[slice, np.ndarray]]: ...

    def project(self, store: RunStore, rows: slice, coefficients: np.ndarray, columns: slice,
                progress: Progress | None) -> np.ndarray: ...

    def row_norms(self, store: RunStore, rows: slice, groups: ColumnGroups, array: str, progress: Progress | None
                  ) -> tuple[np.ndarray, np.ndarray]: ...


class StreamingBackend:
    """Reductions as one pass over the store's column blocks, read ahead in a thread.

    Subclasses say how a block becomes a working array (:meth:`work`), how a result comes
    back (:meth:`to_numpy`) and which :class:`ArrayOps` a kernel gets; the loops are here.
    """

    label = "streaming"
    ops: ArrayOps

    def __init__(self, block_bytes: int) -> None:
        self.block_bytes = block_bytes

    # ------------------------------------------------------------------ array hooks
    def work(self, array: np.ndarray) -> Any:
        raise NotImplementedError

    def to_numpy(self, array: Any) -> np.ndarray:
        raise NotImplementedError

    def zeros(self, shape: tuple[int, int]) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ blocks
    def width(self, store: RunStore, rows: slice) -> int:
        """Block width for this window under the block budget."""
        return store.block_columns(rows.stop - rows.start, block_bytes=self.block_bytes)

    def blocks(self, store: RunStore, rows: slice, columns: slice | None, progress: Progress | None,
               array: str = "params") -> Iterator[tuple[slice, np.ndarray]]:
        """The store's column blocks of a window, read ahead in a thread (each chunk once).

        Whole chunk columns up to 4 blocks are read at once (peak memory ~ 2x that + a block).
        """
        return _prefetch(store.iter_blocks(rows=rows, columns=columns, progress=progress, array=array,
                                           block_columns=self.width(store, rows), read_bytes=4 * self.block_bytes))

    # ------------------------------------------------------------------ operations
    def gram(self, store: RunStore, rows: slice, groups: ColumnGroups, progress: Progress | None
             ) -> dict[str, np.ndarray]:
        n = rows.stop - rows.start
        out = {name: self.zeros((n, n)) for name in groups}
        for cols, block in self.blocks(store, rows, span(groups), progress):
            b = self.work(block)
            for name, slices in groups.items():
                for lo, hi in intersections(cols, slices):
                    part = b[:, lo - cols.start : hi - cols.start]
                    out[name] += part @ part.T
        return {name: symmetric(self.to_numpy(g)) for name, g in out.items()}

    def collect(self, store: RunStore, rows: slice, columns: slice | np.ndarray, array: str,
                progress: Progress | None) -> np.ndarray:
        n_rows = rows.stop - rows.start
        if isinstance(columns, slice):
            out = np.empty((n_rows, columns.stop - columns.start))
            for cols, block in self.blocks(store, rows, columns, progress, array):
                out[:, cols.start - columns.start : cols.stop - columns.start] = block
            return out
        out = np.empty((n_rows, columns.size))
        if not columns.size:
            return out
        order = np.argsort(columns, kind="stable")
        wanted = columns[order]
        if columns.size * n_rows * store.dtype.itemsize <= self.block_bytes:
            # a few columns (a block's worth at most): only the chunks holding them are read, each once.
            # Streaming every block between the first and the last read the whole store for a few
            # scattered samples (5.4 s of `traj dmd`'s 23 s on 10M x 200)
            out[:, order] = store.read(rows, wanted, array=array)
            if progress is not None:
                progress(1, 1)
            return out
        for cols, block in self.blocks(store, rows, slice(int(wanted[0]), int(wanted[-1]) + 1), progress, array):
            lo, hi = np.searchsorted(wanted, [cols.start, cols.stop])
            if hi > lo:
                out[:, order[lo:hi]] = block[:, wanted[lo:hi] - cols.start]
        return out

    def map_blocks(self, store: RunStore, rows: slice, kernel: Kernel, array: str, progress: Progress | None
                   ) -> Iterator[tuple[slice, Any]]:
        for cols, block in self.blocks(store, rows, None, progress, array):
            yield cols, kernel(self.work(block), self.ops)

    def gram_times(self, store: RunStore, rows: slice, columns: Sequence[slice], products: Products,
                   progress: Progress | None) -> tuple[dict[str, np.ndarray], float]:
        mats = {name: (left, right, self.work(m)) for name, (left, right, m) in products.items()}
        out: dict[str, Any] = {name: None for name in mats}
        trace = 0.0
        for cols, block in self.blocks(store, rows, span({"": columns}), progress):
            b = self.work(block)
            for lo, hi in intersections(cols, columns):
                part = b[:, lo - cols.start : hi - cols.start]
                trace += self.sum_of_squares(part)
                for name, (left, right, m) in mats.items():
                    p = self.like(part, m)
                    value = p[left] @ (p[right].T @ m)
                    out[name] = value if out[name] is None else out[name] + value
        return {name: self.to_numpy(v) for name, v in out.items()}, trace

    def project_blocks(self, store: RunStore, rows: slice, coefficients: np.ndarray, columns: slice,
                       progress: Progress | None) -> Iterator[tuple[slice, np.ndarray]]:
        c = self.work(coefficients)
        ct = c.T
        for cols, block in self.blocks(store, rows, columns, progress):
            # (Cᵀ B)ᵀ, not Bᵀ C: for width 2M, T = 4, k = 3, 19 ms against 25 ms on 2 idle cores, and 47 ms
            # against 2.2 s on 2 busy ones (OpenBLAS threads the tall product, and its threads then wait)
            yield cols, self.to_numpy(ct @ self.like(self.work(block), c)).T

    def project(self, store: RunStore, rows: slice, coefficients: np.ndarray, columns: slice,
                progress: Progress | None) -> np.ndarray:
        dtype = np.complex128 if np.iscomplexobj(coefficients) else np.float64
        out = np.empty((columns.stop - columns.start, coefficients.shape[1]), dtype=dtype)
        for cols, part in self.project_blocks(store, rows, coefficients, columns, progress):
            out[cols.start - columns.start : cols.stop - columns.start] = part
        return out

    def row_norms(self, store: RunStore, rows: slice, groups: ColumnGroups, array: str, progress: Progress | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        n = rows.stop - rows.start
        squares = np.zeros((n, len(groups)))
        finite = np.ones(n, dtype=bool)
        for cols, block in self.blocks(store, rows, span(groups), progress, array):
            b = self.work(block)
            finite &= self.to_numpy(self.ops.all(self.ops.isfinite(b), 1))
            sq = b * b
            for j, slices in enumerate(groups.values()):
                for lo, hi in intersections(cols, slices):
                    squares[:, j] += self.to_numpy(self.ops.sum(sq[:, lo - cols.start : hi - cols.start], 1))
        return squares, finite

    def sum_of_squares(self, part: Any) -> float:
        """Σ part², for tr(G) (a backend may do it without a temporary the size of the block)."""
        return float((part * part).sum())

    def like(self, block: Any, other: Any) -> Any:
        """``block`` in a dtype that multiplies with ``other`` (complex coefficients: complex)."""
        return block


# ---------------------------------------------------------------------- helpers
def symmetric(g: np.ndarray) -> np.ndarray:
    return (g + g.T) / 2


def span(groups: ColumnGroups) -> slice:
    """The smallest column range holding every group."""
    return slice(min(s.start for v in groups.values() for s in v), max(s.stop for v in groups.values() for s in v))


def intersections(cols: slice, slices: Sequence[slice]) -> Iterator[tuple[int, int]]:
    """The (lo, hi) column ranges where a block ``cols`` meets each of ``slices``."""
    for s in slices:
        lo, hi = max(cols.start, s.start), min(cols.stop, s.stop)
        if hi > lo:
            yield lo, hi


_DONE = object()


def _prefetch(blocks: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Read the next block(s) in a thread while the caller computes on this one."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    error: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in blocks:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # re-raised in the consumer
            error.append(exc)
        finally:
            q.put(_DONE)

    thread = threading.Thread(target=worker, daemon=True, name="traj-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            yield item
        if error:
            raise error[0]
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def blas_threads(one: bool = True) -> Any:
    """A context with numpy's BLAS held to one thread (when ``one``; a no-op otherwise or without
    threadpoolctl): a dask task beside its siblings, or the live monitor's small fits beside training.

    The thread pools are found once per process (reading the process's loaded libraries takes
    about 2 ms, more than a live fit's own work) and found again only if a BLAS was loaded since."""
    import contextlib

    if one:
        controller = _blas_controller()
        if controller is not None:
            return controller.limit(limits=1, user_api="blas")
    return contextlib.nullcontext()


_CONTROLLER: list[Any] = []  # [ThreadpoolController, len(sys.modules) when it was made]


def _blas_controller() -> Any:
    """threadpoolctl's view of this process's thread pools, made again only after new imports
    (a BLAS is loaded with an extension module); None without threadpoolctl."""
    import sys

    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's usual stack
        return None
    if not _CONTROLLER or _CONTROLLER[1] != len(sys.modules):
        _CONTROLLER[:] = [ThreadpoolController(), len(sys.modules)]
    return _CONTROLLER[0]
