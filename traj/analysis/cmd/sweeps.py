"""CMD against M, against the sampling seed (the adjusted Rand index) and against the history it is given
(Turjeman et al. 2022 figs. 6, 13-14): each its own frozen result, beside the fit's."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ...checks import check_choice, check_int, check_ints
from ...engine import Engine
from ...engine.backends import ArrayOps
from ...errors import (
    NonFiniteDataError,
    ParameterError,
)
from ...progress import Progress, counter
from ...store import RunStore
from ..evaluator import Evaluator
from ..windows import resolve_window
from .evaluate import evaluate
from .fit import _check_huge_values, _cluster_sample, _fit, _scratch, _window_rows, eval_picks
from .params import STABILITY_SEEDS, CMDParams, CMDScoring
from .result import HistoryRow, HistorySweep, Stability, SweepRow
from .sampling import abs_corr, assign_kernel, sample_moving


def sweep(store: RunStore | str | os.PathLike[str], modes_list: Sequence[int], *, recipe: Evaluator | None = None,
          max_points: int = 20, engine: Engine | None = None, progress: Progress | None = None,
          **options: Any) -> tuple[SweepRow, ...]:
    """CMD for several M: MSE, relative error and (with an evaluator, ``recipe``) the best reconstructed
    accuracy or lowest loss over the window, against M (Turjeman et al. 2022 fig. 6). ``options`` are
    :class:`CMDParams`'s."""
    scoring = CMDScoring(sweep=tuple(modes_list), sweep_points=max_points)
    params = CMDParams.checked(**options)
    store = store if isinstance(store, RunStore) else RunStore(store)
    return _sweep(store, params, scoring.sweep, scoring.sweep_points, recipe, engine or Engine(), progress)


def _sweep(store: RunStore, params: CMDParams, modes_list: Sequence[int], points: int, evaluator: Evaluator | None,
           engine: Engine, progress: Progress | None = None) -> tuple[SweepRow, ...]:
    rows = []
    tick = counter(progress, len(modes_list))  # one M a unit: each is a fit, a stability pass and evaluations
    for m in modes_list:
        at_m = replace(params, modes=m, threshold=None)
        # the model goes to scratch where an evaluator scores it, else only the totals are kept
        with _scratch(evaluator is not None) as scratch:
            result, _ = _fit(store, at_m, scratch, engine, None, keep_model=False)
            row = SweepRow(m, result.mse, result.relative_error, result.compression_ratio,
                           stability=_stability(store, at_m, engine, None))
            if evaluator is not None:
                ev = evaluate(result, store, evaluator, max_points=points, engine=engine)
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


def history_sweep(store: RunStore | str | os.PathLike[str], kind: str, settings: Sequence[int], *,
                  recipe: Evaluator | None = None, engine: Engine | None = None, sweep: Sequence[int] = (),
                  sweep_points: int = 20, **options: Any) -> HistorySweep:
    """CMD fitted on histories of several lengths (``kind="window"``: start snapshots) or spacings
    (``kind="subsample"``), each scored at the snapshots all of them share. ``options`` are :class:`CMDParams`'s;
    ``sweep`` (a list of M) draws one line per M, else ``modes``."""
    check_choice("kind", kind, ("window", "subsample"))
    scoring = CMDScoring(sweep=tuple(sweep), sweep_points=sweep_points)
    params = CMDParams.checked(**options)
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    window = resolve_window(store, params.window, method="CMD")
    settings = tuple(check_ints(f"sweep_{kind}", settings, low=0 if kind == "window" else 1))
    return _history_sweep(store, params, kind, settings, recipe, engine, window, modes_list=scoring.sweep,
                          points=scoring.sweep_points)


def _history_sweep(store: RunStore, params: CMDParams, kind: str, settings: Sequence[int],
                   evaluator: Evaluator | None, engine: Engine, window: tuple[int, int],
                   progress: Progress | None = None, *, modes_list: Sequence[int] = (),
                   points: int = 20) -> HistorySweep:
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
    modes_list = tuple(modes_list) or (variants[0].modes,)
    used = []
    for variant in variants:
        start, _, _, keep = _window_rows(store, variant, engine)
        used.append(start + keep)
    common = used[0]
    for u in used[1:]:
        common = np.intersect1d(common, u)
    # at most sweep_points of them, the last always included
    scored = common[eval_picks(common.size, points)]
    original = None
    if evaluator is not None:
        original = [evaluator.evaluate(engine.snapshot(store, int(k)).astype(store.dtype)) for k in scored]
    metric = None if original is None else ("accuracy" if "accuracy" in original[0] else "loss")
    rows = []
    tick = counter(progress, len(variants) * len(modes_list))  # one fit (and its evaluations) a unit
    for value, variant, snaps in zip(settings, variants, used, strict=True):
        for m in modes_list:
            with _scratch(metric is not None) as scratch:
                fitted, _ = _fit(store, replace(variant, modes=m), scratch, engine, None, keep_model=False)
                row = HistoryRow(value, m, int(snaps.size), fitted.relative_error)
                if metric is not None:
                    values = [evaluator.evaluate(fitted.model.reconstruct_snapshot(int(np.searchsorted(snaps, k)))
                                              .astype(store.dtype))[metric] for k in scored]
                    row = replace(row, metric_mean=float(np.mean(values)), metric_last=float(values[-1]))
            rows.append(row)
            tick()
    return HistorySweep(
        kind, metric, scored,
        None if original is None else float(np.mean([o[metric] for o in original])),
        None if original is None else float(original[-1][metric]), tuple(rows))
