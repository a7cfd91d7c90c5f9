"""The fit of ``traj cmd`` (docs/methods.md §2): :func:`fit_cmd` and its keyword form :func:`cmd`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...engine import Engine
from ...engine.backends import Kernel
from ...errors import (
    DataLimitError,
    NonFiniteDataError,
    NotApplicableError,
    WindowTooShortError,
)
from ...progress import Progress
from ...store import RunStore
from ..vectors import ChunkedVectors
from ..windows import Window, resolve_window
from .model import PER_WEIGHT, CMDModel, _ema_array, _finish_model, _open_model
from .params import BAND_MODES, FIT_SAMPLES, MAX_EMA_BYTES, CMDParams
from .result import CMDResult, ModeBands
from .sampling import _check_huge_values, abs_corr, assign_kernel, cluster_modes, references_of, sample_moving


# ---------------------------------------------------------------------- the analysis
def cmd(
    store: RunStore | str | os.PathLike[str],
    *,
    modes: int | None = 10,
    threshold: float | None = None,
    samples: int | None = None,
    window: Window = None,
    subsample: int = 1,
    seed: int = 0,
    drop_nonfinite: bool = False,
    distance: str = "rows",
    out: str | os.PathLike[str] | None = None,
    keep_model: bool = True,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> CMDResult:
    """Correlation Mode Decomposition of a store's trajectory (docs/methods.md §2): :class:`CMDParams` and
    :func:`fit_cmd`. To score it with a recipe, sweep it or compare it with DMD: :func:`run_cmd`.

    Parameters
    ----------
    store : RunStore or path
    modes : int, optional
        Number of modes M (ignored when ``threshold`` is given).
    threshold : float, optional
        Cut the dendrogram at t (0 < t <= 1) times the largest pairwise distance instead
        (with ``distance="corr"``: at 1 − |corr| = t).
    samples : int, optional
        K, weights sampled for the clustering (weights that move; docs/methods.md §2.1). Default: every
        weight of a model of at most ALL_SAMPLES (4096) weights, so the partition does not depend on
        the sampling seed, else 1000.
    window : "a:b", optional
        Snapshots used (both included).
    subsample : int
        Use every s-th snapshot of the window, counted back from its last (Turjeman et al. 2022, §8.1).
    drop_nonfinite : bool
        Leave snapshots holding NaN/Inf out of the time axis (one extra pass finds them).
    distance : {"rows", "corr"}
        Clustering distance: Euclidean between rows of |corr| (default) or 1 − |corr| (docs/methods.md §2.2).
    out : path, optional
        Write the model (labels, a, b, references) to ``out`` (a Zarr group, e.g. DIR/cmd.zarr) block
        by block; the result's model then reads its per-weight arrays from there, so nothing of size N
        is held. Without it they are held in memory (20 bytes per weight) unless ``keep_model`` is False.
    keep_model : bool
        Without ``out``, keep the per-weight model in memory (False: only the references, sizes and
        errors; nothing can be reconstructed, so nothing can be scored then).
    """
    params = CMDParams(modes=modes, threshold=threshold, samples=samples, window=window, subsample=subsample,
                       seed=seed, drop_nonfinite=drop_nonfinite, distance=distance)
    return fit_cmd(store, params, out=out, keep_model=keep_model, engine=engine, progress=progress)


def fit_cmd(store: RunStore | str | os.PathLike[str], params: CMDParams, *, out: str | os.PathLike[str] | None = None,
            keep_model: bool = True, engine: Engine | None = None, progress: Progress | None = None) -> CMDResult:
    """Fit checked :class:`CMDParams` to a store: the sample's clustering and one pass over every weight.

    ``keep_model=False`` without ``out`` keeps no per-weight model (see :func:`cmd`). ``progress`` counts the
    blocks of each pass.
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    return _fit(store, params, out, engine or Engine(), progress, keep_model=keep_model)[0]


