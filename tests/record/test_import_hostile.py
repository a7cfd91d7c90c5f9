"""Issue 24: hostile sources for ``traj import`` and ``masks.zarr``. Each case reproduces a red-team
failure (a hang, a traceback, memory blow-up, a false message or a silently wrong store) and must
end as exit 2 with one line naming the file and the cause, or as a correct result.

Hangs and memory bombs run the CLI in a child process with an address-space limit and a
timeout (``run_child``), so a regression fails the test instead of taking the machine."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from tests.store.test_hostile_stores import run_child
from traj.analysis.masks import MASKS_FORMAT, apply_masks
from traj.cli.app import app
from traj.errors import (
    DamagedStoreError,
    ImportSourceError,
    LayoutMismatchError,
    RecorderError,
    TrajError,
)
from traj.prunable import prunable_mask
from traj.record.importers import import_source
from traj.store import Layout, RunStore, StoreWriter
from traj.store.run_store import MAX_METRICS

runner = CliRunner()
GiB = 1 << 30


def refused(result, *words: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr, starting ``error:`` and holding every word."""
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "weights_only" not in lines[0] and "torch.load" not in lines[0]
    return lines[0]


def child_refused(args: list, *words: str, timeout: float = 60, address_space: int = 3 * GiB) -> float:
    """``traj ARGS`` in a bounded child: exit 2, one ``error:`` line with every word; returns peak RSS (MiB)."""
    code, stderr, peak = run_child([str(a) for a in args], timeout=timeout, address_space=address_space)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-2000:]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return peak


def run_import(source: Path, out: Path, *extra: str):
    return runner.invoke(app, ["import", str(source), "--out", str(out), *extra])


def two_checkpoints(d: Path, n: int = 4) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for step in (1, 2):
        torch.save({"w": torch.full((n,), float(step))}, d / f"ck_{step}.pt")
    return d


# ---------------------------------------------------------------------- 1. FIFOs and devices
def test_a_fifo_among_checkpoints_is_refused_not_waited_on(tmp_path):
    d = two_checkpoints(tmp_path / "d")
    (d / "ck_2.pt").unlink()
    os.mkfifo(d / "ck_2.pt")  # zipfile.is_zipfile blocked on it forever
    child_refused(["import", d, "--out", tmp_path / "s.zarr"], "ck_2.pt", "not a regular file", "FIFO")
    assert not (tmp_path / "s.zarr").exists()


def test_a_fifo_given_as_the_source_says_what_it_is(tmp_path):
    os.mkfifo(tmp_path / "fifo.pt")
    # it said "fifo.pt: Not a directory"
    child_refused(["import", tmp_path / "fifo.pt", "--out", tmp_path / "s.zarr"], "fifo.pt", "not a regular file (a FIFO)")


@pytest.mark.parametrize("how", ["symlink", "source"])
def test_dev_zero_as_a_checkpoint_is_refused_without_reading_it(tmp_path, how):
    d = two_checkpoints(tmp_path / "d")
    if how == "symlink":
        (d / "ck_2.pt").unlink()
        (d / "ck_2.pt").symlink_to("/dev/zero")
        source = d
    else:
        source = tmp_path / "zero.pt"
        source.symlink_to("/dev/zero")
    peak = child_refused(["import", source, "--out", tmp_path / "s.zarr"], "not a regular file", "character device",
                         address_space=2 * GiB)
    assert peak < 1024  # it read until memory ran out


def _dcp_save(state, path):
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.save(state, checkpoint_id=str(path), no_dist=True)


def test_a_dcp_data_file_that_is_a_fifo(tmp_path):
    _dcp_save({"model": {"w": torch.arange(4.0)}, "step": 3}, tmp_path / "c")
    data = next((tmp_path / "c").glob("*.distcp"))
    data.unlink()
    os.mkfifo(data)
    child_refused(["import", tmp_path / "c", "--out", tmp_path / "s.zarr"], data.name, "not a regular file", "FIFO")


