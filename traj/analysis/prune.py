"""``traj prune``: Koopman pruning beside magnitude, gradient and random baselines (docs/methods.md §3; Redman et al. 2022).

For an epoch, exact DMD of its iteration-level snapshots (§1) gives λ1, the eigenvalue closest
to 1, and the real, positive, decaying modes. Scores (one number per weight):

- KMP  |Re(b1 φ1)ᵢ|                     Koopman magnitude
- KGP  Σ_j |Re(bj φj)ᵢ| over the KGP modes  Koopman gradient: real positive λj < 1 whose
                                        scaled mode ‖bj φj‖ is at least ``kgp_fraction`` of the
                                        largest such mode (Redman et al. 2022 fig. 4 keeps norms > 0.85)
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

import bisect
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..checks import MAX_EPOCHS, check_choice, check_float, check_floats
from ..engine import Engine, ReducedOperator
from ..engine.backends import ArrayOps
from ..engine.operator import ModeClass, check_rank
from ..errors import NotApplicableError, ParameterError, WindowTooShortError
from ..options import Params, choice, custom, integer, integers, number, switch
from ..progress import Progress, counter
from ..prunable import prunable_columns as prunable_columns_of
from ..store import Layout, RunStore
from .dmd import complex_pairs
from .masks import read_masks, write_masks
from .scratch import ScratchArrays
from .topk import TopK, TopKMask, order_keys, top_k
from .windows import Window, check_gram_finite, check_window, parse_window

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
#: The epoch's DMD rank: Redman et al. 2022's exact DMD at full rank (every direction above the precision floor).
DEFAULT_RANK = "all"


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
    mask = reference.copy()
    counts = [int(reference[s].sum()) for s in prunable]
    for s, layer in zip(prunable, _lsp_layers(prunable, counts, seed=seed), strict=True):
        mask[s] = layer
    return mask


def _lsp_layers(prunable: Sequence[slice], counts: Sequence[int], *, seed: int) -> Iterator[np.ndarray]:
    """Each prunable layer's LSP mask in turn: ``counts[j]`` weights of layer j drawn without replacement.

    One generator per (seed, mask), drawn layer by layer in order, so a mask is a function of its seed and
    counts; memory is one layer's (numpy's ``choice`` holds an index of the layer).
    """
    rng = np.random.default_rng(seed)
    for s, kept in zip(prunable, counts, strict=True):
        layer = np.zeros(s.stop - s.start, dtype=bool)
        layer[rng.choice(layer.size, size=int(kept), replace=False)] = True
        yield layer


def mask_overlap(a: np.ndarray, b: np.ndarray, prunable: Sequence[slice], compression: float) -> float:
    """o = Σ mᴬ mᴮ / (N/c) over the prunable weights (Redman et al. 2022, Appendix B); N/c = the kept count."""
    index = np.concatenate([np.arange(s.start, s.stop) for s in prunable])
    kept = math.ceil(index.size / compression)
    return float(np.count_nonzero(a[index] & b[index]) / kept)


def _score_name(method: str) -> str:
    return f"score-{method}"


def _mask_name(method: str, i: int, seed: int = 0) -> str:
    """Scratch name of a method's mask at compression index ``i`` (LSP: of mask seed ``seed``)."""
    return f"mask-{method}-{i}" if not seed else f"mask-{method}-{i}-seed{seed}"


