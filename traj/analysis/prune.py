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
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import MAX_EPOCHS, check_choice, check_float, check_floats, check_int, check_ints
from ..engine import Engine, ReducedOperator
from ..engine.operator import check_rank
from ..errors import ParameterError, TrajError
from ..store import RunStore
from .dmd import check_gram_finite, parse_window
from .masks import pruned_theta, read_masks, write_masks

__all__ = ["METHODS", "PruneResult", "prune", "mask_from_scores", "lsp_mask", "mask_overlap", "epoch_rows", "read_masks",
           "write_masks"]

METHODS = ("kmp", "kgp", "gmp", "jgp", "ggp", "lsp")
DEFAULT_COMPRESSIONS = (2, 4, 8, 16, 32, 64)
SCOPES = ("global", "layer")
#: Refinement seeds: each one trains every mask again.
MAX_SEEDS = 1000
ProgressCallback = Callable[[int, int], None]


# ---------------------------------------------------------------------- masks
def _prunable_columns(store: RunStore) -> list[slice]:
    cols = [e.columns for e in store.layout.prunable_entries if e.size]
    if not cols:
        raise TrajError(f"{store.path}: no prunable parameters (weights of linear/conv layers) in this store")
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


# ---------------------------------------------------------------------- per-epoch scores
def epoch_rows(store: RunStore, epoch: int) -> tuple[int, int]:
    """Snapshots of one epoch, with the last snapshot before it (the epoch's starting point)."""
    rows = np.flatnonzero(store.epochs == epoch)
    if not rows.size:
        known = sorted({int(e) for e in store.epochs if e >= 0})
        raise TrajError(f"no snapshots recorded in epoch {epoch} (epochs in the store: {known[0]}..{known[-1]})"
                        if known else f"{store.path}: the store records no epochs; use --window")
    lo, hi = int(rows[0]), int(rows[-1])
    if lo > 0:
        lo -= 1
    if hi - lo + 1 < 3:
        raise TrajError(
            f"epoch {epoch} holds {hi - lo + 1} snapshot(s) with its starting point; Koopman pruning needs at "
            "least 3 iteration-level snapshots per epoch (record every step, or give --window a:b)"
        )
    return lo, hi


@dataclass(frozen=True)
class EpochScores:
    epoch: int | None
    window: tuple[int, int]
    operator: ReducedOperator
    lambda1: int
    kgp_modes: list[int]
    mode_norms: np.ndarray
    scores: dict[str, np.ndarray]
    theta: np.ndarray
    unavailable: dict[str, str]


def _scaled_mode_norms(op: ReducedOperator) -> np.ndarray:
    """‖bj φj‖ for every mode from CᴴGC: no pass over the data."""
    phi_h_phi = np.real(np.einsum("ij,ij->j", op.coefficients.conj(), op.gram_coefficients))
    return np.abs(op.amplitudes) * np.sqrt(np.clip(phi_h_phi, 0.0, None))


