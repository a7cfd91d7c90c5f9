import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from tests.conftest import planted_modes, write_store
from traj.analysis.cmd import cmd, load, sample_weights
from traj.cli.app import app
from traj.engine import Engine
from traj.errors import TrajError
from traj.store import Layout, RunStore

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    data, labels, a, b, profiles = planted_modes(n_params=100_000, n_snapshots=40, n_modes=5)
    path = write_store(tmp_path_factory.mktemp("cmd") / "p.zarr", data)
    return RunStore(path), data, labels, a, b


def test_planted_modes_are_recovered_exactly(planted):
    store, data, labels, a, b = planted
    result = cmd(store, modes=5, samples=1000)
    assert adjusted_rand_score(labels, result.model.labels) >= 0.99
    # without noise the affine maps are exact: a_fit = a / a_ref and b_fit = b - a_fit·b_ref
    ref = result.reference_indices[result.model.labels]
    np.testing.assert_allclose(result.model.a * a[ref], a, rtol=1e-9)
    np.testing.assert_allclose(result.model.b, b - result.model.a * b[ref], atol=1e-9)
    assert result.mse < 1e-12 and result.relative_error < 1e-6  # closed-form residual: rounding ~1e-16·var
    assert result.mode_mean_corr.min() > 1 - 1e-12
    assert result.compression_ratio == pytest.approx(100_000 * 40 / (5 * 40 + 2 * 100_000))


def test_noisy_planted_modes(tmp_path):
    data, labels, *_ = planted_modes(n_params=20_000, n_modes=4, noise=0.02, seed=3)
    result = cmd(RunStore(write_store(tmp_path / "n.zarr", data)), modes=4, samples=600)
    assert adjusted_rand_score(labels, result.model.labels) >= 0.99
    assert 0 < result.relative_error < 0.05


def test_threshold_chooses_the_number_of_modes(planted):
    store, *_ = planted
    assert cmd(store, threshold=0.3, samples=500).modes == 5


def test_sampling_covers_every_layer(tmp_path, rng):
    layout = Layout.from_shapes([(f"l{i}", (size,)) for i, size in enumerate([5, 2000, 30, 1, 400, 7])])
    store = RunStore(write_store(tmp_path / "s.zarr", rng.standard_normal((4, layout.n_params)), layout=layout))
    picks = sample_weights(store, 200, seed=1)
    assert picks.size == 200 and np.unique(picks).size == 200
    for e in layout.entries:
        assert np.any((picks >= e.offset) & (picks < e.stop)), e.name
    np.testing.assert_array_equal(picks, sample_weights(store, 200, seed=1))


def test_saved_model_reconstructs_what_the_result_does(tmp_path, planted):
    store, data, *_ = planted
    in_memory = cmd(store, modes=5, samples=400, window="3:30", subsample=2)
    saved = cmd(store, modes=5, samples=400, window="3:30", subsample=2, out=tmp_path / "cmd.zarr")
    model = load(tmp_path / "cmd.zarr")
    np.testing.assert_array_equal(np.asarray(model.labels[:]), in_memory.model.labels)
    np.testing.assert_array_equal(model.steps, np.arange(3, 31, 2))
    for k in (0, 5, 13):
        np.testing.assert_allclose(model.reconstruct_snapshot(k), in_memory.model.reconstruct_snapshot(k), rtol=1e-12)
        np.testing.assert_allclose(model.reconstruct_snapshot(k), data[3 + 2 * k], atol=1e-9)
    block = model.reconstruct_block(slice(100, 200))
    np.testing.assert_allclose(block, data[3:31:2, 100:200], atol=1e-9)
    assert saved.model_path == str(tmp_path / "cmd.zarr")


