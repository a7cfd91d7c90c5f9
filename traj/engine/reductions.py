"""Streaming reductions over a store's ``params``: Gram matrices and D·C products.

In methods.md's notation D = [θ0 … θT] is N×(T+1); the store holds Dᵀ (time-major), so a
column block of the store is B = D[rows, :]ᵀ of shape (T+1, width), and

    G = DᵀD = Σ_blocks B Bᵀ            (T+1)×(T+1), float64
    D·C     = stacked blocks Bᵀ C      N×k, one block of rows of D·C per column block.

Every reduction runs block by block, so memory is bounded by the block size, never by N.
Three backends compute the same sums: ``numpy`` (default; reads the next block in a thread
while BLAS works on this one), ``torch`` (``device="cuda"`` runs the block products on a GPU)
and ``dask`` (``dask.array.from_zarr`` on the store's guarded array; ``scheduler`` is "threads", "processes", "sync" or a
``tcp://`` address of a ``dask.distributed`` scheduler).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_float, check_int
from ..errors import ParameterError, TrajError
from ..store import RunStore
from ..store.run_store import DEFAULT_BLOCK_BYTES

__all__ = ["Engine", "BACKENDS", "ColumnGroups", "MAX_BLOCK_BYTES", "block_bytes_from_mib"]

BACKENDS = ("numpy", "torch", "dask")
#: Largest working block one may ask for (1 TiB); peak memory is a small multiple of the block.
MAX_BLOCK_BYTES = 1 << 40
MIN_BLOCK_BYTES = 1024
_LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")
_REMOTE_SCHEDULERS = ("tcp://", "tls://", "inproc://", "ucx://")
ProgressCallback = Callable[[int, int], None]
#: name -> column slices of θ (a layer, a set of layers, everything)
ColumnGroups = Mapping[str, Sequence[slice]]


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

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise TrajError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.backend == "torch":
            _torch_device(self.device)  # fail early on a device that is not there
        if self.backend == "dask" and not (isinstance(self.scheduler, str) and (
                self.scheduler in _LOCAL_SCHEDULERS or self.scheduler.startswith(_REMOTE_SCHEDULERS))):
            raise TrajError(f"unknown dask scheduler {self.scheduler!r}; use threads, processes, sync or tcp://host:port")
        check_int("block_bytes", self.block_bytes, low=MIN_BLOCK_BYTES, high=MAX_BLOCK_BYTES)

    @property
    def read_bytes(self) -> int:
        """Whole chunk columns up to this size are read at once (peak memory ~ 2x this + a block)."""
        return 4 * self.block_bytes

    @property
    def label(self) -> str:
        if self.backend == "torch":
            return f"torch:{self.device}"
        if self.backend == "dask":
            return f"dask:{self.scheduler}"
        return "numpy"

    # ------------------------------------------------------------------ blocks
    def width(self, store: RunStore, rows: slice) -> int:
        """Block width for this window under the engine's block budget."""
        return store.block_columns(rows.stop - rows.start, block_bytes=self.block_bytes)

    def blocks(self, store: RunStore, rows: slice, columns: slice | None = None,
               progress: ProgressCallback | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """The store's column blocks of a window, read ahead in a thread (each chunk once)."""
        return _prefetch(store.iter_blocks(rows=rows, columns=columns, progress=progress,
                                           block_columns=self.width(store, rows), read_bytes=self.read_bytes))

    # ------------------------------------------------------------------ Gram
    def gram(
        self,
        store: RunStore,
        *,
        rows: slice | None = None,
        groups: ColumnGroups | None = None,
        progress: ProgressCallback | None = None,
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
        groups = _normalise_groups(store, groups)
        rows = _rows(store, rows)
        if self.backend == "dask":
            return _dask_gram(self, store, rows, groups, progress)
        span = _span(groups)
        n_rows = rows.stop - rows.start
        blocks = self.blocks(store, rows, span, progress)
        if self.backend == "numpy":
            return _numpy_gram(blocks, groups, n_rows, self.width(store, rows))
        out = {name: _zeros((n_rows, n_rows), self) for name in groups}
        for cols, block in blocks:
            b = self._to_work(block)
            for name, slices in groups.items():
                for lo, hi in _intersections(cols, slices):
                    part = b[:, lo - cols.start : hi - cols.start]
                    out[name] += part @ part.T
        return {name: _symmetric(self._to_numpy(g)) for name, g in out.items()}

    # ------------------------------------------------------------------ selected columns
    def collect(
        self,
        store: RunStore,
        indices: np.ndarray,
        *,
        rows: slice | None = None,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """The trajectories of a few coordinates, shape (T_w, len(indices)), float64, one pass.

        Reads only the blocks that hold a requested coordinate (each chunk once).
        """
        rows = _rows(store, rows)
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= store.n_params):
            raise TrajError(f"coordinate indices must lie in 0..{store.n_params - 1}")
        out = np.empty((rows.stop - rows.start, idx.size))
        if not idx.size:
            return out
        if self.backend == "dask":
            x = _dask_array(store, rows)
            order = np.argsort(idx)
            (values,) = _dask_compute(self, x[:, idx[order]])
            out[:, order] = np.asarray(values, dtype=np.float64)
            return out
        order = np.argsort(idx)
        sorted_idx = idx[order]
        span = slice(int(sorted_idx[0]), int(sorted_idx[-1]) + 1)
        for cols, block in self.blocks(store, rows, span, progress):
            lo, hi = np.searchsorted(sorted_idx, [cols.start, cols.stop])
            if hi > lo:
                out[:, order[lo:hi]] = block[:, sorted_idx[lo:hi] - cols.start]
        return out

    def map_blocks(
        self,
        store: RunStore,
        kernel: Callable[[Any], Any],
        *,
        rows: slice | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[slice, Any]]:
        """Yield ``(column_slice, kernel(block))`` for every block, block as float64 in the
        backend's array type (numpy, or a torch tensor on ``device``); the dask backend runs the
        kernel on numpy blocks of ``dask.array.from_zarr`` and gathers the results in order."""
        rows = _rows(store, rows)
        if self.backend == "dask":
            yield from _dask_map_blocks(self, store, rows, self.width(store, rows), kernel, progress)
            return
        for cols, block in self.blocks(store, rows, None, progress):
            yield cols, kernel(self._to_work(block))

    # ------------------------------------------------------------------ G·M without G
    def gram_times(
        self,
        store: RunStore,
        products: Mapping[str, tuple[slice, slice, np.ndarray]],
        *,
        rows: slice | None = None,
        columns: Sequence[slice] | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[dict[str, np.ndarray], float]:
        """Products G[left, right] @ M for several (left, right, M), and tr(G), in one pass.

        G[left, right] M = Σ_blocks B[left] (B[right]ᵀ M): the (T+1)² Gram is never formed,
        so this serves runs too long for it (the randomized range finder). ``left``/``right``
        are row ranges inside the window; M has shape (len(right), k), real or complex.
        """
        rows = _rows(store, rows)
        groups = _normalise_groups(store, {"all": list(columns)} if columns else None)["all"]
        n_rows = rows.stop - rows.start
        mats = {}
        for name, (left, right, m) in products.items():
            left, right = slice(*left.indices(n_rows)[:2]), slice(*right.indices(n_rows)[:2])
            m = np.asarray(m)
            if m.ndim != 2 or m.shape[0] != right.stop - right.start:
                raise TrajError(f"product {name!r}: M must have {right.stop - right.start} rows, got {m.shape}")
            mats[name] = (left, right, self._to_work(m.astype(np.complex128 if np.iscomplexobj(m) else np.float64)))
        if self.backend == "dask":
            return _dask_gram_times(self, store, rows, groups, mats, progress)
        out = {name: None for name in mats}
        trace = 0.0
        for cols, block in self.blocks(store, rows, _span({"g": groups}), progress):
            b = self._to_work(block)
            for lo, hi in _intersections(cols, groups):
                part = b[:, lo - cols.start : hi - cols.start]
                trace += float((part * part).sum())
                for name, (left, right, m) in mats.items():
                    p = part.to(m.dtype) if self.backend == "torch" and m.is_complex() else part
                    value = p[left] @ (p[right].T @ m)
                    out[name] = value if out[name] is None else out[name] + value
        return {name: self._to_numpy(v) for name, v in out.items()}, trace

    # ------------------------------------------------------------------ D·C
    def project_blocks(
        self,
        store: RunStore,
        coefficients: np.ndarray,
        *,
        rows: slice | None = None,
        columns: slice | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(column_slice, Bᵀ C)``: the rows of D·C for each block of θ's coordinates.

        ``coefficients`` C has shape (T_w, k) (real or complex); each yielded block has shape
        (width, k) in float64/complex128. Callers write blocks out or reduce them (scores).
        """
        rows = _rows(store, rows)
        c = np.asarray(coefficients)
        if c.ndim != 2 or c.shape[0] != rows.stop - rows.start:
            raise TrajError(f"coefficients must have shape ({rows.stop - rows.start}, k), got {c.shape}")
        c_work = self._to_work(c.astype(np.complex128 if np.iscomplexobj(c) else np.float64))
        for cols, block in self.blocks(store, rows, columns, progress):
            b = self._to_work(block)
            if np.iscomplexobj(c):
                b = b.to(c_work.dtype) if self.backend == "torch" else b
            yield cols, self._to_numpy(b.T @ c_work)

    def project(
        self,
        store: RunStore,
        coefficients: np.ndarray,
        *,
        rows: slice | None = None,
        columns: slice | None = None,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """D·C in memory, shape (width of ``columns``, k): for small N or a few columns."""
        rows = _rows(store, rows)
        start, stop, _ = (columns or slice(None)).indices(store.n_params)
        if self.backend == "dask":
            return _dask_project(self, store, rows, slice(start, stop), np.asarray(coefficients), progress)
        c = np.asarray(coefficients)
        out = np.empty((stop - start, c.shape[1]), dtype=np.complex128 if np.iscomplexobj(c) else np.float64)
        for cols, part in self.project_blocks(store, c, rows=rows, columns=slice(start, stop), progress=progress):
            out[cols.start - start : cols.stop - start] = part
        return out

    # ------------------------------------------------------------------ array plumbing
    def _to_work(self, array: np.ndarray) -> Any:
        if self.backend == "torch":
            import torch

            tensor = torch.from_numpy(np.ascontiguousarray(array))
            dtype = torch.complex128 if tensor.is_complex() else torch.float64
            return tensor.to(device=_torch_device(self.device), dtype=dtype)
        return np.asarray(array, dtype=np.complex128 if np.iscomplexobj(array) else np.float64)

    def _to_numpy(self, array: Any) -> np.ndarray:
        if self.backend == "torch":
            return array.detach().cpu().numpy()
        return np.asarray(array)


# ---------------------------------------------------------------------- helpers
def block_bytes_from_mib(block_mb: float) -> int:
    """Bytes of a working block given in MiB (``--block-mb``): 1 KiB to 1 TiB, finite."""
    try:
        mib = check_float("block_mb", block_mb, low=MIN_BLOCK_BYTES / (1 << 20), high=MAX_BLOCK_BYTES / (1 << 20))
    except ParameterError as exc:
        raise ParameterError("block_mb", f"{exc.problem} (1 KiB to 1 TiB)") from None
    return int(mib * (1 << 20))


def _numpy_gram(blocks: Iterator[tuple[slice, np.ndarray]], groups: Mapping[str, Sequence[slice]], n_rows: int,
                width: int) -> dict[str, np.ndarray]:
    """Σ B Bᵀ with BLAS ``dsyrk`` (half the flops of a GEMM) into a reused float64 buffer.

    Reusing one working buffer avoids fresh pages for every block (engineering.md: a
    prefetch thread, reused ``out=`` buffers and dsyrk took an 8 GB Gram from 46 s to 19 s).
    """
    from scipy.linalg.blas import dsyrk

    acc = {name: np.zeros((n_rows, n_rows), order="F") for name in groups}
    flat = np.empty(n_rows * width)
    for cols, block in blocks:
        w = block.shape[1]
        if flat.size < n_rows * w:
            flat = np.empty(n_rows * w)
        b = flat[: n_rows * w].reshape(n_rows, w)
        np.copyto(b, block)  # float32 -> float64 into the same pages every time
        for name, slices in groups.items():
            for lo, hi in _intersections(cols, slices):
                part = b if (lo, hi) == (cols.start, cols.stop) else np.ascontiguousarray(b[:, lo - cols.start : hi - cols.start])
                # part.T is a Fortran view of part: dsyrk(trans=1) adds part·partᵀ to the upper triangle
                acc[name] = dsyrk(1.0, part.T, beta=1.0, c=acc[name], trans=1, overwrite_c=1)
    return {name: np.triu(g) + np.triu(g, 1).T for name, g in acc.items()}


def _torch_device(device: str) -> Any:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TrajError(f"unknown torch device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrajError("--device cuda asked for, but torch sees no CUDA device (a CPU build of torch, or no GPU)")
    return dev


def _zeros(shape: tuple[int, int], engine: Engine) -> Any:
    if engine.backend == "torch":
        import torch

        return torch.zeros(shape, dtype=torch.float64, device=_torch_device(engine.device))
    return np.zeros(shape)


def _symmetric(g: np.ndarray) -> np.ndarray:
    return (g + g.T) / 2


def _rows(store: RunStore, rows: slice | None) -> slice:
    start, stop, step = (rows or slice(None)).indices(store.n_snapshots)
    if step != 1 or stop <= start:
        raise TrajError(f"empty or strided snapshot window {start}:{stop}")
    return slice(start, stop)


def _normalise_groups(store: RunStore, groups: ColumnGroups | None) -> dict[str, list[slice]]:
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
            raise TrajError(f"column group {name!r} is empty")
        out[name] = sorted(clean, key=lambda s: s.start)
    return out


def _span(groups: Mapping[str, Sequence[slice]]) -> slice:
    return slice(min(s.start for v in groups.values() for s in v), max(s.stop for v in groups.values() for s in v))


def _intersections(cols: slice, slices: Sequence[slice]) -> Iterator[tuple[int, int]]:
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


# ---------------------------------------------------------------------- dask
def _dask_array(store: RunStore, rows: slice) -> Any:
    import dask.array as da

    # The store's guarded array: dask reads through the same checks as every other path.
    return da.from_zarr(store.zarr_array("params"))[rows.start : rows.stop]


def _dask_compute(engine: Engine, *arrays: Any) -> tuple[Any, ...]:
    import dask

    scheduler = engine.scheduler  # checked by Engine
    if scheduler.startswith(_REMOTE_SCHEDULERS):
        from distributed import Client

        with Client(scheduler, set_as_default=False) as client:
            futures = client.compute(list(arrays))
            return tuple(client.gather(futures))
    return dask.compute(*arrays, scheduler=scheduler)


def _dask_gram(engine: Engine, store: RunStore, rows: slice, groups: Mapping[str, Sequence[slice]],
               progress: ProgressCallback | None) -> dict[str, np.ndarray]:
    import dask.array as da

    x = _dask_array(store, rows)
    width = engine.width(store, rows)
    grams = []
    for slices in groups.values():
        parts = [x[:, s].rechunk({0: -1, 1: width}).astype(np.float64) for s in slices]
        sub = da.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        grams.append(sub @ sub.T)
    results = _dask_compute(engine, *grams)
    if progress is not None:
        progress(1, 1)
    return {name: _symmetric(np.asarray(g)) for name, g in zip(groups, results, strict=True)}


def _dask_gram_times(engine: Engine, store: RunStore, rows: slice, groups: Sequence[slice],
                     mats: Mapping[str, tuple[slice, slice, np.ndarray]], progress: ProgressCallback | None
                     ) -> tuple[dict[str, np.ndarray], float]:
    import dask.array as da

    x = _dask_array(store, rows)
    width = engine.width(store, rows)
    parts = [x[:, s].rechunk({0: -1, 1: width}).astype(np.float64) for s in groups]
    sub = da.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    graphs = [sub[left] @ (sub[right].T @ m) for left, right, m in mats.values()]
    results = _dask_compute(engine, *graphs, (sub * sub).sum())
    if progress is not None:
        progress(1, 1)
    return {name: np.asarray(r) for name, r in zip(mats, results[:-1], strict=True)}, float(results[-1])


def _dask_map_blocks(engine: Engine, store: RunStore, rows: slice, width: int, kernel: Callable[[Any], Any],
                     progress: ProgressCallback | None) -> Iterator[tuple[slice, Any]]:
    import dask

    x = _dask_array(store, rows).rechunk({0: -1, 1: width})
    bounds = np.cumsum((0,) + x.chunks[1])
    tasks = [dask.delayed(kernel)(x.blocks[0, j].astype(np.float64)) for j in range(len(x.chunks[1]))]
    results = _dask_compute(engine, *tasks)
    if progress is not None:
        progress(1, 1)
    for j, result in enumerate(results):
        yield slice(int(bounds[j]), int(bounds[j + 1])), result


def _dask_project(engine: Engine, store: RunStore, rows: slice, columns: slice, c: np.ndarray,
                  progress: ProgressCallback | None) -> np.ndarray:
    x = _dask_array(store, rows)[:, columns]
    width = engine.width(store, rows)
    x = x.rechunk({0: -1, 1: width}).astype(np.float64)
    dtype = np.complex128 if np.iscomplexobj(c) else np.float64
    (result,) = _dask_compute(engine, x.T @ c.astype(dtype))
    if progress is not None:
        progress(1, 1)
    return np.asarray(result)
