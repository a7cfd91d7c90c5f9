"""What each rule compares, and the verdicts from the distances and the nulls' bounds (docs/methods.md §4.4-§4.5).

A rule turns the fitted spectra into :class:`NullScores` (the statistic the threshold is compared with,
the seed null's values and bound, the reparametrisation null's values and bound); :data:`SCORES` maps each
rule to its function, and :func:`decide` gives the verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...store import RunStore
from .distances import _about_family, _distances, _slot_variance, conformal_bound, family_bound, slot_match, wasserstein
from .params import ConjugacyParams
from .results import NO_SEED_NULL, PLAIN_NO_VERDICT, Basis, PairVerdict, ReparamNull, Rule, Verdict
from .spectra import Spectrum

__all__ = ["SCORES", "NullScores", "decide", "null_note"]


@dataclass(frozen=True)
class NullScores:
    """A rule's view of the fitted spectra: the statistic between runs (None under rule "plain", whose W1 is
    the distance itself), the seed null's values and bound, the reparametrisation null's values and bound, and
    (rule "reproducible") each eigenvalue slot's scale."""

    statistic: np.ndarray | None
    null_distances: np.ndarray
    null_threshold: float | None
    reparam: np.ndarray
    reparam_bound: float | None
    scales: np.ndarray | None = None


#: (every spectrum: the runs then the seed-null runs, the first run's family as indices, each member's bent
#: eigenvalues, k, the options) -> NullScores
Scorer = Callable[[Sequence[Spectrum], list[int], dict[int, list[np.ndarray]], int, ConjugacyParams], NullScores]


def score_reproducible(spectra: Sequence[Spectrum], members: list[int], bent: dict[int, list[np.ndarray]], k: int,
                       params: ConjugacyParams) -> NullScores:
    """Rule "reproducible": every spectrum on the first run's eigenvalue slots, each run against the first run's
    family (it and its seed runs, a sample of its system) in units of each slot's spread (docs/methods.md §4.4)."""
    n_runs = len(spectra) - len(members) + 1
    base = spectra[0].eigenvalues[:k]
    slots = [slot_match(base, s.eigenvalues[:k]) for s in spectra]
    family = np.array([slots[f] for f in members])
    centre, seed_var = family.mean(axis=0), _slot_variance(family)
    # a bent spectrum's deviation from its own run's, on the first run's slots
    bent_slots = {f: [slot_match(base, e) for e in bent[f]] for f in members}
    bends = [np.abs(z - slots[f]) ** 2 for f in members for z in bent_slots[f]]
    bent_var = np.mean(bends, axis=0) if bends else np.zeros(k)
    floor = params.tolerance ** 2
    # a new run of the system about the family's mean: (1 + 1/n) σ² + bend; two new runs: 2 (σ² + bend)
    about_centre = np.maximum((1 + 1 / len(members)) * seed_var + bent_var, floor)
    between = np.maximum(2 * (seed_var + bent_var), floor)

    def pair(i: int, j: int) -> float:
        if i == j:
            return 0.0
        if 0 in (i, j):
            return float(np.mean(np.abs(slots[max(i, j)] - centre) ** 2 / about_centre))
        return float(np.mean(np.abs(slots[i] - slots[j]) ** 2 / between))

    statistic = np.array([[pair(i, j) for j in range(n_runs)] for i in range(n_runs)])
    # shown beside the bound: each family run against the others (leave one out), where 2 or more remain
    null_distances = np.array([_about_family(family[m], np.delete(family, m, axis=0), bent_var, floor)
                               for m in range(len(members))] if len(members) > 2 else [])
    rep = np.array([np.mean(np.abs(z - centre) ** 2 / about_centre) for f in members for z in bent_slots[f]])
    return NullScores(statistic, null_distances,
                      family_bound(family, bent_var, params.quantile, seed=params.null_seed, floor=floor),
                      rep, conformal_bound(rep, params.quantile) if rep.size else None, np.sqrt(about_centre))


def score_plain(spectra: Sequence[Spectrum], members: list[int], bent: dict[int, list[np.ndarray]], k: int,
                params: ConjugacyParams) -> NullScores:
    """Rule "plain": W1 of the rank rule's eigenvalues, the seed null's W1 between the first run's family
    pairwise and the bent spectra's W1 from their own runs', each null's bound its ``quantile``."""
    null_distances = (_distances([spectra[f] for f in members], k)[np.triu_indices(len(members), 1)]
                      if len(members) > 1 else np.zeros(0))
    rep = np.array([wasserstein(spectra[f].eigenvalues[:k], e) for f in members for e in bent[f]])
    return NullScores(None, null_distances,
                      float(np.quantile(null_distances, params.quantile)) if null_distances.size else None,
                      rep, float(np.quantile(rep, params.quantile)) if rep.size else None)


