"""Issue 25: a store recorded every 10 steps and one imported every 100 could not be compared
(`stores hold snapshots at different spacings`); every analysis now takes --steps and --stride."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import planted_linear_system, write_store
from traj.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def two_spacings(tmp_path):
    """One trajectory θ(step) of a planted linear map, recorded every 10 steps and every 100 steps."""
    data, _ = planted_linear_system(n_params=300, n_snapshots=101)
    fine = write_store(tmp_path / "fine.zarr", data, steps=range(0, 1010, 10))
    coarse = write_store(tmp_path / "coarse.zarr", data[::10], steps=range(0, 1010, 100))
    return fine, coarse


def test_conjugacy_of_two_spacings_is_refused_without_a_selection(tmp_path, two_spacings):
    fine, coarse = two_spacings
    result = invoke("conjugacy", fine, coarse, "--null-size", 0, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "hold snapshots at different spacings (fine.zarr every 10 step(s), coarse.zarr every 100 step(s))" in result.stderr
    assert "--steps ::100" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("select", [["--steps", "::100"], ["--stride", "10,1"]])
def test_conjugacy_compares_two_spacings_on_a_common_grid(tmp_path, two_spacings, select):
    # the same snapshots on both sides: distance 0 between the spectra
    fine, coarse = two_spacings
    result = invoke("conjugacy", fine, coarse, "--null-size", 0, "--k", 4, *select, "--out", tmp_path / "o", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["distance"][0][1] == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(summary["eigenvalues"][0], summary["eigenvalues"][1], atol=1e-8)
    assert summary["selection"][str(fine)][0]["stride" if select[0] == "--stride" else "steps"] == (
        10 if select[0] == "--stride" else "::100")


def test_dmd_steps_and_stride_select_before_the_window(tmp_path, two_spacings):
    fine, _ = two_spacings
    result = invoke("dmd", fine, "--steps", "100:900", "--stride", 2, "--window", "1:", "--rank", 6, "--json",
                    "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # steps 100..900 (81 snapshots), every 2nd: 100, 120, ..., 900 (41); the window drops the first
    assert summary["window"] == [1, 40] and summary["steps"] == [120, 900]
    assert summary["selection"] == [{"steps": "100:900", "stride": 2}]
    assert summary["snapshot_spacing_steps"] == 20.0


@pytest.mark.parametrize("args, said", [
    (["--steps", "100"], "error: --steps must look like a:b or a:b:s"),
    (["--steps", "5000:"], "error: --steps 5000: selects no snapshot of fine.zarr, which holds steps 0..1000"),
    (["--stride", "0"], "error: --stride must be"),
    (["--steps", "900:100"], "error: --steps 900:100: the last step 100 comes before the first 900"),
])
@pytest.mark.parametrize("command", ["dmd", "cmd", "prune", "report"])
def test_bad_selections_are_one_line_errors(tmp_path, two_spacings, command, args, said):
    fine, _ = two_spacings
    result = invoke(command, fine, *args, "--out", tmp_path / "o")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), lines
    assert not (tmp_path / "o").exists()


def test_conjugacy_stride_list_must_match_the_stores(tmp_path, two_spacings):
    fine, coarse = two_spacings
    result = invoke("conjugacy", fine, coarse, "--stride", "10,1,1", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --stride takes one k or one per store (2: the runs, then --null), got 3"


def test_cmd_sees_the_selection(tmp_path, two_spacings):
    fine, _ = two_spacings
    result = invoke("cmd", fine, "--steps", "::100", "--modes", 2, "--samples", 50, "--no-evaluate", "--json",
                    "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    np.testing.assert_array_equal(summary["steps"], np.arange(0, 1001, 100))


def test_report_runs_on_the_selection(tmp_path, two_spacings):
    fine, _ = two_spacings
    result = invoke("report", fine, "--steps", "::50", "--no-evaluate", "--json", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["selection"] == [{"steps": "::50", "stride": 1}]
    assert summary["info"]["n_snapshots"] == 21 and summary["dmd"]["steps"] == [0, 1000]
    assert summary["dmd"]["snapshot_spacing_steps"] == 50.0
