"""Online CMD (docs/methods.md §2.6; the online variant of Brokman et al. 2024).

A warm-up of the first W snapshots picks the M reference weights as ``traj cmd`` does (a sample of
moving weights clustered by complete linkage, each cluster's most correlated member). From then on
every snapshot updates running sums per weight — Σd, Σd² and Σd·ρ_k for every mode k, with
d = w − w(0) and ρ_k = r_k − r_k(0) — and the references' own Σρ_k, Σρ_k²; any time, each weight's
mode (the reference it correlates with most) and its least-squares a, b follow from the sums in
closed form. Nothing of a snapshot is kept after it is added (the warm-up's snapshots wait in a scratch
file until the references are known); the sums take (M + 3)·N float64.

Two users of the same sums (:class:`WeightSums`, :class:`ReferenceSums`):

* :func:`fit_cmd_online` (``traj cmd --online``): over a recorded store, in one pass. The sums of a weight
  depend on its own values and the references only, so the pass takes the weights a block of columns at a
  time (the engine's blocks, each chunk read once) and adds each block's snapshots in time order; nothing
  of size N is held. Returns a :class:`~traj.analysis.cmd.CMDResult` (an :class:`OnlineCMDResult`), written
  and drawn as ``traj cmd``'s.
* :class:`LiveCMD` (``traj.live.LiveOptions(cmd_modes=M)``): on the Recorder's writer thread, snapshot by
  snapshot; at the end of training it writes the model (``cmd.zarr``) and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..checks import check_choice, check_int, check_seed
from ..engine import Engine
from ..engine.backends import ArrayOps
from ..errors import DataLimitError, NonFiniteDataError, NotApplicableError, ParameterError, TrajError
from ..progress import Progress
from ..store import RunStore
from ..store.derived import CMD, write_attrs
from ..store.dtypes import decode
from .cmd import (
    DISTANCES,
    FIT_SAMPLES,
    MAX_SAMPLES,
    CMDModel,
    CMDParams,
    CMDResult,
    CMDScoring,
    abs_corr,
    cluster_modes,
    default_samples,
    mode_bands,
    moving_columns,
    references_of,
    sample_weights,
)
from .cmd.params import OVERSAMPLE
from .vectors import ChunkedVectors
from .windows import resolve_window

__all__ = ["DEFAULT_WARMUP", "LiveCMD", "OnlineCMDResult", "OnlineCMDSummary", "ReferenceSums", "WarmupPick",
           "WeightSums", "cmd_online", "fit_cmd_online", "pick_references"]

#: Snapshots of the warm-up that picks the references, by default.
DEFAULT_WARMUP = 20
#: Weights per piece when sums are solved or a live snapshot is added (float64 temporaries stay in cache).
PIECE = 1 << 16
#: Weights per piece when a batch of live snapshots is added: the (M, piece) products of a piece stay in cache.
ADD_PIECE = 1 << 12
#: Snapshots the live path adds to the sums at once: the (M, N) products are read and written once a batch
#: (memory traffic, not arithmetic, bounds the update), for BATCH stored snapshots held meanwhile.
BATCH = 8
#: The live sums are held in memory: (M + 3)·N float64 at most this many bytes.
MAX_LIVE_BYTES = 4 << 30


# ---------------------------------------------------------------------- the warm-up
@dataclass(frozen=True)
class WarmupPick:
    """What the warm-up chose: the sample (indices, sorted), its |corr| over the warm-up, the moving
    samples' cluster labels and dendrogram order, and the references' columns in the sample."""

    sample: np.ndarray
    corr: np.ndarray
    usable: np.ndarray
    labels: np.ndarray
    order: np.ndarray
    reference_columns: np.ndarray
    frozen: int

    @property
    def reference_indices(self) -> np.ndarray:
        """The reference weights (coordinates of θ), one per mode."""
        return self.sample[self.reference_columns]


def candidates_of(n_params: int, layout: Any, samples: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The candidates the warm-up reads (OVERSAMPLE·K of ``traj cmd``'s design, docs/methods.md §2.1) and K."""
    k = default_samples(n_params) if samples is None else min(samples, n_params)
    # sample_weights reads only n_params and the layout's entries: the live path has no store yet
    where = SimpleNamespace(n_params=n_params, layout=layout)
    return sample_weights(where, min(n_params, OVERSAMPLE * k, MAX_SAMPLES), seed=seed), k  # type: ignore[arg-type]


