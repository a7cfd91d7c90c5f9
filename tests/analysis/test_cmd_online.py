"""Online CMD (docs/methods.md §2.6): against offline CMD on planted systems and on digits-cnn, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import planted_modes, write_store
from traj.analysis.cmd import adjusted_rand_index, cmd, load
from traj.analysis.cmd_online import ReferenceSums, WeightSums, cmd_online
from traj.cli.app import app
from traj.errors import ParameterError
from traj.store import RunStore

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _contingency(x, y):
    table = np.zeros((x.max() + 1, y.max() + 1), dtype=np.int64)
    np.add.at(table, (x, y), 1)
    return table


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_online_equals_offline_when_the_warmup_is_the_window(tmp_path, noise):
    # every weight sampled (N <= 4096): both pick the same references, so the models are one model
    data, *_ = planted_modes(n_params=3000, n_snapshots=40, n_modes=4, noise=noise, seed=1)
    store = RunStore(write_store(tmp_path / "p.zarr", data))
    offline = cmd(store, modes=4)
    online = cmd_online(store, modes=4, warmup=40)
    np.testing.assert_array_equal(online.reference_indices, offline.reference_indices)
    np.testing.assert_array_equal(online.model.labels, offline.model.labels)
    np.testing.assert_allclose(online.model.a, offline.model.a, rtol=0, atol=1e-10)
    np.testing.assert_allclose(online.model.b, offline.model.b, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(online.mode_sizes, offline.mode_sizes)
    assert online.relative_error == pytest.approx(offline.relative_error, rel=1e-6, abs=1e-7)
    assert online.relabelled == 0  # the warm-up's end is the window's end


def test_a_short_warmup_recovers_the_planted_modes_exactly(tmp_path):
    data, labels, a, b, _ = planted_modes(n_params=20_000, n_snapshots=40, n_modes=5, seed=2)
    store = RunStore(write_store(tmp_path / "p.zarr", data))
    online = cmd_online(store, modes=5, samples=500, warmup=6)
    assert online.warmup == (0, 5)
    assert adjusted_rand_index(_contingency(labels, np.asarray(online.model.labels))) == 1.0
    # the affine maps are exact: a_fit = a / a_ref and b_fit = b - a_fit·b_ref
    ref = online.reference_indices[online.model.labels]
    np.testing.assert_allclose(online.model.a * a[ref], a, rtol=1e-9)
    np.testing.assert_allclose(online.model.b, b - online.model.a * b[ref], atol=1e-9)
    assert online.relative_error < 1e-6 and online.relabelled == 0


def test_sums_added_in_pieces_equal_the_closed_form(rng):
    # snapshots added one at a time, in column pieces: the least-squares a, b of each weight on its label's reference
    t, n, m = 25, 300, 3
    refs = rng.standard_normal((t, m)).cumsum(axis=0)
    data = rng.standard_normal((t, n)).cumsum(axis=0)
    ref_sums, sums = ReferenceSums(m), WeightSums(n, m)
    sums.set_first(data[0])  # w(0) of every weight before the first snapshot comes in pieces
    for k in range(t):
        rho = ref_sums.update(refs[k : k + 1])
        for lo in range(0, n, 128):
            sums.update(data[k : k + 1, lo : lo + 128], rho, lo)
    part = sums.solve(ref_sums.state())
    centered, rc = data - data.mean(0), refs - refs.mean(0)
    corr = np.abs(rc.T @ centered) / np.linalg.norm(rc, axis=0)[:, None] / np.linalg.norm(centered, axis=0)
    np.testing.assert_array_equal(part["labels"], corr.argmax(axis=0))
    for i in range(0, n, 37):
        r = refs[:, part["labels"][i]]
        coef, *_ = np.linalg.lstsq(np.stack([r, np.ones(t)], axis=1), data[:, i], rcond=None)
        assert part["a"][i] == pytest.approx(coef[0], rel=1e-10, abs=1e-12)
        assert part["b"][i] == pytest.approx(coef[1], rel=1e-10, abs=1e-10)
        fit = coef[0] * r + coef[1]
        assert part["sse"][i] == pytest.approx(((data[:, i] - fit) ** 2).sum(), rel=1e-8)


def test_digits_cnn_error_is_within_ten_percent_of_offline():
    # README's CMD section quotes these numbers (traj cmd sample_data/digits-cnn.zarr --modes 5 [--online])
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    offline = cmd(store, modes=5)
    online = cmd_online(store, modes=5)
    assert online.relative_error == pytest.approx(0.0589, abs=5e-4)
    assert offline.relative_error == pytest.approx(0.0639, abs=5e-4)
    assert abs(online.relative_error / offline.relative_error - 1) <= 0.10


def test_refused_options(tmp_path):
    data, *_ = planted_modes(n_params=500, n_snapshots=12, n_modes=2, seed=0)
    store = RunStore(write_store(tmp_path / "p.zarr", data))
    with pytest.raises(ParameterError, match="warmup"):
        cmd_online(store, modes=2, warmup=13)
    with pytest.raises(ParameterError, match="warmup"):
        cmd_online(store, modes=2, warmup=2)
    from traj.analysis.cmd import CMDParams
    from traj.analysis.cmd_online import fit_cmd_online

    with pytest.raises(ParameterError, match="subsample.*no online form"):
        fit_cmd_online(store, CMDParams.checked(modes=2, subsample=2))


def test_cli_online_writes_the_model_and_says_online(tmp_path):
    data, labels, *_ = planted_modes(n_params=2000, n_snapshots=30, n_modes=3, noise=0.01, seed=4)
    path = write_store(tmp_path / "p.zarr", data)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["cmd", str(path), "--modes", "3", "--online", "--warmup", "10", "--out",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["online"] == {"warmup": [0, 9], "relabelled": summary["online"]["relabelled"]}
    assert json.loads((out / "summary.json").read_text())["online"]["warmup"] == [0, 9]
    for name in ("report.html", "corr_matrix.png", "mode_bands.png", "sample_fits.png"):
        assert (out / name).is_file()
    assert "Online CMD: references picked on the warm-up, snapshots 0..9" in (out / "report.md").read_text()
    model = load(out / "cmd.zarr")
    direct = cmd_online(RunStore(path), modes=3, warmup=10)
    np.testing.assert_array_equal(model.labels, direct.model.labels)
    np.testing.assert_allclose(model.a, direct.model.a, rtol=0, atol=1e-12)
    rebuilt = model.reconstruct(np.arange(2000))
    err = np.linalg.norm(rebuilt - data) / np.linalg.norm(data)
    assert err == pytest.approx(summary["relative_error"], rel=1e-6)
    bad = CliRunner().invoke(app, ["cmd", str(path), "--online", "--subsample", "2", "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "no online form" in bad.output


def test_cli_warmup_needs_online(tmp_path):
    data, *_ = planted_modes(n_params=300, n_snapshots=10, n_modes=2, seed=0)
    path = write_store(tmp_path / "p.zarr", data)
    result = CliRunner().invoke(app, ["cmd", str(path), "--warmup", "5", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--warmup is the warm-up of online CMD: it needs --online" in result.output
    assert not (tmp_path / "o").exists()
