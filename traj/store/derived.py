"""The files traj's analyses write beside a report — ``cmd.zarr``, ``masks.zarr``, ``modes.zarr`` —
declared once, written with their format marker, and read back only through the store guard.

Each file has a :class:`DerivedSchema`: its format marker (``attrs["traj"] = {"format": ..., "version": ...}``),
its arrays (name, dtype, dimensions named by what they count: ``N`` the run's coordinates, ``M`` CMD's
modes, ``T`` the model's snapshots, ``r`` DMD's rank) and its attributes (a type check each; a required
one must be there). The code that writes a file writes its marker and attributes through
:func:`write_attrs`, which checks them against the schema; every read goes through
:class:`DerivedFile`, which checks, before any chunk is decoded:

* the folder holds a Zarr v3 group (``modes.zarr``: an array) whose marker names this format and version;
* every attribute the schema declares has its type, and the required ones are there;
* an array's ``zarr.json`` passes :func:`~traj.store.guard.parse_array_metadata` (rank, dtype, codecs,
  chunk size) and its declared shape agrees with every other array and attribute sharing a dimension
  (a mask's N with the layout's, CMD's M and T with the references');
* an array larger than :data:`SMALL_ARRAY_BYTES` is backed by its chunk files: each chunk along its
  first axis exists on disk (in this array, or in another array of the file over the same N with the
  same chunks: older writers skipped chunks that held only the fill value), so a ``zarr.json`` edited to
  declare 10⁹ values allocates nothing;

and its chunks are read through :class:`~traj.store.guard.GuardedStore` (regular files inside the
folder only, sizes bounded by the codec, declared decoded sizes checked). Every refusal is one line:
:class:`~traj.errors.DamagedStoreError` for damage, the schema's error class for a file of another kind
(:class:`~traj.errors.ModelFormatError` for ``cmd.zarr``, :class:`~traj.errors.StoreFormatError` else).
Writers create every chunk, fill-valued ones included (:data:`EVERY_CHUNK`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ..errors import DamagedStoreError, ModelFormatError, StoreFormatError, TrajError
from .guard import (
    MAX_ARRAY_JSON_BYTES,
    MAX_CHUNK_BYTES,
    MAX_GROUP_JSON_BYTES,
    ArraySpec,
    GuardedStore,
    _int,
    json_kind,
    json_object,
    parse_array_metadata,
)
from .schema import Layout

__all__ = ["CMD", "EVERY_CHUNK", "MASKS", "MODES", "SMALL_ARRAY_BYTES", "ArraySchema", "AttrSchema", "DerivedFile",
           "DerivedSchema", "SavedModes", "create_modes", "read_cmd_model", "read_modes", "write_attrs"]

#: zarr's array configuration for every array of a derived file: chunks holding only the fill value are
#: written too, so the chunk files back the declared shape.
EVERY_CHUNK = MappingProxyType({"write_empty_chunks": True})
#: Arrays whose declared decoded size is at most this need no chunk files behind them (a missing chunk is the
#: fill value); larger ones must be backed by their chunk files.
SMALL_ARRAY_BYTES = 64 << 20
#: Most entries :meth:`DerivedFile.names` lists (a masks.zarr of 6 methods at 8 compressions holds ~60).
MAX_ENTRIES = 10_000


# ---------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class ArraySchema:
    """One array (or, with ``pattern``, a family of arrays) of a derived file.

    ``dims`` names each axis by what it counts; axes sharing a name must agree in size across the file.
    ``name`` is the path inside the file ("" for a file that is itself an array).
    """

    name: str
    dtype: str
    dims: tuple[str, ...]
    required: bool = True
    pattern: str | None = None

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None if self.pattern else name == self.name


@dataclass(frozen=True)
class AttrSchema:
    """One attribute: ``check(value)`` says whether it has the declared type (``kind`` names it in messages);
    ``length_of`` names a dimension its length gives (the eigenvalues of ``modes.zarr``: r)."""

    name: str
    kind: str
    check: Callable[[Any], bool]
    required: bool = False
    length_of: str | None = None


@dataclass(frozen=True)
class DerivedSchema:
    """A derived file's format: marker, node kind, arrays, attributes, and the error class that says "not one"."""

    format: str
    version: int
    what: str
    node: Literal["group", "array"]
    arrays: tuple[ArraySchema, ...]
    attrs: tuple[AttrSchema, ...]
    error: type[StoreFormatError] = StoreFormatError
    #: Sizes of dimensions given by the attributes beyond their lengths: ``{dim: (size, how messages say it)}``.
    sizes: Callable[[Mapping[str, Any]], dict[str, tuple[int, str]]] | None = None

    @property
    def marker(self) -> dict[str, Any]:
        return {"format": self.format, "version": self.version}

    def array(self, name: str) -> ArraySchema:
        for a in self.arrays:
            if a.matches(name):
                return a
        raise self.error(f"{self.what} holds no array {name!r}"[:300])

    def check_attrs(self, attrs: Mapping[str, Any], where: str) -> dict[str, tuple[int, str]]:
        """Refuse attributes of the wrong type or missing; the sizes of the dimensions they give."""
        sizes: dict[str, tuple[int, str]] = {}
        for a in self.attrs:
            if a.name not in attrs:
                if a.required:
                    raise self.error(f"{where}: {self.what} has no '{a.name}' attribute")
                continue
            value = attrs[a.name]
            if not a.check(value):
                raise DamagedStoreError(f"{where}: the '{a.name}' attribute holds a JSON {json_kind(value)}, "
                                        f"not {a.kind}")
            if a.length_of is not None:
                sizes[a.length_of] = (len(value), f"its '{a.name}' attribute has {len(value)}")
        if self.sizes is not None:
            try:
                sizes.update(self.sizes(attrs))
            except StoreFormatError as exc:
                raise type(exc)(f"{where}: {exc}") from None
        return sizes


