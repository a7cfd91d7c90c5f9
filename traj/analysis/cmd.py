"""``traj cmd``: Correlation Mode Decomposition (methods.md §2, seed 001).

Weights fall into M ≪ N modes; within mode m, wᵢ(k) ≈ aᵢ·w_{r,m}(k) + bᵢ. A sample of K
weights is clustered by complete linkage on 1 − |corr|; each cluster's reference is the
member most correlated with the rest; then ONE streaming pass over all N weights assigns
each weight to the reference it correlates with most and fits [aᵢ bᵢ] in closed form
(O(N·M·T), memory bounded by the block size). The fitted model (labels, a, b, references)
is written to ``cmd.zarr`` and reconstructs any snapshot or block without the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_float, check_int, check_ints, check_seed
from ..engine import Engine
from ..engine.backends import ArrayOps, Kernel
from ..errors import ParameterError, TrajError
from ..store import RunStore
from .dmd import parse_window

__all__ = ["CMDModel", "CMDResult", "check_options", "cmd", "load", "sample_weights", "cluster_modes"]

ProgressCallback = Callable[[int, int], None]
MODEL_FORMAT = "traj-cmd"
#: K, the weights sampled for the clustering: their K x K correlation and its linkage live in memory.
MAX_SAMPLES = 10_000


def check_options(*, modes: int | None = 10, threshold: float | None = None, samples: int = 1000,
                  subsample: int = 1, seed: int = 0, max_points: int = 40, sweep: Sequence[int] = (1,)
                  ) -> dict[str, Any]:
    """CMD's options, checked and normalised: :func:`cmd`, :func:`evaluate` and :func:`sweep` call it
    on their own arguments, and a caller running all three can call it once before the first pass."""
    if threshold is not None:
        threshold, modes = check_float("threshold", threshold, low=0, high=1), None
    elif modes is None:
        raise ParameterError("modes", "must be given when threshold is not")
    else:
        modes = check_int("modes", modes, low=1, high=MAX_SAMPLES)
    return {
        "modes": modes,
        "threshold": threshold,
        "samples": check_int("samples", samples, low=2, high=MAX_SAMPLES),
        "subsample": check_int("subsample", subsample, low=1),
        "seed": check_seed("seed", seed),
        "max_points": check_int("max_points", max_points, low=1),
        "sweep": check_ints("sweep", sweep, low=1, high=MAX_SAMPLES),
    }


# ---------------------------------------------------------------------- sampling and clustering
def sample_weights(store: RunStore, samples: int, *, seed: int = 0) -> np.ndarray:
    """K coordinates: K/2 spread evenly over the layers, K/2 uniform over all of θ (methods.md §2.1).

    With K/2 <= layers, K/2 layers are drawn and one weight taken from each. Sorted, unique.
    """
    n = store.n_params
    samples = check_options(samples=samples, seed=seed)["samples"]
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


def _abs_corr(trajectories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|corr| between columns over time (K×K) and which columns move at all."""
    centered = trajectories - trajectories.mean(axis=0)
    norms = np.linalg.norm(centered, axis=0)
    moving = norms > 1e-12 * max(1.0, float(np.abs(trajectories).max(initial=0.0)))
    unit = np.zeros_like(centered)
    unit[:, moving] = centered[:, moving] / norms[moving]
    corr = np.abs(unit.T @ unit)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, 0.0, 1.0), moving


