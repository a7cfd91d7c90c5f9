import numpy as np
import pytest
import torch
from torch import nn

from traj.errors import TrajError
from traj.training import KGA

H = torch.tensor([0.05, 3.3, 3.2, 3.1, 3.3, 3.0], dtype=torch.float64)  # one slow mode, the rest die in a step
LR = 0.3


def _least_squares(alpha, *, steps=26, interval=20, window=5, **kw):
    torch.manual_seed(0)
    w_star = torch.randn(6, dtype=torch.float64)
    w = nn.Parameter(torch.full((6,), 2.0, dtype=torch.float64))
    kga = KGA(torch.optim.SGD([w], lr=LR), [w], alpha=alpha, window=window, interval=interval, eps=0.01, **kw)
    errors = [(w.detach() - w_star).numpy().copy()]
    for _ in range(steps):
        kga.zero_grad()
        (0.5 * (H * (w - w_star) ** 2).sum()).backward()
        kga.step()
        errors.append((w.detach() - w_star).numpy().copy())
    return np.array(errors), kga


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_slow_mode_shrinks_faster_by_the_predicted_factor(alpha):
    """GD on a quadratic: the slow mode has λ = 1 − ηh; KGA multiplies its step by (1 + αλ)."""
    sgd, _ = _least_squares(0.0)
    kga, acc = _least_squares(alpha)
    lam = 1 - LR * 0.05
    assert acc.log.refits == 1 and acc.log.stable_modes == [1]
    for k in (20, 21, 24):
        ratio = (kga[k, 0] - kga[k + 1, 0]) / kga[k, 0] / ((sgd[k, 0] - sgd[k + 1, 0]) / sgd[k, 0])
        assert ratio == pytest.approx(1 + alpha * lam, rel=1e-7)
    assert abs(kga[-1, 0]) < abs(sgd[-1, 0])


def _mlp_run(optimizer_name, alpha, epochs=3, **kw):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    base = torch.optim.Adam(model.parameters(), lr=1e-2) if optimizer_name == "adam" else torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9)
    opt = KGA(base, alpha=alpha, window=3, **kw)
    for _ in range(epochs):
        for i in range(0, 64, 16):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
        opt.epoch_end()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy(), opt


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_alpha_zero_is_bit_identical_to_the_base_optimizer(name):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2) if name == "adam" else torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for i in range(0, 64, 16):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
    plain = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    wrapped, kga = _mlp_run(name, 0.0)
    assert wrapped.tobytes() == plain.tobytes()
    assert kga.log.refits >= 1 and kga.log.accelerated_steps == 0
    accelerated, _ = _mlp_run(name, 1.0)
    assert not np.array_equal(accelerated, plain)


def test_masked_weights_are_not_accelerated():
    """Norm masking: weights held near zero are masked; their steps equal the base optimizer's."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.cat([torch.zeros(3, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64)]))
    target = torch.tensor([0, 0, 0, 1.0, -1.0, 0.5], dtype=torch.float64)
    kga = KGA(torch.optim.SGD([w], lr=0.1), [w], alpha=2.0, window=3, interval=2, mask="norm", mask_eps=1e-6,
              mask_window=1)
    for _ in range(12):
        before = w.detach().clone()
        kga.zero_grad()
        (0.5 * ((w - target) ** 2).sum()).backward()
        grad = w.grad.detach().clone()
        kga.step()
        if kga.masked[:3].all():
            np.testing.assert_array_equal((w.detach() - before)[:3].numpy(), (-0.1 * grad)[:3].numpy())
    assert kga.masked[:3].all() and not kga.masked[3:].any()
    assert kga.log.masked_fraction[-1] == pytest.approx(0.5)


def test_efficient_mode_keeps_only_reduced_coordinates():
    _, full = _mlp_run("sgd", 1.0, epochs=4)
    _, eff = _mlp_run("sgd", 1.0, epochs=4, efficient=True)
    n = full.n_params
    assert full.stored_snapshot_floats == 3 * n
    assert eff.basis is not None and eff.stored_snapshot_floats == 3 * eff.basis.shape[1] < n
    assert eff.log.refits == full.log.refits == 3  # the first epoch end has only 2 snapshots


def test_bad_options():
    w = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.1)
    for kwargs, message in (({"mask": "magic"}, "mask"), ({"window": 2}, "window"), ({"interval": 0}, "interval"),
                            ({"alpha": -1}, "alpha")):
        with pytest.raises(TrajError, match=message):
            KGA(opt, [w], **kwargs)


def test_kga_replay_cli_end_to_end(tmp_path):
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from traj.cli.app import app
    from traj.store import RunStore

    sample = Path(__file__).resolve().parents[2] / "sample_data"
    out = tmp_path / "kga"
    result = CliRunner().invoke(app, ["kga-replay", str(sample / "quadratic-mlp.zarr"), "--alpha", "0,1", "--epochs", "4",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    plain = summary["plain"]
    assert len(plain["train_loss"]) == 4 and len(summary["runs"]) == 2
    zero, one = summary["comparison"]
    assert zero["loss_difference"] == [0.0, 0.0, 0.0, 0.0]  # α = 0 replays the plain run exactly
    assert one["final_train_loss"] != plain["train_loss"][-1]
    for label in ("plain", "kga-alpha0", "kga-alpha1"):
        store = RunStore(out / f"{label}.zarr")
        assert store.recipe["name"] == "quadratic-mlp" and store.n_snapshots == 1 + 4 * 32
    assert RunStore(out / "plain.zarr").read().tobytes() == RunStore(out / "kga-alpha0.zarr").read().tobytes()
    assert {p.name for p in (out / "report").iterdir()} >= {"summary.json", "report.html", "losses.png", "alpha_sweep.png"}


def test_kga_replay_needs_a_recipe(tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    from traj.cli.app import app

    sample = Path(__file__).resolve().parents[2] / "sample_data"
    np.save(tmp_path / "x.npy", np.zeros((5, 3), dtype=np.float32))
    from traj.record.importers import import_npy

    import_npy(tmp_path / "x.npy", tmp_path / "x.zarr")
    result = CliRunner().invoke(app, ["kga-replay", str(tmp_path / "x.zarr"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--recipe" in result.stderr
    result = CliRunner().invoke(app, ["kga-replay", str(sample / "mirror-omd.zarr"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nothing to accelerate" in result.stderr
    result = CliRunner().invoke(app, ["kga-replay", str(sample / "quadratic-mlp.zarr"), "--alpha", "x"])
    assert result.exit_code == 2 and "--alpha" in result.stderr


@pytest.mark.parametrize("kind", ["kwm", "delta"])
def test_frozen_weights_are_masked_and_moving_ones_are_not(kind):
    """An input feature that is always zero leaves its first-layer weights frozen (zero gradient);
    started at 0 they have no dynamics at all: KWM (no non-neutral part) and delta masking take
    exactly those out of the acceleration."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].weight[:, 0] = 0.0
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    x[:, 0] = 0.0
    kga = KGA(torch.optim.SGD(model.parameters(), lr=0.05), alpha=0.5, window=4, mask=kind, mask_eps=1e-6,
              mask_window=2)
    for _ in range(6):
        for i in range(0, 64, 16):
            kga.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 16]), y[i : i + 16]).backward()
            kga.step()
        kga.epoch_end()
    frozen = np.zeros(kga.n_params, dtype=bool)
    frozen[np.arange(16) * 4] = True  # model[0].weight[:, 0], row-major (16, 4)
    np.testing.assert_array_equal(kga.masked, frozen)
    assert kga.log.masked_fraction[-1] == pytest.approx(16 / kga.n_params)