def _number(v: Any) -> bool:
    return _int(v) or isinstance(v, float)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_int(x) for x in v)


def _pair(v: Any) -> bool:
    return _int_list(v) and len(v) == 2


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


def _complex_pairs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, list) and len(x) == 2 and all(_number(y) for y in x) for x in v)


def _names_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def _int_or_none(v: Any) -> bool:
    return v is None or _int(v)


def _object(v: Any) -> bool:
    return isinstance(v, dict)


def _layout_sizes(attrs: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    n = Layout.from_attrs(attrs.get("layout")).n_params
    return {"N": (n, f"its layout has {n} parameters")}


#: ``masks.zarr`` (``traj prune``; :mod:`traj.analysis.masks`).
MASKS = DerivedSchema(
    format="traj-masks", version=1, what="a masks.zarr written by traj prune", node="group",
    arrays=(
        ArraySchema("prunable", "bool", ("N",), required=False),
        ArraySchema("scores/<method>", "float64", ("N",), pattern=r"scores/[^/]+"),
        ArraySchema("<method>/c<c>", "bool", ("N",), pattern=r"(?!scores/)[^/]+/c[^/]+"),
    ),
    attrs=(
        AttrSchema("layout", "a list of tensors", lambda v: isinstance(v, list), required=True),
        AttrSchema("store", "a string", _str),
        AttrSchema("epoch", "an integer or null", _int_or_none),
        AttrSchema("window", "two integers", _pair),
        AttrSchema("steps", "two integers", _pair),
        AttrSchema("scope", "a string", _str),
        AttrSchema("compressions", "a list of numbers", _numbers),
    ),
    sizes=_layout_sizes,
)

#: ``cmd.zarr`` (``traj cmd``; :func:`traj.analysis.cmd.load`).
CMD = DerivedSchema(
    format="traj-cmd", version=1, what="a CMD model written by traj cmd", node="group", error=ModelFormatError,
    arrays=(
        ArraySchema("labels", "int32", ("N",)),
        ArraySchema("a", "float64", ("N",)),
        ArraySchema("b", "float64", ("N",)),
        ArraySchema("references", "float64", ("M", "T")),
        ArraySchema("steps", "int64", ("T",)),
        ArraySchema("sample_indices", "int64", ("K",), required=False),
    ),
    attrs=(
        AttrSchema("options", "an object", _object),
        AttrSchema("reference_samples", "a list of integers", _int_list, length_of="M"),
    ),
)

#: ``modes.zarr`` (``traj dmd --save-modes``): one (N, r) complex128 array, the exact DMD modes Φ = D·C.
MODES = DerivedSchema(
    format="traj-modes", version=1, what="a modes.zarr written by traj dmd --save-modes", node="array",
    arrays=(ArraySchema("", "complex128", ("N", "r")),),
    attrs=(
        AttrSchema("eigenvalues", "a list of [re, im] pairs", _complex_pairs, required=True, length_of="r"),
        AttrSchema("window", "two integers", _pair, required=True),
        AttrSchema("layers", "a list of names or null", _names_or_none),
        AttrSchema("store", "a string", _str),
    ),
)


# ---------------------------------------------------------------------- writing
def write_attrs(node: Any, schema: DerivedSchema, attrs: Mapping[str, Any]) -> None:
    """Write the format marker and ``attrs`` on a zarr group or array, checked against ``schema`` first."""
    schema.check_attrs(attrs, schema.what)
    node.attrs.update({"traj": schema.marker, **attrs})


def create_modes(path: str | os.PathLike[str], shape: tuple[int, int], chunks: tuple[int, int],
                 attrs: Mapping[str, Any]) -> Any:
    """A new ``modes.zarr`` array of ``shape`` (N, r), complex128, its marker and ``attrs`` written."""
    import zarr

    modes = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="complex128",
                              dimension_names=("param", "mode"), overwrite=True, config=dict(EVERY_CHUNK))
    write_attrs(modes, MODES, attrs)
    return modes


