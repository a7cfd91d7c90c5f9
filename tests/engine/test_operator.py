"""The one reduced-operator factory: rank rule, precision floor by dtype and path, order and signs."""

import numpy as np
import pytest

from tests.conftest import match, planted_linear_system
from traj.engine.operator import ReducedOperator
from traj.engine.truncation import (
    gavish_donoho_threshold,
    known_noise_threshold,
    noise_from_tail,
    precision_floor,
    truncate,
)
from traj.errors import NotApplicableError, RankUnavailableError, TrajError, WindowTooShortError


def test_the_floor_depends_on_the_dtype_and_on_how_sigma_was_obtained():
    assert precision_floor(np.float64, source="gram") == 1e-7  # the Gram squares the condition number
    assert precision_floor(np.float32, source="gram") == 1e-6  # float32 data: their own rounding
    assert precision_floor(np.float64, source="svd") == 1e-12  # an SVD of X resolves far further
    assert precision_floor(np.float32, source="svd") == 1e-6
    assert precision_floor(np.float16, source="svd") == pytest.approx(8 * 2.0**-10)


def _pairs_with_a_small_direction(scale):
    """Pairs of a 3-mode linear system whose third direction is ``scale`` times smaller."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((50, 3)))
    z = np.array([1.0, 0.5, scale])
    states = [q @ (np.array([0.95, 0.8, 0.6]) ** k * z) for k in range(30)]
    d = np.array(states).T
    return d[:, :-1], d[:, 1:]


def test_an_in_memory_svd_keeps_directions_the_gram_cannot_resolve():
    x, y = _pairs_with_a_small_direction(1e-9)
    svd = ReducedOperator.from_pairs(x, y, rank="all", dtype=np.float64)
    assert svd.rank == 3
    np.testing.assert_allclose(np.sort(svd.eigenvalues.real), [0.6, 0.8, 0.95], atol=1e-6)
    d = np.concatenate([x, y[:, -1:]], axis=1)
    gram = ReducedOperator.from_gram(d.T @ d, rank="all", n_features=50, dtype=np.float64)
    assert gram.rank == 2 and gram.floor == pytest.approx(1e-7 * gram.singular_values[0])
    assert ReducedOperator.from_pairs(x, y, rank="all", dtype=np.float32).rank == 2  # float32 data: 1e-6


def test_pairs_and_gram_paths_give_one_spectrum_in_one_order():
    data, eigenvalues = planted_linear_system(n_params=400, n_snapshots=30)
    d = data.T
    from_gram = ReducedOperator.from_gram(d.T @ d, rank=6, n_features=400, dtype=np.float64)
    from_pairs = ReducedOperator.from_pairs(d[:, :-1], d[:, 1:], rank=6, dtype=np.float64)
    np.testing.assert_allclose(from_pairs.eigenvalues, from_gram.eigenvalues, atol=1e-9)
    np.testing.assert_allclose(match(eigenvalues, from_gram.eigenvalues), eigenvalues, atol=1e-9)
    lam = from_gram.eigenvalues
    assert np.all(np.diff(np.abs(lam)) <= 1e-12)  # |λ| descending
    pairs = np.flatnonzero(np.isclose(np.abs(lam[:-1]), np.abs(lam[1:])))
    assert all(lam[i].imag >= lam[i + 1].imag for i in pairs)  # then Im λ descending
    # signs and phases are fixed: the same fit twice is the same to the bit
    again = ReducedOperator.from_gram(d.T @ d, rank=6, n_features=400, dtype=np.float64)
    assert again.right.tobytes() == from_gram.right.tobytes()
    assert from_pairs.coefficients is None and from_pairs.amplitudes is None
    with pytest.raises(NotApplicableError, match="snapshot pairs"):
        from_pairs.reconstruction_error()


def test_an_explicit_rank_above_what_is_available_raises_or_says_it_was_reduced():
    x, y = _pairs_with_a_small_direction(0.0)  # two directions only
    with pytest.raises(RankUnavailableError, match="rank 5 asked for, but only 2") as info:
        ReducedOperator.from_pairs(x, y, rank=5)
    assert (info.value.requested, info.value.available, info.value.parameter) == (5, 2, "rank")
    reduced = ReducedOperator.from_pairs(x, y, rank=5, excess="reduce")
    assert reduced.rank == 2 and reduced.rank_requested == 5
    assert reduced.rank_note.startswith("rank 5 asked for, but only 2") and reduced.rank_note.endswith("kept 2")
    exact = ReducedOperator.from_pairs(x, y, rank=2)
    assert exact.rank_note is None and exact.rank_requested == 2
    sigma = np.array([10.0, 9.0, 1e-3, 1e-3, 1e-3, 0.0])
    by_auto = truncate(sigma, rank=8, shape=(1000, 6), dtype=np.float64, source="gram", excess="auto")
    auto_itself = truncate(sigma, rank="auto", shape=(1000, 6), dtype=np.float64, source="gram")
    assert (by_auto.rank, by_auto.requested, by_auto.rule) == (auto_itself.rank, "auto", auto_itself.rule)
    assert by_auto.rank == 5 and by_auto.threshold == auto_itself.threshold
    assert by_auto.note.startswith("rank 8 asked for, but only 5") and by_auto.note.endswith("rank auto kept 5")
    auto = truncate(np.array([10.0, 9.0, 1e-3, 1e-3, 1e-3]), rank="auto", shape=(1000, 5), dtype=np.float64,
                    source="gram")
    assert auto.rank == 2 and auto.requested == "auto" and auto.threshold is not None and auto.note is None


def test_degenerate_inputs_are_not_applicable():
    with pytest.raises(NotApplicableError, match="all zeros"):
        ReducedOperator.from_gram(np.zeros((5, 5)), n_features=10)
    with pytest.raises(WindowTooShortError, match="at least 2 snapshot pairs"):
        ReducedOperator.from_pairs(np.ones((4, 1)), np.ones((4, 1)))
    with pytest.raises(TrajError, match="rank must be"):
        truncate(np.ones(3), rank="many", shape=(3, 3), dtype=np.float64, source="svd")


def _low_rank_plus_noise(n, t, rank, seed=0):
    """S + Z: a rank-``rank`` S with singular values 2.5-6 x √max(n, t) (above GD's ~1.7-2.4 x) and unit white noise Z."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    v, _ = np.linalg.qr(rng.standard_normal((t, rank)))
    s = np.linspace(6, 2.5, rank) * np.sqrt(max(n, t))
    return (u * s) @ v.T + rng.standard_normal((n, t))


@pytest.mark.parametrize("n, t, rank", [(3000, 300, 7), (300, 1200, 5), (800, 800, 12)])
def test_the_tail_rule_keeps_what_the_median_rule_keeps(n, t, rank):
    """Known-noise Gavish–Donoho with σ̂ from the energy outside the kept directions (what a sketch gives)
    against the unknown-noise rule over every σ: same rank; σ̂ within 1 % of the true σ = 1."""
    x = _low_rank_plus_noise(n, t, rank)
    sigma = np.linalg.svd(x, compute_uv=False)
    median = truncate(sigma, rank="auto", shape=(n, t), dtype=np.float64, source="svd")
    tail = truncate(sigma[:3 * rank], rank="auto", shape=(n, t), dtype=np.float64, source="svd",
                    trace=float(np.sum(x * x)))
    assert median.rank == tail.rank == rank
    assert (median.rule, tail.rule) == ("gavish-donoho-median", "gavish-donoho-tail-noise")
    assert tail.noise == pytest.approx(1.0, rel=0.01)
    assert tail.threshold == pytest.approx(median.threshold, rel=0.02)  # ω(β)·median σ ≈ λ*(β)·√n·σ under MP
    assert noise_from_tail(sigma, float(np.sum(sigma**2)), rank, (n, t)) == pytest.approx(1.0, rel=0.01)
    # no noise at all: the threshold falls to the rounding and the floor decides
    exact = truncate(sigma[:rank], rank="auto", shape=(n, t), dtype=np.float64, source="svd",
                     trace=float(np.sum(sigma[:rank] ** 2)))
    assert exact.rank == rank and exact.noise < 1e-6
    assert known_noise_threshold(1.0, 1000, 1000) == pytest.approx(4 / np.sqrt(3) * np.sqrt(1000))  # λ*(1) = 4/√3


def test_reconstruction_error_never_forms_a_snapshot_by_snapshot_matrix():
    """‖D̂‖² from r×(T+1) products: a 1201-snapshot window needs kilobytes, not (T+1)² complex (23 MB)."""
    import tracemalloc

    data, _ = planted_linear_system(n_params=40, n_snapshots=1201)
    data = data + 1e-3 * np.random.default_rng(1).standard_normal(data.shape)
    op = ReducedOperator.from_gram(data @ data.T, rank=6, n_features=40, dtype=np.float64)
    tracemalloc.start()
    error = op.reconstruction_error()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20
    d_hat = (data.T @ op.coefficients) @ (op.amplitudes[:, None] * op.vandermonde(np.arange(1201)))  # Φ diag(b) Vand
    assert error == pytest.approx(np.linalg.norm(data.T - np.real(d_hat)) / np.linalg.norm(data), rel=1e-6)


def _planted_noise_free(n_features, rank, n_snapshots=31, seed=0):
    """θ_k = Q z_k, z_{k+1} = diag(λ) z_k: ``rank`` real decaying modes embedded in N coordinates, no noise."""
    rng = np.random.default_rng(seed)
    lam = np.linspace(0.95, 0.5, rank)  # apart by 0.09 at least: each eigenvalue well conditioned
    q, _ = np.linalg.qr(rng.standard_normal((n_features, rank)))
    z = lam[None, :] ** np.arange(n_snapshots)[:, None] * rng.standard_normal(rank)
    return z @ q.T, lam


@pytest.mark.parametrize("rank", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("extra", [0, 2])  # N = rank (every σ signal) and N = rank + 2 (σ fall to the floor)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_auto_keeps_the_planted_rank_of_noise_free_data(rank, extra, dtype):
    """Issue 24: noise-free low-dimensional data have no noise bulk, so Gavish–Donoho's median is a signal
    σ and its threshold kept 1 of 2-6 directions (reconstruction error up to 0.2 here, above 1 as seen).
    Now every direction above the precision floor is kept, and the note says why."""
    data, lam = _planted_noise_free(rank + extra, rank, seed=rank)
    data = data.astype(dtype).astype(np.float64)
    svd = ReducedOperator.from_data(data, rank="auto", dtype=dtype)
    sigma = np.linalg.svd(data[:-1], compute_uv=False)
    alone = int(np.count_nonzero(sigma > gavish_donoho_threshold(sigma, data.shape[1], data.shape[0] - 1)))
    if extra == 0:
        assert alone < rank  # the failure seen: every σ is signal, the median too
    if alone < rank:
        assert svd.truncation.rule == "all-above-floor-no-noise-bulk"
        assert f"kept all {rank} directions above the precision floor" in svd.rank_note
        assert "no noise bulk" in svd.rank_note and f"it would keep {max(1, alone)}" in svd.rank_note
    else:  # N = 4, rank 2: the two zero σ's pull the median down, and Gavish–Donoho keeps both
        assert (svd.truncation.rule, svd.rank_note) == ("gavish-donoho-median", None)
    # the Gram path sees T σ's, most of them at the floor, so its median is there and the threshold too
    gram = ReducedOperator.from_gram(data @ data.T, rank="auto", n_features=data.shape[1], dtype=dtype)
    for op in (svd, gram):
        assert op.rank == rank
        assert op.reconstruction_error() < 1e-5  # was 0.02-0.2 with one direction kept
        np.testing.assert_allclose(np.sort(op.eigenvalues.real), np.sort(lam), atol=1e-3)
        assert np.abs(op.eigenvalues.imag).max() < 1e-3


def test_the_note_names_the_cliff_into_the_floor():
    sigma = np.array([1.0, 0.3, 2e-4, 1e-17, 5e-18])  # three directions, then rounding
    cut = truncate(sigma, rank="auto", shape=(5, 30), dtype=np.float64, source="svd")
    assert (cut.rank, cut.rule) == (3, "all-above-floor-no-noise-bulk")
    assert "fall from 2.0e-04·σ1 to 1.0e-17·σ1 in one step" in cut.note and "it would keep 2" in cut.note


@pytest.mark.parametrize("n, t, rank", [(6, 60, 2), (300, 1200, 5), (2000, 40, 3)])
def test_a_noise_bulk_still_lets_gavish_donoho_decide(n, t, rank):
    """Low-rank signal in white noise: the bulk is there, the median rule decides and keeps the planted rank."""
    x = _low_rank_plus_noise(n, t, rank, seed=1)
    sigma = np.linalg.svd(x, compute_uv=False)
    cut = truncate(sigma, rank="auto", shape=(n, t), dtype=np.float64, source="svd")
    assert (cut.rank, cut.rule, cut.note) == (rank, "gavish-donoho-median", None)


def test_a_smooth_decay_through_the_floor_stays_with_gavish_donoho():
    """A training run's tail decays smoothly past the float32 floor (quadratic-mlp: 259 of 320 σ above it,
    Gavish–Donoho keeps 131): no cliff, so the median rule still decides."""
    sigma = np.logspace(0, -7, 320)
    cut = truncate(sigma, rank="auto", shape=(1185, 320), dtype=np.float32, source="svd")
    assert cut.rule == "gavish-donoho-median" and cut.rank < cut.available


def test_exact_product_is_exact_to_twice_double_precision(rng):
    """The residual behind the Gram path's error estimate needs A·B to ~1e-20 of its scale (float64 rounds at 1e-16)."""
    from fractions import Fraction

    from traj.engine.precision import exact_product

    a = rng.standard_normal((6, 40)) * np.logspace(0, -12, 40)
    b = rng.standard_normal((40, 5))
    hi, lo = exact_product(a, b)
    exact = [[sum(Fraction(x) * Fraction(y) for x, y in zip(a[i], b[:, j], strict=True)) for j in range(5)]
             for i in range(6)]
    error = max(abs(Fraction(hi[i, j]) + Fraction(lo[i, j]) - exact[i][j]) for i in range(6) for j in range(5))
    scale = float(np.max(np.abs(a) @ np.abs(b)))
    assert float(error) / scale < 1e-24  # ~n·2^-4β: 40·2^-92 here
    assert np.max(np.abs(a @ b - hi)) / scale > 1e-18  # float64 itself is not that exact here: hi + lo is needed
    blocked = exact_product(a, b, block=4)  # computed in 4×4 tiles (memory), the same numbers
    np.testing.assert_array_equal(blocked[0], hi)
    np.testing.assert_array_equal(blocked[1], lo)


def _planted_spectrum(amplitudes, n=1500, t=120, seed=0):
    """θ_k = Σ_j a_j m_j λ_j^k: 24 real modes, λ from 0.99 to 0.6, amplitudes 1 and then ``amplitudes``."""
    rng = np.random.default_rng(seed)
    lam = np.linspace(0.99, 0.6, len(amplitudes) + 1)
    amp = np.concatenate([[1.0], amplitudes])
    return (rng.standard_normal((n, amp.size)) @ (amp[:, None] * lam[:, None] ** np.arange(t + 1))).T


@pytest.mark.parametrize("low, seed", [(-9, 1), (-5, 2)])
def test_the_gram_keeps_every_rank_it_resolves_to_1e6(low, seed):
    """Issue 26: the Gram path's automatic rank kept far fewer modes than it resolves, because its a-priori error
    estimate lay 10^3-10^6 above the true error. Planted spectra with amplitudes from 1e-3 to 1e-9 (1e-5), against an
    SVD of the same data at every rank: the estimate from the measured residual covers the true error and lies within
    a small factor of it, and "auto" keeps every rank whose eigenvalues the Gram resolves to 1e-6 with a margin."""
    from traj.engine.precision import eigenvalue_errors
    from traj.engine.truncation import RESOLVED

    data = _planted_spectrum(np.logspace(-3 if low == -9 else -2, low, 23), seed=seed)
    n = data.shape[1]
    gram = data @ data.T
    auto = ReducedOperator.from_gram(gram, rank="auto", n_features=n, dtype=np.float64, resolve=RESOLVED)
    truth, estimate, a_priori = [], [], []
    for r in range(1, auto.truncation.available + 1):
        ours = ReducedOperator.from_gram(gram, rank=r, n_features=n, dtype=np.float64)
        reference = ReducedOperator.from_data(data, rank=r, dtype=np.float64)
        error = np.abs(ours.eigenvalues - match(ours.eigenvalues, reference.eigenvalues))
        truth.append(error.max())
        estimate.append(ours.eigenvalue_errors())
        a_priori.append(eigenvalue_errors(ours.singular_values, ours.atilde, ours.left, ours.right, source="gram").max())
        if 1e-11 < error.max() <= RESOLVED:  # above the SVD reference's own rounding, in the first-order regime
            assert np.all(error <= estimate[-1]) and estimate[-1].max() < 15 * error.max(), r
    truth = np.array(truth)
    resolved_with_margin = int(np.argmax(truth > RESOLVED / 10))  # ranks 1..this have errors <= 1e-7
    assert resolved_with_margin >= 3
    assert auto.rank >= resolved_with_margin and truth[auto.rank - 1] <= RESOLVED
    assert a_priori[auto.rank - 1] > 10 * RESOLVED  # the old estimate would have cut below it
    assert "Gram resolves the eigenvalues only to worse than 1e-06" in auto.rank_note
    assert "the floor decided" in auto.rank_note  # and below 1e-7·σ1 the precision floor, not Gavish–Donoho, did


def test_a_spectrum_without_error_estimates_is_the_same_spectrum():
    """from_gram(estimate_errors=False) (per-layer spectra, pruning) skips the residual, nothing else."""
    data = _planted_spectrum(np.logspace(-2, -5, 23), seed=2)
    gram = data @ data.T
    measured = ReducedOperator.from_gram(gram, rank=5, n_features=data.shape[1], dtype=np.float64)
    plain = ReducedOperator.from_gram(gram, rank=5, n_features=data.shape[1], dtype=np.float64, estimate_errors=False)
    assert plain.eigenvalues.tobytes() == measured.eigenvalues.tobytes()
    assert plain.amplitudes.tobytes() == measured.amplitudes.tobytes()
    assert plain.rounding_errors is None and measured.rounding_errors is not None
    assert plain.eigenvalue_errors().max() > 10 * measured.eigenvalue_errors().max()  # the a-priori bound, far above


@pytest.mark.parametrize("source, floor", [("svd", "1e-12"), ("gram", "1e-07")])
def test_the_note_says_when_the_floor_and_not_gavish_donoho_set_the_rank(source, floor):
    """Issue 26 (PyDMD tutorial 1, clean: PyDMD keeps 3, traj 2): a rounding-level σ3 above Gavish–Donoho's threshold
    but below the precision floor is left out, and rank_note says the floor decided (it was null)."""
    sigma = np.array([1.0, 0.5, 3e-13, 1e-15, 1e-15, 1e-15, 1e-15])
    cut = truncate(sigma, rank="auto", shape=(1000, 7), dtype=np.float64, source=source)
    assert cut.rank == 2 and cut.threshold < 3e-13
    assert cut.note.startswith(f"rank auto kept the 2 directions above the precision floor {floor}·σ1, not the 3 above "
                               "Gavish–Donoho's threshold: the floor decided")
    # where the threshold itself decides, no note
    assert truncate(np.array([10.0, 9.0, 1e-3, 1e-3, 1e-3]), rank="auto", shape=(1000, 5), dtype=np.float64,
                    source=source).note is None
    # (the range finder's tail rule says it too: tests/analysis/test_dmd_method.py)


def test_common_rank_and_largest_rank_the_rules_conjugacy_compares_runs_by():
    """common_rank: the smallest rank any DMD kept and the first that kept it; largest_rank: a linear search from
    the top, for a test not monotone in r (it stops at the first rank accepted)."""
    from traj.engine.truncation import Truncation, common_rank, largest_rank

    cuts = [Truncation(5, 5, 7, 1e-7), Truncation(3, 5, 3, 1e-7, note="3 of 5"), Truncation(3, 5, 3, 1e-7)]
    assert common_rank(cuts) == (3, 1)
    assert common_rank(cuts[:1]) == (5, 0)
    tried = []

    def accept(r: int) -> bool:
        tried.append(r)
        return r in (2, 4)

    assert largest_rank(6, accept) == 4 and tried == [6, 5, 4]  # stops at the first accepted, from the top
    assert largest_rank(6, lambda r: False) == 1 and largest_rank(1, lambda r: True) == 1
