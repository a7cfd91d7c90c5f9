"""to_dataframe() of the evaluations: the scores per snapshot as a table indexed by step."""

from __future__ import annotations

import numpy as np
import pytest

from tests.analysis.test_progress import CountingRecipe, _store

pytest.importorskip("pandas")


def test_dmd_evaluation_table(tmp_path):
    from traj.analysis.dmd import evaluate_dmd

    ev = evaluate_dmd(_store(tmp_path), CountingRecipe(), ranks=(2, 4), max_points=10, forecast=5)
    table = ev.to_dataframe()
    np.testing.assert_array_equal(table.index.to_numpy(), ev.steps)
    np.testing.assert_array_equal(table["original_loss"].to_numpy(), ev.original["loss"])
    for rank, metrics in zip(ev.ranks, ev.reconstructed, strict=True):
        np.testing.assert_array_equal(table[f"rank{rank}_loss"].to_numpy(), metrics["loss"][: ev.snapshots.size])
    assert list(table.columns) == ["snapshot", "original_loss", "rank2_loss", "rank4_loss"]


def test_cmd_evaluation_table(tmp_path):
    from traj.analysis.cmd import CMDParams, CMDScoring, run_cmd

    ev = run_cmd(_store(tmp_path), CMDParams(modes=2, samples=100), CMDScoring(eval_points=6),
                 evaluator=CountingRecipe()).evaluation
    table = ev.to_dataframe()
    np.testing.assert_array_equal(table.index.to_numpy(), ev.steps)
    np.testing.assert_array_equal(table["original_loss"].to_numpy(), ev.original["loss"])
    np.testing.assert_array_equal(table["cmd_loss"].to_numpy(), ev.cmd["loss"])
