"""``traj prune``: Koopman pruning beside magnitude, gradient and random baselines (methods.md §3, seed 003).

For an epoch, exact DMD of its iteration-level snapshots (§1) gives λ1, the eigenvalue closest
to 1, and the real, positive, decaying modes. Scores (one number per weight):

- KMP  |Re(b1 φ1)ᵢ|                     Koopman magnitude
- KGP  Σ_j |Re(bj φj)ᵢ| over the KGP modes  Koopman gradient: real positive λj < 1 whose
                                        scaled mode ‖bj φj‖ is at least ``kgp_fraction`` of the
                                        largest such mode (seed 003 fig. 4 keeps norms > 0.85)
- GMP  |θᵢ| at the end of the epoch
- JGP  |ḡᵢ|, GGP |ḡᵢ θᵢ|                ḡ: gradient averaged over a batch set (recorded
                                        ``grads`` of the epoch, else the recipe's fixed batches)
- LSP  GMP's per-layer counts, random within each layer (several seeds)

KMP and KGP need the modes only as scores, so they come from ONE second pass (D·C with the
b-scaled columns of C), never materialising the N×r modes. ‖bj φj‖ comes from CᴴGC.

:class:`PruneParams` checks the options once; :func:`fit_prune` scores, masks and evaluates;
the frozen :class:`PruneResult` holds every mask and number by method, indexed like its
``compressions`` array (``to_dict()`` is the JSON view, keyed by compression there).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..checks import MAX_EPOCHS, check_choice, check_float, check_floats, check_int, check_ints
from ..engine import Engine, ReducedOperator
from ..engine.backends import ArrayOps
from ..engine.operator import ModeClass, check_rank
from ..errors import NotApplicableError, ParameterError, WindowTooShortError
from ..progress import Progress
from ..prunable import prunable_columns as prunable_columns_of
from ..store import Layout, RunStore
from .dmd import complex_pairs
from .masks import pruned_theta, read_masks, write_masks
from .windows import Window, check_gram_finite, parse_window

__all__ = ["METHODS", "EpochOverlap", "EpochScores", "KGPMode", "MetricStats", "PruneParams", "PruneResult",
           "compute_scores", "epoch_rows", "fit_prune", "lsp_mask", "mask_from_scores", "mask_overlap", "prune",
           "read_masks", "write_masks"]

PruneMethod = Literal["kmp", "kgp", "gmp", "jgp", "ggp", "lsp"]
Scope = Literal["global", "layer"]
METHODS: tuple[PruneMethod, ...] = ("kmp", "kgp", "gmp", "jgp", "ggp", "lsp")
DEFAULT_COMPRESSIONS = (2, 4, 8, 16, 32, 64)
SCOPES: tuple[Scope, ...] = ("global", "layer")
#: Refinement seeds: each one trains every mask again.
MAX_SEEDS = 1000


# ---------------------------------------------------------------------- masks
def prunable_columns(store: RunStore) -> list[slice]:
    """The columns of the store's prunable tensors (:mod:`traj.prunable` decides which they are)."""
    cols = prunable_columns_of(store.layout)
    if not cols:
        raise NotApplicableError(f"{store.path}: no prunable parameters (weights of linear/conv layers) in this store")
    return cols


def mask_from_scores(scores: np.ndarray, prunable: Sequence[slice], compression: float, *, scope: str = "global"
                     ) -> np.ndarray:
    """Keep the ⌈n/c⌉ highest-scoring prunable weights (globally, or per layer); others always kept.

    Ties are broken by the lower index (a stable sort), so a mask is a function of the scores.
    Returns a boolean mask over all N coordinates (True = kept).
    """
    compression = check_float("compression", compression, low=1)
    scope = check_choice("scope", scope, SCOPES)
    mask = np.ones(scores.shape[0], dtype=bool)
    groups = [list(prunable)] if scope == "global" else [[s] for s in prunable]
    for group in groups:
        index = np.concatenate([np.arange(s.start, s.stop) for s in group])
        keep = math.ceil(index.size / compression)
        order = np.argsort(-scores[index], kind="stable")
        mask[index] = False
        mask[index[order[:keep]]] = True
    return mask


