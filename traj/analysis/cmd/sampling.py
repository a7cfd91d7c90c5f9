"""CMD's sample of moving weights, their clustering into modes, and the kernel of the one pass over every weight
(docs/methods.md §2.1-§2.3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...checks import check_int, check_seed
from ...engine import Engine
from ...engine.backends import ArrayOps, Kernel
from ...errors import (
    NonFiniteDataError,
    NotApplicableError,
)
from ...store import RunStore
from .params import ALL_SAMPLES, DEFAULT_SAMPLES, MAX_SAMPLES, OVERSAMPLE, PIECE_VALUES


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
