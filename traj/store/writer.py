"""Writing a run store: create or resume, append snapshots, commit, close.

Crash safety rests on three facts. Every file is replaced atomically (written under a
temporary name, then renamed). Each group commit writes all its data first (``params`` and
``grads`` shards or chunks, then the per-snapshot series), and only then grows the arrays'
shapes, each ``zarr.json`` replaced atomically and ``step``'s last: a row exists for any
reader (traj or a plain Zarr reader) only once its data is on disk, and traj counts a row as
committed once ``step``'s shape holds it. And a resumed store first trims every array back to
the committed rows, so a torn commit is never mistaken for a committed one.

New stores are format version 2 (:func:`~traj.store.schema.choose_shards`): ``params`` and
``grads`` are Zarr v3 sharded arrays whose shards this writer encodes itself
(:class:`~traj.store.shards.ShardEncoder`, byte-identical to zarr's sharding codec). A
version-1 store is appended to in its own layout, chunk by chunk (:class:`ChunkFiles`).
Rows are written into shards (chunks) ``t_chunk`` tall. A partly filled last one is written
whole (the rows already committed are kept in memory, padded with NaN), so no write ever reads
a file back from disk; a wide row has shards one row tall and is written once.

zarr's ``Array.__setitem__`` cost 12-14 ms of CPU per 4.3 MB row here, against ~3 ms to encode
and ~3 ms to write it, which decided whether recording keeps up with training; zarr creates
the arrays and the group, and traj writes chunks, shards and shapes itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..atomic import Staging
from ..errors import (
    LayoutMismatchError,
    OutputConflictError,
    RecorderError,
    StoreFormatError,
    StoreWriteError,
    TrajError,
)
from .dtypes import encode, fill_value, storage_dtype
from .lock import LOCK_NAME, WriterLock
from .run_store import MAX_METRICS, RunStore
from .schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INNER_CHUNK_BYTES,
    READABLE_VERSIONS,
    SHARD_CHUNKS,
    STACK_BYTES,
    STORE_MEMBERS,
    UNCOMMITTED_STEP,
    Layout,
    check_dtype,
    choose_chunks,
    choose_shards,
)
from .shards import ShardEncoder, chunk_encoder

__all__ = ["StoreWriter", "foreign_entries"]

_SERIES_CHUNK = 4096
_COMPRESSORS = {
    # bit shuffle, not byte shuffle: on float32 weights and gradients of a 1.07M-parameter MLP it
    # encodes a 16 KiB chunk in 55 % of the time and 9 % smaller (1.14x vs 1.04x), decodes as fast
    "lz4": {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"},
    "zstd": {"cname": "zstd", "clevel": 3, "shuffle": "bitshuffle"},
}


def _versions() -> dict[str, str]:
    import numpy
    import zarr

    versions = {"traj": __version__, "zarr": zarr.__version__, "numpy": numpy.__version__}
    versions["python"] = sys.version.split()[0]
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    return versions


class ArrayMeta:
    """One array's ``zarr.json``, held in memory; :meth:`set_rows` replaces it atomically with a new row count."""

    def __init__(self, root: Path, name: str) -> None:
        import zarr

        self.name = name
        self.path = root / name / "zarr.json"
        self.meta: dict[str, Any] = json.loads(self.path.read_bytes())
        array = zarr.open_array(zarr.storage.LocalStore(root), path=name, mode="r")  # zarr parses dtype and fill
        self.dtype = np.dtype(array.dtype)
        self.fill = array.fill_value
        codecs = self.meta["codecs"]
        self.sharded = codecs[0]["name"] == "sharding_indexed"
        self.grid = tuple(self.meta["chunk_grid"]["configuration"]["chunk_shape"])

        self._template: tuple[bytes, bytes] | None = None

    @property
    def rows(self) -> int:
        return int(self.meta["shape"][0])

    def set_rows(self, rows: int) -> None:
        if rows == self.rows:
            return
        self.meta["shape"][0] = int(rows)
        head, tail = self._text()
        _write_atomic(self.path, [head + str(int(rows)).encode() + tail])

    def _text(self) -> tuple[bytes, bytes]:
        """``zarr.json`` as the text before and after the row count. json's indenting encoder is pure
        Python (~0.2 ms per file, holding the GIL the training thread needs); it runs once per array."""
        if self._template is None:
            rows = self.meta["shape"][0]
            marker = 7_391_204_586_113_907_421  # an int no real metadata holds
            self.meta["shape"][0] = marker
            try:
                text = json.dumps(self.meta, indent=2).encode()
            finally:
                self.meta["shape"][0] = rows
            head, found, tail = text.partition(str(marker).encode())
            if not found or str(marker).encode() in tail:  # pragma: no cover - the marker is unique
                raise StoreFormatError(f"{self.path}: cannot template the array metadata")
            self._template = (head, tail)
        return self._template


