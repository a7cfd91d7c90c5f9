"""Reading what a run's spectra need, in one pass over its store: the observable's snapshot pairs or Gram,
and those of the reparametrisation null's bent copies (docs/methods.md §4.1, §4.3).

A large observable goes through the engine's streamed Gram, its delay embedding a sum of shifted
sub-blocks of G; stacked trajectories through their pooled Gram (:func:`stacked_grams`); a small one is
collected into memory. Nothing of size N is held on any path but a layer's reparametrisation null
(at most ``COLLECT_BYTES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...engine import Engine, ReducedOperator
from ...engine.truncation import check_rank
from ...errors import NotApplicableError
from ...progress import Progress
from ...store import RunStore
from ..windows import Window, hankel_gram, raise_nonfinite, stacked_hankel_gram
from .reparam import reparametrise
from .spectra import (
    SMALL_OBSERVABLE,
    Spectrum,
    SpectrumMethod,
    observable_columns,
    parse_observable,
    pooled_pca_scores,
    stacked_hankel,
    stacked_pca_scores,
    trajectories,
    window_and_delays,
)

__all__ = ["COLLECT_BYTES", "gram_side", "koopman_spectrum", "stacked_grams"]


#: Largest observable (coordinates x snapshots, float64) collected into memory for a layer's reparametrisation null.
COLLECT_BYTES = 1 << 30


@dataclass(frozen=True)
class _Source:
    """What one spectrum is fitted from: snapshot pairs in memory, or a delay-embedded Gram."""

    method: SpectrumMethod
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    gram: np.ndarray | None = None
    n_features: int = 0
    dtype: Any = np.float64
    #: The Gram's rows that are snapshots (stacked trajectories: the separators between them are not).
    valid: np.ndarray | None = None

    def fit(self, rank: int | str | None) -> ReducedOperator:
        if self.method == "memory":
            assert self.x is not None and self.y is not None
            return ReducedOperator.from_pairs(self.x, self.y, rank=rank, dtype=self.dtype, excess="reduce")
        assert self.gram is not None
        return ReducedOperator.from_gram(self.gram, rank=rank, n_features=self.n_features, dtype=self.dtype,
                                         valid=self.valid, excess="reduce")


@dataclass(frozen=True)
class _Observed:
    """A run's observable over its window: its own source and one per reparametrisation draw."""

    store: RunStore
    window: tuple[int, int]
    observable: str
    n_observables: int
    n_traj: int
    delays: int
    source: _Source
    bent: tuple[_Source, ...] = field(default=())

    def spectrum(self, rank: int | str | None) -> Spectrum:
        op = self.source.fit(rank)
        return Spectrum(str(self.store.path), self.window, op.eigenvalues, op.rank, self.n_observables, self.n_traj,
                        self.delays, self.source.method, op.rank_requested, op.rank_note, self.observable,
                        op.truncation)