def test_a_fifo_trainer_state_or_model_file(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    save_file({"w": torch.ones(3)}, str(folder / "model.safetensors"))
    os.mkfifo(folder / "trainer_state.json")
    child_refused(["import", folder, "--out", tmp_path / "a.zarr"], "trainer_state.json", "FIFO")
    (folder / "trainer_state.json").unlink()
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    child_refused(["import", folder, "--out", tmp_path / "b.zarr"], "model.safetensors", "FIFO")


def test_a_fifo_npy(tmp_path):
    os.mkfifo(tmp_path / "x.npy")
    child_refused(["import", tmp_path / "x.npy", "--out", tmp_path / "s.zarr"], "x.npy", "FIFO")


# ---------------------------------------------------------------------- masks.zarr (1, 3, 12)
def _masks(path: Path, shapes, prunable, keep) -> Layout:
    layout = Layout.from_shapes(shapes, prunable=prunable)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({"traj": dict(MASKS_FORMAT), "layout": layout.to_attrs()})
    group.create_array("prunable", data=prunable_mask(layout))
    group.require_group("kmp").create_array("c8", data=np.asarray(keep, dtype=bool))
    return layout


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("scale", torch.ones(2))


LINEAR = [("lin.weight", (2, 3)), ("lin.bias", (2,))]


def _alarm(seconds: int):
    def boom(*_):
        raise TimeoutError("blocked")
    signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)


def test_masks_with_a_fifo_chunk_are_refused_not_waited_on(tmp_path):
    path = tmp_path / "masks.zarr"
    _masks(path, LINEAR, ["lin.weight"], [1, 0, 1, 0, 1, 1, 1, 1])
    model = _Net()
    apply_masks(model, path)  # the untouched file works: 2 of 6 weights dropped
    assert int((model.lin.weight == 0).sum()) == 2
    chunk = next((path / "kmp" / "c8" / "c").rglob("*"))
    chunk.unlink()
    os.mkfifo(chunk)
    _alarm(20)
    try:
        with pytest.raises(DamagedStoreError, match="not a regular file"):
            apply_masks(_Net(), path)
    finally:
        signal.alarm(0)


