import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from traj.cli.app import app

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
runner = CliRunner()


def test_report_on_a_recipe_run(tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(SAMPLE / "digits-cnn.zarr"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dmd"]["rank"] >= 1 and summary["cmd"]["modes"] == 5
    assert summary["prune"]["kept"]["kmp"]["2"] == 1796
    assert summary["cmd"]["evaluation"][-1]["original_accuracy"] > 0.8
    assert set(summary["skipped"]) == {"conjugacy"}
    models = summary["models"]  # DMD ranks beside CMD modes, scored at the same snapshots as CMD's evaluation
    assert models["cmd_modes"] == [2, 5] and models["dmd"]["ranks"] == [5, 10, 20]
    original = models["dmd"]["original"]["accuracy"]
    assert len(original) == 12 and original[-1] == pytest.approx(summary["cmd"]["evaluation"][-1]["original_accuracy"])
    assert all(0 < e < 1 for e in models["dmd"]["motion_errors"] + models["cmd_motion_errors"])
    assert (out / "models.png").exists()
    html = (out / "report.html").read_text()
    assert html.index("<h2>Key figures") < html.index("<h2>DMD (Koopman spectrum)") < html.index("<h2>Pruning")
    assert html.count("data:image/png;base64,") == len(list(out.glob("*.png"))) >= 8


def test_report_skips_what_does_not_apply(tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(SAMPLE / "mirror-omd.zarr"), "--peers", str(SAMPLE / "mirror-ogd.zarr"),
                                 "--null", str(SAMPLE / "mirror-omd-seed1.zarr"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert "prune" in summary["skipped"] and "no prunable" in summary["skipped"]["prune"]
    assert summary["conjugacy"]["distance"][0][1] < 0.02
    assert summary["conjugacy"]["verdicts"][0]["verdict"] == "conjugate"  # with the seed null: a verdict
    assert (out / "conjugacy_spectra.png").exists()
    md = (out / "report.md").read_text()  # the verdict is on the page, not only in summary.json
    # with a seed null the default rule is 'reproducible': the statistic is standardised
    assert f"| {summary['conjugacy']['verdicts'][0]['verdict']} |" in md and "standardised / threshold" in md