def _fit(store: RunStore, params: CMDParams, out: str | os.PathLike[str] | None, engine: Engine,
         progress: Progress | None, *, ema: tuple[float, ...] = (), eval_points: int = 40, keep_model: bool = True,
         ema_out: str | os.PathLike[str] | None = None) -> tuple[CMDResult, Any]:
    """The clustering of the sample and the one pass over every weight; with ``ema`` (decays), the same
    pass also gives the weight EMAs at ``eval_points`` :func:`eval_picks` (n_β, n_picks, N),
    written to the Zarr array ``ema_out`` block by block when given, else held in memory.

    With ``out`` the model's per-weight arrays go to ``out`` block by block and the result's model
    reads them from there; without it they are held in memory when ``keep_model``, else not kept at all
    (the model then holds the references only: the totals, sizes and errors are all a sweep needs)."""
    t0 = time.perf_counter()
    lo, hi, rows, keep = _window_rows(store, params, engine)
    used = lo + keep
    picks = eval_picks(used.size, eval_points)
    if ema and (need := len(ema) * picks.size * store.n_params * 4) > MAX_EMA_BYTES:
        raise DataLimitError("ema", f"the EMAs at {picks.size} snapshots need {need / 2**30:.1f} GiB "
                                    f"(limit {MAX_EMA_BYTES / 2**30:.0f} GiB): fewer --eval-points or decays")
    drawn = sample_moving(store, params.samples, seeds=(params.seed,), rows=rows, keep=keep, engine=engine)[0]
    sample, trajectories = drawn.indices, drawn.trajectories
    corr_all, moving = abs_corr(trajectories)
    usable = np.flatnonzero(moving)
    _check_huge_values(trajectories, usable, sample, store)
    labels_s, order, ref_cols = _cluster_sample(corr_all, usable, params)
    references = trajectories[:, ref_cols].T  # (M, T')
    kernel = assign_kernel(references, keep, ema=ema, ema_picks=picks)
    n = store.n_params
    group = _open_model(out, store) if out else None
    if group is not None:
        vectors = ChunkedVectors(group, PER_WEIGHT, n)
        sink = _ModelSink(vectors["labels"], vectors["a"], vectors["b"], vectors=vectors)
    elif keep_model:
        sink = _ModelSink(np.empty(n, dtype=np.int32), np.empty(n), np.empty(n))
    else:
        sink = _ModelSink(None, None, None)
    if ema:
        sink.ema = _ema_array(ema_out, (len(ema), picks.size, n), store) if ema_out else \
            np.empty((len(ema), picks.size, n), dtype=np.float32)
    pass_ = _assign_all(store, engine, rows, kernel, references.shape[0], sink, sample, progress)
    if sink.vectors is not None:
        sink.vectors.close()
    model = CMDModel(sink.labels, sink.a, sink.b, references, store.steps[used])
    if out:
        _finish_model(group, out, model, sample, ref_cols, params, store, (lo, hi), used, ema)
    sample_labels = np.full(sample.size, -1, dtype=np.int64)
    sample_labels[usable] = labels_s
    # the sample's reconstruction from its labels, a and b as the pass gave them (= model.reconstruct(sample))
    sample_reconstruction = (references[pass_.sample_labels] * pass_.sample_a[:, None]
                             + pass_.sample_b[:, None]).T
    return CMDResult(
        store=str(store.path), window=(lo, hi), params=params, snapshots=used, steps=store.steps[used], n_params=n,
        model=model, sample_indices=sample, sample_labels=sample_labels, sample_order=usable[order],
        sample_corr=corr_all, sample_trajectories=trajectories, sample_reconstruction=sample_reconstruction,
        fit_samples=np.sort(np.random.default_rng(0).choice(sample.size, size=min(FIT_SAMPLES, sample.size),
                                                             replace=False)),
        bands=mode_bands(trajectories, sample, sample_labels, sample[ref_cols]),
        reference_indices=sample[ref_cols], mode_sizes=pass_.sizes,
        mode_mean_corr=np.where(pass_.sizes > 0, pass_.corr_sums / np.maximum(pass_.sizes, 1), 0.0),
        modes_per_layer=pass_.per_layer, mse=pass_.sse / (n * used.size),
        relative_error=float(np.sqrt(pass_.sse / pass_.total)) if pass_.total > 0 else 0.0,
        backend=engine.label, seconds=time.perf_counter() - t0,
        constant_samples=drawn.frozen + int(sample.size - usable.size),
    ), sink.ema


@contextlib.contextmanager
def _scratch(needed: bool, name: str = "cmd.zarr") -> Iterator[Path | None]:
    """A path in a temporary directory (removed afterwards) for what a fit writes out of memory, or None."""
    if not needed:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="traj-cmd-") as tmp:
        yield Path(tmp) / name


def eval_picks(n_used: int, max_points: int) -> np.ndarray:
    """Up to ``max_points`` of ``n_used`` snapshots spread over the window, the last always included."""
    return np.unique(np.linspace(n_used - 1, 0, min(max_points, n_used)).round().astype(int))


def _window_rows(store: RunStore, params: CMDParams, engine: Engine) -> tuple[int, int, slice, np.ndarray]:
    """The window (lo, hi), its row slice, and the rows of it used (relative to lo)."""
    lo, hi = resolve_window(store, params.window, method="CMD")
    rows = slice(lo, hi + 1)
    # every s-th snapshot counted back from the last, so the model always ends where the window does
    keep = np.arange((hi - lo) % params.subsample, hi - lo + 1, params.subsample)
    if params.drop_nonfinite:
        keep = keep[~np.isin(keep, engine.nonfinite_rows(store, rows=rows) - lo)]
    if keep.size < 3:
        raise WindowTooShortError(f"{keep.size} snapshot(s) left after subsampling by {params.subsample}; "
                                  "CMD needs at least 3")
    return lo, hi, rows, keep



