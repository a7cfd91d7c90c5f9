"""The k highest scores of a vector read in pieces, exactly, in memory that does not grow with its length.

``mask_from_scores`` keeps the first k of ``np.argsort(-scores, kind="stable")``: the highest
scores, ties broken by the lower position, NaN last, -0.0 equal to 0.0. The same set is found
out of core by a radix select: each float64 becomes an order-preserving uint64 key
(:func:`order_keys`), four passes of 16-bit histograms find the key τ of the k-th highest
score, and a mask keeps every key above τ and the first ``k - #(key > τ)`` keys equal to τ
in order (:class:`TopK`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TopK", "TopKMask", "order_keys", "top_k"]

_SIGN = np.uint64(1 << 63)
_DIGIT = 16
_BINS = 1 << _DIGIT


def order_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys ordered like the float64 ``values`` (x < y ⇔ key(x) < key(y)); NaN lowest, ±0 equal."""
    x = np.asarray(values, dtype=np.float64) + 0.0  # -0.0 + 0.0 = +0.0: argsort sees them equal
    bits = x.view(np.uint64)
    keys = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    keys[np.isnan(x)] = 0  # argsort(-s) puts every NaN after every number
    return keys


@dataclass(frozen=True)
class TopK:
    """The k highest keys of a group: every key > ``threshold``, and the first ``ties`` keys == ``threshold``."""

    k: int
    threshold: int
    ties: int

    @classmethod
    def none(cls) -> TopK:
        return cls(0, (1 << 64) - 1, 0)


def top_k(pieces: Callable[[], Iterable[np.ndarray]], ks: Sequence[int]) -> list[TopK]:
    """The threshold of the k highest keys for every k in ``ks``, in four passes over ``pieces()``.

    ``pieces()`` yields the group's keys (:func:`order_keys`) piece by piece, the same every
    call. Memory: one 16-bit histogram per distinct prefix (at most ``len(ks)``).
    """
    total = None
    prefixes = [0] * len(ks)
    above = [0] * len(ks)
    live = [i for i, k in enumerate(ks) if k > 0]
    for level in range(64 // _DIGIT):
        shift = np.uint64(64 - _DIGIT * (level + 1))
        hists = {prefixes[i]: np.zeros(_BINS, dtype=np.int64) for i in live}
        if not hists:
            break
        count = 0
        for keys in pieces():
            count += keys.size
            digits = ((keys >> shift) & np.uint64(_BINS - 1)).astype(np.intp)
            if level == 0:
                hists[0] += np.bincount(digits, minlength=_BINS)
                continue
            high = keys >> np.uint64(shift + _DIGIT)
            for prefix, hist in hists.items():
                hist += np.bincount(digits[high == np.uint64(prefix)], minlength=_BINS)
        total = count if total is None else total
        for i in live:
            if ks[i] > total:
                raise ValueError(f"k = {ks[i]} exceeds the {total} keys")
            from_top = np.cumsum(hists[prefixes[i]][::-1])  # keys in digits ≥ 65535 - j under the prefix
            j = int(np.searchsorted(from_top, ks[i] - above[i]))  # first j with above + from_top[j] ≥ k
            above[i] += int(from_top[j - 1]) if j else 0
            prefixes[i] = (prefixes[i] << _DIGIT) | (_BINS - 1 - j)
    return [TopK(int(k), prefixes[i], int(k) - above[i]) if k > 0 else TopK.none() for i, k in enumerate(ks)]


class TopKMask:
    """Applies a :class:`TopK` to the group's keys piece by piece, in the group's order (ties: first come)."""

    def __init__(self, top: TopK) -> None:
        self.top = top
        self.taken = 0

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        threshold = np.uint64(self.top.threshold)
        keep = keys > threshold
        left = self.top.ties - self.taken
        if left > 0:
            equal = np.flatnonzero(keys == threshold)[:left]
            keep[equal] = True
            self.taken += equal.size
        return keep
