"""``traj cmd``: Correlation Mode Decomposition (docs/methods.md §2; Turjeman et al. 2022).

Weights fall into M ≪ N modes; within mode m, wᵢ(k) ≈ aᵢ·w_{r,m}(k) + bᵢ. A sample of K
weights that move is clustered by complete linkage on the Euclidean distance between rows of
|corr| (the authors' code, Turjeman et al. 2022); each cluster's reference is the
member most correlated with the rest; then ONE streaming pass over all N weights assigns
each weight to the reference it correlates with most and fits [aᵢ bᵢ] in closed form
(O(N·M·T), memory bounded by the block size). The fitted model (labels, a, b, references)
is written to ``cmd.zarr`` and reconstructs any snapshot or block without the store.

:class:`CMDParams` checks the options once; :func:`fit_cmd` fits them through the engine
(samples, the pass, and with a recipe the evaluation and the sweep over M); the result is a
frozen :class:`CMDResult` that holds everything the report draws.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_choice, check_float, check_floats, check_int, check_ints, check_seed
from ..engine import Engine
from ..engine.backends import ArrayOps, Kernel
from ..errors import (
    DataLimitError,
    NonFiniteDataError,
    NotApplicableError,
    ParameterError,
    WindowTooShortError,
)
from ..progress import Progress, Stage, counter
from ..store import RunStore
from ..store.derived import CMD, read_cmd_model, write_attrs
from .vectors import ChunkedVectors
from .windows import Window, resolve_window

__all__ = ["CMDEvaluation", "CMDModel", "CMDParams", "CMDResult", "DISTANCES", "EMAScores", "HistoryRow",
           "HistorySweep", "ModeBands", "ModelComparison", "MovingSample", "SweepRow", "adjusted_rand_index",
           "cluster_modes", "cmd", "compare_models", "evaluate", "fit_cmd", "history_sweep", "load", "row_distances",
           "sample_moving", "sample_weights", "stability", "sweep", "weight_ema"]

MODEL_FORMAT = CMD.format
#: K, the weights sampled for the clustering: their K x K correlation and its linkage live in memory.
MAX_SAMPLES = 10_000
#: K by default (``samples=None``): every weight of a model of at most ALL_SAMPLES weights (no sampling, so the
#: partition does not depend on a seed; issue 26: digits-cnn, N = 3658, M = 5, five seeds of 1000 samples agreed
#: with ARI min 0.66), else DEFAULT_SAMPLES. K x K matrices of 4096 are 134 MB and cluster in seconds.
ALL_SAMPLES = 4096
DEFAULT_SAMPLES = 1000
#: Modes drawn as bands, and sampled weights drawn beside their reconstruction, in the report.
BAND_MODES = 12
FIT_SAMPLES = 6
#: Candidates read per wanted sample: the frozen ones are dropped (docs/methods.md §2.1); doubled while too few move.
OVERSAMPLE = 2
#: Sampling seeds whose partitions ``--sweep`` compares (adjusted Rand index over the pairs).
STABILITY_SEEDS = 5
#: The weight EMAs scored by ``--evaluate --ema`` are held in memory at the scored snapshots (float32).
MAX_EMA_BYTES = 2 << 30
#: values per piece of a block in the assignment pass (float64 temporaries of 512 KiB stay in cache)
PIECE_VALUES = 1 << 16
#: Weight an EMA may leave on the window's first snapshot at its last before the report warns.
EMA_INIT_WARN = 0.05
#: Clustering distances: "rows", the Euclidean distance between rows of |corr| (the authors' code, Turjeman et al. 2022, the
#: default: steadier across sampling seeds at equal error), and "corr", 1 − |corr| (traj before issue 17).
DISTANCES = ("rows", "corr")
#: Columns a model reconstructs at a time (a snapshot of N weights is built from blocks of this width).
RECONSTRUCT_COLUMNS = 1 << 20


@dataclass(frozen=True)
class CMDParams:
    """The options of a CMD, checked (see :func:`cmd` for their meaning)."""

    modes: int | None = 10
    threshold: float | None = None
    samples: int | None = None
    window: Window = None
    subsample: int = 1
    seed: int = 0
    drop_nonfinite: bool = False
    eval_points: int = 40
    sweep: tuple[int, ...] = ()
    sweep_points: int = 20
    distance: str = "rows"
    ema: tuple[float, ...] = ()
    sweep_window: tuple[int, ...] = ()
    sweep_subsample: tuple[int, ...] = ()

    @classmethod
    def checked(cls, *, modes: int | None = 10, threshold: float | None = None, samples: int | None = None,
                window: Window = None, subsample: int = 1, seed: int = 0, drop_nonfinite: bool = False,
                eval_points: int = 40, sweep: Sequence[int] = (), sweep_points: int = 20,
                distance: str = "rows", ema: Sequence[float] = (), sweep_window: Sequence[int] = (),
                sweep_subsample: Sequence[int] = ()) -> CMDParams:
        """The options checked once, at the door (``threshold`` wins over ``modes``)."""
        if threshold is not None:
            threshold, modes = check_float("threshold", threshold, low=0, high=1, low_open=True), None
        elif modes is None:
            raise ParameterError("modes", "must be given when threshold is not")
        else:
            modes = check_int("modes", modes, low=1, high=MAX_SAMPLES)
        return cls(
            modes=modes,
            threshold=threshold,
            samples=None if samples is None else check_int("samples", samples, low=2, high=MAX_SAMPLES),
            window=window,
            subsample=check_int("subsample", subsample, low=1),
            seed=check_seed("seed", seed),
            drop_nonfinite=bool(drop_nonfinite),
            eval_points=check_int("eval_points", eval_points, low=1),
            sweep=tuple(sorted(set(check_ints("sweep", sweep, low=1, high=MAX_SAMPLES)))) if len(sweep) else (),
            sweep_points=check_int("sweep_points", sweep_points, low=1),
            distance=check_choice("distance", distance, DISTANCES),
            ema=tuple(sorted(set(check_floats("ema", ema, low=0, high=1, low_open=True, high_open=True))))
            if len(ema) else (),
            sweep_window=tuple(sorted(set(check_ints("sweep_window", sweep_window)))) if len(sweep_window) else (),
            sweep_subsample=tuple(sorted(set(check_ints("sweep_subsample", sweep_subsample, low=1))))
            if len(sweep_subsample) else (),
        )

    def options(self) -> dict[str, Any]:
        """The fit's options as summary.json shows them."""
        return {"modes": self.modes, "threshold": self.threshold, "samples": self.samples,
                "subsample": self.subsample, "seed": self.seed, "distance": self.distance, "ema": list(self.ema)}