class ChunkFiles:
    """Write whole chunks of one unsharded zarr v3 array directly, in zarr's own encoding.

    Codecs ``bytes`` then optionally one ``blosc`` or ``zstd`` (what the guard accepts); traj's
    own arrays use blosc, whose output is byte-identical to zarr's (tested).
    """

    def __init__(self, meta: ArrayMeta, root: Path) -> None:
        self.chunks = meta.grid
        self.fill = meta.fill
        self.dtype = meta.dtype
        self._encode = chunk_encoder(meta.meta["codecs"], self.dtype)
        self.directory = root / meta.name / "c"
        self._made: set[Path] = set()

    def write(self, index: tuple[int, ...], data: np.ndarray) -> None:
        """Write chunk ``index``; ``data`` is the chunk's region, cut short at the array's edge."""
        if data.shape != self.chunks:  # edge chunks are stored full size, padded with the fill value
            full = np.full(self.chunks, self.fill, dtype=self.dtype)
            full[tuple(slice(0, n) for n in data.shape)] = data
            data = full
        _write_atomic(self._path(index), [self._encode(data)], self._made)

    def _path(self, index: tuple[int, ...]) -> Path:
        return self.directory.joinpath(*(str(i) for i in index))


class ShardFiles(ChunkFiles):
    """Write whole shards of one sharded (T, N) array: inner chunks encoded as zarr does, then the index."""

    def __init__(self, meta: ArrayMeta, root: Path, n_columns: int) -> None:
        config = meta.meta["codecs"][0]["configuration"]
        self.chunks = meta.grid
        self.fill = meta.fill
        self.dtype = meta.dtype
        self.directory = root / meta.name / "c"
        self._made = set()
        inner = tuple(config["chunk_shape"])
        self.encoder = ShardEncoder(self.chunks, inner, n_columns, chunk_encoder(config["codecs"], self.dtype),  # type: ignore[arg-type]
                                    self.fill, self.dtype)

    def write(self, index: tuple[int, ...], data: np.ndarray) -> None:
        """Write shard ``index``; ``data`` is its region, cut short at the array's edge."""
        _write_atomic(self._path(index), self.encoder.parts(index[1], data), self._made)


