"""Issue 24, analysis and CLI side: each case reproduces what a red team saw (a traceback, a hang, a
wrong answer given with exit 0, a message naming the wrong cause) and asserts what happens now."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app
from traj.engine import Engine
from traj.errors import NotApplicableError, ParameterError
from traj.store import Layout, RunStore, StoreWriter

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
Q = str(SAMPLE / "quadratic-mlp.zarr")
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def refused(result, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr, starting 'error:', holding every fragment; returns the line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ 1. N = 0
def zero_parameter_store(path: Path, t: int = 5) -> Path:
    """A store whose layout is one empty tensor: T snapshots of nothing."""
    with StoreWriter(path, Layout.from_shapes([("w", (0,))])) as writer:
        for k in range(t):
            writer.append(np.zeros(0, dtype=np.float32), step=k, epoch=0)
    return path


def test_info_describes_a_store_of_no_parameters(tmp_path):
    store = zero_parameter_store(tmp_path / "z.zarr")
    result = runner.invoke(app, ["info", str(store), "--json"])
    assert result.exit_code == 0, result.output  # was ZeroDivisionError in the NaN scan
    summary = json.loads(result.stdout)
    assert (summary["n_snapshots"], summary["n_params"], summary["bytes_raw"]) == (5, 0, 0)
    assert summary["nonfinite_snapshots"] == [] and summary["healthy"]
    text = runner.invoke(app, ["info", str(store)])
    assert text.exit_code == 0 and "parameters N = 0" in text.stdout and "n/a: no parameters" in text.stdout


@pytest.mark.parametrize("command", [["dmd"], ["dmd", "--method", "gram"], ["cmd"], ["conjugacy", "{s}"]])
def test_analyses_refuse_a_store_of_no_parameters_in_one_line(tmp_path, command):
    store = str(zero_parameter_store(tmp_path / "z.zarr"))
    args = [command[0], store, *[a.replace("{s}", store) for a in command[1:]], "--out", str(tmp_path / "o")]
    refused(runner.invoke(app, args), "z.zarr: the store holds no parameters (N = 0)")
    assert not (tmp_path / "o").exists()


def test_engine_refuses_a_store_of_no_parameters_at_the_door(tmp_path):
    store = RunStore(zero_parameter_store(tmp_path / "z.zarr"))
    assert list(store.iter_blocks()) == []  # no columns: no blocks (was a division by a zero width)
    for backend in ("numpy", "dask"):
        with pytest.raises(NotApplicableError, match=r"no parameters \(N = 0\)"):
            Engine(backend=backend, scheduler="sync").gram(store)


def test_report_on_a_store_of_no_parameters_says_why_each_analysis_is_skipped(tmp_path):
    store = zero_parameter_store(tmp_path / "z.zarr")
    result = runner.invoke(app, ["report", str(store), "--no-evaluate", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output  # was ZeroDivisionError
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["info"]["n_params"] == 0 and summary["dmd"] is None
    assert summary["skipped"]["dmd"] == "z.zarr: the store holds no parameters (N = 0): nothing to analyse"
    assert summary["skipped"]["cmd"] == "CMD correlates weights: the run has none"


# ------------------------------------------------------------------------------ 2. --device
@pytest.mark.parametrize(("device", "said"), [
    ("meta", "--device 'meta' holds no data (shapes only); the torch backend runs on cpu, cuda or cuda:N"),
    ("mps", "--device 'mps' is not supported: the torch backend runs on cpu, cuda or cuda:N"),
    ("xpu", "--device 'xpu' is not supported"),
    ("cuda:x", "--device 'cuda:x': unknown torch device; the torch backend runs on cpu, cuda or cuda:N"),
])
@pytest.mark.parametrize("command", ["dmd", "cmd", "prune"])
def test_unusable_torch_device_is_one_line_naming_the_devices_that_work(tmp_path, device, said, command):
    store = str(SAMPLE / ("digits-cnn.zarr" if command == "prune" else "quadratic-mlp.zarr"))
    args = [command, store, "--backend", "torch", "--device", device, "--method", "gram"] if command == "dmd" else \
        [command, store, "--backend", "torch", "--device", device]
    refused(runner.invoke(app, [*args, "--out", str(tmp_path / "o")]), said)


# ------------------------------------------------------------------------------ 3. a recipe of another model
@pytest.mark.parametrize(("args", "said"), [
    (["dmd", Q, "--evaluate", "--recipe", "mirror-descent"],
     "quadratic-mlp.zarr: the recipe 'mirror-descent' does not fit this store: its model has 50 parameters in "
     "1 tensor(s), the store 1185 in 6 (parameter 'x' where the store has '0.weight')"),
    (["dmd", Q, "--evaluate", "--recipe", "digits-cnn"],
     "the recipe 'digits-cnn' does not fit this store: its model has 3658 parameters"),
    (["landscape", str(SAMPLE / "mirror-omd.zarr"), "--recipe", "quadratic-mlp"],
     "mirror-omd.zarr: the recipe 'quadratic-mlp' does not fit this store: its model has 1185 parameters"),
    (["cmd", Q, "--recipe", "mirror-descent"], "the recipe 'mirror-descent' does not fit this store"),
])
def test_a_recipe_whose_model_does_not_fit_the_store_is_one_line(tmp_path, args, said):
    refused(runner.invoke(app, [*args, "--out", str(tmp_path / "o")]), said)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ 4. --scheduler
@pytest.mark.parametrize(("address", "said"), [
    ("tcp://[::1", "--scheduler 'tcp://[::1' is not a valid address (Invalid IPv6 URL); a dask.distributed "
                   "scheduler is given as tcp://host:port"),
    ("tcp://host:99999", "--scheduler 'tcp://host:99999' is not a valid address (Port out of range"),
    ("tcp://host:x", "is not a valid address (Port could not be cast"),
    ("tcp://:8786", "--scheduler 'tcp://:8786' is not a valid address"),
    ("tcp://a b:1", "holds white space"),
    ("tcp://h:1/path", "is not a valid address"),
])
def test_malformed_scheduler_address_is_refused_before_dask_sees_it(tmp_path, address, said):
    refused(runner.invoke(app, ["dmd", Q, "--backend", "dask", "--method", "gram", "--scheduler", address,
                                "--out", str(tmp_path / "o")]), said)


_CLI_WITH_SHORT_TIMEOUT = textwrap.dedent("""
    import sys
    import traj.engine.backends.dask as backend
    backend.CONNECT_TIMEOUT = 2.0
    from traj.cli.app import main
    sys.argv = ["traj", *sys.argv[1:]]
    main()
