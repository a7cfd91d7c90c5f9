import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app
from traj.store import RunStore

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_record_then_info_json(tmp_path):
    out = tmp_path / "q.zarr"
    result = invoke("record", "quadratic-mlp", "--out", out, "--epochs", 2, "--every", 4, "--set", "n_train=128", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_snapshots"] == 3  # 4 steps per epoch x 2 epochs, every 4th step, plus θ0
    store = RunStore(out)
    np.testing.assert_array_equal(store.steps, [0, 4, 8])
    assert store.recipe["config"]["n_train"] == 128

    result = invoke("info", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_snapshots"] == 3 and info["n_params"] == 1185
    assert info["healthy"] and info["nonfinite_snapshots"] == []
    assert info["recipe"]["name"] == "quadratic-mlp"
    assert [layer["name"] for layer in info["layers"]][:2] == ["0.weight", "0.bias"]
    assert info["compression_ratio"] > 0

    result = invoke("info", out)
    assert result.exit_code == 0 and "quadratic-mlp" in result.stdout


def test_info_reports_nonfinite_and_interrupted(tmp_path):
    from traj.store import Layout, StoreWriter

    writer = StoreWriter(tmp_path / "s.zarr", Layout.from_shapes([("w", (4,))]))
    for k in range(5):
        writer.append(np.full(4, np.nan if k == 3 else k, dtype=np.float32), step=k)
    writer.commit()
    writer._lock.release()  # the writer "dies" without closing
    info = json.loads(invoke("info", tmp_path / "s.zarr", "--json").stdout)
    assert info["nonfinite_snapshots"] == [3]
    assert info["uncommitted_rows"] == 0 and not info["healthy"]  # a plain reader sees the 5 committed rows only
    assert any("recording was interrupted" in line for line in info["health"])
    assert any("snapshot 3" in line for line in info["health"])
    # advice the user can follow: the Python API that resumes, not "appending resumes it"
    (line,) = [line for line in info["health"] if "interrupted" in line]
    assert line.endswith("to continue the run from its last snapshot (step 4), open it with traj.Recorder(path, model, "
                         "resume=True) holding the model in that state, or resume the training from a checkpoint with "
                         "the Hugging Face / Lightning callback")


def test_an_interrupted_recipe_recording_is_not_advised_to_resume(tmp_path):
    """`traj record --out same.zarr` refuses an existing store and cannot resume: the advice says so."""
    from traj.store import Layout, StoreWriter

    writer = StoreWriter(tmp_path / "s.zarr", Layout.from_shapes([("w", (4,))]),
                         recipe={"name": "quadratic-mlp", "config": {}, "seed": 0})
    writer.append(np.zeros(4, dtype=np.float32), step=0)
    writer.commit()
    writer._lock.release()  # killed
    info = json.loads(invoke("info", tmp_path / "s.zarr", "--json").stdout)
    (line,) = [line for line in info["health"] if "interrupted" in line]
    assert line.endswith("`traj record` cannot resume a recipe run: record it again with --overwrite "
                         "(or into a new --out) for the whole run")
    assert "resume=True" not in line
    text = invoke("info", tmp_path / "s.zarr").stdout
    assert "cannot resume a recipe run" in " ".join(text.split())


def test_import_cli(tmp_path, rng):
    data = rng.standard_normal((5, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    result = invoke("import", tmp_path / "x.npy", "--out", tmp_path / "s.zarr", "--every", 2, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == [0, 8]
    np.testing.assert_array_equal(RunStore(tmp_path / "s.zarr").read(), data)
    ckpts = tmp_path / "ck"
    ckpts.mkdir()
    for step in (1, 2):
        torch.save({"w": torch.zeros(3), "step": step}, ckpts / f"a{step}.pt")
    result = invoke("import", ckpts, "--out", tmp_path / "c.zarr")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(RunStore(tmp_path / "c.zarr").steps, [1, 2])


def test_recipes_lists_all(tmp_path):
    result = invoke("recipes", "--json")
    assert result.exit_code == 0
    assert set(json.loads(result.stdout)) == {"quadratic-mlp", "digits-cnn", "mnist1d-mlp", "modular-transformer", "mirror-descent"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "{tmp}/missing.zarr"], "no such file"),
        (["info", "{tmp}"], "not a run store"),
        (["record", "nope", "--out", "{tmp}/x.zarr"], "unknown recipe 'nope'"),
        (["record", "digits-cnn", "--out", "{tmp}/x.zarr", "--set", "bogus=1"], "no option 'bogus'"),
        (["record", "digits-cnn", "--out", "{tmp}/x.zarr", "--epochs", "0"], "epochs must be an integer from 1 to"),
        (["record", "digits-cnn", "--out", "{tmp}/x.zarr", "--every", "often"], "every must be"),
        (["record", "digits-cnn", "--out", "{tmp}/x.zarr", "--dtype", "int8"], "--dtype"),
        (["import", "{tmp}/missing", "--out", "{tmp}/x.zarr"], "no such file"),
        (["import", "{tmp}/bad.npy", "--out", "{tmp}/x.zarr"], "expected shape"),
        (["import", "{tmp}/garbage.npy", "--out", "{tmp}/x.zarr"], "not a numeric .npy array"),
        (["info", "{tmp}/arr.zarr/params"], "a Zarr array, not a run store"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    np.save(tmp_path / "bad.npy", np.zeros(3))
    (tmp_path / "garbage.npy").write_text("garbage")
    write_store(tmp_path / "arr.zarr", np.zeros((2, 3), dtype=np.float32))
    result = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.zarr").exists()


def test_record_refuses_to_clobber(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    result = invoke("record", "quadratic-mlp", "--out", tmp_path / "x.zarr")
    assert result.exit_code == 2 and "--overwrite" in result.stderr


@pytest.mark.parametrize("overwrite", [False, True])
def test_ctrl_c_during_record_says_what_was_kept_and_where(tmp_path, monkeypatch, overwrite):
    """Before: Ctrl-C printed only `interrupted`; the user could not tell whether anything survived."""
    from traj.recipes.base import Recipe

    out = tmp_path / "q.zarr"
    if overwrite:
        assert invoke("record", "quadratic-mlp", "--out", out, "--epochs", 1, "--every", 4,
                      "--set", "n_train=128").exit_code == 0
        before = RunStore(out).steps.tolist()

    def five_steps_then_ctrl_c(self, model=None, *, recorder=None, **kwargs):
        for _ in range(5):
            recorder.step()
        raise KeyboardInterrupt

    monkeypatch.setattr(Recipe, "train", five_steps_then_ctrl_c)
    args = ["--overwrite"] if overwrite else []
    result = invoke("record", "quadratic-mlp", "--out", out, "--every", 1, *args)
    assert result.exit_code == 130
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == "interrupted"
    if overwrite:  # the old store is kept whole and the message says so
        assert lines[-2] == f"{out} holds the store it held before; the interrupted recording was discarded"
        assert RunStore(out).steps.tolist() == before
    else:
        assert lines[-2] == f"kept 6 snapshot(s), steps 0 to 5, in {out} (closed; usable as it is)"
        store = RunStore(out)
        assert store.closed_cleanly and store.steps.tolist() == [0, 1, 2, 3, 4, 5]


def test_console_script_end_to_end(tmp_path):
    """The installed `traj` entry point, as a user runs it: a usage error and a real record."""
    exe = [sys.executable, "-c", "from traj.cli.app import main; main()"]
    bad = subprocess.run([*exe, "info", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "No such option" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run([*exe, "record", "mirror-descent", "--set", "algorithm=bisection", "--epochs", "20",
                         "--out", str(tmp_path / "b.zarr"), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n_snapshots"] == 21
    version = subprocess.run([*exe, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("traj ")
    for module in ("traj", "traj.cli.app"):  # python -m, where the scripts are not on PATH
        version = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        assert version.returncode == 0 and version.stdout.startswith("traj "), (module, version.stderr)


def test_info_report_and_layer_norms(tmp_path, rng):
    from tests.conftest import write_store
    from traj.analysis.overview import layer_norms
    from traj.store import Layout

    layout = Layout.from_shapes([("a", (300,)), ("b", (2, 250)), ("c", (7,))])
    data = rng.standard_normal((6, 807)).astype(np.float32)
    path = write_store(tmp_path / "s.zarr", data, layout=layout, chunk_bytes=1000)  # blocks cut layers
    norms = layer_norms(RunStore(path)).norms
    expected = np.stack([np.linalg.norm(data[:, e.columns].astype(np.float64), axis=1) for e in layout.entries], axis=1)
    np.testing.assert_allclose(norms, expected, rtol=1e-12)

    out = tmp_path / "report"
    result = invoke("info", path, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {".traj-output.json", "summary.json", "report.md", "report.html",
                                               "run_overview.png"}
    summary = json.loads((out / "summary.json").read_text())
    np.testing.assert_allclose(summary["layer_norms"]["last"], expected[-1], rtol=1e-12)
    assert "data:image/png;base64," in (out / "report.html").read_text()
    (tmp_path / "afile").write_text("x")
    result = invoke("info", path, "--out", tmp_path / "afile")
    assert result.exit_code == 2 and "is a file" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["cmd", "{q}", "--modes", "3", "--threshold", "0.5"], "--modes and --threshold both cut the dendrogram"),
    (["cmd", "{q}", "--compare-modes", "2,5"], "--compare-modes draws CMD beside DMD: it needs --compare-dmd"),
    (["conjugacy", "{omd}", "{ogd}", "--null", "{q}"], "is not the model of mirror-omd.zarr"),
    (["conjugacy", "{omd}", "{ogd}", "--rank", "foo"], "--rank must be an integer or 'k' or 'auto', not 'foo'"),
    (["conjugacy", "{omd}"], "one run given: give two or more runs to compare, or --windows W"),
])
def test_options_that_would_be_ignored_are_refused(tmp_path, args, message):
    """Options a run would silently drop (found by a new user) are one line and exit 2, nothing written."""
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "sample_data"
    paths = {"q": sample / "quadratic-mlp.zarr", "omd": sample / "mirror-omd.zarr", "ogd": sample / "mirror-ogd.zarr"}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", "from traj.cli.app import main; main()", *[a.format(**paths) for a in args], "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_dmd_save_modes_json_and_summary_agree(tmp_path):
    """--json and summary.json name the same modes.zarr (summary.json said null)."""
    from pathlib import Path

    import zarr

    sample = Path(__file__).resolve().parents[2] / "sample_data" / "quadratic-mlp.zarr"
    out = tmp_path / "out"
    result = invoke("dmd", sample, "--save-modes", "--rank", 3, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((out / "summary.json").read_text())
    assert printed["modes"] == written["modes"] == str(out / "modes.zarr")
    modes = zarr.open_array(str(out / "modes.zarr"), mode="r")
    assert modes.shape == (printed["n_params"], 3)
    assert written["evaluation"] is None and {k: v for k, v in printed.items() if k not in ("selection",)} == written


@pytest.mark.parametrize("args, message", [
    (["--compare-dmd", "0"], "--compare-dmd must hold integers >= 1, got 0"),
    (["--compare-dmd", "5", "--compare-modes", "0"], "--compare-modes must hold integers from 1 to 10000, got 0"),
    (["--compare-dmd", "5", "--no-evaluate"], "--compare-dmd scores the models with a recipe"),
])
def test_cmd_comparison_options_are_refused_before_any_work(tmp_path, monkeypatch, args, message):
    """traj cmd --compare-dmd 0 was refused only after the whole CMD pass."""
    from pathlib import Path

    import traj.analysis.cmd.run as run

    def no_pass(*args, **kwargs):
        raise AssertionError("the CMD pass started")

    monkeypatch.setattr(run, "_fit", no_pass)
    sample = Path(__file__).resolve().parents[2] / "sample_data" / "quadratic-mlp.zarr"
    out = tmp_path / "out"
    result = invoke("cmd", sample, "--modes", 2, *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and not out.exists()


def test_no_help_text_turns_into_an_emoji():
    """Typer renders help with rich, whose emoji codes would turn a help's ``a:b:s`` into a🅱s."""
    import re

    import typer
    from rich.emoji import Emoji, NoEmoji

    from traj.cli.app import app

    def is_emoji(code: str) -> bool:
        try:
            Emoji(code.lower())
        except NoEmoji:
            return False
        return True

    assert is_emoji("b") and not is_emoji("STOP")
    found = []
    for command in typer.main.get_command(app).commands.values():
        for text in [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]:
            found += [f"{command.name}: {code}" for code in re.findall(r":([^\s:]+):", text) if is_emoji(code)]
    assert found == []
    assert "START:STOP:STEP" in " ".join(CliRunner().invoke(app, ["dmd", "--help"], env={"COLUMNS": "300"}).output.split())
