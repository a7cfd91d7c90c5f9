"""The dask backend: the reductions as ``dask.array`` graphs over the store's guarded array.

``scheduler`` is "threads", "processes", "sync" or the ``tcp://`` address of a
``dask.distributed`` scheduler (the store must be reachable from every worker). The graphs
read ``store.zarr_array()``, so every chunk passes the same checks as the other backends'.
Projections streamed block by block (``project_blocks``) run on the numpy backend.

The Gram, the costly reduction, is computed where the data are read: one task per column band
(whole chunks; two bands per thread that runs tasks) opens the store, reads its band and
accumulates the band's partial Grams with ``dsyrk``; the (T+1)² partials are summed in a tree
(fan-in 4). Only T×T results travel between workers, never the data (no rechunk).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ...errors import ParameterError, SchedulerUnreachableError
from ...progress import Progress
from ...store import RunStore
from ...store.dtypes import decode
from .base import ColumnGroups, Kernel, Products, blas_threads, intersections, span, symmetric
from .numpy import NUMPY_OPS, NumpyBackend

__all__ = ["CONNECT_TIMEOUT", "DaskBackend", "LOCAL_SCHEDULERS", "REMOTE_SCHEDULERS", "check_scheduler_address"]

#: Column bands of a Gram at most (each a task returning T×T partial Grams).
MAX_BANDS = 64
#: Column bands per thread that runs tasks. Each band task opens the store and every shard file
#: it crosses, so more bands cost more; 2 per thread lets a thread that finishes early take
#: another. 13 bands (one per 64 MB block) on 2 cores: dask threads 1.6x numpy; 4: 0.9-1.1x
#: (benchmarks/dask_gram.py).
BANDS_PER_THREAD = 2
#: Partial results summed per task of the tree reduction.
FAN_IN = 4

LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")
REMOTE_SCHEDULERS = ("tcp://", "tls://", "inproc://", "ucx://")


#: Seconds to reach a dask.distributed scheduler (connect and handshake) before giving up.
CONNECT_TIMEOUT = 30.0


def check_scheduler_address(address: str) -> str:
    """``address`` if it is a well-formed scheduler address (``tcp://host:port``, ``tcp://[::1]:port``), else ParameterError.

    Checked before a ``Client`` is made: distributed fails on a malformed address from its event-loop
    thread, after which the process may never exit.
    """
    from urllib.parse import urlsplit

    usage = "a dask.distributed scheduler is given as tcp://host:port (an IPv6 host in brackets: tcp://[::1]:8786)"
    if any(c.isspace() for c in address):
        raise ParameterError("scheduler", f"{address!r} holds white space; {usage}")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ParameterError("scheduler", f"{address!r} is not a valid address ({exc}); {usage}") from None
    if parts.scheme == "inproc":  # an in-process address (inproc://host/pid/n) names no port
        return address
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ParameterError("scheduler", f"{address!r} is not a valid address; {usage}")
    if port == 0:
        raise ParameterError("scheduler", f"{address!r}: port 0 is no scheduler's port; {usage}")
    return address


def _probe(address: str, timeout: float) -> None:
    """Connect to ``address`` and complete distributed's handshake within ``timeout`` seconds, else raise
    OSError or TimeoutError. ``Client(timeout=...)`` bounds the connect but not the handshake after it, so
    a socket that accepts and never answers (something other than a dask scheduler) would hang it forever.
    The probe runs in a thread of its own, so it works where an event loop is already running (a notebook).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="traj-dask-probe") as pool:
        pool.submit(asyncio.run, handshake()).result()