""")


@pytest.mark.parametrize("address", ["tcp://[::1", "tcp://127.0.0.1:{port}"])
def test_scheduler_that_is_not_there_ends_the_process_in_one_line(tmp_path, address):
    """A malformed address used to leave a traceback and a process that never exits; a port where
    something other than a dask scheduler listens (a plain socket that never answers) hung forever."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = address.format(port=listener.getsockname()[1])
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _CLI_WITH_SHORT_TIMEOUT, "dmd", Q, "--backend", "dask", "--method", "gram",
             "--scheduler", address, "--out", str(tmp_path / "o")],
            capture_output=True, text=True, timeout=90, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
        seconds = time.perf_counter() - t0
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    if "[" in address:
        assert "is not a valid address" in lines[0]
    else:
        assert f"no dask scheduler answered at {address} within 2 s" in lines[0]
        assert seconds < 45, seconds
    assert not (tmp_path / "o").exists()


def test_scheduler_address_check_accepts_what_dask_accepts():
    from traj.engine.backends.dask import check_scheduler_address

    for good in ("tcp://127.0.0.1:8786", "tcp://[::1]:8786", "tcp://scheduler", "tls://host.example:9000",
                 "inproc://10.0.0.1/123/1"):
        assert check_scheduler_address(good) == good
    with pytest.raises(ParameterError, match="port 0"):
        check_scheduler_address("tcp://127.0.0.1:0")