# ---------------------------------------------------------------------- reading
class DerivedFile:
    """An open derived file: its checked attributes, and its arrays read through the store guard.

    Parameters
    ----------
    path : path
        The folder (``OUT/cmd.zarr``, ``OUT/masks.zarr``, ``OUT/modes.zarr``).
    schema : DerivedSchema
        What it must be (:data:`CMD`, :data:`MASKS`, :data:`MODES`).
    """

    def __init__(self, path: str | os.PathLike[str], schema: DerivedSchema) -> None:
        self.path = str(path)
        self.schema = schema
        error, what = schema.error, schema.what
        root = Path(path)
        if not root.exists():
            raise error(f"{path}: no such {what.split(' written')[0].removeprefix('a ')}")
        if not root.is_dir():
            raise error(f"{path}: not {what} (not a folder)")
        self.root = root
        self.store = GuardedStore(root, label=self.path)
        raw = self.store.read_file("zarr.json", MAX_GROUP_JSON_BYTES)
        if raw is None:
            raise error(f"{path}: not {what} (no zarr.json)")
        meta = json_object(raw, f"{path}: zarr.json")
        if meta.get("zarr_format") != 3 or meta.get("node_type") != schema.node:
            raise error(f"{path}: not {what} (zarr.json describes no Zarr v3 {schema.node})")
        attrs = meta.get("attributes", {})
        if not isinstance(attrs, dict):
            raise DamagedStoreError(f"{path}: the attributes are a JSON {json_kind(attrs)}, not an object")
        marker = attrs.get("traj")
        if not isinstance(marker, dict) or marker.get("format") != schema.format:
            raise error(f"{path}: not {what}")
        if marker.get("version") != schema.version:
            version = marker.get("version")
            raise error(f"{path}: {schema.format} format version {version!r}; this traj reads version "
                        f"{schema.version}"[:300])
        self.attrs: dict[str, Any] = attrs
        self._root_meta = raw if schema.node == "array" else None
        self.sizes: dict[str, tuple[int, str]] = schema.check_attrs(attrs, self.path)
        self._specs: dict[str, ArraySpec] = {}

    # ------------------------------------------------------------------ what the file holds
    def has(self, name: str) -> bool:
        """Whether array ``name`` is there (its ``zarr.json`` exists; a link where it belongs is damage)."""
        return self.store.is_regular_file(f"{name}/zarr.json" if name else "zarr.json")

    def names(self) -> list[str]:
        """The arrays of a group, at most two levels deep (``labels``, ``kmp/c8``), sorted; links are skipped.
        Only the group's own ``zarr.json`` documents are read (bounded), no array's."""
        found: list[str] = []
        seen = 0

        def listing(folder: Path) -> list[os.DirEntry[str]]:
            nonlocal seen
            try:
                with os.scandir(folder) as it:
                    entries = []
                    for entry in it:
                        seen += 1
                        if seen > MAX_ENTRIES:
                            raise DamagedStoreError(f"{self.path}: more than {MAX_ENTRIES} entries; not a file traj wrote")
                        if entry.is_dir(follow_symlinks=False):
                            entries.append(entry)
                    return sorted(entries, key=lambda e: e.name)
            except OSError:
                return []

        for top in listing(self.root):
            if not self.has(top.name):
                continue
            raw = self.store.read_file(f"{top.name}/zarr.json", MAX_ARRAY_JSON_BYTES)
            if json_object(raw or b"{}", f"{self.path}: {top.name}/zarr.json").get("node_type") != "group":
                found.append(top.name)
                continue
            for sub in listing(Path(top.path)):
                name = f"{top.name}/{sub.name}"
                if os.path.lexists(os.path.join(sub.path, "zarr.json")) and self.has(name):
                    found.append(name)
        return found

    # ------------------------------------------------------------------ one array
    def spec(self, name: str) -> ArraySpec:
        """Array ``name``'s checked metadata: rank, dtype, codecs and chunk size (the guard's rules), its shape
        against the other arrays and attributes, and its chunk files behind a large declared shape."""
        if name in self._specs:
            return self._specs[name]
        declared = self.schema.array(name)
        if name:
            raw = self.store.read_file(f"{name}/zarr.json", MAX_ARRAY_JSON_BYTES)
        else:
            raw = self._root_meta
        if raw is None:
            raise self.schema.error(f"{self.path}: has no array '{name}'")
        spec = parse_array_metadata(raw, name or "modes", rank=len(declared.dims), dtypes=(declared.dtype,),
                                    where=self.path, max_chunk_bytes=MAX_CHUNK_BYTES)
        spec = replace(spec, name=name)
        for dim, size in zip(declared.dims, spec.shape, strict=True):
            known = self.sizes.get(dim)
            if known is None:
                self.sizes[dim] = (size, f"'{name}' has {size}")
            elif known[0] != size:
                raise self.schema.error(f"{self.path}: '{name or 'modes'}' declares shape {list(spec.shape)}, "
                                        f"{known[1]}")
        if math.prod(spec.shape) * spec.dtype.itemsize > SMALL_ARRAY_BYTES:
            self._check_backed(name, spec)
        self.store.register(spec)
        self._specs[name] = spec
        return spec

    def _chunk_rows(self, name: str, spec: ArraySpec, needed: int) -> set[int]:
        """The chunk indices along the first axis that have chunk files (or folders of them)."""
        folder = self.root / name / "c" if name else self.root / "c"
        rows: set[int] = set()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.isdigit() and int(entry.name) < needed:
                        rows.add(int(entry.name))
        except OSError:
            pass
        return rows

    def _check_backed(self, name: str, spec: ArraySpec) -> None:
        needed = -(-spec.shape[0] // spec.chunks[0])
        rows = self._chunk_rows(name, spec, needed)
        if len(rows) < needed:  # older writers skipped fill-valued chunks: another array over the same N may hold it
            first = self.schema.array(name).dims[0]
            for other in self.names():
                if other == name or len(rows) >= needed:
                    continue
                try:
                    if self.schema.array(other).dims[0] != first:
                        continue
                    raw = self.store.read_file(f"{other}/zarr.json", MAX_ARRAY_JSON_BYTES)
                    theirs = parse_array_metadata(raw or b"", other, rank=len(self.schema.array(other).dims),
                                                  dtypes=(self.schema.array(other).dtype,), where=self.path,
                                                  max_chunk_bytes=MAX_CHUNK_BYTES)
                except TrajError:
                    continue
                if theirs.shape[0] == spec.shape[0] and theirs.chunks[0] == spec.chunks[0]:
                    rows |= self._chunk_rows(other, theirs, needed)
        if len(rows) < needed:
            missing = next(k for k in range(needed) if k not in rows)
            raise DamagedStoreError(
                f"{self.path}: '{name or 'modes'}' declares {spec.shape[0]} rows in {needed} chunk(s), but chunk "
                f"{missing} has no file (the file is damaged, or its shape was edited)")

    def array(self, name: str) -> Any:
        """Array ``name`` opened with zarr over the guarded store (read it in blocks through :meth:`read`)."""
        import zarr

        spec = self.spec(name)
        try:
            array = zarr.open_array(store=self.store, path=name, mode="r", zarr_format=3)
        except TrajError:
            raise
        except Exception as exc:  # zarr's own checks (fill value, codec configuration)
            raise DamagedStoreError(f"{self.path}: '{name or 'modes'}' has invalid metadata "
                                    f"({type(exc).__name__})") from None
        if tuple(array.shape) != spec.shape or np.dtype(array.dtype) != spec.dtype:
            raise DamagedStoreError(f"{self.path}: '{name or 'modes'}' changed while it was opened")
        return array

    def read(self, name: str, rows: slice = slice(None)) -> np.ndarray:
        """``name[rows]`` as a numpy array; a damaged chunk is one :class:`DamagedStoreError` line."""
        array = self.array(name)
        try:
            values = np.asarray(array[rows])
        except TrajError:
            self.store.settle()
            raise
        except Exception as exc:  # codecs raise many types for damaged bytes
            self.store.settle()
            raise DamagedStoreError(f"{self.path}: '{name or 'modes'}' cannot be read: a chunk is damaged "
                                    f"({type(exc).__name__})") from None
        return values


# ---------------------------------------------------------------------- cmd.zarr
def read_cmd_model(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a ``cmd.zarr`` in memory (``labels``, ``a``, ``b``, ``references``, ``steps``), checked:
    shapes agree, every label names one of the M references."""
    opened = DerivedFile(path, CMD)
    arrays = {name: opened.read(name) for name in ("labels", "a", "b", "references", "steps")}
    labels, modes = arrays["labels"], arrays["references"].shape[0]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= modes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DamagedStoreError(f"{path}: 'labels' holds mode {bad}, the model has {modes} references (0 to "
                                f"{modes - 1})")
    return arrays


# ---------------------------------------------------------------------- modes.zarr
@dataclass(frozen=True)
class SavedModes:
    """What a ``modes.zarr`` holds: Φ (N, r) complex128 on disk, read in rows by :meth:`read`.

    Attributes
    ----------
    path : str
    shape : (N, r)
    eigenvalues : ndarray of complex128, shape (r,)
    window : (a, b), the snapshots the modes were fitted on
    layers : tuple of str, or None (every layer)
    store : str, the run store they came from
    """

    path: str
    shape: tuple[int, int]
    eigenvalues: np.ndarray
    window: tuple[int, int]
    layers: tuple[str, ...] | None
    store: str

    def read(self, rows: slice = slice(None)) -> np.ndarray:
        """Φ[rows] (all N rows by default: 16·N·r bytes), read through the store guard."""
        return DerivedFile(self.path, MODES).read("", rows)


def read_modes(path: str | os.PathLike[str]) -> SavedModes:
    """Open a ``modes.zarr`` written by ``traj dmd --save-modes``: its checked attributes and shape (Φ is read
    on request, :meth:`SavedModes.read`)."""
    opened = DerivedFile(path, MODES)
    spec = opened.spec("")
    pairs = np.asarray(opened.attrs["eigenvalues"], dtype=np.float64).reshape(-1, 2)
    layers = opened.attrs.get("layers")
    return SavedModes(str(path), (int(spec.shape[0]), int(spec.shape[1])), pairs[:, 0] + 1j * pairs[:, 1],
                      tuple(int(w) for w in opened.attrs["window"]), tuple(layers) if layers else None,
                      str(opened.attrs.get("store", "")))
