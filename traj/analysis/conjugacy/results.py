"""What ``traj conjugacy`` returns: verdicts per pair, the nulls, how k was chosen, window transitions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..dmd import complex_pairs
from .spectra import Spectrum

__all__ = ["Basis", "ConjugacyResult", "KChoice", "NO_SEED_NULL", "PLAIN_NO_VERDICT", "PairVerdict", "ReparamNull",
           "Rule", "Verdict", "WindowTransitions", "verdict_label"]


Verdict = Literal["conjugate", "non-conjugate", "undetermined"]


#: What set a verdict's threshold: the seed null's quantile, the reparametrisation null's, the stated margin,
#: or the eigenvalues' precision.
Basis = Literal["seed-null", "reparam-null", "margin", "tolerance"]


#: How runs are compared: "reproducible" (default; with a seed null: the rank at which every eigenvalue is
#: reproducible across seeds, each run against the first run's family of seed runs in units of each eigenvalue's
#: spread, a parametric bound for one more run of that family) or "plain" (W1 of the rank rule's eigenvalues
#: beside the nulls' quantiles, no verdict: it cannot tell grokking from norm-constrained dynamics, issue 26).
Rule = Literal["reproducible", "plain"]


@dataclass(frozen=True)
class PairVerdict:
    """Whether two runs are conjugate: their W1, the verdict and what decided it."""

    a: str
    b: str
    distance: float
    verdict: Verdict
    basis: Basis | None
    #: What the threshold is compared with: W1 (rule "plain") or the standardised distance (rule "reproducible").
    statistic: float | None = None
    #: Why the verdict is "undetermined" and what would determine it (None for a verdict).
    reason: str | None = None

    @property
    def score(self) -> float:
        return self.distance if self.statistic is None else self.statistic

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "distance": self.distance, "statistic": self.score,
                "verdict": self.verdict, "basis": self.basis, "reason": self.reason}


@dataclass(frozen=True)
class WindowTransitions:
    """W1 between the spectra of consecutive windows of one run (Redman et al. 2024 fig. 4)."""

    run: str
    bounds: tuple[tuple[int, int], ...]
    steps: tuple[tuple[int, int], ...]
    k: int
    distance: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "bounds": [list(b) for b in self.bounds], "steps": [list(s) for s in self.steps],
                "k": self.k, "distance": self.distance.tolist()}


@dataclass(frozen=True)
class KChoice:
    """How the k compared per run was chosen, step by step (the CLI's short line; ``k_note`` has the reasons).

    ``asked``: k asked for (or, with k=None, the largest rank any run resolves); ``resolved``: after
    the cap by the runs' ranks, ``limiting_run`` being the run that set it and ``limit`` why ("resolves":
    it resolves fewer directions than asked; "rank": the rank rule gives it that rank);
    ``reproducible``: the rank rule "reproducible" chose, when below ``resolved`` (None otherwise).
    """

    asked: int
    resolved: int
    limiting_run: str | None = None
    limit: Literal["resolves", "rank"] | None = None
    reproducible: int | None = None

    @property
    def k(self) -> int:
        return self.resolved if self.reproducible is None else self.reproducible

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "resolved": self.resolved, "limiting_run": self.limiting_run,
                "limit": self.limit, "reproducible": self.reproducible}


@dataclass(frozen=True)
class ReparamNull:
    """The reparametrisation null: the distance between a run's spectrum and its spectrum through a smooth
    monotone coordinate-wise map whose largest displacement is ``strength`` times each coordinate's
    half-range over the window (:func:`reparametrise`), for ``size`` maps split over the first run's
    family (the first run and its seed-null runs, :func:`family_draws`)."""

    size: int
    strength: float
    seed: int
    distances: np.ndarray
    threshold: float | None
    family: str = ("per coordinate, u = (x - mid) / half-range: g(u) = u + b u^2 + c u^3 with |b| + |c| = strength, "
                   "or tanh(a u)/tanh(a) or sinh(a u)/sinh(a) moving the inside by up to strength; each map's share "
                   "of inside bends uniform")

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "strength": self.strength, "seed": self.seed, "family": self.family,
                "distances": self.distances.tolist(), "threshold": self.threshold}


@dataclass(frozen=True)
class ConjugacyResult:
    """Distances between runs' Koopman spectra and verdicts against a seed null and a reparametrisation
    null (docs/methods.md §4.3-§4.5).

    ``k`` eigenvalues are compared per run; ``k_requested`` is what was asked and ``k_note``
    says why fewer were compared (None when not). ``null_threshold`` is the seed null's bound,
    ``reparam.threshold`` the reparametrisation null's; ``threshold`` the one that decided. Rule
    "plain": ``null_distances`` are W1 between the first run and its seed runs, pairwise, and the
    bound their quantile; rule "reproducible": each of those runs' statistic against the others
    (shown beside the bound, which is :func:`family_bound` for one more run of the family).
    """

    runs: tuple[str, ...]
    spectra: tuple[Spectrum, ...]
    k: int
    distance: np.ndarray
    null_runs: tuple[str, ...]
    null_distances: np.ndarray
    quantile: float
    threshold: float | None
    verdicts: tuple[PairVerdict, ...]
    windows: WindowTransitions | None
    layer: str | None
    rank: int | str | None
    seconds: float
    null_threshold: float | None = None
    margin: float = 0.0
    k_requested: int | None = None
    k_note: str | None = None
    reparam: ReparamNull | None = None
    observable: str = "all"
    basis: Basis | None = None
    rule: Rule = "plain"
    statistic: np.ndarray | None = None
    scales: np.ndarray | None = None
    rule_note: str | None = None
    k_choice: KChoice | None = None
    #: Why the seed null that set the threshold is weak (one run), None when it is not.
    null_note: str | None = None
    #: pca:K scores with the mean removed (False means Redman et al. 2024's projection).
    center: bool = False

    @property
    def scores(self) -> np.ndarray:
        """The matrix the threshold is compared with: W1 (rule "plain") or the standardised distances."""
        return self.distance if self.statistic is None else self.statistic

    def ratio(self, verdict: PairVerdict) -> float | None:
        """A pair's statistic over the threshold (conjugate iff <= 1); None without a threshold."""
        return verdict.score / self.threshold if self.threshold else None

    @property
    def any_nonconjugate(self) -> bool:
        return any(v.verdict == "non-conjugate" for v in self.verdicts)

    @property
    def names(self) -> list[str]:
        """The runs' store names without ``.zarr`` (plot labels)."""
        return [os.path.basename(p).removesuffix(".zarr") for p in self.runs]

    def eigenvalues(self, i: int) -> np.ndarray:
        """The k compared eigenvalues of run ``i``."""
        return self.spectra[i].eigenvalues[: self.k]

    @property
    def notes(self) -> list[str]:
        """Why k or a run's rank was reduced below what was asked (empty when neither was)."""
        return [n for n in [self.k_note, *(s.rank_note for s in self.spectra)] if n]

    def to_dataframe(self) -> Any:
        """One row per pair of runs compared (pandas): W1 between their spectra, the statistic compared with
        the threshold, the verdict, what decided it and, for "undetermined", why."""
        from ...tables import dataframe

        rows = [v.to_dict() for v in self.verdicts]
        keys = ("a", "b", "distance", "statistic", "verdict", "basis", "reason")
        return dataframe({key: [row[key] for row in rows] for key in keys}, index=["a", "b"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": list(self.runs),
            "eigenvalues": [complex_pairs(self.eigenvalues(i)) for i in range(len(self.runs))],
            "ranks": [s.rank for s in self.spectra],
            "rank_notes": [s.rank_note for s in self.spectra],
            "k": self.k,
            "k_requested": self.k_requested,
            "k_note": self.k_note,
            "k_choice": self.k_choice.to_dict() if self.k_choice else None,
            "reduced": self.notes,
            "distance": self.distance.tolist(),
            "null_runs": list(self.null_runs),
            "null_distances": self.null_distances.tolist(),
            "quantile": self.quantile,
            "threshold": self.threshold,
            "basis": self.basis,
            "null_threshold": self.null_threshold,
            "reparam_null": self.reparam.to_dict() if self.reparam else None,
            "margin": self.margin,
            "rule": self.rule,
            "rule_note": self.rule_note,
            "null_note": self.null_note,
            "statistic": self.scores.tolist(),
            "scales": None if self.scales is None else self.scales.tolist(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "windows": self.windows.to_dict() if self.windows else None,
            "settings": {"observable": self.observable, "center": self.center, "layer": self.layer, "rank": self.rank,
                         "stack": [s.n_trajectories for s in self.spectra],
                         "delays": [s.delays for s in self.spectra], "method": [s.method for s in self.spectra],
                         "windows": [list(s.window) for s in self.spectra]},
            "seconds": self.seconds,
        }


#: An undetermined verdict's reason when no seed null was given.
NO_SEED_NULL = ("give --null SEED_RUN (the first run's configuration trained from other seeds): without a seed null "
                "a distance cannot be told from seed-to-seed variation")


#: An undetermined verdict's reason under rule "plain" (issue 26): W1 over every compared eigenvalue, the noise
#: directions' included, against the nulls' quantiles called grokking vs norm-constrained transformers and planted
#: systems one eigenvalue 0.02 apart "conjugate", where rule "reproducible" tells them apart.
PLAIN_NO_VERDICT = ("rule plain gives distances and the nulls' bounds only: W1 over every compared eigenvalue cannot "
                    "tell runs whose reproducible eigenvalues differ (grokking vs norm-constrained transformers, "
                    "one eigenvalue 0.02 apart) from seed variation; the default --rule reproducible gives a verdict")


#: How each undetermined verdict's reason is shown in one line (CLI, reports).
_UNDETERMINED_SHOWN = {NO_SEED_NULL: "undetermined: give --null SEED_RUN",
                       PLAIN_NO_VERDICT: "undetermined: rule plain gives distances only"}


def verdict_label(verdict: PairVerdict) -> str:
    """A verdict as the CLI and the reports show it: the verdict, or "undetermined: " and what would determine it."""
    return _UNDETERMINED_SHOWN.get(verdict.reason or "", verdict.verdict)