# ---------------------------------------------------------------------- sampling and clustering
def sample_weights(store: RunStore, samples: int, *, seed: int = 0) -> np.ndarray:
    """K coordinates: K/2 spread evenly over the layers, K/2 uniform over all of θ (the design of
    docs/methods.md §2.1, before frozen weights are dropped; :func:`sample_moving` draws its candidates so).

    With K/2 <= layers, K/2 layers are drawn and one weight taken from each. Sorted, unique.
    """
    samples = check_int("samples", samples, low=2, high=MAX_SAMPLES)
    return _design(store, samples, check_seed("seed", seed))


def _design(store: RunStore, samples: int, seed: int) -> np.ndarray:
    n = store.n_params
    k = min(samples, n)
    rng = np.random.default_rng(seed)
    entries = [e for e in store.layout.entries if e.size > 0]
    half = k // 2
    chosen: set[int] = set()
    if half > len(entries):
        per_layer = half // len(entries)
        for e in entries:
            take = min(per_layer, e.size)
            chosen.update(int(i) for i in e.offset + rng.choice(e.size, size=take, replace=False))
    elif half:
        for j in rng.choice(len(entries), size=half, replace=False):
            e = entries[int(j)]
            chosen.add(int(e.offset + rng.integers(e.size)))
    remaining = k - len(chosen)
    while remaining > 0:
        draw = rng.choice(n, size=min(n, remaining * 2 + 8), replace=False)
        for i in draw:
            if int(i) not in chosen:
                chosen.add(int(i))
                remaining -= 1
                if not remaining:
                    break
    return np.array(sorted(chosen), dtype=np.int64)


def moving_columns(trajectories: np.ndarray) -> np.ndarray:
    """Which columns (weights) move over the rows: ‖w − mean w‖ > 1e-12·max(1, max|w|)."""
    norms = np.linalg.norm(trajectories - trajectories.mean(axis=0), axis=0)
    return norms > 1e-12 * max(1.0, float(np.abs(trajectories).max(initial=0.0)))


@dataclass(frozen=True)
class MovingSample:
    """K sampled weights that move: their indices (sorted), trajectories (T', K) and the candidates read."""

    indices: np.ndarray
    trajectories: np.ndarray
    candidates: int
    frozen: int


def default_samples(n_params: int) -> int:
    """K when none is given: every weight of a model of at most :data:`ALL_SAMPLES`, else :data:`DEFAULT_SAMPLES`."""
    return n_params if n_params <= ALL_SAMPLES else DEFAULT_SAMPLES


def sample_moving(store: RunStore, samples: int | None, *, seeds: Sequence[int] = (0,), rows: slice | None = None,
                  keep: np.ndarray | None = None, engine: Engine | None = None) -> list[MovingSample]:
    """Per seed, K weights that move over the window (docs/methods.md §2.1), all seeds in one read.

    Per seed, 2K candidates are drawn by :func:`sample_weights`' design and read (the union of every
    seed's candidates, in one pass over the store); the frozen ones (constant over ``rows``/``keep``:
    dead units, weights Adam never updates) are dropped and K moving ones kept: K/2 spread over the
    layers that have moving candidates, the rest uniformly (seeded). Candidates double while fewer than
    K move (at most all N); fewer than K are returned only when fewer move at all. ``samples=None``:
    :func:`default_samples` (every weight of a small model: every seed then returns the same sample).
    """
    engine = engine or Engine()
    n = store.n_params
    k = default_samples(n) if samples is None else min(check_int("samples", samples, low=2, high=MAX_SAMPLES), n)
    read = min(n, OVERSAMPLE * k)
    while True:
        candidates = [_design(store, read, seed) for seed in seeds]
        union = np.unique(np.concatenate(candidates))
        data = engine.collect(store, union, rows=rows)
        data = data if keep is None else data[keep]
        if not np.isfinite(data).all():
            bad = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
            bad = int(keep[bad]) if keep is not None else bad
            start = (rows.start or 0) if rows is not None else 0
            raise NonFiniteDataError(f"snapshot {bad + start} holds NaN or Inf")
        moves = moving_columns(data)
        if read >= n or all(moves[np.searchsorted(union, c)].sum() >= k for c in candidates):
            break
        read = min(n, 2 * read)
    _check_huge_values(data, np.flatnonzero(moves), union, store)
    out = []
    for seed, cand in zip(seeds, candidates, strict=True):
        moving = cand[moves[np.searchsorted(union, cand)]]
        chosen = _balanced(store, moving, k, np.random.default_rng([seed, 1]))
        out.append(MovingSample(chosen, data[:, np.searchsorted(union, chosen)], cand.size, cand.size - moving.size))
    return out


def _balanced(store: RunStore, moving: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K of the moving candidates: K/2 spread over the layers that hold some, the rest uniform."""
    if moving.size <= k:
        return moving
    starts = np.array([e.offset for e in store.layout.entries])
    layer_of = np.searchsorted(starts, moving, side="right") - 1
    layers = np.unique(layer_of)
    per_layer = (k // 2) // layers.size if k // 2 > layers.size else 0
    chosen: list[int] = []
    for layer in layers:
        members = moving[layer_of == layer]
        chosen.extend(rng.choice(members, size=min(per_layer, members.size), replace=False).tolist())
    rest = np.setdiff1d(moving, chosen)
    chosen.extend(rng.choice(rest, size=k - len(chosen), replace=False).tolist())
    return np.sort(np.array(chosen, dtype=np.int64))


def abs_corr(trajectories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|corr| between columns over time (K×K) and which columns move at all."""
    centered = trajectories - trajectories.mean(axis=0)
    norms = np.linalg.norm(centered, axis=0)
    moving = norms > 1e-12 * max(1.0, float(np.abs(trajectories).max(initial=0.0)))
    unit = np.zeros_like(centered)
    unit[:, moving] = centered[:, moving] / norms[moving]
    corr = np.abs(unit.T @ unit)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, 0.0, 1.0), moving


