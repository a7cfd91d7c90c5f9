"""The one reduced-operator factory: rank rule, precision floor by dtype and path, order and signs."""

import numpy as np
import pytest

from tests.conftest import match, planted_linear_system
from traj.engine.operator import ReducedOperator, precision_floor, truncate
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
