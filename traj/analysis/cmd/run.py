"""``traj cmd`` in one call: the fit, and what is scored and swept beside it, kept side by side in a :class:`CMDRun`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ...engine import Engine
from ...errors import NotApplicableError
from ...progress import Progress, Stage
from ...store import RunStore
from ..evaluator import Evaluator
from .compare import compare_models
from .evaluate import evaluate
from .fit import _fit, _scratch
from .params import CMDParams, CMDScoring
from .result import CMDEvaluation, CMDResult, HistorySweep, ModelComparison, SweepRow
from .sweeps import _history_sweep, _sweep


@dataclass(frozen=True)
class CMDRun:
    """A CMD fit and, beside it (never inside it), its evaluation, sweeps and comparison with DMD, where asked."""

    fit: CMDResult
    evaluation: CMDEvaluation | None = None
    sweep: tuple[SweepRow, ...] = ()
    history: tuple[HistorySweep, ...] = ()
    comparison: ModelComparison | None = None

    def to_dict(self, *, model: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The JSON view (``traj cmd --json`` and summary.json): the fit's and, beside it, what was scored;
        ``model``: where the fit's model was written (``cmd.zarr``), else null."""
        ema = tuple(t.beta for t in self.evaluation.ema) if self.evaluation else ()
        return {**self.fit.to_dict(), "options": self.fit.params.options(ema),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "sweep": [row.to_dict() for row in self.sweep] or None,
                "comparison": self.comparison.to_dict() if self.comparison else None,
                "history_sweeps": [h.to_dict() for h in self.history] or None,
                "model": None if model is None else str(model)}


def check_scoring(scoring: CMDScoring, evaluator: Evaluator | None) -> None:
    """What only an evaluator can score, refused without one: before any work."""
    if scoring.ema and evaluator is None:
        raise NotApplicableError("--ema scores the weight EMA with a recipe: this run has none (give --recipe)")
    if scoring.compare_dmd and evaluator is None:
        raise NotApplicableError("--compare-dmd scores the models with a recipe: this run has none")


def run_cmd(store: RunStore | str | os.PathLike[str], params: CMDParams, scoring: CMDScoring | None = None, *,
            evaluator: Evaluator | None = None, out: str | os.PathLike[str] | None = None, keep_model: bool = True,
            warmup: int | None = None, engine: Engine | None = None, progress: Progress | None = None,
            stage: Stage | None = None) -> CMDRun:
    """Fit CMD (:func:`~traj.analysis.cmd.fit_cmd`, its model to ``out``) and what ``scoring`` asks beside it:
    with ``evaluator`` the evaluation (and the weight EMAs, from the fit's own pass), the sweeps over the history
    and over M, and the comparison with DMD (:func:`~traj.analysis.cmd.compare_models`).

    ``warmup``: fit online CMD instead (:func:`~traj.analysis.cmd_online.fit_cmd_online`, references picked on
    the window's first ``warmup`` snapshots; no weight EMAs or sweeps). Everything is checked before the first pass. ``stage`` announces each step after the fit; ``progress``
    counts the blocks of each pass and then the evaluator's evaluations (a sweep: the fits of its settings).
    """
    scoring = scoring or CMDScoring()
    check_scoring(scoring, evaluator)
    if warmup is not None:
        from ..cmd_online import check_online, fit_cmd_online

        check_online(params, scoring)
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    announce = stage or (lambda name: None)
    evaluation = None
    ema = scoring.ema if evaluator is not None else ()
    # the EMAs (n_β x n_picks x N) go to a scratch Zarr array, read back one snapshot at a time
    with _scratch(bool(ema), "ema.zarr") as ema_out:
        if warmup is not None:
            fit, ema_rows = fit_cmd_online(store, params, warmup=warmup, out=out, engine=engine, progress=progress,
                                           keep_model=keep_model or evaluator is not None), None
        else:
            fit, ema_rows = _fit(store, params, out, engine, progress, ema=ema, eval_points=scoring.eval_points,
                                 keep_model=keep_model or evaluator is not None, ema_out=ema_out)
        if evaluator is not None:
            announce("evaluating")
            evaluation = evaluate(fit, store, evaluator, max_points=scoring.eval_points, engine=engine, ema=ema_rows,
                                  betas=ema, progress=progress)
    history = []
    for kind, settings in (("window", scoring.sweep_window), ("subsample", scoring.sweep_subsample)):
        if settings:
            announce(f"sweep over the {'history length' if kind == 'window' else 'snapshot spacing'}")
            history.append(_history_sweep(store, params, kind, settings, evaluator, engine, fit.window, progress,
                                          modes_list=scoring.sweep, points=scoring.sweep_points))
    rows: tuple[SweepRow, ...] = ()
    if scoring.sweep:
        announce("sweep")
        rows = _sweep(store, params, scoring.sweep, scoring.sweep_points, evaluator, engine, progress)
    comparison = None
    if scoring.compare_dmd and evaluator is not None:
        announce("DMD and CMD models")
        comparison = compare_models(store, evaluator, ranks=scoring.compare_dmd, modes=scoring.compare_modes,
                                    window=fit.window, max_points=scoring.eval_points, samples=params.samples,
                                    seed=params.seed, engine=engine, progress=progress)
    return CMDRun(fit, evaluation, rows, tuple(history), comparison)