def pick_references(trajectories: np.ndarray, candidates: np.ndarray, samples: int, *, modes: int | None,
                    threshold: float | None = None, distance: str = "rows", seed: int = 0) -> WarmupPick:
    """The references of the warm-up (docs/methods.md §2.6): the candidates that move, K of them drawn
    uniformly (seeded) where more move, clustered and each cluster's reference picked as ``traj cmd`` does.

    Parameters
    ----------
    trajectories : ndarray of shape (W, C)
        The candidates over the warm-up's W snapshots.
    candidates : ndarray of int, shape (C,), sorted
    samples : int
        K.
    """
    moves = moving_columns(trajectories)
    frozen = int((~moves).sum())
    positions = np.flatnonzero(moves)
    if positions.size > samples:
        positions = np.sort(np.random.default_rng([seed, 1]).choice(positions, size=samples, replace=False))
    corr, moving = abs_corr(trajectories[:, positions])
    usable = np.flatnonzero(moving)
    if usable.size < 2:
        raise NotApplicableError("fewer than 2 of the sampled weights move in the warm-up: nothing to correlate")
    if modes is not None and modes > usable.size:
        raise DataLimitError("modes", f"{modes} is more than the {usable.size} sampled weights that move in the "
                                      "warm-up; sample more weights or lengthen the warm-up")
    inner = corr[np.ix_(usable, usable)]
    labels, order, _ = cluster_modes(inner, modes=modes, threshold=threshold, distance=distance)
    return WarmupPick(candidates[positions], corr, usable, labels, order, usable[references_of(inner, labels)],
                      frozen)