class DaskBackend:
    def __init__(self, block_bytes: int, scheduler: str) -> None:
        if not (isinstance(scheduler, str) and (scheduler in LOCAL_SCHEDULERS or scheduler.startswith(REMOTE_SCHEDULERS))):
            raise ParameterError("scheduler", f"{scheduler!r}: unknown dask scheduler; use threads, processes, sync "
                                              "or tcp://host:port")
        if scheduler.startswith(REMOTE_SCHEDULERS):
            check_scheduler_address(scheduler)
        self.scheduler = scheduler
        self.label = f"dask:{scheduler}"
        self.streaming = NumpyBackend(block_bytes)
        if scheduler == "processes":
            _process_pool()  # started now, while the process is likely to have one thread (see there)

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def client(self) -> Iterator[Any]:
        """A ``distributed.Client`` of the remote scheduler, reached within CONNECT_TIMEOUT seconds or refused."""
        from distributed import Client

        try:
            _probe(self.scheduler, CONNECT_TIMEOUT)
            client = Client(self.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:  # refused, unreachable, or not a dask scheduler (no handshake)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if len(reason) > 200:
                reason = reason[:200] + "..."
            raise SchedulerUnreachableError(
                f"no dask scheduler answered at {self.scheduler} within {CONNECT_TIMEOUT:g} s ({reason}); is "
                "`dask scheduler` running there? (a run on this machine needs none: scheduler threads)") from None
        with client:
            yield client

    def array(self, store: RunStore, rows: slice, array: str = "params") -> Any:
        import dask.array as da

        # The store's guarded array: dask reads through the same checks as every other path.
        x = da.from_zarr(store.zarr_array(array))[store.base_rows(rows)]  # the rows of a selection (RunStore.select)
        if store.dtype != x.dtype:  # bfloat16 bits or float16: decoded block by block, as the other paths do
            x = x.map_blocks(decode, store.stored_dtype, dtype=store.dtype)  # a module function: pickles
        return x

    def columns(self, store: RunStore, rows: slice, slices: Sequence[slice], array: str = "params") -> Any:
        """The window's columns of ``slices`` side by side, float64, in blocks of the engine's width."""
        import dask.array as da

        x = self.array(store, rows, array)
        width = self.streaming.width(store, rows)
        parts = [x[:, s].rechunk({0: -1, 1: width}).astype(np.float64) for s in slices]
        return da.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def compute(self, *arrays: Any, progress: Progress | None = None) -> tuple[Any, ...]:
        import dask

        if self.scheduler.startswith(REMOTE_SCHEDULERS):
            with self.client() as client:
                results = tuple(client.gather(client.compute(list(arrays))))
        elif self.scheduler == "processes":
            # chunksize=1: dask's processes scheduler otherwise sends up to 6 ready tasks to one
            # worker as a batch, so a Gram's 4 band tasks ran one after another in one process
            # (1.3-1.6x numpy on 2 cores; 1 task per batch: see benchmarks/dask_gram.py)
            results = dask.compute(*arrays, scheduler="processes", pool=_process_pool(), chunksize=1)
        else:
            results = dask.compute(*arrays, scheduler=self.scheduler)
        if progress is not None:
            progress(1, 1)
        return results

    # ------------------------------------------------------------------ operations
    def gram(self, store: RunStore, rows: slice, groups: ColumnGroups, progress: Progress | None
             ) -> dict[str, np.ndarray]:
        """Partial Grams per column band where the band is read, then a tree sum (module docstring)."""
        import dask

        def graph(n_bands: int) -> Any:
            level = []
            for cols in self.bands(store, span(groups), n_bands):
                parts = {name: [slice(a, b) for a, b in intersections(cols, slices)] for name, slices in groups.items()}
                parts = {name: v for name, v in parts.items() if v}
                if parts:
                    level.append(dask.delayed(_band_gram)(str(store.path), store.selections, rows, parts, self.streaming.block_bytes,
                                                          self.one_blas_thread))
            return self.tree_sum(level)

        (result,) = self.compute_graph(graph, progress)
        return {name: symmetric(np.asarray(result[name])) for name in groups}

    @property
    def one_blas_thread(self) -> bool:
        """Whether a band task holds BLAS to one thread: in the worker processes of the "processes"
        scheduler (one task per core; BLAS's default of one thread per core in each ran 4 threads
        on 2 cores: 1.9x numpy). Not under "threads": the tasks share one process, whose BLAS
        limit is process-wide (concurrent tasks would set and restore it under each other), and
        OpenBLAS runs concurrent calls without oversubscribing; 4 bands on 2 cores: 1.04-1.07x
        numpy with the default, 1.09-1.14x held to one thread (median of 5 Grams of
        benchmarks/dask_gram.py's store, interleaved with numpy's)."""
        return self.scheduler == "processes"

    def compute_graph(self, graph: Any, progress: Progress | None) -> tuple[Any, ...]:
        """``graph(n_bands)`` built for the scheduler's parallelism (BANDS_PER_THREAD bands per thread
        that runs tasks: the local cores, or the cluster's worker threads), then computed."""
        import os

        if self.scheduler.startswith(REMOTE_SCHEDULERS):
            with self.client() as client:
                threads = sum(client.nthreads().values())
                results = tuple(client.gather(client.compute([graph(BANDS_PER_THREAD * max(1, threads))])))
            if progress is not None:
                progress(1, 1)
            return results
        threads = 1 if self.scheduler not in ("threads", "processes") else (os.cpu_count() or 1)
        return self.compute(graph(BANDS_PER_THREAD * threads), progress=progress)

    @staticmethod
    def bands(store: RunStore, whole: slice, n_bands: int) -> Iterator[slice]:
        """``whole`` in at most ``n_bands`` (and MAX_BANDS) column bands of whole chunks, as equal as
        the chunks allow (the tasks end together), each starting on a chunk (so shard) boundary."""
        w = store.chunks[1]
        first = whole.start - whole.start % w
        n_chunks = -(-(whole.stop - first) // w)
        k = max(1, min(n_bands, MAX_BANDS, n_chunks))
        edges = [first + n_chunks * i // k * w for i in range(k + 1)]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            if max(lo, whole.start) < min(hi, whole.stop):
                yield slice(max(lo, whole.start), min(hi, whole.stop))

    @staticmethod
    def tree_sum(level: list[Any]) -> Any:
        """The delayed partial results summed in a tree of fan-in FAN_IN (only results travel)."""
        import dask

        while len(level) > 1:
            level = [dask.delayed(_sum_parts)(*level[i : i + FAN_IN]) for i in range(0, len(level), FAN_IN)]
        return level[0]

    def collect(self, store: RunStore, rows: slice, columns: slice | np.ndarray, array: str,
                progress: Progress | None) -> np.ndarray:
        x = self.array(store, rows, array)
        if isinstance(columns, slice):
            (values,) = self.compute(x[:, columns], progress=progress)
            return np.asarray(values, dtype=np.float64)
        out = np.empty((rows.stop - rows.start, columns.size))
        if columns.size:
            order = np.argsort(columns, kind="stable")
            (values,) = self.compute(x[:, columns[order]], progress=progress)
            out[:, order] = np.asarray(values, dtype=np.float64)
        return out

    def map_blocks(self, store: RunStore, rows: slice, kernel: Kernel, array: str, progress: Progress | None
                   ) -> Iterator[tuple[slice, Any]]:
        import dask

        x = self.array(store, rows, array).rechunk({0: -1, 1: self.streaming.width(store, rows)})
        bounds = np.cumsum((0,) + x.chunks[1])
        tasks = [dask.delayed(kernel)(x.blocks[0, j].astype(np.float64), NUMPY_OPS) for j in range(len(x.chunks[1]))]
        results = self.compute(*tasks, progress=progress)
        for j, result in enumerate(results):
            yield slice(int(bounds[j]), int(bounds[j + 1])), result

    def gram_times(self, store: RunStore, rows: slice, columns: Sequence[slice], products: Products,
                   progress: Progress | None) -> tuple[dict[str, np.ndarray], float]:
        """Σ over column bands of B[left] (B[right]ᵀ M), each band's part computed where it is read, then a tree sum."""
        import dask

        def graph(n_bands: int) -> Any:
            level = []
            for cols in self.bands(store, span({"": columns}), n_bands):
                parts = [slice(a, b) for a, b in intersections(cols, columns)]
                if parts:
                    level.append(dask.delayed(_band_products)(str(store.path), store.selections, rows, parts, dict(products),
                                                              self.streaming.block_bytes, self.one_blas_thread))
            return self.tree_sum(level)

        (result,) = self.compute_graph(graph, progress)
        trace = result.pop("__trace__")
        return {name: np.asarray(result[name]) for name in products}, float(trace)

    def project_blocks(self, store: RunStore, rows: slice, coefficients: np.ndarray, columns: slice,
                       progress: Progress | None) -> Iterator[tuple[slice, np.ndarray]]:
        return self.streaming.project_blocks(store, rows, coefficients, columns, progress)

    def project(self, store: RunStore, rows: slice, coefficients: np.ndarray, columns: slice,
                progress: Progress | None) -> np.ndarray:
        x = self.columns(store, rows, [columns])
        (result,) = self.compute(x.T @ coefficients, progress=progress)
        return np.asarray(result)

    def row_norms(self, store: RunStore, rows: slice, groups: ColumnGroups, array: str, progress: Progress | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        import dask.array as da

        x = self.array(store, rows, array)
        lo = min(s.start for v in groups.values() for s in v)
        hi = max(s.stop for v in groups.values() for s in v)
        sums = [(self.columns(store, rows, slices, array) ** 2).sum(axis=1) for slices in groups.values()]
        results = self.compute(da.isfinite(x[:, lo:hi]).all(axis=1), *sums, progress=progress)
        return np.stack([np.asarray(r) for r in results[1:]], axis=1), np.asarray(results[0], dtype=bool)


_POOL: list[Any] = []


def _process_pool() -> Any:
    """The worker processes of the "processes" scheduler, started once and kept for later graphs.

    dask starts (spawns) a fresh pool for every ``compute`` unless given one; each spawned worker
    imports numpy, scipy, zarr and traj again (~0.9 s for 2 workers here, more than the Gram
    of a 400 MB store costs in the workers). So the pool is made when the backend is, its workers
    started at once, and kept; it is shut down at interpreter exit, and replaced if broken.

    Workers are forked where the process has one thread at that moment (a fork is ~0.03 s and
    inherits every import; forking a process with other threads running can deadlock the child),
    otherwise started as dask's ``multiprocessing.context`` says (spawn by default); a context set
    in dask's config is always used.
    """
    if _POOL and getattr(_POOL[0], "_broken", False):  # a worker died: start a fresh pool
        _POOL.pop().shutdown(wait=False)
    if not _POOL:
        import atexit
        import multiprocessing
        import os
        import threading
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        import dask
        from dask.multiprocessing import get_context, initialize_worker_process

        # what dask sets before starting its own pool: consistent hashing in the workers
        if os.environ.get("PYTHONHASHSEED") in (None, "0"):
            os.environ["PYTHONHASHSEED"] = "6640"
        fork = (dask.config.get("multiprocessing.context", None) is None and threading.active_count() == 1
                and "fork" in multiprocessing.get_all_start_methods())
        if fork:  # what a band task imports, imported once here and inherited (else each worker's first
            # task imported it: the first Gram of a 400 MB store took 3.5 s against 0.9 s for the next)
            import numcodecs.blosc  # noqa: F401
            import scipy.linalg.blas  # noqa: F401
            import threadpoolctl  # noqa: F401
        context = multiprocessing.get_context("fork") if fork else get_context()
        pool = ProcessPoolExecutor(mp_context=context, initializer=partial(initialize_worker_process,
                                                                            user_initializer=None))
        pool.submit(int)  # starts workers now: a forked pool forks them all here, a spawned one begins with one
        atexit.register(pool.shutdown)
        _POOL.append(pool)
    return _POOL[0]


def _reopen(path: str, selections: tuple[Any, ...]) -> RunStore:
    """The store a task reads: opened in the worker, with the caller's selection of snapshots."""
    store = RunStore(path)
    for selection in selections:
        store = store.select(selection)
    return store


def _band_gram(path: str, selections: tuple[Any, ...], rows: slice, groups: dict[str, list[slice]], block_bytes: int, one_blas_thread: bool
               ) -> dict[str, np.ndarray]:
    """The partial Grams of one column band, read and computed in the task (a worker opens the store itself).

    The task reads its next block in a thread while it computes on this one, as the numpy backend
    does. In the "processes" scheduler's workers BLAS gets one thread per task (see
    ``DaskBackend.one_blas_thread``); a distributed worker's nanny already sets one thread.
    """
    with blas_threads(one_blas_thread):
        return NumpyBackend(block_bytes).gram(_reopen(path, selections), rows, groups, None)


def _band_products(path: str, selections: tuple[Any, ...], rows: slice, columns: list[slice], products: Products, block_bytes: int,
                   one_blas_thread: bool) -> dict[str, Any]:
    """One column band's part of ``gram_times`` (and of the trace, under "__trace__"), read in the task."""
    with blas_threads(one_blas_thread):
        out, trace = NumpyBackend(block_bytes).gram_times(_reopen(path, selections), rows, columns, products, None)
    return {**out, "__trace__": np.float64(trace)}


def _sum_parts(*parts: dict[str, Any]) -> dict[str, Any]:
    """One node of the tree sum: partial results added by name."""
    out: dict[str, Any] = {}
    for part in parts:
        for name, g in part.items():
            if name in out:
                out[name] += g
            else:
                out[name] = g.copy()
    return out
