"""Prediction-based Koopman acceleration (the baselines of kga-replay): the jump on planted systems,
the wrapper's protocol, and the replay's runs, stores and report."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from traj.errors import TrajError
from traj.training.jump import KoopmanJump, dmd_jump

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _planted(n=40, h=8, seed=0):
    """θ_{k+1} = A θ_k on a 6-dim subspace of R^n; eigenvalues 0.95e^{±0.2i}, 0.9, 0.7, 0.5, −0.3 (non-normal)."""
    rng = np.random.default_rng(seed)
    core = np.zeros((6, 6))
    core[:2, :2] = 0.95 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    core[2:, 2:] = np.diag([0.9, 0.7, 0.5, -0.3])
    s = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    b = np.linalg.qr(rng.standard_normal((n, 6)))[0]
    a = b @ (s @ core @ np.linalg.inv(s)) @ b.T
    theta = [b @ rng.standard_normal(6)]
    for _ in range(h - 1):
        theta.append(a @ theta[-1])
    return np.stack(theta, axis=1), a


def _relative(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


@pytest.mark.parametrize("tau", [1, 3, 10])
def test_jump_lands_on_the_planted_operators_forecast(tau):
    d, a = _planted()
    jump, op = dmd_jump(d, tau)
    assert op.rank == 6
    np.testing.assert_allclose(np.sort(np.abs(op.eigenvalues)), [0.3, 0.5, 0.7, 0.9, 0.95, 0.95], rtol=1e-9)
    target = np.linalg.matrix_power(a, tau) @ d[:, -1]
    assert _relative(d[:, -1] + jump, target) < 1e-8  # measured 2.8e-12, 1.7e-11, 5.3e-10


def test_jump_from_float32_snapshots_and_of_horizon_zero():
    d, a = _planted()
    jump, _ = dmd_jump(d.astype(np.float32).astype(np.float64), 3)
    assert _relative(d[:, -1] + jump, np.linalg.matrix_power(a, 3) @ d[:, -1]) < 1e-5  # measured 8.5e-7
    jump, _ = dmd_jump(d, 0)
    assert not jump.any()


@pytest.mark.parametrize("tau", [1, 3, 10])
def test_jump_of_an_affine_system_keeps_its_fixed_point(tau):
    """θ_{k+1} = c + A(θ_k − c): one more direction (λ = 1 holds c); lands on c + A^τ(θ_last − c)."""
    d, a = _planted()
    c = np.random.default_rng(1).standard_normal(d.shape[0])
    theta = [c + d[:, 0]]
    for _ in range(8):
        theta.append(c + a @ (theta[-1] - c))
    d = np.stack(theta, axis=1)
    jump, op = dmd_jump(d, tau)
    assert op.rank == 7 and np.isclose(np.abs(op.eigenvalues).max(), 1.0, atol=1e-9)
    assert _relative(d[:, -1] + jump, c + np.linalg.matrix_power(a, tau) @ (d[:, -1] - c)) < 1e-7  # measured ≤ 4.1e-9


def _train(mode=None, epochs=6, **kwargs):
    """A small least-squares model trained by SGD, plainly (mode None) or wrapped in a KoopmanJump;
    θ at the start and at every epoch end (after any jump)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randn(64, 2)
    model = nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    wrapper = None if mode is None else KoopmanJump(optimizer, mode=mode, **kwargs)
    step = optimizer if wrapper is None else wrapper
    flat = lambda: torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()  # noqa: E731
    history = [flat()]
    for _ in range(epochs):
        for i in range(0, 64, 16):
            step.zero_grad()
            nn.functional.mse_loss(model(x[i : i + 16]), y[i : i + 16]).backward()
            step.step()
        if wrapper is not None:
            wrapper.epoch_end()
        history.append(flat())
    return np.array(history), wrapper


def test_predict_wrapper_jumps_to_the_forecast_of_its_window():
    plain, _ = _train(None, epochs=4)
    jumped, wrapper = _train("predict", epochs=4, window=5, horizon=3)
    assert wrapper.log.epochs == [4] and wrapper.log.taken == [True]
    np.testing.assert_array_equal(jumped[:4], plain[:4])  # no jump before the window (θ0 … θ4) fills
    window = plain.T.astype(np.float64)
    expected = (window[:, -1] + dmd_jump(window, 3)[0]).astype(np.float32)
    np.testing.assert_array_equal(jumped[4], expected)
    assert 0 < wrapper.log.relative_size[0] < 1