def lsp_mask(reference: np.ndarray, prunable: Sequence[slice], *, seed: int) -> np.ndarray:
    """Layer-shuffle pruning: each layer keeps as many weights as ``reference`` does, chosen at random."""
    rng = np.random.default_rng(seed)
    mask = reference.copy()
    for s in prunable:
        kept = int(reference[s].sum())
        layer = np.zeros(s.stop - s.start, dtype=bool)
        layer[rng.choice(layer.size, size=kept, replace=False)] = True
        mask[s] = layer
    return mask


def mask_overlap(a: np.ndarray, b: np.ndarray, prunable: Sequence[slice], compression: float) -> float:
    """o = Σ mᴬ mᴮ / (N/c) over the prunable weights (seed 003, Appendix B); N/c = the kept count."""
    index = np.concatenate([np.arange(s.start, s.stop) for s in prunable])
    kept = math.ceil(index.size / compression)
    return float(np.count_nonzero(a[index] & b[index]) / kept)


def _masks_by_compression(scores: np.ndarray, prunable: Sequence[slice], compressions: np.ndarray,
                          scope: str) -> np.ndarray:
    """(n_compressions, N) masks of one score."""
    return np.stack([mask_from_scores(scores, prunable, float(c), scope=scope) for c in compressions])


# ---------------------------------------------------------------------- per-epoch scores
def epoch_rows(store: RunStore, epoch: int, *, parameter: str = "epoch") -> tuple[int, int]:
    """Snapshots of one epoch, with the last snapshot before it (the epoch's starting point)."""
    rows = np.flatnonzero(store.epochs == epoch)
    if not rows.size:
        known = sorted({int(e) for e in store.epochs if e >= 0})
        if not known:
            raise NotApplicableError(f"{store.path}: the store records no epochs; give a window of snapshots instead")
        raise ParameterError(parameter, f"{epoch}: no snapshots recorded in epoch {epoch} "
                                        f"(epochs in the store: {known[0]}..{known[-1]})")
    lo, hi = int(rows[0]), int(rows[-1])
    if lo > 0:
        lo -= 1
    if hi - lo + 1 < 3:
        raise WindowTooShortError(
            f"epoch {epoch} holds {hi - lo + 1} snapshot(s) with its starting point; Koopman pruning needs at "
            "least 3 iteration-level snapshots per epoch (methods.md §3): record more often (traj record --every 1; "
            "every=1 in TrajCallback or traj.Recorder), or give a window of snapshots (--window A:B)"
        )
    return lo, hi


@dataclass(frozen=True)
class EpochScores:
    """Every requested method's scores for one window, and the DMD they came from.

    ``lambda1_index`` indexes ``operator.eigenvalues`` (λ1 itself is :attr:`lambda1`);
    ``kgp_modes`` index them too.
    """

    epoch: int | None
    window: tuple[int, int]
    operator: ReducedOperator
    lambda1_index: int
    kgp_modes: tuple[int, ...]
    mode_norms: np.ndarray
    scores: Mapping[str, np.ndarray]
    theta: np.ndarray
    unavailable: Mapping[str, str]

    @property
    def lambda1(self) -> complex:
        return complex(self.operator.eigenvalues[self.lambda1_index])


def compute_scores(
    store: RunStore,
    window: tuple[int, int],
    methods: Sequence[str],
    *,
    epoch: int | None = None,
    engine: Engine | None = None,
    recipe: Any = None,
    rank: int | str | None = "auto",
    eps: float = 0.01,
    kgp_fraction: float = 0.85,
    gradient_batches: int = 8,
    progress: Progress | None = None,
) -> EpochScores:
    """Scores of every requested method for one window of iteration-level snapshots."""
    engine = engine or Engine()
    lo, hi = window
    rows = slice(lo, hi + 1)
    gram = engine.gram(store, rows=rows, progress=progress)["all"]
    check_gram_finite(gram, store, lo)
    op = ReducedOperator.from_gram(gram, rank=rank, n_features=store.n_params, dtype=store.dtype)
    lam = op.eigenvalues
    lambda1 = int(np.argmin(np.abs(lam - 1.0)))
    norms = op.scaled_mode_norms()
    real_tol = 1e-8 * max(1.0, float(np.abs(lam).max()))
    candidates = [j for j in range(lam.size)
                  if j != lambda1 and abs(lam[j].imag) <= real_tol and 0 < lam[j].real < 1 - eps]
    kgp: list[int] = []
    if candidates:
        top = max(norms[j] for j in candidates)
        kgp = sorted((j for j in candidates if norms[j] >= kgp_fraction * top), key=lambda j: -norms[j])
    unavailable: dict[str, str] = {}
    scores: dict[str, np.ndarray] = {}
    theta = engine.snapshot(store, hi)
    if "kmp" in methods or "kgp" in methods:
        scores.update(_koopman_scores(store, engine, rows, op, lambda1, kgp))
        if not kgp and "kgp" in methods:
            unavailable["kgp"] = "no real, positive, decaying Koopman mode in this window"
    if "gmp" in methods or "lsp" in methods:
        scores["gmp"] = np.abs(theta)
    if "jgp" in methods or "ggp" in methods:
        grad = mean_gradient(store, rows, engine=engine, recipe=recipe, theta=theta, batches=gradient_batches)
        if grad is None:
            for m in ("jgp", "ggp"):
                if m in methods:
                    unavailable[m] = "no recorded gradients and no recipe to compute them (record with --grads)"
        else:
            scores["jgp"] = np.abs(grad)
            scores["ggp"] = np.abs(grad * theta)
    return EpochScores(epoch, window, op, lambda1, tuple(kgp), norms, scores, theta, unavailable)