def _observe(store: RunStore, *, window: Window, observable: str | None, layer: str | None, stack: int | bool | None,
             delays: int | None, small_observable: int, engine: Engine, draws: int = 0, strength: float = 0.1,
             seed: int = 0, gram: np.ndarray | None = None, progress: Progress | None = None,
             first_draw: int = 0, center: bool = False) -> _Observed:
    """Read what a run's spectra need, in one pass: the observable's pairs or Gram, and those of ``draws``
    reparametrised copies h_i(θ), i = first_draw, first_draw + 1, … (the null's maps act on the stored
    coordinates, before the observable). ``center``: pca:K scores with the mean removed (:func:`pca_scores`)."""
    kind, arg = parse_observable(observable, layer)
    lo, hi, delays = window_and_delays(store, window, delays)
    name = "all" if kind == "all" else f"{kind}:{arg}"
    cols, shape = observable_columns(store, arg if kind == "layer" else None)
    n_obs = cols.stop - cols.start
    n_traj = trajectories(store, stack, n_obs, shape)
    rows = slice(lo, hi + 1)
    state = n_obs // n_traj
    maps = range(first_draw, first_draw + draws)
    in_memory = _in_memory(kind, n_obs, n_traj, delays, hi - lo + 1, small_observable)

    def pairs(data: np.ndarray) -> _Source:
        if kind == "pca":
            data = stacked_pca_scores(data, n_traj, int(arg), center=center)  # type: ignore[arg-type]
        x, y = stacked_hankel(data, n_traj, delays)
        return _Source("memory", x, y, dtype=store.dtype)

    def from_gram(g: np.ndarray) -> _Source:
        """A source from the Gram of the window's snapshots (stacked: the pooled Gram, trajectory-major)."""
        if kind == "pca":
            scores = pooled_pca_scores(g, n_traj, int(arg), center=center)  # type: ignore[arg-type]
            x, y = stacked_hankel(scores, n_traj, delays)
            return _Source("memory", x, y, dtype=store.dtype)
        if n_traj > 1:
            embedded, valid = stacked_hankel_gram(g, n_traj, delays)
            return _Source("gram", gram=embedded, n_features=state * (delays + 1), dtype=store.dtype, valid=valid)
        return _Source("gram", gram=hankel_gram(g, delays), n_features=n_obs * (delays + 1), dtype=store.dtype)

    if in_memory or (kind == "layer" and draws and n_traj == 1):
        if not in_memory and n_obs * (hi - lo + 1) * 8 > COLLECT_BYTES:
            raise NotApplicableError(f"{store.path.name}: the reparametrisation null of layer {arg} needs its "
                                     f"{n_obs} coordinates in memory ({n_obs * (hi - lo + 1) * 8 / 2**30:.1f} GiB): "
                                     "use observable 'all' or 'pca:K', or null_size=0")
        data = engine.collect(store, cols, rows=rows, progress=progress)
        raise_nonfinite(store, lo + np.flatnonzero(~np.isfinite(data).all(axis=1)))
        bent_data = [reparametrise(data, i, strength=strength, seed=seed, n_traj=n_traj) for i in maps]
        if in_memory:
            return _Observed(store, (lo, hi), name, n_obs, n_traj, delays, pairs(data),
                             tuple(pairs(b) for b in bent_data))
        grams = [data @ data.T] + [b @ b.T for b in bent_data]
    elif n_traj > 1:
        grams = stacked_grams(store, cols, rows, n_traj, engine=engine, draws=maps, strength=strength, seed=seed,
                              progress=progress)
    elif draws:
        def kernel(block: Any, ops: Any) -> np.ndarray:
            b = ops.to_numpy(block)
            return np.stack([b @ b.T] + [(h := reparametrise(b, i, strength=strength, seed=seed)) @ h.T
                                         for i in maps])

        total = None
        for _, part in engine.map_blocks(store, kernel, rows=rows, progress=progress):
            total = part if total is None else total + part
        assert total is not None
        grams = list((total + total.transpose(0, 2, 1)) / 2)
    else:
        grams = [gram if gram is not None else
                 engine.gram(store, rows=rows, groups={"obs": [cols]}, progress=progress)["obs"]]
    # a NaN/Inf in snapshot s of any trajectory makes its diagonal entry non-finite (stacked: at a·T + s)
    raise_nonfinite(store, lo + np.unique(np.flatnonzero(~np.isfinite(np.diag(grams[0]))) % (hi - lo + 1)))
    # pca:K: at most the fitted snapshots (each trajectory's but its last) and the state's coordinates
    n_shown = min(int(arg), n_traj * (hi - lo), state) if kind == "pca" else n_obs  # type: ignore[arg-type]
    return _Observed(store, (lo, hi), name, n_shown, n_traj, delays, from_gram(grams[0]),
                     tuple(from_gram(g) for g in grams[1:]))


def _in_memory(kind: str, n_obs: int, n_traj: int, delays: int, n_window: int, small_observable: int) -> bool:
    """Whether an observable is collected into memory: a small one, or stacked pca:K of a state smaller than its
    pooled snapshots (the state's own axes, by an SVD). Any other stacked observable is streamed into the pooled
    Gram of its trajectories (:func:`stacked_grams`), any other one into the Gram."""
    if kind == "pca":
        return n_traj > 1 and n_obs // n_traj < n_traj * n_window
    return n_obs * (delays + 1) <= small_observable