def _cluster_sample(corr_all: np.ndarray, usable: np.ndarray, params: CMDParams
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and dendrogram order of the moving samples ``usable``, and the references' sample columns."""
    if usable.size < 2:
        raise NotApplicableError("fewer than 2 of the sampled weights move in this window: nothing to correlate")
    if params.modes is not None and params.modes > usable.size:
        raise DataLimitError("modes", f"{params.modes} is more than the {usable.size} moving sampled weights; "
                                      "sample more weights")
    corr = corr_all[np.ix_(usable, usable)]
    labels, order, _ = cluster_modes(corr, modes=params.modes, threshold=params.threshold, distance=params.distance)
    return labels, order, usable[references_of(corr, labels)]


@dataclass
class _ModelSink:
    """Where the pass puts each block's labels, a and b (numpy arrays of N, the ``cmd.zarr`` arrays
    through ``vectors``, or None: dropped) and the weight EMAs (n_β, n_picks, N)."""

    labels: Any
    a: Any
    b: Any
    ema: Any = None
    vectors: ChunkedVectors | None = None

    def write(self, cols: slice, part: dict[str, Any]) -> None:
        if self.vectors is not None:
            for name in ("labels", "a", "b"):
                self.vectors.write(name, cols.start, part[name])
        elif self.labels is not None:
            self.labels[cols], self.a[cols], self.b[cols] = part["labels"], part["a"], part["b"]
        if self.ema is not None:
            self.ema[:, :, cols] = part["ema"]


@dataclass
class _Pass:
    """What the pass over every weight accumulates (nothing of size N: that goes to the sink)."""

    sizes: np.ndarray
    corr_sums: np.ndarray
    per_layer: dict[str, np.ndarray]
    sample_labels: np.ndarray
    sample_a: np.ndarray
    sample_b: np.ndarray
    sse: float = 0.0
    total: float = 0.0


def _assign_all(store: RunStore, engine: Engine, rows: slice, kernel: Kernel, n_modes: int, sink: _ModelSink,
                sample: np.ndarray, progress: Progress | None) -> _Pass:
    """One pass: every weight's label, a and b into ``sink`` block by block, the per-mode and per-layer
    counts, the sampled weights' labels, a and b (sorted ``sample``), and the EMAs into ``sink.ema``."""
    acc = _Pass(np.zeros(n_modes, dtype=np.int64), np.zeros(n_modes),
                {e.name: np.zeros(n_modes, dtype=np.int64) for e in store.layout.entries},
                np.empty(sample.size, dtype=np.int64), np.empty(sample.size), np.empty(sample.size))
    starts = np.array([e.offset for e in store.layout.entries])
    for cols, part in engine.map_blocks(store, kernel, rows=rows, progress=progress):
        if not np.isfinite(part["total"]):
            raise NonFiniteDataError("the window holds NaN or Inf values")
        sink.write(cols, part)
        lo_s, hi_s = np.searchsorted(sample, [cols.start, cols.stop])
        inside = sample[lo_s:hi_s] - cols.start
        acc.sample_labels[lo_s:hi_s] = part["labels"][inside]
        acc.sample_a[lo_s:hi_s], acc.sample_b[lo_s:hi_s] = part["a"][inside], part["b"][inside]
        acc.sse += float(part["sse"].sum())
        acc.total += part["total"]
        acc.sizes += np.bincount(part["labels"], minlength=n_modes)
        acc.corr_sums += np.bincount(part["labels"], weights=part["abscorr"], minlength=n_modes)
        first = int(np.searchsorted(starts, cols.start, side="right") - 1)
        for e in store.layout.entries[first:]:
            lo, hi = max(e.offset, cols.start), min(e.stop, cols.stop)
            if lo >= cols.stop:
                break
            if hi > lo:
                acc.per_layer[e.name] += np.bincount(part["labels"][lo - cols.start : hi - cols.start],
                                                     minlength=n_modes)
    return acc


def mode_bands(trajectories: np.ndarray, sample: np.ndarray, labels: np.ndarray, references: np.ndarray) -> ModeBands:
    """Per mode, its sampled members normalised (z-scores, signs aligned with the reference), their
    2.5-97.5 % band and the reference's z-score (Turjeman et al. 2022 fig. 3)."""
    z = trajectories - trajectories.mean(axis=0)
    std = z.std(axis=0)
    z = np.divide(z, std, out=np.zeros_like(z), where=std > 0)
    position = {int(i): j for j, i in enumerate(sample)}
    low, high, refs, members = [], [], [], []
    for m, ref_index in enumerate(references[:BAND_MODES]):
        idx = np.flatnonzero(labels == m)
        ref = z[:, position[int(ref_index)]]
        signs = np.sign(ref @ z[:, idx])
        aligned = z[:, idx] * np.where(signs == 0, 1, signs)
        lo, hi = np.percentile(aligned, [2.5, 97.5], axis=1)
        low.append(lo)
        high.append(hi)
        refs.append(ref)
        members.append(idx.size)
    return ModeBands(np.array(low), np.array(high), np.array(refs), np.array(members, dtype=np.int64))