def _koopman_scores(store: RunStore, engine: Engine, rows: slice, op: ReducedOperator, lambda1: int,
                    kgp: list[int]) -> dict[str, np.ndarray]:
    """KMP |Re(b1 φ1)| and KGP Σ_j |Re(bj φj)| from one pass of D·C over the selected columns of C."""
    assert op.coefficients is not None and op.amplitudes is not None
    selected = [lambda1, *kgp]
    c = op.coefficients[:, selected] * op.amplitudes[selected]
    kmp = np.empty(store.n_params)
    kgp_scores = np.zeros(store.n_params)
    for cols, part in engine.project_blocks(store, c, rows=rows):
        real = np.abs(np.real(part))
        kmp[cols] = real[:, 0]
        kgp_scores[cols] = real[:, 1:].sum(axis=1)
    return {"kmp": kmp, "kgp": kgp_scores} if kgp else {"kmp": kmp}


def mean_gradient(store: RunStore, rows: slice, *, engine: Engine, recipe: Any = None, theta: np.ndarray,
                  batches: int = 8) -> np.ndarray | None:
    """ḡ: the recorded gradients' mean over the window (finite entries only, through the engine), else
    the recipe's gradient at θ over its fixed batches, else None."""
    if store.has_grads:
        def kernel(block: Any, ops: ArrayOps) -> tuple[np.ndarray, np.ndarray]:
            finite = ops.isfinite(block)
            return (ops.to_numpy(ops.sum(ops.where(finite, block, 0.0), 0)),
                    ops.to_numpy(ops.sum(ops.where(finite, ops.asarray(np.ones(1)), 0.0), 0)))

        total = np.zeros(store.n_params)
        count = np.zeros(store.n_params)
        for cols, (part_total, part_count) in engine.map_blocks(store, kernel, rows=rows, array="grads"):
            total[cols], count[cols] = part_total, part_count
        if count.max() > 0:
            return total / np.maximum(count, 1)
    if recipe is not None and hasattr(recipe, "gradient"):
        return recipe.gradient(theta, batches=batches)
    return None


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class KGPMode:
    """A mode KGP scores with: its index among the eigenvalues, λ, and ‖b φ‖."""

    index: int
    eigenvalue: complex
    norm: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "eigenvalue": [self.eigenvalue.real, self.eigenvalue.imag], "norm": self.norm}


@dataclass(frozen=True)
class MetricStats:
    """A validation metric per compression (indexed like ``PruneResult.compressions``): mean and std over seeds."""

    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class EpochOverlap:
    """One method's masks across epochs (seed 003 figs. 3, 5).

    ``overlap`` (n_compressions, E, E): overlap of the epochs' masks; ``kmp_gmp`` (n_compressions, E):
    KMP-GMP overlap per epoch.
    """

    method: str
    epochs: tuple[int, ...]
    compressions: np.ndarray
    overlap: np.ndarray
    kmp_gmp: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        keys = [compression_key(c) for c in self.compressions]
        return {"method": self.method, "epochs": list(self.epochs),
                "overlap": {k: m.tolist() for k, m in zip(keys, self.overlap, strict=True)},
                "kmp_gmp": {k: v.tolist() for k, v in zip(keys, self.kmp_gmp, strict=True)}}


