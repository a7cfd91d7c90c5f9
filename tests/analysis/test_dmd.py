import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import match, planted_linear_system, write_store
from traj.analysis.dmd import dmd, parse_window, save_modes
from traj.cli.app import app
from traj.engine import Engine
from traj.errors import ParameterError, TrajError, UnevenSpacingError
from traj.store import Layout, RunStore

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 1e-5)])
def test_planted_linear_system_recovers_its_eigenvalues(tmp_path, dtype, tol):
    data, eigenvalues = planted_linear_system(n_params=10_000)
    store = RunStore(write_store(tmp_path / "p.zarr", data.astype(dtype)))
    result = dmd(store, rank="auto")
    assert result.rank == 6
    np.testing.assert_allclose(match(eigenvalues, result.eigenvalues), eigenvalues, atol=tol)
    assert result.reconstruction_error < 1e-4
    assert sorted(result.classes) == ["neutral", "neutral", "stable", "stable", "stable", "stable"]
    # forecast of the sampled weights continues the true linear dynamics
    forecast = dmd(store, rank=6, window="0:30", forecast=10)
    truth = data[:, forecast.sample_indices].astype(np.float64)
    np.testing.assert_allclose(forecast.sample_reconstruction, truth, atol=1e-6 if dtype == "float64" else 1e-4)


def test_agrees_with_pydmd_on_a_recorded_run():
    from pydmd import DMD

    store = RunStore(SAMPLE / "digits-cnn.zarr")
    ours = dmd(store, rank=20)
    x = store.read().astype(np.float64).T  # (N, T+1), in memory: the reference's setting
    ref = DMD(svd_rank=20, exact=True)
    ref.fit(x)
    ref_eigs = np.asarray(ref.eigs)
    matched = match(ref_eigs, ours.eigenvalues)
    np.testing.assert_allclose(matched, ref_eigs, atol=1e-6)
    # amplitudes depend on each mode's scale and phase; b_j·φ_j does not
    our_modes = Engine().project(store, ours.operator.coefficients)
    order = [int(np.argmin(np.abs(ours.eigenvalues - lam))) for lam in ref_eigs]
    ours_scaled = np.abs(ours.amplitudes[order]) * np.linalg.norm(our_modes[:, order], axis=0)
    ref_scaled = np.abs(ref.amplitudes) * np.linalg.norm(ref.modes, axis=0)
    np.testing.assert_allclose(ours_scaled, ref_scaled, rtol=1e-6)


def test_reconstruction_error_matches_direct_computation(tmp_path, rng):
    data = np.cumsum(rng.standard_normal((30, 500)), axis=0)
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    result = dmd(store, rank=8)
    d = data.T
    phi = d @ result.operator.coefficients
    recon = np.real(phi @ (result.amplitudes[:, None] * result.eigenvalues[:, None] ** np.arange(30)))
    direct = np.linalg.norm(d - recon) / np.linalg.norm(d)
    assert result.reconstruction_error == pytest.approx(direct, rel=1e-6)


def test_layers_window_and_per_layer(tmp_path, rng):
    layout = Layout.from_shapes([("a", (200,)), ("b", (300,))])
    data, _ = planted_linear_system(n_params=500, n_snapshots=25)
    store = RunStore(write_store(tmp_path / "s.zarr", data, layout=layout))
    full = dmd(store, rank=6, window="2:20", per_layer=True)
    assert full.window == (2, 20) and full.n_snapshots == 19
    assert [s.name for s in full.per_layer] == ["a", "b"]
    only_b = dmd(store, rank=6, layers=["b"])
    assert only_b.n_params == 300 and only_b.layers == ("b",)
    # each layer of a linear system has the system's spectrum
    np.testing.assert_allclose(np.sort(np.abs(full.per_layer[1].eigenvalues))[-6:], np.sort(np.abs(full.eigenvalues)), atol=1e-6)
    # a layer with fewer directions than the rank asked gets the "auto" rule's rank (the operator's rule)
    narrow = Layout.from_shapes([("a", (3,)), ("b", (497,))])
    narrow_store = RunStore(write_store(tmp_path / "n.zarr", data, layout=narrow))
    spectra = dmd(narrow_store, rank=6, per_layer=True).per_layer
    auto_a = dmd(narrow_store, rank="auto", layers=["a"], method="gram")
    assert spectra[0].name == "a" and spectra[0].rank == auto_a.rank <= 3 and spectra[1].rank == 6


