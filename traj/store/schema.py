"""The run-store format, version 2 (version 1 still read and appended to): what is written where.

A run store is a Zarr v3 group. Its arrays (all time-major, row k = snapshot k):

``params``  (T, N) float32, float64,   the flattened parameter vector θ of every snapshot, in
            float16 or bfloat16        the model's own precision (bfloat16 as uint16 bit
                                        patterns: :mod:`traj.store.dtypes`)
``grads``   (T, N) same dtype          optional; the gradient of the step that produced row k
``step``    (T,) int64                 global optimizer step; -1 (the fill value) marks a row
                                        that was never committed (version 1 preallocates rows)
``epoch``   (T,) int64                 epoch the snapshot was taken in
``time``    (T,) float64               wall-clock time, Unix seconds
``loss``    (T,) float64               optional
``metrics/<name>`` (T,) float64        optional, any scalar the training loop reports

The group's attributes hold the format marker, the parameter layout, the snapshot spacing,
versions, the creation time, the recipe (when recorded by one) and the committed count.

**Version 2** stores ``params`` and ``grads`` as Zarr v3 sharded arrays (:func:`choose_shards`):
a shard file holds one snapshot (a few stacked snapshots for rows under 1 MiB) and up to 256
inner chunks of about 16 KiB, each compressed on its own, with the shard index at the end. A
column band reads one contiguous byte range per shard and decodes each inner chunk once, for
any T and N. Every array's shape is the committed count: each group commit writes the data
first, then replaces the arrays' ``zarr.json`` (``step`` last), so a plain Zarr reader sees
only committed snapshots at every moment. Committed rows are the leading rows of ``step``
within the shapes of ``step`` and ``params`` whose step is not -1.

**Version 1** chunks ``params`` (1, N/k) or (t, N) without sharding (:func:`choose_chunks`)
and preallocated rows; :class:`~traj.store.RunStore` reads it as before and ``traj convert``
rewrites it as version 2.

A reader accepts nothing else (``guard.parse_array_metadata``): those dtypes, a regular chunk
grid with ``/``-separated keys, codecs ``bytes`` then optionally one ``blosc`` or ``zstd``, or
(``params``/``grads``) one ``sharding_indexed`` codec holding such codecs and a crc32c index.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LayoutMismatchError, StoreFormatError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "UNCOMMITTED_STEP",
    "STORE_MEMBERS",
    "ParamEntry",
    "Layout",
    "ShardLayout",
    "choose_chunks",
    "choose_shards",
]

FORMAT_NAME = "traj-run"
#: The version new stores are written in.
FORMAT_VERSION = 2
#: The versions this traj reads (and appends to, in their own layout).
READABLE_VERSIONS = (1, 2)
#: Fill value of ``step``: a row whose step is this was allocated but never committed.
UNCOMMITTED_STEP = -1

#: The entries of a store's directory that traj writes; anything else there (a README, a user's own
#: array) is the user's, carried over when traj rewrites the store (convert, overwrite).
STORE_MEMBERS = ("zarr.json", "params", "grads", "step", "epoch", "time", "loss", "metrics", ".traj-writer.lock")

_SUPPORTED_DTYPES = ("float32", "float64", "bfloat16", "float16")  # traj.store.dtypes: how each is stored


@dataclass(frozen=True)
class ParamEntry:
    """One named parameter tensor and where it lives inside θ."""

    name: str
    shape: tuple[int, ...]
    offset: int
    prunable: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.size

    @property
    def columns(self) -> slice:
        """The columns of ``params`` that hold this tensor."""
        return slice(self.offset, self.stop)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "offset": self.offset,
            "size": self.size,
            "prunable": self.prunable,
        }


@dataclass(frozen=True)
class Layout:
    """The ordered parameter tensors that make up θ ∈ R^N.

    Keys are parameter names as in ``model.state_dict()``; offsets are contiguous and in
    order, so ``theta[entry.columns].reshape(entry.shape)`` is the tensor.
    """

    entries: tuple[ParamEntry, ...]

    @classmethod
    def from_shapes(
        cls,
        shapes: Iterable[tuple[str, Sequence[int]]],
        *,
        prunable: Iterable[str] = (),
    ) -> Layout:
        """Build a layout from ``(name, shape)`` pairs in θ order."""
        prunable = set(prunable)
        entries = []
        offset = 0
        seen = set()
        for name, shape in shapes:
            if name in seen:
                raise StoreFormatError(f"parameter name {name!r} appears twice in the layout")
            seen.add(name)
            entry = ParamEntry(str(name), tuple(int(s) for s in shape), offset, name in prunable)
            entries.append(entry)
            offset += entry.size
        if not entries:
            raise StoreFormatError("a layout needs at least one parameter tensor")
        return cls(tuple(entries))

    @property
    def n_params(self) -> int:
        return self.entries[-1].stop

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __getitem__(self, name: str) -> ParamEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def select(self, names: Iterable[str]) -> list[ParamEntry]:
        """The entries named, in θ order; an unknown name raises :class:`StoreFormatError`."""
        wanted = list(names)
        missing = [n for n in wanted if n not in self]
        if missing:
            known = ", ".join(self.names[:8]) + (" ..." if len(self) > 8 else "")
            raise StoreFormatError(f"no parameter named {missing[0]!r} in this store (it has: {known})")
        return [e for e in self.entries if e.name in set(wanted)]

    @property
    def prunable_entries(self) -> list[ParamEntry]:
        return [e for e in self.entries if e.prunable]

    def to_attrs(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    @classmethod
    def from_attrs(cls, raw: Any) -> Layout:
        """Parse and check the ``layout`` attribute of a store."""
        if not isinstance(raw, list) or not raw:
            raise StoreFormatError("the store's 'layout' attribute is missing or not a non-empty list")
        entries = []
        offset = 0
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping):
                raise StoreFormatError(f"layout entry {i} is not a mapping")
            try:
                name = item["name"]
                shape = tuple(item["shape"])
                given_offset = item["offset"]
                prunable = item.get("prunable", False)
            except (KeyError, TypeError) as exc:
                raise StoreFormatError(f"layout entry {i} lacks the field {exc}") from None
            if not isinstance(name, str) or not name:
                raise StoreFormatError(f"layout entry {i} has no valid name")
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
                raise StoreFormatError(f"layout entry {name!r} has an invalid shape {list(shape)}")
            if given_offset != offset:
                raise StoreFormatError(
                    f"layout entry {name!r} has offset {given_offset!r}, expected {offset} "
                    "(entries must be contiguous and in order)"
                )
            entry = ParamEntry(name, shape, offset, bool(prunable))
            if "size" in item and item["size"] != entry.size:
                raise StoreFormatError(f"layout entry {name!r} has size {item['size']!r}, its shape gives {entry.size}")
            entries.append(entry)
            offset += entry.size
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise StoreFormatError("the store's layout names a parameter twice")
        return cls(tuple(entries))

    def check_same(self, other: Layout) -> None:
        """Raise :class:`LayoutMismatchError` naming the first difference from ``other``."""
        if self == other:
            return
        for mine, theirs in zip(self.entries, other.entries, strict=False):
            if mine.name != theirs.name:
                raise LayoutMismatchError(
                    f"layout differs from the store: parameter {mine.name!r} where the store has {theirs.name!r}"
                )
            if mine.shape != theirs.shape:
                raise LayoutMismatchError(
                    f"layout differs from the store: {mine.name!r} has shape {list(mine.shape)}, "
                    f"the store has {list(theirs.shape)}"
                )
        if len(self) != len(other):
            raise LayoutMismatchError(
                f"layout differs from the store: {len(self)} parameter tensors, the store has {len(other)}"
            )
        # Same names and shapes: only the prunable flags differ, which is not a layout change.


def check_dtype(dtype: object) -> str:
    """The snapshot dtype's name (``float32``, ``float64``, ``bfloat16``, ``float16``), or StoreFormatError."""
    name = str(dtype).removeprefix("torch.")
    if name not in _SUPPORTED_DTYPES:
        raise StoreFormatError(f"unsupported snapshot dtype {name!r}; use one of {', '.join(_SUPPORTED_DTYPES)}")
    return name


