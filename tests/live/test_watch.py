"""traj watch: follows a store while a Recorder with the live monitor writes it, read only, and stops at its end."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from typer.testing import CliRunner

import traj
from traj.cli.app import app
from traj.live import LiveOptions
from traj.live.watch import sparkline, watch_state

runner = CliRunner()


def _train(path, steps: int, pause: float = 0.0) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    with traj.Recorder(path, model, live=LiveOptions(window=8, every=4, sketch=64, forecast=1)) as rec:
        rec.attach(opt)
        for _ in range(steps):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            rec.log(loss.item())
            time.sleep(pause)


def test_watch_follows_a_run_and_stops_when_it_closes(tmp_path):
    path = tmp_path / "run.zarr"
    writer = threading.Thread(target=_train, args=(path, 40, 0.05))
    writer.start()
    for _ in range(200):  # until the store exists
        if (path / "zarr.json").exists():
            break
        time.sleep(0.05)
    result = runner.invoke(app, ["watch", str(path), "--interval", "0.2", "--html", str(tmp_path / "page"),
                                 "--timeout", "120"])
    writer.join()
    assert result.exit_code == 0, result.output
    assert "the run closed the store: 41 snapshot(s)" in result.output
    state = watch_state(path)
    assert state.closed and not state.writing and state.n_snapshots == 41
    page = (tmp_path / "page" / "index.html").read_text()
    assert "41 snapshot(s); the run has ended" in page and "http-equiv=refresh" not in page
    assert (tmp_path / "page" / "live.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_watch_once_shows_the_last_live_fit(tmp_path):
    path = tmp_path / "run.zarr"
    _train(path, 30)
    state = watch_state(path)
    # fits after every 4th snapshot from the 4th: snapshots 4, 8, ..., 28 -> indices 3, 7, ..., 27
    np.testing.assert_array_equal(state.fitted, np.arange(3, 31, 4))
    latest = state.latest()
    assert latest["step"] == float(state.steps[27])
    before = sorted(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file())
    result = runner.invoke(app, ["watch", str(path), "--once"])
    assert result.exit_code == 0, result.output
    assert f"at step {int(latest['step'])}: max |λ| {latest['leading_modulus']:.6f}" in result.output
    assert sorted(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()) == before  # read only


def test_watch_refuses_a_page_inside_the_store_and_a_missing_store(tmp_path):
    path = tmp_path / "run.zarr"
    _train(path, 5)
    result = runner.invoke(app, ["watch", str(path), "--html", str(path / "page")])
    assert result.exit_code == 2 and f"--html {path / 'page'} lies inside the input {path}" in result.output
    assert not (path / "page").exists()
    # a folder of the user's is never written into: refused before any work, its files as they were
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    result = runner.invoke(app, ["watch", str(path), "--once", "--html", str(mine)])
    assert result.exit_code == 2 and "was not written by traj" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in mine.iterdir()) == ["index.html"] and (mine / "index.html").read_text() == "my page"
    # traj watch's own page is replaced by the next watch
    for _ in range(2):
        result = runner.invoke(app, ["watch", str(path), "--once", "--html", str(tmp_path / "page")])
        assert result.exit_code == 0, result.output
    assert "6 snapshot(s); the run has ended" in (tmp_path / "page" / "index.html").read_text()
    assert sorted(p.name for p in (tmp_path / "page").iterdir()) == [".traj-output.json", "index.html", "live.png", "spectrum.png",
                                                                  "transitions.png"]
    result = runner.invoke(app, ["watch", str(tmp_path / "typo.zarr"), "--once"])
    assert result.exit_code == 2 and "no such store" in result.output


def test_sparkline():
    assert sparkline(np.array([0.0, np.nan, 1.0, 0.5])) == "▁█▅"
    assert sparkline(np.array([np.nan])) == ""
    assert sparkline(np.ones(3)) == "▁▁▁"


def test_the_page_figure_says_what_is_missing(tmp_path):
    from traj.plots.live import plot_live

    path = tmp_path / "run.zarr"
    _train(path, 5)  # logs a loss, no full live window yet beyond the first fit
    state = watch_state(path)
    texts = [t.get_text() for ax in plot_live(state).axes for t in ax.texts]
    assert "no loss logged" not in texts
    bare = watch_state(path).__class__(path=str(path), n_snapshots=state.n_snapshots, steps=state.steps,
                                        loss=np.full(state.n_snapshots, np.nan), live={})
    texts = [t.get_text() for ax in plot_live(bare).axes for t in ax.texts]
    assert texts == ["no loss logged", "no live fit yet", "no live fit yet"]


def test_stored_spectra_give_the_monitors_eigenvalues_and_transition_scores(tmp_path):
    """Each fit's leading eigenvalues are series live.eig_re.j / live.eig_im.j; the matrix built from them by the
    same spectral_distance has the stored transition scores on its subdiagonal (rank 3 here, under K = 16)."""
    from traj.live.watch import transition_matrix

    path = tmp_path / "run.zarr"
    _train(path, 30)
    state = watch_state(path)
    assert state.spectra.shape == (31, 16)
    ranks = state.live["rank"][state.fitted].astype(int)
    assert (ranks <= 16).all()
    for row, rank in zip(state.fitted, ranks, strict=True):
        assert state.spectrum(int(row)).size == rank
        assert np.all(np.isnan(state.spectra[row, rank:].real)) and np.all(np.isnan(state.spectra[row, rank:].imag))
    matrix = transition_matrix(state)
    np.testing.assert_array_equal(matrix.steps, state.steps[state.fitted])
    np.testing.assert_allclose(matrix.distances, matrix.distances.T)
    assert np.all(np.diag(matrix.distances) == 0)
    stored = state.live["transition"][state.fitted]
    np.testing.assert_allclose(np.diag(matrix.distances, -1), stored[1:], rtol=1e-12, atol=1e-15)
    assert transition_matrix(state, last=3).distances.shape == (3, 3)
