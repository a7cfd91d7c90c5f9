"""The fit of ``traj dmd`` (docs/methods.md §1): :func:`fit_dmd` and its keyword form :func:`dmd`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from ...engine import Engine, ReducedOperator
from ...engine.randomized import randomized_operator
from ...engine.truncation import RESOLVED
from ...errors import ParameterError
from ...progress import Progress
from ...store import RunStore
from ...store.schema import ParamEntry
from ..windows import Window, check_even_spacing, check_gram_finite, hankel_gram, raise_nonfinite, resolve_window
from .evaluate import WindowData
from .method import choose_method
from .params import IN_MEMORY_BYTES, MAX_GRAM_SNAPSHOTS, MEMORY_BYTES, SKETCH_COPIES, DMDParams
from .result import DMDResult, LayerSpectrum


def dmd(
    store: RunStore | str | os.PathLike[str],
    *,
    rank: int | str | None = "auto",
    window: Window = None,
    layers: Sequence[str] | None = None,
    per_layer: bool = False,
    eps: float = 0.01,
    forecast: int = 0,
    n_samples: int = 6,
    engine: Engine | None = None,
    method: str = "auto",
    drop_nonfinite: bool = False,
    max_gram: int = MAX_GRAM_SNAPSHOTS,
    n_iter: int = 4,
    random_state: int = 0,
    in_memory_bytes: int = IN_MEMORY_BYTES,
    memory_bytes: int = MEMORY_BYTES,
    delays: int = 0,
    progress: Progress | None = None,
) -> DMDResult:
    """Exact DMD of a store's trajectory over a window (docs/methods.md §1).

    Parameters
    ----------
    store : RunStore or path
    rank : int or "auto"
        Modes kept; "auto" uses the Gavish–Donoho threshold (the median rule over every σ on the
        gram and svd paths; the known-noise rule with σ̂ from the sketch's tail on the randomized
        path; the JSON's ``rank_rule`` says which). An integer above the directions the window
        resolves is refused (:class:`~traj.errors.RankUnavailableError`).
    window : "a:b" or (a, b), optional
        Snapshot indices, both included (default the whole run).
    layers : list of str, optional
        Restrict the observable to these parameter tensors (default all of θ).
    per_layer : bool
        Also decompose every layer on its own (its Gram comes from the same pass); a layer
        with fewer directions than ``rank`` gets its own Gavish–Donoho rank.
    eps : float
        Tolerance of the neutral class.
    forecast : int
        Snapshots to forecast past the window for the sampled coordinates.
    n_samples : int
        Coordinates sampled (``random_state``) to show beside their reconstruction.
    engine : Engine, optional
        Backend of the streaming pass (default numpy).
    method : {"auto", "gram", "randomized", "svd"}
        "gram" forms the (T+1)² Gram in one pass; "randomized" uses the randomized range
        finder (n_iter + 3 passes, a few T×(r+10) matrices); "svd" reads the window into memory
        and takes an SVD of the data; "auto" chooses by :func:`choose_method` (svd where the
        window's float64 copy fits min(``in_memory_bytes``, ``memory_bytes``), else the cheaper of gram and randomized, gram only
        where it fits ``memory_bytes``). On the gram and randomized paths "auto" rank keeps only
        modes whose eigenvalues the path resolves to ~1e-6 (both square the condition number).
    drop_nonfinite : bool
        Skip snapshots holding NaN/Inf (every pair touching one leaves XᵀX and XᵀY) instead of
        refusing the window; found from the Gram's diagonal, no extra pass.
    in_memory_bytes : int
        Largest float64 window "auto" prefers to read into memory for an SVD of the data (0: never);
        only a preference: the SVD path must also fit ``memory_bytes``.
    memory_bytes : int
        Working memory the method may hold (:data:`MEMORY_BYTES`), the budget of every path: "auto"
        takes the SVD and Gram paths only where they fit, and the range finder's basis never outgrows it.
        An explicit "svd" that does not fit is refused; an explicit "gram" (or "randomized" with a rank
        whose sketch does not fit) runs, and ``choice.reason`` says it exceeds the budget.
    delays : int
        d time delays (Hankel DMD, as ``traj conjugacy`` embeds them): the snapshots become
        h_k = [θ_k; θ_{k+1}; …; θ_{k+d}], k = 0..T−d, and exact DMD runs on that trajectory (its Gram is a
        sum of d+1 shifted blocks of G: no extra pass). PyDMD's ``HankelDMD(d=m)`` stacks m snapshots, so
        it is ``delays = m − 1``. Amplitudes and reconstruction error are the embedded trajectory's; the
        sampled coordinates' reconstruction and forecast, and saved modes, are the delay-0 block's. Not with
        ``per_layer``, ``drop_nonfinite`` or the randomized method.
    """
    params = DMDParams(rank=rank, window=window, layers=layers, per_layer=per_layer, eps=eps, forecast=forecast,
                       n_samples=n_samples, method=method, drop_nonfinite=drop_nonfinite,  # type: ignore[arg-type]
                       max_gram=max_gram, n_iter=n_iter, random_state=random_state, in_memory_bytes=in_memory_bytes,
                       memory_bytes=memory_bytes, delays=delays)
    return fit_dmd(store, params, engine=engine, progress=progress)


def fit_dmd(store: RunStore | str | os.PathLike[str], params: DMDParams, *, engine: Engine | None = None,
            progress: Progress | None = None) -> DMDResult:
    """Fit checked :class:`DMDParams` to a store: the operator, the per-layer spectra and the samples."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    return fit_keeping_window(store, params, engine or Engine(), progress)[0]


def fit_keeping_window(store: RunStore, params: DMDParams, engine: Engine, progress: Progress | None, *,
                       keep: bool = False) -> tuple[DMDResult, WindowData | None]:
    """:func:`fit_dmd`; with ``keep`` (a fit of every weight without delays) also what it read of the window
    (its snapshots on the svd path, its Gram on the gram path), for an evaluation to reuse."""
    t0 = time.perf_counter()
    keep = keep and not params.delays and not params.layers
    lo, hi = resolve_window(store, params.window, spaced=True)
    spacing = check_even_spacing(store, lo, hi)
    if hi - lo + 1 < params.delays + 3:
        raise ParameterError("delays", f"{params.delays} leave fewer than 3 embedded snapshots in the window {lo}:{hi} "
                                       f"(at most {max(0, hi - lo - 2)} delays there)")
    rows = slice(lo, hi + 1)
    entries = store.layout.select(params.layers) if params.layers else list(store.layout.entries)
    # d delays: T+1-d embedded snapshots of (d+1)·N coordinates each
    choice = choose_method(params, hi - lo + 1 - params.delays, sum(e.size for e in entries) * (params.delays + 1),
                           store.dtype.itemsize)
    kept: WindowData | None = None
    if choice.method == "svd":
        operator, spectra, data = _from_data(store, engine, rows, entries, params, progress)
        kept = WindowData((lo, hi), data=data) if keep else None
    elif choice.method == "gram":
        operator, spectra, gram = _from_gram(store, engine, rows, entries, params, progress)
        kept = WindowData((lo, hi), gram=gram) if keep else None
    else:
        operator, spectra = _from_range_finder(store, engine, rows, entries, params, progress), ()
    picks, trajectories, reconstruction = _samples(store, engine, rows, entries, operator, params)
    steps = store.steps[lo : hi + 1]
    result = DMDResult(
        store=str(store.path),
        operator=operator,
        window=(lo, hi),
        steps=steps,
        dt=float(spacing) if spacing > 0 else 1.0,
        eps=params.eps,
        n_params=sum(e.size for e in entries),
        layers=tuple(e.name for e in entries) if params.layers else None,
        reconstruction_error=operator.reconstruction_error(),
        backend=engine.label,
        seconds=time.perf_counter() - t0,
        forecast_steps=params.forecast,
        sample_indices=picks,
        sample_names=tuple(coordinate_name(store, int(i)) for i in picks),
        sample_trajectories=trajectories,
        sample_reconstruction=reconstruction,
        per_layer=spectra,
        choice=choice,
        delays=params.delays,
    )
    return result, kept


def _from_gram(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], params: DMDParams,
               progress: Progress | None) -> tuple[ReducedOperator, tuple[LayerSpectrum, ...], np.ndarray]:
    """The window's operator from its Gram (one pass, which also gives every layer's Gram), and that Gram."""
    groups: dict[str, list[slice]] = {"__all__": [e.columns for e in entries]}
    if params.per_layer:
        groups.update({e.name: [e.columns] for e in entries})
    grams = engine.gram(store, rows=rows, groups=groups, progress=progress)
    n_features = sum(e.size for e in entries)
    finite = np.isfinite(np.diag(grams["__all__"]))
    if finite.all() or not params.drop_nonfinite:
        check_gram_finite(grams["__all__"], store, rows.start)
        valid = None
    else:
        valid = finite
    # d delays: the Hankel snapshots' Gram is a sum of shifted blocks of G (conjugacy's embedding, no extra pass)
    operator = ReducedOperator.from_gram(hankel_gram(grams["__all__"], params.delays), rank=params.rank,
                                         n_features=n_features * (params.delays + 1), dtype=store.dtype, valid=valid,
                                         resolve=RESOLVED)
    spectra = tuple(s for e in entries if params.per_layer and (s := _layer(store, e, grams[e.name], params)))
    return operator, spectra, grams["__all__"]