def choose_chunks(n_params: int, itemsize: int, *, target_bytes: int = 1 << 20, max_rows: int = 256) -> tuple[int, int]:
    """Chunk shape ``(t_chunk, n_chunk)`` for a (T, N) snapshot array.

    A row larger than ``target_bytes`` is split into ``ceil(row / target)`` chunks of equal
    width (so the edge chunk is not mostly padding) and one row per chunk, which lets every
    snapshot be written without reading anything back. Smaller rows are stacked ``t_chunk``
    high so a chunk stays near ``target_bytes``. 1 MiB keeps a
    whole chunk column of a few hundred snapshots small enough to read at once, so analyses
    decompress every chunk exactly once.
    """
    row_bytes = max(1, n_params * itemsize)
    if row_bytes >= target_bytes:
        pieces = math.ceil(row_bytes / target_bytes)
        return 1, math.ceil(n_params / pieces)
    return max(1, min(max_rows, target_bytes // row_bytes)), max(1, n_params)


#: Inner chunk of a version-2 shard, decoded bytes: a column band of T snapshots is read and
#: decoded in units of T x 16 KiB (blosc lz4 decodes 16 KiB chunks at ~3 GB/s here and keeps
#: ~4.6 % compression on trained float32 weights, against 8.4 % for 1 MiB chunks).
INNER_CHUNK_BYTES = 16 << 10
#: Most inner chunks per shard: a 4 KiB index and a shard of about 4 MiB decoded.
SHARD_CHUNKS = 256
#: Rows smaller than this are stacked into taller shards (up to 256 rows), as version 1 did.
STACK_BYTES = 1 << 20


@dataclass(frozen=True)
class ShardLayout:
    """How a version-2 (T, N) array is cut: shards ``(rows, width)`` of inner chunks ``(rows, chunk_width)``."""

    rows: int
    width: int
    chunk_width: int

    @property
    def shard_shape(self) -> tuple[int, int]:
        return self.rows, self.width

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return self.rows, self.chunk_width

    def shards_per_row(self, n_params: int) -> int:
        """Shard files that hold one snapshot's columns (a snapshot of ``rows`` > 1 shares them)."""
        return -(-n_params // self.width)


def choose_shards(
    n_params: int,
    itemsize: int,
    *,
    chunk_bytes: int = INNER_CHUNK_BYTES,
    shard_chunks: int = SHARD_CHUNKS,
    stack_bytes: int = STACK_BYTES,
    max_rows: int = 256,
) -> ShardLayout:
    """The version-2 layout of a (T, N) snapshot array with ``itemsize``-byte values.

    A row of ``stack_bytes`` or more gets shards one row tall: each snapshot is written once,
    into files of its own, and the writer never holds more than one row. Smaller rows are
    stacked ``rows`` high (the last shard is rewritten whole at each commit, at most
    ``stack_bytes``). Inner chunks are ``rows`` high and about ``chunk_bytes`` large, of equal
    width (so the edge chunk is not mostly padding); a shard holds at most ``shard_chunks`` of
    them side by side, and the shards of a row have equal widths too.
    """
    n = max(1, int(n_params))
    row_bytes = n * itemsize
    rows = 1 if row_bytes >= stack_bytes else max(1, min(max_rows, stack_bytes // row_bytes))
    pieces = max(1, -(-(rows * row_bytes) // max(1, chunk_bytes)))
    chunk_width = -(-n // min(n, pieces))
    n_chunks = -(-n // chunk_width)
    n_shards = -(-n_chunks // max(1, shard_chunks))
    per_shard = -(-n_chunks // n_shards)
    return ShardLayout(rows, per_shard * chunk_width, chunk_width)
