"""W&B and MLflow adapters (traj.live.trackers), read back with each tracker's own reader; nothing touches the network.

W&B runs offline (``WANDB_MODE=offline``): its run file (``run-*.wandb``, records framed as in LevelDB's log,
each a ``wandb.proto.wandb_internal_pb2.Record``) is read with wandb's own protobuf schema. MLflow writes a
local file store, read back with ``MlflowClient``. Each test skips where its package is not installed
(the ``wandb`` and ``mlflow`` extras).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from traj.cli.app import app
from traj.errors import ParameterError, TrajError
from traj.live import LiveOptions
from traj.live.trackers import parse_tracker

runner = CliRunner()


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    folder = tmp_path / "wandb-dir"
    folder.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_SILENT": "true",
                        "WANDB_DISABLE_GIT": "true", "WANDB_ERROR_REPORTING": "false", "WANDB_DISABLE_CODE": "true", "WANDB_CONSOLE": "off",
                        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                        "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    import wandb

    wandb.teardown()  # wandb reads its settings (WANDB_DIR) once per setup: a fresh one for this folder
    yield folder
    wandb.teardown()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this flag
    return (tmp_path / "mlruns").as_uri()


def wandb_records(folder: Path) -> list:
    """Every record of the one offline run under ``folder`` (WANDB_DIR), as wandb's protobuf ``Record``.

    The file: a 7-byte header (":W&B", magic 0xBEE1, version 0), then LevelDB-log framing in 32 KiB blocks:
    each chunk a 7-byte header (CRC-32 of type and data, length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    import wandb
    from wandb.proto import wandb_internal_pb2

    wandb.teardown()  # run.finish() hands the last records to wandb's service; its shutdown writes them
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    raw = path.read_bytes()
    assert raw[:4] == b":W&B" and struct.unpack("<HB", raw[4:7]) == (0xBEE1, 0)
    block, records, pending, at = 32768, [], b"", 7
    while at + 7 <= len(raw):
        if block - at % block < 7:  # a block's tail too short for a header is padding
            at += block - at % block
            continue
        checksum, length, kind = struct.unpack("<IHB", raw[at:at + 7])
        data = raw[at + 7:at + 7 + length]
        if kind == 0 and length == 0:
            break
        assert zlib.crc32(bytes([kind]) + data) & 0xFFFFFFFF == checksum
        at += 7 + length
        pending += data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(folder: Path) -> dict[str, dict[int, object]]:
    """``{key: {step: value}}`` of the run's ``run.log`` calls (values as JSON decodes them)."""
    history: dict[str, dict[int, object]] = {}
    for record in wandb_records(folder):
        if record.WhichOneof("record_type") == "history":
            step = record.history.step.num
            for item in record.history.item:
                value = json.loads(item.value_json)
                path = [item.key] if item.key else list(item.nested_key)
                if len(path) == 1 and not path[0].startswith("_"):
                    history.setdefault(path[0], {})[step] = value
                elif len(path) == 2:  # a logged object (wandb.Image) comes as its fields, keyed (name, field)
                    history.setdefault(path[0], {}).setdefault(step, {})[path[1]] = value
    return history


def test_dmd_sends_its_numbers_and_figures_to_an_offline_wandb_run(tmp_path, offline_wandb):
    out = tmp_path / "out"
    result = runner.invoke(app, ["dmd", "sample_data/digits-cnn.zarr", "--rank", "6", "--out", str(out),
                                 "--log-to", "wandb:traj-tests", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    history = wandb_history(offline_wandb)
    assert history["dmd/rank"] == {0: 6}
    assert history["dmd/reconstruction_error"][0] == pytest.approx(summary["reconstruction_error"], rel=1e-12)
    figures = sorted(p.stem for p in out.glob("*.png"))
    images = sorted(k.removeprefix("dmd/") for k, v in history.items() if isinstance(v[0], dict)
                    and v[0].get("_type") == "image-file")
    assert images == figures and figures
    # the images themselves are in the run's files, as PNG
    (media,) = offline_wandb.glob("wandb/offline-run-*/files/media/images/dmd")
    pngs = sorted(media.glob("*.png"))
    assert len(pngs) == len(figures) and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    (run,) = [r.run for r in wandb_records(offline_wandb) if r.WhichOneof("record_type") == "run"]
    assert run.project == "traj-tests" and run.display_name == "dmd"


def test_dmd_sends_its_numbers_and_figures_to_an_mlflow_file_store(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    result = runner.invoke(app, ["dmd", "sample_data/digits-cnn.zarr", "--rank", "4", "--out", str(out),
                                 "--log-to", f"mlflow:{mlflow_store}", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    client = MlflowClient(tracking_uri=mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("traj").experiment_id])
    assert run.info.run_name == "dmd"
    numbers = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
               and np.isfinite(v)}
    assert numbers and run.data.metrics == pytest.approx({f"dmd/{k}": float(v) for k, v in numbers.items()}, rel=1e-12)
    assert [m.step for m in client.get_metric_history(run.info.run_id, f"dmd/{next(iter(numbers))}")] == [0]
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id, "dmd"))
    assert artifacts == sorted(f"dmd/{p.name}" for p in out.glob("*.png")) and artifacts
    local = Path(client.download_artifacts(run.info.run_id, artifacts[0], str(tmp_path / "back")))
    assert local.read_bytes() == (out / Path(artifacts[0]).name).read_bytes()


def _planted_fits(options: LiveOptions) -> list:
    """Live fits of a planted linear system (a decaying rotation and a decay) through a monitor with ``options``."""
    rng = np.random.default_rng(0)
    modes = rng.standard_normal((200, 3))
    k = np.arange(40)[:, None]
    data = (np.hstack([0.95**k * np.cos(0.2 * k), 0.95**k * np.sin(0.2 * k), 0.8**k]) @ modes.T)
    monitor = options.start(200, "float64")
    fits = [f for j, x in enumerate(data) if (f := monitor.observe(x, 10 * j)) is not None]
    monitor.close()
    return fits


def test_live_fits_go_to_wandb_at_their_steps(offline_wandb):
    fits = _planted_fits(LiveOptions(window=10, every=5, sketch=64, forecast=2, log_to="wandb:traj-live"))
    assert len(fits) == 8
    history = wandb_history(offline_wandb)
    assert history["live/leading_modulus"] == pytest.approx({f.step: f.leading_modulus for f in fits}, rel=1e-12)
    assert history["live/leading_modulus"][fits[-1].step] == pytest.approx(0.95, abs=1e-9)
    assert history["live/transition"] == pytest.approx({f.step: f.transition for f in fits[1:]}, rel=1e-12)


def test_live_fits_go_to_mlflow_at_their_steps(mlflow_store):
    from mlflow.tracking import MlflowClient

    fits = _planted_fits(LiveOptions(window=10, every=5, sketch=64, forecast=2, log_to=f"mlflow:{mlflow_store}"))
    client = MlflowClient(tracking_uri=mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("traj").experiment_id])
    assert run.info.status == "FINISHED"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "live/leading_modulus")}
    assert history == pytest.approx({f.step: f.leading_modulus for f in fits}, rel=1e-12)
    assert history[fits[-1].step] == pytest.approx(0.95, abs=1e-9)
    assert {m.step for m in client.get_metric_history(run.info.run_id, "live/transition")} == {f.step for f in fits[1:]}


