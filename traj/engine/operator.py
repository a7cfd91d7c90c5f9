"""The reduced Koopman operator of exact DMD (docs/methods.md §1.2-§1.4) and the one factory that builds it.

Kept apart from the DMD estimator, as PyDMD keeps ``DMDOperator``: dmd, prune, conjugacy
and kga all use the same object. Every path to it goes through the same three decisions,
written once here (as PyDMD derives every variant's rank from one ``compute_svd`` and
scikit-learn has one ``svd_flip``):

- :func:`truncate` decides the rank: the user's integer, Gavish–Donoho ("auto") or every
  direction above the precision floor ("all"), never below :func:`precision_floor`;
- :func:`fix_signs` fixes the sign of singular vectors and :func:`eigen` orders the
  eigenvalues (|λ| descending, then Im λ descending) and fixes the eigenvectors' phase.

The paths are :meth:`ReducedOperator.from_gram` (the streamed Gram, and KGA's in-memory
window), :meth:`ReducedOperator.from_pairs` (snapshot pairs X, Y held in memory: conjugacy's
small observables with stacked trajectories and delays) and :meth:`ReducedOperator.from_svd`
(σ and V from anywhere, e.g. the randomized range finder). Everything here is small-matrix
work on (T+1)×(T+1) and r×r arrays; nothing touches the N coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import DTypeLike

from ..checks import check_int
from ..errors import NotApplicableError, ParameterError, RankUnavailableError, WindowTooShortError

__all__ = ["ReducedOperator", "Truncation", "check_rank", "common_rank", "eigen", "largest_rank", "eigenvalue_errors", "fix_signs",
           "gavish_donoho_threshold", "known_noise_threshold", "no_noise_bulk", "noise_from_tail", "precision_floor", "RESOLVED", "resolved",
           "exact_product", "eigh_residual", "gram_eigenvalue_errors", "leading_block_errors", "singular_values_from_gram", "truncate", "truncate_sketch", "ModeClass", "NEUTRAL", "STABLE", "UNSTABLE"]

ModeClass = Literal["neutral", "stable", "unstable"]
NEUTRAL: ModeClass = "neutral"
STABLE: ModeClass = "stable"
UNSTABLE: ModeClass = "unstable"
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


def eigenvalue_errors(sigma: np.ndarray, atilde: np.ndarray, left: np.ndarray, right: np.ndarray | None = None, *,
                      source: Source, n_pairs: int | None = None) -> np.ndarray:
    """A first-order estimate of each eigenvalue's rounding error (docs/methods.md §1.5).

    δλk = lk δÃ wk for a perturbation δÃ of Ã (W's columns wk, L = W⁻¹'s rows lk), so
    |δλk| ≲ Σij |lki| Eij |wjk| with Eij the rounding of Ãij by the path that built it. Ã =
    Σr⁻¹Vrᵀ(XᵀY)VrΣr⁻¹: from the Gram, exact to ~ε·σ1², Eij = ε·√T·σ1²/(σiσj) (the Gram squares
    the condition number); from an SVD of X, backward stable, Eij = ε·√T·σ1/σj. Both are scaled by
    max(1, ‖Ã‖₂). The data's own rounding (float32 storage) is a property of the data, not of the
    method, and is not included. T is ``n_pairs`` (default ``len(sigma)``, every σ of X; a sketch
    holds fewer).
    """
    r = atilde.shape[0]
    n_sigma = len(sigma) if n_pairs is None else n_pairs
    sigma = np.asarray(sigma, dtype=np.float64)[:r]
    if r == 0 or not sigma[0] > 0:
        return np.zeros(r)
    if right is None:
        right = np.linalg.inv(left)
    u = float(np.finfo(np.float64).eps) * np.sqrt(n_sigma) * max(1.0, float(np.linalg.norm(atilde, 2)))
    with np.errstate(divide="ignore", over="ignore"):
        scale = sigma[0] / sigma
        e = u * (np.outer(scale, scale) if source == "gram" else np.broadcast_to(scale, (r, r)))
    return np.einsum("ki,ij,jk->k", np.abs(left), e, np.abs(right))


def exact_product(a: np.ndarray, b: np.ndarray, *, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A·B to about twice float64's precision, as a pair (hi, lo) with A·B ≈ hi + lo, by float64 BLAS products.

    Ozaki, Ogita, Oishi & Rump (2012), error-free transformation of a matrix product: each row of A
    (column of B) is cut into slices of β = ⌊(53 − ⌈log2 n⌉)/2⌋ bits on a grid of its own scale, so that
    every product of two slices, n terms summed, is exact in float64 in any order; the products whose
    slices together fall below 2^-4β of the scale are left out, and the rest summed with TwoSum
    (Knuth). Ten BLAS products in all, ``block`` rows of A by ``block`` columns of B at a time (the
    slices of a whole T×T matrix would be four more copies of it). Used for the residual
    :func:`eigh_residual`, which float64 products would drown in their own rounding (the same size as
    what they measure).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.shape[1]
    beta = (53 - int(np.ceil(np.log2(max(n, 2))))) // 2
    hi = np.zeros((a.shape[0], b.shape[1]))
    lo = np.zeros_like(hi)
    for c0 in range(0, b.shape[1], block):
        b_parts = _slices(b[:, c0 : c0 + block], beta, axis=0)
        for r0 in range(0, a.shape[0], block):
            a_parts = _slices(a[r0 : r0 + block], beta, axis=1)
            h, e = hi[r0 : r0 + block, c0 : c0 + block], lo[r0 : r0 + block, c0 : c0 + block]  # views
            # smallest terms first; slices s and t together carry 2^-(s+t)β of the scale
            for total in range(len(a_parts) + 1, 1, -1):
                for i in range(max(0, total - len(b_parts) - 1), min(total - 1, len(a_parts))):
                    term = a_parts[i] @ b_parts[total - 2 - i]
                    new = h + term  # TwoSum: h + term = new + err exactly
                    back = new - h
                    e += (h - (new - back)) + (term - back)
                    h[...] = new
    return hi, lo


def _slices(m: np.ndarray, beta: int, *, axis: int, count: int = 4) -> list[np.ndarray]:
    """``m`` = Σ slices exactly: ``count`` − 1 slices of β bits each on the grid of each row's (axis=1) or
    column's (axis=0) largest entry, and the remainder (:func:`exact_product`)."""
    rest = m.copy()
    parts = []
    for _ in range(count - 1):
        top = np.max(np.abs(rest), axis=axis, keepdims=True)
        with np.errstate(divide="ignore"):
            exponent = np.where(top > 0, np.ceil(np.log2(np.where(top > 0, top, 1.0))), 0.0)
        shift = np.ldexp(1.0, (exponent + 53 - beta).astype(int))
        high = (rest + shift) - shift
        parts.append(high)
        rest = rest - high
    parts.append(rest)
    return parts


