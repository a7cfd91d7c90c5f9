"""The engine: streaming reductions over a run store (Gram matrices, D·C products, selected columns).

In the notation of docs/methods.md D = [θ0 … θT] is N×(T+1); the store holds Dᵀ (time-major), so a
column block of the store is B = D[rows, :]ᵀ of shape (T+1, width), and

    G = DᵀD = Σ_blocks B Bᵀ            (T+1)×(T+1), float64
    D·C     = stacked blocks Bᵀ C      N×k, one block of rows of D·C per column block.

Every reduction runs block by block, so memory is bounded by the block size, never by N.
Analyses never read a store themselves: they ask the engine. The engine checks its arguments
once and hands them to its backend (:mod:`traj.engine.backends`), chosen once when the engine
is made; every backend reads only through :class:`~traj.store.RunStore`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import check_float, check_int
from ..errors import NotApplicableError, ParameterError
from ..progress import Progress
from ..store import RunStore
from ..store.run_store import DEFAULT_BLOCK_BYTES
from .backends import BACKENDS, Backend, ColumnGroups, Kernel, make_backend

__all__ = ["Engine", "BACKENDS", "ColumnGroups", "MAX_BLOCK_BYTES", "RowNorms", "block_bytes_from_mib"]

#: Largest working block one may ask for (1 TiB); peak memory is a small multiple of the block.
MAX_BLOCK_BYTES = 1 << 40
MIN_BLOCK_BYTES = 1024


@dataclass(frozen=True)
class RowNorms:
    """Per snapshot of a window, the squared norm of each column group and whether the snapshot is finite.

    Attributes
    ----------
    names : tuple of str
        The groups, in the order of ``squares``' columns.
    squares : ndarray of shape (T_w, n_groups)
        Σ θᵢ(k)² over each group's columns, accumulated in float64 (not finite where θ is not).
    finite : ndarray of bool, shape (T_w,)
        False where snapshot k holds a NaN or Inf in any group's columns.
    start : int
        The window's first snapshot.
    """

    names: tuple[str, ...]
    squares: np.ndarray
    finite: np.ndarray
    start: int = 0

    @property
    def norms(self) -> np.ndarray:
        """‖θ_group(k)‖₂, shape (T_w, n_groups)."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(self.squares)

    @property
    def nonfinite_rows(self) -> np.ndarray:
        """Snapshot indices (in the store) of the snapshots that hold NaN or Inf."""
        return np.flatnonzero(~self.finite) + self.start