# ---------------------------------------------------------------------- the running sums
class ReferenceSums:
    """The references' running sums over the snapshots seen: r(0), Σρ, Σρ² (ρ = r − r(0)) and their
    values per snapshot (M numbers a snapshot: the model reconstructs from them)."""

    def __init__(self, n_modes: int) -> None:
        self.first: np.ndarray | None = None
        self.sum = np.zeros(n_modes)
        self.sumsq = np.zeros(n_modes)
        self.count = 0
        self._values: list[np.ndarray] = []

    def update(self, references: np.ndarray) -> np.ndarray:
        """Add t snapshots of the references, shape (t, M); returns their ρ, shape (t, M)."""
        references = np.asarray(references, dtype=np.float64)
        if self.first is None:
            self.first = references[0].copy()
        rho = references - self.first
        self.sum += rho.sum(axis=0)
        self.sumsq += (rho * rho).sum(axis=0)
        self.count += references.shape[0]
        self._values.append(references)
        return rho

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(r(0), Σρ, Σρ², T) now: what :meth:`WeightSums.solve` needs."""
        assert self.first is not None
        return self.first, self.sum.copy(), self.sumsq.copy(), self.count

    @property
    def values(self) -> np.ndarray:
        """The references at every snapshot seen, shape (M, T)."""
        return np.concatenate(self._values).T


class WeightSums:
    """Running sums of ``width`` weights against M references (docs/methods.md §2.6): w(0), Σd, Σd² and
    Σd·ρ_k (d = w − w(0)), float64. ``update`` adds snapshots, ``solve`` gives labels, a and b now."""

    def __init__(self, width: int, n_modes: int) -> None:
        self.first: np.ndarray | None = None  # w(0): set by the first update, or piece by piece by set_first
        self.s1 = np.zeros(width)
        self.s2 = np.zeros(width)
        self.products = np.zeros((n_modes, width))

    def update(self, values: np.ndarray, rho: np.ndarray, start: int = 0) -> None:
        """Add t snapshots of weights ``start:start + width'``, ``values`` (t, width'), with the references'
        ρ of the same snapshots, (t, M)."""
        stop = start + values.shape[1]
        if self.first is None:
            self.set_first(values[0], start)
        d = values - self.first[start:stop]
        self.s1[start:stop] += d.sum(axis=0)
        self.s2[start:stop] += np.einsum("tw,tw->w", d, d)
        self.products[:, start:stop] += rho.T @ d

    def set_first(self, values: np.ndarray, start: int = 0) -> None:
        """w(0) of weights ``start:start + len(values)`` (a first snapshot that comes in pieces: every piece
        is set before the snapshot is added)."""
        if self.first is None:
            if start != 0 or values.size != self.s1.size:
                raise ValueError("w(0) is set for every weight first, or from the first update of them all")
            self.first = np.array(values, dtype=np.float64)
            return
        self.first[start : start + values.size] = values

    def solve(self, references: tuple[np.ndarray, np.ndarray, np.ndarray, int], start: int = 0,
              stop: int | None = None) -> dict[str, Any]:
        """Labels, a, b, residual sums of squares, |corr| and whether each moves, of weights ``start:stop``,
        and Σw² ("total"), from the sums (the closed forms of docs/methods.md §2.4 on the sums of §2.6)."""
        assert self.first is not None
        r_first, r_sum, r_sumsq, t = references
        stop = self.s1.size if stop is None else stop
        first, s1, s2 = self.first[start:stop], self.s1[start:stop], self.s2[start:stop]
        refs_norm2 = np.maximum(r_sumsq - r_sum * r_sum / t, 0.0)  # ‖r̄‖²
        refs_mean = r_first + r_sum / t
        refs_scale = 1.0 / np.sqrt(np.where(refs_norm2 > 0, refs_norm2, np.inf))
        refs_norm2 = np.where(refs_norm2 > 0, refs_norm2, 1.0)
        dots = self.products[:, start:stop] - np.outer(r_sum, s1) / t  # ⟨w̄, r̄_k⟩ = Σdρ_k − Σd·Σρ_k/T
        mean = first + s1 / t
        norm2 = np.maximum(s2 - s1 * s1 / t, 0.0)
        # the movement test of the offline pass (docs/methods.md §2.4)
        moving = norm2 > (1e-12 * np.maximum(1.0, np.abs(mean))) ** 2 * t
        scaled = np.abs(dots) * refs_scale[:, None]
        labels = scaled.argmax(axis=0)
        labels[~moving] = 0
        best = dots[labels, np.arange(labels.size)]
        a = best / refs_norm2[labels]
        a[~moving] = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            abscorr = np.where(moving, np.abs(best) * refs_scale[labels] / np.sqrt(norm2), 0.0)
        return {"labels": labels.astype(np.int32), "moving": moving, "a": a, "b": mean - a * refs_mean[labels],
                "sse": np.where(moving, np.maximum(norm2 - a * best, 0.0), 0.0), "abscorr": abscorr,
                "total": float(s2.sum() + (first * (2.0 * s1 + t * first)).sum())}  # Σw² = Σ(d + w(0))²


# ---------------------------------------------------------------------- what the model totals
@dataclass
class _Totals:
    """Per-mode and per-layer counts and the errors, added block by block (nothing of size N)."""

    sizes: np.ndarray
    corr_sums: np.ndarray
    per_layer: dict[str, np.ndarray]
    sse: float = 0.0
    total: float = 0.0
    relabelled: int = 0

    @classmethod
    def empty(cls, n_modes: int, layout: Any) -> _Totals:
        return cls(np.zeros(n_modes, dtype=np.int64), np.zeros(n_modes),
                   {e.name: np.zeros(n_modes, dtype=np.int64) for e in layout.entries})

    def add(self, start: int, part: dict[str, Any], layout: Any) -> None:
        if not np.isfinite(part["total"]):
            raise NonFiniteDataError("the snapshots hold NaN or Inf values")
        n_modes = self.sizes.size
        labels = part["labels"]
        self.sse += float(part["sse"].sum())
        self.total += part["total"]
        self.sizes += np.bincount(labels, minlength=n_modes)
        self.corr_sums += np.bincount(labels, weights=part["abscorr"], minlength=n_modes)
        stop = start + labels.size
        for e in layout.entries:
            lo, hi = max(e.offset, start), min(e.stop, stop)
            if hi > lo:
                self.per_layer[e.name] += np.bincount(labels[lo - start : hi - start], minlength=n_modes)

    def relative_error(self) -> float:
        return float(np.sqrt(self.sse / self.total)) if self.total > 0 else 0.0

    def mean_corr(self) -> np.ndarray:
        return np.where(self.sizes > 0, self.corr_sums / np.maximum(self.sizes, 1), 0.0)


def _write_model(out: str | os.PathLike[str], n: int, parts: Iterator[tuple[int, dict[str, Any]]],
                 references: np.ndarray, steps: np.ndarray, sample: np.ndarray, reference_columns: np.ndarray,
                 options: dict[str, Any]) -> None:
    """``cmd.zarr`` in ``traj cmd``'s format (readable by :func:`traj.analysis.cmd.load`), its per-weight
    arrays written from ``parts`` ((start, solved part) in any order) chunk by chunk."""
    import zarr

    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    vectors = ChunkedVectors(group, {"labels": "int32", "a": "float64", "b": "float64"}, n)
    for start, part in parts:
        for name in ("labels", "a", "b"):
            vectors.write(name, start, part[name])
    vectors.close()
    group.create_array("references", data=np.asarray(references, dtype=np.float64),
                       dimension_names=("mode", "snapshot"))
    group.create_array("steps", data=np.asarray(steps, dtype=np.int64), dimension_names=("snapshot",))
    group.create_array("sample_indices", data=np.asarray(sample, dtype=np.int64), dimension_names=("sample",))
    write_attrs(group, CMD, {"options": options, "reference_samples": [int(i) for i in reference_columns]})


# ---------------------------------------------------------------------- over a recorded store
@dataclass(frozen=True)
class OnlineCMDResult(CMDResult):
    """A :class:`~traj.analysis.cmd.CMDResult` fitted online (``traj cmd --online``): the references were
    picked on the warm-up ``warmup`` (snapshots a..b), the sums ran over the whole window;
    ``relabelled`` counts the weights whose mode at the window's end differs from their mode at the
    warm-up's end. ``sample_corr``, ``sample_order`` and the sample's labels are the warm-up's."""

    warmup: tuple[int, int] = (0, 0)
    relabelled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "online": {"warmup": list(self.warmup), "relabelled": self.relabelled}}


