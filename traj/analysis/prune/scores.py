"""Prune's scores of an epoch (docs/methods.md §3): KMP and KGP from its DMD, GMP, and the gradient scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...engine import Engine, ReducedOperator
from ...engine.backends import ArrayOps
from ...errors import NotApplicableError, ParameterError, WindowTooShortError
from ...progress import Progress
from ...store import RunStore
from ..evaluator import Trainer
from ..scratch import ScratchArrays
from ..windows import check_gram_finite
from .masking import _score_name
from .params import DEFAULT_RANK


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
            "least 3 iteration-level snapshots per epoch (docs/methods.md §3.1): record more often (traj record --every 1; "
            "every=1 in TrajCallback or traj.Recorder), or give a window of snapshots (--window A:B)"
        )
    return lo, hi


@dataclass(frozen=True)
class _WindowDMD:
    """The DMD of a scored window: ``lambda1_index`` indexes ``operator.eigenvalues`` (λ1 itself is
    :attr:`lambda1`); ``kgp_modes`` index them too."""

    operator: ReducedOperator
    lambda1_index: int
    kgp_modes: tuple[int, ...]
    mode_norms: np.ndarray

    @property
    def lambda1(self) -> complex:
        return complex(self.operator.eigenvalues[self.lambda1_index])


@dataclass(frozen=True)
class EpochScores(_WindowDMD):
    """Every requested method's scores for one window, in memory, and the DMD they came from."""

    epoch: int | None
    window: tuple[int, int]
    scores: Mapping[str, np.ndarray]
    theta: np.ndarray
    unavailable: Mapping[str, str]


def compute_scores(
    store: RunStore,
    window: tuple[int, int],
    methods: Sequence[str],
    *,
    epoch: int | None = None,
    engine: Engine | None = None,
    recipe: Trainer | None = None,
    rank: int | str | None = DEFAULT_RANK,
    eps: float = 0.01,
    kgp_fraction: float = 0.85,
    gradient_batches: int = 8,
    progress: Progress | None = None,
) -> EpochScores:
    """Scores of every requested method for one window of iteration-level snapshots, in memory.

    The N-long scores and θ are held in memory here (a few vectors of N); :func:`fit_prune`
    keeps them on disk (:func:`score_window`), block by block.
    """
    arrays = ScratchArrays(store.n_params)
    try:
        scored = score_window(store, window, methods, arrays, epoch=epoch, engine=engine, recipe=recipe, rank=rank,
                              eps=eps, kgp_fraction=kgp_fraction, gradient_batches=gradient_batches,
                              progress=progress)
        scores = {name: arrays.read(_score_name(name)) for name in scored.scores}
        return EpochScores(scored.operator, scored.lambda1_index, scored.kgp_modes, scored.mode_norms, epoch=epoch,
                           window=tuple(window), scores=scores, theta=arrays.read("theta"),
                           unavailable=scored.unavailable)
    finally:
        arrays.close()


@dataclass(frozen=True)
class WindowScores(_WindowDMD):
    """What :func:`score_window` found: the DMD of the window and the names of the scores it wrote."""

    scores: tuple[str, ...]
    unavailable: Mapping[str, str]