def run_python(code: str, *, address_space: int = 2 * GiB, timeout: float = 60) -> str:
    """stdout of ``python -c CODE`` under an address-space limit (a regression fails, never takes the machine)."""
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))\n"
    done = subprocess.run([sys.executable, "-c", limit + code], capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def test_a_masks_shape_edited_to_gigabytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "masks.zarr"
    _masks(path, LINEAR, ["lin.weight"], [1, 0, 1, 0, 1, 1, 1, 1])
    meta = path / "kmp" / "c8" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"] = [3_200_000_000]
    meta.write_text(json.dumps(doc))
    # refused before any read; the old code allocated 3.2 GB and more (in a child: a regression must not take the machine)
    output = run_python("from traj.analysis.masks import load_mask\n"
                        f"try:\n    load_mask({str(path)!r}, 'kmp', 8)\nexcept Exception as e:\n"
                        "    print(type(e).__name__, e)")
    assert output.startswith("StoreFormatError") and "declares shape [3200000000], its layout has 8 parameters" in output, \
        output[-2000:]


def test_apply_masks_errors_are_typed_and_name_the_parameter(tmp_path):
    path = tmp_path / "masks.zarr"
    # the layout records the buffer 'scale' (an imported state_dict does) and the mask drops a value of it
    _masks(path, [*LINEAR, ("scale", (2,))], ["lin.weight"], [1] * 8 + [0, 1])
    with pytest.raises(LayoutMismatchError, match="'scale', which is a buffer"):  # was a raw TypeError
        apply_masks(_Net(), path)
    with pytest.raises(TrajError, match="compression must be a number"):  # was a raw ValueError from float()
        apply_masks(_Net(), path, compression="eight")
    # a layout whose shape differs from the model is refused before any mask is read
    _masks(tmp_path / "other.zarr", [("lin.weight", (3, 2)), ("lin.bias", (2,))], ["lin.weight"], [1] * 8)
    with pytest.raises(LayoutMismatchError, match=r"'lin.weight' has shape \[2, 3\]"):
        apply_masks(_Net(), tmp_path / "other.zarr")


# ---------------------------------------------------------------------- 2. views larger than their storage
def test_overlapping_strided_views_are_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    base = torch.randn(1_000_000)  # 4 MB in the file
    views = {f"w{i}": torch.as_strided(base, (1000, 999), (999, 1), i) for i in range(80)}
    for step in (1, 2):
        torch.save(views, d / f"ck_{step}.pt")
    assert os.path.getsize(d / "ck_1.pt") < 5_000_000
    refused(run_import(d, tmp_path / "s.zarr"), "ck_1.pt", "'w1'", "1000000 values as 1998000", "overlapping views")
    assert not (tmp_path / "s.zarr").exists()


def test_an_expanded_tensor_is_refused_without_allocating(tmp_path):
    torch.save({"w": torch.zeros(1).expand(2_000_000_000)}, tmp_path / "x.pt")
    child_refused(["import", tmp_path / "x.pt", "--out", tmp_path / "s.zarr"], "x.pt", "'w'",
                  "declares 2000000000 values over 1 stored", address_space=3 * GiB)


def test_views_that_share_a_storage_without_overlap_still_import(tmp_path):
    flat = torch.arange(12, dtype=torch.float32)
    torch.save({"a": flat[:6].view(2, 3), "b": flat[6:]}, tmp_path / "x.pt")
    store = import_source(tmp_path / "x.pt", tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.read()[0], np.arange(12, dtype=np.float32))


# ---------------------------------------------------------------------- 9. sparse and meta tensors
@pytest.mark.parametrize(("make", "word"), [
    (lambda: torch.eye(3).to_sparse(), "sparse tensor"),
    (lambda: torch.empty(3, 3, device="meta"), "meta tensor"),
])
def test_sparse_and_meta_tensors_are_one_line(tmp_path, make, word):
    torch.save({"w": make(), "b": torch.ones(3)}, tmp_path / "x.pt")
    refused(run_import(tmp_path / "x.pt", tmp_path / "s.zarr"), "x.pt", "'w'", word)


# ---------------------------------------------------------------------- 4. JSON bounds
def _hf_checkpoint(folder: Path, step: int, state: dict | None = None, n: int = 3) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.full((n,), float(step))}, str(folder / "model.safetensors"))
    if state is not None:
        (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_a_sparse_trainer_state_is_refused_in_bounded_memory(tmp_path):
    folder = _hf_checkpoint(tmp_path / "checkpoint-2", 2)
    with open(folder / "trainer_state.json", "wb") as f:
        f.truncate(2_500_000_000)  # 0 bytes on disk; json.loads took 5.4 GB
    peak = child_refused(["import", folder, "--out", tmp_path / "s.zarr"], "trainer_state.json", "2500000000 bytes",
                         "at most 64 MiB", address_space=3 * GiB)
    assert peak < 1024


def test_a_sparse_safetensors_index_is_refused(tmp_path):
    folder = _hf_checkpoint(tmp_path / "checkpoint-2", 2)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    with open(folder / "model.safetensors.index.json", "wb") as f:
        f.truncate(2_500_000_000)
    child_refused(["import", folder, "--out", tmp_path / "s.zarr"], "model.safetensors.index.json", "at most 64 MiB")


def test_deeply_nested_json_is_one_line_not_a_recursion_error(tmp_path):
    folder = _hf_checkpoint(tmp_path / "checkpoint-2", 2)
    (folder / "trainer_state.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(run_import(folder, tmp_path / "s.zarr"), "trainer_state.json", "nested 100000 deep")
    # brackets inside strings are not nesting
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2, "note": "[" * 1000}))
    assert int(import_source(folder, tmp_path / "t.zarr").steps[0]) == 2