def check_online(params: CMDParams, scoring: CMDScoring | None = None) -> None:
    """The options of ``traj cmd`` that have no online form, refused before any work."""
    scoring = scoring or CMDScoring()
    for name, value in (("subsample", params.subsample != 1), ("drop_nonfinite", params.drop_nonfinite),
                        ("sweep", bool(scoring.sweep)), ("ema", bool(scoring.ema)),
                        ("sweep_window", bool(scoring.sweep_window)),
                        ("sweep_subsample", bool(scoring.sweep_subsample))):
        if value:
            raise ParameterError(name, "has no online form: online CMD adds every snapshot of the window once, "
                                       "in order (leave it out, or fit offline)")


def cmd_online(store: RunStore | str | os.PathLike[str], *, modes: int | None = 10, threshold: float | None = None,
               samples: int | None = None, window: Any = None, seed: int = 0, distance: str = "rows",
               warmup: int = DEFAULT_WARMUP, out: str | os.PathLike[str] | None = None,
               engine: Engine | None = None, progress: Progress | None = None) -> OnlineCMDResult:
    """Online CMD of a store's window (docs/methods.md §2.6): :func:`fit_cmd_online` of checked options.

    The options are :func:`traj.analysis.cmd.cmd`'s; ``warmup`` is W, the snapshots at the window's start
    whose sample picks the references.
    """
    params = CMDParams.checked(modes=modes, threshold=threshold, samples=samples, window=window, seed=seed,
                               distance=distance)
    return fit_cmd_online(store, params, warmup=warmup, out=out, engine=engine, progress=progress)


