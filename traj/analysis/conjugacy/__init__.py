"""``traj conjugacy``: are two training runs the same dynamics? (docs/methods.md §4; Redman et al. 2024)

Topologically conjugate systems share Koopman eigenvalues. For each run: the Koopman
eigenvalues of an observable over a window (exact DMD, §1), optionally with d time delays
(Hankel DMD) and with several trajectories of one system stacked; then the Wasserstein
distance W1 between every pair of eigenvalue sets (POT ``ot.emd2``, uniform mass, cost
|λ − μ|). A verdict needs a null, and two are drawn:

- the **seed null**: runs that differ from the first only in seed (``null=``), which measure
  initial-condition and SGD noise (with the default rule: the first run and its seed runs form
  a family, a sample of the first run's system, and a bound for one more run of it is drawn
  from the family's own covariance, :func:`family_bound`);
- the **reparametrisation null**: the first run and its seed runs seen through ``null_size``
  random smooth monotone coordinate-wise maps h (:func:`reparametrise`). Conjugacy is
  invariance under a homeomorphism, and finite-dictionary DMD eigenvalues move when the
  coordinates bend, so this measures the estimator's own dependence on the coordinates, which
  a seed null of a deterministic system misses.

A pair is conjugate when its statistic is within the larger of the two nulls' bounds (or
its W1 within a stated margin); the verdict names which one decided.

Observables (``observable=``): ``all`` weights, one ``layer:NAME``, or ``pca:K``, the scores
of the window's K leading principal components, computed from the streamed Gram alone. A
large observable goes through the streaming Gram, whose delay embedding is a sum of shifted
diagonal sub-blocks of G (no extra pass), and the Grams of h(X) for every null draw are
accumulated beside it in the same pass; a small one (up to ``small_observable`` coordinates
times delays + 1) is collected into memory. Stacked trajectories of a large observable go through
their pooled Gram (:func:`stacked_grams`: every trajectory's snapshots against every other's, a band
of coordinates of every trajectory at a time), so no path holds anything of size N. Every path goes
through the one operator factory (:mod:`traj.engine.operator`). By default every run is fitted
at the same rank, r = min(k, every run's resolvable rank), and all r eigenvalues are compared;
a rank or k reduced below what was asked says so (``Spectrum.rank_note``, ``k_note``).

The package, one module per concern: ``spectra`` (observables, windows, delays, stacked trajectories,
:class:`Spectrum`), ``observe`` (reading them from a store: the Gram, the pooled Gram, pairs in memory;
:func:`koopman_spectrum`), ``reparam`` (the reparametrisation null's maps), ``distances`` (W1 and the nulls'
bounds), ``params`` (:class:`ConjugacyParams`), ``ranks`` (the rank every run is compared at), ``verdicts``
(each rule's statistic and the verdicts), ``results`` (:class:`ConjugacyResult`) and ``fit``
(:func:`conjugacy`, :func:`fit_conjugacy`).
"""

from __future__ import annotations

from ..windows import (
    hankel_gram,
)
from .distances import (
    conformal_bound,
    family_bound,
    mutual_nearest,
    slot_match,
    wasserstein,
)
from .fit import (
    NULL_BYTES as NULL_BYTES,
)
from .fit import (
    NULL_GRAMS_PER_MAP as NULL_GRAMS_PER_MAP,
)
from .fit import (
    conjugacy,
    fit_conjugacy,
)
from .observe import (
    COLLECT_BYTES as COLLECT_BYTES,
)
from .observe import (
    koopman_spectrum,
)
from .observe import (
    stacked_grams as stacked_grams,
)
from .params import (
    MAX_NULL_SIZE as MAX_NULL_SIZE,
)
from .params import (
    ConjugacyParams,
)
from .params import (
    RankRule as RankRule,
)
from .reparam import (
    coordinate_keys as coordinate_keys,
)
from .reparam import (
    family_draws,
    reparametrise,
)
from .results import (
    NO_SEED_NULL as NO_SEED_NULL,
)
from .results import (
    PLAIN_NO_VERDICT as PLAIN_NO_VERDICT,
)
from .results import (
    Basis as Basis,
)
from .results import (
    ConjugacyResult,
    KChoice,
    PairVerdict,
    WindowTransitions,
    verdict_label,
)
from .results import (
    ReparamNull as ReparamNull,
)
from .results import (
    Rule as Rule,
)
from .results import (
    Verdict as Verdict,
)
from .spectra import (
    SMALL_OBSERVABLE,
    Spectrum,
    parse_observable,
    stacked_hankel,
)
from .spectra import (
    SpectrumMethod as SpectrumMethod,
)
from .spectra import (
    observable_columns as observable_columns,
)
from .spectra import (
    pca_scores as pca_scores,
)
from .spectra import (
    pooled_pca_scores as pooled_pca_scores,
)
from .spectra import (
    recipe_defaults as recipe_defaults,
)
from .spectra import (
    stacked_pca_scores as stacked_pca_scores,
)
from .spectra import (
    trajectories as trajectories,
)
from .spectra import (
    window_and_delays as window_and_delays,
)

# the names of the module before it became a package stay importable from here (the others are re-exported
# with `as`, the public API is __all__)
__all__ = ["ConjugacyParams", "ConjugacyResult", "KChoice", "PairVerdict", "SMALL_OBSERVABLE", "Spectrum", "WindowTransitions",
           "conjugacy", "conformal_bound", "family_bound", "family_draws", "fit_conjugacy", "hankel_gram", "koopman_spectrum", "mutual_nearest",
           "parse_observable", "reparametrise", "slot_match", "stacked_hankel", "verdict_label", "wasserstein"]
