import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import planted_initial_conditions, write_store
from traj.analysis.conjugacy import (
    conformal_bound,
    conjugacy,
    family_bound,
    hankel_gram,
    koopman_spectrum,
    mutual_nearest,
    reparametrise,
    slot_match,
    wasserstein,
)
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


def _linear_run(path, a, n_params, seed, transform=None, steps=40, noise=0.0):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n_params, a.shape[0])))
    z = rng.standard_normal(a.shape[0])
    rows = []
    for _ in range(steps):
        rows.append(basis @ (z if transform is None else transform @ z))
        if noise:  # each seed's own white noise in every coordinate
            rows[-1] = rows[-1] + noise * rng.standard_normal(n_params)
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


def _bent_run(path, a, seed, n_params=5000, strength=0.0):
    """benchmarks/conjugacy_fidelity.py's planted runs: z_{k+1} = A z_k embedded by an orthonormal Q, each
    coordinate then seen through x -> mid + half (u + c u^3), u = (x - mid) / half, |c| = ``strength``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(4)
    states = np.array([np.linalg.matrix_power(a, k) @ z for k in range(40)])
    q, _ = np.linalg.qr(rng.standard_normal((n_params, 4)))
    data = states @ q.T
    if strength:
        lo, hi = data.min(axis=0), data.max(axis=0)
        mid, half = (hi + lo) / 2, (hi - lo) / 2
        u = (data - mid) / half
        data = mid + half * (u + strength * np.where(rng.random(n_params) < 0.5, -1.0, 1.0) * u**3)
    return RunStore(write_store(path, data.astype(np.float32)))


@pytest.mark.parametrize("choice", [2, 3])
def test_planted_system_through_a_smooth_nonlinear_map_is_conjugate(tmp_path, choice):
    """A planted linear system seen through a cubic map of each coordinate (largest move 10 % of its
    half-range, the reparametrisation null's strength) is conjugate to the system seen directly; other
    eigenvalues through such a map are not. The benchmark's seed choices 2 and 3 came out non-conjugate
    (2.68x and 1.24x the threshold) when only the first run was bent: how far a map moves the
    eigenvalues depends on the trajectory it bends, so the null's maps are split over the seed runs too."""
    from scipy.linalg import block_diag

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    other = block_diag(_rotation(0.9, 0.5), [[0.7]], [[0.4]])
    run_a = _bent_run(tmp_path / "a.zarr", a, choice, n_params=3000)
    run_b = _bent_run(tmp_path / "b.zarr", a, 60 + choice, strength=0.1)
    run_c = _bent_run(tmp_path / "c.zarr", other, 200 + choice, strength=0.1)
    null = [_bent_run(tmp_path / f"n{j}.zarr", a, 10 + 4 * choice + j, n_params=3000) for j in range(4)]
    result = conjugacy([run_a, run_b, run_c], null=null)
    assert [v.verdict for v in result.verdicts[:2]] == ["conjugate", "non-conjugate"]
    assert result.ratio(result.verdicts[0]) < 0.6 and result.ratio(result.verdicts[1]) > 5
    assert result.reparam is not None and result.reparam.size == 20  # 20 maps in all, 4 per run of a's family


#: The planted system of Redman et al. 2024's setting (issue 26): four real eigenvalues, 25 initial conditions, 4 delays, rank 4.
PLANTED = [0.95, 0.85, 0.7, 0.5]


def _planted_ics(tmp_path, name, eigenvalues, seed, bend=0.0):
    return RunStore(write_store(tmp_path / f"{name}.zarr", planted_initial_conditions(eigenvalues, seed, bend=bend)))


def test_one_eigenvalue_moved_by_0_02_is_found_and_a_bend_of_0_3_is_not(tmp_path):
    """Issue 26, in the authors' setting (25 initial conditions stacked, 4 delays, rank 4) with a seed null of the
    same system from 4 other sets of initial conditions: the default command calls a system whose eigenvalue 0.95 is
    0.97 non-conjugate, and the first system seen through a cubic bend of every coordinate by 0.3 of its half-range
    (three times the reparametrisation null's strength) conjugate. Rule plain's W1 of that pair (0.02 / 4 eigenvalues)
    is inside the null's W1 bound, so it cannot call it: it gives no verdict (the default rule compares each
    eigenvalue in units of its own spread). Over 8 seed choices: benchmarks/conjugacy_power.py and the README."""
    a = _planted_ics(tmp_path, "a", PLANTED, 0)
    moved = _planted_ics(tmp_path, "moved", [0.97, *PLANTED[1:]], 100)
    bent = _planted_ics(tmp_path, "bent", PLANTED, 200, bend=0.3)
    null = [_planted_ics(tmp_path, f"n{j}", PLANTED, 10 + j) for j in range(4)]
    done = runner.invoke(app, ["conjugacy", str(a.path), str(moved.path), str(bent.path), "--null",
                               ",".join(str(r.path) for r in null), "--stack", "25", "--delays", "4", "--k", "4",
                               "--out", str(tmp_path / "o"), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["ranks"] == [4, 4, 4] and summary["k"] == 4 and summary["rule"] == "reproducible"
    (ab, ac, _) = summary["verdicts"]
    assert (ab["verdict"], ac["verdict"]) == ("non-conjugate", "conjugate") and ab["basis"] == "reparam-null"
    assert ab["statistic"] > 2.5 * summary["threshold"] and ac["statistic"] < 0.3 * summary["threshold"]
    assert ab["distance"] == pytest.approx(0.02 / 4, abs=2e-4)  # W1 over 4 eigenvalues, one moved by 0.02
    plain = conjugacy([a, moved, bent], null=null, stack=25, delays=4, k=4, rule="plain")
    assert plain.distance[0, 1] < plain.reparam.threshold  # why W1 against the null's bound cannot find it
    assert [v.verdict for v in plain.verdicts] == ["undetermined"] * 3 and plain.threshold is None
    assert all(v.reason.startswith("rule plain gives distances") for v in plain.verdicts)


def test_family_draws_split_the_maps_over_the_first_runs_family():
    from traj.analysis.conjugacy import family_draws

    assert family_draws(20, 5) == [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4)]
    assert family_draws(7, 3) == [(0, 3), (3, 2), (5, 2)]
    assert family_draws(2, 4) == [(0, 1), (1, 1), (2, 0), (2, 0)]
    assert family_draws(0, 1) == [(0, 0)]


def test_rule_reproducible_compares_what_every_seed_reproduces(tmp_path):
    """A planted system (eigenvalues 0.95e^{±0.3i}, 0.8, 0.6) plus each seed's own white noise (σ = 1e-3 in
    N = 300). Reproducible across 4 seeds: the 4 planted eigenvalues and one at 0 (white noise has no memory,
    its Koopman eigenvalue is 0); from rank 6 the noise eigenvalues scatter from seed to seed. So rank 5, the
    planted eigenvalues to 2e-3 and the noise one with by far the widest spread; other eigenvalues are
    non-conjugate, which W1 over 10 eigenvalues (rule "plain") misses."""
    from scipy.linalg import block_diag

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    other = block_diag(_rotation(0.9, 0.5), [[0.7]], [[0.4]])
    change = np.random.default_rng(5).standard_normal((4, 4)) + 3 * np.eye(4)
    runs = [_linear_run(tmp_path / "a.zarr", a, 300, 0, noise=1e-3),
            _linear_run(tmp_path / "b.zarr", a, 300, 1, transform=change, noise=1e-3),
            _linear_run(tmp_path / "c.zarr", other, 300, 2, noise=1e-3)]
    null = [_linear_run(tmp_path / f"n{i}.zarr", a, 300, 10 + i, noise=1e-3) for i in range(4)]
    result = conjugacy(runs, null=null)
    assert result.rule == "reproducible" and result.k == 5 and "5 of 10 eigenvalue(s) reproducible" in result.k_note
    found = result.eigenvalues(0)
    noise = int(np.argmin(np.abs(found)))
    planted = np.linalg.eigvals(a)
    assert np.abs(slot_match(planted, np.delete(found, noise)) - planted).max() < 2e-3
    assert abs(found[noise]) < 0.1 and result.scales[noise] > 100 * result.scales.min()
    assert [v.verdict for v in result.verdicts] == ["conjugate", "non-conjugate", "non-conjugate"]
    assert result.ratio(result.verdicts[0]) < 0.5 and result.ratio(result.verdicts[1]) > 10
    # shown beside the bound: each of the 5 family runs (the first and 4 seeds) against the other 4, all inside
    assert result.null_distances.shape == (5,) and (result.null_distances < result.threshold).all()
    plain = conjugacy(runs, null=null, rule="plain")  # W1 of 10 eigenvalues: no verdict (issue 26)
    assert plain.k == 10 and [v.verdict for v in plain.verdicts] == ["undetermined"] * 3
    # without a seed null the rule cannot choose: W1 as before, and the result says so
    alone = conjugacy(runs[:2])
    assert alone.rule == "plain" and alone.statistic is None and "needs a seed null" in alone.rule_note
    with pytest.raises(TrajError, match="rule"):
        conjugacy(runs[:2], rule="loose")


def _exceedances(n: int, corr: float, trials: int = 300) -> float:
    """How often one more Gaussian run's statistic exceeds family_bound's 95 % bound of its family of n runs
    (4 complex eigenvalue slots, unequal spreads, correlation ``corr`` between slots)."""
    rng = np.random.default_rng(1)
    k = 4
    root = np.linalg.cholesky(np.full((k, k), corr) + (1 - corr) * np.eye(k))
    spread = np.array([1e-3, 2e-3, 5e-4, 1e-3])

    def runs(m: int) -> np.ndarray:
        return 0.99 + spread * (rng.standard_normal((m, k)) @ root.T + 1j * rng.standard_normal((m, k)) @ root.T)

    exceeded = 0
    for trial in range(trials):
        family, new = runs(n), runs(1)[0]
        scale = (1 + 1 / n) * np.sum(np.abs(family - family.mean(0)) ** 2, axis=0) / (n - 1)
        exceeded += np.mean(np.abs(new - family.mean(0)) ** 2 / scale) > family_bound(family, np.zeros(k), 0.95,
                                                                                       seed=trial, draws=2000)
    return exceeded / trials


def test_family_bound_keeps_its_level_with_few_seeds_and_correlated_eigenvalues():
    """The seed null's bound under rule "reproducible": one more run of the system exceeds the 95 % bound at
    most about 5 % of the time, with 5 runs (4 degrees of freedom per variance) and slots independent (1.2 %:
    the family's rank-4 sample covariance makes it conservative there) or correlated 0.9 (4.1 %), yet not never;
    with 2 runs (one seed run) it is wide. Seeded: the same call gives the same bound."""
    assert 0.002 <= _exceedances(5, 0.0) <= 0.04  # 1.2 % over 2000 families
    assert 0.02 <= _exceedances(5, 0.9, trials=600) <= 0.065  # 4.1 % over 2000; 600 give ±0.8 %
    assert _exceedances(2, 0.0, trials=100) <= 0.05  # 0.4 % over 2000
    family = 1 + 1e-3 * np.random.default_rng(2).standard_normal((5, 3)).astype(complex)
    assert family_bound(family, np.zeros(3), 0.95) == family_bound(family, np.zeros(3), 0.95)
    # a known bend adds to every slot's spread: a wider bound in the same units is smaller
    assert family_bound(family, np.full(3, 1e-5), 0.95) < family_bound(family, np.zeros(3), 0.95)
    with pytest.raises(TrajError, match="seed run"):
        family_bound(family[:1], np.zeros(3), 0.95)


def test_conformal_bound_mutual_nearest_and_slots():
    # one more exchangeable value exceeds the m-th smallest of n with probability 1 - m/(n + 1)
    assert conformal_bound(np.arange(1.0, 11.0), 0.95) == 10  # n = 10 < 19: the largest, level 1/11
    assert conformal_bound(np.arange(1.0, 101.0), 0.95) == 96  # ⌈0.95·101⌉ = 96
    assert conformal_bound(np.arange(1.0, 10.0), 0.5) == 5
    a = np.array([1.0, 0.5 + 0.1j, 0.5 - 0.1j, 0.0])
    b = np.array([0.52 - 0.1j, 0.98, 0.49 + 0.11j, 0.9])  # 0 has no partner: its nearest (0.49+0.11j) prefers 0.5+0.1j
    assert mutual_nearest(a, b).tolist() == [True, True, True, False]
    assert slot_match(a, b).tolist() == [0.98, 0.49 + 0.11j, 0.52 - 0.1j, 0.9]


def test_identical_runs_and_no_null():
    store = SAMPLE / "quadratic-mlp.zarr"
    result = conjugacy([store, store], null_size=0)
    assert result.distance[0, 1] == pytest.approx(0, abs=1e-8)
    assert result.verdicts[0].verdict == "undetermined" and result.threshold is None and result.reparam is None
    # the reparametrisation null alone gives no verdict (issue 25: it called seed runs non-conjugate): its bound is
    # reported beside the distance, and the verdict says what would decide
    alone = conjugacy([store, store], null_size=5)
    assert alone.reparam.distances.shape == (5,) and alone.reparam.threshold > 1e-6
    assert (alone.verdicts[0].verdict, alone.verdicts[0].basis, alone.threshold) == ("undetermined", None, None)
    assert alone.to_dict()["verdicts"][0]["reason"].startswith("give --null SEED_RUN")


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
    """OMD vs OGD (conjugate by construction) conjugate, bisection non-conjugate, with the default
    command: the reparametrisation null (OMD seen through smooth coordinate maps) is wider than the
    seed null (1e-5) and decides; the distances match Redman et al. 2024 (0.008 and 0.75)."""
    runs = [SAMPLE / "mirror-omd.zarr", SAMPLE / "mirror-ogd.zarr", SAMPLE / "mirror-bisection.zarr"]
    default = conjugacy(runs, null=[SAMPLE / "mirror-omd-seed1.zarr"])
    # rule "reproducible": OMD resolves 8 directions, but rank 8 splits a degenerate pair (d = 2, symmetric), so
    # its 8th eigenvalue has no mutual nearest neighbour in the seed run: rank 7, and the note says both reductions
    assert default.rule == "reproducible" and default.k == 7 and [s.rank for s in default.spectra] == [7, 7, 7]
    assert "resolves only 8" in default.k_note and "7 of 8 eigenvalue(s) reproducible" in default.k_note
    assert default.scales.shape == (7,) and (default.scales > 0).all()
    assert [(v.verdict, v.basis) for v in default.verdicts] == [
        ("conjugate", "reparam-null"), ("non-conjugate", "reparam-null"), ("non-conjugate", "reparam-null")]
    # in units of each eigenvalue's null spread: OMD-OGD well inside, bisection thousands of thresholds away
    assert default.ratio(default.verdicts[0]) < 0.5 and default.ratio(default.verdicts[1]) > 1000
    # 20 reparametrisation draws: the conformal bound of 20 values at q = 0.95 is the largest
    assert default.reparam.threshold == default.reparam.distances.max()
    result = conjugacy(runs, null=[SAMPLE / "mirror-omd-seed1.zarr"], rule="plain")
    assert result.rule == "plain" and result.statistic is None and result.scales is None
    assert [s.delays for s in result.spectra] == [4, 4, 4] and [s.n_trajectories for s in result.spectra] == [25] * 3
    assert abs(result.spectra[0].eigenvalues[0]) == pytest.approx(0.99, abs=2e-3)  # 1 - η at the minimiser
    # rank rule "k": OMD resolves 8 directions, so every run is fitted at rank 8 and the result says so
    assert result.k == 8 and [s.rank for s in result.spectra] == [8, 8, 8] and "resolves only 8" in result.k_note
    assert result.distance[0, 1] < 0.03 and result.distance[0, 2] > 0.5 and result.distance[1, 2] > 0.5
    assert result.null_threshold < 1e-3 < result.reparam.threshold < 0.1
    assert result.distance[0, 1] < 0.6 * result.reparam.threshold and result.distance[0, 2] > 10 * result.reparam.threshold
    # rule plain reports W1 beside the nulls' bounds and gives no verdict (issue 26)
    assert [(v.verdict, v.basis) for v in result.verdicts] == [("undetermined", None)] * 3 and result.threshold is None


def test_equivalence_margin_sets_the_threshold_only_when_wider_than_the_null():
    runs = [SAMPLE / "mirror-omd.zarr", SAMPLE / "mirror-ogd.zarr", SAMPLE / "mirror-bisection.zarr"]
    null = [SAMPLE / "mirror-omd-seed1.zarr"]
    # rule "reproducible": the margin is in W1 and acts per pair; the nulls' bound stays the threshold
    within = conjugacy(runs, null=null, margin=0.2)
    assert within.threshold == pytest.approx(within.reparam.threshold) and within.margin == 0.2
    assert [(v.verdict, v.basis) for v in within.verdicts] == [
        ("conjugate", "margin"), ("non-conjugate", "reparam-null"), ("non-conjugate", "reparam-null")]
    # rule "plain" gives no verdict (issue 26), except for a pair within the stated margin
    plain = conjugacy(runs, null=null, null_size=0, rule="plain")
    assert plain.margin == 0 and plain.threshold is None and plain.null_threshold < 1e-3
    assert [(v.verdict, v.basis) for v in plain.verdicts] == [("undetermined", None)] * 3
    wide = conjugacy(runs, null=null, margin=0.2, rule="plain")
    assert wide.threshold is None and wide.null_threshold == pytest.approx(plain.null_threshold)
    assert [(v.verdict, v.basis) for v in wide.verdicts] == [
        ("conjugate", "margin"), ("undetermined", None), ("undetermined", None)]
    # a margin alone gives verdicts; neither gives none
    alone = conjugacy(runs[:2], margin=0.02, null_size=0)
    assert alone.null_threshold is None and alone.verdicts[0].verdict == "conjugate"
    assert conjugacy(runs[:2], null_size=0).verdicts[0].verdict == "undetermined"
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(TrajError, match="margin"):
            conjugacy(runs[:2], margin=bad)


def test_reparametrise_is_a_smooth_monotone_map_of_each_coordinate_whatever_the_block_split(rng):
    data = np.cumsum(rng.standard_normal((30, 12)), axis=0)
    bent = reparametrise(data, 3, strength=0.2, seed=7)
    halves = np.hstack([reparametrise(data[:, :5], 3, strength=0.2, seed=7),
                        reparametrise(data[:, 5:], 3, strength=0.2, seed=7)])
    np.testing.assert_array_equal(bent, halves)  # a coordinate's map depends on its own trajectory only
    lo, hi = data.min(axis=0), data.max(axis=0)
    moved = np.abs(bent - data).max(axis=0) / ((hi - lo) / 2)
    assert moved.max() <= 0.2 + 1e-12 and moved.min() > 0.01  # strength = the largest move / half-range
    for j in range(12):  # monotone: the order of a coordinate's values is kept
        assert (np.argsort(bent[:, j]) == np.argsort(data[:, j])).all()
    assert not np.allclose(bent, reparametrise(data, 4, strength=0.2, seed=7))  # another draw, another map
    assert not np.allclose(bent, reparametrise(data, 3, strength=0.2, seed=8))
    # both shapes at full strength: on a coordinate spanning [-1, 1] evenly, the move at the ends (|u| = 1) is
    # the strength (end bends) or zero (inside bends, whose largest move, 0.2, lies inside); over 40 maps both occur
    line = np.repeat(np.linspace(-1.0, 1.0, 201)[:, None], 50, axis=1)
    ends, inside = 0, 0
    for draw in range(40):
        move = np.abs(reparametrise(line, draw, strength=0.2) - line)
        np.testing.assert_allclose(move.max(axis=0), 0.2, rtol=1e-3)
        at_ends = move[[0, -1]].max(axis=0)
        ends += int(np.isclose(at_ends, 0.2).sum())
        inside += int((at_ends < 1e-12).sum())
    assert ends + inside == 40 * 50 and min(ends, inside) > 0.3 * 40 * 50
    # stacked trajectories: coordinate j of every trajectory goes through the same map g_j
    stacked = np.hstack([data[:, :3], data[:, 3:6] + 0.0])
    same = reparametrise(np.hstack([stacked[:, :3], stacked[:, :3]]), 0, strength=0.2, n_traj=2)
    np.testing.assert_array_equal(same[:, :3], same[:, 3:])


def test_reparametrisation_null_in_the_gram_pass_matches_memory(tmp_path):
    """The Grams of h_i(θ) summed block by block beside θ's Gram give the in-memory null's distances."""
    from scipy.linalg import block_diag

    from traj.engine import Engine

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    run_a = _linear_run(tmp_path / "a.zarr", a, 300, 0)
    run_b = _linear_run(tmp_path / "b.zarr", a, 300, 1)
    memory = conjugacy([run_a, run_b], k=4, null_size=6, null_seed=3)
    streamed = conjugacy([run_a, run_b], k=4, null_size=6, null_seed=3, small_observable=1,
                         engine=Engine(block_bytes=40 * 40 * 8 * 7))  # blocks of 7 columns
    assert [s.method for s in memory.spectra] == ["memory"] * 2 and streamed.spectra[0].method == "gram"
    np.testing.assert_allclose(streamed.reparam.distances, memory.reparam.distances, rtol=1e-4, atol=1e-7)
    assert memory.reparam.distances.min() > 1e-5


def test_reparametrisation_null_is_the_same_on_every_backend(tmp_path):
    """numpy, torch and dask stream the same blocks through the same maps: the null's distances agree."""
    from scipy.linalg import block_diag

    from traj.engine import Engine

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    runs = [_linear_run(tmp_path / "a.zarr", a, 300, 0), _linear_run(tmp_path / "b.zarr", a, 300, 1)]
    results = {backend: conjugacy(runs, k=4, null_size=5, null_seed=2, small_observable=1,
                                  engine=Engine(backend=backend, block_bytes=40 * 8 * 50))
               for backend in ("numpy", "torch", "dask")}
    reference = results["numpy"].reparam.distances
    assert reference.shape == (5,) and reference.min() > 1e-5
    for backend in ("torch", "dask"):
        assert results[backend].spectra[0].method == "gram"
        np.testing.assert_allclose(results[backend].reparam.distances, reference, rtol=0, atol=1e-10)


def _authors_trajectories():
    """Seed 002's OMD / OGD / bisection runs, ported from their repository (william-redman/
    Identifying_Equivalent_Training_Dynamics, online_mirror_online_gradient_descent_main.py): loss
    Σ tan(x) in d = 2, η = 1e-2, T = 100, 25 initial conditions on a 5×5 grid; (T, 50) each,
    trajectory-major (so ``--stack 25`` splits it)."""
    eta, steps = 1e-2, 100

    def grid(lo, hi):
        axis = np.linspace(lo, hi, 5)
        return np.reshape(np.meshgrid(axis, axis), [2, 25]).T

    x = np.empty((steps, 25, 2))
    u = np.empty((steps, 25, 2))
    x[0], u[0] = grid(0.1, 0.9), grid(-2.3, -0.1)
    for t in range(1, steps):
        x[t] = 1.0 / (1.0 / x[t - 1] + eta / np.cos(x[t - 1]) ** 2)  # OMD, log barrier
        e = np.exp(u[t - 1])
        u[t] = u[t - 1] - eta * e / np.cos(e) ** 2  # OGD in u = log x
    z = np.zeros((steps, 25, 2))
    for i, (a, b) in enumerate(zip(grid(-4 / 3, -1 / 3), grid(1 / 7, 8 / 7), strict=True)):
        z[0, i] = (a + b) / 2
        for t in range(1, steps):
            f = np.tan(z[t - 1, i]).sum()
            if f == 0:  # their early return: the remaining rows stay zero
                break
            a, b = (z[t - 1, i], b) if f < 0 else (a, z[t - 1, i])
            z[t, i] = (a + b) / 2
    return {"omd": x.reshape(steps, 50), "ogd": u.reshape(steps, 50), "bisection": z.reshape(steps, 50)}


def test_authors_setting_from_the_cli_gives_their_distances(tmp_path):
    """`traj import` of the authors' three runs, then their setting (25 stacked ICs, 4 delays, rank and
    k 10): W1 0.0081, 0.746, 0.753, as their saved eigenvalues give; OMD-OGD conjugate."""
    paths = []
    for name, data in _authors_trajectories().items():
        np.save(tmp_path / f"{name}.npy", data)
        out = tmp_path / f"{name}.zarr"
        done = runner.invoke(app, ["import", str(tmp_path / f"{name}.npy"), "--out", str(out)])
        assert done.exit_code == 0, done.output
        paths.append(str(out))
    result = runner.invoke(app, ["conjugacy", *paths, "--stack", "25", "--delays", "4", "--rank", "10", "--k", "10",
                                 "--out", str(tmp_path / "rep"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    d = np.array(summary["distance"])
    assert d[0, 1] == pytest.approx(0.0081, abs=2e-4)
    assert d[0, 2] == pytest.approx(0.746, abs=2e-3) and d[1, 2] == pytest.approx(0.753, abs=2e-3)
    assert summary["k"] == 10 and summary["ranks"] == [10, 10, 10] and summary["reduced"] == []
    assert summary["settings"]["stack"] == [25] * 3 and summary["settings"]["delays"] == [4] * 3
    # no seed null: distances and the reparametrisation null's bound, no verdict (issue 25)
    assert [v["verdict"] for v in summary["verdicts"]] == ["undetermined"] * 3
    assert summary["basis"] is None and summary["threshold"] is None
    assert summary["reparam_null"]["strength"] == 0.1 and summary["reparam_null"]["threshold"] > d[0, 1]
    # a split that does not divide θ, and a k above what a run resolves, say so
    bad = runner.invoke(app, ["conjugacy", *paths[:2], "--stack", "7", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "--stack" in bad.output and "7 equal" in bad.output
    reduced = runner.invoke(app, ["conjugacy", *paths[:2], "--stack", "25", "--k", "20", "--null-size", "0",
                                  "--out", str(tmp_path / "r3"), "--json"])
    assert reduced.exit_code == 0, reduced.output
    summary = json.loads(reduced.stdout)
    assert summary["k_requested"] == 20 and summary["k"] < 20 and "k 20 asked for" in summary["reduced"][0]


def test_pca_observable_from_the_gram(tmp_path, rng):
    """pca:K scores come from the Gram alone; a planted system's eigenvalues survive the projection."""
    from scipy.linalg import block_diag

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    other = block_diag(_rotation(0.9, 0.5), [[0.7]], [[0.4]])
    change = rng.standard_normal((4, 4)) + 3 * np.eye(4)
    runs = [_linear_run(tmp_path / "a.zarr", a, 3000, 0), _linear_run(tmp_path / "b.zarr", a, 3000, 1, transform=change),
            _linear_run(tmp_path / "c.zarr", other, 3000, 2)]
    seeds = [_linear_run(tmp_path / f"seed{i}.zarr", a, 3000, 10 + i) for i in range(3)]  # the verdicts' seed null
    result = conjugacy(runs, observable="pca:4", k=4, null_size=10, null=seeds)
    assert result.observable == "pca:4" and [s.n_observables for s in result.spectra] == [4] * 3
    assert result.distance[0, 1] < 0.05 < 0.1 < result.distance[0, 2]
    assert [v.verdict for v in result.verdicts][:2] == ["conjugate", "non-conjugate"]
    with pytest.raises(TrajError, match="observable"):
        conjugacy(runs[:2], observable="pca:x")


def test_pca_scores_are_scikit_learns_projection(rng):
    """pca:K from the Gram alone equals scikit-learn's PCA fitted to DMD's X (all snapshots but the last): the
    snapshots projected on its axes (``--no-center``, Redman et al. 2024's projection) or ``transform`` (``--center``); stacked
    trajectories share one PCA fitted to all their snapshots pooled (Redman et al. 2024's grokking pipeline)."""
    from sklearn.decomposition import PCA

    from traj.analysis.conjugacy import pca_scores, stacked_pca_scores

    def same(a, b):  # columns up to sign
        np.testing.assert_allclose(a * np.sign(np.sum(a * b, axis=0)), b, atol=1e-9 * np.abs(b).max())

    data = np.cumsum(rng.standard_normal((30, 200)), axis=0) + 5.0
    fitted = PCA(4).fit(data[:-1])
    last = np.arange(30) < 29
    same(pca_scores(data @ data.T, 4, fit=last), data @ fitted.components_.T)
    same(pca_scores(data @ data.T, 4, center=True, fit=last), fitted.transform(data))
    assert np.abs(fitted.transform(data) - data @ fitted.components_.T).max() > 1  # the mean is what differs
    for state in (80, 50):  # wider than the 3 x 20 pooled snapshots (through their Gram), then narrower
        stacked = np.cumsum(rng.standard_normal((20, 3 * state)), axis=0)
        per_run = stacked.reshape(20, 3, state)
        pooled = PCA(2).fit(np.concatenate([per_run[:-1, i] for i in range(3)]))
        for center, project in ((False, lambda x, p=pooled: x @ p.components_.T), (True, pooled.transform)):
            expected = np.concatenate([project(per_run[:, i]) for i in range(3)], axis=1)
            got = stacked_pca_scores(stacked, 3, 2, center=center)
            for i in range(3):
                same(got[:, 2 * i : 2 * i + 2], expected[:, 2 * i : 2 * i + 2])


def test_stacked_pca_spectrum_is_the_authors_grokking_pipeline(tmp_path):
    """Seed 002's grokking pipeline (WeightEigenvaluesMultiSeed.py: PCA of 10 initialisations' snapshots pooled, each
    projected, delays, stacked, exact DMD at full rank), re-implemented here with scikit-learn and numpy, and
    `conjugacy --observable pca:K --stack N` on the same runs give the same eigenvalues; --center moves them."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    inits, steps, dim, k, delays = 10, 40, 30, 4, 2
    w = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    runs = []
    for name in ("a", "b"):
        x = np.empty((steps, inits, dim))
        x[0] = rng.standard_normal((inits, dim)) + 1.0
        for t in range(1, steps):
            x[t] = np.tanh(x[t - 1] @ w.T) + 0.3
        runs.append((RunStore(write_store(tmp_path / f"{name}.zarr", x.reshape(steps, inits * dim))), x))

    def authors(x):
        components = PCA(k).fit(np.concatenate([x[:-1, i] for i in range(inits)])).components_
        scores = [x[:, i] @ components.T for i in range(inits)]
        hankel = [np.concatenate([s[j : steps - delays + j] for j in range(delays + 1)], axis=1) for s in scores]
        z, z_next = np.concatenate([h[:-1] for h in hankel]), np.concatenate([h[1:] for h in hankel])
        u, sv, vh = np.linalg.svd(z.T, full_matrices=False)
        return np.linalg.eigvals((u.T @ z_next.T @ vh.T) / sv)

    for store, x in runs:
        ours = koopman_spectrum(store, observable=f"pca:{k}", stack=inits, delays=delays, rank=k * (delays + 1))
        theirs = authors(x)
        assert ours.rank == theirs.size == 12 and ours.n_trajectories == inits
        np.testing.assert_allclose(slot_match(theirs, ours.eigenvalues), theirs, atol=1e-8)
        centred = koopman_spectrum(store, observable=f"pca:{k}", stack=inits, delays=delays, rank=12, center=True)
        assert wasserstein(centred.eigenvalues, theirs) > 1e-3
    result = conjugacy([r for r, _ in runs], observable=f"pca:{k}", stack=inits, delays=delays, k=12, null_size=4)
    assert result.to_dict()["settings"]["center"] is False and result.reparam.distances.shape == (4,)
    with pytest.raises(TrajError, match="center"):
        conjugacy([r for r, _ in runs], stack=inits, center=True)  # centring is pca:K's alone


def _stacked_runs(tmp_path, names, state=40, n_traj=3, steps=12):
    """Runs of ``n_traj`` trajectories of z_{k+1} = A z_k in ``state`` coordinates (one embedding Q for all),
    stacked trajectory-major in θ, with a little white noise: {name: eigenvalues} -> RunStores."""
    q, _ = np.linalg.qr(np.random.default_rng(99).standard_normal((state, 4)))
    runs = []
    for seed, (name, eigenvalues) in enumerate(names.items()):
        rng = np.random.default_rng(seed)
        parts = []
        for _ in range(n_traj):
            z = rng.standard_normal(4)[:, None] * np.power.outer(eigenvalues, np.arange(steps))  # (4, steps)
            parts.append((q @ z).T + 1e-3 * rng.standard_normal((steps, state)))
        runs.append(RunStore(write_store(tmp_path / f"{name}.zarr", np.hstack(parts))))
    return runs


def _pairs_spectrum(data, n_traj, delays, rank, components=None, draw=None, strength=0.1, seed=0):
    """The in-memory path before issue 23 (the reference): (bent) data, pooled PCA scores, Hankel pairs, an SVD of X."""
    from traj.analysis.conjugacy import stacked_hankel, stacked_pca_scores
    from traj.engine import ReducedOperator

    if draw is not None:
        data = reparametrise(data, draw, strength=strength, seed=seed, n_traj=n_traj)
    if components is not None:
        data = stacked_pca_scores(data, n_traj, components)
    x, y = stacked_hankel(data, n_traj, delays)
    return ReducedOperator.from_pairs(x, y, rank=rank, excess="reduce").eigenvalues


@pytest.mark.parametrize("delays", [0, 2])
def test_stacked_trajectories_streamed_equal_the_in_memory_path(tmp_path, delays):
    """Issue 23: --stack streams the pooled Gram of the trajectories band by band (blocks of 7 coordinates of
    each trajectory here) and gives the spectra of the in-memory Hankel pairs, for all weights and pca:K."""
    from traj.engine import Engine

    (run,) = _stacked_runs(tmp_path, {"a": [0.95, 0.8, 0.6, 0.4]})
    engine = Engine(block_bytes=3 * 12 * 8 * 7)
    data = run.read(slice(0, 12)).astype(np.float64)
    for rank in (3, 4):
        streamed = koopman_spectrum(run, stack=3, delays=delays, rank=rank, small_observable=0, engine=engine)
        memory = koopman_spectrum(run, stack=3, delays=delays, rank=rank, small_observable=10**6)
        assert (streamed.method, memory.method, streamed.rank) == ("gram", "memory", rank)
        np.testing.assert_allclose(streamed.eigenvalues, memory.eigenvalues, rtol=0, atol=1e-10)
        np.testing.assert_allclose(memory.eigenvalues, _pairs_spectrum(data, 3, delays, rank), rtol=0, atol=1e-12)
        pca = koopman_spectrum(run, stack=3, delays=delays, rank=rank, observable="pca:3", engine=engine)
        np.testing.assert_allclose(pca.eigenvalues, _pairs_spectrum(data, 3, delays, rank, components=3),
                                   rtol=0, atol=1e-10)
    assert np.abs(streamed.eigenvalues - [0.95, 0.8, 0.6, 0.4]).max() < 0.05  # the planted system, through noise


def test_stacked_reparametrisation_null_streamed_equals_the_in_memory_path(tmp_path):
    """The reparametrisation null's maps bend each band of the stacked state (one map per state coordinate,
    its range pooled over the trajectories): its distances, the runs' distances and the statistic equal the
    in-memory path's, for all weights (both rules) and pca:K (against the reference pipeline)."""
    from traj.engine import Engine

    planted = {"a": [0.95, 0.8, 0.6, 0.4], "b": [0.95, 0.8, 0.6, 0.4], "c": [0.9, 0.8, 0.6, 0.3],
               "n0": [0.95, 0.8, 0.6, 0.4], "n1": [0.95, 0.8, 0.6, 0.4]}
    *runs, n0, n1 = _stacked_runs(tmp_path, planted)
    engine = Engine(block_bytes=3 * 12 * 8 * 7)
    for rule in ("reproducible", "plain"):
        options = {"null": [n0, n1], "stack": 3, "delays": 2, "k": 4, "null_size": 6, "rule": rule}
        streamed = conjugacy(runs, small_observable=0, engine=engine, **options)
        memory = conjugacy(runs, small_observable=10**6, **options)
        assert {s.method for s in streamed.spectra} == {"gram"} and {s.method for s in memory.spectra} == {"memory"}
        np.testing.assert_allclose(streamed.distance, memory.distance, rtol=0, atol=1e-10)
        np.testing.assert_allclose(streamed.reparam.distances, memory.reparam.distances, rtol=0, atol=1e-10)
        np.testing.assert_allclose(streamed.scores, memory.scores, rtol=1e-9, atol=1e-10)
        assert [v.verdict for v in streamed.verdicts] == [v.verdict for v in memory.verdicts]
        assert memory.reparam.distances.min() > 1e-5
    assert [v.verdict for v in streamed.verdicts[:2]] == ["undetermined"] * 2  # rule plain: distances only
    # pca:K with no seed null: every map bends the first run; each bent spectrum at the first run's rank
    result = conjugacy(runs[:2], observable="pca:3", stack=3, delays=1, k=4, null_size=3, null_seed=5, engine=engine)
    data = runs[0].read(slice(0, 12)).astype(np.float64)
    rank, k = result.spectra[0].rank, result.k
    first = _pairs_spectrum(data, 3, 1, rank, components=3)
    np.testing.assert_allclose(result.eigenvalues(0), first[:k], rtol=0, atol=1e-10)
    expected = [wasserstein(first[:k], _pairs_spectrum(data, 3, 1, rank, components=3, draw=i, seed=5)[:k])
                for i in range(3)]
    np.testing.assert_allclose(result.reparam.distances, expected, rtol=0, atol=1e-10)


def test_a_nan_in_one_stacked_trajectory_names_its_snapshot(tmp_path):
    """Streamed, a NaN in trajectory 2's coordinate 30 at snapshot 5 shows on the pooled Gram's diagonal at 2·T + 5:
    the error names snapshot 5, for all weights, pca:K and with the null's maps."""
    from traj.errors import NonFiniteDataError

    data = np.random.default_rng(0).standard_normal((12, 120))
    data[5, 2 * 40 + 30] = np.nan
    run = RunStore(write_store(tmp_path / "nan.zarr", data))
    for call in (lambda: koopman_spectrum(run, stack=3, small_observable=0),
                 lambda: koopman_spectrum(run, stack=3, observable="pca:2"),
                 lambda: conjugacy([run, run], stack=3, small_observable=0, null_size=2, k=2)):
        with pytest.raises(NonFiniteDataError, match=r"snapshot 5 \(step 5\) holds NaN or Inf; 1 snapshot"):
            call()


def test_stacked_pooled_gram_is_the_same_on_every_backend(tmp_path):
    """numpy, torch and dask read the same bands of every trajectory through the same maps: equal spectra and nulls."""
    from traj.engine import Engine

    runs = _stacked_runs(tmp_path, {"a": [0.95, 0.8, 0.6, 0.4], "b": [0.95, 0.8, 0.6, 0.4]})
    results = {backend: conjugacy(runs, stack=3, delays=1, k=3, null_size=3, small_observable=0,
                                  engine=Engine(backend=backend, block_bytes=3 * 12 * 8 * 7))
               for backend in ("numpy", "torch", "dask")}
    reference = results["numpy"]
    assert {s.method for s in reference.spectra} == {"gram"} and reference.reparam.distances.min() > 1e-6
    for backend in ("torch", "dask"):
        np.testing.assert_allclose(results[backend].eigenvalues(0), reference.eigenvalues(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(results[backend].reparam.distances, reference.reparam.distances, rtol=0, atol=1e-10)


def test_a_stacked_null_whose_pooled_grams_would_not_fit_is_refused_before_any_read(tmp_path):
    """The pooled Gram of 10 stacked trajectories of 60 snapshots is 600 x 600: 40 maps of 10 such Grams need
    1.1 GiB. Collected into memory (a small observable), the same null holds (T+1)² Grams and is not refused."""
    from traj.analysis.conjugacy import ConjugacyParams, fit_conjugacy

    (run,) = _stacked_runs(tmp_path, {"a": [0.95, 0.8, 0.6, 0.4]}, state=300, n_traj=10, steps=60)
    params = ConjugacyParams.checked(stack=10, null_size=40, k=2)
    with pytest.raises(TrajError, match=r"null_size 40 needs about 1\.1 GiB for the reparametrisation null over the "
                                        r"pooled Grams of 600 snapshots \(the window's, of every stacked trajectory\) "
                                        r"\(27\.5 MiB a map\); at most 37 fit in 1 GiB"):
        fit_conjugacy([run, run], params, null=[])
    from traj.analysis.conjugacy.fit import _check_null_memory

    _check_null_memory(40, 40, 60)  # the same window unstacked: 0.27 MiB a map


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
    margin = runner.invoke(app, [*args, "--margin", "0.9", "--null-size", "0"])
    assert margin.exit_code == 0, margin.output
    summary = json.loads(margin.stdout)
    assert summary["margin"] == 0.9 and summary["verdicts"][0]["verdict"] == "conjugate"
    assert summary["verdicts"][0]["basis"] == "margin" and summary["rule"] == "reproducible"
    assert summary["verdicts"][0]["distance"] < 0.9 < summary["verdicts"][0]["statistic"] / summary["threshold"]
    plain = json.loads(runner.invoke(app, [*args, "--margin", "0.9", "--null-size", "0", "--rule", "plain"]).stdout)
    assert plain["rule"] == "plain" and plain["threshold"] is None and plain["null_threshold"] < 1e-3
    assert plain["verdicts"][0]["statistic"] == plain["verdicts"][0]["distance"]
    assert (plain["verdicts"][0]["verdict"], plain["verdicts"][0]["basis"]) == ("conjugate", "margin")  # W1 < 0.9
    shown = runner.invoke(app, [*args[:-1], "--rule", "plain"])
    assert shown.exit_code == 0 and "undetermined: rule plain gives distances only" in shown.stdout
    assert "non-conjugate" not in shown.stdout and "no verdict" in shown.stdout
    assert runner.invoke(app, [*args, "--rule", "loose"]).exit_code == 2
    bad = runner.invoke(app, [*args, "--margin", "-1"])
    assert bad.exit_code == 2 and "margin" in bad.output
    same = runner.invoke(app, ["conjugacy", str(SAMPLE / "mirror-omd.zarr"), str(SAMPLE / "mirror-omd.zarr"),
                               "--null", str(SAMPLE / "mirror-omd-seed1.zarr"), "--out", str(tmp_path / "r2"),
                               "--fail-on-nonconjugate"])
    assert same.exit_code == 0, same.output


def test_spectra_plot_tells_coinciding_runs_apart():
    """OMD's and OGD's eigenvalues nearly coincide: each run gets its own hollow marker of its own size,
    and an inset magnifies the eigenvalues near λ = 1."""
    from traj.plots.conjugacy import plot_null, plot_spectra

    runs = [SAMPLE / "mirror-omd.zarr", SAMPLE / "mirror-ogd.zarr", SAMPLE / "mirror-bisection.zarr"]
    result = conjugacy(runs, null_size=4)
    fig = plot_spectra(result)
    main = fig.axes[0]
    (inset,) = main.child_axes
    assert 1 < inset.get_xlim()[1] < 1.05 and inset.get_xlim()[0] > 0.5  # zoomed near λ = 1
    sizes = [c.get_sizes()[0] for c in main.collections]
    assert len(sizes) == 3 and len(set(sizes)) == 3
    assert all(c.get_facecolors().size == 0 for c in main.collections)  # hollow: an inner marker stays visible
    assert len(inset.collections) == 3
    null = plot_null(result)  # the reparametrisation null alone is drawn
    assert any("reparametrisation null" in t.get_text() for t in null.axes[0].get_legend().get_texts())


def test_cli_says_how_k_was_chosen_in_one_line_and_warns_only_of_what_was_asked(tmp_path):
    """The rule's choice of k is one short line on stdout; a yellow 'reduced' line on stderr only when an explicit
    --k or --rank N was cut; the JSON keeps every step (k_choice) and the full reasons (k_note)."""
    from scipy.linalg import block_diag

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    runs = [str(_linear_run(tmp_path / f"{n}.zarr", a, 300, s, noise=1e-3).path) for n, s in (("a", 0), ("b", 1))]
    null = ",".join(str(_linear_run(tmp_path / f"n{i}.zarr", a, 300, 10 + i, noise=1e-3).path) for i in range(4))
    base = ["conjugacy", *runs, "--null", null, "--null-size", "4"]
    default = runner.invoke(app, [*base, "--out", str(tmp_path / "r1")])
    assert default.exit_code == 0, default.output
    assert "  5 eigenvalue(s) compared per run (k 10: 5 of 10 reproduced by every seed-null run)\n" in default.stdout
    assert "reduced" not in default.stderr and "rule:" not in default.stderr
    assert all(len(line) <= 120 for line in default.stdout.splitlines() + default.stderr.splitlines())
    explicit = runner.invoke(app, [*base, "--k", "10", "--out", str(tmp_path / "r2")])
    assert explicit.exit_code == 0, explicit.output
    assert "reduced: --k 10 asked for, 5 compared (the report says why)" in explicit.stderr.replace("\n", " ")
    ranked = runner.invoke(app, [*base, "--rank", "8", "--out", str(tmp_path / "r3"), "--json"])
    summary = json.loads(ranked.stdout)
    assert summary["k_choice"] == {"asked": 10, "resolved": 8, "limiting_run": runs[0], "limit": "rank",
                                   "reproducible": 5}
    assert summary["k"] == 5 and "5 of 8 eigenvalue(s) reproducible" in summary["k_note"]
    fitted = runner.invoke(app, [*base, "--rank", "8", "--out", str(tmp_path / "r4")])
    assert "5 eigenvalue(s) compared per run (k 10: rank 8; 5 of 8 reproduced" in fitted.stdout
    assert "reduced" not in fitted.stderr  # rank 8 was fitted as asked; the rule chose 5 of its eigenvalues
    alone = runner.invoke(app, ["conjugacy", *runs, "--null-size", "4", "--out", str(tmp_path / "r5")])
    assert "undetermined: give --null SEED_RUN" in alone.stdout and "non-conjugate" not in alone.stdout
    assert "no seed null: distances and the reparametrisation null's bound only, no verdict" in alone.stdout
    assert "rule:" not in alone.stderr  # the default rule falling back is information
    asked = runner.invoke(app, ["conjugacy", *runs, "--null-size", "4", "--rule", "reproducible",
                                "--out", str(tmp_path / "r6")])
    assert "rule: --rule reproducible needs a seed null (--null): rule plain used" in asked.stderr
    # a seed null of one run that sets the threshold: each eigenvalue's spread rests on two runs, and it says so
    one = runner.invoke(app, ["conjugacy", *runs, "--null", null.split(",")[0], "--null-size", "0",
                              "--out", str(tmp_path / "r7"), "--json"])
    summary = json.loads(one.stdout)
    assert summary["basis"] == "seed-null" and summary["null_distances"] == []  # no run left to leave one out
    assert "estimated from two runs (one degree of freedom)" in summary["null_note"]
    assert "spread rests on two runs" in runner.invoke(app, ["conjugacy", *runs, "--null", null.split(",")[0],
                                                             "--null-size", "0", "--out", str(tmp_path / "r7b")]).stderr
    plain_one = json.loads(runner.invoke(app, ["conjugacy", *runs, "--null", null.split(",")[0], "--null-size", "0",
                                               "--rule", "plain", "--out", str(tmp_path / "r7c"), "--json"]).stdout)
    assert len(plain_one["null_distances"]) == 1 and plain_one["threshold"] is None  # rule plain: no verdict
    assert json.loads(runner.invoke(app, [*base, "--out", str(tmp_path / "r8"), "--json"]).stdout)["null_note"] is None
    # a compared run, or one run twice, in the seed null is refused in the command's words
    for bad in (f"{null},{runs[1]}", f"{null},{null.split(',')[0]}/"):
        refused = runner.invoke(app, ["conjugacy", *runs, "--null", bad, "--out", str(tmp_path / "r9")])
        assert refused.exit_code == 2 and "--null" in refused.stderr
        assert ("also a compared run" if bad.endswith("b.zarr") else "given twice") in refused.stderr


def _spaced_run(path, steps, seed=0):
    from traj.store import Layout, StoreWriter

    rng = np.random.default_rng(seed)
    a, basis, z = _rotation(0.9, 0.3), rng.standard_normal((50, 2)), rng.standard_normal(2)
    with StoreWriter(path, Layout.from_shapes([("w", (50,))])) as writer:
        for k in steps:
            writer.append((basis @ z).astype(np.float32), step=k)
            z = a @ z
    return path


def test_runs_at_other_or_uneven_spacings_are_refused_in_one_line(tmp_path):
    # an eigenvalue is per snapshot: a run recorded every 4 steps has λ^4 where one recorded every step has λ
    every1 = _spaced_run(tmp_path / "every1.zarr", range(30))
    every4 = _spaced_run(tmp_path / "every4.zarr", range(0, 120, 4), seed=1)
    uneven = _spaced_run(tmp_path / "uneven.zarr", [*range(20), *range(25, 75, 5)], seed=2)
    with pytest.raises(TrajError, match=r"different spacings \(every1.zarr every 1 step\(s\), every4.zarr every 4"):
        conjugacy([every1, every4])
    with pytest.raises(TrajError, match="different spacings"):  # a seed null at another spacing too
        conjugacy([every1, _spaced_run(tmp_path / "b.zarr", range(30), seed=3)], null=[every4])
    with pytest.raises(TrajError, match=r"uneven.zarr: 0:29 \(the whole run\) holds snapshots at unevenly spaced"):
        conjugacy([every1, uneven])
    result = CliRunner().invoke(app, ["conjugacy", str(every1), str(every4), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "different spacings" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
    # two runs recorded every 4 steps compare (the spacing is one, whatever it is)
    same = conjugacy([every4, _spaced_run(tmp_path / "d.zarr", range(0, 120, 4), seed=5)])
    assert same.distance[0, 1] < 1e-6


def test_a_seed_null_without_spread_says_every_difference_counts(tmp_path):
    """A "seed" run with the first run's eigenvalues exactly (here a copy) gives a bound of 0: OMD vs OGD is then
    non-conjugate and the result says why; the reparametrisation null (the default) restores the verdict."""
    import shutil

    copy = shutil.copytree(SAMPLE / "mirror-omd.zarr", tmp_path / "copy.zarr")
    runs = [SAMPLE / "mirror-omd.zarr", SAMPLE / "mirror-ogd.zarr"]
    bare = conjugacy(runs, null=[copy], null_size=0)
    assert bare.null_threshold == 0 and bare.basis == "seed-null" and bare.verdicts[0].verdict == "non-conjugate"
    assert "no spread" in bare.null_note and "reparametrisation null" in bare.null_note
    default = conjugacy(runs, null=[copy])
    assert (default.verdicts[0].verdict, default.basis, default.null_note) == ("conjugate", "reparam-null", None)


def test_seed_runs_without_a_seed_null_get_no_verdict(tmp_path):
    """Issue 25: `traj conjugacy run1 seed1 seed2` (no --null) printed `non-conjugate` for seed runs of one
    configuration: their W1 exceeds the reparametrisation null's bound, which alone decided. Without a seed null the
    distances and that bound are reported and the verdict is undetermined; with one, the same runs are conjugate."""
    from scipy.linalg import block_diag

    a = block_diag(_rotation(0.95, 0.3), [[0.8]], [[0.6]])
    runs = [_linear_run(tmp_path / f"s{i}.zarr", a, 400, i, noise=0.02) for i in range(6)]
    bare = conjugacy(runs[:3], k=4, null_size=10)
    assert bare.reparam.threshold < bare.distance[0, 1] and bare.reparam.threshold < bare.distance[0, 2]
    assert [(v.verdict, v.basis) for v in bare.verdicts] == [("undetermined", None)] * 3 and not bare.any_nonconjugate
    assert bare.to_dict()["verdicts"][0]["reason"].startswith("give --null SEED_RUN")
    result = runner.invoke(app, ["conjugacy", *(str(r.path) for r in runs[:3]), "--k", "4", "--null-size", "10",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 0 and result.stdout.count("undetermined: give --null SEED_RUN") == 3
    assert "non-conjugate" not in result.stdout
    seeded = conjugacy(runs[:3], k=4, null_size=10, null=runs[3:])
    assert [v.verdict for v in seeded.verdicts] == ["conjugate"] * 3 and seeded.basis is not None
    # traj report --peers takes the seed null too
    report = runner.invoke(app, ["report", str(runs[0].path), "--peers", str(runs[1].path), "--null", str(runs[3].path),
                                 "--null", str(runs[4].path), "--no-evaluate", "--out", str(tmp_path / "r"), "--json"])
    assert report.exit_code == 0, report.output
    summary = json.loads(report.stdout)["conjugacy"]
    assert summary["null_runs"] == [str(runs[3].path), str(runs[4].path)]
    assert summary["verdicts"][0]["verdict"] == "conjugate"
