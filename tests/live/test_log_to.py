"""--log-to tensorboard:DIR on the offline commands: headline numbers and figures, read back with TensorBoard's reader."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from traj.cli.app import app

runner = CliRunner()
pytest.importorskip("tensorboard")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_dmd_sends_its_numbers_and_figures_to_tensorboard(tmp_path):
    out, tb = tmp_path / "out", tmp_path / "tb"
    result = runner.invoke(app, ["dmd", "sample_data/digits-cnn.zarr", "--rank", "6", "--out", str(out),
                                 "--log-to", f"tensorboard:{tb}", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    events = _events(tb)
    scalars = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}
    assert scalars["dmd/rank"] == summary["rank"] == 6
    assert scalars["dmd/reconstruction_error"] == pytest.approx(summary["reconstruction_error"], rel=1e-6)
    images = sorted(events.Tags()["images"])
    assert images == sorted(f"dmd/{p.stem}" for p in out.glob("*.png")) and images


def test_an_unknown_tracker_is_refused_before_any_work(tmp_path):
    result = runner.invoke(app, ["cmd", "sample_data/digits-cnn.zarr", "--out", str(tmp_path / "out"),
                                 "--log-to", "comet"])
    assert result.exit_code == 2
    assert "tensorboard:DIR, wandb[:PROJECT] or mlflow:URI" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["prune", "sample_data/digits-cnn.zarr", "--log-to", "tensorboard:"])
    assert result.exit_code == 2 and "tensorboard needs a log directory" in result.output