def fit_cmd_online(store: RunStore | str | os.PathLike[str], params: CMDParams, *, warmup: int = DEFAULT_WARMUP,
                   out: str | os.PathLike[str] | None = None, keep_model: bool = True,
                   engine: Engine | None = None, progress: Progress | None = None) -> OnlineCMDResult:
    """Online CMD over a recorded store in one pass (docs/methods.md §2.6).

    The warm-up (the window's first ``warmup`` snapshots) picks the references from OVERSAMPLE·K candidates
    read over it (:func:`pick_references`); the pass then adds every snapshot of the window, in order, to
    the running sums of each block of weights and solves them at the warm-up's end (to count relabelled
    weights) and at the window's end. With the same references this is the offline pass of
    :func:`traj.analysis.cmd.cmd` to rounding (warm-up = window: the same model). ``out`` and ``keep_model``
    as in :func:`traj.analysis.cmd.fit_cmd`; ``subsample`` and ``drop_nonfinite`` are refused
    (:class:`~traj.errors.ParameterError`). The fit only: :func:`traj.analysis.cmd.run_cmd` with ``warmup``
    scores it beside.
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    check_online(params)
    lo, hi = resolve_window(store, params.window, method="CMD")
    length = hi - lo + 1
    warm = check_int("warmup", warmup, low=3)
    if warm > length:
        raise DataLimitError("warmup", f"{warm} snapshots is more than the window's {length}")
    n = store.n_params
    rows = slice(lo, hi + 1)
    candidates, k = candidates_of(n, store.layout, params.samples, params.seed)
    # as traj cmd, the candidates are read over the window in one pass (the report draws the sample over
    # the window); the pick sees only the warm-up's rows
    read = engine.collect(store, candidates, rows=rows)
    if not np.isfinite(read).all():
        bad = int(np.flatnonzero(~np.isfinite(read).all(axis=1))[0])
        raise NonFiniteDataError(f"snapshot {lo + bad} holds NaN or Inf")
    pick = pick_references(read[:warm], candidates, k, modes=params.modes, threshold=params.threshold,
                           distance=params.distance, seed=params.seed)
    sample, ref_idx = pick.sample, pick.reference_indices
    sample_traj = read[:, np.searchsorted(candidates, sample)]
    n_modes = ref_idx.size
    ref_sums = ReferenceSums(n_modes)
    rho = ref_sums.update(sample_traj[:, pick.reference_columns])
    at_warmup, final = _prefix_state(ref_sums, warm), ref_sums.state()
    step = max(1, PIECE // length)

    def kernel(block: Any, ops: ArrayOps) -> dict[str, Any]:
        block = ops.to_numpy(block)
        parts = []
        for a in range(0, block.shape[1], step):  # pieces whose temporaries stay in cache
            piece = block[:, a : a + step]
            sums = WeightSums(piece.shape[1], n_modes)
            sums.update(piece[:warm], rho[:warm])  # the snapshots in order: the warm-up's, then the rest
            early = sums.solve(at_warmup)["labels"]
            if warm < length:
                sums.update(piece[warm:], rho[warm:])
            part = sums.solve(final)
            part["relabelled"] = int(((early != part["labels"]) & part["moving"]).sum())
            parts.append(part)
        joined = {key: np.concatenate([p[key] for p in parts])
                  for key in ("labels", "moving", "a", "b", "sse", "abscorr")}
        return {**joined, "total": float(sum(p["total"] for p in parts)),
                "relabelled": sum(p["relabelled"] for p in parts)}

    totals = _Totals.empty(n_modes, store.layout)
    held = {"labels": np.empty(n, dtype=np.int32), "a": np.empty(n), "b": np.empty(n)} \
        if out is None and keep_model else None
    sample_labels = np.empty(sample.size, dtype=np.int64)
    sample_a, sample_b = np.empty(sample.size), np.empty(sample.size)

    def solved() -> Iterator[tuple[int, dict[str, Any]]]:
        for cols, part in engine.map_blocks(store, kernel, rows=rows, progress=progress):
            totals.add(cols.start, part, store.layout)
            totals.relabelled += part["relabelled"]
            s_lo, s_hi = np.searchsorted(sample, [cols.start, cols.stop])
            inside = sample[s_lo:s_hi] - cols.start
            sample_labels[s_lo:s_hi] = part["labels"][inside]
            sample_a[s_lo:s_hi], sample_b[s_lo:s_hi] = part["a"][inside], part["b"][inside]
            if held is not None:
                for name in ("labels", "a", "b"):
                    held[name][cols] = part[name]
            yield cols.start, part

    references = ref_sums.values
    steps = store.steps[lo : hi + 1]
    used = np.arange(lo, hi + 1)
    if out is not None:
        import zarr

        options = {**params.options(), "window": [lo, hi], "store": str(store.path),
                   "snapshots": [int(i) for i in used], "online": {"warmup": [lo, lo + warm - 1]}}
        _write_model(out, n, solved(), references, steps, sample, pick.reference_columns, options)
        group = zarr.open_group(str(out), mode="r", zarr_format=3)
        model = CMDModel(group["labels"], group["a"], group["b"], references, steps)
    else:
        for _ in solved():
            pass
        arrays = (held["labels"], held["a"], held["b"]) if held is not None else (None, None, None)
        model = CMDModel(*arrays, references, steps)
    sample_clusters = np.full(sample.size, -1, dtype=np.int64)
    sample_clusters[pick.usable] = pick.labels
    result = OnlineCMDResult(
        store=str(store.path), window=(lo, hi), params=params, snapshots=used, steps=steps, n_params=n, model=model,
        sample_indices=sample, sample_labels=sample_clusters, sample_order=pick.usable[pick.order],
        sample_corr=pick.corr, sample_trajectories=sample_traj,
        sample_reconstruction=(references[sample_labels] * sample_a[:, None] + sample_b[:, None]).T,
        fit_samples=np.sort(np.random.default_rng(0).choice(sample.size, size=min(FIT_SAMPLES, sample.size),
                                                             replace=False)),
        bands=mode_bands(sample_traj, sample, sample_clusters, ref_idx), reference_indices=ref_idx,
        mode_sizes=totals.sizes, mode_mean_corr=totals.mean_corr(), modes_per_layer=totals.per_layer,
        mse=totals.sse / (n * length), relative_error=totals.relative_error(), backend=engine.label,
        seconds=time.perf_counter() - t0,
        constant_samples=pick.frozen + int(sample.size - pick.usable.size), warmup=(lo, lo + warm - 1),
        relabelled=totals.relabelled,
    )
    return result


def _prefix_state(sums: ReferenceSums, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The references' sums over their first ``rows`` snapshots (the warm-up's end)."""
    values = sums.values.T[:rows]
    rho = values - values[0]
    return values[0], rho.sum(axis=0), (rho * rho).sum(axis=0), rows