def compute_scores(
    store: RunStore,
    window: tuple[int, int],
    methods: Sequence[str],
    *,
    epoch: int | None = None,
    engine: Engine | None = None,
    recipe: Any = None,
    rank: int | str = "auto",
    eps: float = 0.01,
    kgp_fraction: float = 0.85,
    gradient_batches: int = 8,
    progress: ProgressCallback | None = None,
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
    norms = _scaled_mode_norms(op)
    real_tol = 1e-8 * max(1.0, float(np.abs(lam).max()))
    candidates = [j for j in range(lam.size)
                  if j != lambda1 and abs(lam[j].imag) <= real_tol and 0 < lam[j].real < 1 - eps]
    kgp: list[int] = []
    if candidates:
        top = max(norms[j] for j in candidates)
        kgp = sorted((j for j in candidates if norms[j] >= kgp_fraction * top), key=lambda j: -norms[j])
    unavailable: dict[str, str] = {}
    scores: dict[str, np.ndarray] = {}
    theta = store.snapshot(hi).astype(np.float64)

    if "kmp" in methods or "kgp" in methods:
        selected = [lambda1] + kgp
        c = op.coefficients[:, selected] * op.amplitudes[selected]
        kmp = np.empty(store.n_params)
        kgp_scores = np.zeros(store.n_params)
        for cols, part in engine.project_blocks(store, c, rows=rows):
            real = np.abs(np.real(part))
            kmp[cols] = real[:, 0]
            if kgp:
                kgp_scores[cols] = real[:, 1:].sum(axis=1)
        scores["kmp"] = kmp
        if kgp:
            scores["kgp"] = kgp_scores
        elif "kgp" in methods:
            unavailable["kgp"] = "no real, positive, decaying Koopman mode in this window"
    if "gmp" in methods or "lsp" in methods:
        scores["gmp"] = np.abs(theta)
    if "jgp" in methods or "ggp" in methods:
        grad = _mean_gradient(store, rows, recipe, theta, gradient_batches)
        if grad is None:
            for m in ("jgp", "ggp"):
                if m in methods:
                    unavailable[m] = "no recorded gradients and no recipe to compute them (record with --grads)"
        else:
            scores["jgp"] = np.abs(grad)
            scores["ggp"] = np.abs(grad * theta)
    return EpochScores(epoch, window, op, lambda1, kgp, norms, scores, theta, unavailable)


def _mean_gradient(store: RunStore, rows: slice, recipe: Any, theta: np.ndarray, batches: int) -> np.ndarray | None:
    if store.has_grads:
        total = np.zeros(store.n_params)
        count = np.zeros(store.n_params)
        for k in range(rows.start, rows.stop):
            g = store.snapshot(k, array="grads").astype(np.float64)
            ok = np.isfinite(g)
            total[ok] += g[ok]
            count[ok] += 1
        if count.max() > 0:
            return total / np.maximum(count, 1)
    if recipe is not None and hasattr(recipe, "gradient"):
        return recipe.gradient(theta, batches=batches)
    return None


# ---------------------------------------------------------------------- the analysis
@dataclass(frozen=True)
class PruneResult:
    store: str
    epoch: int | None
    window: tuple[int, int]
    steps: tuple[int, int]
    scope: str
    methods: list[str]
    compressions: list[float]
    eigenvalues: np.ndarray
    lambda1: complex
    kgp_modes: list[dict[str, Any]]
    n_prunable: int
    kept: dict[str, dict[str, int]]
    accuracy: dict[str, dict[str, dict[str, float]]] | None
    accuracy_refined: dict[str, dict[str, dict[str, float]]] | None
    metric: str | None
    baseline: dict[str, float] | None
    overlap: dict[str, list[float]]
    unavailable: dict[str, str]
    masks: dict[str, dict[str, np.ndarray]]
    scores: dict[str, np.ndarray]
    epoch_overlap: dict[str, Any] | None
    refine_epochs: int
    seeds: int
    seconds: float
    classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        pair = lambda z: [float(np.real(z)), float(np.imag(z))]  # noqa: E731
        return {
            "store": self.store,
            "epoch": self.epoch,
            "window": list(self.window),
            "steps": list(self.steps),
            "scope": self.scope,
            "methods": self.methods,
            "compressions": self.compressions,
            "eigenvalues": [pair(z) for z in self.eigenvalues],
            "lambda1": pair(self.lambda1),
            "kgp_modes": self.kgp_modes,
            "n_prunable": self.n_prunable,
            "kept": self.kept,
            "metric": self.metric,
            "baseline": self.baseline,
            "accuracy": self.accuracy,
            "accuracy_refined": self.accuracy_refined,
            "refine_epochs": self.refine_epochs,
            "seeds": self.seeds,
            "overlap": self.overlap,
            "epoch_overlap": self.epoch_overlap,
            "unavailable": self.unavailable,
            "seconds": self.seconds,
        }


def _ckey(c: float) -> str:
    return f"{c:g}"


def prune(
    store: RunStore | str | os.PathLike[str],
    *,
    epoch: int | None = None,
    window: str | Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    compressions: Sequence[float] = DEFAULT_COMPRESSIONS,
    scope: str = "global",
    refine_epochs: int = 1,
    seeds: int = 3,
    evaluate: bool = True,
    recipe: Any = None,
    epochs: Sequence[int] | None = None,
    rank: int | str = "auto",
    kgp_fraction: float = 0.85,
    engine: Engine | None = None,
    progress: ProgressCallback | None = None,
) -> PruneResult:
    """Koopman and baseline pruning of one epoch of a recorded run (methods.md §3).

    Parameters
    ----------
    epoch : int, optional
        The epoch whose iteration-level snapshots are decomposed (default the last one);
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
    t0 = time.perf_counter()
    store = store if isinstance(store, RunStore) else RunStore(store)
    methods = [m.strip().lower() for m in methods]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ParameterError("methods", f"holds an unknown pruning method {bad[0] if bad else '(none)'}; "
                                        f"use {', '.join(METHODS)}")
    # c = 2 keeps half; c must exceed 1 (c = 1 prunes nothing) and be finite (c = inf keeps no weight)
    compressions = check_floats("compressions", compressions, low=1, low_open=True)
    scope = check_choice("scope", scope, SCOPES)
    refine_epochs = check_int("refine_epochs", refine_epochs, low=0, high=MAX_EPOCHS)
    seeds = check_int("seeds", seeds, low=1, high=MAX_SEEDS)
    rank = check_rank(rank)
    kgp_fraction = check_float("kgp_fraction", kgp_fraction, low=0, high=1)
    if epoch is not None:
        epoch = check_int("epoch", epoch)
    if epochs:
        epochs = check_ints("epochs", epochs)
        for e in epochs:
            epoch_rows(store, e)  # every epoch compared must exist before the first pass
    if evaluate and recipe is None:
        from ..recipes import recipe_from_store

        recipe = recipe_from_store(store)
    prunable = _prunable_columns(store)
    n_prunable = sum(s.stop - s.start for s in prunable)
    if epoch is not None and window is not None:
        raise TrajError("give --epoch or --window, not both")
    if window is not None:
        win = parse_window(window, store.n_snapshots)
        epoch_used = None
    else:
        if epoch is None:
            known = store.epochs[store.epochs >= 0]
            if not known.size:
                raise TrajError(f"{store.path}: the store records no epochs; use --window")
            epoch = int(known.max())
        win = epoch_rows(store, epoch)
        epoch_used = epoch
    main = compute_scores(store, win, methods, epoch=epoch_used, engine=engine, recipe=recipe, rank=rank,
                          kgp_fraction=kgp_fraction, progress=progress)
    masks = _masks(main, methods, compressions, prunable, scope, seeds)
    available = [m for m in methods if m in masks]

    kept = {m: {_ckey(c): int(sum(int(masks[m][_ckey(c)][s].sum()) for s in prunable)) for c in compressions}
            for m in available}
    overlap: dict[str, list[float]] = {}
    for i, a in enumerate(available):
        for b in available[i + 1 :]:
            overlap[f"{a}-{b}"] = [mask_overlap(masks[a][_ckey(c)], masks[b][_ckey(c)], prunable, c) for c in compressions]

    accuracy = refined = baseline = None
    metric = None
    if evaluate and recipe is not None:
        accuracy, refined, baseline, metric = _evaluate(recipe, main.theta, masks, available, compressions, prunable,
                                                        store, refine_epochs, seeds)

    epoch_overlap = None
    if epochs:
        epoch_overlap = _across_epochs(store, list(epochs), available[0], compressions, prunable, scope, engine,
                                       recipe, rank, kgp_fraction)
    op = main.operator
    kgp_info = [{"index": j, "eigenvalue": [float(op.eigenvalues[j].real), float(op.eigenvalues[j].imag)],
                 "norm": float(main.mode_norms[j])} for j in main.kgp_modes]
    return PruneResult(
        store=str(store.path), epoch=epoch_used, window=win,
        steps=(int(store.steps[win[0]]), int(store.steps[win[1]])), scope=scope, methods=available,
        compressions=compressions, eigenvalues=op.eigenvalues, lambda1=complex(op.eigenvalues[main.lambda1]),
        kgp_modes=kgp_info, n_prunable=n_prunable, kept=kept, accuracy=accuracy, accuracy_refined=refined,
        metric=metric, baseline=baseline, overlap=overlap, unavailable=main.unavailable, masks=masks,
        scores=main.scores, epoch_overlap=epoch_overlap, refine_epochs=refine_epochs, seeds=seeds,
        seconds=time.perf_counter() - t0, classes=op.classes(),
    )


def _masks(scores: EpochScores, methods: Sequence[str], compressions: Sequence[float], prunable: Sequence[slice],
           scope: str, seeds: int) -> dict[str, dict[str, Any]]:
    masks: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m == "lsp":
            continue
        if m in scores.scores:
            masks[m] = {_ckey(c): mask_from_scores(scores.scores[m], prunable, c, scope=scope) for c in compressions}
    if "lsp" in methods:
        gmp = {_ckey(c): mask_from_scores(scores.scores["gmp"], prunable, c, scope=scope) for c in compressions}
        masks["lsp"] = {_ckey(c): lsp_mask(gmp[_ckey(c)], prunable, seed=0) for c in compressions}
        masks["lsp"]["_seeds"] = {_ckey(c): [lsp_mask(gmp[_ckey(c)], prunable, seed=s) for s in range(seeds)]
                                  for c in compressions}
    return masks


def _evaluate(recipe: Any, theta: np.ndarray, masks: dict[str, dict[str, Any]], methods: Sequence[str],
              compressions: Sequence[float], prunable: Sequence[slice], store: RunStore, refine_epochs: int,
              seeds: int) -> tuple[dict, dict, dict, str]:
    base = recipe.evaluate(theta.astype(store.dtype))
    metric = "accuracy" if "accuracy" in base else "loss"
    layout = store.layout
    accuracy: dict[str, dict[str, dict[str, float]]] = {}
    refined: dict[str, dict[str, dict[str, float]]] = {}
    for m in methods:
        accuracy[m], refined[m] = {}, {}
        for c in compressions:
            key = _ckey(c)
            variants = masks[m]["_seeds"][key] if m == "lsp" else [masks[m][key]] * seeds
            after, tuned = [], []
            for s, mask in enumerate(variants):
                pruned = pruned_theta(theta, mask, store.dtype)
                if m != "lsp" and s > 0:
                    after.append(after[0])
                else:
                    after.append(recipe.evaluate(pruned)[metric])
                if refine_epochs:
                    tensor_masks = {e.name: mask[e.columns].reshape(e.shape).astype(np.float32)
                                    for e in layout.prunable_entries}
                    theta_r = recipe.refine(pruned, refine_epochs, mask=tensor_masks, seed=s)
                    tuned.append(recipe.evaluate(theta_r)[metric])
            accuracy[m][key] = {"mean": float(np.mean(after)), "std": float(np.std(after))}
            if tuned:
                refined[m][key] = {"mean": float(np.mean(tuned)), "std": float(np.std(tuned))}
    return accuracy, (refined if refine_epochs else None), base, metric


def _across_epochs(store: RunStore, epochs: list[int], method: str, compressions: Sequence[float],
                   prunable: Sequence[slice], scope: str, engine: Engine | None, recipe: Any, rank: int | str,
                   kgp_fraction: float) -> dict[str, Any]:
    """Overlap of one method's masks across epochs, and KMP-GMP overlap per epoch (seed 003 figs. 3, 5)."""
    wanted = sorted(set([method, "kmp", "gmp"]) & set(METHODS) - {"lsp"})
    per_epoch = []
    for e in epochs:
        sc = compute_scores(store, epoch_rows(store, e), wanted, epoch=e, engine=engine, recipe=recipe, rank=rank,
                            kgp_fraction=kgp_fraction)
        per_epoch.append({m: {_ckey(c): mask_from_scores(sc.scores[m], prunable, c, scope=scope) for c in compressions}
                          for m in sc.scores})
    source = method if method != "lsp" else "gmp"
    matrices = {}
    kmp_gmp = {}
    for c in compressions:
        key = _ckey(c)
        mats = [p[source][key] for p in per_epoch if source in p]
        matrices[key] = [[mask_overlap(a, b, prunable, c) for b in mats] for a in mats]
        kmp_gmp[key] = [mask_overlap(p["kmp"][key], p["gmp"][key], prunable, c) for p in per_epoch]
    return {"method": source, "epochs": epochs, "overlap": matrices, "kmp_gmp": kmp_gmp}