@pytest.mark.parametrize("engine", [Engine(backend="torch"), Engine(backend="dask"), Engine(block_bytes=40 * 8 * 999)])
def test_backends_agree(planted, engine):
    store, *_ = planted
    reference = cmd(store, modes=5, samples=300)
    other = cmd(store, modes=5, samples=300, engine=engine)
    np.testing.assert_array_equal(other.model.labels, reference.model.labels)
    np.testing.assert_allclose(other.model.a, reference.model.a, rtol=1e-10)
    assert other.mse == pytest.approx(reference.mse, rel=1e-8, abs=1e-14)  # both ~1e-16: rounding


def test_constant_weights(tmp_path, rng):
    data, *_ = planted_modes(n_params=3000, n_modes=3)
    data[:, :500] = 1.5  # frozen weights
    result = cmd(RunStore(write_store(tmp_path / "c.zarr", data)), modes=3, samples=300)
    np.testing.assert_array_equal(result.model.a[:500], 0.0)
    np.testing.assert_array_equal(result.model.b[:500], 1.5)
    assert result.constant_samples > 0 and result.mse < 1e-12


def test_errors(planted):
    store, *_ = planted
    with pytest.raises(TrajError, match="more than the"):
        cmd(store, modes=50, samples=20)
    with pytest.raises(TrajError, match="modes must be an integer from 1"):
        cmd(store, modes=0)
    with pytest.raises(TrajError, match="threshold"):
        cmd(store, threshold=1.5)
    with pytest.raises(TrajError, match="at least 3"):
        cmd(store, window="0:4", subsample=3)


runner = CliRunner()


def test_cli_end_to_end_with_evaluation(tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["cmd", str(SAMPLE / "digits-cnn.zarr"), "--modes", "4", "--samples", "400",
                                 "--sweep", "1,4", "--eval-points", "6", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("modes", "mode_sizes", "reconstruction_mse", "relative_error", "references", "evaluation", "seconds"):
        assert key in summary
    assert summary["modes"] == 4 and sum(summary["mode_sizes"]) == 3658
    assert len(summary["references"]) == 4 and len(summary["references"][0]) == 116
    assert len(summary["evaluation"]) == 6
    assert summary["evaluation"][0]["snapshot"] == 0 and summary["evaluation"][-1]["snapshot"] == 115
    last = summary["evaluation"][-1]
    assert last["original_accuracy"] > 0.8 and abs(last["cmd_accuracy"] - last["original_accuracy"]) < 0.1
    assert [row["modes"] for row in summary["sweep"]] == [1, 4]
    files = {p.name for p in out.iterdir()}
    assert {"cmd.zarr", "summary.json", "report.md", "report.html", "corr_matrix.png", "references.png",
            "mode_bands.png", "modes_per_layer.png", "sample_fits.png", "evaluation.png", "sweep.png"} <= files
    model = load(out / "cmd.zarr")
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    rebuilt = model.reconstruct_snapshot(115)
    assert np.linalg.norm(rebuilt - store.snapshot(115)) / np.linalg.norm(store.snapshot(115)) < 0.2


@pytest.mark.parametrize("args, message", [(["--modes", "0"], "--modes"), (["--samples", "1"], "--samples"),
                                           (["--sweep", "a,b"], "--sweep"), (["--modes", "5000"], "more than the")])
def test_cli_errors(tmp_path, args, message):
    result = runner.invoke(app, ["cmd", str(SAMPLE / "quadratic-mlp.zarr"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_drop_nonfinite_leaves_bad_snapshots_out(tmp_path):
    data, labels, *_ = planted_modes(n_params=5000, n_snapshots=30, n_modes=3)
    data[7, 100] = np.nan
    data[20, :] = np.inf
    store = RunStore(write_store(tmp_path / "n.zarr", data))
    with pytest.raises(TrajError, match="NaN or Inf"):
        cmd(store, modes=3, samples=300)
    result = cmd(store, modes=3, samples=300, drop_nonfinite=True)
    assert 7 not in result.snapshots and 20 not in result.snapshots and result.snapshots.size == 28
    assert adjusted_rand_score(labels, result.model.labels) >= 0.99