def row_distances(corr: np.ndarray) -> np.ndarray:
    """Condensed Euclidean distances between the rows of |corr| (K×K), as ``pdist(corr)`` gives them.

    From the Gram of the rows: ‖rᵢ − rⱼ‖² = ‖rᵢ‖² + ‖rⱼ‖² − 2 (|C| |C|ᵀ)ᵢⱼ, clipped at 0 (one
    K×K product, several times faster than ``pdist`` at K ≥ 1000).
    """
    from scipy.spatial.distance import squareform

    gram = corr @ corr.T
    norms = np.diag(gram)
    squared = np.clip(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0, None)
    squared = (squared + squared.T) / 2.0
    np.fill_diagonal(squared, 0.0)
    return squareform(np.sqrt(squared), checks=False)


def cluster_modes(corr: np.ndarray, *, modes: int | None = None, threshold: float | None = None,
                  distance: str = "rows") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complete-linkage clusters of the sampled weights, cut to ``modes`` clusters or at ``threshold``.

    ``distance="rows"``: the Euclidean distance between rows of |corr| (two weights are close when
    they correlate alike with every other sample; the authors' code, Turjeman et al. 2022), cut at ``threshold`` times the
    largest pairwise distance. ``distance="corr"``: 1 − |corr|, cut at ``threshold`` itself.
    Returns labels (0..M-1, ordered by first appearance in the dendrogram), the dendrogram
    leaf order, and the linkage matrix.
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    if distance == "rows":
        condensed = row_distances(corr)
        cut = None if threshold is None else threshold * float(condensed.max(initial=0.0))
    else:
        condensed = squareform(1.0 - corr, checks=False)
        cut = threshold
    tree = linkage(condensed, method="complete")
    if modes is not None:
        raw = fcluster(tree, t=modes, criterion="maxclust")
    else:
        raw = fcluster(tree, t=cut, criterion="distance")
    order = leaves_list(tree)
    relabel: dict[int, int] = {}
    for leaf in order:
        relabel.setdefault(int(raw[leaf]), len(relabel))
    return np.array([relabel[int(c)] for c in raw], dtype=np.int64), order, tree


def references_of(corr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster, the member j maximising Σ_{i∈C} |corr(wᵢ, wⱼ)| (docs/methods.md §2.3)."""
    refs = []
    for m in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == m)
        scores = corr[np.ix_(members, members)].sum(axis=0)
        refs.append(int(members[np.argmax(scores)]))
    return np.array(refs, dtype=np.int64)


# ---------------------------------------------------------------------- the streaming pass
def weight_ema(trajectory: np.ndarray, beta: float, picks: np.ndarray | None = None) -> np.ndarray:
    """The exponential moving average of the weights over the snapshots (rows), at rows ``picks``.

    θ̄₀ = θ₀ and θ̄_k = β θ̄_{k−1} + (1 − β) θ_k, i.e. θ̄_k = β^k θ₀ + (1 − β) Σ_{j=1..k} β^{k−j} θ_j:
    the weights sum to 1, so no bias correction (the EMA of Turjeman et al. 2022, StarGAN v2's ``moving_average``, and
    ``torch.optim.swa_utils.get_ema_multi_avg_fn``). One IIR filter over the time axis per column block.

    Parameters
    ----------
    trajectory : ndarray of shape (T', width)
    beta : float, 0 < beta < 1, per row (snapshot)
    picks : ndarray of int, optional
        Rows returned (default all).

    Returns
    -------
    ndarray of shape (len(picks), width)
    """
    from scipy.signal import lfilter

    trajectory = np.asarray(trajectory, dtype=np.float64)
    picks = np.arange(trajectory.shape[0]) if picks is None else np.asarray(picks)
    out = np.empty((picks.size, trajectory.shape[1]))
    later = picks > 0
    out[~later] = trajectory[0]
    if later.any():
        filtered, _ = lfilter([1.0 - beta], [1.0, -beta], trajectory[1:], axis=0, zi=beta * trajectory[:1])
        out[later] = filtered[picks[later] - 1]
    return out


def assign_kernel(references: np.ndarray, keep: np.ndarray, *, ema: Sequence[float] = (),
                  ema_picks: np.ndarray | None = None) -> Kernel:
    """Per block of weights: label, a, b, residual sum of squares and |corr| to the reference.

    ``references`` (M, T') are the references over the snapshots ``keep`` of the window. The
    least-squares fit of w ≈ a·r + b has a = ⟨w̄, r̄⟩/‖r̄‖² and b = mean(w) − a·mean(r), and its
    residual is ‖w̄‖² − ⟨w̄, r̄⟩²/‖r̄‖², so nothing is reconstructed to measure the error. Written
    once against the backend's array operations (numpy, torch on a device, dask workers). With
    ``ema`` (decays β), the same pass also returns the weight EMA of every β at the kept rows
    ``ema_picks`` (:func:`weight_ema`), as "ema" of shape (n_β, n_picks, width), float32.

    The block is worked through in pieces of :data:`PIECE_VALUES` values, small enough that the
    temporaries stay in cache: per piece, the offsets from the first kept snapshot d = w − w(0)
    (exactly zero for a weight that does not move), one product [r̄ᵀ; 1ᵀ]·d giving ⟨d, r̄⟩ = ⟨w̄, r̄⟩
    (r̄ sums to zero) and Σd, and Σd²; ‖w̄‖² = Σd² − (Σd)²/T'. Everything after is O(M) per weight.
    """
    t = len(keep)
    whole = np.array_equal(keep, np.arange(t))
    refs_centered = references - references.mean(axis=1, keepdims=True)  # (M, T')
    refs_norm2 = (refs_centered**2).sum(axis=1)
    refs_mean = references.mean(axis=1)
    refs_scale = 1.0 / np.sqrt(np.where(refs_norm2 > 0, refs_norm2, np.inf))[:, None]
    refs_norm2 = np.where(refs_norm2 > 0, refs_norm2, 1.0)
    products = np.vstack([refs_centered, np.ones((1, t))])  # (M + 1, T')
    n_modes = references.shape[0]

    def kernel(block: Any, ops: ArrayOps) -> dict[str, Any]:
        width = block.shape[1]
        # on the CPU, pieces whose temporaries stay in cache; on a device, the whole block at once
        piece = max(1, PIECE_VALUES // t) if isinstance(block, np.ndarray) else width
        rows = ops.asarray(products)
        out = {"labels": np.empty(width, dtype=np.int32), "moving": np.empty(width, dtype=bool),
               "a": np.empty(width), "b": np.empty(width), "sse": np.empty(width), "abscorr": np.empty(width)}
        total = 0.0
        for lo in range(0, width, piece):
            part = block[:, lo : lo + piece]
            if not whole:
                part = ops.take(part, keep, 0)
            d = part - part[0:1]
            stats = ops.to_numpy(rows @ d)
            dots, s1 = stats[:n_modes], stats[n_modes]
            s2 = ops.to_numpy(ops.sum_squares(d, 0))
            first = ops.to_numpy(part[0])
            n = first.size
            hi = lo + n
            mean = first + s1 / t
            norm2 = np.maximum(s2 - s1 * s1 / t, 0.0)
            # a weight moves when its RMS deviation exceeds 1e-12 of its size (a constant's deviation is
            # exactly zero here, and a weight at the rounding level is not labelled at random)
            moving = norm2 > (1e-12 * np.maximum(1.0, np.abs(mean))) ** 2 * t
            scaled = np.abs(dots)
            scaled *= refs_scale
            labels = scaled.argmax(axis=0)
            labels[~moving] = 0
            best = dots[labels, np.arange(n)]
            a = best / refs_norm2[labels]
            a[~moving] = 0.0
            out["labels"][lo:hi], out["moving"][lo:hi], out["a"][lo:hi] = labels, moving, a
            out["b"][lo:hi] = mean - a * refs_mean[labels]
            out["sse"][lo:hi] = np.where(moving, np.maximum(norm2 - a * best, 0.0), 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["abscorr"][lo:hi] = np.where(moving, np.abs(best) * refs_scale[labels, 0] / np.sqrt(norm2), 0.0)
            total += float(s2.sum() + (first * (2.0 * s1 + t * first)).sum())  # Σ w² = Σ (d + w(0))²
        out["total"] = total
        if ema:
            kept = ops.to_numpy(block if whole else ops.take(block, keep, 0))
            out["ema"] = np.stack([weight_ema(kept, beta, ema_picks) for beta in ema]).astype(np.float32)
        return out

    return kernel


# ---------------------------------------------------------------------- results
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


@dataclass(frozen=True)
class ModeBands:
    """Per mode (the first :data:`BAND_MODES`): its sampled members as sign-aligned z-scores, summarised.

    ``low``/``high`` (n_modes, T') bound 95 % of the members; ``reference`` is the reference's
    z-score; ``members`` how many sampled weights the mode holds (Turjeman et al. 2022 fig. 3).
    """

    low: np.ndarray
    high: np.ndarray
    reference: np.ndarray
    members: np.ndarray


@dataclass(frozen=True)
class EMAScores:
    """The recipe's metrics of the weight EMA with decay ``beta`` (per snapshot) at the scored snapshots.

    ``first_weight`` = β^(T'−1): the weight the EMA still puts on the window's first snapshot at its
    last (Turjeman et al. 2022 figs. 19-21 compare CMD with this smoothed model).
    """

    beta: float
    metrics: Mapping[str, np.ndarray]
    first_weight: float

    @property
    def stale(self) -> bool:
        """Whether the EMA still leans on the first snapshot (β^(T'−1) > 0.05): β too close to 1 for the run."""
        return self.first_weight > EMA_INIT_WARN


@dataclass(frozen=True)
class CMDEvaluation:
    """The recipe's metrics of the original, the CMD weights and the weight EMAs at a few snapshots
    (Turjeman et al. 2022 figs. 5a, 7, 19-21)."""

    snapshots: np.ndarray
    steps: np.ndarray
    original: Mapping[str, np.ndarray]
    cmd: Mapping[str, np.ndarray]
    ema: tuple[EMAScores, ...] = ()

    @property
    def metric(self) -> str:
        """The metric the report shows: accuracy when the recipe measures it, else loss."""
        return "accuracy" if "accuracy" in self.cmd else "loss"

    def to_dataframe(self) -> Any:
        """The rows of :meth:`to_dict` as a table indexed by step (pandas)."""
        from ..tables import dataframe

        rows = self.to_dict()
        return dataframe({key: [row[key] for row in rows] for key in (rows[0] if rows else {"step": ()})},
                         index="step")

    def to_dict(self) -> list[dict[str, float]]:
        rows = []
        for i, (k, step) in enumerate(zip(self.snapshots, self.steps, strict=True)):
            row: dict[str, float] = {"snapshot": int(k), "step": int(step)}
            row.update({f"original_{name}": float(v[i]) for name, v in self.original.items()})
            row.update({f"cmd_{name}": float(v[i]) for name, v in self.cmd.items()})
            for track in self.ema:
                row.update({f"ema{track.beta:g}_{name}": float(v[i]) for name, v in track.metrics.items()})
            rows.append(row)
        return rows


@dataclass(frozen=True)
class Stability:
    """How well CMDs from different sampling seeds agree (Turjeman et al. 2022 figs. 9-10).

    ``ari`` holds the adjusted Rand index between the partitions of every pair of ``seeds`` (in
    ``itertools.combinations`` order), over the weights that move; ``relative_errors`` each seed's
    ‖D − D̂‖/‖D‖.
    """

    seeds: tuple[int, ...]
    ari: np.ndarray
    relative_errors: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "ari": self.ari.tolist(), "ari_min": float(self.ari.min()),
                "ari_median": float(np.median(self.ari)), "ari_max": float(self.ari.max()),
                "relative_errors": self.relative_errors.tolist()}


@dataclass(frozen=True)
class SweepRow:
    """CMD with ``modes`` modes: its errors, how well 5 sampling seeds agree and, with a recipe, the best
    metric over the window (Turjeman et al. 2022 figs. 6, 9)."""

    modes: int
    mse: float
    relative_error: float
    compression_ratio: float
    metric: str | None = None
    best_cmd: float | None = None
    best_original: float | None = None
    stability: Stability | None = None

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"modes": self.modes, "mse": self.mse, "relative_error": self.relative_error,
                               "compression_ratio": self.compression_ratio}
        if self.stability is not None:
            st = self.stability.to_dict()
            row.update({k: st[k] for k in ("ari_min", "ari_median", "ari_max")})
        if self.metric:
            row[f"best_cmd_{self.metric}"] = self.best_cmd
            row[f"best_original_{self.metric}"] = self.best_original
        return row


@dataclass(frozen=True)
class CMDResult:
    """CMD of a store's window: the model, what the sample showed, errors, and what the report draws.

    ``sample_*`` describe the K sampled weights (their trajectories (T', K), |corr| (K, K),
    labels, dendrogram order); ``constant_samples`` counts the frozen candidates left out of the
    sample (docs/methods.md §2.1); ``sample_reconstruction`` is their CMD reconstruction and
    ``fit_samples`` the few of them the report draws; ``bands`` the modes' member bands.
    """

    store: str
    window: tuple[int, int]
    params: CMDParams
    snapshots: np.ndarray
    steps: np.ndarray
    n_params: int
    model: CMDModel
    sample_indices: np.ndarray
    sample_labels: np.ndarray
    sample_order: np.ndarray
    sample_corr: np.ndarray
    sample_trajectories: np.ndarray
    sample_reconstruction: np.ndarray
    fit_samples: np.ndarray
    bands: ModeBands
    reference_indices: np.ndarray
    mode_sizes: np.ndarray
    mode_mean_corr: np.ndarray
    modes_per_layer: Mapping[str, np.ndarray]
    mse: float
    relative_error: float
    backend: str
    seconds: float
    model_path: str | None = None
    evaluation: CMDEvaluation | None = None
    sweep: tuple[SweepRow, ...] = ()
    constant_samples: int = 0
    comparison: ModelComparison | None = None
    history: tuple[HistorySweep, ...] = ()

    @property
    def subsample(self) -> int:
        return self.params.subsample

    @property
    def modes(self) -> int:
        return int(self.model.references.shape[0])

    @property
    def compression_ratio(self) -> float:
        t = self.steps.size
        return self.n_params * t / (self.modes * t + 2 * self.n_params)

    @property
    def ordered_corr(self) -> np.ndarray:
        """|corr| of the sampled weights in dendrogram order (Turjeman et al. 2022 fig. 2)."""
        return self.sample_corr[np.ix_(self.sample_order, self.sample_order)]

    def to_dataframe(self) -> Any:
        """One row per mode (pandas): its size (weights), mean |corr| with its reference, and the reference
        weight (a coordinate of θ). The scores per snapshot: ``result.evaluation.to_dataframe()``."""
        from ..tables import dataframe

        return dataframe({"mode": np.arange(self.modes), "size": self.mode_sizes,
                          "mean_abs_corr": self.mode_mean_corr, "reference_index": self.reference_indices},
                         index="mode")

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "modes": self.modes,
            "mode_sizes": self.mode_sizes.tolist(),
            "mode_mean_abs_corr": self.mode_mean_corr.tolist(),
            "modes_per_layer": {name: counts.tolist() for name, counts in self.modes_per_layer.items()},
            "reconstruction_mse": self.mse,
            "relative_error": self.relative_error,
            "compression_ratio": self.compression_ratio,
            "references": self.model.references.tolist(),
            "reference_indices": self.reference_indices.tolist(),
            "samples": int(self.sample_indices.size),
            "constant_samples": self.constant_samples,
            "window": list(self.window),
            "subsample": self.subsample,
            "snapshots": self.snapshots.tolist(),
            "steps": self.steps.tolist(),
            "n_params": self.n_params,
            "options": self.params.options(),
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "sweep": [row.to_dict() for row in self.sweep] or None,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "history_sweeps": [h.to_dict() for h in self.history] or None,
            "model": self.model_path,
            "backend": self.backend,
            "seconds": self.seconds,
        }


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
    out: str | os.PathLike[str] | None = None,
    drop_nonfinite: bool = False,
    recipe: Any = None,
    eval_points: int = 40,
    sweep: Sequence[int] = (),
    distance: str = "rows",
    ema: Sequence[float] = (),
    keep_model: bool = True,
    engine: Engine | None = None,
    progress: Progress | None = None,
    stage: Stage | None = None,
) -> CMDResult:
    """Correlation Mode Decomposition of a store's trajectory (docs/methods.md §2).

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
    out : path, optional
        Write the model (labels, a, b, references) to ``out`` (a Zarr group, e.g. DIR/cmd.zarr) block
        by block; the result's model then reads its per-weight arrays from there, so nothing of size N
        is held. Without it they are held in memory (20 bytes per weight) unless ``keep_model`` is False.
    keep_model : bool
        Without ``out``, keep the per-weight model in memory (False: only the references, sizes and
        errors; nothing can be reconstructed, so no recipe then).
    recipe : Recipe, optional
        Score the original and the CMD weights with it at ``eval_points`` snapshots.
    sweep : list of int
        Also fit M = each of these and report errors, the agreement of 5 sampling seeds (adjusted
        Rand index) and with a recipe the best metric, against M.
    distance : {"rows", "corr"}
        Clustering distance: Euclidean between rows of |corr| (default) or 1 − |corr| (docs/methods.md §2.2).
    ema : list of float
        With a recipe, also score the weight EMA of each decay β (per recorded snapshot: a store
        recorded every k steps stands for a per-step β_s with β = β_s^k) at the evaluated snapshots,
        computed in the same pass (Turjeman et al. 2022 figs. 19-21; :func:`weight_ema`).
    """
    params = CMDParams.checked(modes=modes, threshold=threshold, samples=samples, window=window, subsample=subsample,
                               seed=seed, drop_nonfinite=drop_nonfinite, eval_points=eval_points, sweep=sweep,
                               distance=distance, ema=ema)
    return fit_cmd(store, params, out=out, recipe=recipe, keep_model=keep_model, engine=engine, progress=progress,
                   stage=stage)


def fit_cmd(store: RunStore | str | os.PathLike[str], params: CMDParams, *, out: str | os.PathLike[str] | None = None,
            recipe: Any = None, keep_model: bool = True, engine: Engine | None = None,
            progress: Progress | None = None, stage: Stage | None = None) -> CMDResult:
    """Fit checked :class:`CMDParams` to a store; with a recipe, evaluate it; run the sweep when asked.

    ``keep_model=False`` without ``out`` keeps no per-weight model (see :func:`cmd`).

    ``stage("evaluating")`` and ``stage("sweep")`` announce the steps after the pass; ``progress`` counts
    the blocks of each pass and then the recipe's evaluations (a sweep: the fits of its settings).
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    if params.ema and recipe is None:
        raise NotApplicableError("--ema scores the weight EMA with a recipe: this run has none (give --recipe)")
    # the EMAs (n_β x n_picks x N) go to a scratch Zarr array, read back one snapshot at a time
    with _scratch(bool(params.ema) and recipe is not None, "ema.zarr") as ema_out:
        result, ema_rows = _fit(store, params, out, engine, progress, with_ema=recipe is not None, ema_out=ema_out,
                                keep_model=keep_model or recipe is not None)
        if recipe is not None:
            if stage is not None:
                stage("evaluating")
            result = replace(result, evaluation=evaluate(result, store, recipe, max_points=params.eval_points,
                                                          engine=engine, ema=ema_rows, progress=progress))
    for kind, settings in (("window", params.sweep_window), ("subsample", params.sweep_subsample)):
        if settings:
            if stage is not None:
                stage(f"sweep over the {'history length' if kind == 'window' else 'snapshot spacing'}")
            result = replace(result, history=(*result.history, _history_sweep(store, params, kind, settings, recipe,
                                                                               engine, result.window, progress)))
    if params.sweep:
        if stage is not None:
            stage("sweep")
        result = replace(result, sweep=_sweep(store, params, recipe, engine, progress))
    return result


def _fit(store: RunStore, params: CMDParams, out: str | os.PathLike[str] | None, engine: Engine,
         progress: Progress | None, *, with_ema: bool = False, keep_model: bool = True,
         ema_out: str | os.PathLike[str] | None = None) -> tuple[CMDResult, Any]:
    """The clustering of the sample and the one pass over every weight; with ``with_ema`` and
    ``params.ema``, the same pass also gives the weight EMAs at :func:`eval_picks` (n_β, n_picks, N),
    written to the Zarr array ``ema_out`` block by block when given, else held in memory.

    With ``out`` the model's per-weight arrays go to ``out`` block by block and the result's model
    reads them from there; without it they are held in memory when ``keep_model``, else not kept at all
    (the model then holds the references only: the totals, sizes and errors are all a sweep needs)."""
    t0 = time.perf_counter()
    lo, hi, rows, keep = _window_rows(store, params, engine)
    used = lo + keep
    ema = params.ema if with_ema else ()
    picks = eval_picks(used.size, params.eval_points)
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
        vectors = ChunkedVectors(group, {"labels": "int32", "a": "float64", "b": "float64"}, n)
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
    model_path = _finish_model(group, out, model, sample, ref_cols, params, store, (lo, hi), used) if out else None
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
        backend=engine.label, seconds=time.perf_counter() - t0, model_path=model_path,
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


#: |w| beyond any trained weight, near float32's largest value (3.4e38): a run holding such values diverged or is damaged.
HUGE_VALUE = 1e30


def _check_huge_values(trajectories: np.ndarray, usable: np.ndarray, sample: np.ndarray, store: RunStore) -> None:
    """When fewer than 2 sampled weights move because a few hold values near float32's limit (the moving test is
    relative to the largest |w|), say that instead of "nothing moves"."""
    if usable.size >= 2:
        return
    peaks = np.abs(trajectories).max(axis=0, initial=0.0)
    huge = np.flatnonzero(peaks >= HUGE_VALUE)
    if not huge.size:
        return
    named = ", ".join(str(int(sample[j])) for j in huge[:3]) + (", ..." if huge.size > 3 else "")
    raise NotApplicableError(
        f"{store.path.name}: {huge.size} sampled weight(s) (coordinate {named}) hold values up to "
        f"{float(peaks.max()):.1e}, near float32's limit ({float(np.finfo(np.float32).max):.1e}): such values "
        "overflow float32 arithmetic (two of them add up to inf) and swamp every other weight's movement (the "
        "test for movement is relative to the largest |w|), so none counts as moving; the run diverged or is "
        "damaged (analyse a window before those values, or a repaired run)")


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
                  used: np.ndarray) -> str:
    """The model's small arrays and attributes, after the pass wrote its per-weight arrays."""
    group.create_array("references", data=np.asarray(model.references, dtype=np.float64),
                       dimension_names=("mode", "snapshot"))
    group.create_array("steps", data=np.asarray(model.steps, dtype=np.int64), dimension_names=("snapshot",))
    group.create_array("sample_indices", data=np.asarray(sample, dtype=np.int64), dimension_names=("sample",))
    options = {**params.options(), "window": list(window), "store": str(store.path), "snapshots": [int(i) for i in used]}
    write_attrs(group, CMD, {"options": options, "reference_samples": [int(i) for i in ref_cols]})
    return str(out)


def load(path: str | os.PathLike[str]) -> CMDModel:
    """Open a model written by :func:`cmd` (``DIR/cmd.zarr``) into memory; reconstructs without the store.

    Read through the store guard against :data:`traj.store.derived.CMD`: damage or another kind of file
    is one :class:`~traj.errors.DamagedStoreError` / :class:`~traj.errors.ModelFormatError` line."""
    return CMDModel(**read_cmd_model(path))


# ---------------------------------------------------------------------- evaluation with the recipe
def evaluate(result: CMDResult, store: RunStore, recipe: Any, *, max_points: int = 40,
             engine: Engine | None = None, ema: np.ndarray | None = None,
             progress: Progress | None = None) -> CMDEvaluation:
    """The recipe's metrics of the original and the CMD-reconstructed weights per snapshot
    (Turjeman et al. 2022 fig. 5a, 7), at up to ``max_points`` snapshots spread over the window (:func:`eval_picks`).

    ``ema`` (n_β, n_picks, N), the weight EMAs of ``result.params.ema`` at those snapshots as the fit's
    pass computed them, is scored beside them (Turjeman et al. 2022 figs. 19-21). ``progress(done, total)`` counts the
    recipe's evaluations.
    """
    max_points = check_int("eval_points", max_points, low=1)
    engine = engine or Engine()
    used = result.snapshots
    picks = eval_picks(used.size, max_points)
    betas = result.params.ema if ema is not None else ()
    if ema is not None and ema.shape != (len(betas), picks.size, result.n_params):
        raise ParameterError("ema", f"holds EMAs of shape {ema.shape}, not ({len(betas)}, {picks.size}, "
                                    f"{result.n_params})")

    tick = counter(progress, picks.size * (2 + len(betas)))

    def scored(theta: np.ndarray, into: dict[str, list[float]]) -> None:
        for name, value in recipe.evaluate(theta.astype(store.dtype)).items():
            into.setdefault(name, []).append(float(value))
        tick()

    original: dict[str, list[float]] = {}
    rebuilt: dict[str, list[float]] = {}
    smoothed: list[dict[str, list[float]]] = [{} for _ in betas]
    for i, k in enumerate(picks):
        scored(engine.snapshot(store, int(used[k])), original)
        scored(result.model.reconstruct_snapshot(int(k)), rebuilt)
        for j in range(len(betas)):
            scored(ema[j, i], smoothed[j])
    tracks = tuple(EMAScores(beta, {k: np.array(v) for k, v in values.items()}, float(beta ** (used.size - 1)))
                   for beta, values in zip(betas, smoothed, strict=True))
    return CMDEvaluation(used[picks], result.steps[picks], {k: np.array(v) for k, v in original.items()},
                         {k: np.array(v) for k, v in rebuilt.items()}, tracks)


def sweep(store: RunStore | str | os.PathLike[str], modes_list: Sequence[int], *, recipe: Any = None,
          max_points: int = 20, engine: Engine | None = None, **options: Any) -> tuple[SweepRow, ...]:
    """CMD for several M: MSE, relative error and (with a recipe) the best reconstructed
    accuracy or lowest loss over the window, against M (Turjeman et al. 2022 fig. 6)."""
    params = CMDParams.checked(sweep=modes_list, sweep_points=max_points, **options)
    store = store if isinstance(store, RunStore) else RunStore(store)
    return _sweep(store, params, recipe, engine or Engine())


def _sweep(store: RunStore, params: CMDParams, recipe: Any, engine: Engine,
           progress: Progress | None = None) -> tuple[SweepRow, ...]:
    rows = []
    tick = counter(progress, len(params.sweep))  # one M a unit: each is a fit, a stability pass and evaluations
    for m in params.sweep:
        at_m = replace(params, modes=m, threshold=None)
        # the model goes to scratch where a recipe scores it, else only the totals are kept
        with _scratch(recipe is not None) as scratch:
            result, _ = _fit(store, at_m, scratch, engine, None, keep_model=False)
            row = SweepRow(m, result.mse, result.relative_error, result.compression_ratio,
                           stability=_stability(store, at_m, engine, None))
            if recipe is not None:
                ev = evaluate(result, store, recipe, max_points=params.sweep_points, engine=engine)
                best = max if ev.metric == "accuracy" else min
                row = replace(row, metric=ev.metric, best_cmd=float(best(ev.cmd[ev.metric])),
                              best_original=float(best(ev.original[ev.metric])))
        rows.append(row)
        tick()
    return tuple(rows)


# ---------------------------------------------------------------------- stability across sampling seeds
def adjusted_rand_index(table: np.ndarray) -> float:
    """Adjusted Rand index of two partitions from their contingency table (Hubert & Arabie 1985).

    ``table[i, j]`` counts the items in cluster i of one partition and j of the other. 1 for equal
    partitions (also when both are trivial, as scikit-learn's ``adjusted_rand_score``), about 0 by chance.
    """
    table = np.asarray(table, dtype=np.float64)
    n = table.sum()

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1.0)).sum() / 2.0)

    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / (n * (n - 1.0) / 2.0) if n > 1 else 0.0
    maximum = (rows + cols) / 2.0
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def stability(store: RunStore | str | os.PathLike[str], *, seeds: int = STABILITY_SEEDS,
              engine: Engine | None = None, progress: Progress | None = None, **options: Any) -> Stability:
    """CMD with ``seeds`` sampling seeds (``seed``, ``seed`` + 1, ...): the adjusted Rand index between
    every two of their partitions over the weights that move, and each one's relative error.

    One read of every seed's candidate samples and ONE pass over the store (the labels of all seeds are
    compared block by block through contingency tables, so no N-long labeling is kept).
    ``options`` are :func:`cmd`'s (modes, threshold, samples, window, subsample, seed, distance, ...).
    """
    params = CMDParams.checked(**options)
    store = store if isinstance(store, RunStore) else RunStore(store)
    return _stability(store, params, engine or Engine(), progress, seeds=check_int("seeds", seeds, low=2, high=100))