def eigh_residual(matrix: np.ndarray, vectors: np.ndarray, values: np.ndarray, columns: int) -> np.ndarray:
    """The backward error of a symmetric eigendecomposition, in its own basis: Vᵀ M V[:, :c] − Λ[:, :c].

    Parameters
    ----------
    matrix : ndarray of shape (m, m)
        M, symmetric (XᵀX on the Gram path).
    vectors, values : ndarray of shape (m, m) and (m,)
        V and Λ as computed (V orthonormal to rounding).
    columns : int
        c, how many leading columns are needed (the modes kept, r).

    Returns
    -------
    ndarray of shape (m, c)
        Entry (a, b): how far the computed pair is from exact, measured at twice float64's precision
        (:func:`exact_product`): in float64 the product rounds by as much as the residual itself.
    """
    p_hi, p_lo = exact_product(matrix, vectors[:, :columns])
    s_hi, s_lo = exact_product(vectors.T, p_hi)
    s_hi[np.arange(columns), np.arange(columns)] -= values[:columns]
    return s_hi + (s_lo + vectors.T @ p_lo)


def gram_eigenvalue_errors(sigma: np.ndarray, residual: np.ndarray, b_cols: np.ndarray, b_rows: np.ndarray | None,
                           atilde: np.ndarray, eigenvalues: np.ndarray, right: np.ndarray, left: np.ndarray, *,
                           spread: np.ndarray | None = None) -> np.ndarray:
    """Each eigenvalue's rounding error on the Gram path, from the measured residual of XᵀX's eigendecomposition.

    σ² and V are exact for XᵀX + E, with E = V Δ Vᵀ and Δ = ``residual`` (:func:`eigh_residual`); that is
    the path's dominant rounding (the Gram's own accumulation, in float64 from float32 or float64 data, is
    far smaller). To first order (docs/methods.md §1.5; Stewart & Sun 1990, Ch. V) Δ moves the eigenvalues of
    Ã = Σr⁻¹ Vrᵀ(XᵀY) Vr Σr⁻¹ in two ways, both linear in Δ:

    - inside the kept subspace Ã's eigenvalues are those of the pencil (Vrᵀ XᵀY Vr, Σr²), so
      δλk = −λk Σab lka Δab wbk / (σa σb);
    - between a kept direction i and a dropped one j, V's column i turns by Δji/(σi² − σj²), and
      δλk = Σij Δji [lki (B⊥r Σr⁻¹ wk)j + wik (lk Σr⁻¹ Br⊥)j] / (σi (σi² − σj²)), B = Vᵀ XᵀY V.

    With Δ measured, that sum is the error itself to first order (within a factor 2 of the true error in
    every case measured). The estimate is twice its magnitude, plus a fifth of the sum of the terms'
    magnitudes Σ |coefficient|·|Δ| (so that a sum that happens to cancel is not taken for an exact
    eigenvalue), plus LAPACK's ε‖Ã‖F‖lk‖ for the eigenproblem of Ã itself. Measured against an SVD of the
    same data (``benchmarks/gram_error_estimate.py``) its largest value lies 1–10 times above the largest
    true error where that is below 1e-6; the a-priori bound it replaces (ε√T σ1²/(σiσj) for every entry
    of Δ, :func:`eigenvalue_errors`) lay 10^3–10^6 above. Beyond ~1e-6 second-order terms grow and it
    may fall below the true error by up to 2x: it decides what is resolved, not how badly the rest is off.

    Parameters
    ----------
    sigma : ndarray of shape (m,)
        Every known σ (the Gram: all T; a sketch: its basis's).
    residual : ndarray of shape (m, r)
        Δ[:, :r].
    b_cols : ndarray of shape (m, r)
        Vᵀ (XᵀY) Vr.
    b_rows : ndarray of shape (r, m), optional
        Vrᵀ (XᵀY) V (None: b_colsᵀ stands in, for a range finder that has only XᵀY Vr).
    atilde, eigenvalues, right, left
        Ã (r×r) and its eigen-decomposition (:func:`eigen`).
    spread : ndarray of shape (m, r), optional
        Further rounding of Δ's entries known only in size (the range finder: the asymmetry of QᵀAQ),
        added to |Δ| in the sum of magnitudes.
    """
    r = atilde.shape[0]
    sigma = np.asarray(sigma, dtype=np.float64)
    sr = sigma[:r]
    size = np.abs(residual) if spread is None else np.abs(residual) + spread
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        scale = np.outer(sr, sr)
        signed = -eigenvalues * np.einsum("ka,ab,bk->k", left, residual[:r, :r] / scale, right)
        worst = np.abs(eigenvalues) * np.einsum("ka,ab,bk->k", np.abs(left), size[:r, :r] / scale, np.abs(right))
        if sigma.size > r:
            dropped = sigma[r:]
            gap = sr[:, None] * (sr[:, None] ** 2 - dropped[None, :] ** 2)  # (i, j): σi (σi² − σj²)
            p = ((b_cols[r:, :r] / sr) @ right).T  # (k, j): (B⊥r Σr⁻¹ wk)j
            q = left @ ((b_rows[:r, r:] if b_rows is not None else b_cols[r:, :r].T) / sr[:, None])  # (k, j)
            turn = residual[r:, :r].T / gap
            signed = signed + np.sum((left @ turn) * p, axis=1) + np.sum((right.T @ turn) * q, axis=1)
            turn = size[r:, :r].T / np.abs(gap)
            worst = worst + np.sum((np.abs(left) @ turn) * np.abs(p), axis=1) + np.sum((np.abs(right.T) @ turn)
                                                                                      * np.abs(q), axis=1)
        total = (2 * np.abs(signed) + worst / 5
                 + float(np.finfo(np.float64).eps) * np.linalg.norm(atilde) * np.linalg.norm(left, axis=1))
    return np.where(np.isfinite(total), total, np.inf)


