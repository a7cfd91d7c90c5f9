"""Recorder.capture / submit: θ taken at one moment, written with metrics known only later."""

import numpy as np
import pytest
import torch
from torch import nn

from traj import Recorder, RunStore
from traj.errors import LayoutMismatchError, RecorderError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _theta(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def test_capture_keeps_the_weights_of_its_moment(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    expected_theta, expected_grads = [], []
    with Recorder(tmp_path / "r.zarr", model, grads=True, record_initial=False) as rec:
        for step in (1, 2, 3):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            pending = rec.capture()  # after the step, before zero_grad: this step's gradients
            expected_theta.append(_theta(model))
            expected_grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
            opt.zero_grad()
            with torch.no_grad():  # the model moves on before the metrics arrive
                for p in model.parameters():
                    p.add_(1.0)
            rec.log(acc=0.5)
            rec.submit(pending, step=10 * step, epoch=step // 2, loss=float(step), metrics={"lr": 0.1 * step})
            with pytest.raises(RecorderError, match="already submitted"):
                rec.submit(pending, step=100 + step)
    store = RunStore(tmp_path / "r.zarr")
    np.testing.assert_array_equal(store.steps, [10, 20, 30])
    np.testing.assert_array_equal(store.epochs, [0, 1, 1])
    np.testing.assert_array_equal(store.read(), np.stack(expected_theta))
    np.testing.assert_array_equal(store.read(array="grads"), np.stack(expected_grads))
    np.testing.assert_array_equal(store.loss, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(store.metric("lr"), [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(store.metric("acc"), [0.5, 0.5, 0.5])


def test_capture_from_given_tensors(tmp_path):
    """A gathered state dict (tied or extra keys included) is written in the layout's order."""
    model = _model()
    state = {name: torch.full_like(p, float(k)) for k, (name, p) in enumerate(model.named_parameters())}
    state["extra.buffer"] = torch.zeros(7)
    grads = {"2.weight": torch.ones(2, 4)}
    with Recorder(tmp_path / "r.zarr", model, grads=True, record_initial=False) as rec:
        rec.submit(rec.capture(state, grads), step=0)
        with pytest.raises(RecorderError, match="no tensor named '2.bias'"):
            rec.capture({k: v for k, v in state.items() if k != "2.bias"})
        with pytest.raises(LayoutMismatchError, match="'0.bias' has 5 elements"):
            rec.capture({**state, "0.bias": torch.zeros(5)})
    store = RunStore(tmp_path / "r.zarr")
    expected = np.concatenate([np.full(p.numel(), float(k)) for k, p in enumerate(model.parameters())])
    np.testing.assert_array_equal(store.read()[0], expected)
    g = store.read(array="grads")[0]
    w2 = store.layout["2.weight"].columns
    np.testing.assert_array_equal(g[w2], 1.0)
    assert np.isnan(np.delete(g, np.arange(w2.start, w2.stop))).all()
