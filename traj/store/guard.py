"""Reading a store that may be hostile: checked metadata and a guarded byte source for zarr.

A run store is data someone handed us. Zarr trusts it: a chunk file whose Blosc header
declares 2 GiB is decoded into 2 GiB, a chunk that is a symlink to ``/dev/zero`` is read until
memory runs out, a FIFO blocks forever, and a 20 GB sparse file is read whole. This module
is the door every byte of a run store passes through.

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
from pathlib import Path
from typing import Any

import numpy as np
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.buffer.core import default_buffer_prototype
from zarr.storage import LocalStore

from ..errors import DamagedStoreError

__all__ = [
    "ArraySpec",
    "GuardedStore",
    "MAX_ARRAY_JSON_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_GROUP_JSON_BYTES",
    "MAX_SERIES_CHUNK_BYTES",
    "parse_array_metadata",
]

#: Largest decoded chunk of ``params``/``grads`` accepted (traj writes ~1 MiB chunks).
MAX_CHUNK_BYTES = 64 << 20
#: Largest decoded chunk of a 1-D series (traj writes 4096 values = 32 KiB).
MAX_SERIES_CHUNK_BYTES = 8 << 20
#: Largest group ``zarr.json`` (it holds the layout: ~100 bytes per parameter tensor).
MAX_GROUP_JSON_BYTES = 16 << 20
#: Largest array ``zarr.json`` (traj's are ~1 KiB).
MAX_ARRAY_JSON_BYTES = 1 << 20

_BLOSC_OVERHEAD = 16  # c-blosc 1: header bytes; a chunk that does not compress is stored verbatim after it
_ZSTD_MAGIC = 0xFD2FB528
_CODECS = ("blosc", "zstd")


@dataclass(frozen=True)
class ArraySpec:
    """What a guarded read of one array may return: its validated zarr v3 metadata."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    codec: str  # "bytes" (no compression), "blosc" or "zstd"

    @property
    def chunk_nbytes(self) -> int:
        """Decoded bytes of one chunk (edge chunks are stored full size)."""
        return math.prod(self.chunks) * self.dtype.itemsize

    @property
    def max_stored_bytes(self) -> int:
        """The largest file the codec can legitimately produce for one chunk."""
        n = self.chunk_nbytes
        if self.codec == "blosc":
            return n + _BLOSC_OVERHEAD
        if self.codec == "zstd":  # ZSTD_COMPRESSBOUND
            return n + (n >> 8) + ((128 * 1024 - n) >> 11 if n < 128 * 1024 else 0) + 32
        return n

    def check_chunk(self, data: bytes, where: str) -> None:
        """Refuse a chunk whose bytes cannot decode to exactly one chunk of this array."""
        expected = self.chunk_nbytes
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
                    f"{list(self.chunks)} of {self.dtype.name} holds {expected}"
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
                f"{list(self.chunks)} of {self.dtype.name} holds {expected}"
            )


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

    Raises
    ------
    DamagedStoreError
        Not JSON, not an object, or any field outside what traj writes.
    """
    label = f"{where}: '{name}'"
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedStoreError(f"{label}: zarr.json is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise DamagedStoreError(f"{label}: zarr.json holds a JSON {json_kind(meta)}, not an object")
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
    codec = _parse_codecs(meta.get("codecs"), label)
    spec = ArraySpec(name, tuple(shape), tuple(chunks), np.dtype(dtype_name), codec)
    limit = MAX_CHUNK_BYTES if rank > 1 else MAX_SERIES_CHUNK_BYTES
    if spec.chunk_nbytes > limit:
        raise DamagedStoreError(
            f"{label}: chunks of {list(spec.chunks)} {dtype_name} ({spec.chunk_nbytes} bytes) exceed the "
            f"{limit >> 20} MiB traj reads"
        )
    return spec


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

    # ------------------------------------------------------------------ reading
    def read_file(self, key: str, limit: int) -> bytes | None:
        """The bytes of ``key`` (None when absent), from a regular file inside the store of at most ``limit`` bytes."""
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
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DamagedStoreError(f"{where}: not a regular file")
            parts = []
            left = limit + 1  # one byte more than allowed tells a file that grew
            while left > 0:
                part = os.read(fd, min(left, 1 << 24))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
        except OSError as exc:
            raise DamagedStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from None
        finally:
            os.close(fd)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
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
            spec = self._specs.get(name) if sep else None
            if spec is None:
                raise DamagedStoreError(f"{self._label}: traj does not read {key!r} (not a chunk of a checked array)")
            data = self.read_file(key, spec.max_stored_bytes)
            if data is None:
                rows = self._committed.get(name)
                first_row = _first_row(coords, spec)
                if rows is not None and first_row is not None and first_row < rows:
                    raise DamagedStoreError(
                        f"{self._label}: chunk {key} of committed snapshots is missing (the store is damaged)"
                    )
                return None
            spec.check_chunk(data, f"{self._label}: {key}")
        if data is None or byte_range is None:
            return data
        return _slice(data, byte_range)

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
