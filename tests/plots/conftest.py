"""Small real results shared by the plot and report tests (built once per module)."""

import numpy as np
import pytest

from tests.conftest import planted_linear_system, planted_modes, write_store
from traj.analysis.cmd import cmd
from traj.analysis.dmd import dmd
from traj.analysis.prune import prune
from traj.store import Layout, StoreWriter


@pytest.fixture(scope="module")
def dmd_result(tmp_path_factory):
    data, _ = planted_linear_system(n_params=600, n_snapshots=30)
    layout = Layout.from_shapes([("a.weight", (20, 20)), ("b.weight", (200,))], prunable=["a.weight"])
    path = write_store(tmp_path_factory.mktemp("dmd") / "d.zarr", data, layout=layout)
    return dmd(path, rank=6, forecast=5, n_samples=4, per_layer=True)


@pytest.fixture(scope="module")
def prune_result(tmp_path_factory):
    """A trajectory converging to a fixed point through real decaying modes (KMP, KGP, GMP)."""
    rng = np.random.default_rng(0)
    layout = Layout.from_shapes([("fc.weight", (20, 30)), ("fc.bias", (20,))], prunable=["fc.weight"])
    theta_star, modes = rng.standard_normal(layout.n_params), rng.standard_normal((2, layout.n_params))
    path = tmp_path_factory.mktemp("prune") / "p.zarr"
    with StoreWriter(path, layout, dtype="float64") as writer:
        for k in range(20):
            writer.append(theta_star + 0.9**k * modes[0] + 0.6**k * modes[1], step=k, epoch=0)
    return prune(path, epoch=0, methods=["kmp", "kgp", "gmp"], compressions=[2, 4, 8], evaluate=False)


@pytest.fixture(scope="module")
def cmd_result(tmp_path_factory):
    data, *_ = planted_modes(n_params=3000, n_snapshots=25, n_modes=3)
    path = write_store(tmp_path_factory.mktemp("cmd") / "c.zarr", data)
    return cmd(path, modes=3, samples=300)