def _write_score_masks(arrays: ScratchArrays, method: str, prunable: Sequence[slice], compressions: np.ndarray,
                       scope: str) -> np.ndarray:
    """Write ``method``'s masks at every compression into ``arrays``, out of core, exactly
    :func:`mask_from_scores`' masks (same top ⌈n/c⌉ per group, same ties: the lower index first).

    Returns the kept counts per compression and prunable layer, shape (n_compressions, n_layers).
    """
    score = _score_name(method)
    groups = [list(range(len(prunable)))] if scope == "global" else [[j] for j in range(len(prunable))]
    group_of = {j: g for g, members in enumerate(groups) for j in members}

    def keys_of(members: list[int]) -> Any:
        def pieces() -> Iterator[np.ndarray]:
            for j in members:
                for lo, hi in arrays.pieces(prunable[j].start, prunable[j].stop):
                    yield order_keys(arrays.read(score, lo, hi))
        return pieces

    appliers = []
    for members in groups:
        size = sum(prunable[j].stop - prunable[j].start for j in members)
        tops: list[TopK] = top_k(keys_of(members), [math.ceil(size / float(c)) for c in compressions])
        appliers.append([TopKMask(t) for t in tops])
    counts = np.zeros((len(compressions), len(prunable)), dtype=np.int64)
    writers = [arrays.append_writer(_mask_name(method, i), bool) for i in range(len(compressions))]
    starts = [s.start for s in prunable]
    try:
        for lo, hi in arrays.pieces():
            masks = np.ones((len(compressions), hi - lo), dtype=bool)
            first = max(0, bisect.bisect_right(starts, lo) - 1)
            keys = None
            for j in range(first, len(prunable)):
                a, b = max(prunable[j].start, lo), min(prunable[j].stop, hi)
                if prunable[j].start >= hi:
                    break
                if a >= b:
                    continue
                if keys is None:
                    keys = order_keys(arrays.read(score, lo, hi))
                for i, apply in enumerate(appliers[group_of[j]]):
                    keep = apply(keys[a - lo : b - lo])
                    masks[i, a - lo : b - lo] = keep
                    counts[i, j] += int(np.count_nonzero(keep))
            for i, writer in enumerate(writers):
                writer.write(masks[i])
    finally:
        for writer in writers:
            writer.close()
    return counts


def _write_lsp_masks(arrays: ScratchArrays, prunable: Sequence[slice], counts: np.ndarray, seeds: int) -> None:
    """LSP's masks for every seed and compression: GMP's per-layer ``counts``, drawn as :func:`lsp_mask` does."""
    for seed in range(seeds):
        for i, layer_counts in enumerate(counts):
            writer = arrays.append_writer(_mask_name("lsp", i, seed), bool)
            try:
                position = 0
                for s, layer in zip(prunable, _lsp_layers(prunable, layer_counts, seed=seed), strict=True):
                    for lo, hi in arrays.pieces(position, s.start):
                        writer.write(np.ones(hi - lo, dtype=bool))
                    writer.write(layer)
                    position = s.stop
                for lo, hi in arrays.pieces(position, arrays.n):
                    writer.write(np.ones(hi - lo, dtype=bool))
            finally:
                writer.close()


def _prunable_piece(prunable: Sequence[slice], lo: int, hi: int) -> np.ndarray:
    piece = np.zeros(hi - lo, dtype=bool)
    for s in prunable:
        a, b = max(s.start, lo), min(s.stop, hi)
        if a < b:
            piece[a - lo : b - lo] = True
    return piece


def _shared_counts(items: Sequence[tuple[ScratchArrays, str]], prunable: Sequence[slice]) -> np.ndarray:
    """(K, K): Σ mᵃ ∧ mᵇ over the prunable weights for every pair of K masks (the diagonal: kept counts)."""
    counts = np.zeros((len(items), len(items)), dtype=np.int64)
    if not items:
        return counts
    arrays = items[0][0]
    for lo, hi in arrays.pieces():
        where = _prunable_piece(prunable, lo, hi)
        masks = [a.read(name, lo, hi) & where for a, name in items]
        for x, mx in enumerate(masks):
            for y in range(x, len(masks)):
                counts[x, y] = counts[y, x] = counts[x, y] + int(np.count_nonzero(mx & masks[y]))
    return counts


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
        return EpochScores(epoch, tuple(window), scored.operator, scored.lambda1_index, scored.kgp_modes,
                           scored.mode_norms, scores, arrays.read("theta"), scored.unavailable)
    finally:
        arrays.close()


