"""No command reports NaN as a result with exit 0 (issue 12): a quantity that is undefined for a
legitimate reason reads "n/a" with the reason (null in JSON, which has no NaN); bad input that
would make one NaN is refused (tests/test_bad_inputs.py)."""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
runner = CliRunner()


def strict_json(text):
    """json.loads that refuses NaN and Infinity, which json.dumps writes by default."""
    def refuse(token):
        raise AssertionError(f"{token} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_record_of_a_diverging_run_has_no_final_loss(tmp_path):
    """lr = 5 diverges in the first epoch: no NaN final loss, the epoch it diverged in instead."""
    result = runner.invoke(app, ["record", "quadratic-mlp", "--lr", "5", "--epochs", "2", "--set", "n_train=200",
                                 "--out", str(tmp_path / "q.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    summary = strict_json(result.stdout)
    assert summary["final_loss"] is None and summary["diverged_epoch"] == 1
    assert "training diverged: the loss is not finite from epoch 1" in result.stderr


def test_record_of_a_converging_run_keeps_its_final_loss(tmp_path):
    result = runner.invoke(app, ["record", "quadratic-mlp", "--epochs", "1", "--set", "n_train=200",
                                 "--out", str(tmp_path / "q.zarr"), "--json"])
    summary = strict_json(result.stdout)
    assert summary["diverged_epoch"] is None and 0 < summary["final_loss"] < 1e4
    assert "diverged" not in result.stderr


def _run(label, alpha, train):
    from traj.training import ReplayRun

    n = len(train)
    return ReplayRun(label, alpha, f"{label}.zarr", tuple(train), tuple(v + 1 for v in train), None, (0.1,) * n, (), 0.0, 0)


def test_kga_summary_of_a_diverged_alpha(tmp_path):
    """α = 1e6 blows the run up in epoch 3: its final losses are n/a (diverged at epoch 3), never NaN."""
    from traj.report.kga import kga_report, loss_text
    from traj.training import ReplayResult

    nan = float("nan")
    result = ReplayResult("quadratic-mlp", {}, {"window": 5}, _run("plain", 0.0, [4.0, 3.0, 2.0, 1.5]),
                          [_run("kga-alpha0.5", 0.5, [4.0, 2.5, 1.4, 1.0]),
                           _run("kga-alpha1e+06", 1e6, [4.0, 3.0, nan, nan])], 1.0)
    summary = strict_json(json.dumps(result.to_dict()))
    good, bad = summary["comparison"]
    assert good["final_train_loss"] == 1.0 and good["diverged_epoch"] is None and good["epochs_to_plain_final_loss"] == 3
    assert bad["final_train_loss"] is None and bad["final_val_loss"] is None and bad["diverged_epoch"] == 3
    assert bad["loss_difference"] == [0.0, 0.0, None, None] and bad["epochs_to_plain_final_loss"] is None
    assert summary["runs"][1]["train_loss"] == [4.0, 3.0, None, None]
    assert loss_text(bad["final_train_loss"], bad["diverged_epoch"]) == "n/a (diverged at epoch 3)"
    kga_report(result, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| kga-alpha1e+06 | n/a (diverged at epoch 3) | n/a (diverged at epoch 3) | never |" in text
    assert "nan" not in text.lower()


def test_kga_stops_accelerating_when_the_base_step_is_not_finite():
    """The step after a divergence is not projected (no NaN matmul, no RuntimeWarning under filterwarnings=error)."""
    from traj import KGA

    w = nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)
    kga = KGA(opt, [w], alpha=1.0, window=3)
    for _ in range(3):
        w.grad = 0.5 * w.detach().clone()
        kga.step()
        kga.epoch_end()
    assert kga._propagator is not None
    w.grad = torch.full((4,), float("nan"), dtype=torch.float64)
    kga.step()
    assert kga.log.diverged and kga._propagator is None


def test_dmd_rate_of_a_zero_eigenvalue_is_na(tmp_path):
    """θ jumps to 0 and stays: exact DMD has λ = 0, whose rate log(λ) is undefined (null, "n/a (λ = 0)")."""
    data = np.zeros((8, 30), dtype=np.float32)
    data[0] = np.random.default_rng(0).standard_normal(30)
    write_store(tmp_path / "zero.zarr", data)
    result = runner.invoke(app, ["dmd", str(tmp_path / "zero.zarr"), "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    summary = strict_json(result.stdout)
    assert summary["eigenvalues"] == [[0.0, 0.0]] and summary["rates_per_step"] == [None]
    assert "| n/a (λ = 0) |" in (tmp_path / "o" / "report.md").read_text()


def test_info_of_a_store_without_snapshots_has_no_compression_ratio(tmp_path):
    from traj.store import Layout, StoreWriter

    StoreWriter(tmp_path / "empty.zarr", Layout.from_shapes([("w", (5,))])).close()
    result = runner.invoke(app, ["info", str(tmp_path / "empty.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["compression_ratio"] is None
    text = runner.invoke(app, ["info", str(tmp_path / "empty.zarr")]).stdout
    assert "compression n/a: no snapshots" in text and "nan" not in text.lower()


def test_prune_report_without_refinement_says_na(tmp_path):
    """--refine-epochs 0: the accuracy after refinement is n/a (the table said "0.738 / nan")."""
    out = tmp_path / "o"
    result = runner.invoke(app, ["prune", str(SAMPLE / "digits-cnn.zarr"), "--method", "kmp,gmp", "--compression", "2",
                                 "--seeds", "1", "--refine-epochs", "0", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["accuracy_refined"] is None
    text = (out / "report.md").read_text()
    assert "nan" not in text.lower() and "| KMP | " in text and " / n/a |" in text
