"""The Recorder: stream weight snapshots from a PyTorch training loop into a run store.

The training thread only copies the parameters into a reusable host buffer (pinned, with an
asynchronous copy, when the model is on a GPU); a background thread compresses and writes.
The pool of buffers is the bounded queue: when the writer falls behind by more than the
pool, the training thread waits, so memory stays bounded. The writer writes each snapshot's
data as it arrives (its buffer is free again at once) and commits what it has written at most
every COMMIT_SECONDS ("group commit": the series and every ``zarr.json`` are rewritten once for
several snapshots of a fast loop), and at once when it has not committed for that long, so when
training is slow each snapshot is committed one write after it was taken. The writer thread
runs WRITER_NICE steps nicer than the thread that made it.

Nothing a Recorder accepted is lost when ``close()`` is never called. The writer thread holds
only the :class:`_Pipeline` (queue, buffers, store writer), never the Recorder, so a dropped
Recorder is collected and its finaliser drains the queue, closes the store and releases its
lock. At interpreter exit one hook closes every pipeline still open; it runs in threading's
shutdown, before ``concurrent.futures`` stops the executors that zarr's I/O needs (a plain
``atexit`` hook runs after them, and zarr then fails with "cannot schedule new futures").
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import LayoutMismatchError, RecorderError, ReplacingSnapshotsWarning, SnapshotGapWarning
from ..prunable import embedding_names, prunable_names
from ..store import Layout, StoreWriter
from ..store.dtypes import default_dtype, lossy_from
from ..store.schema import check_dtype
from .options import RecordOptions

__all__ = ["Capture", "Recorder", "RecorderStats", "layout_of", "size_text"]

#: Where a Recorder's lines go (start, resume, end) unless it is given ``announce``: INFO, shown by
#: ``logging.basicConfig(level=logging.INFO)``.
logger = logging.getLogger("traj.record")

_STOP = object()
_COMMIT = object()  # flush(): commit what was written now

#: Longest time a written snapshot waits for its commit (seconds). The writer writes each
#: snapshot's data as it arrives and returns its buffer, but grows the arrays' shapes (rewriting
#: the series and every ``zarr.json``: 9 small files) at most this often, or when flushed, closed
#: or idle this long. Committing every snapshot of a 1.07M-parameter MLP cost ~3 ms of the writer's
#: CPU per snapshot in those files alone (benchmarks/record_overhead.py).
COMMIT_SECONDS = 0.2
#: How much nicer (lower CPU priority) than the training thread the writer thread runs (Linux
#: threads each have their own nice value). Where the cores are all busy, the training thread wins.
WRITER_NICE = 10


def layout_of(model: nn.Module, names: Iterable[str] | None = None) -> tuple[Layout, list[nn.Parameter]]:
    """The layout of a model's parameters (state_dict names, in registration order).

    Parameters
    ----------
    model : nn.Module
    names : iterable of str, optional
        Record only these parameters (default: all of ``model.named_parameters()``).
    """
    if not isinstance(model, nn.Module):
        swapped = " (the arguments are Recorder(path, model): path first)" if isinstance(model, (str, os.PathLike)) else ""
        raise RecorderError(f"model must be a torch.nn.Module, got {type(model).__name__}{swapped}")
    named = list(model.named_parameters())
    if names is not None:
        wanted = list(names)
        known = {n for n, _ in named}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise RecorderError(f"the model has no parameter named {missing[0]!r}")
        named = [(n, p) for n, p in named if n in set(wanted)]
    if not named:
        raise RecorderError("the model has no parameters to record")
    shapes = [(n, tuple(p.shape)) for n, p in named]
    layout = Layout.from_shapes(shapes, prunable=prunable_names(shapes, embeddings=embedding_names(model)))
    return layout, [p for _, p in named]


@dataclass(eq=False)
class Capture:
    """θ (and gradients) copied off the model by :meth:`Recorder.capture`, not yet queued for writing."""

    theta: torch.Tensor
    grads: torch.Tensor | None
    event: Any
    submitted: bool = False


def _given(values: Mapping[str, torch.Tensor | None], entry: Any, what: str, *, required: bool) -> torch.Tensor | None:
    """The tensor for one layout entry out of a mapping the caller passed to :meth:`Recorder.capture`."""
    tensor = values.get(entry.name)
    if tensor is None:
        if required:
            raise RecorderError(f"no {what} named {entry.name!r} among the tensors given")
        return None
    if tensor.numel() != entry.size:
        raise LayoutMismatchError(f"{what} {entry.name!r} has {tensor.numel()} elements, the layout expects {entry.size}")
    return tensor.detach()


@dataclass
class RecorderStats:
    """Counters a caller can use to see what recording cost."""

    snapshots: int = 0
    commits: int = 0
    capture_seconds: float = 0.0
    wait_seconds: float = 0.0


class _BufferPool:
    """The host buffers of snapshots in flight: at most ``limit`` (θ, grads) pairs, made on demand.

    The writer thread makes the first :data:`PREFILL` at start (their pages touched there), so the
    training thread's first snapshots only copy; more are made by whichever thread needs one first.
    Holds no reference to the Recorder (the pipeline's contract)."""

    def __init__(self, n: int, dtype: torch.dtype, pinned: bool, grads: bool, limit: int) -> None:
        self.n, self.dtype, self.pinned, self.grads, self.limit = n, dtype, pinned, grads, limit
        self.made = 0
        self._lock = threading.Lock()

    def new(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """A fresh pair, or None when ``limit`` are made already."""
        with self._lock:
            if self.made >= self.limit:
                return None
            self.made += 1
        make = lambda: torch.empty(self.n, dtype=self.dtype, pin_memory=self.pinned)  # noqa: E731
        return make(), (make() if self.grads else None)

    def prefill(self, free: queue.SimpleQueue, count: int) -> None:
        for _ in range(count):
            pair = self.new()
            if pair is None:
                return
            for buffer in pair:
                if buffer is not None:  # the first touch of every page happens here, not on the training thread
                    buffer.view(torch.uint8).numpy().fill(0)  # a memset: no torch kernel on this thread
            free.put(pair)


#: Buffers the writer thread makes (and touches) before the first snapshot needs them.
PREFILL = 2


class _Pipeline:
    """The writer thread and what it shares with the training thread.

    It holds no reference to the :class:`Recorder`, so a Recorder nobody refers to any more is
    collected, and its finaliser (:meth:`finish`) writes what was queued and closes the store.
    The store is closed by the writer thread itself when it meets ``_STOP``, so a finaliser that
    happens to run on the writer thread (a garbage collection there) closes it too.
    """

    def __init__(self, writer: StoreWriter, stats: RecorderStats, max_batch: int, monitor: Any = None,
                 pool: _BufferPool | None = None) -> None:
        self.writer = writer
        self.monitor = monitor
        self.pool = pool
        self.stats = stats
        self.max_batch = max_batch
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.free: queue.SimpleQueue[tuple[torch.Tensor, torch.Tensor | None]] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.error_reported = False
        self.rows_done = 0  # snapshots committed (or failed): what flush() waits for
        self.rows_written = 0
        self.last_commit = -COMMIT_SECONDS  # the first snapshot is committed as soon as it is written
        self.stopping = False
        self.abort = False
        self._stop_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="traj-recorder-writer", daemon=True)

    def start(self) -> None:
        _register_exit_hook()
        _OPEN.add(self)
        self.thread.start()

    def _run(self) -> None:
        _lower_priority(WRITER_NICE)
        try:
            if self.pool is not None:
                try:
                    self.pool.prefill(self.free, PREFILL)
                except BaseException as exc:  # reported to the training thread at its next call
                    self.error = exc
            stop = False
            while not stop:
                items = [self._next()]
                while len(items) < self.max_batch:
                    try:
                        items.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in items)  # a flush racing close may put _COMMIT after it
                commit = stop or any(item is _COMMIT for item in items)
                batch = [item for item in items if item is not _STOP and item is not _COMMIT]
                self.rows_written += len(batch)
                try:
                    if self.error is None:
                        self._write(batch)
                        if commit or time.monotonic() - self.last_commit >= COMMIT_SECONDS:
                            self._commit()
                except BaseException as exc:  # reported to the training thread at its next call
                    self.error = exc
                finally:
                    for theta_buf, grad_buf, _, _ in batch:
                        self.free.put((theta_buf, grad_buf))
                    if self.error is not None:
                        self.rows_done = self.rows_written
            if self.monitor is not None:
                try:
                    self.monitor.close()
                except BaseException as exc:
                    if self.error is None:
                        self.error = exc
            try:
                if self.abort or (self.error is not None and (self.writer.staged or self.writer.n_snapshots == 0)):
                    # an interrupted or failed --overwrite run leaves the old store as it was; a new
                    # store that never committed a snapshot leaves nothing behind
                    self.writer.abort()
                else:
                    self.writer.close()  # commits, trims every array, writes state "closed", releases the lock
            except BaseException as exc:
                if self.error is None:
                    self.error = exc
        finally:
            _OPEN.discard(self)

    def _next(self) -> Any:
        """The next item of the queue; ``_COMMIT`` when written snapshots have waited COMMIT_SECONDS."""
        if not self.writer.n_pending:
            return self.queue.get()
        try:
            return self.queue.get(timeout=max(0.0, self.last_commit + COMMIT_SECONDS - time.monotonic()))
        except queue.Empty:
            return _COMMIT

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        """Write the batch's data (its buffers are free afterwards); committed by :meth:`_commit`."""
        if not batch:
            return
        for theta_buf, grad_buf, event, meta in batch:
            if event is not None:
                event.synchronize()
            theta = _as_numpy(theta_buf)
            if self.monitor is not None:  # its fit's numbers go with the snapshot, as metrics live.*
                fit = self.monitor.observe(theta, meta["step"])
                if fit is not None:
                    meta = {**meta, "metrics": {**meta["metrics"], **fit.metrics()}}
            self.writer.append(
                theta,
                grads=None if grad_buf is None else _as_numpy(grad_buf),
                **meta,
            )
        self.writer.write_data()

    def _commit(self) -> None:
        if self.writer.n_pending:
            self.writer.commit()
            self.stats.commits += 1
        self.last_commit = time.monotonic()
        self.rows_done = self.rows_written

    def finish(self, *, abort: bool = False) -> None:
        """Write every snapshot queued so far, close the store and wait for it (idempotent).

        ``abort``: discard instead of closing (:meth:`StoreWriter.abort`).
        """
        with self._stop_lock:
            if not self.stopping:
                self.stopping = True
                self.abort = abort
                self.queue.put(_STOP)
        if threading.current_thread() is not self.thread:
            self.thread.join()

    def unreported_error(self) -> BaseException | None:
        return None if self.error_reported else self.error


