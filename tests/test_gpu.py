"""The CUDA paths: the Recorder on a CUDA model, and the torch backend on a CUDA device (issue 14).

Marked ``gpu``; they run wherever ``torch.cuda.is_available()`` and skip elsewhere.
"""

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import planted_linear_system, write_store
from traj import Recorder, RunStore
from traj.analysis.dmd import dmd
from traj.engine import Engine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_cuda_model_is_recorded_bit_exactly(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 2)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(32, 6, device="cuda"), torch.randn(32, 2, device="cuda")

    def theta():
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu().numpy().copy()

    def grad():
        return torch.cat([p.grad.detach().reshape(-1) for p in model.parameters()]).cpu().numpy().copy()

    history, grads = [theta()], []
    with Recorder(tmp_path / "r.zarr", model, grads=True) as rec:
        for _ in range(25):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            grads.append(grad())
            opt.step()
            rec.step(loss=loss.item())
            history.append(theta())
    store = RunStore(tmp_path / "r.zarr")
    np.testing.assert_array_equal(store.read(), np.stack(history))
    np.testing.assert_array_equal(store.read(rows=slice(1, 26), array="grads"), np.stack(grads))


def test_torch_cuda_backend_equals_numpy(tmp_path, rng):
    data = np.cumsum(rng.standard_normal((41, 5000)), axis=0).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    cpu, gpu = Engine(), Engine(backend="torch", device="cuda")
    groups = {"a": [slice(0, 1200)], "b": [slice(1000, 5000)]}
    for name, g in cpu.gram(store, groups=groups).items():
        np.testing.assert_allclose(gpu.gram(store, groups=groups)[name], g, rtol=1e-10, atol=1e-10 * np.abs(g).max())
    m = rng.standard_normal((40, 5))
    products = {"a": (slice(0, 40), slice(0, 40), m), "xty": (slice(0, 40), slice(1, 41), m)}
    (ours, trace), (theirs, their_trace) = gpu.gram_times(store, products), cpu.gram_times(store, products)
    assert trace == pytest.approx(their_trace, rel=1e-12)
    for name in products:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-10, atol=1e-10 * np.abs(theirs[name]).max())
    c = rng.standard_normal((41, 3)) + 1j * rng.standard_normal((41, 3))
    np.testing.assert_allclose(gpu.project(store, c), cpu.project(store, c), rtol=1e-10, atol=1e-9)
    picks = np.array([4999, 3, 1200, 3])
    np.testing.assert_array_equal(gpu.collect(store, picks), cpu.collect(store, picks))


def test_dmd_on_cuda_equals_numpy(tmp_path):
    data, eigenvalues = planted_linear_system(n_params=20_000)
    store = RunStore(write_store(tmp_path / "p.zarr", data))
    for method in ("gram", "randomized"):
        cpu = dmd(store, rank=6, method=method)
        gpu = dmd(store, rank=6, method=method, engine=Engine(backend="torch", device="cuda"))
        np.testing.assert_allclose(gpu.eigenvalues, cpu.eigenvalues, rtol=0, atol=1e-10)