# ---------------------------------------------------------------------- during training
@dataclass(frozen=True)
class OnlineCMDSummary:
    """The live online CMD at the end of training (``summary.json`` beside its ``cmd.zarr``).

    ``warmup_steps`` are the training steps of the warm-up's first and last snapshots; ``relabelled``
    counts the weights whose mode at the end differs from their mode at the warm-up's end.
    """

    model_path: str
    n_params: int
    snapshots: int
    steps: tuple[int, int]
    warmup_steps: tuple[int, int]
    reference_indices: np.ndarray
    mode_sizes: np.ndarray
    mode_mean_corr: np.ndarray
    mse: float
    relative_error: float
    relabelled: int
    seconds: float

    @property
    def modes(self) -> int:
        return int(self.reference_indices.size)

    def to_dict(self) -> dict[str, Any]:
        return {"online": True, "model": self.model_path, "n_params": self.n_params, "modes": self.modes,
                "snapshots": self.snapshots, "steps": list(self.steps), "warmup_steps": list(self.warmup_steps),
                "reference_indices": self.reference_indices.tolist(), "mode_sizes": self.mode_sizes.tolist(),
                "mode_mean_abs_corr": self.mode_mean_corr.tolist(), "reconstruction_mse": self.mse,
                "relative_error": self.relative_error, "relabelled": self.relabelled, "seconds": self.seconds}