def _write_atomic(path: Path, parts: list[bytes], made: set[Path] | None = None) -> None:
    """Write ``parts`` to ``path`` under a temporary name, then rename it into place."""
    if made is not None and path.parent not in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        made.add(path.parent)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            for i in range(0, len(parts), 512):
                group = parts[i : i + 512]
                want = sum(len(p) for p in group)
                written = os.writev(fd, group)
                if written != want:  # a short write (rare): finish it plainly
                    rest = memoryview(b"".join(group))[written:]
                    while rest:
                        rest = rest[os.write(fd, rest) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StoreWriter:
    """Append snapshots to a run store; the single writer of that store while open.

    Parameters
    ----------
    path : str or path-like
        Store directory. Created when missing; resumed (appended to) when it holds a run
        store with the same layout and dtype (of either format version, in its own layout).
    layout : Layout
        Parameter layout of θ.
    dtype : {"float32", "float64"}
        On-disk dtype of ``params`` (and ``grads``).
    spacing : dict, optional
        How snapshots are spaced, e.g. ``{"every": 1, "unit": "step"}``.
    recipe : dict, optional
        ``{"name", "config", "seed"}`` of the built-in recipe that produced the run.
    overwrite : bool
        Replace an existing run store instead of appending to it. The new store is built in a
        staging sibling and swapped in by :meth:`close`; until then (and if the process dies,
        or :meth:`abort` is called) the old store stays exactly as it was.
    atomic : bool
        Build a new store in a staging sibling and move it to ``path`` only at :meth:`close`
        (``traj import``, ``traj convert``): a killed build leaves nothing at ``path``. Without
        it a new store appears at ``path`` (empty, valid) as soon as it is created and every
        commit is visible there, which is what a recording that may crash needs.
    compressor : {"lz4", "zstd"}
        Blosc codec; lz4 + bit shuffle is the cheap default (float32 weights compress ~10-15 %).
    format_version : {2, 1}
        Layout of a new store: 2 (sharded, :func:`~traj.store.schema.choose_shards`) or 1
        (the old unsharded layout, kept to test that old stores still open).
    chunk_bytes : int, optional
        Decoded size of one chunk: the inner chunk of a shard (version 2, default 16 KiB) or
        the chunk (version 1, default 1 MiB).
    shard_chunks, stack_bytes : int
        Version 2: most inner chunks per shard; rows smaller than ``stack_bytes`` are stacked
        into taller shards.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        layout: Layout,
        *,
        dtype: str = "float32",
        spacing: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        atomic: bool = False,
        compressor: str = "lz4",
        format_version: int = FORMAT_VERSION,
        chunk_bytes: int | None = None,
        shard_chunks: int = SHARD_CHUNKS,
        stack_bytes: int = STACK_BYTES,
    ) -> None:
        import zarr

        self.path = Path(path)
        self.layout = layout
        #: The snapshot dtype as stored (``float32``, ``float64``, ``bfloat16``, ``float16``).
        self.stored_dtype = check_dtype(dtype)
        #: The numpy dtype of the stored arrays (``uint16`` bit patterns for bfloat16).
        self.dtype = storage_dtype(self.stored_dtype)
        self._fill = fill_value(self.stored_dtype)
        if compressor not in _COMPRESSORS:
            raise StoreFormatError(f"unknown compressor {compressor!r}; use one of {', '.join(_COMPRESSORS)}")
        if format_version not in READABLE_VERSIONS:
            raise StoreFormatError(f"unknown store format version {format_version!r}; use one of {READABLE_VERSIONS}")
        self._codec = zarr.codecs.BloscCodec(**_COMPRESSORS[compressor])
        self._pending: list[dict[str, Any]] = []  # appended, nothing written
        self._written: list[dict[str, Any]] = []  # data written (write_data), not yet committed
        self._closed = False
        self._staging: Staging | None = None  # set while a new store is built beside ``path``
        self._old_lock: WriterLock | None = None  # the store being replaced, held until the swap
        self._fresh = False  # created by this writer in place (abort removes it while it holds no rows)
        #: Entries of a replaced store that traj did not write (a README, a user's array), carried
        #: into the new store at :meth:`close`.
        self.carried: list[str] = []
        #: (first step, last step, count) of the committed snapshots a deferred
        #: :meth:`discard_after` will forget when the first new snapshot is written; else None.
        self.replacing: tuple[int, int, int] | None = None
        #: metric names not written because the store already had MAX_METRICS (the reader's limit)
        self.dropped_metrics: list[str] = []
        self._keep_at_next_write: int | None = None
        if self._existing_store(overwrite):
            self._root = self.path
            self._lock = WriterLock(self.path)
            self._lock.acquire()
            try:
                self._resume()
            except BaseException:
                self._lock.release()
                raise
            return
        made: list[Path] = []
        try:
            made = _make_parents(self.path.parent)
            self._staging = Staging(self.path)
            self._root = self._staging.path
            self._lock = WriterLock(self._root)
            self._lock.acquire()
            self._create(spacing, recipe, attrs, format_version, chunk_bytes, shard_chunks, stack_bytes)
            if not (overwrite or atomic):
                # A new store appears whole (valid and empty) and is written in place from here on;
                # if something was put at the path meanwhile, it is left alone and nothing is made.
                self._staging.commit(keep_on_conflict=False)
                self._staging = None
                self._root = self.path
                self._lock.path = self.path / LOCK_NAME
                self._fresh = True
            self._resume()
        except BaseException as exc:
            self._discard()
            for directory in reversed(made):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if isinstance(exc, OSError) and not isinstance(exc, TrajError):
                raise StoreWriteError.from_os_error(self.path, exc) from None
            raise

    # ------------------------------------------------------------------ setup
    def _existing_store(self, overwrite: bool) -> bool:
        """True when ``path`` holds a run store to append to; checks what may be replaced."""
        if os.path.lexists(self.path) and (self.path.is_symlink() or not self.path.is_dir()):
            raise StoreFormatError(f"{self.path} exists and is not a directory; refusing to write there")
        if not self.path.exists():
            return False
        if not (self.path / "zarr.json").exists():
            if any(p for p in self.path.iterdir() if p.name != ".traj-writer.lock"):
                raise StoreFormatError(f"{self.path} exists, is not empty and is not a run store; refusing to write there")
            return False
        RunStore(self.path, allow_damaged=True)  # validates the format before anything is touched
        if not overwrite:
            return True
        self._old_lock = WriterLock(self.path)
        self._old_lock.acquire()  # refuse to replace a store another process is writing; held until the swap
        return False

    @property
    def staged(self) -> bool:
        """Whether this writer builds a new store beside ``path`` (moved there by :meth:`close`)."""
        return self._staging is not None

    def _create(self, spacing: Mapping[str, Any] | None, recipe: Mapping[str, Any] | None,
                attrs: Mapping[str, Any] | None, version: int, chunk_bytes: int | None, shard_chunks: int,
                stack_bytes: int) -> None:
        """Write an empty store (every array with 0 rows) at ``self._root``; :meth:`_resume` opens it."""
        import zarr

        n = self.layout.n_params
        root_attrs: dict[str, Any] = {
            "traj": {"format": FORMAT_NAME, "version": version},
            "layout": self.layout.to_attrs(),
            "n_params": n,
            "dtype": self.stored_dtype,
            "spacing": dict(spacing or {}),
            "versions": _versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "recipe": dict(recipe) if recipe else None,
            "n_snapshots": 0,
            "state": "open",
        }
        root_attrs.update(attrs or {})
        group = zarr.open_group(zarr.storage.LocalStore(self._root), mode="a", zarr_format=3, attributes=root_attrs)
        if version == 1:
            t_chunk, n_chunk = choose_chunks(n, self.dtype.itemsize, target_bytes=chunk_bytes or (1 << 20))
            self._matrix = {"chunks": (t_chunk, n_chunk)}
        else:
            shape = choose_shards(n, self.dtype.itemsize, chunk_bytes=chunk_bytes or INNER_CHUNK_BYTES,
                                  shard_chunks=shard_chunks, stack_bytes=stack_bytes)
            self._matrix = {"chunks": shape.chunk_shape, "shards": shape.shard_shape}
        self._group = group
        _create_matrix(group, "params", n, self.dtype, self._codec, self._matrix, fill=self._fill)
        for name, dtype, fill in (("step", "int64", UNCOMMITTED_STEP), ("epoch", "int64", -1), ("time", "float64", np.nan)):
            _create_series(group, name, 0, dtype, fill, self._codec)

    def _resume(self) -> None:
        """Open the store at ``self._root`` for appending: check it, load what commits need, and
        trim every array to the committed rows (undoing a torn commit)."""
        import zarr

        reader = RunStore(self._root, allow_damaged=True)
        if reader.missing_snapshots:  # appending would write over rows a clean close counted
            raise StoreFormatError(f"cannot append to {self.path}: {reader.shortfall}")
        self.layout.check_same(reader.layout)
        if reader.stored_dtype != self.stored_dtype:
            raise LayoutMismatchError(
                f"{self.path} holds {reader.stored_dtype} snapshots; this recorder writes {self.stored_dtype} "
                f"(pass dtype={reader.stored_dtype!r} to append)"
            )
        self.format_version = reader.format_version
        self._group = zarr.open_group(zarr.storage.LocalStore(self._root), mode="r+", zarr_format=3)
        params = ArrayMeta(self._root, "params")
        self._matrix = _matrix_options(params)
        self._meta: dict[str, ArrayMeta] = {"params": params}
        self._files: dict[str, ChunkFiles] = {"params": _matrix_files(params, self._root, self.layout.n_params)}
        self._t_chunk, self._n_chunk = params.grid
        if reader.has_grads:
            self._meta["grads"] = ArrayMeta(self._root, "grads")
            self._files["grads"] = _matrix_files(self._meta["grads"], self._root, self.layout.n_params)
        committed = reader.n_snapshots
        self._series: dict[str, _Series] = {}
        known = {"step": reader.steps, "epoch": reader.epochs, "time": reader.times, "loss": reader.loss}
        known.update({f"metrics/{m}": reader.metric(m) for m in reader.metric_names})
        for name, values in known.items():
            if values is not None:
                self._add_series(name, values[:committed])
        self._committed = committed
        # Every array back to the committed rows, step first: rows of a torn commit disappear for
        # every reader, and their files are overwritten by the next commits.
        self._set_rows(committed, order=("step",) + tuple(self._meta_order()))
        self._last_step = int(reader.steps[-1]) if committed else None
        self._tail = np.empty((self._t_chunk, self.layout.n_params), dtype=self.dtype)
        self._tail_grads: np.ndarray | None = None
        self._reload_tail(reader)
        if self._group.attrs.get("state") != "open":
            self._group.attrs.update({"state": "open"})

    def _reload_tail(self, reader: RunStore | None = None) -> None:
        """Keep in memory the committed rows of the last, partly filled shard (chunk) row."""
        c0 = (self._committed // self._t_chunk) * self._t_chunk
        if self._t_chunk > 1 and "grads" in self._files and self._tail_grads is None:
            self._tail_grads = np.full_like(self._tail, self._fill)
        if c0 == self._committed:
            return
        reader = reader or RunStore(self._root, allow_damaged=True)
        self._tail[: self._committed - c0] = self._encode(reader.read(rows=slice(c0, self._committed)))
        if self._tail_grads is not None:
            self._tail_grads[: self._committed - c0] = self._encode(reader.read(rows=slice(c0, self._committed),
                                                                                array="grads"))

    def _meta_order(self) -> list[str]:
        """The arrays whose shapes a commit grows, in order: gradients, the series, ``params``; then ``step``."""
        series = [name for name in self._series if name != "step"]
        return (["grads"] if "grads" in self._meta else []) + series + ["params"]

    def _set_rows(self, rows: int, order: tuple[str, ...] | None = None) -> None:
        """Give every array ``rows`` rows by replacing its ``zarr.json``, in ``order`` (default: the
        commit order, ``step`` last: a row is committed once ``step``'s shape holds it)."""
        for name in order or (*self._meta_order(), "step"):
            meta = self._meta.get(name) or self._series[name].meta
            meta.set_rows(rows)

    def _add_series(self, name: str, values: np.ndarray) -> _Series:
        meta = ArrayMeta(self._root, name)
        series = _Series(meta, ChunkFiles(meta, self._root), values)
        self._series[name] = series
        return series

    # ------------------------------------------------------------------ state
    @property
    def n_snapshots(self) -> int:
        """Snapshots committed to disk so far."""
        return self._committed

    @property
    def n_pending(self) -> int:
        """Snapshots appended and not yet committed (written by :meth:`write_data` or not)."""
        return len(self._pending) + len(self._written)

    @property
    def last_step(self) -> int | None:
        """Step of the last snapshot appended (committed or not)."""
        return self._last_step

    @property
    def t_chunk(self) -> int:
        """Snapshots per shard (chunk) row: a commit rewrites the last partly filled one."""
        return self._t_chunk

    # ------------------------------------------------------------------ writing
    def append(
        self,
        theta: np.ndarray,
        *,
        step: int,
        epoch: int = -1,
        time: float | None = None,
        loss: float | None = None,
        metrics: Mapping[str, float] | None = None,
        grads: np.ndarray | None = None,
    ) -> None:
        """Buffer one snapshot; it is on disk after the next :meth:`commit`."""
        if self._closed:
            raise RecorderError("the store writer is closed")
        theta = self._encode(theta)
        if theta.shape != (self.layout.n_params,):
            raise LayoutMismatchError(f"snapshot has shape {theta.shape}, the store expects ({self.layout.n_params},)")
        step = self._check_step(step)
        _check_metric_names(metrics)
        if grads is not None:
            grads = self._encode(grads)
            if grads.shape != theta.shape:
                raise LayoutMismatchError(f"gradient has shape {grads.shape}, expected {theta.shape}")
        self._last_step = step
        self._pending.append(
            {
                "theta": theta,
                "grads": grads,
                "step": step,
                "epoch": int(epoch),
                "time": float(time if time is not None else _now()),
                "loss": None if loss is None else float(loss),
                "metrics": dict(metrics or {}),
            }
        )

    def _encode(self, values: Any) -> np.ndarray:
        """Values as stored (:func:`traj.store.dtypes.encode`): bfloat16 rounded to nearest even, or
        taken as bit patterns from a ``uint16`` array (a bfloat16 tensor viewed as 16-bit integers)."""
        return encode(np.asarray(values), self.stored_dtype)

    def _check_step(self, step: int) -> int:
        if self._closed:
            raise RecorderError("the store writer is closed")
        step = int(step)
        if step < 0:
            raise RecorderError(f"step must be >= 0, got {step}")
        if self._last_step is not None and step <= self._last_step:
            raise RecorderError(f"steps must increase: step {step} after step {self._last_step}")
        return step

    def commit(self) -> int:
        """Write every buffered snapshot; returns the committed count."""
        if not (self._pending or self._written):
            return self._committed
        with self._store_errors():  # disk full, read-only, ...: the committed prefix stays as it was
            return self._commit()

    def write_data(self) -> None:
        """Write the ``params`` (and ``grads``) of the buffered snapshots without committing them.

        The arrays passed to :meth:`append` are no longer needed afterwards (a caller may reuse
        them); the snapshots are committed, with their series, by the next :meth:`commit`. Their
        files lie past every array's shape until then, which no reader sees: a crash in between
        loses them as it loses a torn commit, and keeps every committed snapshot. A Recorder
        writes each snapshot's data as it arrives and commits at most every few tenths of a
        second, so a run of fast steps does not rewrite the series and every ``zarr.json`` per
        snapshot.
        """
        with self._store_errors():
            self._write_data()

    @contextlib.contextmanager
    def _store_errors(self) -> Iterator[None]:
        """An OSError of the file system (ENOSPC, EROFS, EACCES) as a :class:`StoreWriteError` naming the store."""
        try:
            yield
        except StoreWriteError:
            raise
        except OSError as exc:
            raise StoreWriteError.from_os_error(self.path, exc) from None

    def _apply_deferred_discard(self) -> None:
        if self._keep_at_next_write is not None:
            self._discard_rows(self._keep_at_next_write)

    def _write_data(self) -> None:
        if not self._pending:
            return
        self._apply_deferred_discard()
        rows, self._pending = self._pending, []
        start = self._committed + len(self._written)
        try:
            self._write_matrix("params", [r["theta"] for r in rows], start)
            if "grads" in self._files or any(r["grads"] is not None for r in rows):
                self._write_matrix("grads", [r["grads"] for r in rows], start)
        except BaseException:
            self._written = []  # the next commit starts again at the committed prefix
            raise
        self._written.extend({k: v for k, v in r.items() if k not in ("theta", "grads")} for r in rows)

    def _commit(self) -> int:
        self._write_data()
        rows, self._written = self._written, []
        start = self._committed
        end = start + len(rows)
        self._write_series(rows, start)
        self._set_rows(end)  # the commit: shapes grow, step's last
        self._committed = end
        return end

    def append_streamed(
        self,
        pieces: Iterable[np.ndarray],
        *,
        step: int,
        epoch: int = -1,
        time: float | None = None,
        loss: float | None = None,
        metrics: Mapping[str, float] | None = None,
        grads: Iterable[np.ndarray] | None = None,
    ) -> int:
        """Write and commit one snapshot whose θ arrives as consecutive column pieces.

        ``pieces`` yields 1-D arrays of any widths whose concatenation is θ (N values); ``grads``
        likewise its gradient. For a store whose shards (chunks) are one row tall, each shard is
        encoded and written as soon as its columns have arrived, so memory stays at one shard
        (about 4 MiB) plus one piece whatever N; otherwise the row is small and is assembled
        first. Snapshots buffered by :meth:`append` are committed before it. Returns the
        committed count. On an error (a piece too many or too few values) the row is not
        committed: no shape grows.
        """
        self.commit()
        step = self._check_step(step)
        _check_metric_names(metrics)
        self._apply_deferred_discard()
        n = self.layout.n_params
        if self._t_chunk > 1:
            theta = _assemble(map(self._encode, pieces), n, self.dtype)
            gradient = None if grads is None else _assemble(map(self._encode, grads), n, self.dtype)
            self.append(theta, step=step, epoch=epoch, time=time, loss=loss, metrics=metrics, grads=gradient)
            return self.commit()
        start = self._committed
        self._stream_row("params", map(self._encode, pieces), start)
        if grads is not None:
            self._ensure_grads()
            self._stream_row("grads", map(self._encode, grads), start)
        self._last_step = step
        row = {"step": step, "epoch": int(epoch), "time": float(time if time is not None else _now()),
               "loss": None if loss is None else float(loss), "metrics": dict(metrics or {})}
        self._write_series([row], start)
        self._set_rows(start + 1)
        self._committed = start + 1
        return self._committed

    def _stream_row(self, name: str, pieces: Iterable[np.ndarray], row: int) -> None:
        """Write row ``row`` of a matrix with one-row shards (chunks), each as soon as its columns arrived."""
        n = self.layout.n_params
        files = self._files[name]
        width = files.chunks[1]
        chunk = np.empty(width, dtype=self.dtype)
        filled = column = 0  # values in ``chunk``; first column of ``chunk``
        for piece in pieces:
            piece = np.asarray(piece).reshape(-1)
            if column + filled + piece.size > n:
                raise LayoutMismatchError(f"snapshot has more than the {n} values the store expects")
            while piece.size:
                take = min(piece.size, min(width, n - column) - filled)
                chunk[filled : filled + take] = piece[:take]
                filled += take
                piece = piece[take:]
                if filled == min(width, n - column):
                    files.write((row, column // width), chunk[:filled][None])
                    column += filled
                    filled = 0
        if column != n:
            raise LayoutMismatchError(f"snapshot has {column + filled} values, the store expects {n}")

    def _ensure_grads(self) -> None:
        """Create ``grads`` (cut like ``params``) at the first gradient; earlier rows read as NaN."""
        if "grads" in self._files:
            return
        n = self.layout.n_params
        _create_matrix(self._group, "grads", n, self.dtype, self._codec, self._matrix, rows=self._committed,
                       fill=self._fill)
        self._meta["grads"] = ArrayMeta(self._root, "grads")
        self._files["grads"] = _matrix_files(self._meta["grads"], self._root, n)
        self._tail_grads = np.full((self._t_chunk, n), self._fill, dtype=self.dtype)

    def _write_series(self, rows: list[dict[str, Any]], start: int) -> None:
        """Per-snapshot values of ``rows`` (at ``start``); their shapes grow afterwards (:meth:`_set_rows`)."""
        self._series_values("epoch", start, [r["epoch"] for r in rows])
        self._series_values("time", start, [r["time"] for r in rows])
        if "loss" in self._series or any(r["loss"] is not None for r in rows):
            self._series_values("loss", start, [np.nan if r["loss"] is None else r["loss"] for r in rows])
        metric_names = {k.split("/", 1)[1] for k in self._series if k.startswith("metrics/")}
        for name in dict.fromkeys(k for r in rows for k in r["metrics"]):  # first logged first
            if name in metric_names:
                continue
            if len(metric_names) >= MAX_METRICS:  # one more and no reader would open the store
                if name not in self.dropped_metrics:
                    self.dropped_metrics.append(name)
                continue
            metric_names.add(name)  # checked at append (and again where its series is created)
        for name in sorted(metric_names):
            self._series_values(f"metrics/{name}", start, [float(r["metrics"].get(name, np.nan)) for r in rows])
        self._series_values("step", start, [r["step"] for r in rows])

    def discard_after(self, step: int, *, deferred: bool = False) -> int:
        """Forget the committed snapshots whose step is greater than ``step``; returns how many.

        For a run resumed from a checkpoint taken at ``step``: what the first attempt recorded
        after it belongs to a continuation that is being trained again. ``step``'s shape shrinks
        first (that uncommits the rows), then every other array's; the next commits overwrite
        the files. A crash midway leaves exactly the kept prefix.

        ``deferred``: keep them until the first new snapshot is written (the next :meth:`append`
        after ``step`` is accepted at once): a resumed run that fails before it records anything
        leaves the store as it was. :attr:`replacing` says what will go.
        """
        if self._closed:
            raise RecorderError("the store writer is closed")
        if self._pending or self._written:
            raise RecorderError("commit the buffered snapshots before discarding any")
        steps = self._series["step"].values[: self._committed]
        keep = int(np.searchsorted(steps, int(step), side="right"))
        dropped = self._committed - keep
        if not dropped:
            return 0
        if deferred:
            self.replacing = (int(steps[keep]), int(steps[self._committed - 1]), dropped)
            self._keep_at_next_write = keep
            self._last_step = int(steps[keep - 1]) if keep else None
            return dropped
        return self._discard_rows(keep)

    def _discard_rows(self, keep: int) -> int:
        """Forget every committed row from ``keep`` on (:meth:`discard_after`)."""
        steps = self._series["step"].values[: self._committed]
        dropped = self._committed - keep
        self.replacing = None
        self._keep_at_next_write = None
        # The clean-close count goes down first: a crash after it and before the shapes shrink leaves
        # more committed rows than counted (sound), never fewer (which reads as lost data).
        closed = self._group.attrs.get("n_snapshots_closed", self._group.attrs.get("n_snapshots"))
        if isinstance(closed, int) and closed > keep:
            self._group.attrs.update({"n_snapshots_closed": keep, "n_snapshots": keep})
        self._set_rows(keep, order=("step",) + tuple(self._meta_order()))
        for series in self._series.values():
            series.values[keep : self._committed] = series.fill
        self._committed = keep
        if not (self._pending or self._written):  # else the buffered snapshot's step stays the last
            self._last_step = int(steps[keep - 1]) if keep else None
        self._reload_tail()
        return dropped

    def _series_values(self, name: str, start: int, values: list[Any]) -> None:
        series = self._series_array(name, start)
        series.put(start, values)

    def _series_array(self, name: str, rows: int) -> _Series:
        if name not in self._series:
            if "/" in name:
                group_name, leaf = name.split("/", 1)
                _check_metric_name(leaf)
                if group_name not in self._group:
                    self._group.create_group(group_name)
            _create_series(self._group, name, rows, "float64", np.nan, self._codec)  # rows before it: NaN
            self._add_series(name, np.full(rows, np.nan))
        return self._series[name]

    def _write_matrix(self, name: str, values: list[np.ndarray | None], start: int) -> None:
        n = self.layout.n_params
        if name == "params":
            tail = self._tail
        else:
            self._ensure_grads()
            tail = self._tail_grads
        assert tail is not None
        tc = self._t_chunk
        end = start + len(values)
        c0 = (start // tc) * tc
        c_end = math.ceil(end / tc) * tc
        if tc == 1 and all(v is not None for v in values):
            region = values[0][None] if len(values) == 1 else np.stack(values)  # no padding, no copy for one row
        else:
            region = np.full((c_end - c0, n), self._fill, dtype=self.dtype)
            region[: start - c0] = tail[: start - c0]
            for i, v in enumerate(values, start=start - c0):
                if v is not None:
                    region[i] = v
        files = self._files[name]
        nc = files.chunks[1]
        for r in range(0, c_end - c0, tc):
            rows = region[r : r + tc]
            for j in range(0, n, nc):
                files.write(((c0 + r) // tc, j // nc), rows[:, j : j + nc])
        last_chunk = (end // tc) * tc
        tail[: end - last_chunk] = region[last_chunk - c0 : end - c0]

    def close(self) -> None:
        """Commit what is buffered, release the lock; files past the committed rows are removed.

        A staged store (``overwrite``/``atomic``) is moved to ``path`` here, replacing the old
        one in one rename; if anything fails first, the staging copy is deleted and ``path`` is
        left as it was.
        """
        if self._closed:
            return
        try:
            self.commit()
            self._remove_past(self._committed)
            # n_snapshots_closed is written only here: a later append cross-checks the committed rows against it.
            self._group.attrs.update(
                {"n_snapshots": self._committed, "n_snapshots_closed": self._committed, "state": "closed"}
            )
            if self._staging is not None:
                if self._old_lock is not None:  # replacing a store: what the user put in it stays
                    self.carried = _carry_foreign(self.path, self._root)
                try:
                    self._staging.commit()
                except OutputConflictError as conflict:  # kept beside the path: its lock goes with it
                    if conflict.kept_at is not None:
                        self._lock.path = Path(str(conflict.kept_at)) / LOCK_NAME
                    self._staging = None
                    raise
                self._staging = None
                self._lock.path = self.path / LOCK_NAME  # released (and unlinked) where the store now is
        except BaseException as exc:
            self._discard()
            if isinstance(exc, OSError) and not isinstance(exc, TrajError):
                raise StoreWriteError.from_os_error(self.path, exc) from None
            raise
        finally:
            self._closed = True
            self._release_locks()

    def _remove_past(self, rows: int) -> None:
        """Delete chunk and shard files that hold only rows past ``rows`` (left by a torn commit, a
        discard or version 1's preallocation): no reader sees them, they only take space."""
        metas = [*self._meta.values(), *(s.meta for s in self._series.values())]
        for meta in metas:
            directory = self._root / meta.name / "c"
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.name.isdigit() and int(entry.name) * meta.grid[0] >= rows:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    def abort(self) -> None:
        """Stop without finishing: a staged store is deleted (``path`` keeps the old store or
        stays absent); a store written in place keeps its committed rows, like a crash, unless
        this writer created it and committed none (then nothing is left behind)."""
        if self._closed:
            return
        self._pending = []
        self._written = []
        self._closed = True
        self._discard()
        if self._fresh and self._committed == 0:
            shutil.rmtree(self.path, ignore_errors=True)

    def _discard(self) -> None:
        if self._staging is not None:
            self._staging.abort()
            self._staging = None
        self._release_locks()

    def _release_locks(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
        if self._old_lock is not None:
            self._old_lock.release()
            self._old_lock = None

    def update_attrs(self, **attrs: Any) -> None:
        self._group.attrs.update(attrs)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Series:
    """A 1-D per-snapshot array, its values kept in memory so each commit writes whole chunks."""

    def __init__(self, meta: ArrayMeta, files: ChunkFiles, values: np.ndarray) -> None:
        self.meta = meta
        self.files = files
        self.name = meta.name
        self.fill = files.fill
        self.values = np.full(max(64, 2 * len(values)), self.fill, dtype=meta.dtype)
        self.values[: len(values)] = values

    def put(self, start: int, values: list[Any]) -> None:
        """Set rows [start, start + len(values)) and write every chunk that holds one of them."""
        stop = start + len(values)
        if stop > self.values.size:
            grown = np.full(max(stop, 2 * self.values.size), self.fill, dtype=self.values.dtype)
            grown[: self.values.size] = self.values
            self.values = grown
        self.values[start:stop] = values
        (size,) = self.files.chunks
        for c in range(start // size, -(-stop // size)):
            self.files.write((c,), self.values[c * size : (c + 1) * size])


def _assemble(pieces: Iterable[np.ndarray], n: int, dtype: np.dtype) -> np.ndarray:
    parts = [np.asarray(p).reshape(-1) for p in pieces]
    row = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
    if row.shape != (n,):
        raise LayoutMismatchError(f"snapshot has {row.size} values, the store expects {n}")
    return row


def _create_matrix(group: Any, name: str, n: int, dtype: np.dtype, codec: Any, options: Mapping[str, Any],
                   rows: int = 0, *, fill: Any = np.nan) -> None:
    group.create_array(
        name,
        shape=(rows, n),
        chunks=options["chunks"],
        shards=options.get("shards"),
        dtype=dtype,
        fill_value=fill,
        compressors=codec,
        dimension_names=("snapshot", "param"),
        chunk_key_encoding={"name": "default", "separator": "/"},
    )


def _create_series(group: Any, name: str, rows: int, dtype: str, fill: Any, codec: Any) -> None:
    group.create_array(
        name,
        shape=(rows,),
        chunks=(_SERIES_CHUNK,),
        dtype=dtype,
        fill_value=fill,
        compressors=codec,
        dimension_names=("snapshot",),
        chunk_key_encoding={"name": "default", "separator": "/"},
    )


def _matrix_options(meta: ArrayMeta) -> dict[str, Any]:
    """How ``params`` is cut, to create ``grads`` the same way."""
    if meta.sharded:
        return {"chunks": tuple(meta.meta["codecs"][0]["configuration"]["chunk_shape"]), "shards": meta.grid}
    return {"chunks": meta.grid}


def _matrix_files(meta: ArrayMeta, root: Path, n: int) -> ChunkFiles:
    return ShardFiles(meta, root, n) if meta.sharded else ChunkFiles(meta, root)


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; returns those created, outermost first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    missing.reverse()
    for path in missing:
        path.mkdir()
    return missing


def foreign_entries(store: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """The entries of a store's directory that traj did not write (a README, a user's array), sorted."""
    try:
        with os.scandir(store) as listing:
            entries = list(listing)
    except OSError:
        return []
    return sorted((e for e in entries if e.name not in STORE_MEMBERS and not e.name.startswith(".traj-")),
                  key=lambda e: e.name)


def _carry_foreign(old: Path, new: Path) -> list[str]:
    """Hard-link (or copy) into ``new`` every entry of the store ``old`` that traj did not write;
    returns their names. ``old`` is untouched, so a crash before the swap loses nothing."""
    carried = []
    for entry in foreign_entries(old):
        target = new / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, target, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_file(follow_symlinks=False):
            _link_or_copy(entry.path, target)
        else:
            continue  # a FIFO or device: nothing to keep, and reading one could block
        carried.append(entry.name)
    return carried


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


#: bytes of UTF-8 a metric name may take: it names a directory, and file systems allow 255
MAX_METRIC_NAME_BYTES = 200


def metric_name_problem(name: object) -> str | None:
    """What makes ``name`` unusable as a metric name (it names a directory of the store), or None."""
    if not isinstance(name, str) or not name:
        return "is empty" if name == "" else "is not a string"
    if "/" in name:
        return "contains '/'"
    if name.startswith((".", "__")):
        return "starts with '.' or '__'"
    if not name.isprintable():
        return "contains a control character"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_METRIC_NAME_BYTES:
        return f"is {size} bytes long (at most {MAX_METRIC_NAME_BYTES})"
    if name.lower() == "zarr.json":
        return "is the name of the metrics group's own metadata file"
    return None


def shown_metric_name(name: object) -> str:
    """A metric name for a one-line message: its repr (control characters escaped), shortened."""
    text = repr(name)
    return text if len(text) <= 80 else f"{text[:60]}...' ({len(str(name))} characters)"


def _check_metric_names(metrics: Mapping[str, float] | None) -> None:
    for name in metrics or ():
        _check_metric_name(name)


def _check_metric_name(name: str) -> None:
    problem = metric_name_problem(name)
    if problem is not None:
        raise RecorderError(f"invalid metric name {shown_metric_name(name)}: it {problem}")


def _now() -> float:
    return time.time()