def test_saved_modes_equal_the_in_memory_modes(tmp_path, rng):
    data = np.cumsum(rng.standard_normal((20, 333)), axis=0)
    store = RunStore(write_store(tmp_path / "s.zarr", data, chunk_bytes=2000))
    result = dmd(store, rank=5, window="3:18")
    path = save_modes(result, store, tmp_path / "modes.zarr", engine=Engine(block_bytes=2048))
    import zarr

    saved = zarr.open_array(path, mode="r")[:]
    expected = data[3:19].T @ result.operator.coefficients
    np.testing.assert_allclose(saved, expected, rtol=1e-10, atol=1e-12)


def test_backends_give_the_same_spectrum():
    store = RunStore(SAMPLE / "quadratic-mlp.zarr")
    reference = dmd(store, rank=12)
    for engine in (Engine(backend="torch"), Engine(backend="dask")):
        other = dmd(store, rank=12, engine=engine)
        np.testing.assert_allclose(other.eigenvalues, reference.eigenvalues, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.abs(other.amplitudes), np.abs(reference.amplitudes), rtol=1e-8)


def test_parse_window():
    assert parse_window(None, 10) == (0, 9)
    assert parse_window("2:5", 10) == (2, 5)
    assert parse_window("-4:", 10) == (6, 9)
    assert parse_window(":4", 10) == (0, 4)
    for bad, message in (("3", "a:b"), ("x:4", "integers"), ("5:20", "outside"), ("4:5", "holds 2 snapshot.*at least 3"),
                         ("5:2", "5:2 ends before it starts$"),
                         ("-1:5", r"-1:5 ends before it starts \(snapshots 9:5 of 0:9; a negative end counts")):
        with pytest.raises(TrajError, match=message):
            parse_window(bad, 10)


def test_errors(tmp_path, rng):
    data = rng.standard_normal((8, 20))
    data[5, 3] = np.nan
    store = RunStore(write_store(tmp_path / "nan.zarr", data))
    with pytest.raises(TrajError, match="snapshot 5 .*NaN"):
        dmd(store)
    assert dmd(store, window="0:4").n_snapshots == 5  # the window before the bad snapshot works
    with pytest.raises(TrajError, match="rank 9 asked for"):
        dmd(RunStore(write_store(tmp_path / "ok.zarr", rng.standard_normal((8, 20)))), rank=9)
    with pytest.raises(TrajError, match="at least 3"):
        dmd(RunStore(write_store(tmp_path / "two.zarr", rng.standard_normal((2, 20)))))


runner = CliRunner()