@dataclass(frozen=True)
class Engine:
    """Where and how the reductions run.

    Parameters
    ----------
    backend : {"numpy", "torch", "dask"}
    device : str
        torch device ("cpu", "cuda", "cuda:1"); torch backend only.
    scheduler : str
        dask scheduler: "threads", "processes", "sync" or "tcp://host:port"; dask backend only.
    block_bytes : int
        Size of one float64 working block; peak memory is a small multiple of it.
    """

    backend: str = "numpy"
    device: str = "cpu"
    scheduler: str = "threads"
    block_bytes: int = DEFAULT_BLOCK_BYTES
    _impl: Backend = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_int("block_bytes", self.block_bytes, low=MIN_BLOCK_BYTES, high=MAX_BLOCK_BYTES)
        impl = make_backend(self.backend, block_bytes=self.block_bytes, device=self.device, scheduler=self.scheduler)
        object.__setattr__(self, "_impl", impl)

    @property
    def label(self) -> str:
        """The backend as reports name it: numpy, torch:cuda, dask:threads, ..."""
        return self._impl.label

    # ------------------------------------------------------------------ Gram
    def gram(
        self,
        store: RunStore,
        *,
        rows: slice | None = None,
        groups: ColumnGroups | None = None,
        progress: Progress | None = None,
    ) -> dict[str, np.ndarray]:
        """Gram matrices B Bᵀ summed over each group's columns, in one pass over the data.

        Parameters
        ----------
        store : RunStore
        rows : slice, optional
            Snapshot window (default all committed snapshots).
        groups : mapping of name to list of column slices, optional
            Default ``{"all": [slice(0, N)]}``.

        Returns
        -------
        dict of name to ndarray of shape (T_w, T_w), float64, symmetric.
        """
        return self._impl.gram(store, _rows(store, rows), _groups(store, groups), progress)

    def gram_times(
        self,
        store: RunStore,
        products: Mapping[str, tuple[slice, slice, np.ndarray]],
        *,
        rows: slice | None = None,
        columns: Sequence[slice] | None = None,
        progress: Progress | None = None,
    ) -> tuple[dict[str, np.ndarray], float]:
        """Products G[left, right] @ M for several (left, right, M), and tr(G), in one pass.

        G[left, right] M = Σ_blocks B[left] (B[right]ᵀ M): the (T+1)² Gram is never formed,
        so this serves runs too long for it (the randomized range finder). ``left``/``right``
        are row ranges inside the window; M has shape (len(right), k), real or complex.
        """
        rows = _rows(store, rows)
        n_rows = rows.stop - rows.start
        mats = {}
        for name, (left, right, m) in products.items():
            left, right = slice(*left.indices(n_rows)[:2]), slice(*right.indices(n_rows)[:2])
            m = _float(m)
            if m.ndim != 2 or m.shape[0] != right.stop - right.start:
                raise ParameterError("products", f"{name!r}: M must have {right.stop - right.start} rows, got {m.shape}")
            mats[name] = (left, right, m)
        cols = _groups(store, {"all": list(columns)} if columns else None)["all"]
        return self._impl.gram_times(store, rows, cols, mats, progress)

    # ------------------------------------------------------------------ columns and rows
    def collect(
        self,
        store: RunStore,
        columns: np.ndarray | slice | None = None,
        *,
        rows: slice | None = None,
        array: str = "params",
        progress: Progress | None = None,
    ) -> np.ndarray:
        """The trajectories of some coordinates, shape (T_w, k), float64, in one pass.

        ``columns`` are coordinate indices (any order, repeats allowed), a slice, or None for
        all of them. Only the blocks that hold a requested coordinate are read (each chunk once).
        """
        return self._impl.collect(store, _rows(store, rows), _columns(store, columns), array, progress)

    def snapshot(self, store: RunStore, k: int, *, array: str = "params") -> np.ndarray:
        """θ_k (or the gradient with ``array="grads"``), shape (N,), float64."""
        if not -store.n_snapshots <= k < store.n_snapshots:
            raise ParameterError("snapshot", f"{k} lies outside the {store.n_snapshots} committed snapshots")
        k %= store.n_snapshots
        return self.collect(store, None, rows=slice(k, k + 1), array=array)[0]

    def row_norms(
        self,
        store: RunStore,
        *,
        rows: slice | None = None,
        groups: ColumnGroups | None = None,
        array: str = "params",
        progress: Progress | None = None,
    ) -> RowNorms:
        """Per snapshot, the squared norm of each group's columns and whether it is finite (one pass).

        With a group per layer these are the layer norms of ``traj info`` and ``traj report``,
        and ``nonfinite_rows`` the snapshots holding NaN or Inf, from the same pass.
        """
        rows = _rows(store, rows)
        groups = _groups(store, groups)
        squares, finite = self._impl.row_norms(store, rows, groups, array, progress)
        return RowNorms(tuple(groups), squares, finite, rows.start)

    def nonfinite_rows(self, store: RunStore, *, rows: slice | None = None, array: str = "params",
                       progress: Progress | None = None) -> np.ndarray:
        """Indices of the snapshots in the window that hold a NaN or Inf anywhere (one pass)."""
        return self.row_norms(store, rows=rows, array=array, progress=progress).nonfinite_rows

    def map_blocks(
        self,
        store: RunStore,
        kernel: Kernel,
        *,
        rows: slice | None = None,
        array: str = "params",
        progress: Progress | None = None,
    ) -> Iterator[tuple[slice, Any]]:
        """Yield ``(column_slice, kernel(block, ops))`` for every column block of the window, in order.

        ``block`` is the window's (T_w, width) block in float64 in the backend's array type (a
        numpy array, or a torch tensor on the engine's device) and ``ops`` the
        :class:`~traj.engine.backends.ArrayOps` that work on it, so one kernel serves every
        backend; on dask the kernel runs in the workers and must return something picklable.
        """
        return self._impl.map_blocks(store, _rows(store, rows), kernel, array, progress)

    # ------------------------------------------------------------------ D·C
    def project_blocks(
        self,
        store: RunStore,
        coefficients: np.ndarray,
        *,
        rows: slice | None = None,
        columns: slice | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(column_slice, Bᵀ C)``: the rows of D·C for each block of θ's coordinates.

        ``coefficients`` C has shape (T_w, k) (real or complex); each yielded block has shape
        (width, k) in float64/complex128. Callers write blocks out or reduce them (scores).
        """
        rows = _rows(store, rows)
        return self._impl.project_blocks(store, rows, _coefficients(rows, coefficients), _span(store, columns), progress)

    def project(
        self,
        store: RunStore,
        coefficients: np.ndarray,
        *,
        rows: slice | None = None,
        columns: slice | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """D·C in memory, shape (width of ``columns``, k): for small N or a few columns."""
        rows = _rows(store, rows)
        return self._impl.project(store, rows, _coefficients(rows, coefficients), _span(store, columns), progress)


# ---------------------------------------------------------------------- argument checks
def block_bytes_from_mib(block_mb: float) -> int:
    """Bytes of a working block given in MiB (``--block-mb``): 1 KiB to 1 TiB, finite."""
    try:
        mib = check_float("block_mb", block_mb, low=MIN_BLOCK_BYTES / (1 << 20), high=MAX_BLOCK_BYTES / (1 << 20))
    except ParameterError as exc:
        raise ParameterError("block_mb", f"{exc.problem} (1 KiB to 1 TiB)") from None
    return int(mib * (1 << 20))


def _rows(store: RunStore, rows: slice | None) -> slice:
    if not store.n_params:  # every reduction passes here: a store of no parameters is refused at the door
        raise NotApplicableError(f"{store.path.name}: the store holds no parameters (N = 0): nothing to analyse")
    start, stop, step = (rows or slice(None)).indices(store.n_snapshots)
    if step != 1 or stop <= start:
        raise ParameterError("rows", f"{start}:{stop} is an empty or strided snapshot window")
    return slice(start, stop)


def _span(store: RunStore, columns: slice | None) -> slice:
    start, stop, _ = (columns or slice(None)).indices(store.n_params)
    return slice(start, max(start, stop))


def _groups(store: RunStore, groups: ColumnGroups | None) -> dict[str, list[slice]]:
    if groups is None:
        return {"all": [slice(0, store.n_params)]}
    out = {}
    for name, slices in groups.items():
        clean = []
        for s in slices:
            lo, hi, _ = s.indices(store.n_params)
            if hi > lo:
                clean.append(slice(lo, hi))
        if not clean:
            raise ParameterError("groups", f"{name!r} is an empty column group")
        out[name] = sorted(clean, key=lambda s: s.start)
    return out


def _columns(store: RunStore, columns: np.ndarray | slice | None) -> slice | np.ndarray:
    if columns is None or isinstance(columns, slice):
        return _span(store, columns)
    idx = np.asarray(columns, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= store.n_params):
        raise ParameterError("columns", f"coordinate indices must lie in 0..{store.n_params - 1}")
    return idx


def _float(m: Any) -> np.ndarray:
    m = np.asarray(m)
    return m.astype(np.complex128 if np.iscomplexobj(m) else np.float64)


def _coefficients(rows: slice, coefficients: np.ndarray) -> np.ndarray:
    c = _float(coefficients)
    if c.ndim != 2 or c.shape[0] != rows.stop - rows.start:
        raise ParameterError("coefficients", f"must have shape ({rows.stop - rows.start}, k), got {c.shape}")
    return c
