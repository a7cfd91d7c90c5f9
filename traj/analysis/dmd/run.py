"""``traj dmd`` in one call: the fit and the evaluations asked for, kept side by side in a :class:`DMDRun`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ...engine import Engine
from ...errors import ParameterError
from ...progress import Progress, Stage
from ...store import RunStore
from ..evaluator import Evaluator
from .evaluate import DMDEvaluation, DMDEvaluationParams, evaluate_fit
from .fit import fit_keeping_window
from .params import DMDParams
from .result import DMDResult


@dataclass(frozen=True)
class DMDRun:
    """A DMD fit and, beside it (never inside it), its evaluation when one was asked for."""

    fit: DMDResult
    evaluation: DMDEvaluation | None = None

    def to_dict(self, *, modes: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The JSON view (``traj dmd --json`` and summary.json): the fit's, its evaluation's, and where the
        modes were written (``modes``, by :func:`~traj.analysis.dmd.save_modes`), else null."""
        return {**self.fit.to_dict(), "modes": None if modes is None else str(modes),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None}


def check_run(params: DMDParams, evaluation: DMDEvaluationParams | None, evaluator: Evaluator | None) -> None:
    """What an evaluation needs of the fit, checked before any work."""
    if evaluation is None:
        return
    if params.delays:
        raise ParameterError("delays", "cannot be given with --evaluate (it scores DMD of the weights themselves)")
    if params.layers:
        raise ParameterError("layers", "cannot be given with --evaluate (it scores DMD of all the weights)")
    if evaluator is None:
        raise ParameterError("evaluator", "--evaluate needs a recipe or another evaluator")


def run_dmd(store: RunStore | str | os.PathLike[str], params: DMDParams, *,
            evaluation: DMDEvaluationParams | None = None, evaluator: Evaluator | None = None,
            engine: Engine | None = None, progress: Progress | None = None, stage: Stage | None = None) -> DMDRun:
    """Fit DMD (:func:`~traj.analysis.dmd.fit_dmd`) and, with ``evaluation``, score it with ``evaluator``
    (:func:`~traj.analysis.dmd.evaluate_fit`), reusing what the fit read of the window (no second read).

    Everything is checked before the first pass. ``stage("evaluating")`` announces the evaluation.
    """
    check_run(params, evaluation, evaluator)
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    fit, window_data = fit_keeping_window(store, params, engine, progress, keep=evaluation is not None)
    if evaluation is None or evaluator is None:
        return DMDRun(fit)
    if stage is not None:
        stage("evaluating")
    scores = evaluate_fit(fit, store, evaluator, evaluation, engine=engine, progress=progress,
                          window_data=window_data)
    return DMDRun(fit, scores)
