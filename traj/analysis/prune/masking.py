"""Prune's masks: the top-k of a score per compression (global or per layer), LSP's shuffled masks, and
their overlaps, written to scratch block by block."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ...checks import check_choice, check_float
from ...errors import NotApplicableError
from ...prunable import prunable_columns as prunable_columns_of
from ...store import RunStore
from ..scratch import ScratchArrays
from ..topk import TopK, TopKMask, order_keys, top_k
from .params import SCOPES


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