# ------------------------------------------------------------------------------ 8. --rank auto without a noise bulk
@pytest.mark.parametrize("rank", [2, 4, 6])
def test_dmd_rank_auto_keeps_every_direction_of_noise_free_low_dimensional_data(tmp_path, rank):
    """θ in R^rank following rank decaying modes, no noise: Gavish–Donoho kept 1 (error 0.02-0.2, exit 0)."""
    from tests.engine.test_operator import _planted_noise_free

    data, lam = _planted_noise_free(rank, rank, seed=rank)
    store = write_store(tmp_path / "nf.zarr", data)
    result = runner.invoke(app, ["dmd", str(store), "--json", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rank"] == rank and summary["rank_rule"] == "all-above-floor-no-noise-bulk"
    assert summary["reconstruction_error"] < 1e-6  # was 0.02-0.2
    assert summary["rank_note"].startswith(f"rank auto kept all {rank} directions above the precision floor")
    eigenvalues = np.array([complex(re, im) for re, im in summary["eigenvalues"]])
    np.testing.assert_allclose(np.sort(eigenvalues.real), np.sort(lam), atol=1e-6)
    assert np.abs(eigenvalues.imag).max() < 1e-6


# ------------------------------------------------------------------------------ 6. --null-size
def test_null_size_has_an_upper_bound_that_says_why(tmp_path):
    from traj.analysis.conjugacy import MAX_NULL_SIZE, ConjugacyParams

    assert ConjugacyParams.checked(null_size=MAX_NULL_SIZE).null_size == 1000
    with pytest.raises(ParameterError, match=r"from 0 to 1000, got 1001: the null's conformal bound is exact to "
                                             r"1/\(n \+ 1\), 0.1 % at 1000 maps"):
        ConjugacyParams.checked(null_size=1001)
    refused(runner.invoke(app, ["conjugacy", Q, Q, "--null-size", "100000000", "--out", str(tmp_path / "o")]),
            "--null-size must be an integer from 0 to 1000, got 100000000")


def test_null_size_whose_maps_would_not_fit_in_memory_is_refused_before_any_read(tmp_path):
    """quadratic-mlp (T = 321): 0.56 GB RSS at 20 maps, 2.06 GB at 200 (measured); 10 Grams of 0.79 MiB a map."""
    line = refused(runner.invoke(app, ["conjugacy", Q, Q, "--null-size", "200", "--out", str(tmp_path / "o")]),
                   "--null-size 200 needs about 1.5 GiB for the reparametrisation null over windows of 321 snapshots "
                   "(7.9 MiB a map); at most 130 fit in 1 GiB")
    assert "memory" not in line  # not MemoryError's generic line


# ------------------------------------------------------------------------------ 7. kga-replay that never fits
def test_kga_replay_interval_past_the_end_of_training_is_refused(tmp_path):
    refused(runner.invoke(app, ["kga-replay", Q, "--interval", "1000000000", "--out", str(tmp_path / "o")]),
            "--interval 1000000000 steps: KGA's first fit would come at step 1000000000, and the replay trains 320 "
            "step(s) (10 epoch(s) of 32): KGA would never accelerate a step")
    assert not (tmp_path / "o").exists()


def test_kga_replay_that_never_accelerated_says_its_comparison_means_nothing(tmp_path):
    """KGA-Epoch over 2 epochs fits once, after the last step: refits 1, no step accelerated."""
    out = tmp_path / "o"
    result = runner.invoke(app, ["kga-replay", Q, "--epochs", "2", "--alpha", "0.5,0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "KGA refitted 1 time(s) but only after the last step, so it never accelerated a step: this run is " \
           "plain training and its comparison with plain means nothing" in " ".join(result.stdout.split())
    summary = json.loads((out / "report" / "summary.json").read_text())
    rows = {row["alpha"]: row for row in summary["comparison"]}
    assert rows[0.5]["refits"] == 1 and "never accelerated a step" in rows[0.5]["note"]
    assert rows[0.0]["note"] is None  # α = 0 is plain training by design
    assert summary["runs"][0]["accelerated_steps"] == 0
    assert "its comparison with plain means nothing" in (out / "report" / "report.md").read_text()
    longer = runner.invoke(app, ["kga-replay", Q, "--epochs", "4", "--alpha", "0.5", "--json",
                                 "--out", str(tmp_path / "o4")])
    row = json.loads(longer.stdout)["comparison"][0]
    assert row["note"] is None and row["refits"] == 3
    assert json.loads(longer.stdout)["runs"][0]["accelerated_steps"] == 64  # epochs 3 and 4, 32 steps each


# ------------------------------------------------------------------------------ 5. an evaluation too costly
def _store_with_recipe_config(tmp_path: Path, **config) -> Path:
    import shutil

    import zarr

    path = tmp_path / "big-data.zarr"
    shutil.copytree(SAMPLE / "quadratic-mlp.zarr", path)
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs)
    attrs["recipe"] = {**attrs["recipe"], "config": {**attrs["recipe"]["config"], **config}}
    group.attrs.update(attrs)
    return path


@pytest.mark.parametrize("command", [["dmd", "--evaluate"], ["report"], ["cmd"], ["prune", "--window", "0:40"]])
def test_an_evaluation_too_costly_for_its_samples_and_model_is_refused_at_once(tmp_path, command):
    """n_train = n_val = 10^7 (each within its own limit): dmd --evaluate and report ran > 170 s at 3 GB."""
    store = _store_with_recipe_config(tmp_path, n_train=10_000_000, n_val=10_000_000)
    t0 = time.perf_counter()
    result = runner.invoke(app, [command[0], str(store), *command[1:], "--out", str(tmp_path / "o")])
    refused(result, "big-data.zarr: scoring weights with the recipe 'quadratic-mlp' as configured runs 20,000,000 "
                    "samples through 1,185 parameters (2.4e+10 per evaluation, limit 2.5e+09",
            "--no-evaluate")
    assert time.perf_counter() - t0 < 20
    if command[0] != "dmd":  # and without evaluation the analysis runs
        quiet = runner.invoke(app, [command[0], str(store), *command[1:], "--no-evaluate", "--out", str(tmp_path / "q")])
        assert quiet.exit_code == 0, quiet.output


def test_evaluation_cost_limit_keeps_every_built_in_default():
    from traj.recipes import MAX_EVALUATION_WORK, RECIPES, check_evaluation_cost, get_recipe

    for name in RECIPES:
        if name == "mnist1d-mlp":
            continue  # its data come from the mnist1d package (built when asked): 5000 x 3690 = 1.8e7
        check_evaluation_cost(get_recipe(name))
    at_limit = get_recipe("quadratic-mlp", n_train=MAX_EVALUATION_WORK // 1185 - 200, n_val=200)
    assert check_evaluation_cost(at_limit) is at_limit


# ------------------------------------------------------------------------------ 9. messages that named the wrong cause
@pytest.mark.parametrize(("args", "options"), [
    (["info", "{s}"], None),
    (["dmd", "{s}"], "(a smaller --window, --block-mb or --eval-points needs less)"),
    (["cmd", "{s}", "--modes", "2"], "(a smaller --window, --samples, --block-mb or --eval-points needs less)"),
    (["conjugacy", "{s}", "{s}"], "(a smaller --window, --block-mb, --null-size or --windows needs less)"),
])
def test_memory_error_names_what_failed_and_only_this_commands_options(tmp_path, monkeypatch, args, options):
    """It said '(a smaller --window, --samples or --block-mb needs less)' for every command, info included."""
    import traj.store.run_store as run_store

    def no_memory(*_a, **_k):
        raise MemoryError("Unable to allocate 7.45 GiB for an array with shape (1000000000,) and data type float64")

    monkeypatch.setattr(run_store.RunStore, "iter_blocks", no_memory)
    monkeypatch.setattr(run_store.RunStore, "read", no_memory)
    store = str(write_store(tmp_path / "s.zarr", np.cumsum(np.ones((12, 40), dtype=np.float32), axis=0)))
    line = refused(runner.invoke(app, [a.replace("{s}", store) for a in args] + ["--out", str(tmp_path / "o")]),
                   "not enough memory: unable to allocate 7.45 GiB for an array with shape (1000000000,)")
    assert line.endswith(options or "(the input declares more than this machine can hold)")


def test_conjugacy_pca_takes_the_recipes_default_stacking_or_a_stack_flag(tmp_path):
    """pca:K with stacked trajectories was refused (issue 26): it now projects every trajectory on one set of axes
    fitted to all their snapshots pooled (Redman et al. 2024's grokking pipeline), whether the recipe or --stack stacks them."""
    omd, ogd = (str(SAMPLE / f"mirror-{a}.zarr") for a in ("omd", "ogd"))
    for extra, n_traj in (([], 25), (["--stack", "5"], 5)):
        done = runner.invoke(app, ["conjugacy", omd, ogd, "--observable", "pca:2", *extra, "--null-size", "0",
                                   "--out", str(tmp_path / f"o{n_traj}"), "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["settings"]["stack"] == [n_traj, n_traj]
        assert json.loads(done.stdout)["settings"]["center"] is False  # Redman et al. 2024's projection by default
    centred = runner.invoke(app, ["conjugacy", omd, ogd, "--observable", "pca:2", "--center", "--null-size", "0",
                                  "--out", str(tmp_path / "oc"), "--json"])
    assert centred.exit_code == 0 and json.loads(centred.stdout)["settings"]["center"] is True
    refused(runner.invoke(app, ["conjugacy", omd, ogd, "--center", "--out", str(tmp_path / "od")]),
            "--center applies to observable 'pca:K' only")


@pytest.mark.parametrize("moving", [False, True])
def test_cmd_names_values_at_float32_limit_instead_of_nothing_moves(tmp_path, moving):
    """Two weights at ±3e38 made 'fewer than 2 of the sampled weights move' (the test for movement is relative to
    the largest |w|): the line now names them and the overflow."""
    data = np.cumsum(np.random.default_rng(0).standard_normal((12, 40)), axis=0).astype(np.float32)
    data[:, 3], data[:, 7] = 3e38, -3e38
    if moving:
        data[1::2, 3] = -3e38
    store = write_store(tmp_path / "ovf.zarr", data)
    refused(runner.invoke(app, ["cmd", str(store), "--modes", "2", "--out", str(tmp_path / "o")]),
            "ovf.zarr: 2 sampled weight(s) (coordinate 3, 7) hold values up to 3.0e+38, near float32's limit "
            "(3.4e+38): such values overflow float32 arithmetic")


def test_a_reader_racing_an_in_place_convert_is_told_to_retry_not_that_the_store_is_damaged(tmp_path):
    from traj.errors import DamagedStoreError, StoreLockedError
    from traj.store.convert import convert_store

    data = np.random.default_rng(0).standard_normal((30, 5000)).astype(np.float32)
    path = write_store(tmp_path / "v1.zarr", data, format_version=1, chunk_bytes=4096)
    reader = RunStore(path)  # opened before the convert's swap
    convert_store(path)
    with pytest.raises(StoreLockedError, match="was replaced while this command read it .* not damaged: run the "
                                               "command again") as caught:
        Engine().gram(reader)
    assert not isinstance(caught.value, DamagedStoreError)
    np.testing.assert_allclose(Engine().gram(RunStore(path))["all"], data.astype(np.float64) @ data.T.astype(np.float64),
                               rtol=1e-10)  # a fresh reader reads the converted store
    # a real damage, with no writer and no swap, is still damage
    chunk = next(p for p in (path / "params" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(DamagedStoreError, match="too short for a shard index"):
        Engine().gram(RunStore(path))


def test_a_reader_that_fails_while_a_writer_holds_the_store_says_it_is_being_rewritten(tmp_path):
    from traj.errors import StoreLockedError
    from traj.store.lock import WriterLock

    data = np.ones((9, 50), dtype=np.float32)
    path = write_store(tmp_path / "s.zarr", data)
    reader = RunStore(path)
    chunk = next(p for p in (path / "params" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:10])  # as a rewrite in progress would leave it
    lock = WriterLock(path)
    lock.acquire()
    try:
        with pytest.raises(StoreLockedError, match="is being rewritten .* not damaged"):
            Engine().gram(reader)
    finally:
        lock.release()