def score_window(
    store: RunStore,
    window: tuple[int, int],
    methods: Sequence[str],
    arrays: ScratchArrays,
    *,
    epoch: int | None = None,
    engine: Engine | None = None,
    recipe: Trainer | None = None,
    rank: int | str | None = DEFAULT_RANK,
    eps: float = 0.01,
    kgp_fraction: float = 0.85,
    gradient_batches: int = 8,
    progress: Progress | None = None,
) -> WindowScores:
    """Score one window block by block into ``arrays``: ``theta`` (θ at ``window[1]``, float64) and
    ``score-<method>`` for every score computed (docs/methods.md §3.2). Memory: the engine's blocks and T×T."""
    engine = engine or Engine()
    lo, hi = window
    rows = slice(lo, hi + 1)
    gram = engine.gram(store, rows=rows, progress=progress)["all"]
    check_gram_finite(gram, store, lo)
    # pruning reads no rounding errors: no residual to measure
    op = ReducedOperator.from_gram(gram, rank=rank, n_features=store.n_params, dtype=store.dtype, estimate_errors=False)
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
    names: list[str] = []
    magnitude = "gmp" in methods or "lsp" in methods
    arrays.create("theta", np.float64)
    if magnitude:
        arrays.create(_score_name("gmp"), np.float64)

    def last_row(block: Any, ops: ArrayOps) -> np.ndarray:
        return np.array(ops.to_numpy(block[-1]))  # a copy: the backend may reuse the block's memory

    for cols, theta in engine.map_blocks(store, last_row, rows=slice(hi, hi + 1)):
        arrays.write("theta", cols.start, theta)
        if magnitude:
            arrays.write(_score_name("gmp"), cols.start, np.abs(theta))
    if "kmp" in methods or "kgp" in methods:
        names += _koopman_scores(store, engine, rows, op, lambda1, kgp, arrays)
        if not kgp and "kgp" in methods:
            unavailable["kgp"] = "no real, positive, decaying Koopman mode in this window"
    if magnitude:
        names.append("gmp")
    if "jgp" in methods or "ggp" in methods:
        if _gradient_scores(store, rows, arrays, engine=engine, recipe=recipe, batches=gradient_batches):
            names += ["jgp", "ggp"]
        else:
            for m in ("jgp", "ggp"):
                if m in methods:
                    unavailable[m] = "no recorded gradients and no recipe to compute them (record with --grads)"
    return WindowScores(op, lambda1, tuple(kgp), norms, tuple(names), unavailable)


def _koopman_scores(store: RunStore, engine: Engine, rows: slice, op: ReducedOperator, lambda1: int,
                    kgp: list[int], arrays: ScratchArrays) -> list[str]:
    """KMP |Re(b1 φ1)| and KGP Σ_j |Re(bj φj)| from one pass of D·C over the selected columns of C."""
    assert op.coefficients is not None and op.amplitudes is not None
    selected = [lambda1, *kgp]
    c = op.coefficients[:, selected] * op.amplitudes[selected]
    names = ["kmp", "kgp"] if kgp else ["kmp"]
    for name in names:
        arrays.create(_score_name(name), np.float64)
    for cols, part in engine.project_blocks(store, c, rows=rows):
        real = np.abs(np.real(part))
        arrays.write(_score_name("kmp"), cols.start, real[:, 0])
        if kgp:
            arrays.write(_score_name("kgp"), cols.start, real[:, 1:].sum(axis=1))
    return names


def _gradient_scores(store: RunStore, rows: slice, arrays: ScratchArrays, *, engine: Engine,
                     recipe: Trainer | None = None,
                     batches: int = 8) -> bool:
    """JGP |ḡ| and GGP |ḡ θ| into ``arrays``; False when there is no ḡ.

    ḡ: the recorded gradients' mean over the window (finite entries only, through the engine), else
    the recipe's gradient at θ over its fixed batches (the model is built then: θ is read whole).
    """
    for name in ("jgp", "ggp"):
        arrays.create(_score_name(name), np.float64)
    if store.has_grads:
        def kernel(block: Any, ops: ArrayOps) -> tuple[np.ndarray, np.ndarray]:
            finite = ops.isfinite(block)
            return (ops.to_numpy(ops.sum(ops.where(finite, block, 0.0), 0)),
                    ops.to_numpy(ops.sum(ops.where(finite, ops.asarray(np.ones(1)), 0.0), 0)))

        most = 0.0
        for cols, (total, count) in engine.map_blocks(store, kernel, rows=rows, array="grads"):
            grad = total / np.maximum(count, 1)
            arrays.write(_score_name("jgp"), cols.start, np.abs(grad))
            arrays.write(_score_name("ggp"), cols.start, np.abs(grad * arrays.read("theta", cols.start, cols.stop)))
            most = max(most, float(count.max()) if count.size else 0.0)
        if most > 0:
            return True
    if recipe is not None and hasattr(recipe, "gradient"):
        theta = arrays.read("theta")
        grad = recipe.gradient(theta, batches=batches)
        arrays.write(_score_name("jgp"), 0, np.abs(grad))
        arrays.write(_score_name("ggp"), 0, np.abs(grad * theta))
        return True
    return False