def _lower_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps nicer (Linux: per thread); a no-op where unsupported."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted, or a platform where the id is not a thread's
        pass


#: Pipelines whose store is still open; closed by :func:`_close_open_pipelines` at exit.
_OPEN: set[_Pipeline] = set()
_exit_hook = {"registered": False}


def _finalize(pipeline: _Pipeline) -> None:
    """Finaliser of a Recorder dropped without ``close()``: keep every snapshot it took."""
    pipeline.finish()
    _warn_lost(pipeline)


def _warn_lost(pipeline: _Pipeline) -> None:
    error = pipeline.unreported_error()
    if error is not None:  # nobody is left to raise to: say so rather than lose it silently
        warnings.warn(
            f"traj Recorder for {pipeline.writer.path} was not closed and its writer failed: {error}",
            RuntimeWarning,
            stacklevel=2,
        )


def _close_open_pipelines() -> None:
    for pipeline in list(_OPEN):
        try:
            pipeline.finish()
            _warn_lost(pipeline)
        except Exception:  # one store's failure must not keep the others open
            pass


def _register_exit_hook() -> None:
    """Close every open store at interpreter exit, while zarr's I/O executor still runs.

    ``threading._register_atexit`` hooks run in reverse order of registration at the start of
    threading's shutdown; ``concurrent.futures`` registers its own (which stops every executor)
    when it is imported, so importing it first puts ours ahead of it. It is private and kept: the
    public ``atexit`` runs after threading's shutdown has stopped zarr's executor, too late to flush.
    """
    if _exit_hook["registered"]:
        return
    import concurrent.futures.thread  # noqa: F401  (registers its shutdown hook before ours)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(_close_open_pipelines)
        else:  # pragma: no cover - CPython has had it since 3.9
            atexit.register(_close_open_pipelines)
    except RuntimeError:  # a Recorder made during shutdown: its finaliser still closes it
        return
    _exit_hook["registered"] = True


