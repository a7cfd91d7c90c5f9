"""CMD as a model of training: the CMD-reconstructed weights (and weight EMAs) scored by an
:class:`~traj.analysis.evaluator.Evaluator` (Turjeman et al. 2022 figs. 5, 7, 19-21)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...checks import check_int
from ...engine import Engine
from ...errors import (
    ParameterError,
)
from ...progress import Progress, counter
from ...store import RunStore
from ..evaluator import Evaluator
from .fit import eval_picks
from .result import CMDEvaluation, CMDResult, EMAScores


# ---------------------------------------------------------------------- evaluation with the recipe
def evaluate(result: CMDResult, store: RunStore, evaluator: Evaluator, *, max_points: int = 40,
             engine: Engine | None = None, ema: np.ndarray | None = None, betas: Sequence[float] = (),
             progress: Progress | None = None) -> CMDEvaluation:
    """The recipe's metrics of the original and the CMD-reconstructed weights per snapshot
    (Turjeman et al. 2022 fig. 5a, 7), at up to ``max_points`` snapshots spread over the window (:func:`eval_picks`).

    ``ema`` (n_β, n_picks, N), the weight EMAs of decays ``betas`` at those snapshots as the fit's
    pass computed them, is scored beside them (Turjeman et al. 2022 figs. 19-21). ``progress(done, total)`` counts the
    evaluator's evaluations.
    """
    max_points = check_int("eval_points", max_points, low=1)
    engine = engine or Engine()
    used = result.snapshots
    picks = eval_picks(used.size, max_points)
    betas = tuple(betas) if ema is not None else ()
    if ema is not None and ema.shape != (len(betas), picks.size, result.n_params):
        raise ParameterError("ema", f"holds EMAs of shape {ema.shape}, not ({len(betas)}, {picks.size}, "
                                    f"{result.n_params})")

    tick = counter(progress, picks.size * (2 + len(betas)))

    def scored(theta: np.ndarray, into: dict[str, list[float]]) -> None:
        for name, value in evaluator.evaluate(theta.astype(store.dtype)).items():
            into.setdefault(name, []).append(float(value))
        tick()

    original: dict[str, list[float]] = {}
    rebuilt: dict[str, list[float]] = {}
    smoothed: list[dict[str, list[float]]] = [{} for _ in betas]
    for i, k in enumerate(picks):
        scored(engine.snapshot(store, int(used[k])), original)
        scored(result.model.reconstruct_snapshot(int(k)), rebuilt)
        for j in range(len(betas)):
            scored(ema[j, i], smoothed[j])
    tracks = tuple(EMAScores(beta, {k: np.array(v) for k, v in values.items()}, float(beta ** (used.size - 1)))
                   for beta, values in zip(betas, smoothed, strict=True))
    return CMDEvaluation(used[picks], result.steps[picks], {k: np.array(v) for k, v in original.items()},
                         {k: np.array(v) for k, v in rebuilt.items()}, tracks)
