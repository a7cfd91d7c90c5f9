"""Online CMD during training (LiveOptions(cmd_modes=M)): the model written at train end against traj cmd --online."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import traj
from traj.analysis.cmd import load
from traj.analysis.cmd_online import cmd_online
from traj.errors import ParameterError, UnsafeOutputError
from traj.live import LiveOptions
from traj.store import RunStore


def _train(path, steps, options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1))  # 4 353 weights
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(256, 32)
    y = torch.sin(x[:, :1])
    with traj.Recorder(path, model, live=options) as rec:
        rec.attach(opt)
        for _ in range(steps):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
    return rec


def test_live_cmd_through_a_recorder_equals_the_online_cmd_of_the_store(tmp_path) -> None:
    options = LiveOptions(window=12, every=5, cmd_modes=4, cmd_warmup=8, cmd_samples=300)
    rec = _train(tmp_path / "run.zarr", 40, options)
    out = tmp_path / "run-cmd"  # the default: beside the store
    summary = rec.monitor.cmd.summary
    assert summary is not None and rec.monitor.cmd.note is None
    assert summary.model_path == str(out / "cmd.zarr") and summary.snapshots == 41  # the initial one too
    written = json.loads((out / "summary.json").read_text())
    assert written["online"] is True and written["warmup_steps"] == [0, 7]
    live = load(out / "cmd.zarr")
    # the same warm-up, sample and sums over the recorded store: one model
    offline = cmd_online(RunStore(tmp_path / "run.zarr"), modes=4, samples=300, warmup=8)
    np.testing.assert_array_equal(summary.reference_indices, offline.reference_indices)
    np.testing.assert_array_equal(live.labels, offline.model.labels)
    np.testing.assert_allclose(live.a, offline.model.a, rtol=0, atol=1e-10)
    np.testing.assert_allclose(live.b, offline.model.b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(live.references, offline.model.references, rtol=0, atol=0)
    assert summary.relative_error == pytest.approx(offline.relative_error, rel=1e-9)
    assert summary.relabelled == offline.relabelled
    # the model reconstructs the run: its relative error is the one reported
    store = RunStore(tmp_path / "run.zarr")
    data = np.stack([store.snapshot(k) for k in range(store.n_snapshots)])
    rebuilt = live.reconstruct(np.arange(store.n_params))
    assert np.linalg.norm(rebuilt - data) / np.linalg.norm(data) == pytest.approx(summary.relative_error, rel=1e-5)


def test_a_run_shorter_than_the_warmup_is_fitted_on_what_it_has(tmp_path) -> None:
    out = tmp_path / "elsewhere"
    rec = _train(tmp_path / "run.zarr", 5, LiveOptions(window=4, every=2, forecast=0, cmd_modes=2, cmd_warmup=50,
                                                       cmd_out=str(out)))
    summary = rec.monitor.cmd.summary
    assert summary.snapshots == 6 and summary.warmup_steps == (0, 5)
    assert load(out / "cmd.zarr").labels.size == 4353


def test_options_are_checked_before_training(tmp_path) -> None:
    with pytest.raises(ParameterError, match="cmd_warmup"):
        LiveOptions(cmd_modes=3, cmd_warmup=2)
    with pytest.raises(ParameterError, match="cmd_modes"):
        LiveOptions(cmd_modes=0)
    (tmp_path / "run-cmd").mkdir()
    (tmp_path / "run-cmd" / "mine.txt").write_text("a user's file")
    with pytest.raises(UnsafeOutputError, match="run-cmd"):
        _train(tmp_path / "run.zarr", 3, LiveOptions(window=4, forecast=0, cmd_modes=2))
    assert (tmp_path / "run-cmd" / "mine.txt").read_text() == "a user's file"


def test_nan_weights_leave_a_note_not_an_error(tmp_path) -> None:
    # the Recorder closes the monitor before the store: an error there would discard an --overwrite run
    from traj.analysis.cmd_live import LiveCMD
    from traj.store import Layout

    rng = np.random.default_rng(0)
    data = rng.standard_normal((12, 200)).cumsum(axis=0).astype(np.float32)
    data[9, 17] = np.nan
    live = LiveCMD(200, Layout.from_shapes([("w", (200,))]), "float32", modes=2, warmup=5, out=tmp_path / "o")
    for k, row in enumerate(data):
        live.observe(row, k)
    assert live.close() is None and "NaN or Inf" in live.note
    assert not (tmp_path / "o").exists()


def test_bfloat16_snapshots_are_fitted_by_their_values(tmp_path) -> None:
    # a bfloat16 store keeps bit patterns (uint16): the live sums see the values they stand for
    from traj.analysis.cmd_live import LiveCMD
    from traj.store import Layout
    from traj.store.dtypes import encode

    rng = np.random.default_rng(1)
    values = torch.tensor(rng.standard_normal((15, 500)).cumsum(axis=0)).to(torch.bfloat16)
    bits = [encode(row.view(torch.int16).numpy().view(np.uint16), "bfloat16") for row in values]
    exact = values.double().numpy()
    layout = Layout.from_shapes([("w", (500,))])
    fitted = []
    for name, rows, dtype in (("bf16", bits, "bfloat16"), ("f64", exact, "float64")):
        live = LiveCMD(500, layout, dtype, modes=3, warmup=6, out=tmp_path / name)
        for k, row in enumerate(rows):
            live.observe(row, k)
        live.close()
        fitted.append(load(tmp_path / name / "cmd.zarr"))
    np.testing.assert_array_equal(fitted[0].labels, fitted[1].labels)
    np.testing.assert_allclose(fitted[0].a, fitted[1].a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fitted[0].b, fitted[1].b, rtol=0, atol=1e-12)