def gram_side(store: RunStore, window: tuple[int, int], *, observable: str, stack: int | bool | None,
              delays: int | None, small_observable: int) -> int:
    """The side of the Grams a run's observable is fitted from: its window's snapshots, times its trajectories
    where their pooled Gram is streamed (what each map of the reparametrisation null holds a few of)."""
    kind, arg = parse_observable(observable)
    d = window_and_delays(store, window, delays)[2]
    cols, shape = observable_columns(store, arg if kind == "layer" else None)  # type: ignore[arg-type]
    n_obs = cols.stop - cols.start
    n_traj = trajectories(store, stack, n_obs, shape)
    n_window = window[1] - window[0] + 1
    pooled = n_traj > 1 and not _in_memory(kind, n_obs, n_traj, d, n_window, small_observable)
    return n_window * (n_traj if pooled else 1)


def stacked_grams(store: RunStore, columns: slice, rows: slice, n_traj: int, *, engine: Engine,
                  draws: Sequence[int] = (), strength: float = 0.1, seed: int = 0,
                  progress: Progress | None = None) -> list[np.ndarray]:
    """The pooled Gram of stacked trajectories' snapshots, and that of h_i(θ) for each of ``draws``, in one pass.

    ``columns`` hold ``n_traj`` trajectories of one system, each ``state`` consecutive coordinates; entry
    (a·T + s, b·T + t) of the (n_traj·T)² result is x_a(s)ᵀ x_b(t), the snapshots s and t of trajectories a
    and b in the window ``rows`` of T snapshots. Cross-trajectory products pair coordinate j of one
    trajectory with coordinate j of another, so the state is read a band of coordinates at a time, each
    band from every trajectory (one engine read per trajectory's part of the band): each coordinate is read
    once and no more than a block of them is held. Each draw's map h_i (:func:`reparametrise`, one map per
    state coordinate, its range pooled over the trajectories) bends the band before its Gram is added.
    """
    t = rows.stop - rows.start
    state = (columns.stop - columns.start) // n_traj
    width = store.block_columns(n_traj * t, block_bytes=engine.block_bytes)
    bands = range(0, state, width)
    grams = [np.zeros((n_traj * t, n_traj * t)) for _ in range(1 + len(draws))]
    for done, first in enumerate(bands, 1):
        stop = min(state, first + width)
        band = np.empty((n_traj, t, stop - first))  # trajectory-major: band.reshape(n_traj·T, w) is the pooled rows
        for a in range(n_traj):
            start = columns.start + a * state
            band[a] = engine.collect(store, slice(start + first, start + stop), rows=rows)
        pooled = band.reshape(n_traj * t, -1)
        grams[0] += pooled @ pooled.T
        if draws:
            data = band.transpose(1, 0, 2).reshape(t, -1)  # (T, n_traj·w), as reparametrise takes stacked data
            for gram, i in zip(grams[1:], draws, strict=True):
                bent = reparametrise(data, i, strength=strength, seed=seed, n_traj=n_traj)
                bent = bent.reshape(t, n_traj, -1).transpose(1, 0, 2).reshape(n_traj * t, -1)
                gram += bent @ bent.T
        if progress is not None:
            progress(done, len(bands))
    return [(g + g.T) / 2 for g in grams]


def koopman_spectrum(
    store: RunStore,
    *,
    window: Window = None,
    observable: str | None = None,
    layer: str | None = None,
    stack: int | bool | None = None,
    delays: int | None = None,
    rank: int | str | None = "auto",
    small_observable: int = SMALL_OBSERVABLE,
    engine: Engine | None = None,
    gram: np.ndarray | None = None,
    progress: Progress | None = None,
    center: bool = False,
) -> Spectrum:
    """Koopman eigenvalues of a store's observable (all weights, one layer, or PCA scores) over a window.

    ``stack`` splits the observable into independent trajectories of one system: an integer N
    (θ split into N equal parts), True (the tensor's first axis) or None (the recipe's default:
    on for mirror-descent stores, with 4 delays). ``gram`` may pass a precomputed Gram of exactly
    this window and observable. An explicit ``rank`` above the directions the run resolves is
    reduced (``Spectrum.rank_note`` says so). ``center``: pca:K scores with their mean removed
    (default False: Redman et al. 2024's projection; :func:`pca_scores`).
    """
    rank = check_rank(rank)
    observed = _observe(store, window=window, observable=observable, layer=layer, stack=stack, delays=delays,
                        small_observable=small_observable, engine=engine or Engine(), gram=gram, progress=progress,
                        center=center)
    return observed.spectrum(rank)