def live_output(store_path: str | os.PathLike[str]) -> Path:
    """Where a run's live CMD goes by default: ``RUN-cmd/`` beside the store ``RUN.zarr``."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.name.removesuffix('.zarr')}-cmd")


class LiveCMD:
    """Online CMD kept while a run trains (docs/methods.md §2.6), one snapshot at a time.

    The first ``warmup`` snapshots wait in a scratch file (and their candidates' values in memory) until
    they are all in; then the references are picked (:func:`pick_references`) and the warm-up's snapshots
    are added to the sums, and every later snapshot is added as it comes: O((M + 3)·N) per snapshot.
    :meth:`close` writes ``cmd.zarr`` and ``summary.json`` into ``out`` (an output directory, replaced
    only when traj wrote it). A run that ends inside its warm-up is fitted on what it has (3 snapshots
    at least). Why a live CMD gave up (too few moving weights, ...) is in :attr:`note`.
    """

    def __init__(self, n_params: int, layout: Any, dtype: str, *, modes: int, out: str | os.PathLike[str],
                 warmup: int = DEFAULT_WARMUP, samples: int | None = None, seed: int = 0, distance: str = "rows",
                 store: str | os.PathLike[str] | None = None) -> None:
        from ..atomic import check_output_dir

        self.n = int(n_params)
        self.dtype = dtype
        self.modes = check_int("cmd_modes", modes, low=1, high=MAX_SAMPLES)
        self.warmup = check_int("cmd_warmup", warmup, low=3)
        self.seed = check_seed("seed", seed)
        self.distance = check_choice("distance", distance, DISTANCES)
        samples = None if samples is None else check_int("cmd_samples", samples, low=2, high=MAX_SAMPLES)
        need = (self.modes + 3) * self.n * 8
        if need > MAX_LIVE_BYTES:
            raise DataLimitError("cmd_modes", f"online CMD of {self.n} weights in {self.modes} modes keeps "
                                              f"{need / 2**30:.1f} GiB of running sums (limit "
                                              f"{MAX_LIVE_BYTES / 2**30:.0f} GiB): fewer modes, or `traj cmd "
                                              "--online` on the recorded store")
        self.inputs = [] if store is None else [Path(store)]
        self.out = check_output_dir(out, inputs=self.inputs, option="cmd_out", kind="live-cmd")
        self.layout = layout
        self.candidates, self.samples = candidates_of(self.n, layout, samples, self.seed)
        self.steps: list[int] = []
        self.note: str | None = None
        self.summary: OnlineCMDSummary | None = None
        self.seconds = 0.0
        self._warm_values: list[np.ndarray] = []
        # the warm-up's W snapshots (W·N stored values) wait beside the store, on the disk that holds the run
        self._scratch = tempfile.TemporaryFile(prefix=".traj-live-cmd-",  # noqa: SIM115 - closed by close()
                                               dir=None if store is None else Path(store).parent)
        self._pick: WarmupPick | None = None
        self._refs: ReferenceSums | None = None
        self._sums: WeightSums | None = None
        self._at_warmup: dict[str, np.ndarray] | None = None
        self._batch: list[np.ndarray] = []

    def observe(self, values: np.ndarray, step: int) -> None:
        """Add a snapshot (as stored: ``dtype``'s representation) taken at training step ``step``."""
        if self.note is not None or self.summary is not None:
            return
        t0 = time.perf_counter()
        self.steps.append(int(step))
        values = np.asarray(values).ravel()
        if self._pick is None:
            self._warm_values.append(np.asarray(decode(values[self.candidates], self.dtype), dtype=np.float64))
            self._scratch.write(np.ascontiguousarray(values).data)
            if len(self._warm_values) == self.warmup:
                self._start()
        else:
            self._batch.append(np.array(values, copy=True))  # the Recorder reuses its buffer
            if len(self._batch) == BATCH:
                self._flush()
        self.seconds += time.perf_counter() - t0

    def _flush(self) -> None:
        """Add the snapshots waiting in the batch to the sums."""
        if self._batch:
            self._add(np.stack(self._batch))
            self._batch = []

    def _start(self) -> None:
        """Pick the references on the warm-up and add its snapshots (read back from the scratch file)."""
        warm = np.stack(self._warm_values)
        try:
            self._pick = pick_references(warm, self.candidates, self.samples, modes=self.modes,
                                         distance=self.distance, seed=self.seed)
        except TrajError as exc:
            self.note = f"online CMD stopped after the warm-up: {exc}"
            self._scratch.close()
            return
        self._refs = ReferenceSums(self._pick.reference_indices.size)
        self._sums = WeightSums(self.n, self._pick.reference_indices.size)
        self._warm_values = []
        self._scratch.seek(0)
        for lo in range(0, warm.shape[0], BATCH):
            rows = min(BATCH, warm.shape[0] - lo)
            self._add(np.fromfile(self._scratch, dtype=self._stored_dtype(), count=rows * self.n)
                      .reshape(rows, self.n))
        self._scratch.close()
        # the labels at the warm-up's end, to count the weights that change mode after it
        self._at_warmup = {"labels": np.concatenate([self._sums.solve(self._refs.state(), a, b)["labels"]
                                                     for a, b in _pieces(self.n)])}

    def _stored_dtype(self) -> np.dtype:
        from ..store.dtypes import storage_dtype

        return storage_dtype(self.dtype)

    def _add(self, values: np.ndarray) -> None:
        """Add t snapshots, ``values`` (t, N) as stored, in time order, a piece of weights at a time."""
        assert self._pick is not None and self._refs is not None and self._sums is not None
        refs = np.asarray(decode(values[:, self._pick.reference_indices], self.dtype), dtype=np.float64)
        rho = self._refs.update(refs)
        if self._sums.first is None:  # w(0): the first snapshot, decoded a piece at a time
            self._sums.first = np.empty(self.n)
            for a, b in _pieces(self.n):
                self._sums.set_first(np.asarray(decode(values[0, a:b], self.dtype), dtype=np.float64), a)
        for a, b in _pieces(self.n, ADD_PIECE):
            self._sums.update(np.asarray(decode(values[:, a:b], self.dtype), dtype=np.float64), rho, a)

    def close(self) -> OnlineCMDSummary | None:
        """Write the model (``out/cmd.zarr``, ``out/summary.json``) and return its summary; None (and
        :attr:`note` says why) when there was nothing to fit or the model could not be written. Idempotent.

        Never raises for the run's data or the output (NaN weights, a full disk, an output directory that
        changed meanwhile): the Recorder calls it before closing the store, and an error there would
        discard an ``--overwrite`` run; :attr:`note` says what happened instead.
        """
        if self.summary is not None or self.note is not None:
            return self.summary
        try:
            return self._close()
        except (TrajError, OSError) as exc:
            self.summary = None
            self.note = f"online CMD not written: {exc}"
            self._scratch.close()
            return None

    def _close(self) -> OnlineCMDSummary | None:
        t0 = time.perf_counter()
        if self._pick is None:
            if len(self._warm_values) < 3:
                self.note = f"online CMD needs 3 snapshots; the run recorded {len(self._warm_values)}"
                self._scratch.close()
                return None
            self._start()
            if self.note is not None:
                return None
        assert self._pick is not None and self._refs is not None and self._sums is not None
        self._flush()
        from ..atomic import staged_output

        state = self._refs.state()
        totals = _Totals.empty(state[1].size, self.layout)
        early = self._at_warmup["labels"] if self._at_warmup is not None else None

        def parts() -> Iterator[tuple[int, dict[str, Any]]]:
            for a, b in _pieces(self.n):
                part = self._sums.solve(state, a, b)
                totals.add(a, part, self.layout)
                if early is not None:
                    totals.relabelled += int(((early[a:b] != part["labels"]) & part["moving"]).sum())
                yield a, part

        steps = np.array(self.steps, dtype=np.int64)
        warm_end = min(self.warmup, steps.size) - 1
        options = {"modes": self.modes, "threshold": None, "samples": self.samples, "subsample": 1,
                   "seed": self.seed, "distance": self.distance, "ema": [], "window": [0, steps.size - 1],
                   "store": str(self.inputs[0]) if self.inputs else None,
                   "snapshots": list(range(steps.size)), "online": {"warmup": [0, warm_end], "live": True}}
        with staged_output(self.out, inputs=self.inputs, kind="live-cmd") as staging:
            _write_model(staging / "cmd.zarr", self.n, parts(), self._refs.values, steps, self._pick.sample,
                         self._pick.reference_columns, options)
            self.summary = OnlineCMDSummary(
                model_path=str(self.out / "cmd.zarr"), n_params=self.n, snapshots=int(steps.size),
                steps=(int(steps[0]), int(steps[-1])), warmup_steps=(int(steps[0]), int(steps[warm_end])),
                reference_indices=self._pick.reference_indices, mode_sizes=totals.sizes,
                mode_mean_corr=totals.mean_corr(), mse=totals.sse / (self.n * steps.size),
                relative_error=totals.relative_error(), relabelled=totals.relabelled,
                seconds=self.seconds + time.perf_counter() - t0)
            (staging / "summary.json").write_text(json.dumps(self.summary.to_dict(), indent=2) + "\n")
        self._sums = None  # the sums go with the model written
        return self.summary


def _pieces(n: int, size: int = PIECE) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)