if hasattr(os, "register_at_fork"):  # a forked child has no writer thread: never touch the parent's stores
    os.register_at_fork(after_in_child=_OPEN.clear)


class _ParameterWatch:
    """Tells, cheaply, whether the model still holds the parameter objects the Recorder captured.

    ``m.weight = nn.Parameter(...)`` (or replacing a submodule) puts a new tensor in the model
    while the Recorder would keep copying the old one. Each path to a recorded parameter is a
    chain of ``_modules`` entries ending in a ``_parameters`` entry; checking those entries by
    identity costs one dict lookup each (a few microseconds for a hundred tensors).
    """

    def __init__(self, model: nn.Module, params: list[nn.Parameter]) -> None:
        recorded = {id(p) for p in params}
        self._model = model
        self._checks: list[tuple[dict[str, Any], str, Any, str, str]] = []
        self._fallback: dict[str, nn.Parameter] | None = None
        seen: set[tuple[int, str]] = set()
        named = [(n, p) for n, p in model.named_parameters(remove_duplicate=False) if id(p) in recorded]
        for name, param in named:
            parts = name.split(".")
            module = model
            try:
                for depth, part in enumerate(parts[:-1]):
                    child = module._modules[part]
                    if (id(module._modules), part) not in seen:
                        seen.add((id(module._modules), part))
                        self._checks.append((module._modules, part, child, ".".join(parts[: depth + 1]), "module"))
                    module = child
                if module._parameters[parts[-1]] is not param:
                    raise KeyError(name)
            except (KeyError, AttributeError, TypeError):  # a module that names its parameters its own way
                self._fallback = dict(named)
                self._checks = []
                return
            self._checks.append((module._parameters, parts[-1], param, name, "parameter"))

    def check(self) -> None:
        if self._fallback is not None:
            current = dict(self._model.named_parameters(remove_duplicate=False))
            for name, param in self._fallback.items():
                if current.get(name) is not param:
                    raise _replaced("parameter", name)
            return
        for container, key, expected, name, kind in self._checks:
            if container.get(key) is not expected:
                raise _replaced(kind, name)