def _from_data(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], params: DMDParams,
               progress: Progress | None) -> tuple[ReducedOperator, tuple[LayerSpectrum, ...], np.ndarray]:
    """The window's operator from an SVD of the data read into memory (a window within IN_MEMORY_BYTES), and
    the (T+1, N) data read."""
    columns = [e.columns for e in entries]
    whole = len(columns) == 1 and columns[0] == slice(0, store.n_params)
    data = engine.collect(store, columns[0] if whole else np.concatenate([np.arange(c.start, c.stop) for c in columns]),
                          rows=rows, progress=progress)  # (T+1, N) float64
    grams: dict[str, np.ndarray] = {}
    offset = 0
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite snapshot: its Gram row is not finite, as streamed
        for e in entries if params.per_layer else ():
            part = data[:, offset : offset + e.size]
            grams[e.name] = part @ part.T
            offset += e.size
        finite = bool(np.isfinite(data).all())
        gram = None if finite else data @ data.T
    spectra = tuple(s for e in entries if params.per_layer and (s := _layer(store, e, grams[e.name], params)))
    read = data
    if params.delays:  # the Hankel trajectory h_k = [θ_k; …; θ_{k+d}] (hankel_gram's snapshots), held in memory
        d, m = params.delays, data.shape[0] - params.delays
        data = np.concatenate([data[s : s + m] for s in range(d + 1)], axis=1)
    if gram is not None:
        if not params.drop_nonfinite:
            check_gram_finite(gram, store, rows.start)
        operator = ReducedOperator.from_gram(gram, rank=params.rank, n_features=data.shape[1], dtype=store.dtype,
                                             valid=np.isfinite(np.diag(gram)), resolve=RESOLVED)
        return operator, spectra, read
    return ReducedOperator.from_data(data, rank=params.rank, dtype=store.dtype), spectra, read