def leading_block_errors(sigma: np.ndarray, residual: np.ndarray, b_cols: np.ndarray, b_rows: np.ndarray | None,
                         r: int, *, spread: np.ndarray | None = None) -> np.ndarray:
    """:func:`gram_eigenvalue_errors` of the rank-r DMD inside a larger one (Ã's leading r×r block)."""
    sr = sigma[:r]
    atilde = b_cols[:r, :r] / np.outer(sr, sr)
    eigenvalues, right, left = eigen(atilde)
    return gram_eigenvalue_errors(sigma, residual[:, :r], b_cols[:, :r], None if b_rows is None else b_rows[:r],
                                  atilde, eigenvalues, right, left, spread=None if spread is None else spread[:, :r])


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


def fix_signs(v: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flip each column of ``v`` (and the same columns of ``others``) so that its largest-magnitude
    entry is positive: deterministic singular vectors, as scikit-learn's ``svd_flip``."""
    pivot = np.argmax(np.abs(v), axis=0)
    signs = np.sign(v[pivot, np.arange(v.shape[1])])
    signs[signs == 0] = 1.0
    return (v * signs, *(o * signs for o in others))


def singular_values_from_gram(xtx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors of X from XᵀX = V Σ² Vᵀ.

    Parameters
    ----------
    xtx : ndarray of shape (T, T)
        Symmetric positive semi-definite.

    Returns
    -------
    sigma : ndarray of shape (T,)
    V : ndarray of shape (T, T)
        Columns in the order of ``sigma``, signs fixed by :func:`fix_signs`.
    """
    evals, v = _eigh_descending(xtx)
    return np.sqrt(np.clip(evals, 0.0, None)), v


def _eigh_descending(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, as computed: not clipped) and eigenvectors (signs fixed) of a symmetric matrix."""
    evals, evecs = np.linalg.eigh(matrix)
    order = np.argsort(evals)[::-1]
    (v,) = fix_signs(evecs[:, order])
    return evals[order], v


def eigen(atilde: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues Λ, right eigenvectors W and L = W⁻¹ of Ã, in traj's one order.

    |λ| descending, then Im λ descending (so k largest-modulus eigenvalues are the first k);
    each column of W has unit norm and its largest-magnitude entry real and positive.
    """
    eigenvalues, w = np.linalg.eig(atilde)
    order = np.lexsort((-eigenvalues.imag, -np.abs(eigenvalues)))
    eigenvalues, w = eigenvalues[order], w[:, order]
    w = w / np.linalg.norm(w, axis=0)
    pivot = np.argmax(np.abs(w), axis=0)
    phase = w[pivot, np.arange(w.shape[1])]
    w = w * (np.abs(phase) / phase)
    return eigenvalues, w, np.linalg.inv(w)


@dataclass(frozen=True)
class ReducedOperator:
    """Exact DMD of a window: the reduced operator and, for one trajectory D, its mode expansion.

    Attributes
    ----------
    singular_values : ndarray of shape (T,)
        All singular values of X (descending).
    truncation : Truncation
        The rank decision (rank, what was asked, floor, Gavish–Donoho threshold, a note when reduced).
    modes_basis : ndarray of shape (T, r)
        V_r, the leading right singular vectors of X.
    atilde : ndarray of shape (r, r)
        Ã = Σr⁻¹ Vrᵀ (XᵀY) Vr Σr⁻¹ = Urᵀ Y Vr Σr⁻¹.
    eigenvalues : ndarray of shape (r,), complex
        In :func:`eigen`'s order.
    right : ndarray of shape (r, r)
        W, Ã W = W Λ (unit-norm columns).
    left : ndarray of shape (r, r)
        L = W⁻¹ (rows are left eigenvectors).
    coefficients : ndarray of shape (T+1, r), complex, or None
        C with exact DMD modes Φ = D C = Y Vr Σr⁻¹ W (None for pairs held in memory, which
        are no single trajectory D).
    amplitudes : ndarray of shape (r,), complex, or None
        b = Φ⁺ θ_start.
    gram_coefficients : ndarray of shape (T+1, r), or None
        G C, from which ΦᴴΦ = Cᴴ G C, Φᴴθ0 and the reconstruction error follow.
    gram_trace : float
        tr(G) = ‖D‖²_F (NaN without a trajectory D).
    valid : ndarray of bool, shape (T+1,), or None
        The snapshots used, when some were left out (non-finite).
    start : int
        The snapshot the amplitudes refer to.
    source : {"gram", "svd"}
        How σ and V were obtained (sets :meth:`eigenvalue_errors`).
    rounding_errors : ndarray of shape (r,), or None
        Each eigenvalue's rounding error estimated from the measured residual of the eigendecomposition
        (:func:`gram_eigenvalue_errors`: the Gram and range-finder paths); None where the a-priori
        estimate :func:`eigenvalue_errors` serves (an SVD of the data).
    """

    singular_values: np.ndarray
    truncation: Truncation
    modes_basis: np.ndarray
    atilde: np.ndarray
    eigenvalues: np.ndarray
    right: np.ndarray
    left: np.ndarray
    coefficients: np.ndarray | None = None
    amplitudes: np.ndarray | None = None
    gram_coefficients: np.ndarray | None = None
    gram_trace: float = float("nan")
    valid: np.ndarray | None = None
    start: int = 0
    source: Source = "gram"
    rounding_errors: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return self.truncation.rank

    @property
    def rank_requested(self) -> int | str:
        return self.truncation.requested

    @property
    def rank_note(self) -> str | None:
        return self.truncation.note

    @property
    def threshold(self) -> float | None:
        return self.truncation.threshold

    @property
    def floor(self) -> float:
        return self.truncation.floor

    # ------------------------------------------------------------------ the paths
    @classmethod
    def from_gram(
        cls,
        gram: np.ndarray,
        *,
        rank: RankRequest = "auto",
        n_features: int,
        dtype: DTypeLike = np.float32,
        valid: np.ndarray | None = None,
        excess: Excess = "raise",
        resolve: float | None = None,
        estimate_errors: bool = True,
    ) -> ReducedOperator:
        """Exact DMD from G = DᵀD (docs/methods.md §1.1-§1.4).

        Parameters
        ----------
        gram : ndarray of shape (T+1, T+1)
            DᵀD of the window, float64.
        rank : int, "auto", "all" or None
            See :func:`truncate`.
        n_features : int
            N, the number of coordinates (for the threshold's aspect ratio β).
        dtype : dtype
            The data's dtype (float32 data: floor 1e-6·σ1; float64: 1e-7·σ1, the Gram's limit).
        valid : ndarray of bool, shape (T+1,), optional
            Snapshots to use (e.g. the finite ones): only pairs (θk, θk+1) with both valid
            enter XᵀX and XᵀY; rows and columns of G for the others are ignored.
        excess : {"raise", "reduce"}
            See :func:`truncate`.
        resolve : float, optional
            With ``rank="auto"``: keep only as many modes as leave every eigenvalue's error estimate
            (:func:`eigenvalue_errors`) at most this (e.g. :data:`RESOLVED`); the Truncation's note says
            when this cut the rank.
        estimate_errors : bool
            Measure the residual behind :func:`gram_eigenvalue_errors` (about the cost of the eigendecomposition
            of XᵀX again). Without it (a spectrum whose errors nobody reads) :meth:`eigenvalue_errors` falls back
            to the a-priori bound; ``resolve`` needs it.
        """
        g = np.asarray(gram, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] < 3:
            raise WindowTooShortError(f"DMD needs at least 3 snapshots, got {g.shape[0] if g.ndim == 2 else 0}")
        t = g.shape[0] - 1
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            g = np.where(np.outer(valid, valid), g, 0.0)  # a bad snapshot's NaN row and column drop out
            pairs = np.flatnonzero(valid[:-1] & valid[1:])
            if pairs.size < 2:
                raise WindowTooShortError(
                    f"only {pairs.size} pair(s) of consecutive finite snapshots: DMD needs at least 2")
        else:
            pairs = np.arange(t)
        xtx = g[np.ix_(pairs, pairs)]
        evals, v = _eigh_descending(xtx)
        sigma = np.sqrt(np.clip(evals, 0.0, None))
        cut = truncate(sigma, rank=rank, shape=(n_features, pairs.size), dtype=dtype, source="gram", excess=excess)
        xty = g[np.ix_(pairs, pairs + 1)]
        xty_v = xty @ v[:, : cut.rank]
        if not estimate_errors and resolve is None:
            op = cls.from_svd(sigma, v[:, : cut.rank], xty_v, lambda c: g @ c, float(np.trace(g)), truncation=cut,
                              y_rows=pairs + 1, n_snapshots=t + 1,
                              start=int(np.flatnonzero(valid)[0]) if valid is not None else 0)
            return op if valid is None else replace(op, valid=valid)
        # what the error estimate needs (docs/methods.md §1.5): the residual of XᵀX = VΣ²Vᵀ and B = Vᵀ(XᵀY)V's kept rows, columns
        residual = eigh_residual(xtx, v, evals, cut.rank)
        b_cols, b_rows = v.T @ xty_v, (v[:, : cut.rank].T @ xty) @ v
        if resolve is not None and cut.requested == "auto":
            cut = resolved(cut, sigma, lambda r: leading_block_errors(sigma, residual, b_cols, b_rows, r), resolve)
            xty_v = xty_v[:, : cut.rank]
        r = cut.rank
        op = cls.from_svd(sigma, v[:, :r], xty_v, lambda c: g @ c, float(np.trace(g)), truncation=cut,
                          y_rows=pairs + 1, n_snapshots=t + 1,
                          start=int(np.flatnonzero(valid)[0]) if valid is not None else 0)
        errors = gram_eigenvalue_errors(sigma, residual[:, :r], b_cols[:, :r], b_rows[:r], op.atilde, op.eigenvalues,
                                        op.right, op.left)
        return replace(op, rounding_errors=errors, **({} if valid is None else {"valid": valid}))

    @classmethod
    def from_pairs(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        rank: RankRequest = "auto",
        dtype: DTypeLike = np.float64,
        excess: Excess = "raise",
    ) -> ReducedOperator:
        """Exact DMD of snapshot pairs Y ≈ A X held in memory, by an SVD of X.

        Parameters
        ----------
        x, y : ndarray of shape (n_features, n_pairs)
            Paired snapshots (delay-embedded, trajectories stacked: pairs need not be one trajectory).
        rank, excess
            See :func:`truncate`.
        dtype : dtype
            The data's dtype before it was made float64 (sets the floor with the SVD's own limit).

        The result has no mode expansion (``coefficients`` and ``amplitudes`` are None): the pairs
        are no single trajectory D.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 2 or x.shape[1] < 2:
            raise WindowTooShortError(f"DMD needs at least 2 snapshot pairs, got X of shape {x.shape}")
        u, sigma, vt = np.linalg.svd(x, full_matrices=False)
        v, u = fix_signs(vt.T, u)
        cut = truncate(sigma, rank=rank, shape=x.shape, dtype=dtype, source="svd", excess=excess)
        r = cut.rank
        atilde = u[:, :r].T @ y @ v[:, :r] / sigma[:r]
        eigenvalues, w, left = eigen(atilde)
        return cls(sigma, cut, v[:, :r], atilde, eigenvalues, w, left, source="svd")

    @classmethod
    def from_svd(
        cls,
        sigma: np.ndarray,
        basis: np.ndarray,
        xty_basis: np.ndarray,
        gram_times: Callable[[np.ndarray], np.ndarray],
        gram_trace: float,
        *,
        truncation: Truncation,
        y_rows: np.ndarray | None = None,
        n_snapshots: int | None = None,
        start: int = 0,
        atilde: np.ndarray | None = None,
        source: Source = "gram",
    ) -> ReducedOperator:
        """Exact DMD from the SVD of X and products with G (docs/methods.md §1.3-§1.4).

        Parameters
        ----------
        sigma : ndarray of shape (>= r,)
            Singular values of X, descending (all of them when known: they are reported).
        basis : ndarray of shape (T, r)
            V_r, the leading right singular vectors of X (r = ``truncation.rank``).
        xty_basis : ndarray of shape (T, r)
            (XᵀY) V_r.
        gram_times : callable
            ``gram_times(C)`` returns G C for C of shape (T+1, r) (from G, or one more pass).
        gram_trace : float
            tr(G).
        truncation : Truncation
            The rank decision (:func:`truncate`).
        y_rows, n_snapshots, start : optional
            The snapshots Y's columns are (default 1..T), how many snapshots the window has,
            and the snapshot the amplitudes refer to (b = Φ⁺θ_start).
        atilde : ndarray of shape (r, r), optional
            Ã computed by the caller (an SVD path: Urᵀ Y Vr Σr⁻¹, without the Gram's squared
            condition number); by default from ``xty_basis``.
        source : {"gram", "svd"}
            How σ and V were obtained.
        """
        r = truncation.rank
        t = basis.shape[0]
        y_rows = np.arange(1, t + 1) if y_rows is None else np.asarray(y_rows)
        n_snapshots = t + 1 if n_snapshots is None else n_snapshots
        sr = sigma[:r]
        if atilde is None:
            atilde = (basis.T @ xty_basis) / np.outer(sr, sr)
        eigenvalues, w, left = eigen(atilde)
        c = np.zeros((n_snapshots, r), dtype=np.complex128)
        c[y_rows] = (basis / sr) @ w  # Φ = Y V Σ⁻¹ W, Y = D[:, 1:]
        gram_c = np.asarray(gram_times(c))
        phi_h_phi = c.conj().T @ gram_c
        phi_h_theta0 = gram_c[start].conj()  # Φᴴθ0 = Cᴴ G[:, 0]
        amplitudes = np.linalg.lstsq(phi_h_phi, phi_h_theta0, rcond=None)[0]
        return cls(np.asarray(sigma), truncation, basis, atilde, eigenvalues, w, left, c, amplitudes, gram_c,
                   float(gram_trace), None, start, source)

    @classmethod
    def from_data(
        cls,
        window: np.ndarray,
        *,
        rank: RankRequest = "auto",
        dtype: DTypeLike = np.float32,
        excess: Excess = "raise",
    ) -> ReducedOperator:
        """Exact DMD of a trajectory held in memory, by an SVD of X itself (docs/methods.md §1.7).

        Parameters
        ----------
        window : ndarray of shape (T+1, N)
            The snapshots θ0..θT as rows, float64.
        rank, dtype, excess
            See :meth:`from_gram` (the floor is the SVD's: :func:`precision_floor` with source "svd").

        σ, V and Ã = Urᵀ Y Vr Σr⁻¹ come from the SVD of X (accuracy of an SVD: the ranks it
        resolves are allowed, not only those the Gram resolves); amplitudes b = Φ⁺θ0 by least
        squares on Φ = D C, as PyDMD computes them. G C = D (Dᵀ C) serves the reconstruction error
        (no (T+1)² matrix: memory is the window and its thin SVD, whatever T).
        """
        d = np.asarray(window, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] < 3:
            raise WindowTooShortError(f"DMD needs at least 3 snapshots, got {d.shape[0] if d.ndim == 2 else 0}")
        t = d.shape[0] - 1
        # Xᵀ = D[:-1] = V Σ Uᵀ: the SVD of the (T, N) rows, no transposed copy
        v, sigma, ut = np.linalg.svd(d[:-1], full_matrices=False)
        cut = truncate(sigma, rank=rank, shape=(d.shape[1], t), dtype=dtype, source="svd", excess=excess)
        r = cut.rank
        # signs of the r kept columns only: flipping all T columns of U would copy the whole N×T U again
        v_r, u_r = fix_signs(v[:, :r], ut[:r].T)
        del ut
        y_v = d[1:].T @ v_r  # Y Vr, (N, r)
        atilde = (u_r.T @ y_v) / sigma[:r]
        # G C as D (Dᵀ C): never the (T+1)² Gram, which a long window of few coordinates cannot hold
        op = cls.from_svd(sigma, v_r, np.zeros((t, r)), lambda c: d @ (d.T @ c), float(np.einsum("ij,ij->", d, d)),
                          truncation=cut, atilde=atilde, source="svd")
        assert op.coefficients is not None
        phi = d.T @ op.coefficients  # Φ = D C, (N, r)
        amplitudes = np.linalg.lstsq(phi, d[0].astype(np.complex128), rcond=None)[0]
        return replace(op, amplitudes=amplitudes)

    def eigenvalue_errors(self) -> np.ndarray:
        """Each eigenvalue's estimated rounding error, in the eigenvalues' order: from the measured residual
        (:func:`gram_eigenvalue_errors`) where the path recorded it, else a priori (:func:`eigenvalue_errors`)."""
        if self.rounding_errors is not None:
            return self.rounding_errors
        return eigenvalue_errors(self.singular_values, self.atilde, self.left, self.right, source=self.source,
                                 n_pairs=self.modes_basis.shape[0])

    # ------------------------------------------------------------------ derived
    def classes(self, eps: float = 0.01) -> list[ModeClass]:
        """neutral 1−ε ≤ |λ| ≤ 1+ε, stable |λ| < 1−ε, unstable |λ| > 1+ε (docs/methods.md §1.6)."""
        mod = np.abs(self.eigenvalues)
        return [NEUTRAL if 1 - eps <= m <= 1 + eps else STABLE if m < 1 - eps else UNSTABLE for m in mod]

    def rates(self, dt: float = 1.0) -> np.ndarray:
        """Continuous-time rates log(λ)/Δt (not finite where λ = 0: such a mode has no rate)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.eigenvalues.astype(np.complex128)) / dt

    def vandermonde(self, times: np.ndarray) -> np.ndarray:
        """λ_j^k for k in ``times``: shape (r, len(times))."""
        return self.eigenvalues[:, None] ** np.asarray(times, dtype=np.float64)[None, :]

    def scaled_mode_norms(self) -> np.ndarray:
        """‖bj φj‖ for every mode, from CᴴGC: no pass over the data."""
        c, gc, b = self._expansion()
        phi_h_phi = np.real(np.einsum("ij,ij->j", c.conj(), gc))
        return np.abs(b) * np.sqrt(np.clip(phi_h_phi, 0.0, None))

    def reconstruction_error(self) -> float:
        """‖D − D̂‖F / ‖D‖F with D̂ = Φ diag(b) Vand, from G C and tr(G) (no pass over the data).

        Computed as ‖D‖² − 2 Re tr(D̂ᴴD) + ‖D̂‖², so it resolves errors down to ~1e-8 only.
        """
        c, gc, b = self._expansion()
        p = b[:, None] * self.vandermonde(np.arange(c.shape[0]) - self.start)  # (r, T+1)
        if self.valid is not None:  # compare only the snapshots that were used
            p = p * self.valid[None, :]
        norm_d = self.gram_trace
        cross = float(np.real(np.sum(p * gc.T)))  # Re tr(D̂ᴴD) = Re tr(Pᴴ (GC)ᴴ)
        # ‖D̂‖² = tr(Pᴴ (CᴴGC) P), summed elementwise: never the (T+1)² matrix Pᴴ(CᴴGC)P
        norm_hat = float(np.real(np.sum(p.conj() * ((c.conj().T @ gc) @ p))))
        err2 = max(norm_d - 2 * cross + norm_hat, 0.0)
        return float(np.sqrt(err2 / norm_d)) if norm_d > 0 else 0.0

    def reconstruct(self, window_block: np.ndarray, times: np.ndarray) -> np.ndarray:
        """θ̂ at ``times`` for the coordinates of ``window_block`` (their (T+1, n) trajectories).

        Φ rows of those coordinates are ``window_blockᵀ C``; returns shape (len(times), n), real part.
        """
        c, _, b = self._expansion()
        block = np.asarray(window_block, dtype=np.float64)
        if self.valid is not None:
            block = np.where(self.valid[:, None], block, 0.0)  # Φ uses the valid snapshots only
        phi = block.T @ c
        return np.real(phi @ (b[:, None] * self.vandermonde(np.asarray(times) - self.start))).T

    def _expansion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.coefficients is None or self.gram_coefficients is None or self.amplitudes is None:
            raise NotApplicableError("this operator was fitted from snapshot pairs: it has no modes over one trajectory")
        return self.coefficients, self.gram_coefficients, self.amplitudes