def _replaced(kind: str, name: str) -> RecorderError:
    return RecorderError(
        f"{kind} {name!r} of the model was replaced after the Recorder started, which would keep recording "
        f"the old tensor; change weights in place (with torch.no_grad(): p.copy_(new)) or start a new Recorder"
    )


def _as_numpy(buffer: torch.Tensor) -> np.ndarray:
    """A host buffer as numpy without a copy; bfloat16 (which numpy lacks) as its uint16 bit patterns."""
    if buffer.dtype == torch.bfloat16:
        return buffer.view(torch.int16).numpy().view(np.uint16)
    return buffer.numpy()


def _refuse_unasked_append(path: str | os.PathLike[str]) -> None:
    """Refuse to append to a store that holds snapshots when the caller did not say ``resume=True``.

    Checked before the store is opened (opening marks it "open"), so a refusal touches nothing.
    A store another writer holds is left to the writer's lock to refuse, with the holder's pid.
    """
    from ..store import RunStore

    if not os.path.isfile(os.path.join(path, "zarr.json")):
        return
    store = RunStore(path, allow_damaged=True)
    if store.n_snapshots == 0 or store.writer_active:
        return
    raise RecorderError(
        f"{path} already holds {store.n_snapshots} snapshot(s), up to step {int(store.steps[-1])}; "
        "pass resume=True to continue that run (the model must be in its last recorded state), "
        "overwrite=True to replace it, or record into a new path"
    )


def size_text(n_bytes: int) -> str:
    """``n_bytes`` for a person: 812 B, 3.4 kB, 12.1 MB, 2.0 GB (powers of 1000)."""
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _steps_text(steps: np.ndarray) -> str:
    if not steps.size:
        return "no snapshots"
    return f"{steps.size} snapshot(s), steps {int(steps[0])} to {int(steps[-1])}"


