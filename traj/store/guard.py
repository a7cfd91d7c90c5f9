"""Reading a store that may be hostile: checked metadata and a guarded byte source for zarr.

A run store is data someone handed us. Zarr trusts it: a chunk file whose Blosc header
declares 2 GiB is decoded into 2 GiB, a chunk that is a symlink to ``/dev/zero`` is read until
memory runs out, a FIFO blocks forever, and a 20 GB sparse file is read whole. This module
is the door every byte of a run store passes through, and of the files the analyses write
(``cmd.zarr``, ``masks.zarr``, ``modes.zarr``: :mod:`traj.store.derived` declares them and reads
them through :class:`GuardedStore`; a chunk of a file that is itself an array is keyed ``c/<i>/<j>``).

:func:`parse_array_metadata` accepts only arrays that traj writes (or reads safely): the
rank, dtypes and codecs of their role, a regular chunk grid keyed ``<name>/c/<i>/<j>``, codecs
``bytes`` optionally followed by exactly one ``blosc`` or ``zstd`` (both carry the decoded size
in their header; ``gzip`` and friends do not, so they are refused), and a decoded chunk of at
most :data:`MAX_CHUNK_BYTES` (:data:`MAX_SERIES_CHUNK_BYTES` for 1-D series).

:class:`GuardedStore` is the zarr store :class:`~traj.store.RunStore` reads through. It knows
every array's :class:`ArraySpec` and, for each key zarr asks for:

* opens only regular files inside the store: the directory's real path must lie under the
  store's, the file itself must not be a symlink (``O_NOFOLLOW``), FIFOs and devices are
  refused after an ``lstat`` and never opened for a blocking read;
* bounds the file size by what the array's codec can produce for one chunk (exactly the
  decoded size without compression; decoded + 16 header bytes for Blosc; zstd's compress
  bound), before reading it;
* checks the codec header's declared decoded size against chunk shape x itemsize before
  zarr decompresses anything;
* refuses a missing ``params`` chunk inside the committed rows (traj writes every chunk of
  every committed row, so a missing one is damage, not the fill value).

``params`` and ``grads`` may be Zarr v3 sharded arrays (format version 2): one
``sharding_indexed`` codec whose inner codecs follow the same rule, a ``bytes`` + ``crc32c``
index at the end of each shard, inner chunks that divide the shard, a decoded inner chunk of at
most :data:`MAX_CHUNK_BYTES`, at most :data:`MAX_CHUNKS_PER_SHARD` of them and a decoded shard
of at most :data:`MAX_SHARD_BYTES`. A shard file is bounded by its inner chunks' stored bound
plus the index; its index is checked before any offset in it is used (checksum, every entry
inside the data part of the file, no two chunks overlapping, no chunk of a committed row of
``params`` missing) and each inner chunk's header before it is decoded. Zarr's partial reads
(the index as a suffix, then inner chunks by byte range) are served by reading only that range.

Metadata documents are bounded too (:data:`MAX_GROUP_JSON_BYTES`, :data:`MAX_ARRAY_JSON_BYTES`).
The checks assume the store does not change while it is read (a store is not an adversary
racing the reader); the real-path check is cached per directory.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.buffer import default_buffer_prototype
from zarr.storage import LocalStore

from ..errors import DamagedStoreError

__all__ = [
    "ArraySpec",
    "GuardedStore",
    "read_at_most",
    "MAX_ARRAY_JSON_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_CHUNKS_PER_SHARD",
    "MAX_GROUP_JSON_BYTES",
    "MAX_SHARD_BYTES",
    "MAX_SERIES_CHUNK_BYTES",
    "parse_array_metadata",
]

#: Largest decoded chunk of ``params``/``grads`` accepted (traj writes ~1 MiB chunks).
MAX_CHUNK_BYTES = 64 << 20
#: Largest decoded shard of ``params``/``grads`` (traj writes ~4 MiB shards).
MAX_SHARD_BYTES = 256 << 20
#: Most inner chunks in one shard (the index is 16 bytes per inner chunk).
MAX_CHUNKS_PER_SHARD = 1 << 16
#: Largest decoded chunk of a 1-D series (traj writes 4096 values = 32 KiB).
MAX_SERIES_CHUNK_BYTES = 8 << 20
#: Largest group ``zarr.json`` (it holds the layout: ~100 bytes per parameter tensor).
MAX_GROUP_JSON_BYTES = 16 << 20
#: Largest array ``zarr.json`` (traj's are ~1 KiB).
MAX_ARRAY_JSON_BYTES = 1 << 20

_BLOSC_OVERHEAD = 16  # c-blosc 1: header bytes; a chunk that does not compress is stored verbatim after it
_ZSTD_MAGIC = 0xFD2FB528
_CODECS = ("blosc", "zstd")
#: An empty entry of a shard index (offset and length both).
EMPTY_ENTRY = 2**64 - 1
_INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]


@dataclass(frozen=True)
class ArraySpec:
    """What a guarded read of one array may return: its validated zarr v3 metadata.

    ``chunks`` is the chunk grid (the shard shape of a sharded array); ``inner`` the inner
    chunk shape of a sharded array (None otherwise). ``codec`` compresses each (inner) chunk.
    """

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    codec: str  # "bytes" (no compression), "blosc" or "zstd"
    inner: tuple[int, ...] | None = None

    @property
    def sharded(self) -> bool:
        return self.inner is not None

    @cached_property
    def unit(self) -> tuple[int, ...]:
        """Shape of one encoded chunk (the inner chunk of a shard)."""
        return self.inner if self.inner is not None else self.chunks

    @cached_property
    def chunk_nbytes(self) -> int:
        """Decoded bytes of one (inner) chunk (edge chunks are stored full size)."""
        return math.prod(self.unit) * self.dtype.itemsize

    @cached_property
    def max_chunk_stored(self) -> int:
        """The largest encoding the codec can legitimately produce for one (inner) chunk."""
        n = self.chunk_nbytes
        if self.codec == "blosc":
            return n + _BLOSC_OVERHEAD
        if self.codec == "zstd":  # ZSTD_COMPRESSBOUND
            return n + (n >> 8) + ((128 * 1024 - n) >> 11 if n < 128 * 1024 else 0) + 32
        return n

    @cached_property
    def chunks_per_shard(self) -> tuple[int, ...]:
        if self.inner is None:
            return tuple(1 for _ in self.chunks)
        return tuple(s // c for s, c in zip(self.chunks, self.inner, strict=True))

    @cached_property
    def n_inner(self) -> int:
        return math.prod(self.chunks_per_shard)

    @cached_property
    def index_nbytes(self) -> int:
        """Bytes of a shard's index: (offset, length) as little-endian uint64 per inner chunk, then a crc32c."""
        return 16 * self.n_inner + 4

    @cached_property
    def max_stored_bytes(self) -> int:
        """The largest file one chunk (or one shard) may be."""
        if self.inner is None:
            return self.max_chunk_stored
        return self.n_inner * self.max_chunk_stored + self.index_nbytes

    def check_chunk(self, data: bytes | memoryview, where: str) -> None:
        """Refuse a chunk whose bytes cannot decode to exactly one (inner) chunk of this array."""
        expected = self.chunk_nbytes
        unit = list(self.unit)
        if self.codec == "bytes":
            if len(data) != expected:
                raise DamagedStoreError(f"{where}: {len(data)} bytes, an uncompressed chunk holds {expected}")
            return
        if self.codec == "blosc":
            if len(data) < _BLOSC_OVERHEAD:
                raise DamagedStoreError(f"{where}: {len(data)} bytes, too short for a Blosc chunk")
            nbytes, blocksize, cbytes = struct.unpack_from("<III", data, 4)
            if nbytes != expected:
                raise DamagedStoreError(
                    f"{where}: the Blosc header declares {nbytes} decoded bytes, the chunk shape "
                    f"{unit} of {self.dtype.name} holds {expected}"
                )
            if cbytes != len(data):
                raise DamagedStoreError(f"{where}: the Blosc header declares {cbytes} compressed bytes, the file has {len(data)}")
            if not 0 < blocksize <= nbytes:
                raise DamagedStoreError(f"{where}: the Blosc header declares an invalid block size {blocksize}")
            return
        declared = _zstd_content_size(data)
        if declared is None:
            raise DamagedStoreError(f"{where}: not a zstd frame that declares its decoded size")
        if declared != expected:
            raise DamagedStoreError(
                f"{where}: the zstd frame declares {declared} decoded bytes, the chunk shape "
                f"{unit} of {self.dtype.name} holds {expected}"
            )

    def check_index(self, raw: bytes | memoryview, file_size: int, where: str,
                    required: np.ndarray | None = None) -> np.ndarray:
        """The (n_inner, 2) offsets and lengths of a shard's index, refused unless every entry is sound.

        ``raw`` is the index (the last :attr:`index_nbytes` of a file of ``file_size`` bytes).
        Every non-empty entry must lie inside the data part of the file, declare at most
        :attr:`max_chunk_stored` bytes and overlap no other; ``required`` (boolean, one per
        inner chunk) marks chunks that must be present (committed snapshots of ``params``).
        """
        if len(raw) != self.index_nbytes or file_size < self.index_nbytes:
            raise DamagedStoreError(f"{where}: too short for a shard index of {self.n_inner} inner chunks")
        body = bytes(raw[:-4])
        if struct.pack("<I", google_crc32c.value(body)) != bytes(raw[-4:]):
            raise DamagedStoreError(f"{where}: the shard index checksum does not match (the shard is damaged)")
        entries = np.frombuffer(body, dtype="<u8").reshape(self.n_inner, 2)
        empty = entries[:, 0] == EMPTY_ENTRY
        if not np.array_equal(empty, entries[:, 1] == EMPTY_ENTRY):
            raise DamagedStoreError(f"{where}: the shard index holds a half-empty entry")
        if required is not None and (empty & required).any():
            k = int(np.flatnonzero(empty & required)[0])
            raise DamagedStoreError(f"{where}: inner chunk {k} of committed snapshots is missing from the shard")
        offsets, lengths = entries[~empty, 0], entries[~empty, 1]
        data_end = file_size - self.index_nbytes
        if lengths.size:
            too_long = lengths > self.max_chunk_stored
            if (lengths == 0).any() or too_long.any():
                bad = int(lengths[too_long][0]) if too_long.any() else 0
                raise DamagedStoreError(
                    f"{where}: the shard index declares an inner chunk of {bad} bytes "
                    f"(1 to {self.max_chunk_stored} allowed)"
                )
            if (offsets > data_end).any() or (lengths > data_end - np.minimum(offsets, data_end)).any():
                raise DamagedStoreError(
                    f"{where}: the shard index points past the end of the chunk data ({data_end} bytes before the index)"
                )
            order = np.argsort(offsets, kind="stable")
            starts, stops = offsets[order], offsets[order] + lengths[order]
            if (starts[1:] < stops[:-1]).any():
                raise DamagedStoreError(f"{where}: the shard index declares overlapping inner chunks")
        return entries

    def check_shard(self, data: bytes, where: str, required: np.ndarray | None = None) -> None:
        """Refuse a whole shard unless its index and every inner chunk's header are sound."""
        entries = self.check_index(memoryview(data)[-self.index_nbytes :] if len(data) >= self.index_nbytes else data,
                                   len(data), where, required)
        view = memoryview(data)
        for k, (offset, length) in enumerate(entries):
            if offset != EMPTY_ENTRY:
                self.check_chunk(view[int(offset) : int(offset) + int(length)], f"{where} (inner chunk {k})")

    def required_inner(self, coords: str, committed: int | None) -> np.ndarray | None:
        """Which inner chunks of the shard at ``coords`` must be present: those holding a committed row
        and a column inside the array (traj writes every one of them)."""
        if not self.sharded or not committed:
            return None
        parts = coords.split("/")
        if len(parts) != len(self.chunks) or not all(p.isdigit() for p in parts):
            return None
        grid = [int(p) for p in parts]
        masks = []
        for axis, (g, size, inner, total) in enumerate(zip(grid, self.chunks, self.unit, self.shape, strict=True)):
            starts = g * size + inner * np.arange(size // inner)
            limit = committed if axis == 0 else total
            masks.append(starts < limit)
        required = masks[0]
        for mask in masks[1:]:
            required = np.logical_and.outer(required, mask)
        return np.asarray(required).reshape(-1)


def _zstd_content_size(data: bytes) -> int | None:
    """The frame content size of a zstd frame header, or None when absent or not zstd (RFC 8878 3.1.1)."""
    if len(data) < 6 or struct.unpack_from("<I", data, 0)[0] != _ZSTD_MAGIC:
        return None
    descriptor = data[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    if descriptor & 0x08:  # reserved bit
        return None
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(data) < pos + size:
        return None
    value = int.from_bytes(data[pos : pos + size], "little")
    return value + 256 if size == 2 else value


def json_object(raw: bytes, where: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; anything else is a :class:`DamagedStoreError` naming ``where``."""
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedStoreError(f"{where} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise DamagedStoreError(f"{where} holds a JSON {json_kind(meta)}, not an object")
    return meta


def json_kind(value: Any) -> str:
    """How JSON names the type of a parsed value (for messages)."""
    for kind, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "object"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_array_metadata(
    raw: bytes,
    name: str,
    *,
    rank: int,
    dtypes: Iterable[str],
    where: str,
    max_chunk_bytes: int | None = None,
) -> ArraySpec:
    """Validate an array's ``zarr.json`` against what traj accepts for ``name``.

    Parameters
    ----------
    raw : bytes
        The ``zarr.json`` document.
    name : str
        Array path inside the store, e.g. ``"params"`` or ``"metrics/val_loss"``.
    rank : int
        Required number of dimensions.
    dtypes : iterable of str
        Accepted ``data_type`` values.
    where : str
        Prefix of every error message (the store path).
    max_chunk_bytes : int, optional
        Largest decoded chunk accepted (default :data:`MAX_CHUNK_BYTES` for rank > 1,
        :data:`MAX_SERIES_CHUNK_BYTES` for 1-D series).

    Raises
    ------
    DamagedStoreError
        Not JSON, not an object, or any field outside what traj writes.
    """
    label = f"{where}: '{name}'"
    meta = json_object(raw, f"{label}: zarr.json")
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise DamagedStoreError(f"{label}: zarr.json does not describe a Zarr v3 array")
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(_int(s) and s >= 0 for s in shape):
        raise DamagedStoreError(f"{label}: invalid shape {shape!r}")
    if len(shape) != rank:
        raise DamagedStoreError(f"{label}: {len(shape)} dimension(s), expected {rank}")
    allowed = tuple(dtypes)
    dtype_name = meta.get("data_type")
    if not isinstance(dtype_name, str) or dtype_name not in allowed:
        raise DamagedStoreError(f"{label}: data type {dtype_name!r}, expected {' or '.join(allowed)}")
    grid = meta.get("chunk_grid")
    config = grid.get("configuration") if isinstance(grid, dict) else None
    chunks = config.get("chunk_shape") if isinstance(config, dict) else None
    if (
        not isinstance(grid, dict)
        or grid.get("name") != "regular"
        or not isinstance(chunks, list)
        or len(chunks) != rank
        or not all(_int(c) and c >= 1 for c in chunks)
    ):
        raise DamagedStoreError(f"{label}: invalid chunk grid {grid!r}"[:300])
    encoding = meta.get("chunk_key_encoding", {"name": "default"})
    config = encoding.get("configuration", {}) if isinstance(encoding, dict) else None
    if not isinstance(encoding, dict) or encoding.get("name") != "default" or not isinstance(config, dict) or config.get("separator", "/") != "/":
        raise DamagedStoreError(f"{label}: unsupported chunk key encoding {encoding!r}"[:300])
    if meta.get("storage_transformers", []) != []:
        raise DamagedStoreError(f"{label}: storage transformers are not supported")
    codecs = meta.get("codecs")
    inner = None
    if isinstance(codecs, list) and codecs and isinstance(codecs[0], dict) and codecs[0].get("name") == "sharding_indexed":
        if rank != 2:
            raise DamagedStoreError(f"{label}: sharding is supported for 'params' and 'grads' only")
        codecs, inner = _parse_sharding(codecs, tuple(chunks), label)
    codec = _parse_codecs(codecs, label)
    spec = ArraySpec(name, tuple(shape), tuple(chunks), np.dtype(dtype_name), codec, inner)
    limit = max_chunk_bytes or (MAX_CHUNK_BYTES if rank > 1 else MAX_SERIES_CHUNK_BYTES)
    if spec.chunk_nbytes > limit:
        raise DamagedStoreError(
            f"{label}: chunks of {list(spec.unit)} {dtype_name} ({spec.chunk_nbytes} bytes) exceed the "
            f"{limit >> 20} MiB traj reads"
        )
    if inner is not None:
        if spec.n_inner > MAX_CHUNKS_PER_SHARD:
            raise DamagedStoreError(f"{label}: shards of {spec.n_inner} inner chunks exceed the {MAX_CHUNKS_PER_SHARD} traj reads")
        shard_bytes = math.prod(spec.chunks) * spec.dtype.itemsize
        if shard_bytes > MAX_SHARD_BYTES:
            raise DamagedStoreError(
                f"{label}: shards of {list(spec.chunks)} {dtype_name} ({shard_bytes} bytes) exceed the "
                f"{MAX_SHARD_BYTES >> 20} MiB traj reads"
            )
    return spec


def _parse_sharding(codecs: list[Any], shard: tuple[int, ...], label: str) -> tuple[Any, tuple[int, ...]]:
    """The inner codecs and inner chunk shape of a ``sharding_indexed`` codec, as traj writes it."""
    config = codecs[0].get("configuration")
    if len(codecs) != 1 or not isinstance(config, dict):
        raise DamagedStoreError(f"{label}: invalid sharding configuration (one 'sharding_indexed' codec, nothing after it)")
    inner = config.get("chunk_shape")
    if (
        not isinstance(inner, list)
        or len(inner) != len(shard)
        or not all(_int(c) and c >= 1 for c in inner)
        or any(s % c for s, c in zip(shard, inner, strict=True))
    ):
        raise DamagedStoreError(f"{label}: invalid sharding configuration (inner chunks {inner!r} must divide the shards {list(shard)})"[:300])
    index_codecs = config.get("index_codecs")
    if not isinstance(index_codecs, list) or [
        {k: v for k, v in c.items() if not (k == "configuration" and v == {})} if isinstance(c, dict) else c
        for c in index_codecs
    ] != _INDEX_CODECS:
        raise DamagedStoreError(f"{label}: invalid sharding configuration (the index must be 'bytes' little endian, then 'crc32c')")
    if config.get("index_location", "end") != "end":
        raise DamagedStoreError(f"{label}: invalid sharding configuration (traj reads shards whose index is at the end)")
    inner_codecs = config.get("codecs")
    if isinstance(inner_codecs, list) and inner_codecs and isinstance(inner_codecs[0], dict):
        first = inner_codecs[0].get("configuration", {})
        if isinstance(first, dict) and first.get("endian", "little") != "little":
            raise DamagedStoreError(f"{label}: invalid sharding configuration (inner chunks must be little endian)")
    return inner_codecs, tuple(inner)


def _parse_codecs(codecs: Any, label: str) -> str:
    if not isinstance(codecs, list) or not codecs:
        raise DamagedStoreError(f"{label}: no codecs (expected 'bytes', then optionally 'blosc' or 'zstd')")
    names = [c.get("name") if isinstance(c, dict) else None for c in codecs]
    first = codecs[0]
    endian = first.get("configuration", {}).get("endian", "little") if isinstance(first, dict) and isinstance(first.get("configuration", {}), dict) else None
    if names[0] != "bytes" or endian not in ("little", "big"):
        raise DamagedStoreError(f"{label}: codecs {names!r} must start with 'bytes'")
    if len(codecs) == 1:
        return "bytes"
    if len(codecs) == 2 and names[1] in _CODECS:
        return str(names[1])
    raise DamagedStoreError(
        f"{label}: codecs {names!r} are not supported (traj reads 'bytes', then optionally one 'blosc' or 'zstd')"[:300]
    )


class GuardedStore(LocalStore):
    """A read-only :class:`zarr.storage.LocalStore` that serves only checked bytes.

    Parameters
    ----------
    root : path
        The run store directory.
    label : str, optional
        How error messages name the store (default ``root``).
    """

    def __init__(self, root: Path | str, *, read_only: bool = True, label: str | None = None) -> None:
        super().__init__(root, read_only=True)
        self._real_root = os.path.realpath(self.root)
        self._label = label or str(root)
        self._specs: dict[str, ArraySpec] = {}
        self._committed: dict[str, int] = {}
        self._safe_dirs: set[str] = set()

    def with_read_only(self, read_only: bool = False) -> GuardedStore:
        if not read_only:
            raise TypeError("a GuardedStore is read-only")
        return self

    # ------------------------------------------------------------------ what may be read
    def register(self, spec: ArraySpec) -> None:
        """Allow chunk reads of ``spec.name``, checked against ``spec``."""
        self._specs[spec.name] = spec

    def require_chunks(self, name: str, rows: int) -> None:
        """Chunks of ``name`` holding any of its first ``rows`` rows must exist (a missing one is damage)."""
        self._committed[name] = rows

    def spec(self, name: str) -> ArraySpec | None:
        """The checked metadata of array ``name`` (None when it was not registered)."""
        return self._specs.get(name)

    def committed_rows(self, name: str) -> int:
        """Rows of ``name`` whose chunks must all exist (0 when none are required)."""
        return self._committed.get(name, 0)

    @property
    def label(self) -> str:
        return self._label

    # ------------------------------------------------------------------ reading
    def open_file(self, key: str, limit: int) -> tuple[int, int] | None:
        """An open descriptor and the size of ``key`` (None when absent): a regular file inside the
        store of at most ``limit`` bytes, never a symlink, FIFO or device. The caller closes it."""
        where = f"{self._label}: {key}"
        path = os.path.join(self.root, key)
        parent = os.path.dirname(path)
        if parent not in self._safe_dirs:
            try:
                real = os.path.realpath(parent, strict=True)
            except OSError:
                return None
            if real != self._real_root and not real.startswith(self._real_root + os.sep):
                raise DamagedStoreError(f"{where}: leads outside the store (a symbolic link to {real})")
            self._safe_dirs.add(parent)
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(info.st_mode):
            raise DamagedStoreError(f"{where}: a symbolic link, not a file (traj reads only regular files in a store)")
        if stat.S_ISDIR(info.st_mode):
            raise DamagedStoreError(f"{where}: a directory where a file belongs")
        if not stat.S_ISREG(info.st_mode):
            raise DamagedStoreError(f"{where}: not a regular file (a FIFO, socket or device)")
        if info.st_size > limit:
            raise DamagedStoreError(f"{where}: {info.st_size} bytes, more than the {limit} its array allows")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DamagedStoreError(f"{where}: a symbolic link, not a file") from None
            raise DamagedStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from None
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode):
                raise DamagedStoreError(f"{where}: not a regular file")
            if now.st_size > limit:
                raise DamagedStoreError(f"{where}: more than the {limit} bytes its array allows")
        except BaseException:
            os.close(fd)
            raise
        return fd, now.st_size

    def read_file(self, key: str, limit: int) -> bytes | None:
        """The bytes of ``key`` (None when absent), from a regular file inside the store of at most ``limit`` bytes."""
        opened = self.open_file(key, limit)
        if opened is None:
            return None
        fd, _ = opened
        where = f"{self._label}: {key}"
        try:
            data = read_at_most(fd, limit)
        except OSError as exc:
            raise DamagedStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from None
        finally:
            os.close(fd)
        if len(data) > limit:
            raise DamagedStoreError(f"{where}: more than the {limit} bytes its array allows")
        return data

    def is_regular_file(self, key: str) -> bool:
        """Whether ``key`` exists; a symlink, FIFO or device there is damage, not absence."""
        path = os.path.join(self.root, key)
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not stat.S_ISREG(info.st_mode):
            if stat.S_ISDIR(info.st_mode):
                return False
            raise DamagedStoreError(f"{self._label}: {key} is not a regular file")
        return True

    def _checked_get(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if key == "zarr.json":
            data = self.read_file(key, MAX_GROUP_JSON_BYTES)
        elif key.endswith("/zarr.json"):
            data = self.read_file(key, MAX_ARRAY_JSON_BYTES)
        else:
            name, sep, coords = key.rpartition("/c/")
            if not sep and key.startswith("c/"):  # a chunk of a store that is itself an array (modes.zarr)
                name, sep, coords = "", "c/", key[2:]
            spec = self._specs.get(name) if sep else None
            if spec is None:
                raise DamagedStoreError(f"{self._label}: traj does not read {key!r} (not a chunk of a checked array)")
            if spec.sharded:
                return self._shard_get(key, spec, coords, byte_range)
            data = self.read_file(key, spec.max_stored_bytes)
            if data is None:
                self._check_absent(key, spec, coords)
                return None
            spec.check_chunk(data, f"{self._label}: {key}")
        if data is None or byte_range is None:
            return data
        return _slice(data, byte_range)

    def _check_absent(self, key: str, spec: ArraySpec, coords: str) -> None:
        rows = self._committed.get(spec.name)
        first_row = _first_row(coords, spec)
        if rows is not None and first_row is not None and first_row < rows:
            raise DamagedStoreError(f"{self._label}: chunk {key} of committed snapshots is missing (the store is damaged)")

    def _shard_get(self, key: str, spec: ArraySpec, coords: str, byte_range: ByteRequest | None) -> bytes | None:
        """A whole shard (index and every inner chunk header checked), its index (a suffix of exactly
        the index size, checked), or one inner chunk (a range, its header checked); nothing else."""
        where = f"{self._label}: {key}"
        required = spec.required_inner(coords, self._committed.get(spec.name))
        if byte_range is None:
            data = self.read_file(key, spec.max_stored_bytes)
            if data is None:
                self._check_absent(key, spec, coords)
                return None
            spec.check_shard(data, where, required)
            return data
        opened = self.open_file(key, spec.max_stored_bytes)
        if opened is None:
            self._check_absent(key, spec, coords)
            return None
        fd, size = opened
        try:
            if isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == spec.index_nbytes:
                data = _pread_exact(fd, spec.index_nbytes, size - spec.index_nbytes, where) if size >= spec.index_nbytes else b""
                spec.check_index(data, size, where, required)
                return data
            if isinstance(byte_range, RangeByteRequest):
                start, stop = byte_range.start, byte_range.end
                if not 0 <= start < stop <= size - spec.index_nbytes or stop - start > spec.max_chunk_stored:
                    raise DamagedStoreError(f"{where}: bytes {start}..{stop} are not an inner chunk of this shard")
                data = _pread_exact(fd, stop - start, start, where)
                spec.check_chunk(data, where)
                return data
            raise DamagedStoreError(f"{where}: traj does not serve {byte_range!r} of a shard")
        finally:
            os.close(fd)

    def get_sync(self, key: str, *, prototype: BufferPrototype | None = None,
                 byte_range: ByteRequest | None = None) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        data = self._checked_get(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        data = await asyncio.to_thread(self._checked_get, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until zarr's event loop has finished the tasks a failed read left running.

        zarr reads the chunks of a selection concurrently and raises the first error while
        the other reads go on; a process that exits then prints "Task was destroyed but it is
        pending" and "cannot schedule new futures after shutdown" tracebacks after its one
        error line. Called from any thread but zarr's own.
        """
        # zarr.core.sync is private, and kept: zarr has no public way to run a coroutine on its own event
        # loop, and only there can the tasks of its failed read be awaited
        from zarr.core.sync import sync

        async def idle() -> None:
            me = asyncio.current_task()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
                if not pending:
                    return
                await asyncio.wait(pending, timeout=0.1)

        try:
            sync(idle())
        except Exception:  # pragma: no cover - best effort: the error being reported matters more
            pass

    def __repr__(self) -> str:
        return f"GuardedStore({str(self.root)!r})"


def _pread_exact(fd: int, length: int, offset: int, where: str) -> bytes:
    try:
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise DamagedStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(data) != length:
        raise DamagedStoreError(f"{where}: shorter than its index says (the file changed or is damaged)")
    return data


def _first_row(coords: str, spec: ArraySpec) -> int | None:
    head = coords.split("/", 1)[0]
    return int(head) * spec.chunks[0] if head.isdigit() else None


def _slice(data: bytes, byte_range: ByteRequest) -> bytes:
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(0, len(data) - byte_range.suffix) :]
    raise TypeError(f"unexpected byte range {byte_range!r}")


def read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of an open file: one byte more than allowed tells a file that grew
    (or lied about its size) from one that fits, without reading the rest of it."""
    parts, left = [], limit + 1
    while left > 0:
        part = os.read(fd, min(left, 1 << 24))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)