@dataclass(frozen=True)
class WindowScores:
    """What :func:`score_window` found: the DMD of the window and the names of the scores it wrote."""

    operator: ReducedOperator
    lambda1_index: int
    kgp_modes: tuple[int, ...]
    mode_norms: np.ndarray
    scores: tuple[str, ...]
    unavailable: Mapping[str, str]

    @property
    def lambda1(self) -> complex:
        return complex(self.operator.eigenvalues[self.lambda1_index])


def score_window(
    store: RunStore,
    window: tuple[int, int],
    methods: Sequence[str],
    arrays: ScratchArrays,
    *,
    epoch: int | None = None,
    engine: Engine | None = None,
    recipe: Any = None,
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


def _gradient_scores(store: RunStore, rows: slice, arrays: ScratchArrays, *, engine: Engine, recipe: Any = None,
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
    """One method's masks across epochs (Redman et al. 2022 figs. 3, 5).

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

    Every per-compression array is indexed like ``compressions``: ``kept[m]`` and ``overlap[(a, b)]``
    have shape (n_compressions,). The N-long vectors (θ of the snapshot the scores and masks refer
    to, ``window[1]``; each score; each mask) stay on disk in ``arrays``, a scratch directory deleted
    with the result (issue 23: nothing of size N is held); :func:`~traj.analysis.masks.write_masks`
    and :func:`~traj.analysis.masks.write_exports` stream from it. :meth:`mask`, :attr:`masks`,
    :attr:`lsp_seed_masks`, :attr:`scores` and :attr:`theta` read them into memory on request.
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
    score_names: tuple[str, ...]
    kept: Mapping[str, np.ndarray]
    overlap: Mapping[tuple[str, str], np.ndarray]
    unavailable: Mapping[str, str]
    refine_epochs: int
    seeds: int
    seconds: float
    arrays: ScratchArrays = field(compare=False, repr=False, kw_only=True)
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

    def mask_name(self, method: str, index: int, seed: int = 0) -> str:
        """The name in ``arrays`` of a method's mask at compression ``compressions[index]`` (LSP: of ``seed``)."""
        if method not in self.methods:
            raise ParameterError("method", f"{method}: no {method} masks (methods: {', '.join(self.methods)})")
        return _mask_name(method, index, seed if method == "lsp" else 0)

    def mask(self, method: str, compression: float) -> np.ndarray:
        """The (N,) mask of one method at one compression (True = kept), read into memory."""
        return self.arrays.read(self.mask_name(method, self.index(compression)))

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Every mask in memory, ``{method: (n_compressions, N)}`` (LSP: its first seed). N bytes per mask."""
        return {m: np.stack([self.arrays.read(self.mask_name(m, i)) for i in range(len(self.compressions))])
                for m in self.methods}

    @property
    def lsp_seed_masks(self) -> np.ndarray | None:
        """LSP's masks of every seed in memory, shape (seeds, n_compressions, N); None without LSP."""
        if "lsp" not in self.methods:
            return None
        return np.stack([np.stack([self.arrays.read(self.mask_name("lsp", i, s)) for i in range(len(self.compressions))])
                         for s in range(self.seeds)])

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """Every score computed, in memory: ``{method: (N,) float64}``."""
        return {name: self.arrays.read(_score_name(name)) for name in self.score_names}

    @property
    def theta(self) -> np.ndarray:
        """θ at ``window[1]``, (N,) float64, in memory."""
        return self.arrays.read("theta")

    def to_dataframe(self) -> Any:
        """One row per method and compression c (pandas): the weights kept, and with a recipe the metric after
        pruning (mean and std over seeds) and after refinement (``refined_mean``, ``refined_std``)."""
        from ..tables import dataframe

        methods = [m for m in self.methods for _ in self.compressions]
        index = [i for _ in self.methods for i in range(len(self.compressions))]
        columns: dict[str, Any] = {"method": methods, "compression": self.compressions[index],
                                   "kept": [int(self.kept[m][i]) for m, i in zip(methods, index, strict=True)]}
        for prefix, table in (("", self.accuracy), ("refined_", self.accuracy_refined)):
            if table:
                columns[f"{prefix}mean"] = [float(table[m].mean[i]) for m, i in zip(methods, index, strict=True)]
                columns[f"{prefix}std"] = [float(table[m].std[i]) for m, i in zip(methods, index, strict=True)]
        return dataframe(columns, index=["method", "compression"])

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
def _methods(name: str, methods: Sequence[str] | str) -> tuple[str, ...]:
    names = [m.strip().lower() for m in methods] if not isinstance(methods, str) else [methods]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ParameterError(name, f"holds an unknown pruning method {bad[0] if bad else '(none)'}; "
                                   f"use {', '.join(METHODS)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class PruneParams(Params):
    """The options of a pruning run, each checked when the class is built (see :func:`prune`)."""

    epoch: int | None = integer(None, optional=True, help="Epoch to decompose (default the last complete one).")
    window: Window = custom(None, check_window, help="Snapshots a:b instead of an epoch.")
    methods: tuple[str, ...] = custom(METHODS, _methods, help="Comma-separated: kmp,kgp,gmp,jgp,ggp,lsp.")
    # c = 2 keeps half; c must exceed 1 (c = 1 prunes nothing) and be finite (c = inf keeps no weight)
    compressions: tuple[float, ...] = custom(tuple(float(c) for c in DEFAULT_COMPRESSIONS),
                                             lambda name, value: tuple(check_floats(name, value, low=1,
                                                                                    low_open=True)),
                                             help="Comma-separated compressions c > 1 (keep 1/c).")
    scope: Scope = choice("global", SCOPES, help="global or layer.")
    refine_epochs: int = integer(1, low=0, high=MAX_EPOCHS, help="Epochs of training with the mask fixed (0: none).")
    seeds: int = integer(3, low=1, high=MAX_SEEDS, help="Refinement seeds (and LSP mask seeds).")
    evaluate: bool = switch(True, help="Accuracy with the store's recipe.")
    epochs: tuple[int, ...] = integers((), help="Also compare masks across these epochs, e.g. 0,2,4.")
    rank: int | str | None = custom(DEFAULT_RANK, lambda name, value: check_rank(value, name, keywords=("all",)),
                                    help="DMD rank of the epoch: 'all' (Redman et al. 2022's: every direction the "
                                         "data resolve), 'auto' (Gavish–Donoho) or an integer.")
    kgp_fraction: float = number(0.85, low=0, high=1, help="KGP keeps the modes whose scaled norm ‖bj φj‖ is at least this fraction of the largest.")

    def validate(self) -> None:
        if self.epoch is not None and self.window is not None:
            raise ParameterError("window", "cannot be given with epoch: give one of them")


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
        direction above the precision floor, :func:`~traj.engine.operator.truncate`); "auto" the
        Gavish–Donoho threshold, which keeps fewer modes and so gives other KMP/KGP masks.
    """
    params = PruneParams(epoch=epoch, window=window, methods=methods, compressions=compressions,  # type: ignore[arg-type]
                         scope=scope, refine_epochs=refine_epochs, seeds=seeds,  # type: ignore[arg-type]
                         evaluate=evaluate, epochs=epochs, rank=rank, kgp_fraction=kgp_fraction)  # type: ignore[arg-type]
    return fit_prune(store, params, recipe=recipe, engine=engine, progress=progress)


def fit_prune(store: RunStore | str | os.PathLike[str], params: PruneParams, *, recipe: Any = None,
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


def _evaluate(result: PruneResult, recipe: Any, layout: Layout, dtype: np.dtype,
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
                   recipe: Any, scratch: str | os.PathLike[str] | None) -> EpochOverlap:
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