#: What each rule compares (the one place a rule is looked up).
SCORES: dict[Rule, Scorer] = {"reproducible": score_reproducible, "plain": score_plain}


def decide(runs: Sequence[RunStore], distance: np.ndarray, scores: NullScores, reparam: ReparamNull | None,
           params: ConjugacyParams, *, seed_null: bool) -> tuple[float | None, Basis | None, tuple[PairVerdict, ...]]:
    """The threshold, what set it and the verdicts: rule "plain" (no statistic) gives distances and the nulls'
    bounds with no verdict beyond a stated margin; rule "reproducible" compares its statistic with the wider bound."""
    if scores.statistic is None:
        reason = PLAIN_NO_VERDICT if seed_null else NO_SEED_NULL
        return None, None, _without_verdict(runs, distance, params, reason)
    return _standardised_verdicts(runs, distance, scores.statistic, scores.null_threshold,
                                  reparam.threshold if reparam else None, params)


def null_note(rule: Rule, basis: Basis | None, null_threshold: float | None, n_null: int) -> str | None:
    """Why the seed null that set the threshold is weak, None when it is not."""
    if rule == "reproducible" and basis == "seed-null" and not null_threshold:
        return ("the seed-null runs have the first run's eigenvalues exactly (no spread), so the bound is 0 and "
                "every difference counts as non-conjugate: runs of a deterministic system need the "
                "reparametrisation null (null_size), and a seed null needs runs from other seeds")
    if n_null == 1 and basis == "seed-null":  # rule "reproducible" (rule "plain" has no basis)
        return ("the threshold comes from one seed-null run, so each eigenvalue's spread is estimated from "
                "two runs (one degree of freedom): the bound is wide and only large differences are called "
                "non-conjugate: give more seed runs (4 or more)")
    return None


def _null_bounds(seed_threshold: float | None, reparam_threshold: float | None) -> dict[Basis, float]:
    """The nulls that gave a bound, by name."""
    bounds: dict[Basis, float] = {}
    if seed_threshold is not None:
        bounds["seed-null"] = seed_threshold
    if reparam_threshold is not None:
        bounds["reparam-null"] = reparam_threshold
    return bounds


def _without_verdict(runs: Sequence[RunStore], distance: np.ndarray, params: ConjugacyParams,
                     reason: str) -> tuple[PairVerdict, ...]:
    """Pairs the nulls cannot decide: undetermined (with ``reason``), except a W1 within the margin the user
    stated (conjugate whatever a null would say).

    Without a seed null: two seed runs of one configuration lie further apart than the reparametrisation
    null's bends, so its bound alone called them non-conjugate (issue 25); it is reported beside the
    distances, and decides only beside a seed null. Under rule "plain" (:data:`PLAIN_NO_VERDICT`): the nulls'
    bounds on W1 are reported, no verdict."""
    verdicts = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            w1 = float(distance[i, j])
            if params.margin and w1 <= params.margin:
                verdicts.append(PairVerdict(str(runs[i].path), str(runs[j].path), w1, "conjugate", "margin"))
            else:
                verdicts.append(PairVerdict(str(runs[i].path), str(runs[j].path), w1, "undetermined", None,
                                            reason=reason))
    return tuple(verdicts)


def _standardised_verdicts(runs: Sequence[RunStore], distance: np.ndarray, statistic: np.ndarray,
                           seed_threshold: float | None, reparam_threshold: float | None, params: ConjugacyParams,
                           ) -> tuple[float | None, Basis | None, tuple[PairVerdict, ...]]:
    """Rule "reproducible": the nulls' bound on the standardised statistic decides, except that a pair whose W1
    is within the stated margin (or the eigenvalues' precision) is conjugate whatever the nulls (the margin
    is in W1, the units the user states it in)."""
    bounds = _null_bounds(seed_threshold, reparam_threshold)
    basis: Basis | None = max(bounds, key=bounds.__getitem__) if bounds else None
    threshold = bounds[basis] if basis is not None else None
    verdicts = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            w1, score = float(distance[i, j]), float(statistic[i, j])
            if w1 <= max(params.margin, params.tolerance):
                verdict: Verdict = "conjugate"
                decided: Basis | None = "margin" if w1 <= params.margin else "tolerance"
            elif threshold is None:
                verdict, decided = "undetermined", None
            else:
                verdict, decided = ("conjugate" if score <= threshold else "non-conjugate"), basis
            verdicts.append(PairVerdict(str(runs[i].path), str(runs[j].path), w1, verdict, decided, score))
    return threshold, basis, tuple(verdicts)
