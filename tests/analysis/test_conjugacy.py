import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.analysis.conjugacy import conjugacy, hankel_gram, koopman_spectrum, wasserstein
from traj.cli.app import app
from traj.errors import TrajError
from traj.store import RunStore

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def test_wasserstein_identity_symmetry_and_order(rng):
    a = rng.standard_normal(8) + 1j * rng.standard_normal(8)
    b = rng.standard_normal(8) + 1j * rng.standard_normal(8)
    assert wasserstein(a, a) == pytest.approx(0, abs=1e-8)  # POT's network simplex resolves ~1e-9
    assert wasserstein(a, b) == pytest.approx(wasserstein(b, a), rel=1e-8)
    assert wasserstein(a, b) == pytest.approx(wasserstein(a[::-1], rng.permutation(b)), rel=1e-8)
    # equal counts: W1 is the mean distance of the optimal one-to-one matching
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(a[:, None] - b[None, :])
    r, c = linear_sum_assignment(cost)
    assert wasserstein(a, b) == pytest.approx(cost[r, c].mean(), rel=1e-9)
    assert wasserstein([0.5], [0.5 + 0.3j]) == pytest.approx(0.3)


def _linear_run(path, a, n_params, seed, transform=None, steps=40):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n_params, a.shape[0])))
    z = rng.standard_normal(a.shape[0])
    rows = []
    for _ in range(steps):
        rows.append(basis @ (z if transform is None else transform @ z))
        z = a @ z
    return RunStore(write_store(path, np.array(rows)))


def _rotation(r, angle):
    return r * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_planted_conjugate_and_nonconjugate_linear_systems(tmp_path, rng):
    from scipy.linalg import block_diag

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    other = block_diag(_rotation(0.9, 0.5), [[0.7]], [[0.4]])
    change = rng.standard_normal((4, 4)) + 3 * np.eye(4)  # a smooth invertible change of coordinates
    run_a = _linear_run(tmp_path / "a.zarr", a, 3000, 0)
    run_b = _linear_run(tmp_path / "b.zarr", a, 5000, 1, transform=change)  # different N, conjugate
    run_c = _linear_run(tmp_path / "c.zarr", other, 3000, 2)
    null = [_linear_run(tmp_path / f"n{i}.zarr", a, 3000, 10 + i) for i in range(3)]
    result = conjugacy([run_a, run_b, run_c], null=null, k=4)
    assert result.distance[0, 1] < 1e-8
    assert result.distance[0, 2] > 0.1
    verdicts = {(Path(v.a).name, Path(v.b).name): v.verdict for v in result.verdicts}
    assert verdicts[("a.zarr", "b.zarr")] == "conjugate"
    assert verdicts[("a.zarr", "c.zarr")] == "non-conjugate"
    assert result.distance[0, 0] == 0 and np.allclose(result.distance, result.distance.T)


def test_identical_runs_and_no_null():
    store = SAMPLE / "quadratic-mlp.zarr"
    result = conjugacy([store, store])
    assert result.distance[0, 1] == pytest.approx(0, abs=1e-8)
    assert result.verdicts[0].verdict == "undetermined" and result.threshold is None


def test_gram_and_memory_paths_agree(rng):
    """The delay-embedded Gram (shifted sub-blocks of G) gives the in-memory Hankel DMD's spectrum."""
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    memory = koopman_spectrum(store, layer="9.weight", delays=2, rank=8)
    gram = koopman_spectrum(store, layer="9.weight", delays=2, rank=8, small_observable=1)
    assert (memory.method, gram.method) == ("memory", "gram")
    np.testing.assert_allclose(gram.eigenvalues, memory.eigenvalues, atol=1e-6)
    g = rng.standard_normal((6, 6))
    h = hankel_gram(g, 2)
    assert h.shape == (4, 4) and h[1, 2] == pytest.approx(g[1, 2] + g[2, 3] + g[3, 4])


def test_mirror_descent_validation_case():
    """OMD vs OGD (conjugate by construction) is ~100x closer than either is to bisection, and
    bisection is judged non-conjugate against a seed null; the seed values match seed 002
    (0.008 and 0.75). The OMD-OGD verdict against the seed null is NOT asserted: the null's
    spread (1e-6) is far below DMD's observable-dependent bias between x and sinh(x) (5e-3);
    benchmarks/conjugacy_null_study.py measures it for 3 nulls x 4 estimators, and issue 6's
    note says why. The margin test below covers calling it conjugate."""
    runs = [SAMPLE / "mirror-omd.zarr", SAMPLE / "mirror-ogd.zarr", SAMPLE / "mirror-bisection.zarr"]
    result = conjugacy(runs, null=[SAMPLE / "mirror-omd-seed1.zarr"])
    assert [s.delays for s in result.spectra] == [4, 4, 4] and [s.n_trajectories > 1 for s in result.spectra] == [True] * 3
    assert abs(result.spectra[0].eigenvalues[0]) == pytest.approx(0.99, abs=2e-3)  # 1 - η at the minimiser
    assert result.distance[0, 1] < 0.02 and result.distance[0, 2] > 0.3 and result.distance[1, 2] > 0.3
    assert result.distance[0, 2] > 50 * result.distance[0, 1]
    verdicts = [v.verdict for v in result.verdicts]
    assert verdicts[1:] == ["non-conjugate", "non-conjugate"]


