import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from tests.conftest import planted_modes, write_store
from traj.analysis.cmd import (
    CMDParams,
    CMDScoring,
    adjusted_rand_index,
    cmd,
    compare_models,
    history_sweep,
    load,
    moving_columns,
    row_distances,
    run_cmd,
    sample_moving,
    sample_weights,
    stability,
    weight_ema,
)
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
    np.testing.assert_array_equal(model.steps, np.arange(4, 31, 2))  # every 2nd counted back from snapshot 30
    for k in (0, 5, 13):
        np.testing.assert_allclose(model.reconstruct_snapshot(k), in_memory.model.reconstruct_snapshot(k), rtol=1e-12)
        np.testing.assert_allclose(model.reconstruct_snapshot(k), data[4 + 2 * k], atol=1e-9)
    block = model.reconstruct_block(slice(100, 200))
    np.testing.assert_allclose(block, data[4:31:2, 100:200], atol=1e-9)
    # the result's model reads its per-weight arrays from the cmd.zarr it wrote (nothing of size N in memory)
    assert not isinstance(saved.model.labels, np.ndarray)
    np.testing.assert_array_equal(np.asarray(saved.model.labels[:]), in_memory.model.labels)


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
    # one mode: every seed's partition is the same; four modes: 5 seeds (10 pairs) agree only in part
    assert summary["sweep"][0]["ari_min"] == 1.0
    assert 0.3 < summary["sweep"][1]["ari_min"] <= summary["sweep"][1]["ari_median"] < 1.0
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


# ---------------------------------------------------------------------- issue 17 item 6: partitions that repeat
def test_row_distances_equal_pdist(rng):
    from scipy.spatial.distance import pdist

    x = rng.standard_normal((30, 300))
    corr = np.abs(np.corrcoef(x.T))
    np.testing.assert_allclose(row_distances(corr), pdist(corr), rtol=0, atol=1e-12)


def test_adjusted_rand_index_matches_scikit_learn(rng):
    for m1, m2 in ((3, 3), (2, 7), (5, 1)):
        a, b = rng.integers(m1, size=500), rng.integers(m2, size=500)
        b[:300] = a[:300] % m2  # partly agreeing
        table = np.bincount(a * m2 + b, minlength=m1 * m2).reshape(m1, m2)
        assert adjusted_rand_index(table) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_samples_are_weights_that_move():
    # sample_data/digits-cnn.zarr: 644 of 3658 weights never move (dead units; Adam leaves them exactly)
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    moves = moving_columns(Engine().collect(store, None))
    assert int((~moves).sum()) == 644
    # the design alone (traj before issue 17) wasted 153-176 of 1000 samples on them
    assert [int((~moves[sample_weights(store, 1000, seed=k)]).sum()) for k in range(5)] == [153, 163, 176, 154, 167]
    for drawn in sample_moving(store, 1000, seeds=range(5)):
        assert drawn.indices.size == 1000 and moves[drawn.indices].all()
        assert drawn.candidates == 2000 and 330 <= drawn.frozen <= 357
        np.testing.assert_array_equal(drawn.trajectories, store.read(columns=drawn.indices).astype(np.float64))


def test_frozen_planted_weights_stay_out_of_the_sample(tmp_path):
    data, labels, *_ = planted_modes(n_params=6000, n_snapshots=30, n_modes=4)
    data = np.concatenate([data, np.full((30, 3000), 0.7)], axis=1)  # 0.7: its float64 mean is an ulp off
    result = cmd(RunStore(write_store(tmp_path / "f.zarr", data)), modes=4, samples=500)
    assert result.sample_indices.size == 500 and result.sample_indices.max() < 6000
    assert adjusted_rand_score(labels, result.model.labels[:6000]) == 1.0
    np.testing.assert_array_equal(result.model.a[6000:], 0.0)