def test_tracker_specs_are_checked_before_any_work(monkeypatch, tmp_path):
    assert parse_tracker("wandb") == ("wandb", "traj") if _has("wandb") else True
    for spec, message in [("comet", "'comet' is not a tracker"), ("mlflow", "mlflow needs a tracking URI: mlflow:URI"),
                          ("tensorboard:", "tensorboard needs a log directory")]:
        with pytest.raises(ParameterError, match=message):
            parse_tracker(spec)
        with pytest.raises(ParameterError, match=message):
            LiveOptions(log_to=spec)
    # a missing package is named with its extra, before any work (the CLI: one line, exit 2, nothing written)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrajError, match=r"wandb output needs the wandb package \(pip install 'traj\[wandb\]'\)"):
        parse_tracker("wandb")
    result = runner.invoke(app, ["dmd", "sample_data/digits-cnn.zarr", "--out", str(tmp_path / "out"), "--log-to", "wandb"])
    assert result.exit_code == 2 and "pip install 'traj[wandb]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_tracking_uri_mlflow_refuses_is_one_line(mlflow_store):
    with pytest.raises(TrajError, match="MLflow could not start a run at nosuch://x: ") as info:
        LiveOptions(window=4, every=2, forecast=0, log_to="mlflow:nosuch://x").start(10, "float64")
    assert "\n" not in str(info.value)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