def resume_plan(steps: np.ndarray, start: int, every: int) -> tuple[str, tuple[int, int] | None]:
    """What a resume at step ``start`` does to a store holding snapshots at ``steps`` (recording every
    ``every`` optimizer steps): the line that says so, and the gap ``(last kept, next new)`` it leaves
    when the store ends more than ``every`` steps before the first new snapshot (else None)."""
    kept = steps[steps <= start]
    replaced = steps[steps > start]
    first_new = (start // every + 1) * every
    line = f"it holds {_steps_text(steps)}; training resumes at step {start}, new snapshots start at step {first_new}"
    if replaced.size:
        line += (f"; the {replaced.size} snapshot(s) of steps {int(replaced[0])} to {int(replaced[-1])} are replaced "
                 "by the resumed run's")
    gap = None
    if kept.size and first_new - int(kept[-1]) > every:
        gap = (int(kept[-1]), first_new)
        line += (f"; no snapshot between steps {gap[0]} and {gap[1]}: a gap (the store was committed only to step "
                 f"{gap[0]}; `traj info` lists it, analyses take a window on one side)")
    return line, gap


class Recorder:
    """Record a model's weight trajectory into a run store.

    Parameters
    ----------
    path : str or path-like
        Store directory. An existing store that holds snapshots is refused unless ``resume``
        (append to it) or ``overwrite`` (replace it) says what to do with it.
    model : nn.Module
    every, params, grads, dtype, compressor, buffer_bytes, overwrite, live
        The options every recorder shares, with their types, defaults and meaning: see
        :class:`~traj.record.RecordOptions` (here ``every`` counts ``unit``s). Kept as :attr:`options`.
    unit : {"step", "epoch"}
    record_initial : bool
        Take snapshot 0 (the initial weights) when the store is new.
    start_step : int, optional
        Global step of the model's current state; default 0 for a new store and the last
        recorded step when appending.
    recipe : mapping, optional
        ``{"name", "config", "seed"}`` written into the store's attributes.
    resume : bool
        Append to an existing store with the same layout (a run continued after a crash or
        from a checkpoint, with the model in that state); a store that does not exist yet is
        created. Without it, appending a from-scratch re-run would stitch two runs together.
    rewind : bool
        With ``resume``: a ``start_step`` before the store's last step is accepted (a run resumed
        from an earlier checkpoint); the snapshots after it belong to a continuation that is being
        trained again and are replaced, forgotten only when the first new snapshot is written
        (a :class:`~traj.errors.ReplacingSnapshotsWarning` says which). Without it such a
        ``start_step`` is refused.
    announce : callable, optional
        Where the Recorder's lines go: one when it opens (store, spacing, what is recorded), one at a
        resume (what the store holds, where the new snapshots start, any gap), one at :meth:`close`
        (snapshots, bytes, where). Default: ``logging.getLogger("traj.record").info``. A resume that
        leaves steps without a snapshot also warns (:class:`~traj.errors.SnapshotGapWarning`).

    Notes
    -----
    Call :meth:`close` (or use ``with``). A Recorder that is dropped, or still open when the
    interpreter exits (when the main thread ends), still writes every snapshot it took, closes
    the store and releases its lock. An optimizer it is attached to keeps it alive until the
    optimizer is dropped.
    The recorded parameters must stay the same tensors: replacing one
    (``m.weight = nn.Parameter(...)``) raises :class:`RecorderError` at the next snapshot.

    Examples
    --------
    >>> with Recorder("run.zarr", model, every=10) as rec:   # doctest: +SKIP
    ...     rec.attach(optimizer)
    ...     for x, y in loader:
    ...         loss = loss_fn(model(x), y)
    ...         loss.backward()
    ...         rec.log(loss=loss.item())
    ...         optimizer.step(); optimizer.zero_grad()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: nn.Module,
        *,
        every: int = RecordOptions.every,
        unit: str = "step",
        dtype: str | None = RecordOptions.dtype,
        grads: bool = RecordOptions.grads,
        params: Iterable[str] | None = RecordOptions.params,
        record_initial: bool = True,
        start_step: int | None = None,
        buffer_bytes: int = RecordOptions.buffer_bytes,
        min_buffers: int = 4,
        recipe: Mapping[str, Any] | None = None,
        overwrite: bool = RecordOptions.overwrite,
        compressor: str = RecordOptions.compressor,
        resume: bool = False,
        rewind: bool = False,
        announce: Callable[[str], None] | None = None,
        live: Any = RecordOptions.live,
    ) -> None:
        self._closed = True  # until the store is open
        if unit not in ("step", "epoch"):
            raise RecorderError(f"unit must be 'step' or 'epoch', not {unit!r}")
        #: The options every recorder shares (:class:`~traj.record.RecordOptions`), checked.
        self.options = options = RecordOptions.from_arguments(locals())
        self._live = options.live
        self._announce = logger.info if announce is None else announce
        self.model = model
        self.every = options.every
        self.unit = unit
        self.record_grads = options.grads
        self.layout, self._params = layout_of(model, options.params)
        for name, p in zip(self.layout.names, self._params, strict=True):
            if p.is_meta:  # checked before the store exists: nothing is created for a model with no data
                raise RecorderError(
                    f"parameter {name!r} is on the meta device and holds no values to record; "
                    "materialise the model (model.to_empty(device=...) and initialise it) first"
                )
        self._sizes = [p.numel() for p in self._params]
        self._watch = _ParameterWatch(model, self._params)
        dtype = check_dtype(default_dtype(p.dtype for p in self._params) if options.dtype is None else options.dtype)
        self._torch_dtype = getattr(torch, dtype)
        lossy = lossy_from([p.dtype for p in self._params], dtype)
        if not (resume or options.overwrite):
            _refuse_unasked_append(path)
        writer = StoreWriter(
            path,
            self.layout,
            dtype=dtype,
            spacing={"every": options.every, "unit": unit},
            recipe=recipe,
            overwrite=options.overwrite,
            compressor=options.compressor,
            attrs={"lossy": lossy} if lossy else None,
        )
        try:
            self._open(writer, options.grads, options.buffer_bytes, min_buffers, start_step, record_initial, rewind)
        except BaseException:
            if self._closed:  # the pipeline never started: the store is still ours to close
                try:
                    writer.close()
                except Exception:  # the error in flight says more than a failed close
                    pass
            else:
                self._close_quietly()
            raise

    def _open(self, writer: StoreWriter, grads: bool, buffer_bytes: int, min_buffers: int,
              start_step: int | None, record_initial: bool, rewind: bool = False) -> None:
        self._writer = writer
        self.path = writer.path
        self.stats = RecorderStats()
        self._cuda = any(p.is_cuda for p in self._params)
        n = self.layout.n_params
        row_bytes = n * writer.dtype.itemsize * (2 if grads else 1)
        self._max_buffers = max(min_buffers, min(4096, buffer_bytes // max(1, row_bytes)))
        self._pending_log: dict[str, float] = {}
        self._hook: Any = None

        resumed = writer.n_snapshots > 0
        last = writer.last_step
        if start_step is None:
            start_step = last if last is not None else 0
        elif last is not None and start_step < last:
            if not rewind:
                raise RecorderError(
                    f"{self.path} already holds snapshots up to step {last}; cannot restart at step {start_step} "
                    "(pass rewind=True to replace the later ones, or record into a new path)"
                )
            writer.discard_after(int(start_step), deferred=True)
            first, end, count = writer.replacing or (last, last, 0)
            warnings.warn(
                f"{self.path} holds snapshots up to step {last}; resuming at step {start_step}, so the {count} "
                f"snapshot(s) of steps {first} to {end} will be replaced by the resumed run's (they are kept until "
                "its first snapshot is written)",
                ReplacingSnapshotsWarning,
                stacklevel=4,
            )
        self.global_step = int(start_step)
        self.epoch = 0
        what = (f"{len(self.layout.entries)} tensor(s), {self.layout.n_params:,} values as {writer.stored_dtype}"
                f"{' with gradients' if grads else ''}, every {self.every} {self.unit}(s)")
        if resumed:
            from ..store import RunStore

            reader = RunStore(self.path)
            kept = int(np.searchsorted(reader.steps, self.global_step, side="right"))
            epochs = reader.epochs[:kept]
            self.epoch = int(max(0, epochs[-1])) if epochs.size else 0
            if self.unit == "step":
                line, gap = resume_plan(np.asarray(reader.steps, dtype=np.int64), self.global_step, self.every)
            else:
                line, gap = f"it holds {_steps_text(np.asarray(reader.steps))}; training resumes at step " \
                            f"{self.global_step}", None
            self._announce(f"traj: resuming {self.path} ({what}): {line}")
            if gap is not None:
                warnings.warn(
                    f"{self.path} holds snapshots only up to step {gap[0]} and training resumes at step "
                    f"{self.global_step}: the first new snapshot is step {gap[1]}, so the trajectory has a gap "
                    f"between steps {gap[0]} and {gap[1]} (`traj info` reports it; analyses take a window on "
                    "one side of it)",
                    SnapshotGapWarning,
                    stacklevel=4,
                )
        else:
            self._announce(f"traj: recording {self.path}: {what}")
        # the live monitor (traj.live.LiveOptions.start) runs on the writer thread, off the training thread
        self.monitor = None if self._live is None else self._live.start(n, writer.stored_dtype, layout=self.layout,
                                                                           path=self.path)
        self._pool = _BufferPool(n, self._torch_dtype, self._cuda, grads, self._max_buffers)
        self._pipe = _Pipeline(writer, self.stats, max(writer.t_chunk, (64 << 20) // max(1, row_bytes)), self.monitor,
                               self._pool)
        self._pipe.start()
        self._closed = False
        # Holds the pipeline, not the Recorder; at exit _close_open_pipelines does the work instead.
        self._finalizer = weakref.finalize(self, _finalize, self._pipe)
        self._finalizer.atexit = False
        if record_initial and not resumed:
            self.snapshot()

    # ------------------------------------------------------------------ training-thread side
    def attach(self, optimizer: torch.optim.Optimizer) -> Recorder:
        """Count every ``optimizer.step()`` through a post-step hook; the loop needs no change."""
        if self._hook is not None:
            raise RecorderError("this recorder is already attached to an optimizer")
        self._hook = optimizer.register_step_post_hook(lambda *_: self.step())
        return self

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def log(self, loss: float | None = None, **metrics: float) -> None:
        """Values to store with the next snapshot (for loops that use :meth:`attach`)."""
        if loss is not None:
            self._pending_log["loss"] = float(loss)
        for key, value in metrics.items():
            self._pending_log[key] = float(value)

    def step(self, *, loss: float | None = None, metrics: Mapping[str, float] | None = None,
             step: int | None = None) -> bool:
        """Count one optimizer step; snapshot when it falls on the spacing. Returns whether it did."""
        self._check_open()
        self.global_step = self.global_step + 1 if step is None else int(step)
        if loss is not None or metrics:
            self.log(loss, **dict(metrics or {}))
        if self.unit == "step" and self.global_step % self.every == 0:
            self.snapshot()
            return True
        return False

    def epoch_end(self, *, loss: float | None = None, metrics: Mapping[str, float] | None = None) -> bool:
        """Mark the end of an epoch; snapshots when ``unit="epoch"`` and the epoch is on the spacing."""
        self._check_open()
        if loss is not None or metrics:
            self.log(loss, **dict(metrics or {}))
        self.epoch += 1
        taken = False
        if self.unit == "epoch" and self.epoch % self.every == 0:
            last = self._writer.last_step
            if last is None or self.global_step > last:
                self.snapshot(epoch=self.epoch - 1)
                taken = True
        self._pending_log.clear()
        return taken

    def snapshot(self, *, step: int | None = None, epoch: int | None = None) -> None:
        """Take a snapshot of the model now (at ``step``, default the current global step)."""
        self.submit(self.capture(), step=step, epoch=epoch)

    @torch.no_grad()
    def capture(
        self,
        values: Mapping[str, torch.Tensor] | None = None,
        grads: Mapping[str, torch.Tensor | None] | None = None,
    ) -> Capture:
        """Copy θ into a host buffer now; :meth:`submit` writes it once its step and metrics are known.

        Parameters
        ----------
        values : mapping of str to Tensor, optional
            The tensors to record instead of the model's parameters, named as in the layout
            (e.g. a full state dict gathered from sharded parameters); extra keys are ignored.
        grads : mapping of str to Tensor or None, optional
            Gradients to record instead of the parameters' ``.grad`` (``grads=True`` only).
        """
        self._check_open()
        self._watch.check()
        t0 = time.perf_counter()
        if values is None:
            theta_src: list[Any] = [p.detach() for p in self._params]
        else:
            theta_src = [_given(values, e, "tensor", required=True) for e in self.layout.entries]
        if grads is None:
            grad_src: list[Any] = [p.grad for p in self._params]
        else:
            grad_src = [_given(grads, e, "gradient", required=False) for e in self.layout.entries]
        theta_buf, grad_buf = self._take_buffers()
        offset = 0
        for k, (name, n) in enumerate(zip(self.layout.names, self._sizes, strict=True)):
            src = theta_src[k]
            if src.numel() != n:  # resized in place (p.data = ...), or a given tensor of another size
                self._pipe.free.put((theta_buf, grad_buf))
                raise RecorderError(
                    f"parameter {name!r} now has {src.numel()} values; the store's layout records {n}"
                )
            theta_buf[offset : offset + n].copy_(src.reshape(-1), non_blocking=self._cuda)
            if grad_buf is not None:
                g = grad_src[k]
                if g is None:
                    grad_buf[offset : offset + n].fill_(float("nan"))
                else:
                    grad_buf[offset : offset + n].copy_(g.detach().reshape(-1), non_blocking=self._cuda)
            offset += n
        event = None
        if self._cuda:
            event = torch.cuda.Event()
            event.record()
        self.stats.capture_seconds += time.perf_counter() - t0
        return Capture(theta_buf, grad_buf, event)

    def submit(self, capture: Capture, *, step: int | None = None, epoch: int | None = None,
               loss: float | None = None, metrics: Mapping[str, float] | None = None) -> None:
        """Queue a :meth:`capture` for writing, with its step (default the current global step),
        epoch, loss and metrics (added to those passed to :meth:`log` since the last snapshot)."""
        self._check_open()
        if capture.submitted:
            raise RecorderError("this capture was already submitted")
        capture.submitted = True
        if loss is not None or metrics:
            self.log(loss, **dict(metrics or {}))
        log = self._pending_log
        self._pending_log = {}
        meta = {
            "step": self.global_step if step is None else int(step),
            "epoch": self.epoch if epoch is None else int(epoch),
            "time": time.time(),
            "loss": log.pop("loss", None),
            "metrics": log,
        }
        self._pipe.queue.put((capture.theta, capture.grads, capture.event, meta))
        self.stats.snapshots += 1

    def _take_buffers(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            return self._pipe.free.get_nowait()
        except queue.Empty:
            pass
        pair = self._pool.new()
        if pair is not None:
            return pair
        t0 = time.perf_counter()
        while True:  # the writer is behind by the whole pool: wait for a buffer (backpressure)
            try:
                buffers = self._pipe.free.get(timeout=0.5)
                break
            except queue.Empty:
                self._check_open()
        self.stats.wait_seconds += time.perf_counter() - t0
        return buffers

    def _check_open(self) -> None:
        if self._closed or self._pipe.stopping:
            raise RecorderError("the recorder is closed")
        self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        error = self._pipe.error
        if error is not None:
            self._pipe.error_reported = True
            raise RecorderError(f"the background writer failed: {error}") from error

    # ------------------------------------------------------------------ lifetime
    @property
    def n_committed(self) -> int:
        return self._writer.n_snapshots

    def flush(self) -> None:
        """Block until every snapshot taken so far is committed."""
        self._check_open()
        if self._pipe.rows_done < self.stats.snapshots:
            self._pipe.queue.put(_COMMIT)
        while self._pipe.rows_done < self.stats.snapshots and self._pipe.error is None:
            time.sleep(0.001)
        self._raise_writer_error()

    def close(self) -> None:
        """Write every snapshot taken, trim and close the store, release its lock; announce what it holds."""
        was_open = not self._closed
        self._stop(abort=False)
        self._raise_writer_error()
        if was_open:
            self._announce(self._closing_line())

    def _closing_line(self) -> str:
        from ..store import RunStore

        try:
            store = RunStore(self.path)
            return (f"traj: {self.path}: {_steps_text(np.asarray(store.steps))}, "
                    f"{size_text(store.nbytes_stored())} on disk")
        except Exception as exc:  # the store closed; a line that cannot be composed says so, never raises
            return f"traj: {self.path} closed ({self.stats.snapshots} snapshot(s) written by this run; {exc})"

    def _stop(self, *, abort: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self.detach()
        self._finalizer.detach()
        self._pipe.finish(abort=abort)

    def _close_quietly(self) -> None:
        """:meth:`close`, keeping a writer error from replacing an exception already in flight."""
        try:
            self.close()
        except RecorderError:
            pass

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        if self._writer.staged:  # replacing a store (--overwrite): an interrupted run leaves the old one as it was
            self._stop(abort=True)
            return
        self._close_quietly()  # keep every snapshot taken before the error, then let the error through
