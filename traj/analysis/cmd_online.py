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
* :class:`~traj.analysis.cmd_live.LiveCMD` (``traj.live.LiveOptions(cmd_modes=M)``): on the Recorder's writer thread, snapshot by
  snapshot; at the end of training it writes the model (``cmd.zarr``) and ``summary.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..checks import check_int
from ..engine import Engine
from ..engine.backends import ArrayOps
from ..errors import DataLimitError, NonFiniteDataError, NotApplicableError, ParameterError
from ..progress import Progress
from ..store import RunStore
from ..store.derived import CMD, DerivedFile
from .cmd import (
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
from .cmd.model import PER_WEIGHT, write_small_arrays
from .cmd.params import OVERSAMPLE
from .vectors import ChunkedVectors
from .windows import resolve_window

__all__ = ["DEFAULT_WARMUP", "OnlineCMDResult", "ReferenceSums", "Totals", "WarmupPick", "WeightSums", "candidates_of",
           "check_online", "cmd_online", "fit_cmd_online", "pick_references", "pieces", "write_model"]

#: Snapshots of the warm-up that picks the references, by default.
DEFAULT_WARMUP = 20
#: Weights per piece when sums are solved or a live snapshot is added (float64 temporaries stay in cache).
PIECE = 1 << 16


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
class Totals:
    """Per-mode and per-layer counts and the errors, added block by block (nothing of size N)."""

    sizes: np.ndarray
    corr_sums: np.ndarray
    per_layer: dict[str, np.ndarray]
    sse: float = 0.0
    total: float = 0.0
    relabelled: int = 0

    @classmethod
    def empty(cls, n_modes: int, layout: Any) -> Totals:
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


def write_model(out: str | os.PathLike[str], n: int, parts: Iterator[tuple[int, dict[str, Any]]],
                 references: np.ndarray, steps: np.ndarray, sample: np.ndarray, reference_columns: np.ndarray,
                 options: dict[str, Any]) -> None:
    """``cmd.zarr`` in ``traj cmd``'s format (readable by :func:`traj.analysis.cmd.load`), its per-weight
    arrays written from ``parts`` ((start, solved part) in any order) chunk by chunk."""
    import zarr

    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    vectors = ChunkedVectors(group, PER_WEIGHT, n)
    for start, part in parts:
        for name in ("labels", "a", "b"):
            vectors.write(name, start, part[name])
    vectors.close()
    write_small_arrays(group, references, steps, sample, reference_columns, options)


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
    pick, sample_traj = _warmup_pick(store, params, engine, rows, warm)
    sample, ref_idx = pick.sample, pick.reference_indices
    n_modes = ref_idx.size
    ref_sums = ReferenceSums(n_modes)
    rho = ref_sums.update(sample_traj[:, pick.reference_columns])
    at_warmup, final = _prefix_state(ref_sums, warm), ref_sums.state()
    kernel = _block_kernel(rho, warm, length, at_warmup, final, n_modes)

    totals = Totals.empty(n_modes, store.layout)
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
        options = {**params.options(), "window": [lo, hi], "store": str(store.path),
                   "snapshots": [int(i) for i in used], "online": {"warmup": [lo, lo + warm - 1]}}
        write_model(out, n, solved(), references, steps, sample, pick.reference_columns, options)
        written = DerivedFile(out, CMD)  # read back as every cmd.zarr is, through the store guard
        model = CMDModel(written.array("labels"), written.array("a"), written.array("b"), references, steps)
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


def _warmup_pick(store: RunStore, params: CMDParams, engine: Engine, rows: slice,
                 warm: int) -> tuple[WarmupPick, np.ndarray]:
    """The references picked on the warm-up, and the sample's trajectories over the window."""
    candidates, k = candidates_of(store.n_params, store.layout, params.samples, params.seed)
    # as traj cmd, the candidates are read over the window in one pass (the report draws the sample over
    # the window); the pick sees only the warm-up's rows
    read = engine.collect(store, candidates, rows=rows)
    if not np.isfinite(read).all():
        bad = int(np.flatnonzero(~np.isfinite(read).all(axis=1))[0])
        raise NonFiniteDataError(f"snapshot {rows.start + bad} holds NaN or Inf")
    pick = pick_references(read[:warm], candidates, k, modes=params.modes, threshold=params.threshold,
                           distance=params.distance, seed=params.seed)
    return pick, read[:, np.searchsorted(candidates, pick.sample)]


def _block_kernel(rho: np.ndarray, warm: int, length: int, at_warmup: Any, final: Any, n_modes: int) -> Any:
    """The pass's kernel: a block's snapshots added to its weights' sums in order, solved at the warm-up's
    end (to count relabelled weights) and at the window's end."""
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

    return kernel


def _prefix_state(sums: ReferenceSums, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The references' sums over their first ``rows`` snapshots (the warm-up's end)."""
    values = sums.values.T[:rows]
    rho = values - values[0]
    return values[0], rho.sum(axis=0), (rho * rho).sum(axis=0), rows


def pieces(n: int, size: int = PIECE) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)
