"""Version-2 snapshot arrays: Zarr v3 shards written and read directly, byte-compatible with zarr.

A shard file (``params/c/<i>/<j>``) holds inner chunks, each encoded on its own (``bytes``
then blosc or zstd, as zarr encodes a chunk), one after the other in index order, followed by
the shard index: one little-endian ``(offset, length)`` uint64 pair per inner chunk (both
2**64 - 1 for an absent chunk) and the crc32c of those bytes. That is zarr's
``sharding_indexed`` codec with its default index codecs and ``index_location = "end"``;
zarr, dask and xarray read these files, and zarr's own encoder writes the same bytes.

:class:`ShardEncoder` writes whole shards for the store writer. :class:`ShardReader` reads
column bands for :class:`~traj.store.RunStore`: per shard it opens the file and reads the
index once (keeping up to 4096 shards open while bands move right over them), then reads one
contiguous byte range per shard for a band of adjacent inner chunks, and
decodes each inner chunk once, straight into the output where the chunk is one row tall.
Every file is opened through the guarded store (regular files inside the store only), every
index is checked before its offsets are used, and every inner chunk's header before it is
decoded (:class:`~traj.store.guard.ArraySpec`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import google_crc32c
import numpy as np
import zarr

from ..errors import DamagedStoreError
from .guard import EMPTY_ENTRY, ArraySpec, GuardedStore

__all__ = ["ShardEncoder", "ShardReader", "ShardedArray", "chunk_encoder", "encode_index"]



def _open_file_budget() -> int:
    """Shard files a reader may keep open: 4096, or half the soft descriptor limit when that is lower."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 256
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(0, min(4096, soft // 2 - 64))


def encode_index(entries: np.ndarray) -> bytes:
    """A shard index as zarr writes it: (offset, length) pairs as little-endian uint64, then their crc32c."""
    body = np.ascontiguousarray(entries, dtype="<u8").tobytes()
    return body + struct.pack("<I", google_crc32c.value(body))


def chunk_encoder(codecs: Sequence[Mapping[str, Any]], dtype: np.dtype) -> Callable[[np.ndarray], bytes]:
    """Encode one chunk exactly as zarr does for ``codecs`` (``bytes`` little endian, then optionally
    one ``blosc`` or ``zstd``): the same bytes as zarr's own pipeline (tested)."""
    import numcodecs

    first = codecs[0].get("configuration", {}) if isinstance(codecs[0].get("configuration", {}), dict) else {}
    stored = np.dtype(dtype).newbyteorder(">" if first.get("endian", "little") == "big" else "<")
    if len(codecs) == 1:
        return lambda chunk: np.ascontiguousarray(chunk, dtype=stored).tobytes()
    name, conf = codecs[1]["name"], codecs[1].get("configuration", {})
    if name == "blosc":
        from numcodecs import blosc

        shuffle = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
                   "bitshuffle": numcodecs.Blosc.BITSHUFFLE}[conf["shuffle"]]
        cname, clevel, blocksize = conf["cname"].encode(), conf["clevel"], conf.get("blocksize", 0)
        # numcodecs' Blosc.encode, minus its argument checks (a few microseconds per 16 KiB chunk)
        return lambda chunk: blosc.compress(np.ascontiguousarray(chunk, dtype=stored), cname, clevel, shuffle, blocksize)
    if name == "zstd":
        codec = numcodecs.Zstd(level=conf.get("level", 0), checksum=conf.get("checksum", False))
        return lambda chunk: codec.encode(np.ascontiguousarray(chunk, dtype=stored))
    # the guard refuses anything else before a writer resumes a store
    raise DamagedStoreError(f"traj cannot write chunks with the {name!r} codec")


class ShardEncoder:
    """Encode whole shards of one (T, N) sharded array.

    Parameters
    ----------
    shard : (rows, width)
        The shard shape (the array's chunk grid).
    inner : (rows, width)
        The inner chunk shape; divides ``shard``.
    n_columns : int
        N: inner chunks wholly right of it are left out of the shard (an empty index entry, as
        zarr leaves out chunks that hold only the fill value).
    encode : callable
        One inner chunk (a C-contiguous array of the inner shape) to its bytes.
    fill : scalar
        The array's fill value, for the padding of edge chunks.
    """

    def __init__(self, shard: tuple[int, int], inner: tuple[int, int], n_columns: int,
                 encode: Callable[[np.ndarray], bytes], fill: Any, dtype: np.dtype) -> None:
        self.shard = shard
        self.inner = inner
        self.per_shard = (shard[0] // inner[0], shard[1] // inner[1])
        self.n_columns = n_columns
        self.encode = encode
        self.fill = fill
        self.dtype = np.dtype(dtype)

    def parts(self, column: int, data: np.ndarray) -> list[bytes]:
        """The bytes of shard column ``column`` holding ``data`` (its region, cut short at the array's
        edge: fewer rows or columns than the shard): every inner chunk, then the index.

        The loop does as little Python per chunk as it can (the writer thread holds the GIL the
        training thread needs between compressions); the index is built once from the lengths.
        """
        (ti, wi), (kr, kc) = self.inner, self.per_shard
        first = column * self.shard[1]
        n_cols = max(0, min(kc, -(-(self.n_columns - first) // wi)))  # inner chunks not wholly right of N
        n_rows = min(kr, -(-data.shape[0] // ti))  # inner chunk rows holding a row given
        encode = self.encode
        parts: list[bytes] = []
        for a in range(n_rows):
            band = data[a * ti : (a + 1) * ti]
            if band.shape[0] != ti or band.shape[1] < n_cols * wi:  # edge chunks are stored full size, padded
                full = np.full((ti, n_cols * wi), self.fill, dtype=self.dtype)
                full[: band.shape[0], : band.shape[1]] = band[:, : n_cols * wi]
                band = full
            parts.extend([encode(band[:, b * wi : (b + 1) * wi]) for b in range(n_cols)])
        entries = np.full((kr, kc, 2), EMPTY_ENTRY, dtype="<u8")
        if parts:
            lengths = np.fromiter(map(len, parts), dtype=np.uint64, count=len(parts)).reshape(n_rows, n_cols)
            offsets = np.cumsum(lengths, dtype=np.uint64) - lengths.reshape(-1)
            entries[:n_rows, :n_cols, 0] = offsets.reshape(n_rows, n_cols)
            entries[:n_rows, :n_cols, 1] = lengths
        parts.append(encode_index(entries))
        return parts


def _decoder(codec: str, dtype: np.dtype) -> Callable[[Any, np.ndarray], Any]:
    """``decode(raw, dest)``: one checked chunk into a C-contiguous ``dest`` of the chunk's size."""
    if codec == "blosc":
        from numcodecs import blosc

        return blosc.decompress
    if codec == "zstd":
        from numcodecs import zstd

        return zstd.decompress

    def copy(raw: Any, dest: np.ndarray) -> None:
        np.copyto(dest, np.frombuffer(raw, dtype=dtype).reshape(dest.shape))

    return copy


class ShardReader:
    """Column bands and selected columns of a sharded (T, N) array, each inner chunk decoded once.

    Parameters
    ----------
    store : GuardedStore
        Opens the shard files (regular files inside the store only).
    spec : ArraySpec
        The array's validated metadata (sharded).
    fill : scalar
        The fill value: what absent shards or chunks of rows past ``required_rows`` read as.
    required_rows : int
        Rows whose every inner chunk must exist (the committed rows of ``params``; 0 for
        ``grads``, whose early rows may never have been written).
    label : str
        How messages name the store.
    max_open : int, optional
        Shard files kept open between reads (default: up to 4096, within half the process's
        descriptor limit). Call :meth:`close` when done.
    """

    def __init__(self, store: GuardedStore, spec: ArraySpec, *, fill: Any, required_rows: int, label: str,
                 max_open: int | None = None) -> None:
        if spec.inner is None or len(spec.chunks) != 2:
            raise ValueError("ShardReader reads 2-D sharded arrays")
        self.store = store
        self.spec = spec
        self.fill = fill
        self.required_rows = required_rows
        self.label = label
        self.dtype = spec.dtype
        self._decode = _decoder(spec.codec, spec.dtype)
        self._files: dict[tuple[int, int], tuple[int, np.ndarray, str, bool]] = {}
        self._tmp = np.empty(spec.inner, dtype=spec.dtype)
        self.max_open = max_open if max_open is not None else _open_file_budget()

    @property
    def chunk_width(self) -> int:
        assert self.spec.inner is not None
        return self.spec.inner[1]

    # ------------------------------------------------------------------ public reads
    def read(self, rows: slice, columns: slice) -> np.ndarray:
        """The region ``rows`` x ``columns`` (contiguous slices), shape (rows, columns), the array's dtype.

        The result is a view into a buffer at most one inner chunk wider on each side.
        """
        wi = self.chunk_width
        g0, g1 = columns.start // wi, -(-columns.stop // wi)
        n_rows = rows.stop - rows.start
        out = np.empty((n_rows, (g1 - g0) * wi), dtype=self.dtype)
        self._forget_left_of(g0)
        ti = self.spec.unit[0]
        for g, lo, hi, top, raw in self._chunks(rows, range(g0, g1)):
            cols = slice((g - g0) * wi, (g - g0 + 1) * wi)
            if raw is None:
                out[lo - rows.start : hi - rows.start, cols] = self.fill
            elif ti == 1:
                self._decode(raw, out[lo - rows.start, cols])
            else:
                self._decode(raw, self._tmp)
                out[lo - rows.start : hi - rows.start, cols] = self._tmp[lo - top : hi - top]
        offset = columns.start - g0 * wi
        return out[:, offset : offset + columns.stop - columns.start]

    def read_columns(self, rows: slice, index: np.ndarray) -> np.ndarray:
        """Columns ``index`` (any order, repeats allowed) of ``rows``, shape (rows, len(index))."""
        wi = self.chunk_width
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((rows.stop - rows.start, index.size), dtype=self.dtype)
        if not index.size:
            return out
        chunk_of = index // wi
        by_chunk = np.argsort(chunk_of, kind="stable")
        wanted, starts = np.unique(chunk_of[by_chunk], return_index=True)
        ends = np.append(starts[1:], index.size)
        where = {int(g): by_chunk[a:b] for g, a, b in zip(wanted, starts, ends, strict=True)}
        for g, lo, hi, top, raw in self._chunks(rows, wanted):
            positions = where[g]
            if raw is None:
                out[lo - rows.start : hi - rows.start, positions] = self.fill
                continue
            self._decode(raw, self._tmp)
            out[lo - rows.start : hi - rows.start, positions] = self._tmp[lo - top : hi - top][:, index[positions] - g * wi]
        return out

    # ------------------------------------------------------------------ chunk walk
    def _chunks(self, rows: slice, chunks: Sequence[int] | np.ndarray) -> Iterator[tuple[int, int, int, int, Any]]:
        """Yield ``(g, lo, hi, top, raw)`` for inner chunk column ``g`` (sorted, unique) and the rows
        [lo, hi) of ``rows`` it holds (its first row is ``top``); ``raw`` is its checked encoded bytes,
        or None where the array holds the fill value."""
        spec = self.spec
        (t_s, _), (ti, _), (_, kc) = spec.chunks, spec.unit, spec.chunks_per_shard
        chunks = np.asarray(chunks, dtype=np.int64)
        if not chunks.size or rows.stop <= rows.start:
            return
        columns = chunks // kc
        splits = np.flatnonzero(np.diff(columns)) + 1
        groups = [(int(c[0] // kc), c - c[0] // kc * kc) for c in np.split(chunks, splits)]
        for s in range(rows.start // t_s, (rows.stop - 1) // t_s + 1):
            first = s * t_s
            inner_rows = range((max(rows.start, first) - first) // ti, (min(rows.stop, first + t_s) - 1 - first) // ti + 1)
            for c, local in groups:
                shard = self._open(s, c)
                if shard is None:
                    for a in inner_rows:
                        top = first + a * ti
                        lo, hi = max(top, rows.start), min(top + ti, rows.stop)
                        for b in local:
                            yield c * kc + int(b), lo, hi, top, None
                    continue
                fd, entries, where, keep = shard
                try:
                    for a in inner_rows:
                        top = first + a * ti
                        lo, hi = max(top, rows.start), min(top + ti, rows.stop)
                        ids = a * kc + local
                        for b, raw in zip(local, self._read_entries(fd, entries[ids], where), strict=True):
                            yield c * kc + int(b), lo, hi, top, raw
                finally:
                    if not keep:
                        os.close(fd)

    def _open(self, s: int, c: int) -> tuple[int, np.ndarray, str, bool] | None:
        """Shard (s, c): a descriptor, its checked index, how messages name it, and whether the reader
        keeps it open (bands move right over the same shards; up to :attr:`max_open` stay open, so a
        band costs one ``pread`` per shard, not an ``open``). None where the shard does not exist."""
        kept = self._files.get((s, c))
        if kept is not None:
            return kept
        spec = self.spec
        key = f"{spec.name}/c/{s}/{c}"
        where = f"{self.label}: {key}"
        opened = self.store.open_file(key, spec.max_stored_bytes)
        if opened is None:
            if s * spec.chunks[0] < self.required_rows:
                raise DamagedStoreError(f"{where}: shard of committed snapshots is missing (the store is damaged)")
            return None
        fd, size = opened
        try:
            entries = self._index(s, c, fd, size, where)
        except BaseException:
            os.close(fd)
            raise
        keep = len(self._files) < self.max_open
        shard = (fd, entries, where, keep)
        if keep:
            self._files[(s, c)] = shard
        return shard

    def close(self) -> None:
        """Close the shard files this reader keeps open."""
        files, self._files = self._files, {}
        for fd, *_ in files.values():
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - at interpreter exit
            pass

    def _read_entries(self, fd: int, entries: np.ndarray, where: str) -> Iterator[Any]:
        """The checked bytes of each entry (None for an empty one), adjacent chunks read in one ``pread``."""
        offsets, lengths = entries[:, 0], entries[:, 1]
        present = offsets != EMPTY_ENTRY
        n = len(entries)
        i = 0
        while i < n:
            if not present[i]:
                yield None
                i += 1
                continue
            j = i + 1
            while j < n and present[j] and offsets[j] == offsets[j - 1] + lengths[j - 1]:
                j += 1
            start = int(offsets[i])
            stop = int(offsets[j - 1] + lengths[j - 1])
            try:
                blob = os.pread(fd, stop - start, start)
            except OSError as exc:
                raise DamagedStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from None
            if len(blob) != stop - start:
                raise DamagedStoreError(f"{where}: shorter than its index says (the file changed or is damaged)")
            view = memoryview(blob)
            for k in range(i, j):
                at = int(offsets[k]) - start
                raw = view[at : at + int(lengths[k])]
                self.spec.check_chunk(raw, where)
                yield raw
            i = j

    def _index(self, s: int, c: int, fd: int, size: int, where: str) -> np.ndarray:
        """The checked index of shard (s, c) (an open file of ``size`` bytes)."""
        spec = self.spec
        if size < spec.index_nbytes:
            raise DamagedStoreError(f"{where}: too short for a shard index of {spec.n_inner} inner chunks")
        try:
            raw = os.pread(fd, spec.index_nbytes, size - spec.index_nbytes)
        except OSError as exc:
            raise DamagedStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from None
        return spec.check_index(raw, size, where, spec.required_inner(f"{s}/{c}", self.required_rows))

    def _forget_left_of(self, chunk: int) -> None:
        """Close the shards wholly left of inner chunk column ``chunk`` (bands move right)."""
        column = chunk // self.spec.chunks_per_shard[1]
        if any(c < column for _, c in self._files):
            for key in [key for key in self._files if key[1] < column]:
                os.close(self._files.pop(key)[0])


class ShardedArray(zarr.Array):  # type: ignore[misc]
    """A guarded, sharded zarr array whose ``chunks`` are its shards and whose rectangular
    selections are read by :class:`ShardReader`; every other zarr method is zarr's own.

    ``dask.array.from_zarr`` cuts an array by ``chunks``; for a sharded array zarr reports the
    inner chunks (16 KiB here), which made one dask task per inner chunk, each a zarr call
    through the sharding codec: 8x slower than reading by shard (measured, 500k x 201).
    """

    @classmethod
    def of(cls, array: Any) -> ShardedArray:
        return cls(array._async_array)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.shards or super().chunks)

    def __getitem__(self, selection: Any) -> Any:
        region = _rectangle(selection, self.shape)
        store = self._async_array.store_path.store
        spec = store.spec(self.path) if isinstance(store, GuardedStore) else None
        if region is None or spec is None or not spec.sharded:
            return super().__getitem__(selection)
        rows, columns, squeeze = region
        reader = ShardReader(store, spec, fill=self.fill_value, required_rows=store.committed_rows(self.path),
                             label=store.label, max_open=0)
        try:
            out = np.ascontiguousarray(reader.read(rows, columns))
        finally:
            reader.close()
        return out[tuple(0 if s else slice(None) for s in squeeze)]


def _rectangle(selection: Any, shape: tuple[int, ...]) -> tuple[slice, slice, tuple[bool, bool]] | None:
    """A selection of a 2-D array made of integers and step-1 slices, as (rows, columns, squeezed axes)."""
    if len(shape) != 2:
        return None
    if not isinstance(selection, tuple):
        selection = (selection,)
    if len(selection) > 2 or any(s is Ellipsis for s in selection):
        return None
    selection = selection + (slice(None),) * (2 - len(selection))
    out: list[slice] = []
    squeeze = []
    for s, n in zip(selection, shape, strict=True):
        if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            k = int(s) + (n if s < 0 else 0)
            if not 0 <= k < n:
                return None
            out.append(slice(k, k + 1))
            squeeze.append(True)
        elif isinstance(s, slice):
            start, stop, step = s.indices(n)
            if step != 1:
                return None
            out.append(slice(start, max(start, stop)))
            squeeze.append(False)
        else:
            return None
    return out[0], out[1], (squeeze[0], squeeze[1])
