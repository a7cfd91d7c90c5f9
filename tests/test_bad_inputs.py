"""Malformed input across every command: exit code 2, one readable line, no traceback, and
nothing written outside --out (issue 8's matrix)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
runner = CliRunner()


def good(tmp, name="good.zarr", t=12, n=40, **kw):
    rng = np.random.default_rng(0)
    return write_store(tmp / name, np.cumsum(rng.standard_normal((t, n)), axis=0).astype(np.float32), **kw)


def mutate_attrs(path, **changes):
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs)
    attrs.update(changes)
    group.attrs.clear()
    group.attrs.update(attrs)
    return path


def setup(tmp, case):
    """Build the malformed input of ``case``; returns the command line (strings with {tmp})."""
    t = str(tmp)
    if case == "missing":
        return ["dmd", f"{t}/nope.zarr"]
    if case == "plain-dir":
        (tmp / "dir").mkdir()
        return ["dmd", f"{t}/dir"]
    if case == "a-file":
        (tmp / "file.zarr").write_text("x")
        return ["info", f"{t}/file.zarr"]
    if case == "other-zarr":
        zarr.open_group(tmp / "other.zarr", mode="w").attrs["hello"] = "world"
        return ["cmd", f"{t}/other.zarr"]
    if case == "future-version":
        mutate_attrs(good(tmp), traj={"format": "traj-run", "version": 7})
        return ["dmd", f"{t}/good.zarr"]
    if case == "params-int":
        path = good(tmp)
        shutil.rmtree(path / "params")
        zarr.open_group(path, mode="r+").create_array("params", data=np.zeros((12, 40), dtype=np.int32))
        return ["dmd", f"{t}/good.zarr"]
    if case == "params-1d":
        path = good(tmp)
        shutil.rmtree(path / "params")
        zarr.open_group(path, mode="r+").create_array("params", data=np.zeros(40, dtype=np.float32))
        return ["info", f"{t}/good.zarr"]
    if case == "layout-mismatch":
        mutate_attrs(good(tmp), layout=[{"name": "w", "shape": [41], "offset": 0, "prunable": True}])
        return ["dmd", f"{t}/good.zarr"]
    if case == "layout-garbage":
        mutate_attrs(good(tmp), layout="not a list")
        return ["prune", f"{t}/good.zarr"]
    if case == "zero-snapshots":
        from traj.store import Layout, StoreWriter

        StoreWriter(tmp / "empty.zarr", Layout.from_shapes([("w", (5,))])).close()
        return ["dmd", f"{t}/empty.zarr"]
    if case == "one-snapshot":
        good(tmp, t=1)
        return ["cmd", f"{t}/good.zarr"]
    if case == "rank-too-large":
        good(tmp, t=5)
        return ["dmd", f"{t}/good.zarr", "--rank", "50"]
    if case == "nan-snapshot":
        data = np.ones((8, 10), dtype=np.float32)
        data[4, 2] = np.nan
        write_store(tmp / "nan.zarr", data)
        return ["dmd", f"{t}/nan.zarr"]
    if case == "nan-cmd":
        data = np.cumsum(np.ones((8, 10), dtype=np.float32), axis=0)
        data[6, 1] = np.inf
        write_store(tmp / "nan.zarr", data)
        return ["cmd", f"{t}/nan.zarr", "--modes", "2"]
    if case == "truncated-chunk":
        path = good(tmp)
        chunk = next(p for p in (path / "params" / "c").rglob("*") if p.is_file())
        chunk.write_bytes(chunk.read_bytes()[:10])
        return ["dmd", f"{t}/good.zarr"]
    if case == "deleted-chunk":
        path = good(tmp)
        for p in (path / "params" / "c").rglob("*"):
            if p.is_file():
                p.unlink()
        return ["dmd", f"{t}/good.zarr"]
    if case == "empty-window":
        good(tmp)
        return ["dmd", f"{t}/good.zarr", "--window", "6:4"]
    if case == "window-beyond":
        good(tmp)
        return ["cmd", f"{t}/good.zarr", "--window", "0:999"]
    if case == "duplicate-steps":
        path = good(tmp)
        zarr.open_group(path, mode="r+")["step"][4] = 3
        return ["dmd", f"{t}/good.zarr"]
    if case == "decreasing-steps":
        path = good(tmp)
        zarr.open_group(path, mode="r+")["step"][8] = 1
        return ["info", f"{t}/good.zarr"]
    if case == "conjugacy-no-overlap":
        good(tmp, "a.zarr", t=10)
        good(tmp, "b.zarr", t=60)
        return ["conjugacy", f"{t}/a.zarr", f"{t}/b.zarr", "--window", "40:50"]
    if case == "conjugacy-one-run":
        return ["conjugacy", str(SAMPLE / "mirror-omd.zarr")]
    if case == "modes-zero":
        return ["cmd", str(SAMPLE / "quadratic-mlp.zarr"), "--modes", "0"]
    if case == "compression-one":
        return ["prune", str(SAMPLE / "digits-cnn.zarr"), "--compression", "1"]
    if case == "negative-forecast":
        return ["dmd", str(SAMPLE / "quadratic-mlp.zarr"), "--forecast", "-3"]
    if case == "negative-samples":
        return ["cmd", str(SAMPLE / "quadratic-mlp.zarr"), "--samples", "-5"]
    if case == "zero-seeds":
        return ["prune", str(SAMPLE / "digits-cnn.zarr"), "--seeds", "0"]
    if case == "bad-quantile":
        return ["conjugacy", str(SAMPLE / "mirror-omd.zarr"), str(SAMPLE / "mirror-ogd.zarr"), "--quantile", "2"]
    if case == "out-is-file":
        (tmp / "taken").write_text("x")
        return ["dmd", str(SAMPLE / "quadratic-mlp.zarr"), "--out", f"{t}/taken"]
    if case == "out-under-file":
        (tmp / "taken").write_text("x")
        return ["cmd", str(SAMPLE / "quadratic-mlp.zarr"), "--out", f"{t}/taken/sub"]
    if case == "unknown-recipe":
        return ["record", "resnet-imagenet", "--out", f"{t}/r.zarr"]
    if case == "bad-set":
        return ["record", "digits-cnn", "--out", f"{t}/r.zarr", "--set", "every=-1"]
    if case == "import-mismatch":
        import torch

        (tmp / "ck").mkdir()
        torch.save({"w": torch.zeros(3)}, tmp / "ck" / "1.pt")
        torch.save({"w": torch.zeros(4)}, tmp / "ck" / "2.pt")
        return ["import", f"{t}/ck", "--out", f"{t}/imp.zarr"]
    if case == "import-3d":
        np.save(tmp / "x.npy", np.zeros((2, 3, 4)))
        return ["import", f"{t}/x.npy", "--out", f"{t}/imp.zarr"]
    if case == "unknown-layer":
        return ["dmd", str(SAMPLE / "digits-cnn.zarr"), "--layer", "fc99.weight"]
    if case == "unknown-epoch":
        return ["prune", str(SAMPLE / "digits-cnn.zarr"), "--epoch", "42"]
    if case == "kga-no-recipe":
        good(tmp)
        return ["kga-replay", f"{t}/good.zarr"]
    if case == "report-missing":
        return ["report", f"{t}/nope.zarr"]
    if case == "bad-backend":
        return ["cmd", str(SAMPLE / "quadratic-mlp.zarr"), "--backend", "jax"]
    raise AssertionError(case)


CASES = [
    "missing", "plain-dir", "a-file", "other-zarr", "future-version", "params-int", "params-1d", "layout-mismatch",
    "layout-garbage", "zero-snapshots", "one-snapshot", "rank-too-large", "nan-snapshot", "nan-cmd", "truncated-chunk",
    "deleted-chunk", "empty-window", "window-beyond", "duplicate-steps", "decreasing-steps", "conjugacy-no-overlap",
    "conjugacy-one-run", "modes-zero", "compression-one", "negative-forecast", "negative-samples", "zero-seeds",
    "bad-quantile", "out-is-file", "out-under-file", "unknown-recipe", "bad-set", "import-mismatch", "import-3d",
    "unknown-layer", "unknown-epoch", "kga-no-recipe", "report-missing", "bad-backend",
]


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".traj-writer.lock" not in p.name)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, case, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    args = setup(work, case)
    monkeypatch.chdir(tmp_path)  # a default --out would land here: it must not appear
    before = _listing(tmp_path)
    sample_before = _listing(SAMPLE)
    if "--out" not in args and args[0] not in ("record", "import", "info"):
        args = [*args, "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{case}: {result.stderr!r}"
    assert _listing(tmp_path) == before, f"{case} wrote files: {set(_listing(tmp_path)) - set(before)}"
    assert _listing(SAMPLE) == sample_before


def test_error_messages_name_the_problem(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    result = runner.invoke(app, setup(work, "nan-snapshot") + ["--out", str(tmp_path / "o")])
    assert "snapshot 4" in result.stderr
    result = runner.invoke(app, setup(work, "future-version") + ["--out", str(tmp_path / "o")])
    assert "version 7" in result.stderr
    assert os.listdir(tmp_path) == ["w"]