# ---------------------------------------------------------------------- 5. .npy memory per row
def test_npy_import_memory_does_not_grow_with_rows(tmp_path):
    """A 1.2 MB .npy of 300 000 rows x 1 column took 0.8-1.1 KB of RAM per row (the issue: 4M rows, 3.2 GB)."""
    np.save(tmp_path / "small.npy", np.random.default_rng(0).random((10, 1), dtype=np.float32))
    np.save(tmp_path / "tall.npy", np.random.default_rng(0).random((300_000, 1), dtype=np.float32))
    peaks = {}
    for name in ("small", "tall"):
        code, stderr, peak = run_child(["import", str(tmp_path / f"{name}.npy"), "--out", str(tmp_path / f"{name}.zarr")],
                                       timeout=240)
        assert code == 0, stderr
        peaks[name] = peak
    assert RunStore(tmp_path / "tall.zarr").n_snapshots == 300_000
    # the writer keeps step/epoch/time of every row (~24 B) and reopening reads them back: 100 MiB
    # allows ~350 B/row; buffering the rows as dicts took ~330 MiB here
    assert peaks["tall"] - peaks["small"] < 100, peaks


# ---------------------------------------------------------------------- 6. numbers beyond int64
def test_steps_in_names_beyond_int64_are_refused_not_merged(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("step_1000000000000000019884624838656.pt", "step_1000000000000000019884624838657.pt"):
        torch.save({"w": torch.ones(2)}, d / name)
    line = refused(run_import(d, tmp_path / "s.zarr"), "step_1000000000000000019884624838656.pt",
                   "beyond 9223372036854775807")
    assert "two checkpoints" not in line
    for f in d.iterdir():
        f.unlink()
    torch.save({"w": torch.ones(2)}, d / ("s" + "7" * 200 + ".pt"))
    torch.save({"w": torch.ones(2)}, d / "s1.pt")
    refused(run_import(d, tmp_path / "s.zarr"), "(200 digits)", "beyond")


@pytest.mark.parametrize("key", ["step", "global_step", "epoch"])
def test_step_and_epoch_entries_of_a_pt_beyond_int64(tmp_path, key):
    d = tmp_path / "d"
    d.mkdir()
    torch.save({"w": torch.ones(2), "step": 1, key: 2**70}, d / "a.pt")
    torch.save({"w": torch.ones(2), "step": 2}, d / "b.pt")
    what = "epoch" if key == "epoch" else "step"
    refused(run_import(d, tmp_path / "s.zarr"), "a.pt", f"the {what}", "1180591620717411303424", "out of range")


def test_safetensors_metadata_steps_beyond_int64(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "a.safetensors"), metadata={"step": "9" * 30})
    refused(run_import(tmp_path / "a.safetensors", tmp_path / "s.zarr"), "a.safetensors", "step", "30 digits", "beyond")
    save_file({"w": torch.ones(2)}, str(tmp_path / "b.safetensors"), metadata={"step": "9" * 5000})
    refused(run_import(tmp_path / "b.safetensors", tmp_path / "s.zarr"), "b.safetensors", "5000 digits")


def test_trainer_state_steps_beyond_int64_and_a_huge_loss(tmp_path):
    root = tmp_path / "out"
    for k, step in enumerate((10**30, 10**30 + 1)):
        _hf_checkpoint(root / f"checkpoint-{k + 1}", k + 1, {"global_step": step, "epoch": 1.0, "log_history": []})
    line = refused(run_import(root, tmp_path / "s.zarr"), "checkpoint-", str(10**30), "out of range")
    assert "two checkpoints" not in line
    # a loss beyond float range is an infinite loss, stored as such; a metric likewise
    other = tmp_path / "other"
    _hf_checkpoint(other / "checkpoint-5", 5, {"global_step": 5, "log_history": [
        {"step": 5, "loss": 10**400, "grad_norm": -(10**400), "learning_rate": 1e-3}]})
    store = import_source(other, tmp_path / "t.zarr")
    assert math.isinf(store.loss[0]) and store.loss[0] > 0
    assert store.metric("grad_norm")[0] == -math.inf and store.metric("learning_rate")[0] == 1e-3


def test_dcp_step_beyond_int64(tmp_path):
    _dcp_save({"model": {"w": torch.arange(4.0)}, "step": 2**70}, tmp_path / "c")
    refused(run_import(tmp_path / "c", tmp_path / "s.zarr"), "c:", "1180591620717411303424", "out of range")