def test_cli_writes_every_report_file(tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["dmd", str(SAMPLE / "digits-cnn.zarr"), "--per-layer", "--forecast", "10",
                                 "--save-modes", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("rank", "singular_values", "eigenvalues", "abs_eigenvalues", "classes", "amplitudes",
                "reconstruction_error", "n_params", "n_snapshots", "window", "backend", "seconds"):
        assert key in summary
    assert summary["n_params"] == 3658 and summary["n_snapshots"] == 116
    assert len(summary["eigenvalues"]) == summary["rank"] == len(summary["classes"])
    files = {p.name for p in out.iterdir()}
    assert {"summary.json", "report.md", "report.html", "eigenvalues.png", "singular_values.png",
            "reconstruction.png", "layer_spectra.png", "modes.zarr"} <= files
    assert json.loads((out / "summary.json").read_text())["rank"] == summary["rank"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--window", "0:500"], "outside"),
        (["--rank", "5000"], "rank 5000 asked for"),
        (["--rank", "zero"], "--rank"),
        (["--layer", "nope"], "no parameter named 'nope'"),
        (["--backend", "jax"], "unknown backend"),
        (["--forecast", "-1"], "--forecast"),
    ],
)
def test_cli_errors(tmp_path, args, message):
    result = runner.invoke(app, ["dmd", str(SAMPLE / "quadratic-mlp.zarr"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_randomized_range_finder_agrees_with_the_gram():
    """Halko et al. on A = XᵀX, never forming the Gram: same spectrum on a recorded run."""
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    exact = dmd(store, rank=10, method="gram")
    approx = dmd(store, rank=10, method="randomized", n_iter=4)
    np.testing.assert_allclose(match(exact.eigenvalues, approx.eigenvalues), exact.eigenvalues, atol=1e-6)
    np.testing.assert_allclose(approx.operator.singular_values[:10], exact.operator.singular_values[:10], rtol=1e-8)
    assert approx.reconstruction_error == pytest.approx(exact.reconstruction_error, rel=1e-4)
    for engine in (Engine(backend="torch"), Engine(backend="dask")):
        other = dmd(store, rank=10, method="randomized", engine=engine)
        np.testing.assert_allclose(other.eigenvalues, approx.eigenvalues, rtol=1e-8, atol=1e-10)


def test_auto_switches_to_randomized_for_long_windows(tmp_path):
    data, eigenvalues = planted_linear_system(n_params=2000, n_snapshots=120)
    store = RunStore(write_store(tmp_path / "p.zarr", data))
    result = dmd(store, rank=6, max_gram=50, in_memory_bytes=0)
    assert result.choice.method == "randomized" and "too many for a Gram (max 50)" in result.choice.reason
    np.testing.assert_allclose(match(eigenvalues, result.eigenvalues), eigenvalues, atol=1e-8)
    # rank "auto" on the range finder (the tail rule) keeps what the Gram path's median rule keeps
    auto, gram = dmd(store, max_gram=50, in_memory_bytes=0), dmd(store, method="gram")
    assert auto.choice.method == "randomized" and auto.to_dict()["rank_rule"] == "gavish-donoho-tail-noise"
    assert gram.to_dict()["rank_rule"] == "gavish-donoho-median" and auto.rank == gram.rank
    np.testing.assert_allclose(auto.eigenvalues, gram.eigenvalues, atol=1e-8)


def test_drop_nonfinite_skips_bad_snapshots(tmp_path):
    data, eigenvalues = planted_linear_system(n_params=2000, n_snapshots=40)
    data[17, 5] = np.nan
    data[30, :] = np.inf
    store = RunStore(write_store(tmp_path / "p.zarr", data))
    with pytest.raises(TrajError, match="snapshot 17"):
        dmd(store, rank=6)
    result = dmd(store, rank=6, drop_nonfinite=True)
    np.testing.assert_allclose(match(eigenvalues, result.eigenvalues), eigenvalues, atol=1e-8)
    good = np.isfinite(data[:, result.sample_indices]).all(axis=1)
    np.testing.assert_allclose(result.sample_reconstruction[good], data[good][:, result.sample_indices], atol=1e-8)
    assert result.reconstruction_error < 1e-6
    cli = runner.invoke(app, ["dmd", str(tmp_path / "p.zarr"), "--rank", "6", "--drop-nonfinite", "--out",
                              str(tmp_path / "o"), "--json"])
    assert cli.exit_code == 0, cli.output


# ---------------------------------------------------------------------- issue 17 item 2: DMD as a model of training
class _LinearRecipe:
    """A stand-in recipe whose 'accuracy' is linear in θ: its value on θ̂ checks θ̂ itself."""

    def __init__(self, probe):
        self.probe = probe

    def evaluate(self, theta):
        return {"accuracy": float(np.asarray(theta, dtype=np.float64) @ self.probe)}


def test_evaluate_dmd_reconstructs_and_forecasts_a_planted_linear_system(tmp_path):
    from traj.analysis.dmd import evaluate_dmd

    rng = np.random.default_rng(0)
    rot = np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    core = np.zeros((6, 6))
    core[:2, :2] = 0.95 * rot
    core[2:, 2:] = np.diag([0.9, 0.7, 0.5, -0.3])
    s = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    basis = np.linalg.qr(rng.standard_normal((40, 6)))[0]
    a = basis @ (s @ core @ np.linalg.inv(s)) @ basis.T
    theta = [basis @ rng.standard_normal(6)]
    for _ in range(13):
        theta.append(a @ theta[-1])
    data = np.array(theta)  # 14 snapshots; the window holds the first 10, the store 4 more
    probe = rng.standard_normal(40)
    ev = evaluate_dmd(RunStore(write_store(tmp_path / "lin.zarr", data)), _LinearRecipe(probe), ranks=(2, 6, 20),
                      window="0:9", max_points=5, forecast=6)
    assert ev.ranks == (2, 6)  # rank 20 reduced to the 6 directions the window resolves: scored once
    np.testing.assert_array_equal(ev.snapshots, [0, 2, 4, 7, 9])
    np.testing.assert_array_equal(ev.forecast_offsets, [1, 2, 3, 5, 6])  # 5 of the 6
    np.testing.assert_allclose(ev.original["accuracy"], data[ev.snapshots] @ probe, rtol=1e-12)
    for i in (1,):  # rank 6 is exact: reconstruction and forecast (θ̂ is held in float32)
        np.testing.assert_allclose(ev.reconstructed[i]["accuracy"], data[ev.snapshots] @ probe, rtol=1e-5, atol=1e-6)
        forecast = [np.linalg.matrix_power(a, 9 + k) @ data[0] @ probe for k in ev.forecast_offsets]
        np.testing.assert_allclose(ev.forecast[i]["accuracy"], forecast, rtol=1e-5, atol=1e-6)
        assert ev.motion_errors[i] < 1e-6
    assert ev.motion_errors[0] > 0.05
    np.testing.assert_allclose(ev.forecast_original["accuracy"][:3], data[10:13] @ probe, rtol=1e-12)
    assert np.isnan(ev.forecast_original["accuracy"][3:]).all()  # past the store's end


def test_cli_dmd_evaluate(tmp_path):
    # sample digits-cnn, window 0:95: DMD-reconstructed weights keep the accuracy (0.855 original), the
    # rank-10 and rank-20 forecasts 20 snapshots ahead lose it (0.557, 0.649) while rank 5 does not (0.852)
    out = tmp_path / "d"
    result = runner.invoke(app, ["dmd", str(SAMPLE / "digits-cnn.zarr"), "--evaluate", "--eval-ranks", "5,10",
                                 "--eval-points", "2", "--window", "0:95", "--forecast", "20", "--out", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)["evaluation"]
    assert ev["ranks"] == [5, 10] and ev["snapshots"] == [0, 95] and ev["forecast_offsets"] == [1, 20]
    assert ev["original"]["accuracy"][-1] == pytest.approx(0.8552, abs=1e-4)
    assert [r["accuracy"][-1] for r in ev["reconstructed"]] == pytest.approx([0.8607, 0.8552], abs=1e-4)
    assert [r["accuracy"][-1] for r in ev["forecast"]] == pytest.approx([0.8524, 0.5571], abs=1e-4)
    assert ev["motion_errors"] == pytest.approx([0.0650, 0.0446], abs=5e-4)
    assert (out / "evaluation.png").is_file()


def test_unevenly_spaced_snapshots_are_refused_with_an_evenly_spaced_window(tmp_path, rng):
    """DMD fits one λ per spacing: checkpoints at steps 0, 5, 10, 100 are no DMD window (not Δt = 5 silently)."""
    from traj.analysis.windows import check_even_spacing
    from traj.errors import NotApplicableError, UnevenSpacingError

    data = np.cumsum(rng.standard_normal((4, 30)), axis=0)
    path = write_store(tmp_path / "u.zarr", data, steps=[0, 5, 10, 100])
    with pytest.raises(UnevenSpacingError) as caught:
        dmd(path)
    error = caught.value
    assert isinstance(error, NotApplicableError)  # `traj report` shows the section as skipped, with this line
    assert error.spacings == (5, 90) and error.suggestion == (0, 2)
    assert str(error) == ("window 0:3 (the whole run) holds snapshots at unevenly spaced steps: spacings 5 (2×), "
                          "90 (1×) steps (the first change after snapshot 2, step 10 → 100); DMD assumes evenly "
                          "spaced snapshots: a gap, no snapshot between steps 10 and 100 (snapshots 2 and 3; 5 steps "
                          "apart elsewhere); give a window on one side of it: 0:2 (3 snapshots before it), or the "
                          "steps on one side (--steps :10 or --steps 100:)")
    evenly = dmd(path, window="0:2")
    assert evenly.dt == 5.0 and evenly.to_dict()["snapshot_spacing_steps"] == 5.0
    # a final checkpoint off the grid: the longest evenly spaced run is suggested
    steps = [*range(0, 5001, 500), 5123]
    path = write_store(tmp_path / "hf.zarr", np.cumsum(rng.standard_normal((12, 30)), axis=0), steps=steps)
    with pytest.raises(UnevenSpacingError, match=r"500 \(10×\), 123 \(1×\).*e\.g\. 0:10 \(11 snapshots"):
        dmd(path)
    assert check_even_spacing(RunStore(path), 0, 10) == 500
    path = write_store(tmp_path / "g.zarr", np.cumsum(rng.standard_normal((5, 30)), axis=0), steps=[0, 1, 3, 6, 10])
    with pytest.raises(UnevenSpacingError, match="no 3 consecutive snapshots in it are evenly spaced") as caught:
        dmd(path)
    assert caught.value.suggestion is None
    # the command: one line naming --window, exit 2, nothing written
    result = CliRunner().invoke(app, ["dmd", str(tmp_path / "u.zarr"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and not (tmp_path / "o").exists()
    assert result.stderr.strip().splitlines() == [
        "error: --window 0:3 (the whole run) holds snapshots at unevenly spaced steps: spacings 5 (2×), 90 (1×) "
        "steps (the first change after snapshot 2, step 10 → 100); DMD assumes evenly spaced snapshots: a gap, no "
        "snapshot between steps 10 and 100 (snapshots 2 and 3; 5 steps apart elsewhere); give a window on one side "
        "of it: 0:2 (3 snapshots before it), or the steps on one side (--steps :10 or --steps 100:)"]


def test_a_callbacks_last_snapshot_off_the_grid_is_left_out_of_the_default_window(tmp_path, rng):
    """Issue 25: the callbacks now end a run stopped at step 55 (every 10) with a snapshot at 55; DMD's default
    window stops at 50 instead of refusing the run, and a store without a recording grid is refused as before."""
    from traj.analysis.windows import default_last
    from traj.store import Layout, StoreWriter

    data = np.cumsum(rng.standard_normal((7, 30)), axis=0)
    path = tmp_path / "cb.zarr"
    with StoreWriter(path, Layout.from_shapes([("w", (30,))]), dtype="float64",
                     spacing={"unit": "step", "every": 10}) as writer:
        for row, step in zip(data, [0, 10, 20, 30, 40, 50, 55], strict=True):
            writer.append(row, step=step, epoch=0)
    assert default_last(RunStore(path)) == 5
    result = dmd(path)
    assert result.dt == 10.0 and result.to_dict()["window"] == [0, 5]
    with pytest.raises(UnevenSpacingError):
        dmd(path, window="0:6")
    gap = tmp_path / "gap.zarr"  # a gap too: the default window is named as what it is
    with StoreWriter(gap, Layout.from_shapes([("w", (30,))]), dtype="float64",
                     spacing={"unit": "step", "every": 10}) as writer:
        for row, step in zip(data, [0, 10, 20, 60, 70, 80, 85], strict=True):
            writer.append(row, step=step, epoch=0)
    with pytest.raises(UnevenSpacingError, match=r"^window 0:5 \(the whole run but its last snapshot, off the "
                                                 r"recording grid\) .* no snapshot between steps 20 and 60 "):
        dmd(gap)


def test_a_gap_left_by_a_resume_is_reported_by_info_and_named_by_the_refusal(tmp_path, rng):
    """Issue 25: committed to step 110, resumed from a checkpoint at 180, every 5: steps …110, 185…; `traj info`
    said `health: ok` and dmd's refusal named neither the gap nor a window on either side of it."""
    from traj.store.info import describe

    steps = [*range(0, 111, 5), *range(185, 251, 5)]  # 23 snapshots, then 14
    path = write_store(tmp_path / "gap.zarr", np.cumsum(rng.standard_normal((len(steps), 20)), axis=0), steps=steps)
    info = describe(RunStore(path))
    assert info.health == [
        "1 gap(s) in the trajectory, steps 110 → 185 (after snapshot 22): snapshots are 5 step(s) apart elsewhere "
        "(a run resumed from a checkpoint later than the store's last snapshot); analyses that need evenly spaced "
        "snapshots (dmd, conjugacy) take a --window or --steps on one side of a gap"]
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0 and "110 → 185" in result.output and "health: ok" not in result.output
    with pytest.raises(UnevenSpacingError) as caught:
        dmd(path)
    assert str(caught.value) == (
        "window 0:36 (the whole run) holds snapshots at unevenly spaced steps: spacings 5 (35×), 75 (1×) steps (the "
        "first change after snapshot 22, step 110 → 185); DMD assumes evenly spaced snapshots: a gap, no snapshot "
        "between steps 110 and 185 (snapshots 22 and 23; 5 steps apart elsewhere); give a window on one side of it: "
        "0:22 (23 snapshots before it) or 23:36 (14 snapshots after it), or the steps on one side (--steps :110 or "
        "--steps 185:)")
    assert caught.value.suggestion == (0, 22)
    assert dmd(path, window="23:36").dt == 5.0
    # the way through by training step: the snapshots after the gap, the same 14 as --window 23:36
    after = dmd(RunStore(path).select(steps="185:"))
    assert after.window == (0, 13) and after.dt == 5.0 and after.to_dict()["steps"] == [185, 250]
    np.testing.assert_allclose(after.eigenvalues, dmd(path, window="23:36").eigenvalues, rtol=1e-10)
    # the last snapshot of a run that ended between two snapshot steps is no health problem
    ended = write_store(tmp_path / "end.zarr", np.ones((4, 3)), steps=[0, 10, 20, 25])
    assert describe(RunStore(ended)).health == []
    uneven = write_store(tmp_path / "u.zarr", np.ones((5, 3)), steps=[0, 10, 13, 20, 30])
    assert describe(RunStore(uneven)).health == [
        "uneven spacing: 2 spacing(s) differ from the most common one, 10 step(s), the first steps 10 → 13 (after "
        "snapshot 1); analyses that need evenly spaced snapshots take a --window where they are evenly spaced"]


def test_a_long_window_of_few_coordinates_takes_the_thin_svd(tmp_path):
    """Issue 24: a 2M x 2 store (snapshots x weights) took the randomized path and 4.7 GB: the svd path was
    charged two T² matrices (and held one, the Gram). The thin SVD holds T x min(N, T): 200 000 x 2 here."""
    t = 200_000
    a = 0.999 * np.array([[np.cos(0.01), -np.sin(0.01)], [np.sin(0.01), np.cos(0.01)]])
    z = np.empty((t, 2))
    z[0] = [1.0, 0.0]
    for k in range(1, t):
        z[k] = a @ z[k - 1]
    from traj.store import StoreWriter

    with StoreWriter(tmp_path / "long.zarr", Layout.from_shapes([("w", (2,))]), dtype="float64") as writer:
        for k in range(t):
            writer.append(z[k], step=k)
    result = dmd(RunStore(tmp_path / "long.zarr"))
    assert result.choice.method == "svd" and result.rank == 2
    np.testing.assert_allclose(np.sort_complex(result.eigenvalues), np.sort_complex(np.linalg.eigvals(a)), atol=1e-10)


def _two_observed_coordinates_of_a_4d_system(t=60):
    """θ_k ∈ R²: two fixed combinations of a 4-dimensional linear state with eigenvalues 0.97·e^{±0.4i}, 0.9, 0.6.
    Two coordinates show at most two eigenvalues to plain DMD; with delays the Hankel snapshots show all four."""
    eigenvalues = np.array([0.97 * np.exp(0.4j), 0.97 * np.exp(-0.4j), 0.9, 0.6])
    rot = 0.97 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    a = np.zeros((4, 4))
    a[:2, :2], a[2, 2], a[3, 3] = rot, 0.9, 0.6
    z = np.array([1.0, 0.5, 0.8, 1.2])
    observe = np.array([[1.0, 0.3, 0.7, -0.4], [-0.2, 1.0, 0.5, 0.9]])
    states = []
    for _ in range(t + 1):
        states.append(observe @ z)
        z = a @ z
    return np.array(states), eigenvalues


def _hankel_exact_dmd(data, delays, rank):
    """Exact DMD of the hand-built Hankel matrix (plain numpy): columns h_k = [θ_k; …; θ_{k+d}], k = 0..T-d."""
    t1 = data.shape[0] - delays
    hankel = np.concatenate([data[s : s + t1].T for s in range(delays + 1)], axis=0)
    x, y = hankel[:, :-1], hankel[:, 1:]
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    lam, w = np.linalg.eig(u.T @ y @ vt.T / s)
    phi = y @ vt.T / s @ w
    return lam, np.linalg.lstsq(phi, hankel[:, 0].astype(complex), rcond=None)[0]


@pytest.mark.parametrize("method, tol", [("svd", 1e-10), ("gram", 1e-7)])
def test_delays_give_the_hankel_dmd_of_a_hand_built_hankel_matrix(tmp_path, method, tol):
    """Issue 26: `traj dmd --delays d` (Hankel DMD of one store). Two coordinates of a 4-dimensional system: plain DMD
    sees two directions; with 2 delays the eigenvalues and amplitudes equal a hand-built Hankel DMD's and the truth."""
    data, truth = _two_observed_coordinates_of_a_4d_system()
    store = RunStore(write_store(tmp_path / "h.zarr", data, dtype="float64"))
    assert dmd(store, rank="auto", method=method).rank <= 2
    ours = dmd(store, rank=4, delays=2, method=method)
    assert ours.choice.method == method and ours.delays == 2 and ours.to_dict()["delays"] == 2
    lam, amplitudes = _hankel_exact_dmd(data, 2, 4)
    np.testing.assert_allclose(match(lam, ours.eigenvalues), lam, rtol=0, atol=tol)
    np.testing.assert_allclose(match(truth, ours.eigenvalues), truth, rtol=0, atol=tol)
    order = [int(np.argmin(np.abs(ours.eigenvalues - v))) for v in lam]
    np.testing.assert_allclose(ours.amplitudes[order], amplitudes, rtol=0, atol=1e3 * tol)
    # the sampled coordinates' reconstruction is the delay-0 block of the embedded run: θ itself, to rounding
    np.testing.assert_allclose(ours.sample_reconstruction, ours.sample_trajectories, rtol=0, atol=1e3 * tol)
    assert ours.reconstruction_error < 1e3 * tol


def test_delays_are_pydmds_hankel_d_minus_one(tmp_path):
    """PyDMD's HankelDMD(d=m) stacks m consecutive snapshots: traj's m - 1 delays (agreement to rounding)."""
    from pydmd import HankelDMD

    data, _ = _two_observed_coordinates_of_a_4d_system()
    data = data + 0.05 * np.random.default_rng(3).standard_normal(data.shape)  # noise: each depth has its own answer
    store = RunStore(write_store(tmp_path / "h.zarr", data, dtype="float64"))
    for delays in (1, 2, 5):
        with warnings.catch_warnings():  # PyDMD warns of the Hankel matrix's condition number
            warnings.filterwarnings("ignore", "Input data condition number", UserWarning)
            reference = HankelDMD(svd_rank=4, exact=True, d=delays + 1).fit(data.T)
        eigs = np.asarray(reference.eigs)
        ours = dmd(store, rank=4, delays=delays, method="svd")
        np.testing.assert_allclose(match(eigs, ours.eigenvalues), eigs, rtol=0, atol=1e-10)
        other = dmd(store, rank=4, delays=delays + 1, method="svd")  # one delay more is another embedding
        assert np.abs(match(eigs, other.eigenvalues) - eigs).max() > 1e-3


def test_delays_from_the_cli_and_what_they_refuse(tmp_path):
    data, _ = _two_observed_coordinates_of_a_4d_system()
    path = write_store(tmp_path / "h.zarr", data, dtype="float64")
    result = runner.invoke(app, ["dmd", str(path), "--delays", "3", "--rank", "4", "--out", str(tmp_path / "o"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["delays"] == 3 and summary["rank"] == 4
    for args, message in ((["--per-layer"], "--per-layer cannot be given with delays"),
                          (["--method", "randomized"], "--method randomized does not embed delays"),
                          (["--delays", "59"], "--delays 59 leave fewer than 3 embedded snapshots"),
                          (["--delays", "-1"], "--delays")):
        bad = runner.invoke(app, ["dmd", str(path), "--delays", "2", *args, "--out", str(tmp_path / "x")])
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.output, (args, bad.output)


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_run_dmd_evaluates_the_fit_without_reading_the_window_again(tmp_path, method):
    """traj dmd --evaluate: the evaluation reuses the fit's window, its method and what it read (one read of
    the window, not two); its scores equal evaluate_dmd's, which reads the window itself."""
    from traj.analysis.dmd import DMDEvaluationParams, DMDParams, evaluate_dmd, run_dmd
    from traj.engine import Engine

    rng = np.random.default_rng(1)
    a = np.linalg.qr(rng.standard_normal((30, 30)))[0] * 0.97
    theta = [rng.standard_normal(30)]
    for _ in range(15):
        theta.append(a @ theta[-1])
    data = np.array(theta)
    store = RunStore(write_store(tmp_path / "lin.zarr", data))
    probe = rng.standard_normal(30)

    class Counting(Engine):
        reads = 0

        def collect(self, *args, **kwargs):
            if kwargs.get("rows") is not None and (kwargs["rows"].stop - kwargs["rows"].start) > 1:
                Counting.reads += 1
            return super().collect(*args, **kwargs)

        def gram(self, *args, **kwargs):
            Counting.reads += 1
            return super().gram(*args, **kwargs)

    run = run_dmd(store, DMDParams(rank=6, window="0:11", forecast=3, method=method),
                  evaluation=DMDEvaluationParams(ranks=(2, 6), eval_points=4), evaluator=_LinearRecipe(probe),
                  engine=Counting())
    assert Counting.reads == 1 + 1  # the fit's window read, and the sampled coordinates' trajectories
    alone = evaluate_dmd(store, _LinearRecipe(probe), ranks=(2, 6), window="0:11", max_points=4, forecast=3)
    assert run.evaluation is not None and run.evaluation.ranks == alone.ranks == (2, 6)
    for mine, theirs in zip(run.evaluation.reconstructed, alone.reconstructed, strict=True):
        np.testing.assert_allclose(mine["accuracy"], theirs["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(run.evaluation.motion_errors, alone.motion_errors, rtol=1e-6, atol=1e-9)
    assert run.to_dict()["evaluation"] == run.evaluation.to_dict() and "evaluation" not in run.fit.to_dict()


def test_run_dmd_refuses_what_the_evaluation_cannot_score_before_any_work(tmp_path):
    from traj.analysis.dmd import DMDEvaluationParams, DMDParams, run_dmd

    with pytest.raises(ParameterError, match="delays cannot be given with --evaluate"):
        run_dmd(tmp_path / "missing.zarr", DMDParams(delays=2), evaluation=DMDEvaluationParams(),
                evaluator=_LinearRecipe(np.zeros(3)))
    with pytest.raises(ParameterError, match="layers cannot be given with --evaluate"):
        run_dmd(tmp_path / "missing.zarr", DMDParams(layers=["w"]), evaluation=DMDEvaluationParams(),
                evaluator=_LinearRecipe(np.zeros(3)))
