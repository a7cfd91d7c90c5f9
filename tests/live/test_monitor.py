"""The live Koopman monitor (traj.live): sketch, fits against known answers and against traj dmd, series, trackers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import traj
from traj.errors import ParameterError
from traj.live import LiveOptions, Monitor, Sketch
from traj.store import RunStore
from traj.store.dtypes import encode


def planted(n: int, eigenvalues: np.ndarray, steps: int, seed: int = 0) -> np.ndarray:
    """x_k = Re(Σ_j φ_j λ_jᵏ) for random dense real modes (a complex pair λ, λ̄ as the plane u cos + v sin)."""
    rng = np.random.default_rng(seed)
    modes = rng.standard_normal((n, eigenvalues.size))
    k = np.arange(steps)[:, None]
    rho, omega = np.abs(eigenvalues), np.angle(eigenvalues)
    # a pair with ω > 0 uses cos, its conjugate sin: together the real 2-plane of λ and λ̄
    coefficients = rho**k * np.where(omega < 0, np.sin(-omega * k), np.cos(omega * k))
    return coefficients @ modes.T


def test_sketch_is_a_fixed_linear_map() -> None:
    rng = np.random.default_rng(0)
    n = 3_000_001  # not a multiple of p: the tail row counts
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    s = Sketch(n, 512, seed=3)
    np.testing.assert_allclose(s.apply(2 * x - 3 * y), 2 * s.apply(x) - 3 * s.apply(y), rtol=1e-10, atol=1e-8)
    np.testing.assert_array_equal(s.apply(x), Sketch(n, 512, seed=3).apply(x))  # the seed fixes it
    assert not np.allclose(s.apply(x), Sketch(n, 512, seed=4).apply(x))
    # one non-zero ±1 per coordinate: a unit vector lands on bucket i mod p with its sign
    e = np.zeros(n)
    e[n - 1] = 1.0
    out = s.apply(e)
    assert np.count_nonzero(out) == 1 and abs(out[(n - 1) % 512]) == 1.0
    # E‖Sx‖² = ‖x‖²: over 200 seeds the mean is within 3 standard errors
    z = rng.standard_normal(20_000)
    ratios = [np.sum(Sketch(z.size, 64, seed=k).apply(z) ** 2) / np.sum(z**2) for k in range(200)]
    assert abs(np.mean(ratios) - 1.0) < 3 * np.std(ratios) / np.sqrt(200)


def test_sketch_of_a_bfloat16_snapshot_equals_that_of_its_values() -> None:
    values = torch.randn(100_003).to(torch.bfloat16)
    bits = encode(values.view(torch.int16).numpy().view(np.uint16), "bfloat16")
    s = Sketch(values.numel(), 256)
    np.testing.assert_array_equal(s.apply(bits, "bfloat16"), s.apply(values.float().numpy().astype(np.float64)))


def test_small_model_is_kept_whole() -> None:
    x = np.arange(10.0)
    s = Sketch(10, 512)
    assert s.exact and s.flops == 0
    np.testing.assert_array_equal(s.apply(x), x)


def test_live_eigenvalues_of_a_planted_system_of_a_million_weights() -> None:
    """N = 1M, a complex pair and two real decays: every live fit has them to 1e-6 from a 512-number sketch."""
    lam = np.array([0.97 * np.exp(0.1j), 0.97 * np.exp(-0.1j), 0.9, 0.8])
    data = planted(1_000_000, lam, 30)  # 240 MB of float64
    monitor = Monitor(data.shape[1], LiveOptions(window=20, every=10, sketch=512, forecast=3), dtype="float64")
    fits = [f for k, x in enumerate(data) if (f := monitor.observe(x, k)) is not None]
    assert [f.step for f in fits] == [9, 19, 29]
    for fit in fits:
        assert fit.rank == 4
        found = sorted(fit.eigenvalues, key=lambda z: (round(abs(z), 6), z.imag))
        want = sorted(lam, key=lambda z: (round(abs(z), 6), z.imag))
        np.testing.assert_allclose(found, want, atol=1e-6)
        assert fit.leading_modulus == pytest.approx(0.97, abs=1e-6)
        assert fit.unstable == 0
        assert fit.timescale == pytest.approx(-1 / np.log(0.97), rel=1e-5)  # slowest decay, in steps
        assert fit.forecast_error < 1e-6  # a linear system is forecast exactly
    assert np.isnan(fits[0].transition) and fits[1].transition < 1e-6


def test_transition_score_peaks_at_a_planted_change_of_dynamics() -> None:
    """Eigenvalues switch half-way through: the largest transition is the first fit whose window holds the change."""
    before = planted(20_000, np.array([0.98, 0.9, 0.7]), 60, seed=1)
    after = planted(20_000, np.array([0.8 * np.exp(0.4j), 0.8 * np.exp(-0.4j), 0.95]), 60, seed=2)
    data = np.vstack([before, before[-1] + after - after[0]])
    monitor = Monitor(data.shape[1], LiveOptions(window=20, every=5, sketch=256, forecast=0), dtype="float64")
    fits = [f for k, x in enumerate(data) if (f := monitor.observe(x, k)) is not None]
    scores = np.array([f.transition for f in fits])
    top = fits[int(np.nanargmax(scores))]
    assert top.first_step < 60 <= top.step, (top.first_step, top.step)
    assert np.nanmax(scores) > 10 * np.nanmedian(scores)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A tanh MLP (49 665 weights) trained 60 steps with the live monitor on (sketch 512 and kept whole)."""
    root = tmp_path_factory.mktemp("live")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 128), torch.nn.Tanh(),
                                torch.nn.Linear(128, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(512, 64)
    y = torch.sin(x[:, :1])
    pytest.importorskip("tensorboard")
    options = LiveOptions(window=20, every=10, sketch=512, forecast=3, tensorboard=str(root / "tb"))
    with traj.Recorder(root / "run.zarr", model, live=options) as rec:
        rec.attach(opt)
        for _ in range(60):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
    return RunStore(root / "run.zarr"), rec.monitor.fits, root / "tb"


def test_live_fits_agree_with_traj_dmd_on_the_same_window(live_run) -> None:
    store, fits, _ = live_run
    full = [f for f in fits if f.snapshots == 20]
    assert len(full) == 5  # steps 20, 30, ..., 60
    exact = Monitor(store.n_params, LiveOptions(window=20, every=10, sketch=store.n_params, forecast=0))
    data = [store.snapshot(k) for k in range(store.n_snapshots)]
    whole = {f.step: f for k, x in enumerate(data) if (f := exact.observe(x, int(store.steps[k]))) is not None}
    for fit in full:
        k = int(np.searchsorted(store.steps, fit.step))
        offline = traj.dmd(store, window=(k - 19, k))
        # the leading eigenvalue from 512 numbers of 49 665, to 1e-3 (measured: <= 6e-5)
        assert abs(fit.eigenvalues[0] - offline.eigenvalues[0]) < 1e-3
        # the snapshots kept whole: the same window's exact DMD, the same rank and eigenvalues
        kept = whole[fit.step]
        assert kept.rank == offline.rank
        np.testing.assert_allclose(kept.eigenvalues, offline.eigenvalues, atol=1e-9)


def test_live_numbers_are_series_in_the_store_and_scalars_in_tensorboard(live_run) -> None:
    store, fits, tb = live_run
    names = store.metric_names
    for name in ("live.leading_modulus", "live.unstable", "live.timescale", "live.forecast_error", "live.transition"):
        assert name in names
    series = store.metric("live.leading_modulus")
    at = {int(s): float(v) for s, v in zip(store.steps, series, strict=True) if np.isfinite(v)}
    assert at == pytest.approx({f.step: f.leading_modulus for f in fits})
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()
    scalars = {e.step: e.value for e in events.Scalars("live/leading_modulus")}
    assert scalars == pytest.approx({f.step: f.leading_modulus for f in fits}, rel=1e-6)


@pytest.mark.parametrize("options, parameter", [({"window": 3}, "window"), ({"every": 0}, "every"),
                                                 ({"sketch": 0}, "sketch"), ({"forecast": 10, "window": 20}, "forecast"),
                                                 ({"rank": "most"}, "rank")])
def test_bad_options_name_the_option(options, parameter) -> None:
    with pytest.raises(ParameterError) as info:
        LiveOptions(**options)
    assert info.value.parameter == parameter


@pytest.mark.parametrize("sizes", [(5, 5), (9, 9), (4, 6)])
def test_transition_distance_is_conjugacys_w1(sizes) -> None:
    from traj.analysis.conjugacy import wasserstein
    from traj.live import spectral_distance

    rng = np.random.default_rng(sum(sizes))
    a, b = (rng.standard_normal(n) + 1j * rng.standard_normal(n) for n in sizes)
    assert spectral_distance(a, b) == pytest.approx(wasserstein(a, b), rel=1e-12)