def _stability(store: RunStore, params: CMDParams, engine: Engine, progress: Progress | None, *,
               seeds: int = STABILITY_SEEDS) -> Stability:
    import itertools

    _, _, rows, keep = _window_rows(store, params, engine)
    seed_list = tuple(params.seed + i for i in range(seeds))
    kernels, n_modes = [], []
    clustered: dict[bytes, np.ndarray] = {}  # seeds that drew the same sample (every weight of a small model)
    for drawn in sample_moving(store, params.samples, seeds=seed_list, rows=rows, keep=keep, engine=engine):
        key = drawn.indices.tobytes()
        if key not in clustered:
            corr_all, moving = abs_corr(drawn.trajectories)
            _check_huge_values(drawn.trajectories, np.flatnonzero(moving), drawn.indices, store)
            clustered[key] = _cluster_sample(corr_all, np.flatnonzero(moving), params)[2]
        ref_cols = clustered[key]
        kernels.append(assign_kernel(drawn.trajectories[:, ref_cols].T, keep))
        n_modes.append(ref_cols.size)
    pairs = list(itertools.combinations(range(seeds), 2))

    def kernel(block: Any, ops: ArrayOps) -> dict[str, Any]:
        parts = [k(block, ops) for k in kernels]
        moving = parts[0]["moving"]
        labels = [p["labels"][moving].astype(np.int64) for p in parts]
        tables = [np.bincount(labels[i] * n_modes[j] + labels[j], minlength=n_modes[i] * n_modes[j])
                  for i, j in pairs]
        return {"tables": tables, "sse": np.array([p["sse"].sum() for p in parts]), "total": parts[0]["total"]}

    tables = [np.zeros(n_modes[i] * n_modes[j], dtype=np.int64) for i, j in pairs]
    sse, total = np.zeros(seeds), 0.0
    for _, part in engine.map_blocks(store, kernel, rows=rows, progress=progress):
        if not np.isfinite(part["total"]):
            raise NonFiniteDataError("the window holds NaN or Inf values")
        for acc, t in zip(tables, part["tables"], strict=True):
            acc += t
        sse += part["sse"]
        total += part["total"]
    ari = np.array([adjusted_rand_index(t.reshape(n_modes[i], n_modes[j])) for t, (i, j) in zip(tables, pairs,
                                                                                                  strict=True)])
    errors = np.sqrt(sse / total) if total > 0 else np.zeros(seeds)
    return Stability(seed_list, ari, errors)


