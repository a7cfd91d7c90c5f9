"""The one rank rule of every DMD in traj (docs/methods.md §1.3): what rank a decomposition keeps, and why.

:func:`truncate` decides the rank from the singular values: the user's integer, Gavish–Donoho ("auto") or
every direction above the precision floor ("all"), never below :func:`precision_floor`, with a note where
it kept fewer than asked; :func:`truncate_sketch` does the same for the randomized range finder's σ,
:func:`resolved` lowers a cut to the modes whose eigenvalues the Gram resolves, and :func:`common_rank` and
:func:`largest_rank` pick one rank for several DMDs compared eigenvalue by eigenvalue. Every operator is built
by :class:`~traj.engine.operator.ReducedOperator`'s factory, which applies this rule and nothing else does
(``tests/engine/test_one_rank_rule.py`` scans the package for rank decisions made elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike

from ..checks import check_int
from ..errors import NotApplicableError, ParameterError, RankUnavailableError
from ..options import custom

__all__ = ["CLIFF", "RESOLVED", "Excess", "RankRequest", "Source", "Truncation", "check_rank", "common_rank", "rank_option",
           "gavish_donoho_threshold", "known_noise_threshold", "largest_rank", "no_noise_bulk", "noise_from_tail",
           "precision_floor", "resolved", "truncate", "truncate_sketch"]

#: How σ was obtained: eigenvalues of XᵀX ("gram", also the randomized finder on A = XᵀX) or an SVD of X ("svd").
Source = Literal["gram", "svd"]
#: What to do with an explicit rank above the available directions: refuse, keep what there is and say so,
#: or let the "auto" rule decide (a layer of ``traj dmd --per-layer`` with fewer directions than the rank).
Excess = Literal["raise", "reduce", "auto"]
RankRequest = int | Literal["auto", "all"] | None
#: Error estimate (absolute, |λ| ~ 1) up to which "auto" on the Gram path keeps a mode (docs/methods.md §1.5).
RESOLVED = 1e-6
#: The rank rules, as results name them (``Truncation.rule``, the JSON's ``rank_rule``).
RULE_EXPLICIT = "explicit"
RULE_ALL = "all-above-floor"
RULE_MEDIAN = "gavish-donoho-median"
RULE_TAIL = "gavish-donoho-tail-noise"
RULE_NO_BULK = "all-above-floor-no-noise-bulk"
#: A fall from at least this many times the floor to below it, in one step, is a cliff: the data hold
#: exactly the directions above it (noise-free), not a noise bulk (whose singular values sit together).
CLIFF = 10.0


def check_rank(rank: int | str | None, name: str = "rank", *, keywords: tuple[str, ...] = ("auto",),
               most: int | None = None) -> int | str | None:
    """A DMD rank: "auto" (or None) for the Gavish–Donoho threshold, another of ``keywords`` (e.g. "all",
    every direction above the precision floor, where a caller offers it), or an integer >= 1 (and at most
    ``most``, the pairs of a window known before any pass: a range finder's basis holds no more).

    Whether the data hold that many directions is known only after the Gram pass.
    """
    if rank is None or rank == "auto" or (isinstance(rank, str) and rank in keywords):
        return rank
    if most is not None and (not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= most):
        raise ParameterError(name, f"must lie in 1..{most} for this window, got {rank}")
    if isinstance(rank, str):
        words = " or ".join(repr(k) for k in dict.fromkeys(("auto", *keywords)))
        raise ParameterError(name, f"must be {words} or an integer >= 1, got {rank!r}")
    return check_int(name, rank, low=1)


def rank_option(default: int | str | None, *, help: str, keywords: tuple[str, ...] = ("auto",)) -> Any:
    """A ``Params`` field (:mod:`traj.options`) holding a DMD rank, checked by :func:`check_rank` with ``keywords``."""
    return custom(default, lambda name, value: check_rank(value, name, keywords=keywords), help=help)


def precision_floor(dtype: DTypeLike, *, source: Source) -> float:
    """σ/σ1 below which a singular value is rounding, never a direction (docs/methods.md §1.2).

    Two limits, and the larger one decides:

    - the data: float32 values carry a relative rounding of ~6e-8 each, which puts noise
      singular values up to ~1e-6·σ1 whatever the path (float64 data: no limit of their own);
    - the path: σ² from the eigenvalues of XᵀX (the streamed Gram, KGA's window Gram, the
      randomized range finder on A = XᵀX) are exact to ~ε·σ1², so σ only to √ε·σ1 ≈ 1.5e-8·σ1
      in float64 (the Gram squares the condition number): 1e-7; an SVD of X itself (pairs held
      in memory) resolves σ to ~ε·max(m, n)·σ1: 1e-12.

    So the Gram path stops at 1e-7 for float64 data and 1e-6 for float32 data; an in-memory
    SVD keeps float64 data down to 1e-12 and float32 data to 1e-6.
    """
    dt = np.dtype(dtype)
    if dt == np.float64:
        data = 0.0
    elif dt == np.float32:
        data = 1e-6
    else:  # half precision and the like: a few units of their rounding
        data = 8 * float(np.finfo(dt).eps) if np.issubdtype(dt, np.floating) else 0.0
    path = 1e-7 if source == "gram" else 1e-12
    return max(data, path)


def gavish_donoho_threshold(sigma: np.ndarray, n_rows: int, n_cols: int) -> float:
    """Optimal hard threshold for unknown noise (Gavish & Donoho 2014): τ = ω(β)·median(σ).

    β = min(N, T)/max(N, T); ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43 (docs/methods.md §1.2).
    """
    beta = min(n_rows, n_cols) / max(n_rows, n_cols)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return float(omega * np.median(sigma))


def known_noise_threshold(noise: float, n_rows: int, n_cols: int) -> float:
    """Optimal hard threshold for a known noise level σ (Gavish & Donoho 2014, Theorem 1): τ = λ*(β)·√n·σ.

    n = max(N, T), β = min(N, T)/n and λ*(β) = √(2(β+1) + 8β/((β+1) + √(β² + 14β + 1))). The
    unknown-noise rule :func:`gavish_donoho_threshold` is this one with σ estimated from the median σ.
    """
    n = max(n_rows, n_cols)
    beta = min(n_rows, n_cols) / n
    lam = np.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + np.sqrt(beta**2 + 14 * beta + 1)))
    return float(lam * np.sqrt(n) * noise)


def noise_from_tail(sigma: np.ndarray, trace: float, kept: int, shape: tuple[int, int]) -> float:
    """The white-noise level σ̂ of an N×T matrix X = S + σZ from its energy outside the ``kept`` leading directions.

    tr(XᵀX) − Σ_{i≤k} σi² is the residual of the best rank-k fit. Each of the k directions above
    the noise carries (N + T)·σ² of the noise energy besides its signal (a spike s² of the signal
    becomes s² + (N + T)σ² + NTσ⁴/s², Benaych-Georges & Nadakuditi 2012), so the residual holds
    σ²·(N − k)(T − k) up to k²σ² and the weak spikes' NTσ⁴/s²: the residual degrees of freedom of
    a rank-k fit. So σ̂² = (tr XᵀX − Σ_{i≤k} σi²) / ((N − k)(T − k)). Needs only the k leading σ
    and the trace, which a sketch gives.
    """
    n_rows, n_cols = shape
    dof = float(n_rows - kept) * float(n_cols - kept)
    tail = max(float(trace) - float(np.sum(np.asarray(sigma[:kept], dtype=np.float64) ** 2)), 0.0)
    return float(np.sqrt(tail / dof)) if dof > 0 else 0.0


@dataclass(frozen=True)
class Truncation:
    """The rank decision of one DMD: how many directions it keeps, and why.

    Attributes
    ----------
    rank : int
        r, the directions kept.
    requested : int or str
        What was asked: an integer, "auto" (Gavish–Donoho) or "all" (every direction above the floor).
    available : int
        Singular values above the floor.
    floor : float
        The absolute floor, ``precision_floor(...)``·σ1.
    threshold : float or None
        The Gavish–Donoho threshold τ (absolute) when "auto" decided.
    note : str or None
        Why fewer directions were kept than an explicit request asked (None when it was not reduced).
    rule : str
        The rule that decided: ``explicit``, ``all-above-floor``, ``gavish-donoho-median`` (unknown
        noise, the median of every σ) or ``gavish-donoho-tail-noise`` (known-noise threshold with σ̂
        from the energy outside a sketch, :func:`noise_from_tail`).
    noise : float or None
        σ̂, the noise level the tail rule estimated.
    """

    rank: int
    requested: int | str
    available: int
    floor: float
    threshold: float | None = None
    note: str | None = None
    rule: str = RULE_EXPLICIT
    noise: float | None = None


def truncate(
    sigma: np.ndarray,
    *,
    rank: RankRequest,
    shape: tuple[int, int],
    dtype: DTypeLike,
    source: Source,
    excess: Excess = "raise",
    parameter: str = "rank",
    trace: float | None = None,
) -> Truncation:
    """The rank rule of every DMD in traj (docs/methods.md §1.2).

    Parameters
    ----------
    sigma : ndarray of shape (m,)
        Singular values of X, descending: all of them, or (with ``trace``) the leading ones a sketch gives.
    rank : int, "auto", "all" or None
        An explicit rank; "auto" (or None) keeps the singular values above the Gavish–Donoho
        threshold; "all" every one above the floor. Never fewer than 1, never one below the floor.
        With every σ, "auto" is the unknown-noise rule τ = ω(β)·median(σ). With ``trace`` (a sketch),
        it is the known-noise rule τ = λ*(β)·√n·σ̂ (:func:`known_noise_threshold`) with σ̂ from the
        energy outside the kept directions (:func:`noise_from_tail`), iterated from k = 0 to its fixed
        point (σ̂ falls as k grows, so k only grows): the two agree on a low-rank signal in white noise.
    trace : float, optional
        tr(XᵀX) = Σ of every σ², when ``sigma`` holds only the leading singular values.
    shape : (n_features, n_pairs)
        The shape of X, for the threshold's aspect ratio β.
    dtype, source
        The data's dtype and how σ was obtained: they set the floor (:func:`precision_floor`).
    excess : {"raise", "reduce", "auto"}
        An explicit rank above the available directions raises :class:`RankUnavailableError`
        ("raise"), is reduced to them with a ``note`` saying so ("reduce"), or gives way to the "auto"
        rule, with a ``note`` saying so ("auto").
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if not sigma.size or not sigma[0] > 0:
        raise NotApplicableError("the trajectory is all zeros in this window: nothing to decompose")
    floor = precision_floor(dtype, source=source) * float(sigma[0])
    available = int(np.count_nonzero(sigma > floor))
    if (rank is None or rank == "auto") and trace is not None:
        kept = 0
        for _ in range(sigma.size + 1):
            noise = noise_from_tail(sigma, trace, kept, shape)
            tau = known_noise_threshold(noise, *shape)
            now = min(available, int(np.count_nonzero(sigma > tau)))
            if now == kept:
                break
            kept = now
        return Truncation(max(1, kept), "auto", available, floor, tau, rule=RULE_TAIL, noise=noise,
                          note=_floor_note(sigma, tau, available, floor, source))
    if rank is None or rank == "auto":
        tau = gavish_donoho_threshold(sigma, *shape)
        kept = max(1, min(available, int(np.count_nonzero(sigma > tau))))
        why = no_noise_bulk(sigma, floor, available, shape)
        if why is not None and available > kept:
            note = (f"rank auto kept all {available} directions above the precision floor {floor / sigma[0]:.0e}·σ1: "
                    f"no noise bulk ({why}), which Gavish–Donoho's threshold assumes (it would keep {kept})")
            return Truncation(available, "auto", available, floor, tau, note=note, rule=RULE_NO_BULK)
        return Truncation(kept, "auto", available, floor, tau, rule=RULE_MEDIAN,
                          note=_floor_note(sigma, tau, available, floor, source))
    if rank == "all":
        return Truncation(max(1, available), "all", available, floor, rule=RULE_ALL)
    requested = check_rank(rank, parameter)
    assert isinstance(requested, int)
    if requested <= available:
        return Truncation(requested, requested, available, floor)
    why = (f"{requested} asked for, but only {available} singular value(s) of this window lie above the "
           f"floor {floor / sigma[0]:.0e}·σ1 (T = {shape[1]} transitions, N = {shape[0]})")
    if excess == "raise":
        raise RankUnavailableError(parameter, requested, available, why)
    if excess == "auto":
        cut = truncate(sigma, rank="auto", shape=shape, dtype=dtype, source=source, trace=trace)
        return replace(cut, note=f"{parameter} {why}: rank auto kept {cut.rank}")
    return Truncation(max(1, available), requested, available, floor, note=f"{parameter} {why}: kept {max(1, available)}")


def truncate_sketch(
    sigma: np.ndarray,
    *,
    rank: RankRequest,
    shape: tuple[int, int],
    dtype: DTypeLike,
    trace: float,
    n_oversamples: int,
) -> Truncation:
    """The rank rule on a range finder's σ (the randomized path of docs/methods.md §1.2).

    :func:`truncate` with the Gram path's floor (the σ² are eigenvalues of Qᵀ(XᵀX)Q) and, for "auto",
    the known-noise threshold with σ̂ from the energy the sketch leaves (``trace`` = tr XᵀX). A sketch
    that holds fewer than all T = ``shape[1]`` directions but not ``n_oversamples`` past the kept rank
    may miss directions above the threshold: its note says so.

    Parameters
    ----------
    sigma : ndarray of shape (width,)
        The sketch's singular values, descending (width = the basis's directions).
    rank, shape, dtype
        See :func:`truncate`.
    trace : float
        tr(XᵀX), the energy of every direction.
    n_oversamples : int
        p, the directions the basis should hold past the kept rank.
    """
    auto = rank is None or rank == "auto"
    cut = truncate(sigma, rank=rank, shape=shape, dtype=dtype, source="gram", trace=trace if auto else None)
    width = np.asarray(sigma).size
    if auto and cut.rank + n_oversamples > width and width < shape[1]:  # (a basis of all T directions is exact)
        note = (f"auto: the sketch stopped at its limit of {width} directions with {cut.rank} above the threshold; "
                f"more may lie beyond (a larger memory budget or the Gram method sees them)")
        cut = replace(cut, note=f"{cut.note}; {note}" if cut.note else note)
    return cut


def _floor_note(sigma: np.ndarray, tau: float, available: int, floor: float, source: Source) -> str | None:
    """Why "auto" kept fewer directions than Gavish–Donoho's threshold τ would: the precision floor cut them
    (None when the threshold decided). PyDMD, which has no floor, keeps them."""
    above = int(np.count_nonzero(sigma > tau))
    if above <= available:
        return None
    how = ("σ from XᵀX's eigenvalues (the Gram, or a range finder's XᵀX products) are exact only to ~1e-7·σ1"
           if source == "gram" else "an SVD of X resolves σ only to ~1e-12·σ1")
    data = floor / sigma[0] > precision_floor(np.float64, source=source)
    return (f"rank auto kept the {available} directions above the precision floor {floor / sigma[0]:.0e}·σ1, not "
            f"the {above} above Gavish–Donoho's threshold: the floor decided "
            f"({'the data themselves are rounded at that level' if data else how}; below it lies rounding, not signal)")


def no_noise_bulk(sigma: np.ndarray, floor: float, available: int, shape: tuple[int, int]) -> str | None:
    """Why the singular values of X (N×T) hold no noise bulk, or None when they may hold one.

    Gavish–Donoho's unknown-noise threshold τ = ω(β)·median(σ) takes the median σ for a member of a
    Marchenko–Pastur bulk of noise. Noise-free data have none, and show it in one of two ways:

    - the spectrum falls off a cliff into the precision floor: from at least CLIFF times the floor to
      below it in one step (exactly ``available`` directions, then rounding). A smooth decay through
      the floor (a training run's tail) is no cliff and stays with Gavish–Donoho;
    - low-dimensional data (N ≤ T, so every one of the N singular values is seen): the smallest lies
      below the median times (1 − √β)/(1 + √β), the ratio of the Marchenko–Pastur bulk's lower edge to
      its upper edge (β = N/T). Noise singular values lie between those edges, so no σ of a bulk can be
      that far below its median: the median is a signal direction's. (With N ≫ T the spectrum of a
      training run decays smoothly and this test would reject every run: it is not applied there.)
    """
    n_features, n_pairs = shape
    if 0 < available < sigma.size and sigma[available - 1] >= CLIFF * floor:
        return (f"the singular values fall from {sigma[available - 1] / sigma[0]:.1e}·σ1 to "
                f"{sigma[available] / sigma[0]:.1e}·σ1 in one step")
    if n_features <= n_pairs and sigma.size >= 2:
        root = np.sqrt(n_features / n_pairs)
        median = float(np.median(sigma))
        edge = median * (1 - root) / (1 + root)
        smallest = float(sigma[min(available, sigma.size) - 1])
        if smallest < edge:
            return (f"the smallest of the {sigma.size} singular values is {smallest / median:.2g} x their median, "
                    f"below a noise bulk's {(1 - root) / (1 + root):.2g}")
    return None


def resolved(cut: Truncation, sigma: np.ndarray, errors: Callable[[int], np.ndarray], tolerance: float, *,
             path: Literal["gram", "sketch"] = "gram") -> Truncation:
    """``cut`` lowered to the largest rank whose eigenvalues all have error estimates <= ``tolerance``.

    ``errors(r')`` gives the estimates at rank r' (:func:`gram_eigenvalue_errors` on the leading r'×r'
    block of Ã, whose basis is the leading r' columns of V), so the cut needs no new pass: a bisection
    over r' on small eigenproblems. ``path`` words the note for the path that built σ: "gram" (the
    Gram's eigenvalues) or "sketch" (the randomized range finder's σ², from XᵀX products; it forms no
    Gram but squares the condition number as one does).
    """

    def worst(r: int) -> float:
        return float(np.max(errors(r)))

    if cut.rank <= 1 or worst(cut.rank) <= tolerance:
        return cut
    lo, hi = 1, cut.rank  # worst(lo) is accepted (rank 1 always is), worst(hi) is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if worst(mid) <= tolerance else (lo, mid)
    why = ("the Gram resolves the eigenvalues" if path == "gram" else
           "the range finder's σ² come from XᵀX products (squaring the condition number as a Gram does), which "
           "resolve the eigenvalues")
    note = (f"auto kept {lo} of {cut.rank} modes: beyond {lo} {why} only to worse than "
            f"{tolerance:.0e} (σ{lo + 1}/σ1 = {sigma[lo] / sigma[0]:.1e}; an SVD of the data resolves them)")
    return replace(cut, rank=lo, note=f"{cut.note}; {note}" if cut.note else note)


def common_rank(cuts: Sequence[Truncation]) -> tuple[int, int]:
    """The one rank at which several DMDs are compared eigenvalue by eigenvalue, and which of them set it.

    Each DMD was cut by :func:`truncate` at the same request; a comparison of their eigenvalues one to one
    needs one rank for all, so it is the smallest rank any of them kept (each can be refitted at it with an
    explicit request: it is at most what each keeps). Returns that rank and the index of the first DMD
    that kept only that many (its ``note`` says why). Used by ``traj conjugacy`` (docs/methods.md §4.1).
    """
    ranks = [cut.rank for cut in cuts]
    smallest = min(ranks)
    return smallest, ranks.index(smallest)


def largest_rank(requested: int, accept: Callable[[int], bool]) -> int:
    """The largest rank r <= ``requested`` at which ``accept(r)`` holds, tried from ``requested`` down; 1 when none does.

    A linear search, not :func:`resolved`'s bisection: the test need not be monotone in r (a rank that splits a
    degenerate pair of eigenvalues fails where the ranks around it pass). ``traj conjugacy``'s rule
    "reproducible" asks for the rank at which every eigenvalue is reproduced by the seed null (docs/methods.md §4.4).
    """
    return next((r for r in range(requested, 0, -1) if accept(r)), 1)