def cluster_modes(corr: np.ndarray, *, modes: int | None = None, threshold: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complete-linkage clusters of 1 − |corr| cut to ``modes`` clusters or at ``threshold``.

    Returns labels (0..M-1, ordered by first appearance in the dendrogram), the dendrogram
    leaf order, and the linkage matrix.
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = squareform(1.0 - corr, checks=False)
    tree = linkage(distance, method="complete")
    if modes is not None:
        raw = fcluster(tree, t=modes, criterion="maxclust")
    else:
        raw = fcluster(tree, t=threshold, criterion="distance")
    order = leaves_list(tree)
    relabel: dict[int, int] = {}
    for leaf in order:
        relabel.setdefault(int(raw[leaf]), len(relabel))
    return np.array([relabel[int(c)] for c in raw], dtype=np.int64), order, tree


def _references(corr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster, the member j maximising Σ_{i∈C} |corr(wᵢ, wⱼ)| (methods.md §2.3)."""
    refs = []
    for m in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == m)
        scores = corr[np.ix_(members, members)].sum(axis=0)
        refs.append(int(members[np.argmax(scores)]))
    return np.array(refs, dtype=np.int64)


# ---------------------------------------------------------------------- the streaming pass
def _assign_kernel(refs_centered: np.ndarray, refs_norm2: np.ndarray, refs_mean: np.ndarray, keep: np.ndarray
                   ) -> Kernel:
    """Per block of weights: label, a, b, residual sum of squares and |corr| to the reference.

    The least-squares fit of w ≈ a·r + b has a = ⟨w̄, r̄⟩/‖r̄‖² and b = mean(w) − a·mean(r), and
    its residual is ‖w̄‖² − ⟨w̄, r̄⟩²/‖r̄‖², so nothing is reconstructed to measure the error.
    Written once against the backend's array operations (numpy, torch on a device, dask workers).
    """

    def kernel(block: Any, ops: ArrayOps) -> dict[str, np.ndarray]:
        b = ops.take(block, keep, 0)
        mean = ops.mean(b, 0)
        centered = b - mean
        dots = ops.asarray(refs_centered).T @ centered
        parts = {"mean": ops.to_numpy(mean), "norm2": ops.to_numpy(ops.sum(centered * centered, 0)),
                 "dots": ops.to_numpy(dots), "total": float(ops.sum(b * b))}
        return _finish(parts, refs_norm2, refs_mean)

    return kernel


def _finish(parts: dict[str, Any], refs_norm2: np.ndarray, refs_mean: np.ndarray) -> dict[str, np.ndarray]:
    mean, norm2, dots = parts["mean"], parts["norm2"], parts["dots"]
    moving = norm2 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(moving, dots / np.sqrt(np.outer(refs_norm2, norm2)), 0.0)
    labels = np.argmax(np.abs(corr), axis=0)
    cols = np.arange(labels.size)
    best = dots[labels, cols]
    a = np.where(moving, best / refs_norm2[labels], 0.0)
    b = mean - a * refs_mean[labels]
    sse = np.where(moving, np.clip(norm2 - best * best / refs_norm2[labels], 0.0, None), 0.0)
    return {"labels": labels.astype(np.int32), "a": a, "b": b, "sse": sse,
            "abscorr": np.abs(corr[labels, cols]), "total": parts["total"]}


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class CMDModel:
    """A fitted CMD model: reconstructs θ̂_k = a ⊙ w_{r,label}(k) + b for any snapshot or block."""

    labels: Any
    a: Any
    b: Any
    references: np.ndarray
    steps: np.ndarray

    @property
    def n_params(self) -> int:
        return int(self.labels.shape[0])

    def reconstruct_block(self, columns: slice, snapshots: slice | None = None) -> np.ndarray:
        """θ̂ of coordinates ``columns`` at model snapshots ``snapshots`` (default all): (T', width)."""
        labels = np.asarray(self.labels[columns])
        a = np.asarray(self.a[columns])
        b = np.asarray(self.b[columns])
        refs = self.references[:, snapshots or slice(None)]  # (M, T')
        return (refs[labels] * a[:, None] + b[:, None]).T

    def reconstruct_snapshot(self, k: int) -> np.ndarray:
        """θ̂ at model snapshot k (an index into ``steps``)."""
        return self.reconstruct_block(slice(0, self.n_params), slice(k, k + 1))[0]


@dataclass(frozen=True)
class CMDResult:
    store: str
    window: tuple[int, int]
    subsample: int
    snapshots: np.ndarray
    steps: np.ndarray
    n_params: int
    model: CMDModel
    sample_indices: np.ndarray
    sample_labels: np.ndarray
    sample_order: np.ndarray
    sample_corr: np.ndarray
    sample_trajectories: np.ndarray
    reference_indices: np.ndarray
    mode_sizes: np.ndarray
    mode_mean_corr: np.ndarray
    modes_per_layer: dict[str, list[int]]
    mse: float
    relative_error: float
    options: dict[str, Any]
    backend: str
    seconds: float
    model_path: str | None = None
    evaluation: list[dict[str, float]] | None = None
    sweep: list[dict[str, Any]] | None = None
    constant_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modes(self) -> int:
        return int(self.model.references.shape[0])

    @property
    def compression_ratio(self) -> float:
        t = self.steps.size
        return self.n_params * t / (self.modes * t + 2 * self.n_params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "modes": self.modes,
            "mode_sizes": self.mode_sizes.tolist(),
            "mode_mean_abs_corr": self.mode_mean_corr.tolist(),
            "modes_per_layer": self.modes_per_layer,
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
            "options": self.options,
            "evaluation": self.evaluation,
            "sweep": self.sweep,
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
    samples: int = 1000,
    window: str | Sequence[int] | None = None,
    subsample: int = 1,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    drop_nonfinite: bool = False,
    engine: Engine | None = None,
    progress: ProgressCallback | None = None,
) -> CMDResult:
    """Correlation Mode Decomposition of a store's trajectory (methods.md §2).

    Parameters
    ----------
    store : RunStore or path
    modes : int, optional
        Number of modes M (ignored when ``threshold`` is given).
    threshold : float, optional
        Cut the dendrogram at distance t = 1 − |corr| instead.
    samples : int
        K, weights sampled for the clustering.
    window : "a:b", optional
        Snapshots used (both included).
    subsample : int
        Use every s-th snapshot of the window (seed 001, §8.1).
    drop_nonfinite : bool
        Leave snapshots holding NaN/Inf out of the time axis (one extra pass finds them).
    out : path, optional
        Write the model (labels, a, b, references) to ``out`` (a Zarr group, e.g. DIR/cmd.zarr)
        block by block; without it they are kept in memory.
    """
    t0 = time.perf_counter()
    o = check_options(modes=modes, threshold=threshold, samples=samples, subsample=subsample, seed=seed)
    modes, threshold, samples, subsample, seed = (o[k] for k in ("modes", "threshold", "samples", "subsample", "seed"))
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    lo, hi = parse_window(window, store.n_snapshots)
    rows = slice(lo, hi + 1)
    keep = np.arange(0, hi - lo + 1, subsample)  # rows of the window used, relative to lo
    if drop_nonfinite:
        bad = store.nonfinite_rows(rows=rows) - lo
        keep = keep[~np.isin(keep, bad)]
    used = lo + keep
    if used.size < 3:
        raise TrajError(f"{used.size} snapshot(s) left after subsampling by {subsample}; CMD needs at least 3")

    sample = sample_weights(store, samples, seed=seed)
    trajectories = engine.collect(store, sample, rows=rows)[keep]
    if not np.isfinite(trajectories).all():
        bad = int(np.flatnonzero(~np.isfinite(trajectories).all(axis=1))[0])
        raise TrajError(f"snapshot {int(used[bad])} holds NaN or Inf")
    corr_all, moving = _abs_corr(trajectories)
    usable = np.flatnonzero(moving)
    if usable.size < 2:
        raise TrajError("fewer than 2 of the sampled weights move in this window: nothing to correlate")
    if modes is not None and modes > usable.size:
        raise ParameterError("modes", f"{modes} is more than the {usable.size} moving sampled weights; sample more weights")
    corr = corr_all[np.ix_(usable, usable)]
    labels_s, order, _ = cluster_modes(corr, modes=modes, threshold=threshold)
    refs_local = _references(corr, labels_s)
    ref_cols = usable[refs_local]
    references = trajectories[:, ref_cols].T  # (M, T')
    n_modes = references.shape[0]

    refs_centered = (references - references.mean(axis=1, keepdims=True)).T  # (T', M)
    refs_norm2 = (refs_centered**2).sum(axis=0)
    refs_mean = references.mean(axis=1)
    kernel = _assign_kernel(refs_centered, refs_norm2, refs_mean, keep)

    n = store.n_params
    sink = _ModelSink(n, out, chunk=max(4096, store.chunks[1]))
    sse_total = 0.0
    norm_total = 0.0
    sizes = np.zeros(n_modes, dtype=np.int64)
    corr_sums = np.zeros(n_modes)
    per_layer = {e.name: np.zeros(n_modes, dtype=np.int64) for e in store.layout.entries}
    starts = np.array([e.offset for e in store.layout.entries])
    for cols, part in engine.map_blocks(store, kernel, rows=rows, progress=progress):
        if not np.isfinite(part["total"]):
            raise TrajError("the window holds NaN or Inf values")
        sink.write(cols, part["labels"], part["a"], part["b"])
        sse_total += float(part["sse"].sum())
        norm_total += part["total"]
        sizes += np.bincount(part["labels"], minlength=n_modes)
        corr_sums += np.bincount(part["labels"], weights=part["abscorr"], minlength=n_modes)
        first = int(np.searchsorted(starts, cols.start, side="right") - 1)
        for e in store.layout.entries[first:]:
            a_, b_ = max(e.offset, cols.start), min(e.stop, cols.stop)
            if a_ >= cols.stop:
                break
            if b_ > a_:
                per_layer[e.name] += np.bincount(part["labels"][a_ - cols.start : b_ - cols.start], minlength=n_modes)
    model_path = sink.finish(references, store.steps[used], sample, ref_cols, {
        "modes": modes, "threshold": threshold, "samples": samples, "window": [lo, hi], "subsample": subsample,
        "seed": seed, "store": str(store.path), "snapshots": [int(i) for i in used]})
    t_used = used.size
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_corr = np.where(sizes > 0, corr_sums / np.maximum(sizes, 1), 0.0)
    sample_labels = np.full(sample.size, -1, dtype=np.int64)
    sample_labels[usable] = labels_s
    return CMDResult(
        store=str(store.path),
        window=(lo, hi),
        subsample=subsample,
        snapshots=used,
        steps=store.steps[used],
        n_params=n,
        model=CMDModel(sink.labels, sink.a, sink.b, references, store.steps[used]),
        sample_indices=sample,
        sample_labels=sample_labels,
        sample_order=usable[order],
        sample_corr=corr_all,
        sample_trajectories=trajectories,
        reference_indices=sample[ref_cols],
        mode_sizes=sizes,
        mode_mean_corr=mean_corr,
        modes_per_layer={k: v.tolist() for k, v in per_layer.items()},
        mse=sse_total / (n * t_used),
        relative_error=float(np.sqrt(sse_total / norm_total)) if norm_total > 0 else 0.0,
        options={"modes": modes, "threshold": threshold, "samples": samples, "subsample": subsample, "seed": seed},
        backend=engine.label,
        seconds=time.perf_counter() - t0,
        model_path=model_path,
        constant_samples=int(sample.size - usable.size),
    )


class _ModelSink:
    """Where labels, a and b go during the pass: arrays in memory, or a Zarr group on disk."""

    def __init__(self, n: int, out: str | os.PathLike[str] | None, chunk: int = 1 << 18) -> None:
        self.out = None if out is None else Path(out)
        if self.out is None:
            self.labels = np.empty(n, dtype=np.int32)
            self.a = np.empty(n)
            self.b = np.empty(n)
            return
        import zarr

        self.group = zarr.open_group(str(self.out), mode="w", zarr_format=3)
        chunk = min(n, chunk)  # aligned with the store's chunks: each block write fills whole chunks
        self.labels = self.group.create_array("labels", shape=(n,), chunks=(chunk,), dtype="int32", dimension_names=("param",))
        self.a = self.group.create_array("a", shape=(n,), chunks=(chunk,), dtype="float64", dimension_names=("param",))
        self.b = self.group.create_array("b", shape=(n,), chunks=(chunk,), dtype="float64", dimension_names=("param",))

    def write(self, cols: slice, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        self.labels[cols] = labels
        self.a[cols] = a
        self.b[cols] = b

    def finish(self, references: np.ndarray, steps: np.ndarray, sample: np.ndarray, ref_cols: np.ndarray,
               options: dict[str, Any]) -> str | None:
        if self.out is None:
            return None
        self.group.create_array("references", data=np.asarray(references, dtype=np.float64),
                                dimension_names=("mode", "snapshot"))
        self.group.create_array("steps", data=np.asarray(steps, dtype=np.int64), dimension_names=("snapshot",))
        self.group.create_array("sample_indices", data=np.asarray(sample, dtype=np.int64), dimension_names=("sample",))
        self.group.attrs.update({"traj": {"format": MODEL_FORMAT, "version": 1}, "options": options,
                                 "reference_samples": [int(i) for i in ref_cols]})
        return str(self.out)


def load(path: str | os.PathLike[str]) -> CMDModel:
    """Open a model written by :func:`cmd` (``DIR/cmd.zarr``); reconstructs without the store."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise TrajError(f"{path}: not a CMD model (no zarr.json)")
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    marker = group.attrs.get("traj")
    if not isinstance(marker, dict) or marker.get("format") != MODEL_FORMAT:
        raise TrajError(f"{path}: a Zarr group, but not a traj CMD model")
    for name in ("labels", "a", "b", "references", "steps"):
        if name not in group:
            raise TrajError(f"{path}: the CMD model has no '{name}' array")
    return CMDModel(group["labels"], group["a"], group["b"], np.asarray(group["references"][:]),
                    np.asarray(group["steps"][:]))


cmd.load = load  # type: ignore[attr-defined]  # traj.cmd.load(path), as the issue names it


# ---------------------------------------------------------------------- evaluation with the recipe
def _take(array: Any, index: np.ndarray) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array[index]
    return np.asarray(array.get_orthogonal_selection((np.asarray(index),)))


def sample_reconstruction(result: CMDResult) -> np.ndarray:
    """CMD reconstruction of the sampled weights, shape (T', K) (for plots)."""
    idx = result.sample_indices
    labels, a, b = (_take(x, idx) for x in (result.model.labels, result.model.a, result.model.b))
    return (result.model.references[labels] * a[:, None] + b[:, None]).T


def evaluate(result: CMDResult, store: RunStore, recipe: Any, *, max_points: int = 40) -> list[dict[str, float]]:
    """The recipe's metrics of the original and the CMD-reconstructed weights per snapshot
    (seed 001 fig. 5a, 7), at up to ``max_points`` snapshots spread over the window."""
    max_points = check_options(max_points=max_points)["max_points"]
    used = result.snapshots
    # spread over the window, the last snapshot always included (max_points=1 scores the end of the run)
    picks = np.unique(np.linspace(used.size - 1, 0, min(max_points, used.size)).round().astype(int))
    rows = []
    for k in picks:
        original = recipe.evaluate(store.snapshot(int(used[k])))
        rebuilt = recipe.evaluate(result.model.reconstruct_snapshot(int(k)).astype(store.dtype))
        row = {"snapshot": int(used[k]), "step": int(result.steps[k])}
        row.update({f"original_{name}": float(v) for name, v in original.items()})
        row.update({f"cmd_{name}": float(v) for name, v in rebuilt.items()})
        rows.append(row)
    return rows


def sweep(store: RunStore, modes_list: Sequence[int], *, recipe: Any = None, max_points: int = 20,
          **options: Any) -> list[dict[str, Any]]:
    """CMD for several M: MSE, relative error and (with a recipe) the best reconstructed
    accuracy or lowest loss over the window, against M (seed 001 fig. 6)."""
    modes_list = check_options(sweep=modes_list, max_points=max_points)["sweep"]
    rows = []
    for m in modes_list:
        result = cmd(store, modes=m, **options)
        row: dict[str, Any] = {"modes": int(m), "mse": result.mse, "relative_error": result.relative_error,
                               "compression_ratio": result.compression_ratio}
        if recipe is not None:
            ev = evaluate(result, store, recipe, max_points=max_points)
            metric = "accuracy" if "cmd_accuracy" in ev[0] else "loss"
            best = max if metric == "accuracy" else min
            row[f"best_cmd_{metric}"] = best(r[f"cmd_{metric}"] for r in ev)
            row[f"best_original_{metric}"] = best(r[f"original_{metric}"] for r in ev)
        rows.append(row)
    return rows
