"""The rank every run is compared at (docs/methods.md §4.1, §4.4): one rank for all runs, and under rule
"reproducible" the largest rank at which the seed null reproduces every eigenvalue."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

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
    common = min(s.rank for s in spectra)
    if common < asked:
        smallest = next(s for s in spectra if s.rank == common)
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
    chosen = 1
    for r in range(k, 0, -1):
        base = spectra[0].eigenvalues[:r] if r == k else first.spectrum(r).eigenvalues[:r]
        fits = ([s.eigenvalues[:r] for s in spectra[n_runs:]] if r == k
                else [o.spectrum(r).eigenvalues[:r] for o in seeds])
        if all(mutual_nearest(base, f).all() for f in fits):
            chosen = r
            break
    if chosen == k:
        return spectra, choice, k_note
    note = (f"{k_note}; " if k_note else "") + (f"{chosen} of {k} eigenvalue(s) reproducible: at rank {chosen} every eigenvalue of "
            f"{os.path.basename(spectra[0].run)} has a mutual nearest neighbour in every seed-null run's spectrum "
            f"(at rank{f's {chosen + 1}..{k}' if k > chosen + 1 else f' {k}'} some do not): every run fitted at rank "
            f"{chosen}")
    return [o.spectrum(chosen) for o in observed], replace(choice, reproducible=chosen), note


def _compared(k: int | None, spectra: Sequence[Spectrum]) -> tuple[KChoice, str | None]:
    """The k compared: what was asked, capped by the smallest rank (and a note saying so)."""
    smallest = min(s.rank for s in spectra)
    if k is None or k <= smallest:
        return KChoice(smallest if k is None else k, smallest if k is None else k), None
    limiting = next(s for s in spectra if s.rank == smallest)
    limit: Literal["resolves", "rank"] = "resolves" if limiting.rank_note else "rank"
    return (KChoice(k, smallest, limiting.run, limit),
            f"k {k} asked for, but {os.path.basename(limiting.run)} keeps only {smallest} eigenvalue(s): "
            f"compared {smallest}")
