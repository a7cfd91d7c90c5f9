"""Reading a run store: validated at the door, then read block by block.

:class:`RunStore` is the only way the analyses see a store. It checks the format once when
opened and exposes the committed snapshots only; ``params`` is never loaded whole: callers
ask for column blocks (:meth:`RunStore.iter_blocks`) or small regions (:meth:`RunStore.read`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import (
    DamagedStoreError,
    ParameterError,
    StoreFormatError,
    StoreLockedError,
    StoreNotFoundError,
    TrajError,
)
from .dtypes import decode, value_dtype
from .lock import is_locked
from .schema import FORMAT_NAME, READABLE_VERSIONS, UNCOMMITTED_STEP, Layout, check_dtype

if TYPE_CHECKING:  # pragma: no cover
    from .selection import SnapshotSelection

__all__ = ["RunStore", "open_store", "DEFAULT_BLOCK_BYTES"]

#: Default size of one column block handed to a reduction (float64 working copy).
DEFAULT_BLOCK_BYTES = 64 << 20
#: Whole chunk columns up to this size (in the store's dtype) are read at once, so blocks
#: narrower than a chunk never decompress the same chunk twice (which doubles the decode cost).
DEFAULT_READ_BYTES = 256 << 20

ProgressCallback = Callable[[int, int], None]


_FLOAT_SERIES = ("float64",)
_INT_SERIES = ("int64",)
_SNAPSHOT_DTYPES = ("float32", "float64", "float16", "uint16")  # uint16: bfloat16 bits (traj.store.dtypes)
#: A ``metrics`` group with more entries than this is refused (each metric is read when the store opens).
MAX_METRICS = 256
#: Rows ``params`` may declare past those its chunk files hold (a crash leaves preallocated rows).
_PREALLOCATION_SLACK = 1 << 20


def _check_directory(path: Path) -> None:
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise StoreNotFoundError(f"{path}: not a run store (a run store is a directory)")
    if not (path / "zarr.json").exists() and not (path / "zarr.json").is_symlink():
        raise StoreNotFoundError(f"{path}: not a run store (no zarr.json; is it a Zarr v3 group?)")


class RunStore:
    """A run store opened for reading.

    Every byte is read through a :class:`~traj.store.guard.GuardedStore`: each array's
    metadata is validated when the store is opened, and each chunk is checked against it
    before zarr decodes it, so a damaged or hostile store raises :class:`DamagedStoreError`
    instead of exhausting memory or hanging.

    Parameters
    ----------
    path : str or path-like
        The store directory.

    Attributes
    ----------
    layout : Layout
        The parameter tensors that make up θ.
    n_snapshots : int
        Committed snapshots T (rows of ``params`` a reader may use).
    n_params : int
        N, the length of θ.
    expected_snapshots : int or None
        The snapshots the store's last clean close counted (None when it was never closed).
        Fewer committed rows than that means rows were lost (a missing or damaged ``step``
        chunk): such a store is refused unless ``allow_damaged`` is set.

    Parameters
    ----------
    allow_damaged : bool
        Open a store that lost committed rows, to describe it (``traj info``) or replace it.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_damaged: bool = False) -> None:
        from .guard import MAX_GROUP_JSON_BYTES, GuardedStore

        self.path = Path(path)
        _check_directory(self.path)
        self._identity = _identity(self.path)  # a store swapped in later (an in-place convert) is another directory
        self._store = GuardedStore(self.path, label=str(self.path))
        self._specs: dict[str, Any] = {}
        self.attrs: dict[str, Any] = self._group_attributes(self._store.read_file("zarr.json", MAX_GROUP_JSON_BYTES))
        marker = self.attrs.get("traj")
        if not isinstance(marker, dict) or marker.get("format") != FORMAT_NAME:
            raise StoreFormatError(f"{self.path}: a Zarr group, but not a traj run store (no 'traj' format marker)")
        version = marker.get("version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise StoreFormatError(
                f"{self.path}: run-store format version {version!r}; this traj reads versions "
                f"{', '.join(str(v) for v in READABLE_VERSIONS)}"
            )
        self.format_version: int = version
        self.layout = Layout.from_attrs(self.attrs.get("layout"))
        self._params = self._array("params", 2, _SNAPSHOT_DTYPES)
        stored = str(self._params.dtype)
        if stored == "uint16":  # bfloat16 bits; the attribute says so (a plain uint16 array is not θ)
            if self.attrs.get("dtype") != "bfloat16":
                raise StoreFormatError(f"{self.path}: 'params' holds uint16 but the store's dtype attribute is "
                                       f"{self.attrs.get('dtype')!r}, not 'bfloat16'")
            stored = "bfloat16"
        #: The snapshot dtype as stored (``float32``, ``float64``, ``bfloat16``, ``float16``).
        self.stored_dtype: str = check_dtype(stored)
        #: The dtype of what :meth:`read` and :meth:`iter_blocks` hand out: float64 for a float64
        #: store, float32 for the others (bfloat16 and float16 upcast exactly, block by block).
        self.dtype = value_dtype(self.stored_dtype)
        if self._params.shape[1] != self.layout.n_params:
            raise StoreFormatError(
                f"{self.path}: 'params' has {self._params.shape[1]} columns but the layout adds up to "
                f"{self.layout.n_params} parameters"
            )
        self.capacity = self._params.shape[0]
        step = self._array("step", 1, _INT_SERIES)
        self._optional: dict[str, Any] = {}
        for name, dtypes in (("epoch", _INT_SERIES), ("time", _FLOAT_SERIES), ("loss", _FLOAT_SERIES)):
            array = self._array(name, 1, dtypes, required=False)
            if array is not None:
                self._optional[name] = array
        self._metric_names = self._list_metrics()
        for name in self._metric_names:
            self._optional[f"metrics/{name}"] = self._array(f"metrics/{name}", 1, _FLOAT_SERIES)
        self._grads = self._array("grads", 2, (str(self._params.dtype),), required=False)
        if self._grads is not None and self._grads.shape[1] != self.n_params:
            raise StoreFormatError(f"{self.path}: 'grads' shape {self._grads.shape} does not match 'params'")
        self._check_rows({"params": self._params, "step": step, "grads": self._grads, **self._optional})
        self.steps = self._committed_steps(step)
        self.n_snapshots = committed = self.steps.size
        self._n_committed = committed  # the store's own count; n_snapshots is a selection's (select)
        #: Store indices of the snapshots this reader shows (None: all of them), and the selections
        #: that chose them, in the order applied (:meth:`select`).
        self._selected: np.ndarray | None = None
        self.selections: tuple[SnapshotSelection, ...] = ()
        self._check_columns()
        self._store.require_chunks("params", committed)
        backwards = np.flatnonzero(np.diff(self.steps) <= 0)
        if backwards.size:
            k = int(backwards[0]) + 1
            raise StoreFormatError(
                f"{self.path}: steps must increase, but snapshot {k} has step {int(self.steps[k])} after "
                f"step {int(self.steps[k - 1])}"
            )
        self.expected_snapshots = _clean_close_count(self.path, self.attrs, strict=not allow_damaged)
        if self.missing_snapshots and not allow_damaged:
            raise StoreFormatError(f"{self.path}: {self.shortfall}; refusing to use part of a run")
        # Every series is read (and so checked) at the door; they are small (8 bytes a snapshot).
        self.epochs = self._series("epoch", np.int64)
        self.times = self._series("time", np.float64)
        self._loss = self._series("loss", np.float64) if "loss" in self._optional else None
        self._metrics = {name: self._series(f"metrics/{name}", np.float64) for name in self._metric_names}

    # ------------------------------------------------------------------ metadata
    def _group_attributes(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            raise StoreNotFoundError(f"{self.path}: not a run store (no zarr.json; is it a Zarr v3 group?)")
        from .guard import json_object

        meta = json_object(raw, f"{self.path}: zarr.json")
        if meta.get("zarr_format") != 3:
            raise StoreFormatError(f"{self.path}: not a Zarr v3 group (zarr.json has no zarr_format 3)")
        if meta.get("node_type") == "array":
            raise StoreFormatError(f"{self.path}: a Zarr array, not a run store (a run store is the group above it)")
        if meta.get("node_type") != "group":
            raise StoreFormatError(f"{self.path}: zarr.json describes no Zarr group")
        attrs = meta.get("attributes", {})
        if not isinstance(attrs, dict):
            raise DamagedStoreError(f"{self.path}: the group's attributes are not an object")
        return attrs

    def _array(self, name: str, rank: int, dtypes: tuple[str, ...], *, required: bool = True) -> Any:
        """Validate ``name``'s metadata, let the guarded store serve its chunks, open it with zarr."""
        import zarr

        from .guard import MAX_ARRAY_JSON_BYTES, parse_array_metadata

        raw = self._store.read_file(f"{name}/zarr.json", MAX_ARRAY_JSON_BYTES)
        if raw is None:
            if required:
                raise StoreFormatError(f"{self.path}: the store has no '{name}' array")
            return None
        spec = parse_array_metadata(raw, name, rank=rank, dtypes=dtypes, where=str(self.path))
        self._store.register(spec)
        self._specs[name] = spec
        try:
            array = zarr.open_array(store=self._store, path=name, mode="r", zarr_format=3)
        except TrajError:
            raise
        except Exception as exc:  # zarr's own checks (fill value, codec configuration)
            raise DamagedStoreError(f"{self.path}: '{name}' has invalid metadata ({_first_line(exc)})") from None
        # A live recorder may resize the array in between (shape only); chunks and dtype never change.
        if tuple(array.chunks) != spec.unit or np.dtype(array.dtype) != spec.dtype or array.ndim != rank:
            raise DamagedStoreError(f"{self.path}: '{name}' changed while it was opened")
        return array

    def _committed_steps(self, step: Any) -> np.ndarray:
        """The committed prefix of ``step``, read chunk by chunk so a lying shape allocates nothing.

        Rows stop at the first -1 (never committed), at the end of ``params``, or where the
        chunk files stop (a missing chunk reads as -1): memory follows the files, not the shape.
        """
        limit = min(step.shape[0], self.capacity)
        size = step.chunks[0]
        parts: list[np.ndarray] = []
        start, n_chunks = 0, 1
        while start < limit:
            stop = min(limit, start + n_chunks * size)
            values = self._guarded(lambda a=start, b=stop: step[a:b], slice(start, stop), what="'step'", raw=True)
            values = values.astype(np.int64, copy=False)
            uncommitted = np.flatnonzero(values == UNCOMMITTED_STEP)
            if uncommitted.size:
                parts.append(values[: uncommitted[0]])
                break
            parts.append(values)
            start = stop
            n_chunks = min(2 * n_chunks, 64)  # few zarr calls for long runs, little over-read for short ones
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _check_columns(self) -> None:
        """Refuse an N that the chunk files cannot hold: the first row of chunks must all be there."""
        if not self.n_snapshots:
            return
        n_chunk = self._specs["params"].chunks[1]  # the chunk grid (shards of a sharded array)
        needed = -(-self.n_params // n_chunk)
        directory = self.path / "params" / "c" / "0"
        found = 0
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.isdigit() and int(entry.name) < needed and entry.is_file(follow_symlinks=False):
                        found += 1
        except OSError:
            found = 0
        if found < needed:
            raise DamagedStoreError(
                f"{self.path}: 'params' declares {self.n_params} columns in {needed} chunk(s) per row, but the "
                f"first snapshots have {found} chunk file(s): the store is damaged"
            )

    def _check_rows(self, arrays: dict[str, Any]) -> None:
        """Refuse a row count that the chunk files cannot back (e.g. a zarr.json claiming 10^12 rows).

        Nothing here allocates from a declared shape, but a writer resuming the store would. A
        crash may leave rows allocated past the last written chunk (the writer grows arrays by
        half), so the bound is generous: twice the rows ``params`` has files for, or a million more.
        """
        t_chunk = self._specs["params"].chunks[0]
        last = -1
        try:
            with os.scandir(self.path / "params" / "c") as entries:
                for entry in entries:
                    if entry.name.isdigit():
                        last = max(last, int(entry.name))
        except OSError:
            pass
        on_disk = (last + 1) * t_chunk
        allowed = max(2 * on_disk, on_disk + _PREALLOCATION_SLACK)
        for name, array in arrays.items():
            if array is not None and array.shape[0] > allowed:
                raise DamagedStoreError(
                    f"{self.path}: '{name}' declares {array.shape[0]} rows, but the chunk files of 'params' hold "
                    f"at most {on_disk}: the store is damaged"
                )

    def _list_metrics(self) -> list[str]:
        from .guard import MAX_ARRAY_JSON_BYTES, json_object

        raw = self._store.read_file("metrics/zarr.json", MAX_ARRAY_JSON_BYTES)
        if raw is None:
            return []
        meta = json_object(raw, f"{self.path}: metrics/zarr.json")
        if meta.get("node_type") != "group":
            raise DamagedStoreError(f"{self.path}: 'metrics' is not a Zarr group")
        names = []
        with os.scandir(self.path / "metrics") as entries:
            for count, entry in enumerate(entries):
                if count > 2 * MAX_METRICS:
                    raise DamagedStoreError(f"{self.path}: 'metrics' holds more than {2 * MAX_METRICS} entries")
                if entry.is_symlink():
                    raise DamagedStoreError(f"{self.path}: metrics/{entry.name} is a symbolic link")
                if entry.is_dir(follow_symlinks=False) and self._store.is_regular_file(f"metrics/{entry.name}/zarr.json"):
                    names.append(entry.name)
        if len(names) > MAX_METRICS:
            raise DamagedStoreError(f"{self.path}: {len(names)} metrics; traj reads at most {MAX_METRICS}")
        return sorted(names)

    def _series(self, name: str, dtype: Any) -> np.ndarray:
        array = self._optional.get(name)
        if array is None:
            return np.full(self.n_snapshots, np.nan if dtype is np.float64 else -1, dtype=dtype)
        n = self.n_snapshots
        values = self._guarded(lambda: array[:n], slice(0, n), what=f"'{name}'", raw=True)
        if values.shape != (n,):
            raise DamagedStoreError(f"{self.path}: '{name}' has {values.shape[0]} rows, expected {n}")
        return values.astype(dtype, copy=False)

    def zarr_array(self, array: str = "params") -> Any:
        """The guarded zarr array of ``params`` or ``grads`` (for dask; rows past the committed ones are not data).

        Its values are as stored: pass blocks of a bfloat16 or float16 store through :meth:`decode`.

        For a sharded store it is a :class:`~traj.store.shards.ShardedArray`: its ``chunks`` are
        the shards (one dask task per shard, not per 16 KiB inner chunk) and its rectangular
        reads go through traj's shard reader.
        """
        data = self._data(array)
        if self._specs[array].sharded:
            from .shards import ShardedArray

            return ShardedArray.of(data)
        return data

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    @property
    def shape(self) -> tuple[int, int]:
        """(T, N) of the committed snapshots."""
        return self.n_snapshots, self.n_params

    @property
    def chunks(self) -> tuple[int, int]:
        """Shape of one chunk of ``params``: what is compressed (and decoded) as one unit."""
        return tuple(self._specs["params"].unit)  # type: ignore[return-value]

    @property
    def shards(self) -> tuple[int, int] | None:
        """Shape of one shard file of ``params`` (format version 2), None for an unsharded store."""
        spec = self._specs["params"]
        return tuple(spec.chunks) if spec.sharded else None  # type: ignore[return-value]

    @property
    def has_grads(self) -> bool:
        return self._grads is not None

    @property
    def recipe(self) -> dict[str, Any] | None:
        recipe = self.attrs.get("recipe")
        return recipe if isinstance(recipe, dict) else None

    @property
    def spacing(self) -> dict[str, Any]:
        spacing = self.attrs.get("spacing")
        return spacing if isinstance(spacing, dict) else {}

    @property
    def closed_cleanly(self) -> bool:
        return self.attrs.get("state") == "closed" and self.capacity == self._n_committed

    @property
    def missing_snapshots(self) -> int:
        """Snapshots the last clean close counted that are no longer committed (0 for a sound store)."""
        if self.expected_snapshots is None:
            return 0
        return max(0, self.expected_snapshots - self._n_committed)

    @property
    def shortfall(self) -> str | None:
        """What :attr:`missing_snapshots` means, in one line (None when nothing is missing)."""
        if not self.missing_snapshots:
            return None
        return (
            f"{self._n_committed} committed snapshot(s), but its last clean close counted {self.expected_snapshots}: "
            "rows were lost (a missing or damaged 'step' chunk?)"
        )

    @property
    def writer_active(self) -> bool:
        return is_locked(self.path)

    @property
    def loss(self) -> np.ndarray | None:
        return self._loss

    @property
    def metric_names(self) -> list[str]:
        return list(self._metric_names)

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metric_names:
            raise StoreFormatError(f"{self.path}: no metric {name!r} (recorded: {', '.join(self.metric_names) or 'none'})")
        return self._metrics[name]

    # ------------------------------------------------------------------ data
    def _data(self, array: str) -> Any:
        if array == "params":
            return self._params
        if array == "grads":
            if self._grads is None:
                raise StoreFormatError(f"{self.path}: no gradients were recorded in this store")
            return self._grads
        raise ValueError(f"array must be 'params' or 'grads', not {array!r}")

    def _rows(self, rows: slice | None) -> slice:
        start, stop, step = (rows or slice(None)).indices(self.n_snapshots)
        if step != 1:
            raise ValueError("row slices must be contiguous")
        return slice(start, max(start, stop))

    # ------------------------------------------------------------------ a selection of snapshots
    def select(self, selection: SnapshotSelection | None = None, *, steps: Any = None, stride: int = 1) -> RunStore:
        """This store showing only the snapshots of ``selection`` (or of ``steps=`` / ``stride=``,
        :class:`~traj.store.selection.SnapshotSelection`): its ``n_snapshots``, ``steps``, series and
        every read are the selection's, so an analysis given it sees nothing else (windows count the
        selected snapshots). Selecting from a selection refines it. :class:`ParameterError` when the
        selection is malformed or keeps no snapshot."""
        import copy

        from .selection import SnapshotSelection

        if selection is None:
            selection = SnapshotSelection.checked(steps=steps, stride=stride)
        elif steps is not None or stride != 1:
            raise ParameterError("selection", "give a SnapshotSelection or steps=/stride=, not both")
        if selection.is_all:
            return self
        picked = selection.indices(self.steps, name=self.path.name)
        view = copy.copy(self)
        view._selected = picked if self._selected is None else self._selected[picked]
        view.selections = (*self.selections, selection)
        view.steps = self.steps[picked]
        view.n_snapshots = int(picked.size)
        view.epochs = self.epochs[picked]
        view.times = self.times[picked]
        view._loss = None if self._loss is None else self._loss[picked]
        view._metrics = {name: values[picked] for name, values in self._metrics.items()}
        spacing = self.spacing
        if spacing.get("unit") == "step" and picked.size >= 2:
            from .info import base_spacing

            view.attrs = {**self.attrs, "spacing": {**spacing, "every": base_spacing(view.steps)}}
        return view

    @property
    def selected(self) -> str:
        """The selection in words (``steps 0:1000:100, stride 2``; empty when every snapshot is shown)."""
        return "; then ".join(s.describe() for s in self.selections)

    @property
    def indices(self) -> np.ndarray:
        """The store's own index of each snapshot shown (``arange(n_snapshots)`` without a selection)."""
        return np.arange(self.n_snapshots) if self._selected is None else self._selected.copy()

    def base_rows(self, rows: slice | None = None) -> slice | np.ndarray:
        """The store's rows behind ``rows`` of the snapshots shown: the same slice without a selection,
        else a slice with a step or the increasing row indices (for readers of :meth:`zarr_array`)."""
        rows = self._rows(rows)
        if self._selected is None:
            return rows
        picked = self._selected[rows]
        if picked.size and (picked.size == 1 or (np.diff(picked) == picked[1] - picked[0]).all()):
            step = int(picked[1] - picked[0]) if picked.size > 1 else 1
            return slice(int(picked[0]), int(picked[-1]) + 1, step)
        return picked

    def _take_rows(self, read: Callable[[slice], np.ndarray], rows: slice, array: str = "params") -> np.ndarray:
        """``read`` (a reader of contiguous store rows) over the store rows behind ``rows``: one read
        without a selection; with one, a read of the selected rows inside each chunk row (every chunk
        decoded once, none that holds no selected row)."""
        base = self.base_rows(rows)
        if isinstance(base, slice) and base.step == 1:
            return read(base)
        picked = np.arange(base.start, base.stop, base.step) if isinstance(base, slice) else base
        if not picked.size:  # no rows: what a contiguous read of none gives (its shape and dtype)
            return read(slice(0, 0))
        height = self._specs.get(array, self._specs["params"]).unit[0]
        groups = np.split(picked, np.flatnonzero(np.diff(picked // height)) + 1)
        return np.concatenate([read(slice(int(g[0]), int(g[-1]) + 1))[g - g[0]] for g in groups], axis=0)

    def _shown_rows(self, rows: slice) -> slice:
        """The store rows spanned by ``rows`` (for messages about a damaged read)."""
        if self._selected is None or rows.stop <= rows.start:
            return rows
        return slice(int(self._selected[rows.start]), int(self._selected[rows.stop - 1]) + 1)

    def read(self, rows: slice | None = None, columns: slice | np.ndarray | None = None, *, array: str = "params") -> np.ndarray:
        """Read a region of committed snapshots, as :attr:`dtype` (2-byte dtypes upcast exactly).

        Parameters
        ----------
        rows : slice, optional
            Snapshot range (default all committed snapshots).
        columns : slice or integer ndarray, optional
            Columns of θ (default all: only sensible for small N).
        """
        rows = self._rows(rows)
        data = self._data(array)
        if columns is None:
            columns = slice(0, self.n_params)
        reader = self._shard_reader(array)
        if reader is not None:
            try:
                if isinstance(columns, slice):
                    start, stop, step = columns.indices(self.n_params)
                    if step == 1:
                        cols = slice(start, max(start, stop))
                        return self._guarded(lambda: np.ascontiguousarray(
                            self._take_rows(lambda r: reader.read(r, cols), rows, array)), self._shown_rows(rows))
                else:
                    index = np.asarray(columns, dtype=np.int64)
                    if index.size and (index.min() < -self.n_params or index.max() >= self.n_params):
                        raise IndexError(f"column index out of range for {self.n_params} parameters")
                    index = index % max(1, self.n_params)
                    return self._guarded(lambda: self._take_rows(lambda r: reader.read_columns(r, index), rows, array),
                                         self._shown_rows(rows))
            finally:
                reader.close()
        if isinstance(columns, slice):
            return self._guarded(lambda: self._take_rows(lambda r: data[r, columns], rows, array), self._shown_rows(rows))
        index = np.asarray(columns, dtype=np.int64)
        return self._guarded(lambda: self._take_rows(lambda r: data.get_orthogonal_selection((r, index)), rows, array),
                             self._shown_rows(rows))

    def _shard_reader(self, array: str) -> Any:
        """A fresh :class:`~traj.store.shards.ShardReader` of a sharded ``params``/``grads``, else None."""
        spec = self._specs.get(array)
        if spec is None or not spec.sharded:
            return None
        from .shards import ShardReader

        data = self._data(array)
        required = self.n_snapshots if array == "params" else 0
        return ShardReader(self._store, spec, fill=data.fill_value, required_rows=required, label=str(self.path))

    @property
    def lossy_from(self) -> list[str] | None:
        """The dtypes the snapshots were rounded from when the store is a narrower copy (its ``lossy``
        attribute, written by a down-casting Recorder or ``traj convert --dtype``), else None."""
        lossy = self.attrs.get("lossy")
        found = lossy.get("from") if isinstance(lossy, dict) else None
        return [str(d) for d in found] if isinstance(found, list) and found else None

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Stored values (as :meth:`zarr_array` gives them) as the values :meth:`read` hands out:
        bfloat16 bits and float16 upcast to float32 exactly; float32 and float64 as they are."""
        return decode(raw, self.stored_dtype)

    def _guarded(self, read: Callable[[], Any], rows: slice, *, what: str = "snapshots", raw: bool = False) -> np.ndarray:
        """Run a zarr read of snapshots, decoded (:meth:`decode`; a series: ``raw``); a corrupt or
        unreadable chunk becomes one DamagedStoreError, unless the store was being rewritten
        meanwhile (then StoreLockedError says so: the chunks are not damaged)."""
        try:
            values = np.asarray(read())
            return values if raw else decode(values, self.stored_dtype)
        except DamagedStoreError:
            self._store.settle()
            self._raise_if_rewritten()
            raise
        except TrajError:
            self._store.settle()
            raise
        except Exception as exc:  # codecs raise many types for damaged bytes
            self._store.settle()
            self._raise_if_rewritten()
            raise DamagedStoreError(
                f"{self.path}: cannot read {what} {rows.start}..{rows.stop - 1}: a chunk is damaged "
                f"({type(exc).__name__}: {_first_line(exc)})"
            ) from None

    def _raise_if_rewritten(self) -> None:
        """A read failed: if a writer holds the store (an in-place ``traj convert`` copying it) or another
        directory now stands at its path (the convert's swap), the store was rewritten under this reader."""
        swapped = _identity(self.path) != self._identity
        if swapped or is_locked(self.path):
            happened = ("was replaced while this command read it (an in-place traj convert swapped in the "
                        "rewritten store)" if swapped else
                        "is being rewritten (a writer holds it: an in-place traj convert, or a recorder)")
            raise StoreLockedError(f"{self.path} {happened}; the store is not damaged: run the command again "
                                   "once the rewrite is done") from None

    def snapshot(self, k: int, *, array: str = "params") -> np.ndarray:
        """θ_k, the k-th committed snapshot (negative k counts from the end)."""
        if not -self.n_snapshots <= k < self.n_snapshots:
            raise IndexError(f"snapshot {k} outside the {self.n_snapshots} committed snapshots")
        k %= self.n_snapshots
        if self._selected is not None:
            k = int(self._selected[k])
        data = self._data(array)
        reader = self._shard_reader(array)
        if reader is not None:
            try:
                return self._guarded(lambda: reader.read(slice(k, k + 1), slice(0, self.n_params))[0].copy(), slice(k, k + 1))
            finally:
                reader.close()
        return self._guarded(lambda: data[k, :], slice(k, k + 1))

    def block_columns(self, n_rows: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
        """A block width that keeps one float64 (n_rows, width) block near ``block_bytes``.

        Widths are whole multiples of the chunk width when a chunk fits the budget, so no chunk
        is decompressed twice (unaligned blocks double the decode cost). Narrower budgets over a
        sharded store split an inner chunk into equal parts, read (and decoded) once together.
        """
        n_chunk = self.chunks[1]
        width = max(1, block_bytes // max(1, n_rows * 8))
        if width >= n_chunk:
            width = (width // n_chunk) * n_chunk
        elif self.shards is not None:
            width = -(-n_chunk // -(-n_chunk // width))
        return min(width, self.n_params)

    def iter_blocks(
        self,
        *,
        rows: slice | None = None,
        columns: slice | None = None,
        block_columns: int | None = None,
        array: str = "params",
        progress: ProgressCallback | None = None,
        read_bytes: int = DEFAULT_READ_BYTES,
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(column_slice, block)`` over a column range, block of shape (T_window, width).

        Blocks follow the chunk grid, so a layer that starts mid-chunk gets a short first block.
        When a block is narrower than a chunk, whole chunk columns (up to ``read_bytes``) are
        read at once and handed out as views, so every chunk is decompressed once.
        ``progress(done, total)`` is called after each block.
        """
        rows = self._rows(rows)
        data = self._data(array)
        start, stop, _ = (columns or slice(None)).indices(self.n_params)
        n_rows = rows.stop - rows.start
        if stop <= start:  # no columns (a store of N = 0, an empty layer): no blocks
            return
        width = block_columns or self.block_columns(max(1, n_rows))
        reader = self._shard_reader(array)
        if reader is not None:
            yield from self._sharded_blocks(reader, rows, start, stop, width, progress, read_bytes, array)
            return
        n_chunk = self.chunks[1]
        column_bytes = max(1, n_rows) * n_chunk * self._params.dtype.itemsize
        if width < n_chunk and column_bytes <= read_bytes:
            read_width = max(1, read_bytes // column_bytes) * n_chunk
        else:
            read_width = width
        yield from self._banded(lambda band: self._take_rows(lambda r: data[r, band], rows, array), rows, start, stop,
                                read_width, width, progress)

    def _sharded_blocks(self, reader: Any, rows: slice, start: int, stop: int, width: int,
                        progress: ProgressCallback | None, read_bytes: int, array: str = "params"
                        ) -> Iterator[tuple[slice, np.ndarray]]:
        """Blocks of a sharded array: each read covers whole inner chunks (decoded once) and one or more
        blocks; reads grow by whole bands up to a quarter of ``read_bytes`` (fewer file opens)."""
        w = reader.chunk_width
        unit = width if width % w == 0 else (w if width < w else -(-width // w) * w)
        band_bytes = max(1, rows.stop - rows.start) * unit * self._params.dtype.itemsize
        read_width = unit * max(1, (read_bytes // 4) // band_bytes)
        try:
            yield from self._banded(lambda band: self._take_rows(lambda r: reader.read(r, band), rows, array), rows,
                                    start, stop, read_width, width, progress)
        finally:
            reader.close()

    def _banded(self, read: Callable[[slice], np.ndarray], rows: slice, start: int, stop: int, read_width: int,
                width: int, progress: ProgressCallback | None) -> Iterator[tuple[slice, np.ndarray]]:
        """Columns start:stop read ``read_width`` at a time (aligned), handed out ``width`` at a time."""
        outer = _aligned_bounds(start, stop, read_width)
        inner = [_aligned_bounds(outer[i], outer[i + 1], width) for i in range(len(outer) - 1)]
        total = sum(len(b) - 1 for b in inner)
        done = 0
        for i, bounds in enumerate(inner):
            band = self._guarded(lambda i=i: read(slice(outer[i], outer[i + 1])), self._shown_rows(rows))
            for j in range(len(bounds) - 1):
                cols = slice(bounds[j], bounds[j + 1])
                yield cols, band[:, cols.start - outer[i] : cols.stop - outer[i]]
                done += 1
                if progress is not None:
                    progress(done, total)

    def nonfinite_rows(self, *, rows: slice | None = None, array: str = "params", progress: ProgressCallback | None = None) -> np.ndarray:
        """Indices of snapshots that hold a NaN or Inf anywhere (one streaming pass)."""
        rows = self._rows(rows)
        bad = np.zeros(rows.stop - rows.start, dtype=bool)
        for _, block in self.iter_blocks(rows=rows, array=array, progress=progress):
            bad |= ~np.isfinite(block).all(axis=1)
        return np.flatnonzero(bad) + rows.start

    def nbytes_stored(self) -> int:
        """Bytes the store's files hold (symbolic links are not followed)."""
        total = 0
        for root, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, T={self.n_snapshots}, N={self.n_params}, dtype={self.stored_dtype})"


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory at ``path`` (None when there is none)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _aligned_bounds(start: int, stop: int, width: int) -> list[int]:
    """Cut [start, stop) at multiples of ``width`` (counted from column 0)."""
    if stop <= start:
        return [start]
    bounds = [start]
    nxt = (start // width + 1) * width
    while nxt < stop:
        bounds.append(nxt)
        nxt += width
    bounds.append(stop)
    return bounds


def open_store(path: str | os.PathLike[str], *, allow_damaged: bool = False, steps: Any = None,
               stride: int = 1) -> RunStore:
    """Open a run store for reading (validates the format; raises :class:`TrajError`).

    ``steps`` (``"a:b"`` or ``"a:b:s"``, training steps) and ``stride`` (every k-th of those snapshots)
    select the snapshots every analysis of the returned store sees (:meth:`RunStore.select`).
    """
    store = RunStore(path, allow_damaged=allow_damaged)
    return store.select(steps=steps, stride=stride) if steps is not None or stride != 1 else store


def _clean_close_count(path: Path, attrs: dict[str, Any], *, strict: bool) -> int | None:
    """The committed rows the store's last clean close counted, or None when unknown.

    ``n_snapshots_closed`` is written only by a clean close and kept while a resumed store is
    open. Stores written before it existed have only ``n_snapshots``, which also only a clean
    close ever set (0 at creation), so it serves the same purpose.
    """
    if "n_snapshots_closed" in attrs:
        value = attrs["n_snapshots_closed"]
        if _count(value):
            return value
        if strict:
            raise StoreFormatError(f"{path}: attribute 'n_snapshots_closed' must be a non-negative integer, not {value!r}")
        return None
    value = attrs.get("n_snapshots")
    return value if _count(value) else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover

