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


Q, D, OMD, OGD = (str(SAMPLE / f"{n}.zarr") for n in ("quadratic-mlp", "digits-cnn", "mirror-omd", "mirror-ogd"))

#: Options and configs validated before any work (issue 12): NaN, ±inf, negative, zero, absurdly
#: large values of every numeric option of every command. ``{t}`` is the case's work directory.
OPTION_CASES = {
    # dmd
    "dmd-block-mb-nan": ["dmd", Q, "--block-mb", "nan"],
    "dmd-block-mb-inf": ["dmd", Q, "--block-mb", "inf"],
    "dmd-block-mb-negative": ["dmd", Q, "--block-mb", "-1"],
    "dmd-block-mb-huge": ["dmd", Q, "--block-mb", "1e12"],
    "dmd-forecast-huge": ["dmd", Q, "--forecast", "1000000000000"],
    "dmd-eps-nan": ["dmd", Q, "--eps", "nan"],
    "dmd-eps-inf": ["dmd", Q, "--eps", "inf"],
    "dmd-eps-negative": ["dmd", Q, "--eps", "-0.1"],
    "dmd-rank-zero": ["dmd", Q, "--rank", "0"],
    "dmd-rank-negative": ["dmd", Q, "--rank", "-3"],
    "dmd-rank-word": ["dmd", Q, "--rank", "many"],
    "dmd-power-iterations-huge": ["dmd", Q, "--power-iterations", "1000000000"],
    "dmd-power-iterations-negative": ["dmd", Q, "--power-iterations", "-1"],
    "dmd-method-unknown": ["dmd", Q, "--method", "magic"],
    # cmd
    "cmd-threshold-nan": ["cmd", Q, "--threshold", "nan"],
    "cmd-threshold-inf": ["cmd", Q, "--threshold", "inf"],
    "cmd-samples-huge": ["cmd", Q, "--samples", "1000000000"],
    "cmd-modes-huge": ["cmd", Q, "--modes", "1000000000"],
    "cmd-subsample-zero": ["cmd", Q, "--subsample", "0"],
    "cmd-seed-negative": ["cmd", Q, "--seed", "-1"],
    "cmd-eval-points-zero": ["cmd", Q, "--eval-points", "0"],
    "cmd-sweep-zero": ["cmd", Q, "--sweep", "1,0,5"],
    "cmd-sweep-nan": ["cmd", Q, "--sweep", "1,nan"],
    "cmd-sweep-huge": ["cmd", Q, "--sweep", "2,1000000000"],
    "cmd-block-mb-zero": ["cmd", Q, "--block-mb", "0"],
    # prune
    "prune-compression-inf": ["prune", D, "--compression", "2,inf"],
    "prune-compression-nan": ["prune", D, "--compression", "nan"],
    "prune-compression-negative": ["prune", D, "--compression", "-4"],
    "prune-compression-empty": ["prune", D, "--compression", ","],
    "prune-refine-epochs-huge": ["prune", D, "--refine-epochs", "1000000000"],
    "prune-refine-epochs-negative": ["prune", D, "--refine-epochs", "-1"],
    "prune-seeds-huge": ["prune", D, "--seeds", "1000000000"],
    "prune-epochs-missing": ["prune", D, "--epochs", "0,99"],
    "prune-epoch-negative": ["prune", D, "--epoch", "-1"],
    "prune-scope-unknown": ["prune", D, "--scope", "planet"],
    "prune-rank-zero": ["prune", D, "--rank", "0"],
    "prune-block-mb-inf": ["prune", D, "--block-mb", "inf"],
    # conjugacy
    "conjugacy-quantile-nan": ["conjugacy", OMD, OGD, "--quantile", "nan"],
    "conjugacy-quantile-zero": ["conjugacy", OMD, OGD, "--quantile", "0"],
    "conjugacy-margin-inf": ["conjugacy", OMD, OGD, "--margin", "inf"],
    "conjugacy-margin-nan": ["conjugacy", OMD, OGD, "--margin", "nan"],
    "conjugacy-k-zero": ["conjugacy", OMD, OGD, "--k", "0"],
    "conjugacy-rank-negative": ["conjugacy", OMD, OGD, "--rank", "-2"],
    "conjugacy-delays-negative": ["conjugacy", OMD, OGD, "--delays", "-1"],
    "conjugacy-delays-huge": ["conjugacy", OMD, OGD, "--delays", "1000000000"],
    "conjugacy-windows-one": ["conjugacy", OMD, "--windows", "1"],
    "conjugacy-windows-huge": ["conjugacy", OMD, "--windows", "1000000000"],
    "conjugacy-block-mb-nan": ["conjugacy", D, D, "--block-mb", "nan"],
    # kga-replay
    "kga-alpha-inf-nan": ["kga-replay", Q, "--alpha", "inf,nan"],
    "kga-alpha-negative": ["kga-replay", Q, "--alpha", "0.5,-1"],
    "kga-alpha-empty": ["kga-replay", Q, "--alpha", ","],
    "kga-alpha-empty-entry": ["kga-replay", Q, "--alpha", "1,,2"],
    "kga-eps-nan": ["kga-replay", Q, "--eps", "nan"],
    "kga-eps-huge": ["kga-replay", Q, "--eps", "5"],
    "kga-window-two": ["kga-replay", Q, "--window", "2"],
    "kga-window-huge": ["kga-replay", Q, "--window", "1000000000"],
    "kga-interval-zero": ["kga-replay", Q, "--interval", "0"],
    "kga-interval-word": ["kga-replay", Q, "--interval", "often"],
    "kga-mask-eps-nan": ["kga-replay", Q, "--mask-eps", "nan"],
    "kga-mask-window-zero": ["kga-replay", Q, "--mask-window", "0"],
    "kga-epochs-zero": ["kga-replay", Q, "--epochs", "0"],
    "kga-epochs-huge": ["kga-replay", Q, "--epochs", "1000000000"],
    # record: its options and --set go into the recipe's config
    "record-seed-negative": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--seed", "-1"],
    "record-seed-huge": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--seed", str(2**40)],
    "record-lr-nan": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--lr", "nan"],
    "record-lr-inf": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--lr", "inf"],
    "record-lr-negative": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--lr", "-0.1"],
    "record-epochs-zero": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--epochs", "0"],
    "record-epochs-huge": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--epochs", "1000000000"],
    "record-every-zero": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--every", "0"],
    "record-every-huge": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--every", str(10**12)],
    "record-set-hidden-negative": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "hidden=-5"],
    "record-set-hidden-huge": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "hidden=100000000000"],
    "record-set-hidden-float": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "hidden=1e11"],
    "record-set-lr-nan": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "lr=nan"],
    "record-set-momentum-inf": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "momentum=inf"],
    "record-set-n-val-zero": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "n_val=0"],
    "record-set-batch-zero": ["record", "quadratic-mlp", "--out", "{t}/r.zarr", "--set", "batch_size=0"],
    "record-set-val-fraction-zero": ["record", "digits-cnn", "--out", "{t}/r.zarr", "--set", "val_fraction=0"],
    "record-set-channels-huge": ["record", "digits-cnn", "--out", "{t}/r.zarr", "--set", "channels=1000000"],
    "record-set-h-huge": ["record", "mnist1d-mlp", "--out", "{t}/r.zarr", "--set", "h=100000000000"],
    "record-set-p-huge": ["record", "modular-transformer", "--out", "{t}/r.zarr", "--set", "p=1000000"],
    "record-set-train-fraction": ["record", "modular-transformer", "--out", "{t}/r.zarr", "--set", "p=3",
                                  "--set", "train_fraction=0.01"],
    "record-set-dim-huge": ["record", "mirror-descent", "--out", "{t}/r.zarr", "--set", "grid=1",
                            "--set", "dim=1000000000"],
    "record-set-state-huge": ["record", "mirror-descent", "--out", "{t}/r.zarr", "--set", "grid=1000",
                              "--set", "dim=3"],
    "record-set-extent-nan": ["record", "mirror-descent", "--out", "{t}/r.zarr", "--set", "extent=nan"],
    # import
    "import-every-zero": ["import", "{t}/x.npy", "--out", "{t}/imp.zarr", "--every", "0"],
    "import-every-huge": ["import", "{t}/x.npy", "--out", "{t}/imp.zarr", "--every", str(10**15)],
    "import-every-checkpoints": ["import", "{t}/ck", "--out", "{t}/imp.zarr", "--every", "-3"],
}

#: What the one error line must say for each case above (a flag or option and the rule it breaks).
EXPECTED = {
    **{c: "--block-mb must be a finite number in [0.0009765625, 1048576]" for c in OPTION_CASES if "block-mb" in c},
    "dmd-forecast-huge": "--forecast must be an integer from 0 to 100000",
    **{c: "--eps must be a finite number >= 0" for c in OPTION_CASES if c.startswith("dmd-eps")},
    "dmd-rank-zero": "--rank must be an integer >= 1", "dmd-rank-negative": "--rank must be an integer >= 1",
    "dmd-rank-word": "--rank must be an integer or 'auto'",
    "dmd-power-iterations-huge": "--power-iterations must be", "dmd-power-iterations-negative": "--power-iterations must be",
    "dmd-method-unknown": "--method must be one of auto, gram, randomized",
    "cmd-threshold-nan": "--threshold must be a finite number in (0, 1], got nan",
    "cmd-threshold-inf": "--threshold must be a finite number in (0, 1], got inf",
    "cmd-samples-huge": "--samples must be an integer from 2 to", "cmd-modes-huge": "--modes must be an integer from 1 to",
    "cmd-subsample-zero": "--subsample must be", "cmd-seed-negative": "--seed must be an integer from 0 to",
    "cmd-eval-points-zero": "--eval-points must be", "cmd-sweep-zero": "--sweep must hold integers",
    "cmd-sweep-nan": "--sweep takes comma-separated integers", "cmd-sweep-huge": "--sweep must hold integers",
    "prune-compression-inf": "--compression must hold finite numbers > 1, got inf",
    "prune-compression-nan": "--compression must hold finite numbers > 1, got nan",
    "prune-compression-negative": "--compression must hold finite numbers > 1", "prune-compression-empty": "--compression is empty",
    "prune-refine-epochs-huge": "--refine-epochs must be", "prune-refine-epochs-negative": "--refine-epochs must be",
    "prune-seeds-huge": "--seeds must be", "prune-epochs-missing": "epoch 99", "prune-epoch-negative": "epoch -1",
    "prune-scope-unknown": "--scope must be one of global, layer", "prune-rank-zero": "--rank must be",
    "conjugacy-quantile-nan": "--quantile must be a finite number in (0, 1], got nan",
    "conjugacy-quantile-zero": "--quantile must be", "conjugacy-margin-inf": "--margin must be a finite number >= 0",
    "conjugacy-margin-nan": "--margin must be a finite number >= 0", "conjugacy-k-zero": "--k must be",
    "conjugacy-rank-negative": "--rank must be", "conjugacy-delays-negative": "--delays must be",
    "conjugacy-delays-huge": "too short for 1000000000 delays", "conjugacy-windows-one": "--windows must be",
    "conjugacy-windows-huge": "--windows 1000000000", "kga-alpha-inf-nan": "--alpha must hold finite numbers >= 0, got inf",
    "kga-alpha-negative": "--alpha must hold finite numbers >= 0", "kga-alpha-empty": "--alpha is empty",
    "kga-alpha-empty-entry": "--alpha takes comma-separated numbers, got '1,,2' (an empty entry)",
    "kga-eps-nan": "--eps must be a finite number in [0, 1], got nan", "kga-eps-huge": "--eps must be",
    "kga-window-two": "--window must be", "kga-window-huge": "--window must be", "kga-interval-zero": "--interval must be",
    "kga-interval-word": "--interval must be", "kga-mask-eps-nan": "--mask-eps must be",
    "kga-mask-window-zero": "--mask-window must be", "kga-epochs-zero": "--epochs must be", "kga-epochs-huge": "--epochs must be",
    "record-seed-negative": "seed must be an integer from 0 to", "record-seed-huge": "seed must be an integer from 0 to",
    "record-lr-nan": "lr must be a finite number > 0, got nan", "record-lr-inf": "lr must be a finite number > 0, got inf",
    "record-lr-negative": "lr must be", "record-epochs-zero": "epochs must be", "record-epochs-huge": "epochs must be",
    "record-every-zero": "every must be", "record-every-huge": "every must be",
    "record-set-hidden-negative": "hidden must be an integer from 1 to 4096, got -5",
    "record-set-hidden-huge": "hidden must be an integer from 1 to 4096", "record-set-hidden-float": "hidden takes an integer",
    "record-set-lr-nan": "lr must be", "record-set-momentum-inf": "momentum must be", "record-set-n-val-zero": "n_val must be",
    "record-set-batch-zero": "batch_size must be", "record-set-val-fraction-zero": "val_fraction must be",
    "record-set-channels-huge": "channels must be", "record-set-h-huge": "h must be", "record-set-p-huge": "p must be",
    "record-set-train-fraction": "leaves 0 for training", "record-set-dim-huge": "dim must be",
    "record-set-state-huge": "more than 1000000", "record-set-extent-nan": "extent must be",
    **{c: "--every must be an integer from 1 to" for c in OPTION_CASES if c.startswith("import-every")},
    "dmd-forecast-overflows": "--forecast 5000 overflows: the mode with |λ| = 1.5",
    "import-pickled-class": "1.pt: holds pickled code (a class or function: tests.test_bad_inputs.Holder), which traj "
                            "never runs; save a plain state_dict of tensors",
}


class Holder:
    """A custom class pickled into a checkpoint: torch.load(weights_only=True) refuses to build it."""

    def __init__(self):
        self.note = "runs code when unpickled without weights_only"


def setup(tmp, case):
    """Build the malformed input of ``case``; returns the command line (strings with {tmp})."""
    t = str(tmp)
    if case in OPTION_CASES:
        if case.startswith("import"):
            import torch

            np.save(tmp / "x.npy", np.zeros((4, 3), dtype=np.float32))
            (tmp / "ck").mkdir()
            torch.save({"w": torch.zeros(3)}, tmp / "ck" / "1.pt")
        return [a.format(t=t) for a in OPTION_CASES[case]]
    if case == "dmd-forecast-overflows":  # a mode with λ = 1.5: λ^k leaves float64 after k ~ 1750
        rng = np.random.default_rng(0)
        data = 1.5 ** np.arange(12)[:, None] * rng.standard_normal(40) + 1e-3 * rng.standard_normal((12, 40))
        write_store(tmp / "grows.zarr", data.astype(np.float32))
        return ["dmd", f"{t}/grows.zarr", "--rank", "1", "--forecast", "5000"]
    if case == "import-pickled-class":
        import torch

        (tmp / "ck").mkdir()
        torch.save({"w": torch.zeros(3), "extra": Holder()}, tmp / "ck" / "1.pt")
        return ["import", f"{t}/ck", "--out", f"{t}/imp.zarr"]
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
    "unknown-layer", "unknown-epoch", "kga-no-recipe", "report-missing", "bad-backend", "import-pickled-class",
    "dmd-forecast-overflows", *OPTION_CASES,
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
    assert EXPECTED.get(case, "") in lines[0], f"{case}: {lines[0]!r}"
    assert "weights_only" not in lines[0]
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


