"""Distances between eigenvalue sets and the seed null's bounds (docs/methods.md §4.2-§4.4).

W1 between spectra as point clouds in the complex plane (POT ``ot.emd2``), the mutual-nearest test of
which eigenvalues a seed run reproduces, the matching of one spectrum onto another's slots, and the
bounds a null gives: conformal (:func:`conformal_bound`) and parametric for one more run of a family
(:func:`family_bound`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ParameterError
from .spectra import Spectrum

__all__ = ["conformal_bound", "family_bound", "mutual_nearest", "slot_match", "wasserstein"]


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two eigenvalue sets as point clouds in the complex plane (uniform mass, cost |λ − μ|)."""
    import ot

    a = np.asarray(a, dtype=np.complex128).ravel()
    b = np.asarray(b, dtype=np.complex128).ravel()
    if not a.size or not b.size:
        raise ParameterError("eigenvalues", "holds an empty set: W1 needs at least one eigenvalue on each side")
    p = np.c_[a.real, a.imag]
    q = np.c_[b.real, b.imag]
    cost = ot.dist(p, q, metric="euclidean")
    return float(ot.emd2(ot.unif(len(p)), ot.unif(len(q)), cost))


def mutual_nearest(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Which eigenvalues of ``reference`` have a mutual nearest neighbour in ``other`` (boolean per eigenvalue).

    λ_i is reproduced by ``other`` when its nearest μ in ``other`` has λ_i as its own nearest in
    ``reference``: the two spectra then identify that eigenvalue the same way, whatever the scale.
    """
    a = np.asarray(reference, dtype=np.complex128).ravel()
    b = np.asarray(other, dtype=np.complex128).ravel()
    cost = np.abs(a[:, None] - b[None, :])
    return cost.argmin(axis=0)[cost.argmin(axis=1)] == np.arange(a.size)


def slot_match(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``other``'s eigenvalues reordered onto ``reference``'s: the optimal one-to-one matching (cost |λ − μ|).

    Equal counts; entry i is the eigenvalue matched to reference[i] (with uniform mass and equal
    counts this is the matching W1 uses).
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(reference, dtype=np.complex128).ravel()
    b = np.asarray(other, dtype=np.complex128).ravel()
    rows, cols = linear_sum_assignment(np.abs(a[:, None] - b[None, :]))
    out = np.empty(a.size, dtype=np.complex128)
    out[rows] = b[cols]
    return out


def conformal_bound(values: np.ndarray, quantile: float) -> float:
    """The null's bound for one more exchangeable value: the ⌈q(n+1)⌉-th smallest of n (capped at the largest).

    A new value exchangeable with the n null values exceeds the m-th smallest with probability
    1 − m/(n+1) (conformal prediction); ``np.quantile`` of 10 values interpolates below the
    largest and so calls about one conjugate pair in six non-conjugate. With n < q/(1 − q)
    values the bound is the largest, and the test's level is 1/(n+1), not 1 − q.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    m = min(ordered.size, int(np.ceil(quantile * (ordered.size + 1) - 1e-12)))
    return float(ordered[max(m, 1) - 1])


def _slot_variance(family: np.ndarray) -> np.ndarray:
    """Each eigenvalue slot's sample variance over the family's runs (rows; complex: |z − mean|², n − 1 dof)."""
    return np.sum(np.abs(family - family.mean(axis=0)) ** 2, axis=0) / (len(family) - 1)


def _about_family(z: np.ndarray, family: np.ndarray, bent_var: np.ndarray, floor: float) -> float:
    """A run's statistic against a family: mean_i |z_i − m_i|² / ((1 + 1/n) v_i + b_i) (rule "reproducible")."""
    scale = np.maximum((1 + 1 / len(family)) * _slot_variance(family) + bent_var, floor)
    return float(np.mean(np.abs(z - family.mean(axis=0)) ** 2 / scale))


def family_bound(family: np.ndarray, bent_var: np.ndarray, quantile: float, *, seed: int = 0, draws: int = 10_000,
                 floor: float = 1e-16) -> float:
    """The ``quantile`` of the statistic of one more run of a family's system, by parametric bootstrap.

    ``family``: n runs' eigenvalues on common slots (n × k complex); ``bent_var``: each slot's mean
    square move under the reparametrisation null's maps. A run z is scored against the family by
    mean_i |z_i − m_i|² / ((1 + 1/n) v_i + b_i), m and v the family's slot means and variances. For
    Gaussian runs that statistic's law depends on the n runs only through their covariance, which a
    handful of seeds cannot pin down: the draws take the family's own sample covariance (rank n − 1,
    every correlation between slots kept), draw n runs and a new one (plus each slot's bend), and
    re-estimate m and v from the drawn family as the test does, so the variance's few degrees of
    freedom and the slots' correlations both widen the bound. Seeded: the same call gives the same bound.
    """
    z = np.asarray(family, dtype=np.complex128)
    n, k = z.shape
    if n < 2:
        raise ParameterError("null", "needs at least one seed run beside the first to bound a new run's statistic")
    real = np.c_[z.real, z.imag]
    root = (real - real.mean(axis=0)) / np.sqrt(n - 1)  # rootᵀ root is the sample covariance
    rng = np.random.default_rng(seed)
    drawn = np.einsum("dnm,mc->dnc", rng.standard_normal((draws, n, n)), root)
    new = rng.standard_normal((draws, n)) @ root
    bend = np.sqrt(np.asarray(bent_var, dtype=np.float64) / 2)
    new = new + rng.standard_normal((draws, 2 * k)) * np.r_[bend, bend]
    drawn_c, new_c = drawn[..., :k] + 1j * drawn[..., k:], new[:, :k] + 1j * new[:, k:]
    centre = drawn_c.mean(axis=1)
    variance = np.sum(np.abs(drawn_c - centre[:, None]) ** 2, axis=1) / (n - 1)
    scale = np.maximum((1 + 1 / n) * variance + bent_var, floor)
    return float(np.quantile(np.mean(np.abs(new_c - centre) ** 2 / scale, axis=1), quantile))


def _distances(spectra: Sequence[Spectrum], k: int) -> np.ndarray:
    """The symmetric matrix of W1 between the k first eigenvalues of every pair."""
    n = len(spectra)
    distance = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distance[i, j] = distance[j, i] = wasserstein(spectra[i].eigenvalues[:k], spectra[j].eigenvalues[:k])
    return distance