# ---------------------------------------------------------------------- 7. zero parameters
def test_a_source_with_no_values_is_refused_at_import(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for step in (1, 2):
        torch.save({"w": torch.zeros(0), "b": torch.zeros(0, 3)}, d / f"ck_{step}.pt")
    refused(run_import(d, tmp_path / "s.zarr"), "no floating-point tensors to record in ck_1.pt")
    assert not (tmp_path / "s.zarr").exists()


# ---------------------------------------------------------------------- 8. metric names
@pytest.mark.parametrize(("name", "words"), [
    ("acc\x00top1", ["'acc\\x00top1'", "control character"]),
    ("eval\x1b[31mred", ["control character"]),
    ("m" * 300, ["300 bytes long"]),
    ("zarr.json", ["'zarr.json'", "metadata file"]),
])
def test_bad_metric_names_in_trainer_state_are_one_line_naming_them(tmp_path, name, words):
    folder = _hf_checkpoint(tmp_path / "checkpoint-3", 3, {"global_step": 3, "log_history": [
        {"step": 3, "loss": 0.5, name: 1.0}]})
    refused(run_import(folder, tmp_path / "s.zarr"), "checkpoint-3", "metric name", *words)


@pytest.mark.parametrize(("name", "words"), [
    ("a\x00b", ["'a\\x00b'", "control character"]),
    ("n" * 300, ["300 bytes long"]),
    ("zarr.json", ["metadata file"]),
])
def test_the_writer_refuses_bad_metric_names_before_writing(tmp_path, name, words):
    layout = Layout.from_shapes([("w", (3,))])
    writer = StoreWriter(tmp_path / "s.zarr", layout)
    with pytest.raises(RecorderError) as caught:
        writer.append(np.zeros(3, np.float32), step=0, metrics={name: 1.0})
    for word in words:
        assert word in str(caught.value)
    assert "\x00" not in str(caught.value) and "\n" not in str(caught.value)
    writer.append(np.zeros(3, np.float32), step=0, metrics={"ok": 1.0})
    writer.close()
    assert RunStore(tmp_path / "s.zarr").metric_names == ["ok"]


# ---------------------------------------------------------------------- 10. DCP chunks
def _edit_dcp(folder: Path, change) -> None:
    import torch.distributed.checkpoint.metadata as md  # noqa: F401  (the classes the pickle names)

    meta = pickle.loads((folder / ".metadata").read_bytes())  # the test's own file
    change(meta)
    (folder / ".metadata").write_bytes(pickle.dumps(meta))


def _chunk(offsets, sizes):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

    return ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes))


def _resize(fqn, size, chunks):
    def change(meta):
        entry = meta.state_dict_metadata[fqn]
        entry.size = torch.Size(size)
        entry.chunks = chunks
    return change


def test_dcp_chunks_that_overlap_are_refused_not_left_uninitialised(tmp_path):
    _dcp_save({"model": {"w": torch.arange(4.0)}, "step": 3}, tmp_path / "c")
    # two chunks at offset 0: 8 values "covered", the last 4 never written (1.54e+30, 4.6e-41 in the store)
    _edit_dcp(tmp_path / "c", _resize("model.w", (8,), [_chunk((0,), (4,)), _chunk((0,), (4,))]))
    refused(run_import(tmp_path / "c", tmp_path / "s.zarr"), "'model.w'", "overlap")
    assert not (tmp_path / "s.zarr").exists()


def test_dcp_chunks_that_leave_a_gap_or_lie_outside(tmp_path):
    _dcp_save({"model": {"w": torch.arange(4.0)}, "step": 3}, tmp_path / "c")
    _edit_dcp(tmp_path / "c", _resize("model.w", (8,), [_chunk((0,), (4,))]))
    refused(run_import(tmp_path / "c", tmp_path / "s.zarr"), "'model.w'", "hold 4 values", "has 8", "gap")
    _edit_dcp(tmp_path / "c", _resize("model.w", (8,), [_chunk((6,), (4,))]))
    refused(run_import(tmp_path / "c", tmp_path / "s.zarr"), "'model.w'", "at offsets [6]", "outside its shape [8]")


