"""The loss landscape: the plane from the Gram, the grid's losses at the snapshots' projections, the command."""

import json
from pathlib import Path

import numpy as np
import pytest

from traj.analysis.landscape import fit_plane, grid_losses
from traj.recipes import resolve_recipe
from traj.store import open_store

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "quadratic-mlp.zarr"


@pytest.fixture(scope="module")
def run():
    store = open_store(SAMPLE)
    return store, resolve_recipe(None, store), store.read().astype(np.float64)


def test_plane_from_the_gram_matches_the_trajectory_in_memory(run):
    store, _, d = run
    plane = fit_plane([store])
    np.testing.assert_allclose(plane.mean, d.mean(axis=0), rtol=0, atol=1e-12 * np.abs(d).max())
    assert np.abs(plane.directions @ plane.directions.T - np.eye(2)).max() < 1e-12
    assert np.abs((d - plane.mean) @ plane.directions.T - plane.scores[0]).max() < 1e-10
    centred = d - d.mean(axis=0)
    sigma = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(plane.sigma, sigma[:2], rtol=1e-9)
    assert plane.explained == pytest.approx((sigma[:2] ** 2).sum() / (sigma**2).sum(), rel=1e-9)
    assert (plane.scores[0][-1] - plane.scores[0][0] >= 0).all()  # the run goes left to right, bottom to top


def test_two_copies_of_a_run_share_its_plane(run):
    """The joint pass over two stores: a run beside itself has its own plane and scores."""
    store, _, _ = run
    one, two = fit_plane([store]), fit_plane([store, open_store(SAMPLE)])
    np.testing.assert_allclose(two.directions, one.directions, atol=1e-10)
    np.testing.assert_allclose(two.scores[0], one.scores[0], atol=1e-9)
    np.testing.assert_allclose(two.scores[1], one.scores[0], atol=1e-9)
    assert two.explained == pytest.approx(one.explained, rel=1e-12)


def test_grid_loss_at_a_snapshots_projection_is_the_loss_of_the_projected_weights(run):
    store, recipe, _ = run
    plane = fit_plane([store])
    scores = plane.scores[0]
    picks = [0, 60, 200, len(scores) - 1]
    x, y = np.sort(scores[picks, 0]), np.sort(scores[picks, 1])  # every projection is a grid node
    loss, _ = grid_losses(recipe, plane.mean, plane.directions, x, y)
    assert loss.shape == (4, 4) and np.isfinite(loss).all()
    for k in picks:
        i, j = int(np.searchsorted(x, scores[k, 0])), int(np.searchsorted(y, scores[k, 1]))
        projected = (plane.mean + scores[k] @ plane.directions).astype(np.float32)
        expected = recipe.evaluate(projected)["loss"]
        assert loss[i, j] == pytest.approx(expected, rel=1e-5)
    # and the grid is not flat: the start is far worse than the end
    assert recipe.evaluate(plane.mean + scores[0] @ plane.directions)["loss"] > 5 * recipe.evaluate(
        plane.mean + scores[-1] @ plane.directions)["loss"]


def test_landscape_command(tmp_path):
    from typer.testing import CliRunner

    from traj.cli.app import app

    out = tmp_path / "land"
    result = CliRunner().invoke(app, ["landscape", str(SAMPLE), "--grid", "5", "--center", "final", "--out", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["grid"] == 5 and len(summary["x"]) == 5 and np.array(summary["loss"]).shape == (5, 5)
    end = summary["runs"][0]["coordinates"][-1]
    assert np.abs(end).max() < 1e-9  # centre "final": the run ends at the origin
    assert 0.5 < summary["explained"] <= 1
    assert {p.name for p in out.iterdir()} >= {"summary.json", "report.html", "report.md", "landscape.png"}


def test_landscape_command_errors(tmp_path):
    from typer.testing import CliRunner

    from traj.cli.app import app

    for args, message in ((["--grid", "1"], "--grid"), (["--center", "middle"], "--center"),
                          (["--max-seconds", "1e-9"], "would take about")):
        result = CliRunner().invoke(app, ["landscape", str(SAMPLE), *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_recipe_without_data_scores_its_own_objective():
    """mirror-descent has no data set: the grid scores its objective at each point (it once broadcast an
    MSE against an empty target: a UserWarning and wrong numbers)."""
    store = open_store(SAMPLE.with_name("mirror-omd.zarr"))
    recipe = resolve_recipe(None, store)
    plane = fit_plane([store])
    x, y = plane.scores[0][[0, -1], 0], plane.scores[0][[0, -1], 1]
    loss, _ = grid_losses(recipe, plane.mean, plane.directions, x, y)
    for i in range(2):
        point = plane.mean + x[i] * plane.directions[0] + y[i] * plane.directions[1]
        assert loss[i, i] == pytest.approx(recipe.evaluate(point.astype(np.float32))["loss"], rel=1e-5)
    theta = store.read()[-1]
    assert recipe.evaluate(theta)["loss"] == pytest.approx(store.loss[-1], rel=1e-12)


def test_grid_time_estimate_counts_the_first_points_warm_up_once():
    """A model whose first evaluation is slow (warm-up) is not refused as if every point were (found by a new user:
    the estimate was ~3x the time the grid then took)."""
    import time
    from types import SimpleNamespace

    from traj.analysis.landscape import GridTooSlowError

    calls = []

    def metrics(model, x, y):
        time.sleep(0.3 if not calls else 0.005)
        calls.append(1)
        return {"loss": 1.0}

    recipe = SimpleNamespace(new_model=lambda: None, data=SimpleNamespace(x_val=None, y_val=None),
                             load_theta=lambda model, theta: None, metrics=metrics)
    axis = np.linspace(-1, 1, 6)
    loss, seconds = grid_losses(recipe, np.zeros(2), np.eye(2), axis, axis, max_seconds=1.5)  # 36 points ≈ 0.5 s
    assert loss.shape == (6, 6) and len(calls) == 36 and seconds < 1.5
    with pytest.raises(GridTooSlowError, match="would take about 2 s"):  # 36 points of 0.05 s each
        grid_losses(SimpleNamespace(**{**vars(recipe), "metrics": lambda m, x, y: time.sleep(0.05) or {"loss": 1.0}}),
                    np.zeros(2), np.eye(2), axis, axis, max_seconds=1.0)
