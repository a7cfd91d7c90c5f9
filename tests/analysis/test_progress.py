"""Issue 25: `traj cmd --recipe R` spent 9 minutes on 160 model evaluations with no progress shown, and
`traj report` showed nothing between its analyses' bars. Every phase that scores models with a recipe
now reports each evaluation through the library's progress callback."""

from __future__ import annotations

import numpy as np

from tests.conftest import planted_linear_system, write_store


class CountingRecipe:
    """A recipe whose evaluation is a known function of θ, counting its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, theta: np.ndarray) -> dict[str, float]:
        self.calls += 1
        return {"loss": float(np.abs(theta).mean())}


class Log:
    """Every ``progress(done, total)`` call, with the recipe's call count at that moment."""

    def __init__(self, recipe: CountingRecipe) -> None:
        self.recipe = recipe
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total, self.recipe.calls))

    def evaluations(self) -> list[tuple[int, int, int]]:
        """The calls of the evaluation phase: from the last (0, total) report on."""
        start = max(i for i, (done, _, _) in enumerate(self.calls) if done == 0)
        return self.calls[start:]


def _store(tmp_path, n_snapshots=30):
    data, _ = planted_linear_system(n_params=400, n_snapshots=n_snapshots)
    return write_store(tmp_path / "s.zarr", data)


def _ticks_every_evaluation(log: Log, total: int) -> None:
    phase = log.evaluations()
    first = phase[0][2]  # recipe calls made before the phase
    assert [d for d, _, _ in phase] == list(range(total + 1))
    assert {t for _, t, _ in phase} == {total}
    assert [c - first for _, _, c in phase] == list(range(total + 1))  # one report per evaluation, as it ends


def test_cmd_evaluation_reports_each_model_evaluation(tmp_path):
    from traj.analysis.cmd import CMDParams, CMDScoring, run_cmd

    recipe = CountingRecipe()
    log = Log(recipe)
    run = run_cmd(_store(tmp_path), CMDParams(modes=2, samples=100), CMDScoring(eval_points=12, ema=(0.9,)),
                  evaluator=recipe, progress=log)
    # 12 snapshots: the original, the CMD reconstruction and one EMA each
    assert run.evaluation is not None and run.evaluation.snapshots.size == 12
    assert recipe.calls == 36
    _ticks_every_evaluation(log, 36)


def test_dmd_evaluation_reports_each_model_evaluation(tmp_path):
    from traj.analysis.dmd import evaluate_dmd

    recipe = CountingRecipe()
    log = Log(recipe)
    ev = evaluate_dmd(_store(tmp_path), recipe, ranks=(2, 4), max_points=10, forecast=5, progress=log)
    # 10 in the window, no recorded snapshot ahead, and per rank the 10 + 5 forecast θ̂
    assert ev.ranks == (2, 4) and recipe.calls == 10 + 2 * 15
    _ticks_every_evaluation(log, 40)


def test_compare_models_reports_each_model_evaluation(tmp_path):
    from traj.analysis.cmd import compare_models

    recipe = CountingRecipe()
    log = Log(recipe)
    compare_models(_store(tmp_path), recipe, ranks=(2,), modes=(2,), max_points=8, samples=100, progress=log)
    assert recipe.calls == 8 + 8 + 2 * 8  # DMD: original and rank 2; CMD at M = 2: original and reconstruction
    _ticks_every_evaluation(log, 16)


def test_prune_evaluation_reports_each_mask_scored(tmp_path):
    from traj.analysis.prune import prune

    recipe = CountingRecipe()
    log = Log(recipe)
    result = prune(_store(tmp_path), window="0:29", methods=["gmp", "lsp"], compressions=[2, 4], seeds=2,
                   refine_epochs=0, recipe=recipe, progress=log)
    assert result.accuracy is not None
    # the unpruned baseline, then per method, compression and seed one mask (GMP scores its one mask once)
    assert recipe.calls == 1 + 2 + 2 * 2
    phase = log.evaluations()
    assert [d for d, _, _ in phase] == list(range(1 + 2 * 2 * 2 + 1)) and phase[-1][1] == 9
    assert phase[-1][2] - phase[0][2] == recipe.calls
