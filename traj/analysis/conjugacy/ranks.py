"""The rank every run is compared at (docs/methods.md §4.1, §4.4): one rank for all runs, and under rule
"reproducible" the largest rank at which the seed null reproduces every eigenvalue.

Both are decided by the operator's rank rules (:func:`~traj.engine.truncation.common_rank` over the runs'
``Truncation``s, :func:`~traj.engine.truncation.largest_rank`), and every refit at the chosen rank is an
explicit request that :func:`~traj.engine.truncation.truncate` decides, as every DMD in traj.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from ...engine.truncation import Truncation, common_rank, largest_rank
from .distances import mutual_nearest
from .observe import _Observed
from .params import ConjugacyParams
from .results import KChoice
from .spectra import Spectrum

__all__: list[str] = []


def _fit_all(observed: Sequence[_Observed], params: ConjugacyParams) -> tuple[list[Spectrum], KChoice, str | None]:
    """Every run's spectrum under the rank rule, how k was chosen and why it was reduced (None when not).

    Rank "k": each run at rank k first; when one resolves fewer directions (r < k), every run
    is refitted at r, so all compared eigenvalues come from DMDs of one rank.
    """
    if params.rank != "k":
        spectra = [o.spectrum(params.rank) for o in observed]
        choice, note = _compared(params.k, spectra)
        return spectra, choice, note
    asked = params.k if params.k is not None else max(o.source.fit("auto").rank for o in observed)
    spectra = [o.spectrum(asked) for o in observed]
    common, limiting = common_rank(_truncations(spectra))
    if common < asked:
        smallest = spectra[limiting]
        note = (f"k {asked} asked for, but {os.path.basename(smallest.run)} resolves only {common} direction(s) "
                f"({smallest.rank_note}): every run fitted at rank {common}, {common} eigenvalue(s) compared")
        spectra = [o.spectrum(common) for o in observed]
        return spectra, KChoice(asked, common, smallest.run, "resolves"), note
    return spectra, KChoice(asked, asked), None


def _reproducible_fit(observed: Sequence[_Observed], spectra: list[Spectrum], choice: KChoice, k_note: str | None,
                      n_runs: int) -> tuple[list[Spectrum], KChoice, str | None]:
    """Every spectrum at the largest rank r <= k at which the seed null reproduces every eigenvalue of the first run.

    An eigenvalue is reproduced by a seed run when the two are mutual nearest neighbours
    (:func:`mutual_nearest`); below the rank where SGD noise directions enter, every eigenvalue
    is; a rank that splits a degenerate pair is skipped. Rank 1 when none qualifies.
    """
    first, seeds = observed[0], observed[n_runs:]
    k = choice.k

    def reproduced(r: int) -> bool:
        base = spectra[0].eigenvalues[:r] if r == k else first.spectrum(r).eigenvalues[:r]
        fits = ([s.eigenvalues[:r] for s in spectra[n_runs:]] if r == k
                else [o.spectrum(r).eigenvalues[:r] for o in seeds])
        return all(mutual_nearest(base, f).all() for f in fits)

    chosen = largest_rank(k, reproduced)
    if chosen == k:
        return spectra, choice, k_note
    note = (f"{k_note}; " if k_note else "") + (f"{chosen} of {k} eigenvalue(s) reproducible: at rank {chosen} every eigenvalue of "
            f"{os.path.basename(spectra[0].run)} has a mutual nearest neighbour in every seed-null run's spectrum "
            f"(at rank{f's {chosen + 1}..{k}' if k > chosen + 1 else f' {k}'} some do not): every run fitted at rank "
            f"{chosen}")
    return [o.spectrum(chosen) for o in observed], replace(choice, reproducible=chosen), note


def _compared(k: int | None, spectra: Sequence[Spectrum]) -> tuple[KChoice, str | None]:
    """The k compared: what was asked, capped by the smallest rank (and a note saying so)."""
    smallest, first = common_rank(_truncations(spectra))
    if k is None or k <= smallest:
        return KChoice(smallest if k is None else k, smallest if k is None else k), None
    limiting = spectra[first]
    limit: Literal["resolves", "rank"] = "resolves" if limiting.rank_note else "rank"
    return (KChoice(k, smallest, limiting.run, limit),
            f"k {k} asked for, but {os.path.basename(limiting.run)} keeps only {smallest} eigenvalue(s): "
            f"compared {smallest}")


def _truncations(spectra: Sequence[Spectrum]) -> list[Truncation]:
    """Each spectrum's rank decision, as the operator made it (every spectrum here is a fit's)."""
    cuts = [s.truncation for s in spectra]
    assert all(cut is not None for cut in cuts)
    return cuts  # type: ignore[return-value]