def test_bootstrap_that_rejects_every_jump_repeats_the_plain_run_bit_for_bit():
    plain, _ = _train(None, epochs=9)
    kept, wrapper = _train("bootstrap", epochs=9, window=3, horizon=5, validate=lambda: {"loss": 1.0})
    assert wrapper.log.epochs == [2, 4, 6, 8] and not any(wrapper.log.taken)
    assert kept.tobytes() == plain.tobytes()


def test_bad_jump_options():
    w = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.1)
    for kwargs, message in (({"window": 2}, "^window must be an integer from 3"),
                            ({"window": 5, "every": 3}, "^every must be at least 4 epochs, the epochs a window of 5 snapshots takes to fill"),
                            ({"horizon": -1}, "^horizon must be an integer from 1"), ({"mode": "guess"}, "^mode"),
                            ({"mode": "bootstrap"}, "validation callback")):
        with pytest.raises(TrajError, match=message):
            KoopmanJump(opt, [w], **kwargs)


def test_kga_replay_with_prediction_baselines_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from traj.cli.app import app
    from traj.store import RunStore

    out = tmp_path / "kga"
    result = CliRunner().invoke(app, ["kga-replay", str(SAMPLE / "quadratic-mlp.zarr"), "--alpha", "0.25", "--epochs",
                                      "3", "--baseline", "predict,bootstrap", "--jump-window", "3", "--jump-horizon",
                                      "2", "--landscape", "--grid", "4", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    runs = {r["label"]: r for r in summary["runs"]}
    assert set(runs) == {"kga-alpha0.25", "predict", "bootstrap"}
    assert summary["options"]["jump"] == {"window": 3, "horizon": 2, "every": 2, "warmup": 2}
    predict, bootstrap = runs["predict"], runs["bootstrap"]
    assert predict["method"] == "predict" and predict["jumps"]["epochs"] == [2] and predict["jumps"]["taken"] == [True]
    assert bootstrap["jumps"]["epochs"] == [2]
    # the jump attempt is the same in both runs (same weights before it): bootstrap takes it iff the loss fell
    before, after = predict["jumps"]["val_loss_before"][0], predict["jumps"]["val_loss_after"][0]
    assert bootstrap["jumps"]["val_loss_after"] == [after] and bootstrap["jumps"]["taken"] == [after < before]
    # up to the jump, every run repeats the plain one
    assert predict["train_loss"][:2] == summary["plain"]["train_loss"][:2]
    assert predict["train_loss"][2] != summary["plain"]["train_loss"][2]
    store = RunStore(out / "predict.zarr")
    assert store.n_snapshots == 1 + 3 * 32 and store.recipe["koopman_jump"]["mode"] == "predict"
    marked = np.flatnonzero(store.metric("jump") == 1)
    np.testing.assert_array_equal(marked, [1 + 2 * 32])  # the first step snapshot after the jump
    assert {p.name for p in (out / "report").iterdir()} >= {"summary.json", "validation.png", "losses.png"}
    text = (out / "report" / "report.md").read_text()
    assert "## Jumps" in text and "| predict | 2 | yes |" in text
    assert summary["config"]["epochs"] == 3  # what was trained, not the recorded run's 10
    assert "baselines predict, bootstrap (window 3, horizon 2, every 2, warmup 2)" in text
    assert "{" not in text.split("## ")[0]  # the options as prose, not a Python dict
    # every run in one plane of the loss landscape
    landscape = summary["landscape"]
    assert [r["label"] for r in landscape["runs"]] == ["plain", "kga-alpha0.25", "predict", "bootstrap"]
    assert landscape["runs"][0]["store"] == str(out / "plain.zarr") and np.array(landscape["loss"]).shape == (4, 4)
    plain_xy, bootstrap_xy = (np.array(landscape["runs"][k]["coordinates"]) for k in (0, 3))
    if not bootstrap["jumps"]["taken"][0]:  # a bootstrap run that kept no jump is the plain run
        np.testing.assert_allclose(bootstrap_xy, plain_xy, atol=1e-9)
    assert (out / "report" / "landscape.png").exists() and "## Loss landscape" in text


def test_kga_replay_refuses_bad_baseline_options(tmp_path):
    from typer.testing import CliRunner

    from traj.cli.app import app

    for args, flag in ((["--baseline", "magic"], "--baseline"),
                       (["--baseline", "predict", "--jump-every", "1"], "--jump-every must be at least 4 epochs"),
                       (["--baseline", "predict", "--jump-warmup", "2"], "--jump-warmup must be at least 4 epochs"),
                       (["--baseline", "bootstrap", "--jump-window", "2"], "--jump-window"),
                       (["--jump-horizon", "3"], "--jump-horizon sets the prediction-based baselines"),
                       (["--jump-window", "4", "--jump-every", "5"], "--jump-every, --jump-window set the")):
        result = CliRunner().invoke(app, ["kga-replay", str(SAMPLE / "quadratic-mlp.zarr"), *args,
                                          "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and flag in result.stderr, result.output
        assert not (tmp_path / "o").exists()


def test_no_jump_at_the_last_epoch_and_a_horizon_of_at_least_one():
    """A jump after the last epoch would be logged as taken while the run ends before it (found by a
    new user: "2 of 2 jumps taken" on an 8-epoch run, the final weights those before the second)."""
    model = torch.nn.Linear(3, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    jumper = KoopmanJump(opt, window=3, horizon=2, every=2, warmup=2, last_epoch=4)
    for _ in range(4):
        with torch.no_grad():
            model.weight.mul_(0.9)
        jumper.epoch_end()
    assert jumper.log.epochs == [2]  # epoch 4 (the last) is not attempted
    with pytest.raises(TrajError, match="^horizon must be"):
        KoopmanJump(opt, horizon=0)


def test_state_dict_resumes_a_jumping_run_exactly(tmp_path):
    """Checkpoint mid-run (torch.save, weights_only load), resume in a fresh wrapper: the same jumps and weights
    as the run that was never interrupted; the base optimizer's momentum comes back too."""

    def run(epochs, resume_from=None, save_at=None):
        torch.manual_seed(0)
        model = nn.Linear(6, 1)
        x, y = torch.randn(64, 6, generator=torch.Generator().manual_seed(1)), torch.randn(64, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        jumper = KoopmanJump(opt, window=3, horizon=2, every=2)
        start = 0
        if resume_from is not None:
            state = torch.load(resume_from, weights_only=True)
            model.load_state_dict(state["model"])
            jumper.load_state_dict(state["opt"])
            start = jumper.epoch
        for epoch in range(start, epochs):
            for _ in range(4):
                jumper.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                jumper.step()
            jumper.epoch_end()
            if save_at == epoch + 1:
                torch.save({"model": model.state_dict(), "opt": jumper.state_dict()}, tmp_path / "ckpt.pt")
        return model, jumper

    whole, whole_jumper = run(9)
    run(5, save_at=5)
    resumed, resumed_jumper = run(9, resume_from=tmp_path / "ckpt.pt")
    assert whole_jumper.log.epochs == resumed_jumper.log.epochs == [2, 4, 6, 8] and all(whole_jumper.log.taken)
    assert whole_jumper.log.relative_size == resumed_jumper.log.relative_size
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    other = KoopmanJump(torch.optim.SGD(nn.Linear(3, 1).parameters(), lr=0.1))
    with pytest.raises(TrajError, match="holds jump history of 7 weights; this wrapper jumps 4"):
        other.load_state_dict(resumed_jumper.state_dict())


def test_a_baseline_that_never_jumped_says_its_comparison_means_nothing():
    from traj.training import JumpRecord, ReplayComparison, ReplayRun

    def run(method, jumps):
        return ReplayRun(method, 0.0, "x.zarr", (1.0, 0.5), (1.0, 0.6), None, (1.0, 1.0), (), 0.0, 0, method, jumps)

    never = JumpRecord((), (), (), (), (), (), (), ())
    once = JumpRecord((2,), (True,), (0.5,), (0.4,), (0.9,), (0.1,), (0.99,), ())
    note = ReplayComparison.of(run("predict", never), run("plain", None)).note
    assert note.startswith("predict never attempted a jump") and "2 epoch(s) trained" in note
    assert ReplayComparison.of(run("predict", once), run("plain", None)).note is None