# ---------------------------------------------------------------------- DMD and CMD as models of training
@dataclass(frozen=True)
class ModelComparison:
    """The original run, DMD at several ranks and CMD at several M, scored at the same snapshots
    (Turjeman et al. 2022 figs. 1, 5, 22). ``cmd[i]`` holds the metrics of CMD with ``cmd_modes[i]`` modes,
    ``cmd_motion_errors[i]`` its ‖D − D̂‖F / ‖D − mean‖F, comparable with ``dmd.motion_errors``.
    """

    dmd: Any  # traj.analysis.dmd.DMDEvaluation
    cmd_modes: tuple[int, ...]
    cmd: tuple[Mapping[str, np.ndarray], ...]
    cmd_motion_errors: np.ndarray

    @property
    def metric(self) -> str:
        return self.dmd.metric

    def to_dict(self) -> dict[str, Any]:
        return {"dmd": self.dmd.to_dict(), "cmd_modes": list(self.cmd_modes),
                "cmd": [{k: v.tolist() for k, v in m.items()} for m in self.cmd],
                "cmd_motion_errors": self.cmd_motion_errors.tolist()}


def compare_models(store: RunStore | str | os.PathLike[str], recipe: Any, *, ranks: Sequence[int] = (5, 10, 20),
                   modes: Sequence[int] = (2, 5, 10), window: Window = None, max_points: int = 40,
                   forecast: int = 0, samples: int | None = None, seed: int = 0, engine: Engine | None = None,
                   progress: Progress | None = None) -> ModelComparison:
    """DMD (``traj dmd --evaluate``) and CMD (``traj cmd --evaluate``) of the same window, scored by
    the recipe at the same snapshots (both spread ``max_points`` over the window the same way).
    ``progress(done, total)`` counts each pass's blocks, then each model's evaluations."""
    from .dmd import evaluate_dmd

    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    modes = tuple(check_ints("cmd_modes", modes, low=1, high=MAX_SAMPLES))
    dmd_ev = evaluate_dmd(store, recipe, ranks=ranks, window=window, max_points=max_points, forecast=forecast,
                          engine=engine, progress=progress)
    lo, hi = dmd_ev.window
    curves, errors = [], []
    for m in modes:
        params = CMDParams.checked(modes=m, samples=samples, window=(lo, hi), seed=seed, eval_points=max_points)
        with _scratch(True) as scratch:
            fitted, _ = _fit(store, params, scratch, engine, progress)
            ev = evaluate(fitted, store, recipe, max_points=max_points, engine=engine, progress=progress)
        curves.append(dict(ev.cmd))
        scale = dmd_ev.data_norm / dmd_ev.motion_norm if dmd_ev.motion_norm > 0 else 0.0
        errors.append(fitted.relative_error * scale)
    return ModelComparison(dmd_ev, modes, tuple(curves), np.array(errors))