def test_a_dcp_tensor_larger_than_its_files_is_refused_before_allocating(tmp_path):
    _dcp_save({"model": {"w": torch.arange(4.0)}, "step": 3}, tmp_path / "c")
    _edit_dcp(tmp_path / "c", _resize("model.w", (2**40,), [_chunk((0,), (2**40,))]))
    child_refused(["import", tmp_path / "c", "--out", tmp_path / "s.zarr"], "'model.w'", "4398046511104 bytes",
                  address_space=2 * GiB)


def test_a_dcp_item_that_names_code_does_not_quote_torch_advice(tmp_path):
    _dcp_save({"model": {"w": torch.arange(4.0)}, "step": 3}, tmp_path / "c")
    data = next((tmp_path / "c").glob("*.distcp"))
    meta = pickle.loads((tmp_path / "c" / ".metadata").read_bytes())
    info = next(v for k, v in meta.storage_data.items() if k.fqn == "model.w")
    raw = bytearray(data.read_bytes())
    raw[info.offset : info.offset + info.length] = b"\0" * info.length  # not a torch.save any more
    data.write_bytes(bytes(raw))
    refused(run_import(tmp_path / "c", tmp_path / "s.zarr"), "'model.w'", "not a loadable tensor")


# ---------------------------------------------------------------------- 11. more metrics than a store opens
def test_a_trainer_state_with_20000_log_keys_imports_fast_into_a_store_that_opens(tmp_path):
    root = tmp_path / "out"
    keys = {f"eval_class_{k:05d}_acc": k / 20_000 for k in range(20_000)}
    for step in (2, 4):
        _hf_checkpoint(root / f"checkpoint-{step}", step, {"global_step": step, "epoch": step / 4, "log_history": [
            {"step": s, "loss": 1.0 / s, **keys} for s in (2, 4)]})
    t0 = time.perf_counter()
    result = run_import(root, tmp_path / "s.zarr")
    seconds = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    assert seconds < 30, seconds  # was 77 s and 80 000 files
    assert f"not imported: {20_000 - MAX_METRICS} logged metric(s) past the first {MAX_METRICS}" in result.stderr
    info = runner.invoke(app, ["info", str(tmp_path / "s.zarr")])
    assert info.exit_code == 0, info.output
    store = RunStore(tmp_path / "s.zarr")
    assert len(store.metric_names) == MAX_METRICS
    assert store.metric_names[0] == "eval_class_00000_acc" and store.metric_names[-1] == "eval_class_00255_acc"
    np.testing.assert_array_equal(store.metric("eval_class_00100_acc"), [100 / 20_000] * 2)
    assert sum(1 for _ in (tmp_path / "s.zarr").rglob("*")) < 5 * MAX_METRICS + 100


def test_the_writer_keeps_the_first_metric_names_a_store_opens(tmp_path):
    layout = Layout.from_shapes([("w", (3,))])
    writer = StoreWriter(tmp_path / "s.zarr", layout)
    names = [f"class_{k:04d}" for k in range(MAX_METRICS + 44)]
    writer.append(np.zeros(3, np.float32), step=0, metrics={n: 1.0 for n in names[:200]})
    writer.commit()
    writer.append(np.ones(3, np.float32), step=1, metrics={n: 2.0 for n in names})  # in the order logged
    writer.close()
    assert writer.dropped_metrics == names[MAX_METRICS:]
    store = RunStore(tmp_path / "s.zarr")  # 300 metric arrays: no reader opened it
    assert store.metric_names == sorted(names[:MAX_METRICS])
    np.testing.assert_array_equal(store.metric("class_0000"), [1.0, 2.0])
    np.testing.assert_array_equal(store.metric("class_0255"), [np.nan, 2.0])


def test_errors_are_import_source_errors(tmp_path):
    """The library raises the typed error (the CLI's one line comes from it)."""
    d = two_checkpoints(tmp_path / "d")
    torch.save({"w": torch.zeros(1).expand(10)}, d / "ck_3.pt")
    with pytest.raises(ImportSourceError, match="ck_3.pt: parameter 'w' declares 10 values over 1"):
        import_source(d, tmp_path / "s.zarr")
