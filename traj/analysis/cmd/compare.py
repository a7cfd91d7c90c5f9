"""DMD and CMD as models of training, scored at the same snapshots (``traj cmd --compare-dmd``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ...engine import Engine
from ...progress import Progress
from ...store import RunStore
from ..evaluator import Evaluator
from ..windows import Window
from .evaluate import evaluate
from .fit import _fit, _scratch
from .params import CMDParams, CMDScoring
from .result import ModelComparison


def compare_models(store: RunStore | str | os.PathLike[str], recipe: Evaluator, *, ranks: Sequence[int] = (5, 10, 20),
                   modes: Sequence[int] = (2, 5, 10), window: Window = None, max_points: int = 40,
                   forecast: int = 0, samples: int | None = None, seed: int = 0, engine: Engine | None = None,
                   progress: Progress | None = None) -> ModelComparison:
    """DMD (``traj dmd --evaluate``) and CMD (``traj cmd --evaluate``) of the same window, scored by
    the evaluator ``recipe`` at the same snapshots (both spread ``max_points`` over the window the same way).
    ``progress(done, total)`` counts each pass's blocks, then each model's evaluations."""
    from ..dmd import evaluate_dmd

    scoring = CMDScoring(compare_dmd=tuple(ranks), compare_modes=tuple(modes), eval_points=max_points)
    ranks, modes = scoring.compare_dmd, scoring.compare_modes
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    dmd_ev = evaluate_dmd(store, recipe, ranks=ranks, window=window, max_points=max_points, forecast=forecast,
                          engine=engine, progress=progress)
    lo, hi = dmd_ev.window
    curves, errors = [], []
    for m in modes:
        params = CMDParams(modes=m, samples=samples, window=(lo, hi), seed=seed)
        with _scratch(True) as scratch:
            fitted, _ = _fit(store, params, scratch, engine, progress)
            ev = evaluate(fitted, store, recipe, max_points=max_points, engine=engine, progress=progress)
        curves.append(dict(ev.cmd))
        scale = dmd_ev.data_norm / dmd_ev.motion_norm if dmd_ev.motion_norm > 0 else 0.0
        errors.append(fitted.relative_error * scale)
    return ModelComparison(dmd_ev, modes, tuple(curves), np.array(errors))