def test_row_distance_is_steadier_across_sampling_seeds():
    # ARI over 5 sampling seeds (10 pairs) on sample_data/digits-cnn.zarr, M = 5, 1000 moving samples:
    # Euclidean distance between |corr| rows 0.66-0.89 (mean 0.74) against 0.23-0.80 (0.41) for 1 - |corr|,
    # at the same relative error (0.061-0.070 vs 0.059-0.067)
    rows = stability(SAMPLE / "digits-cnn.zarr", modes=5, distance="rows", samples=1000)
    corr = stability(SAMPLE / "digits-cnn.zarr", modes=5, distance="corr", samples=1000)
    assert rows.seeds == (0, 1, 2, 3, 4) and rows.ari.size == 10
    assert rows.ari.min() == pytest.approx(0.659, abs=2e-3) and rows.ari.mean() == pytest.approx(0.743, abs=2e-3)
    assert corr.ari.min() == pytest.approx(0.230, abs=2e-3) and corr.ari.mean() == pytest.approx(0.408, abs=2e-3)
    assert abs(rows.relative_errors.mean() - corr.relative_errors.mean()) < 0.002


def test_a_small_models_partition_does_not_depend_on_the_sampling_seed():
    """Issue 26: on digits-cnn (N = 3658), M = 5, five seeds of 1000 samples agree with ARI min 0.66 (above). By
    default a model of at most ALL_SAMPLES weights is clustered whole: every seed clusters the same 3014 moving
    weights, so the 5 partitions of all N weights are one (ARI 1), at a relative error no worse than 1000 samples'."""
    from traj.analysis.cmd import ALL_SAMPLES, default_samples

    assert default_samples(3658) == 3658 and default_samples(ALL_SAMPLES + 1) == 1000
    st = stability(SAMPLE / "digits-cnn.zarr", modes=5)
    assert st.ari.size == 10 and st.ari.min() == 1.0
    sampled = stability(SAMPLE / "digits-cnn.zarr", modes=5, samples=1000)
    assert st.relative_errors.max() == pytest.approx(0.0639, abs=5e-4)
    assert st.relative_errors.max() < sampled.relative_errors.mean()
    fit = cmd(SAMPLE / "digits-cnn.zarr", modes=5, keep_model=False)
    assert fit.sample_indices.size + fit.constant_samples == 3658 and fit.sample_indices.size == 3014


def test_stability_equals_pairwise_ari_of_the_fits(tmp_path):
    data, *_ = planted_modes(n_params=4000, n_snapshots=30, n_modes=4, noise=1.0, seed=2)
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    st = stability(store, modes=4, samples=300, seeds=3, seed=7)
    fits = [cmd(store, modes=4, samples=300, seed=k) for k in (7, 8, 9)]
    expected = [adjusted_rand_score(fits[i].model.labels, fits[j].model.labels) for i, j in ((0, 1), (0, 2), (1, 2))]
    np.testing.assert_allclose(st.ari, expected, atol=1e-12)
    np.testing.assert_allclose(st.relative_errors, [f.relative_error for f in fits], rtol=1e-9)


@pytest.mark.slow
def test_row_distance_recovers_noisy_planted_modes_steadily(tmp_path):
    # 20 000 weights in 5 modes with noise 1.0, and 3000 frozen: Euclidean rows ARI 0.876-0.901 between
    # seeds (1 - |corr|: 0.35-0.88), relative error 0.617-0.624 (1 - |corr|: 0.620-0.656)
    data, *_ = planted_modes(n_params=20_000, n_snapshots=40, n_modes=5, noise=1.0)
    store = RunStore(write_store(tmp_path / "p.zarr", np.concatenate([data, np.full((40, 3000), 0.7)], axis=1)))
    rows, corr = stability(store, modes=5), stability(store, modes=5, distance="corr")
    assert rows.ari.min() >= 0.85 and rows.ari.mean() > corr.ari.mean() + 0.2
    assert rows.relative_errors.max() <= corr.relative_errors.max()


# ---------------------------------------------------------------------- issue 17 item 3: CMD beside the weight EMA
def _closed_form_ema(x, beta, k):
    """θ̄_k = β^k θ₀ + (1 − β) Σ_{j=1..k} β^{k−j} θ_j."""
    return beta**k * x[0] + (1 - beta) * sum(beta ** (k - j) * x[j] for j in range(1, k + 1))


