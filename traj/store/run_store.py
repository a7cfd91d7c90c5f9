"""Reading a run store: validated at the door, then read block by block.

:class:`RunStore` is the only way the analyses see a store. It checks the format once when
opened and exposes the committed snapshots only; ``params`` is never loaded whole: callers
ask for column blocks (:meth:`RunStore.iter_blocks`) or small regions (:meth:`RunStore.read`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreFormatError, StoreNotFoundError, TrajError
from .lock import is_locked
from .schema import FORMAT_NAME, FORMAT_VERSION, UNCOMMITTED_STEP, Layout, check_dtype

__all__ = ["RunStore", "open_store", "DEFAULT_BLOCK_BYTES"]

#: Default size of one column block handed to a reduction (float64 working copy).
DEFAULT_BLOCK_BYTES = 64 << 20
#: Whole chunk columns up to this size (in the store's dtype) are read at once, so blocks
#: narrower than a chunk never decompress the same chunk twice (engineering.md: 2x cost).
DEFAULT_READ_BYTES = 256 << 20

ProgressCallback = Callable[[int, int], None]


def _open_group(path: Path, mode: str) -> Any:
    import zarr
    import zarr.errors

    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise StoreNotFoundError(f"{path}: not a run store (a run store is a directory)")
    if not (path / "zarr.json").is_file():
        raise StoreNotFoundError(f"{path}: not a run store (no zarr.json; is it a Zarr v3 group?)")
    try:
        return zarr.open_group(zarr.storage.LocalStore(path, read_only=mode == "r"), mode=mode, zarr_format=3)
    except zarr.errors.ContainsArrayError:
        raise StoreFormatError(f"{path}: a Zarr array, not a run store (a run store is the group above it)") from None
    except (zarr.errors.BaseZarrError, ValueError, TypeError, KeyError, OSError) as exc:
        raise StoreFormatError(f"{path}: not a readable Zarr v3 group ({type(exc).__name__}: {exc})") from None


class RunStore:
    """A run store opened for reading.

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
        self.path = Path(path)
        self._group = _open_group(self.path, "r")
        self.attrs: dict[str, Any] = dict(self._group.attrs)
        marker = self.attrs.get("traj")
        if not isinstance(marker, dict) or marker.get("format") != FORMAT_NAME:
            raise StoreFormatError(f"{self.path}: a Zarr group, but not a traj run store (no 'traj' format marker)")
        version = marker.get("version")
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.path}: run-store format version {version!r}; this traj reads version {FORMAT_VERSION}"
            )
        self.layout = Layout.from_attrs(self.attrs.get("layout"))
        self._params = self._array("params")
        if self._params.ndim != 2:
            raise StoreFormatError(f"{self.path}: 'params' has {self._params.ndim} dimensions, expected 2 (T, N)")
        self.dtype = np.dtype(check_dtype(str(self._params.dtype)))
        if self._params.shape[1] != self.layout.n_params:
            raise StoreFormatError(
                f"{self.path}: 'params' has {self._params.shape[1]} columns but the layout adds up to "
                f"{self.layout.n_params} parameters"
            )
        step = self._array("step")
        if step.ndim != 1 or not np.issubdtype(step.dtype, np.integer):
            raise StoreFormatError(f"{self.path}: 'step' must be a 1-D integer array")
        steps = np.asarray(step[:], dtype=np.int64)
        uncommitted = np.flatnonzero(steps == UNCOMMITTED_STEP)
        committed = int(uncommitted[0]) if uncommitted.size else steps.size
        committed = min(committed, self._params.shape[0])
        self.n_snapshots = committed
        self.capacity = self._params.shape[0]
        self.steps = steps[:committed]
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
        self.epochs = self._series("epoch", np.int64)
        self.times = self._series("time", np.float64)
        self._grads = self._array("grads") if "grads" in self._group else None
        if self._grads is not None and self._grads.shape[1] != self.n_params:
            raise StoreFormatError(f"{self.path}: 'grads' shape {self._grads.shape} does not match 'params'")

    # ------------------------------------------------------------------ metadata
    def _array(self, name: str) -> Any:
        try:
            node = self._group[name]
        except KeyError:
            raise StoreFormatError(f"{self.path}: the store has no '{name}' array") from None
        if not hasattr(node, "shape"):
            raise StoreFormatError(f"{self.path}: '{name}' is not an array")
        return node

    def _series(self, name: str, dtype: Any) -> np.ndarray:
        if name not in self._group:
            return np.full(self.n_snapshots, np.nan if dtype is np.float64 else -1, dtype=dtype)
        values = np.asarray(self._array(name)[: self.n_snapshots], dtype=dtype)
        if values.shape != (self.n_snapshots,):
            raise StoreFormatError(f"{self.path}: '{name}' has {values.shape[0]} rows, expected {self.n_snapshots}")
        return values

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    @property
    def shape(self) -> tuple[int, int]:
        """(T, N) of the committed snapshots."""
        return self.n_snapshots, self.n_params

    @property
    def chunks(self) -> tuple[int, int]:
        return tuple(self._params.chunks)  # type: ignore[return-value]

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
        return self.attrs.get("state") == "closed" and self.capacity == self.n_snapshots

    @property
    def missing_snapshots(self) -> int:
        """Snapshots the last clean close counted that are no longer committed (0 for a sound store)."""
        if self.expected_snapshots is None:
            return 0
        return max(0, self.expected_snapshots - self.n_snapshots)

    @property
    def shortfall(self) -> str | None:
        """What :attr:`missing_snapshots` means, in one line (None when nothing is missing)."""
        if not self.missing_snapshots:
            return None
        return (
            f"{self.n_snapshots} committed snapshot(s), but its last clean close counted {self.expected_snapshots}: "
            "rows were lost (a missing or damaged 'step' chunk?)"
        )

    @property
    def writer_active(self) -> bool:
        return is_locked(self.path)

    @property
    def loss(self) -> np.ndarray | None:
        return self._series("loss", np.float64) if "loss" in self._group else None

    @property
    def metric_names(self) -> list[str]:
        if "metrics" not in self._group:
            return []
        return sorted(name for name, _ in self._group["metrics"].arrays())

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metric_names:
            raise StoreFormatError(f"{self.path}: no metric {name!r} (recorded: {', '.join(self.metric_names) or 'none'})")
        return self._series(f"metrics/{name}", np.float64)

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

    def read(self, rows: slice | None = None, columns: slice | np.ndarray | None = None, *, array: str = "params") -> np.ndarray:
        """Read a region of committed snapshots, in the store's dtype.

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
        if isinstance(columns, slice):
            return self._guarded(lambda: data[rows, columns], rows)
        index = np.asarray(columns, dtype=np.int64)
        return self._guarded(lambda: data.get_orthogonal_selection((rows, index)), rows)

    def _guarded(self, read: Callable[[], Any], rows: slice) -> np.ndarray:
        """Run a zarr read; a corrupt or unreadable chunk becomes one StoreFormatError."""
        try:
            return np.asarray(read())
        except TrajError:
            raise
        except Exception as exc:  # codecs raise many types for damaged bytes
            message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise StoreFormatError(
                f"{self.path}: cannot read snapshots {rows.start}..{rows.stop - 1}: a chunk is damaged "
                f"({type(exc).__name__}: {message})"
            ) from None

    def snapshot(self, k: int, *, array: str = "params") -> np.ndarray:
        """θ_k, the k-th committed snapshot (negative k counts from the end)."""
        if not -self.n_snapshots <= k < self.n_snapshots:
            raise IndexError(f"snapshot {k} outside the {self.n_snapshots} committed snapshots")
        k %= self.n_snapshots
        data = self._data(array)
        return self._guarded(lambda: data[k, :], slice(k, k + 1))

    def block_columns(self, n_rows: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
        """A block width that keeps one float64 (n_rows, width) block near ``block_bytes``.

        Widths are whole multiples of the chunk width when a chunk fits the budget, so no chunk
        is decompressed twice (engineering.md: unaligned blocks cost 2x).
        """
        n_chunk = self.chunks[1]
        width = max(1, block_bytes // max(1, n_rows * 8))
        if width >= n_chunk:
            width = (width // n_chunk) * n_chunk
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
        width = block_columns or self.block_columns(max(1, n_rows))
        n_chunk = self.chunks[1]
        column_bytes = max(1, n_rows) * n_chunk * self.dtype.itemsize
        if width < n_chunk and column_bytes <= read_bytes:
            read_width = max(1, read_bytes // column_bytes) * n_chunk
        else:
            read_width = width
        outer = _aligned_bounds(start, stop, read_width)
        inner = [_aligned_bounds(outer[i], outer[i + 1], width) for i in range(len(outer) - 1)]
        total = sum(len(b) - 1 for b in inner)
        done = 0
        for i, bounds in enumerate(inner):
            read = self._guarded(lambda i=i: data[rows, outer[i] : outer[i + 1]], rows)
            for j in range(len(bounds) - 1):
                cols = slice(bounds[j], bounds[j + 1])
                yield cols, read[:, cols.start - outer[i] : cols.stop - outer[i]]
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
        """Bytes the store takes on disk."""
        total = 0
        for root, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
        return total

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, T={self.n_snapshots}, N={self.n_params}, dtype={self.dtype})"


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


def open_store(path: str | os.PathLike[str], *, allow_damaged: bool = False) -> RunStore:
    """Open a run store for reading (validates the format; raises :class:`TrajError`)."""
    return RunStore(path, allow_damaged=allow_damaged)


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