@pytest.mark.parametrize("args", [
    ["dmd", Q, "--forecast", "1e12"], ["dmd", Q, "--eps", "abc"], ["cmd", Q, "--samples", "1e3"],
    ["prune", D, "--seeds", "two"], ["conjugacy", OMD, OGD, "--k", "1.5"], ["kga-replay", Q, "--mask-window", "x"],
    ["record", "quadratic-mlp", "--epochs", "ten"], ["import", "x.npy", "--out", "y.zarr", "--every", "1.5"],
])
def test_wrong_type_is_one_line_from_the_console_script(tmp_path, monkeypatch, capsys, args):
    """A value typer cannot parse (a float for an int, a word for a number): one line, exit 2."""
    from traj.cli.app import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["traj", *args, *(["--out", str(tmp_path / "o")] if "--out" not in args else [])])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for") and "--help" in lines[0], lines
    assert os.listdir(tmp_path) == []


#: A crafted store's ``recipe`` attribute, and the words the error must carry.
STORED_CONFIGS = [
    ({"hidden": -5}, "hidden must be an integer from 1 to 4096, got -5"),
    ({"seed": -1}, "seed must be an integer from 0 to 4294967295, got -1"),
    ({"hidden": 1e11}, "hidden takes an integer, got 100000000000.0"),
    ({"hidden": 10**11}, "hidden must be an integer from 1 to 4096, got 100000000000"),
    ({"n_train": 10**12}, "n_train must be an integer from 1 to 10000000"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"epochs": 10**9}, "epochs must be an integer from 1 to 100000"),
    ({"hidden": "wide"}, "hidden takes an integer, got 'wide'"),
    ({"hidden": [32, 32]}, "hidden takes an integer, got [32, 32] (list)"),
    ({"momentum": True}, "momentum takes a number, got True"),
    ({"optimizer": {"name": "sgd"}}, "optimizer takes a word"),
    ({"every": 0}, "every must be 'epoch' or an integer"),
    ({"widht": 3}, "has no option 'widht'"),
    ([1, 2], "config must be a mapping of options, got list"),
]


#: every config through cmd --evaluate, and two of them through every other command that rebuilds the recipe
RECIPE_CASES = [("cmd", c, w) for c, w in STORED_CONFIGS] + [
    (command, c, w) for command in ("prune", "kga-replay", "report") for c, w in STORED_CONFIGS[:2]]


@pytest.mark.parametrize("command, config, words", RECIPE_CASES, ids=[f"{m}-{c}" for m, c, _ in RECIPE_CASES])
def test_recipe_config_from_a_store_is_checked(tmp_path, monkeypatch, command, config, words):
    """Every command that rebuilds the store's recipe refuses a config out of range before any work."""
    import json

    work = tmp_path / "work"
    work.mkdir()
    path = good(work)
    # json.dumps writes NaN, which zarr's own attribute writer would refuse: write zarr.json as a crafted store has it
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["recipe"] = {"name": "quadratic-mlp", "config": config, "seed": 0}
    (path / "zarr.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    result = runner.invoke(app, [command, str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "good.zarr: the recipe recorded in this store is unusable" in lines[0] and words in lines[0], lines[0]
    assert _listing(tmp_path) == before