# ---------------------------------------------------------------------- history length and snapshot spacing
@dataclass(frozen=True)
class HistoryRow:
    """CMD with ``modes`` modes fitted on one setting of a :class:`HistorySweep`."""

    setting: int
    modes: int
    snapshots: int
    relative_error: float
    metric_mean: float | None = None
    metric_last: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "modes": self.modes, "snapshots": self.snapshots,
                "relative_error": self.relative_error, "metric_mean": self.metric_mean,
                "metric_last": self.metric_last}


@dataclass(frozen=True)
class HistorySweep:
    """CMD against the history it is given (Turjeman et al. 2022 figs. 13-14).

    ``kind`` "window": the setting is the first snapshot of the history [a, end]; "subsample": the
    spacing s (every s-th snapshot counted back from the end). Every setting is scored on the same
    snapshots, ``scored`` (those all settings share: the shortest history's, or the rows every spacing
    keeps), so the curves compare: the mean of the metric over them and its value at the last.
    """

    kind: str
    metric: str | None
    scored: np.ndarray
    original_mean: float | None
    original_last: float | None
    rows: tuple[HistoryRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "scored_snapshots": self.scored.tolist(),
                "original_mean": self.original_mean, "original_last": self.original_last,
                "rows": [row.to_dict() for row in self.rows]}