def test_equivalence_margin_sets_the_threshold_only_when_wider_than_the_null():
    runs = [SAMPLE / "mirror-omd.zarr", SAMPLE / "mirror-ogd.zarr", SAMPLE / "mirror-bisection.zarr"]
    null = [SAMPLE / "mirror-omd-seed1.zarr"]
    plain = conjugacy(runs, null=null)
    assert plain.margin == 0 and plain.threshold == pytest.approx(plain.null_threshold)
    assert [v.basis for v in plain.verdicts] == ["null"] * 3
    # a stated margin above the seed null's spread decides; bisection stays far outside it
    wide = conjugacy(runs, null=null, margin=0.02)
    assert wide.threshold == 0.02 and wide.null_threshold == pytest.approx(plain.null_threshold)
    assert [(v.verdict, v.basis) for v in wide.verdicts] == [
        ("conjugate", "margin"), ("non-conjugate", "margin"), ("non-conjugate", "margin")]
    # a margin narrower than the null changes nothing
    narrow = conjugacy(runs, null=null, margin=plain.null_threshold / 10)
    assert [v.verdict for v in narrow.verdicts] == [v.verdict for v in plain.verdicts]
    assert narrow.threshold == pytest.approx(plain.null_threshold) and narrow.verdicts[0].basis == "null"
    # a margin alone gives verdicts; neither gives none
    alone = conjugacy(runs[:2], margin=0.02)
    assert alone.null_threshold is None and alone.verdicts[0].verdict == "conjugate"
    assert conjugacy(runs[:2]).verdicts[0].verdict == "undetermined"
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(TrajError, match="margin"):
            conjugacy(runs[:2], margin=bad)


def test_window_transitions_from_one_pass():
    result = conjugacy([SAMPLE / "digits-cnn.zarr"], windows=4)
    matrix = result.windows.distance
    assert matrix.shape == (4, 4) and np.allclose(np.diag(matrix), 0) and np.allclose(matrix, matrix.T)
    assert len(result.windows.bounds) == 4 and result.windows.bounds[-1][1] == 115


def test_errors(tmp_path):
    with pytest.raises(TrajError, match="two or more runs"):
        conjugacy([SAMPLE / "mirror-omd.zarr"])
    with pytest.raises(TrajError, match="quantile"):
        conjugacy([SAMPLE / "mirror-omd.zarr"] * 2, quantile=0)
    with pytest.raises(TrajError, match="outside"):
        conjugacy([SAMPLE / "mirror-omd.zarr", SAMPLE / "quadratic-mlp.zarr"], window="0:200")
    with pytest.raises(TrajError, match="too short"):
        conjugacy([SAMPLE / "mirror-omd.zarr"], windows=30)


runner = CliRunner()


def test_cli_end_to_end_and_fail_flag(tmp_path):
    args = ["conjugacy", str(SAMPLE / "mirror-omd.zarr"), str(SAMPLE / "mirror-bisection.zarr"),
            "--null", str(SAMPLE / "mirror-omd-seed1.zarr"), "--out", str(tmp_path / "rep"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("runs", "eigenvalues", "distance", "null_distances", "threshold", "verdicts"):
        assert key in summary
    assert summary["verdicts"][0]["verdict"] == "non-conjugate"
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"summary.json", "report.md", "report.html",
                                                              "spectra.png", "distance.png", "null.png"}
    failing = runner.invoke(app, [*args[:-1], "--fail-on-nonconjugate"])
    assert failing.exit_code == 1
    margin = runner.invoke(app, [*args, "--margin", "0.9"])
    assert margin.exit_code == 0, margin.output
    summary = json.loads(margin.stdout)
    assert summary["margin"] == 0.9 and summary["threshold"] == 0.9 and summary["verdicts"][0]["verdict"] == "conjugate"
    assert summary["verdicts"][0]["basis"] == "margin" and summary["null_threshold"] < 1e-3
    bad = runner.invoke(app, [*args, "--margin", "-1"])
    assert bad.exit_code == 2 and "margin" in bad.output
    same = runner.invoke(app, ["conjugacy", str(SAMPLE / "mirror-omd.zarr"), str(SAMPLE / "mirror-omd.zarr"),
                               "--null", str(SAMPLE / "mirror-omd-seed1.zarr"), "--out", str(tmp_path / "r2"),
                               "--fail-on-nonconjugate"])
    assert same.exit_code == 0, same.output