def _layer(store: RunStore, entry: ParamEntry, gram: np.ndarray, params: DMDParams) -> LayerSpectrum | None:
    """One layer's spectrum (None for a layer that does not move or is not finite)."""
    trace = np.trace(gram)
    if not np.isfinite(trace) or trace <= 0:
        return None
    # a layer's spectrum reports no rounding errors: no residual to measure; a layer with fewer directions than
    # the rank asked gets the "auto" rule's rank (the operator's rule decides: excess="auto")
    op = ReducedOperator.from_gram(gram, rank=params.rank, n_features=entry.size, dtype=store.dtype,
                                   estimate_errors=False, excess="auto")
    assert op.amplitudes is not None
    return LayerSpectrum(entry.name, entry.size, op.rank, op.eigenvalues, op.amplitudes, tuple(op.classes(params.eps)))


def _from_range_finder(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], params: DMDParams,
                       progress: Progress | None) -> ReducedOperator:
    """The window's operator from the randomized range finder (long windows; rank "auto" by the tail rule)."""
    if params.per_layer or params.drop_nonfinite:
        raise ParameterError("per_layer" if params.per_layer else "drop_nonfinite",
                             f"needs the Gram method (windows of at most {params.max_gram} snapshots)")
    operator = randomized_operator(engine, store, params.rank, rows=rows, columns=[e.columns for e in entries],
                                   n_iter=params.n_iter, random_state=params.random_state, dtype=store.dtype,
                                   max_width=params.memory_bytes // (SKETCH_COPIES * 8 * (rows.stop - rows.start)),
                                   resolve=RESOLVED, progress=progress)
    if not np.isfinite(operator.gram_trace):
        raise_nonfinite(store, engine.nonfinite_rows(store, rows=rows))
    return operator


def _samples(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], operator: ReducedOperator,
             params: DMDParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A few coordinates, spread over the selected layers: their trajectories and DMD reconstruction."""
    rng = np.random.default_rng(params.random_state)
    # positions drawn in the selected layers' columns laid end to end (= choice over their concatenated
    # indices, the same draws), mapped to coordinates without an N-long index array
    sizes = np.array([e.size for e in entries], dtype=np.int64)
    ends = np.cumsum(sizes)
    drawn = rng.choice(int(ends[-1]), size=min(params.n_samples, int(ends[-1])), replace=False)
    layer = np.searchsorted(ends, drawn, side="right")
    offsets = np.array([e.offset for e in entries], dtype=np.int64)
    picks = np.sort(offsets[layer] + drawn - (ends - sizes)[layer])
    trajectories = engine.collect(store, picks, rows=rows)
    n_window = rows.stop - rows.start
    with np.errstate(over="ignore", invalid="ignore"):
        # Φ's rows of these coordinates come from the snapshots C spans (with delays, the first T+1-d: the delay-0 block)
        spanned = operator.coefficients.shape[0] if operator.coefficients is not None else n_window
        reconstruction = operator.reconstruct(trajectories[:spanned],
                                              np.arange(n_window + params.forecast))
    bad = np.flatnonzero(~np.isfinite(reconstruction).all(axis=1))
    if bad.size:
        # an unstable mode (|λ| > 1) grows without bound: far enough ahead λᵏ leaves float64
        safe = max(0, int(bad[0]) - n_window)
        top = float(np.abs(operator.eigenvalues).max())
        raise ParameterError("forecast", f"{params.forecast} overflows: the mode with |λ| = {top:.6g} grows past "
                                         f"float64 after {safe} snapshot(s) beyond the window; forecast at most {safe}")
    return picks, trajectories, reconstruction


def coordinate_name(store: RunStore, index: int) -> str:
    """``layer[i, j]`` for a coordinate of θ."""
    for e in store.layout.entries:
        if e.offset <= index < e.stop:
            local = np.unravel_index(index - e.offset, e.shape) if e.shape else ()
            return f"{e.name}[{', '.join(str(int(i)) for i in local)}]"
    return f"θ[{index}]"