def history_sweep(store: RunStore | str | os.PathLike[str], kind: str, settings: Sequence[int], *, recipe: Any = None,
                  engine: Engine | None = None, **options: Any) -> HistorySweep:
    """CMD fitted on histories of several lengths (``kind="window"``: start snapshots) or spacings
    (``kind="subsample"``), each scored at the snapshots all of them share. ``options`` are :func:`cmd`'s;
    ``sweep`` (a list of M) draws one line per M, else ``modes``."""
    check_choice("kind", kind, ("window", "subsample"))
    params = CMDParams.checked(**options)
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    window = resolve_window(store, params.window, method="CMD")
    settings = tuple(check_ints(f"sweep_{kind}", settings, low=0 if kind == "window" else 1))
    return _history_sweep(store, params, kind, settings, recipe, engine, window)


def _history_sweep(store: RunStore, params: CMDParams, kind: str, settings: Sequence[int], recipe: Any,
                   engine: Engine, window: tuple[int, int], progress: Progress | None = None) -> HistorySweep:
    lo, hi = window
    variants = []
    for value in settings:
        if kind == "window":
            if not lo <= value <= hi - 2:
                raise ParameterError("sweep_window", f"start {value} must lie in the window {lo}..{hi - 2} "
                                                     "(a history of at least 3 snapshots)")
            variants.append(replace(params, window=(value, hi), modes=params.modes or 10, threshold=None))
        else:
            variants.append(replace(params, window=(lo, hi), subsample=value, modes=params.modes or 10,
                                    threshold=None))
    modes_list = params.sweep or (variants[0].modes,)
    used = []
    for variant in variants:
        start, _, _, keep = _window_rows(store, variant, engine)
        used.append(start + keep)
    common = used[0]
    for u in used[1:]:
        common = np.intersect1d(common, u)
    # at most sweep_points of them, the last always included
    scored = common[eval_picks(common.size, params.sweep_points)]
    original = None
    if recipe is not None:
        original = [recipe.evaluate(engine.snapshot(store, int(k)).astype(store.dtype)) for k in scored]
    metric = None if original is None else ("accuracy" if "accuracy" in original[0] else "loss")
    rows = []
    tick = counter(progress, len(variants) * len(modes_list))  # one fit (and its evaluations) a unit
    for value, variant, snaps in zip(settings, variants, used, strict=True):
        for m in modes_list:
            with _scratch(metric is not None) as scratch:
                fitted, _ = _fit(store, replace(variant, modes=m), scratch, engine, None, keep_model=False)
                row = HistoryRow(value, m, int(snaps.size), fitted.relative_error)
                if metric is not None:
                    values = [recipe.evaluate(fitted.model.reconstruct_snapshot(int(np.searchsorted(snaps, k)))
                                              .astype(store.dtype))[metric] for k in scored]
                    row = replace(row, metric_mean=float(np.mean(values)), metric_last=float(values[-1]))
            rows.append(row)
            tick()
    return HistorySweep(
        kind, metric, scored,
        None if original is None else float(np.mean([o[metric] for o in original])),
        None if original is None else float(original[-1][metric]), tuple(rows))