def test_weight_ema_is_the_closed_form(rng):
    x = rng.standard_normal((50, 7))
    streamed = np.concatenate([weight_ema(x[:, c : c + 3], 0.9) for c in range(0, 7, 3)], axis=1)  # column blocks
    expected = np.stack([_closed_form_ema(x, 0.9, k) for k in range(50)])
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weight_ema(x, 0.9, np.array([0, 17, 49])), expected[[0, 17, 49]], atol=1e-12)
    np.testing.assert_allclose(weight_ema(np.full((20, 3), 2.5), 0.99), 2.5, rtol=1e-15)  # a constant stays put
    # a ramp θ_j = j: θ̄_k = k − β(1 − β^k)/(1 − β); β = 0.9, k = 10
    assert weight_ema(np.arange(11.0)[:, None], 0.9, np.array([10]))[0, 0] == pytest.approx(4.1381059609, abs=1e-10)


class _SumRecipe:
    """A stand-in recipe whose 'accuracy' is linear in θ, so the EMA's score is the EMA of the scores."""

    def evaluate(self, theta):
        return {"accuracy": float(np.asarray(theta, dtype=np.float64).sum())}


def test_streamed_pass_scores_the_ema_of_every_block(tmp_path):
    data, *_ = planted_modes(n_params=5000, n_snapshots=30, n_modes=3, noise=0.1)
    store = RunStore(write_store(tmp_path / "e.zarr", data))
    engine = Engine(block_bytes=30 * 8 * 700)  # several column blocks
    run = run_cmd(store, CMDParams(modes=3, samples=300, window="2:29", subsample=2),
                  CMDScoring(eval_points=5, ema=(0.9, 0.5)), evaluator=_SumRecipe(), engine=engine)
    result, ev = run.fit, run.evaluation
    kept = data[3:30:2]  # every 2nd counted back from snapshot 29
    picks = np.searchsorted(result.snapshots, ev.snapshots)
    np.testing.assert_array_equal(picks, [0, 3, 6, 10, 13])
    assert [t.beta for t in ev.ema] == [0.5, 0.9]
    for track in ev.ema:
        expected = [_closed_form_ema(kept, track.beta, k).sum() for k in picks]
        np.testing.assert_allclose(track.metrics["accuracy"], expected, rtol=1e-6)  # the EMAs are kept in float32
        assert track.first_weight == pytest.approx(track.beta**13)
    assert ev.ema[1].stale and not ev.ema[0].stale  # 0.9**13 = 0.25, 0.5**13 = 1e-4
    with pytest.raises(TrajError, match="recipe"):
        run_cmd(store, CMDParams(modes=3), CMDScoring(ema=(0.9,)))
    with pytest.raises(TrajError, match="ema"):
        CMDScoring(ema=(1.0,))


