"""The fitted CMD model (:class:`CMDModel`) and ``cmd.zarr``, where a fit writes it and :func:`load` reads it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import (
    NotApplicableError,
)
from ...store import RunStore
from ...store.derived import CMD, read_cmd_model, write_attrs
from .params import RECONSTRUCT_COLUMNS, CMDParams


@dataclass(frozen=True)
class CMDModel:
    """A fitted CMD model: reconstructs θ̂_k = a ⊙ w_{r,label}(k) + b for any snapshot or block.

    The per-weight arrays are numpy arrays (a fit without ``out``), the arrays of the ``cmd.zarr``
    the fit wrote them to block by block (read a block at a time: nothing of size N in memory), or
    None where a fit kept only its totals (the sweeps without a recipe, the report after scoring).

    Attributes
    ----------
    labels : ndarray (or zarr array) of int32, shape (N,), or None
    a, b : ndarray (or zarr array) of float64, shape (N,), or None
    references : ndarray of shape (M, T')
    steps : ndarray of shape (T',)
    """

    labels: Any
    a: Any
    b: Any
    references: np.ndarray
    steps: np.ndarray

    @property
    def kept(self) -> bool:
        """Whether the per-weight arrays are at hand (in memory or on disk) to reconstruct from."""
        return self.labels is not None

    @property
    def n_params(self) -> int:
        return int(self._arrays()[0].shape[0])

    def _arrays(self) -> tuple[Any, Any, Any]:
        if self.labels is None:
            raise NotApplicableError("this CMD result kept no per-weight model (labels, a, b) to reconstruct from")
        return self.labels, self.a, self.b

    def reconstruct_block(self, columns: slice, snapshots: slice | None = None) -> np.ndarray:
        """θ̂ of coordinates ``columns`` at model snapshots ``snapshots`` (default all): (T', width)."""
        labels, a, b = (_read(v, columns) for v in self._arrays())
        refs = self.references[:, snapshots or slice(None)]  # (M, T')
        return (refs[labels] * a[:, None] + b[:, None]).T

    def reconstruct_snapshot(self, k: int) -> np.ndarray:
        """θ̂ at model snapshot k (an index into ``steps``), shape (N,), built a block of columns at a time."""
        n = self.n_params
        out = np.empty(n)
        for lo in range(0, n, RECONSTRUCT_COLUMNS):
            cols = slice(lo, min(n, lo + RECONSTRUCT_COLUMNS))
            out[cols] = self.reconstruct_block(cols, slice(k, k + 1))[0]
        return out

    def reconstruct(self, indices: np.ndarray) -> np.ndarray:
        """θ̂ of the coordinates ``indices`` at every model snapshot: (T', len(indices))."""
        labels, a, b = (_read(v, np.asarray(indices, dtype=np.int64)) for v in self._arrays())
        return (self.references[labels] * a[:, None] + b[:, None]).T


def _read(values: Any, index: slice | np.ndarray) -> np.ndarray:
    """``values[index]`` of a numpy or a zarr array (integer indices read through zarr's orthogonal selection)."""
    if isinstance(values, np.ndarray) or isinstance(index, slice):
        return np.asarray(values[index])
    return np.asarray(values.get_orthogonal_selection(index)) if index.size else np.asarray(values[0:0])


#: cmd.zarr's per-weight arrays and their dtypes, written chunk by chunk (:class:`~traj.analysis.vectors.ChunkedVectors`).
PER_WEIGHT = {"labels": "int32", "a": "float64", "b": "float64"}


def _model_chunk(store: RunStore) -> int:
    return min(store.n_params, max(4096, store.chunks[1]))


def _open_model(out: str | os.PathLike[str], store: RunStore) -> Any:
    """A new Zarr group (``cmd.zarr``), for the pass to fill with the per-weight arrays
    (:class:`~traj.analysis.vectors.ChunkedVectors`)."""
    import zarr

    return zarr.open_group(str(out), mode="w", zarr_format=3)


def _ema_array(path: str | os.PathLike[str], shape: tuple[int, int, int], store: RunStore) -> Any:
    """A scratch Zarr array for the weight EMAs (n_β, n_picks, N), float32, one chunk per β and snapshot."""
    import zarr

    return zarr.create_array(str(path), shape=shape, chunks=(1, 1, _model_chunk(store)), dtype="float32",
                             zarr_format=3)


def _finish_model(group: Any, out: str | os.PathLike[str], model: CMDModel, sample: np.ndarray,
                  ref_cols: np.ndarray, params: CMDParams, store: RunStore, window: tuple[int, int],
                  used: np.ndarray, ema: tuple[float, ...] = ()) -> str:
    """The model's small arrays and attributes, after the pass wrote its per-weight arrays."""
    options = {**params.options(ema), "window": list(window), "store": str(store.path), "snapshots": [int(i) for i in used]}
    write_small_arrays(group, model.references, model.steps, sample, ref_cols, options)
    return str(out)


def write_small_arrays(group: Any, references: np.ndarray, steps: np.ndarray, sample: np.ndarray,
                       reference_columns: np.ndarray, options: dict[str, Any]) -> None:
    """What ``cmd.zarr`` holds besides its per-weight arrays (labels, a, b): the references, their steps, the
    sampled weights, and the attributes (:data:`traj.store.derived.CMD`), ``options`` among them."""
    group.create_array("references", data=np.asarray(references, dtype=np.float64),
                       dimension_names=("mode", "snapshot"))
    group.create_array("steps", data=np.asarray(steps, dtype=np.int64), dimension_names=("snapshot",))
    group.create_array("sample_indices", data=np.asarray(sample, dtype=np.int64), dimension_names=("sample",))
    write_attrs(group, CMD, {"options": options, "reference_samples": [int(i) for i in reference_columns]})


def load(path: str | os.PathLike[str]) -> CMDModel:
    """Open a model written by :func:`cmd` (``DIR/cmd.zarr``) into memory; reconstructs without the store.

    Read through the store guard against :data:`traj.store.derived.CMD`: damage or another kind of file
    is one :class:`~traj.errors.DamagedStoreError` / :class:`~traj.errors.ModelFormatError` line."""
    return CMDModel(**read_cmd_model(path))
