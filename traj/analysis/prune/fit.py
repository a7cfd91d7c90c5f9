"""The fit of ``traj prune``: :func:`fit_prune` (score, mask, evaluate with the recipe it is given) and its
keyword form :func:`prune`."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...engine import Engine
from ...errors import NotApplicableError
from ...progress import Progress, counter
from ...store import Layout, RunStore
from ..evaluator import Trainer
from ..scratch import ScratchArrays
from ..windows import Window, parse_window
from .masking import _mask_name, _shared_counts, _write_lsp_masks, _write_score_masks, prunable_columns
from .params import DEFAULT_COMPRESSIONS, DEFAULT_RANK, METHODS, PruneParams
from .result import EpochOverlap, KGPMode, MetricStats, PruneResult
from .scores import epoch_rows, score_window


def prune(
    store: RunStore | str | os.PathLike[str],
    *,
    epoch: int | None = None,
    window: Window = None,
    methods: Sequence[str] = METHODS,
    compressions: Sequence[float] = DEFAULT_COMPRESSIONS,
    scope: str = "global",
    refine_epochs: int = 1,
    seeds: int = 3,
    evaluate: bool = True,
    recipe: Trainer | None = None,
    epochs: Sequence[int] = (),
    rank: int | str | None = DEFAULT_RANK,
    kgp_fraction: float = 0.85,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    """Koopman and baseline pruning of one epoch of a recorded run (docs/methods.md §3).

    Parameters
    ----------
    epoch : int, optional
        The epoch whose iteration-level snapshots are decomposed (default the last complete one);
        ``window`` ("a:b", snapshot indices) instead of an epoch.
    methods : subset of ("kmp", "kgp", "gmp", "jgp", "ggp", "lsp")
    compressions : compressions c >= 1; ⌈N_prunable/c⌉ weights are kept.
    scope : "global" or "layer"
    refine_epochs, seeds : with a recipe, accuracy after pruning and after this many epochs of
        training with the mask held fixed, over ``seeds`` refinement seeds (LSP: mask seeds too).
    recipe : the recipe that scores and refines the pruned weights (``traj.recipes.recipe_from_store(store)``
        gives the store's): without it nothing is evaluated and the gradient methods (JGP, GGP) are unavailable.
    epochs : also compute masks at these epochs and report, per compression, the overlap
        matrix of the first method's masks across them and KMP-GMP overlap per epoch.
    rank : "all" (default), "auto" or an integer
        The epoch's DMD rank. "all" is Redman et al. 2022's: exact DMD at the full rank the data resolve (every
        direction above the precision floor, :func:`~traj.engine.truncation.truncate`); "auto" the
        Gavish–Donoho threshold, which keeps fewer modes and so gives other KMP/KGP masks.
    """
    params = PruneParams(epoch=epoch, window=window, methods=methods, compressions=compressions,  # type: ignore[arg-type]
                         scope=scope, refine_epochs=refine_epochs, seeds=seeds,  # type: ignore[arg-type]
                         evaluate=evaluate, epochs=epochs, rank=rank, kgp_fraction=kgp_fraction)  # type: ignore[arg-type]
    return fit_prune(store, params, recipe=recipe, engine=engine, progress=progress)


def fit_prune(store: RunStore | str | os.PathLike[str], params: PruneParams, *, recipe: Trainer | None = None,
              engine: Engine | None = None, progress: Progress | None = None,
              scratch: str | os.PathLike[str] | None = None) -> PruneResult:
    """Fit checked :class:`PruneParams`: score the epoch, mask every compression, evaluate with ``recipe`` (an
    :class:`~traj.analysis.evaluator.Evaluator` with ``refine`` and ``gradient``: a recipe; the caller passes it,
    the library never picks one: ``traj prune`` passes the store's or ``--recipe``'s).

    Scores and masks are written block by block to a scratch directory made in ``scratch`` (default the
    system's temporary directory), which the result owns; memory does not grow with N.
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    for e in params.epochs:
        epoch_rows(store, e, parameter="epochs")  # every epoch compared must exist before the first pass
    prunable = prunable_columns(store)
    epoch, win = _window(store, params)
    arrays = ScratchArrays(store.n_params, dir=scratch)
    try:
        main = score_window(store, win, params.methods, arrays, epoch=epoch, engine=engine, recipe=recipe,
                            rank=params.rank, kgp_fraction=params.kgp_fraction, progress=progress)
        compressions = np.array(params.compressions)
        counts = {m: _write_score_masks(arrays, m, prunable, compressions, params.scope)
                  for m in params.methods if m != "lsp" and m in main.scores}
        if "lsp" in params.methods:
            gmp = counts["gmp"] if "gmp" in counts else _write_score_masks(arrays, "gmp", prunable, compressions,
                                                                           params.scope)
            _write_lsp_masks(arrays, prunable, gmp, params.seeds)
            counts["lsp"] = gmp
        available = tuple(m for m in params.methods if m in counts)
        n_prunable = sum(s.stop - s.start for s in prunable)
        shared = [_shared_counts([(arrays, _mask_name(m, i)) for m in available], prunable)
                  for i in range(len(compressions))]
        op = main.operator
        result = PruneResult(
            store=str(store.path), epoch=epoch, window=win, steps=(int(store.steps[win[0]]), int(store.steps[win[1]])),
            scope=params.scope, methods=available, compressions=compressions, eigenvalues=op.eigenvalues,
            classes=tuple(op.classes()), lambda1=main.lambda1, lambda1_index=main.lambda1_index,
            kgp_modes=tuple(KGPMode(j, complex(op.eigenvalues[j]), float(main.mode_norms[j])) for j in main.kgp_modes),
            n_prunable=n_prunable, score_names=main.scores,
            kept={m: np.array([shared[i][x, x] for i in range(len(compressions))], dtype=np.int64)
                  for x, m in enumerate(available)},
            overlap={(a, b): np.array([shared[i][x, x + 1 + y] / math.ceil(n_prunable / c)
                                       for i, c in enumerate(compressions)])
                     for x, a in enumerate(available) for y, b in enumerate(available[x + 1 :])},
            unavailable=main.unavailable, refine_epochs=params.refine_epochs, seeds=params.seeds, seconds=0.0,
            arrays=arrays,
        )
        if params.evaluate and recipe is not None:
            result = _evaluate(result, recipe, store.layout, store.dtype, progress)
        if params.epochs:
            result = _replace(result, epoch_overlap=_across_epochs(store, params, available[0], prunable, engine, recipe,
                                                                   scratch))
    except BaseException:  # a failed fit leaves no scratch behind (it lives beside the output)
        arrays.close()
        raise
    return _replace(result, seconds=time.perf_counter() - t0)


def _replace(result: PruneResult, **changes: Any) -> PruneResult:
    from dataclasses import replace

    return replace(result, **changes)


def _window(store: RunStore, params: PruneParams) -> tuple[int | None, tuple[int, int]]:
    """The epoch decomposed (None for a window) and its snapshots: the given window or epoch, else the last
    complete epoch (a run stopped mid-epoch leaves a last epoch with fewer snapshots than the others: it is skipped)."""
    if params.window is not None:
        return None, parse_window(params.window, store.n_snapshots)
    epoch = params.epoch
    if epoch is None:
        known = store.epochs[store.epochs >= 0]
        if not known.size:
            raise NotApplicableError(f"{store.path}: the store records no epochs; give a window of snapshots instead")
        epochs, counts = np.unique(known, return_counts=True)
        epoch = int(epochs[-1])
        if len(epochs) > 1 and counts[-1] < np.median(counts[:-1]) - 1:  # - 1: the first epoch also holds θ₀
            epoch = int(epochs[-2])
    return epoch, epoch_rows(store, epoch)


def _pruned(result: PruneResult, mask: np.ndarray | None, dtype: Any) -> np.ndarray:
    """θ with the weights ``mask`` drops set to zero, in the store's dtype, built piece by piece
    (:func:`~traj.analysis.masks.pruned_theta`'s arithmetic); no mask: θ in the store's dtype."""
    arrays = result.arrays
    out = np.empty(arrays.n, dtype=dtype)
    for lo, hi in arrays.pieces():
        theta = arrays.read("theta", lo, hi)
        out[lo:hi] = (theta * mask[lo:hi]).astype(dtype) if mask is not None else theta.astype(dtype)
    return out


def _evaluate(result: PruneResult, recipe: Trainer, layout: Layout, dtype: np.dtype,
              progress: Progress | None = None) -> PruneResult:
    """Validation metric after pruning and after ``refine_epochs`` of training with each mask held fixed;
    ``progress`` counts the masks scored (each: an evaluation, and a refinement when asked)."""
    tick = counter(progress, 1 + len(result.methods) * len(result.compressions) * result.seeds)
    base = recipe.evaluate(_pruned(result, None, dtype))
    tick()
    metric = "accuracy" if "accuracy" in base else "loss"
    accuracy: dict[str, MetricStats] = {}
    refined: dict[str, MetricStats] = {}
    for m in result.methods:
        after = np.zeros((len(result.compressions), result.seeds))
        tuned = np.zeros_like(after)
        for i in range(len(result.compressions)):
            for s in range(result.seeds):
                # LSP draws a mask per seed; the other methods' mask is the same for every seed
                lsp = m == "lsp"
                if not (lsp or s == 0 or result.refine_epochs):
                    after[i, s] = after[i, 0]
                    tick()
                    continue
                mask = result.arrays.read(result.mask_name(m, i, s))
                pruned = _pruned(result, mask, dtype)
                after[i, s] = recipe.evaluate(pruned)[metric] if (lsp or s == 0) else after[i, 0]
                if result.refine_epochs:
                    tensor_masks = {e.name: mask[e.columns].reshape(e.shape).astype(np.float32)
                                    for e in layout.prunable_entries}
                    tuned[i, s] = recipe.evaluate(recipe.refine(pruned, result.refine_epochs, mask=tensor_masks,
                                                                seed=s))[metric]
                tick()
        accuracy[m] = MetricStats(after.mean(axis=1), after.std(axis=1))
        if result.refine_epochs:
            refined[m] = MetricStats(tuned.mean(axis=1), tuned.std(axis=1))
    return _replace(result, accuracy=accuracy, accuracy_refined=refined if result.refine_epochs else None,
                    metric=metric, baseline=base)


def _across_epochs(store: RunStore, params: PruneParams, method: str, prunable: Sequence[slice], engine: Engine,
                   recipe: Trainer | None, scratch: str | os.PathLike[str] | None) -> EpochOverlap:
    """Overlap of one method's masks across epochs, and KMP-GMP overlap per epoch (Redman et al. 2022 figs. 3, 5)."""
    wanted = sorted({method, "kmp", "gmp"} & set(METHODS) - {"lsp"})
    compressions = np.array(params.compressions)
    source = method if method != "lsp" else "gmp"
    per_epoch: list[tuple[ScratchArrays, tuple[str, ...]]] = []
    try:
        for e in params.epochs:
            arrays = ScratchArrays(store.n_params, dir=scratch)
            per_epoch.append((arrays, ()))
            sc = score_window(store, epoch_rows(store, e), wanted, arrays, epoch=e, engine=engine, recipe=recipe,
                              rank=params.rank, kgp_fraction=params.kgp_fraction)
            masked = tuple(m for m in sc.scores if m in (source, "kmp", "gmp"))
            for m in masked:
                _write_score_masks(arrays, m, prunable, compressions, params.scope)
            per_epoch[-1] = (arrays, masked)
        with_source = [a for a, masked in per_epoch if source in masked]
        overlap, kmp_gmp = [], []
        for i, c in enumerate(compressions):
            kept = math.ceil(sum(s.stop - s.start for s in prunable) / float(c))
            shared = _shared_counts([(a, _mask_name(source, i)) for a in with_source], prunable)
            overlap.append(shared / kept)
            kmp_gmp.append([_shared_counts([(a, _mask_name("kmp", i)), (a, _mask_name("gmp", i))], prunable)[0, 1]
                            / kept for a, _ in per_epoch])
    finally:
        for arrays, _ in per_epoch:
            arrays.close()
    return EpochOverlap(source, params.epochs, compressions, np.array(overlap), np.array(kmp_gmp))