def test_cli_scores_the_ema_and_warns_when_beta_is_too_close_to_one(tmp_path):
    result = runner.invoke(app, ["cmd", str(SAMPLE / "digits-cnn.zarr"), "--modes", "5", "--eval-points", "6",
                                 "--ema", "0.9,0.999", "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout)["evaluation"][-1]
    # 116 snapshots: EMA 0.9 ends at the original's accuracy or above; 0.999 still holds 0.89 of the random init
    assert last["ema0.9_accuracy"] == pytest.approx(0.8914, abs=1e-4) and last["original_accuracy"] < 0.8914
    assert last["ema0.999_accuracy"] == pytest.approx(0.1003, abs=1e-4)
    assert "EMA 0.999 still puts 0.89" in result.stderr and "EMA 0.9 " not in result.stderr


def test_compare_models_scores_dmd_and_cmd_at_the_same_snapshots(tmp_path):
    data, *_ = planted_modes(n_params=3000, n_snapshots=20, n_modes=3)
    store = RunStore(write_store(tmp_path / "m.zarr", data))
    comparison = compare_models(store, _SumRecipe(), ranks=(2, 30), modes=(3,), max_points=5, samples=300)
    ev = comparison.dmd
    np.testing.assert_array_equal(ev.snapshots, [0, 5, 10, 14, 19])
    original = data[ev.snapshots].sum(axis=1)
    np.testing.assert_allclose(ev.original["accuracy"], original, rtol=1e-12)
    # planted modes are exact affine copies: CMD with 3 modes rebuilds them (θ̂ scored in the store's float64)
    np.testing.assert_allclose(comparison.cmd[0]["accuracy"], original, rtol=1e-9, atol=1e-8)
    assert comparison.cmd_motion_errors[0] < 1e-6
    assert ev.ranks[0] == 2 and ev.ranks[1] < 20  # 30 reduced to what 20 snapshots resolve
    assert ev.motion_norm == pytest.approx(np.linalg.norm(data - data.mean(axis=0)), rel=1e-9)


# ---------------------------------------------------------------------- issue 17 item 5: history length and spacing
def test_history_sweeps_score_every_setting_on_the_shared_snapshots(tmp_path):
    data, *_ = planted_modes(n_params=3000, n_snapshots=30, n_modes=3)
    store = RunStore(write_store(tmp_path / "h.zarr", data))
    by_start = history_sweep(store, "window", (0, 10, 20), recipe=_SumRecipe(), modes=3, samples=300)
    np.testing.assert_array_equal(by_start.scored, np.arange(20, 30))  # the shortest history's snapshots
    assert [r.snapshots for r in by_start.rows] == [30, 20, 10]
    by_spacing = history_sweep(store, "subsample", (1, 2, 3), recipe=_SumRecipe(), modes=3, samples=300)
    np.testing.assert_array_equal(by_spacing.scored, [5, 11, 17, 23, 29])  # every 6th from the end: all keep them
    assert [r.snapshots for r in by_spacing.rows] == [30, 15, 10]
    for sweep in (by_start, by_spacing):
        assert sweep.original_mean == pytest.approx(data[sweep.scored].sum(axis=1).mean(), rel=1e-12)
        for row in sweep.rows:  # planted modes: every history rebuilds them exactly
            assert row.metric_mean == pytest.approx(sweep.original_mean, rel=1e-9)
            assert row.metric_last == pytest.approx(data[29].sum(), rel=1e-9) and row.relative_error < 1e-6
    with pytest.raises(TrajError, match="sweep_window"):
        history_sweep(store, "window", (28,), modes=3)


def test_cli_history_sweeps(tmp_path):
    out = tmp_path / "h"
    result = runner.invoke(app, ["cmd", str(SAMPLE / "digits-cnn.zarr"), "--modes", "5", "--no-evaluate",
                                 "--sweep-window", "0,80", "--sweep-subsample", "1,4", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    window, spacing = json.loads(result.stdout)["history_sweeps"]
    assert window["kind"] == "window" and spacing["kind"] == "subsample"
    # the last 36 snapshots alone are rebuilt 6x better than the whole run; spacing 4 costs little
    # (every moving weight of the 3658 clustered: the default for a model of at most 4096)
    assert [r["relative_error"] for r in window["rows"]] == pytest.approx([0.0639, 0.0108], abs=2e-4)
    assert [r["relative_error"] for r in spacing["rows"]] == pytest.approx([0.0639, 0.0649], abs=2e-4)
    assert [r["snapshots"] for r in spacing["rows"]] == [116, 29]
    assert (out / "sweep_window.png").is_file() and (out / "sweep_subsample.png").is_file()


def test_run_cmd_keeps_the_sweep_beside_the_fit_never_in_it(tmp_path):
    import dataclasses

    from traj.analysis.cmd import CMDResult, CMDRun

    assert not {"evaluation", "comparison", "sweep", "history", "model_path"} & {
        f.name for f in dataclasses.fields(CMDResult)}
    data, *_ = planted_modes(n_params=3000, n_snapshots=20, n_modes=3, noise=0.0)
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    run = run_cmd(store, CMDParams(modes=3, samples=300), CMDScoring(sweep=(3, 2)))
    assert isinstance(run, CMDRun) and run.evaluation is None and run.comparison is None
    assert [row.modes for row in run.sweep] == [2, 3]
    alone = cmd(store, modes=3, samples=300)
    assert run.fit.relative_error == alone.relative_error
    summary = run.to_dict(model=tmp_path / "cmd.zarr")
    assert summary["model"] == str(tmp_path / "cmd.zarr") and len(summary["sweep"]) == 2
    assert {k: v for k, v in summary.items() if k not in ("seconds",)} | {"seconds": None} == \
        {**alone.to_dict(), "options": alone.params.options(), "evaluation": None, "comparison": None,
         "history_sweeps": None, "sweep": summary["sweep"], "model": summary["model"], "seconds": None}