def compression_key(c: float) -> str:
    """A compression as the JSON view and masks.zarr name it: 2, 4, 2.5."""
    return f"{float(c):g}"


@dataclass(frozen=True)
class PruneResult:
    """Koopman and baseline pruning of one epoch: masks, scores, overlaps and accuracies.

    Every per-compression array is indexed like ``compressions``: ``masks[m]`` has shape
    (n_compressions, N) (LSP: its first seed; all seeds in ``lsp_seed_masks``, shape
    (seeds, n_compressions, N)), ``kept[m]`` and ``overlap[(a, b)]`` shape (n_compressions,).
    ``theta`` is the snapshot the scores and masks refer to (``window[1]``), float64.
    """

    store: str
    epoch: int | None
    window: tuple[int, int]
    steps: tuple[int, int]
    scope: Scope
    methods: tuple[str, ...]
    compressions: np.ndarray
    eigenvalues: np.ndarray
    classes: tuple[ModeClass, ...]
    lambda1: complex
    lambda1_index: int
    kgp_modes: tuple[KGPMode, ...]
    n_prunable: int
    masks: Mapping[str, np.ndarray]
    lsp_seed_masks: np.ndarray | None
    scores: Mapping[str, np.ndarray]
    theta: np.ndarray
    kept: Mapping[str, np.ndarray]
    overlap: Mapping[tuple[str, str], np.ndarray]
    unavailable: Mapping[str, str]
    refine_epochs: int
    seeds: int
    seconds: float
    accuracy: Mapping[str, MetricStats] | None = None
    accuracy_refined: Mapping[str, MetricStats] | None = None
    metric: str | None = None
    baseline: Mapping[str, float] | None = None
    epoch_overlap: EpochOverlap | None = None

    def index(self, compression: float) -> int:
        """The position of a compression in ``compressions``."""
        hits = np.flatnonzero(np.isclose(self.compressions, float(compression), rtol=1e-12, atol=0))
        if not hits.size:
            raise ParameterError("compression", f"{compression:g} was not computed (compressions: "
                                                f"{', '.join(compression_key(c) for c in self.compressions)})")
        return int(hits[0])

    def mask(self, method: str, compression: float) -> np.ndarray:
        """The (N,) mask of one method at one compression (True = kept)."""
        return self.masks[method][self.index(compression)]

    def to_dict(self) -> dict[str, Any]:
        keys = [compression_key(c) for c in self.compressions]

        def by_c(values: np.ndarray) -> dict[str, Any]:
            return {k: v.item() for k, v in zip(keys, values, strict=True)}

        def stats(table: Mapping[str, MetricStats] | None) -> dict[str, Any] | None:
            if table is None:
                return None
            return {m: {k: {"mean": float(s.mean[i]), "std": float(s.std[i])} for i, k in enumerate(keys)}
                    for m, s in table.items()}

        return {
            "store": self.store,
            "epoch": self.epoch,
            "window": list(self.window),
            "steps": list(self.steps),
            "scope": self.scope,
            "methods": list(self.methods),
            "compressions": self.compressions.tolist(),
            "eigenvalues": complex_pairs(self.eigenvalues),
            "lambda1": [self.lambda1.real, self.lambda1.imag],
            "kgp_modes": [m.to_dict() for m in self.kgp_modes],
            "n_prunable": self.n_prunable,
            "kept": {m: by_c(v) for m, v in self.kept.items()},
            "metric": self.metric,
            "baseline": dict(self.baseline) if self.baseline is not None else None,
            "accuracy": stats(self.accuracy),
            "accuracy_refined": stats(self.accuracy_refined),
            "refine_epochs": self.refine_epochs,
            "seeds": self.seeds,
            "overlap": {f"{a}-{b}": v.tolist() for (a, b), v in self.overlap.items()},
            "epoch_overlap": self.epoch_overlap.to_dict() if self.epoch_overlap else None,
            "unavailable": dict(self.unavailable),
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------- the analysis
@dataclass(frozen=True)
class PruneParams:
    """The options of a pruning run, checked (see :func:`prune` for their meaning)."""

    epoch: int | None = None
    window: Window = None
    methods: tuple[str, ...] = METHODS
    compressions: tuple[float, ...] = tuple(float(c) for c in DEFAULT_COMPRESSIONS)
    scope: Scope = "global"
    refine_epochs: int = 1
    seeds: int = 3
    evaluate: bool = True
    epochs: tuple[int, ...] = ()
    rank: int | str | None = "auto"
    kgp_fraction: float = 0.85

    @classmethod
    def checked(cls, *, epoch: int | None = None, window: Window = None, methods: Sequence[str] = METHODS,
                compressions: Sequence[float] = DEFAULT_COMPRESSIONS, scope: str = "global", refine_epochs: int = 1,
                seeds: int = 3, evaluate: bool = True, epochs: Sequence[int] | None = None,
                rank: int | str | None = "auto", kgp_fraction: float = 0.85) -> PruneParams:
        names = [m.strip().lower() for m in methods] if not isinstance(methods, str) else [methods]
        bad = [m for m in names if m not in METHODS]
        if bad or not names:
            raise ParameterError("methods", f"holds an unknown pruning method {bad[0] if bad else '(none)'}; "
                                            f"use {', '.join(METHODS)}")
        if epoch is not None and window is not None:
            raise ParameterError("window", "cannot be given with epoch: give one of them")
        return cls(
            epoch=None if epoch is None else check_int("epoch", epoch),
            window=window,
            methods=tuple(dict.fromkeys(names)),
            # c = 2 keeps half; c must exceed 1 (c = 1 prunes nothing) and be finite (c = inf keeps no weight)
            compressions=tuple(check_floats("compressions", compressions, low=1, low_open=True)),
            scope=check_choice("scope", scope, SCOPES),  # type: ignore[arg-type]
            refine_epochs=check_int("refine_epochs", refine_epochs, low=0, high=MAX_EPOCHS),
            seeds=check_int("seeds", seeds, low=1, high=MAX_SEEDS),
            evaluate=bool(evaluate),
            epochs=tuple(check_ints("epochs", epochs)) if epochs else (),
            rank=check_rank(rank),
            kgp_fraction=check_float("kgp_fraction", kgp_fraction, low=0, high=1),
        )


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
    recipe: Any = None,
    epochs: Sequence[int] | None = None,
    rank: int | str | None = "auto",
    kgp_fraction: float = 0.85,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    """Koopman and baseline pruning of one epoch of a recorded run (methods.md §3).

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
    recipe : the run's recipe (default: rebuilt from the store, when ``evaluate``).
    epochs : also compute masks at these epochs and report, per compression, the overlap
        matrix of the first method's masks across them and KMP-GMP overlap per epoch.
    """
    params = PruneParams.checked(epoch=epoch, window=window, methods=methods, compressions=compressions, scope=scope,
                                 refine_epochs=refine_epochs, seeds=seeds, evaluate=evaluate, epochs=epochs, rank=rank,
                                 kgp_fraction=kgp_fraction)
    return fit_prune(store, params, recipe=recipe, engine=engine, progress=progress)


def fit_prune(store: RunStore | str | os.PathLike[str], params: PruneParams, *, recipe: Any = None,
              engine: Engine | None = None, progress: Progress | None = None) -> PruneResult:
    """Fit checked :class:`PruneParams`: score the epoch, mask every compression, evaluate with the recipe."""
    t0 = time.perf_counter()
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    for e in params.epochs:
        epoch_rows(store, e, parameter="epochs")  # every epoch compared must exist before the first pass
    if params.evaluate and recipe is None:
        from ..recipes import recipe_from_store

        recipe = recipe_from_store(store)
    prunable = prunable_columns(store)
    epoch, win = _window(store, params)
    main = compute_scores(store, win, params.methods, epoch=epoch, engine=engine, recipe=recipe, rank=params.rank,
                          kgp_fraction=params.kgp_fraction, progress=progress)
    compressions = np.array(params.compressions)
    masks = {m: _masks_by_compression(main.scores[m], prunable, compressions, params.scope)
             for m in params.methods if m != "lsp" and m in main.scores}
    lsp_seed_masks = None
    if "lsp" in params.methods:
        gmp = masks["gmp"] if "gmp" in masks else _masks_by_compression(main.scores["gmp"], prunable, compressions,
                                                                         params.scope)
        lsp_seed_masks = np.stack([np.stack([lsp_mask(ref, prunable, seed=s) for ref in gmp])
                                   for s in range(params.seeds)])
        masks["lsp"] = lsp_seed_masks[0]
    available = tuple(m for m in params.methods if m in masks)
    index = np.concatenate([np.arange(s.start, s.stop) for s in prunable])
    op = main.operator
    result = PruneResult(
        store=str(store.path), epoch=epoch, window=win, steps=(int(store.steps[win[0]]), int(store.steps[win[1]])),
        scope=params.scope, methods=available, compressions=compressions, eigenvalues=op.eigenvalues,
        classes=tuple(op.classes()), lambda1=main.lambda1, lambda1_index=main.lambda1_index,
        kgp_modes=tuple(KGPMode(j, complex(op.eigenvalues[j]), float(main.mode_norms[j])) for j in main.kgp_modes),
        n_prunable=int(index.size), masks={m: masks[m] for m in available}, lsp_seed_masks=lsp_seed_masks,
        scores=main.scores, theta=main.theta, kept={m: masks[m][:, index].sum(axis=1) for m in available},
        overlap={(a, b): np.array([mask_overlap(masks[a][i], masks[b][i], prunable, c)
                                   for i, c in enumerate(compressions)])
                 for i_a, a in enumerate(available) for b in available[i_a + 1 :]},
        unavailable=main.unavailable, refine_epochs=params.refine_epochs, seeds=params.seeds, seconds=0.0,
    )
    if params.evaluate and recipe is not None:
        result = _evaluate(result, recipe, store.layout, store.dtype)
    if params.epochs:
        result = _replace(result, epoch_overlap=_across_epochs(store, params, available[0], prunable, engine, recipe))
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


def _evaluate(result: PruneResult, recipe: Any, layout: Layout, dtype: np.dtype) -> PruneResult:
    """Validation metric after pruning and after ``refine_epochs`` of training with each mask held fixed."""
    base = recipe.evaluate(result.theta.astype(dtype))
    metric = "accuracy" if "accuracy" in base else "loss"
    accuracy: dict[str, MetricStats] = {}
    refined: dict[str, MetricStats] = {}
    for m in result.methods:
        after = np.zeros((len(result.compressions), result.seeds))
        tuned = np.zeros_like(after)
        for i in range(len(result.compressions)):
            for s in range(result.seeds):
                # LSP draws a mask per seed; the other methods' mask is the same for every seed
                lsp = m == "lsp" and result.lsp_seed_masks is not None
                mask = result.lsp_seed_masks[s, i] if lsp else result.masks[m][i]
                pruned = pruned_theta(result.theta, mask, dtype)
                after[i, s] = recipe.evaluate(pruned)[metric] if (lsp or s == 0) else after[i, 0]
                if result.refine_epochs:
                    tensor_masks = {e.name: mask[e.columns].reshape(e.shape).astype(np.float32)
                                    for e in layout.prunable_entries}
                    tuned[i, s] = recipe.evaluate(recipe.refine(pruned, result.refine_epochs, mask=tensor_masks,
                                                                seed=s))[metric]
        accuracy[m] = MetricStats(after.mean(axis=1), after.std(axis=1))
        if result.refine_epochs:
            refined[m] = MetricStats(tuned.mean(axis=1), tuned.std(axis=1))
    return _replace(result, accuracy=accuracy, accuracy_refined=refined if result.refine_epochs else None,
                    metric=metric, baseline=base)


def _across_epochs(store: RunStore, params: PruneParams, method: str, prunable: Sequence[slice], engine: Engine,
                   recipe: Any) -> EpochOverlap:
    """Overlap of one method's masks across epochs, and KMP-GMP overlap per epoch (seed 003 figs. 3, 5)."""
    wanted = sorted({method, "kmp", "gmp"} & set(METHODS) - {"lsp"})
    compressions = np.array(params.compressions)
    per_epoch = []
    for e in params.epochs:
        sc = compute_scores(store, epoch_rows(store, e), wanted, epoch=e, engine=engine, recipe=recipe,
                            rank=params.rank, kgp_fraction=params.kgp_fraction)
        per_epoch.append({m: _masks_by_compression(sc.scores[m], prunable, compressions, params.scope)
                          for m in sc.scores})
    source = method if method != "lsp" else "gmp"
    overlap = np.array([[[mask_overlap(a[source][i], b[source][i], prunable, c) for b in per_epoch if source in b]
                         for a in per_epoch if source in a] for i, c in enumerate(compressions)])
    kmp_gmp = np.array([[mask_overlap(p["kmp"][i], p["gmp"][i], prunable, c) for p in per_epoch]
                        for i, c in enumerate(compressions)])
    return EpochOverlap(source, params.epochs, compressions, overlap, kmp_gmp)
