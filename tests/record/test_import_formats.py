"""``traj import`` on the layouts real frameworks write: Hugging Face Trainer output, safetensors,
torch.distributed.checkpoint, Lightning .ckpt and sharded checkpoints."""

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from traj.cli.app import app
from traj.errors import ImportSourceError
from traj.record.importers import import_source, scan_source

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LEAFSPEC = r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"  # lightning 2.6 under torch 2.13
NO_DIST = "ignore:torch.distributed is disabled:UserWarning"  # dcp.save without a process group says so


def _store_tensor(store, k, name):
    entry = store.layout[name]
    return store.snapshot(k)[entry.columns].reshape(entry.shape)


def _same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------- Hugging Face
def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n=48):
        self.x = torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


@pytest.fixture(scope="module")
def hf_output(tmp_path_factory):
    """A real Trainer run: tiny GPT-2, 18 steps, a checkpoint every 6, loss every 3, eval every 6."""
    from transformers import Trainer, TrainingArguments

    out = tmp_path_factory.mktemp("hf") / "output"
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, max_steps=18, save_steps=6,
                             logging_steps=3, eval_strategy="steps", eval_steps=6, per_device_eval_batch_size=16,
                             learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    Trainer(model=_tiny_gpt2(), args=args, train_dataset=_Tokens(), eval_dataset=_Tokens(16)).train()
    return out


def test_hf_trainer_output_imports_bit_for_bit_with_its_logs(hf_output, tmp_path):
    from safetensors import safe_open

    found = []
    store = import_source(hf_output, tmp_path / "run.zarr", on_found=found.append)
    assert found[0].kind == "hf-trainer" and "3 checkpoints" in found[0].description
    assert any("never opened" in n and "optimizer.pt" in n and "training_args.bin" in n for n in found[0].notes)
    np.testing.assert_array_equal(store.steps, [6, 12, 18])
    state = json.loads((hf_output / "checkpoint-18" / "trainer_state.json").read_text())
    # 48 samples / 8 = 6 steps per epoch: steps 6, 12, 18 end epochs 0, 1, 2 (state.epoch 1.0, 2.0, 3.0)
    np.testing.assert_array_equal(store.epochs, [0, 1, 2])
    for k, step in enumerate(store.steps):
        with safe_open(str(hf_output / f"checkpoint-{step}" / "model.safetensors"), "pt") as f:
            assert sorted(store.layout.names) == sorted(f.keys())
            for name in f.keys():
                assert _same_bits(_store_tensor(store, k, name), f.get_tensor(name).numpy()), name
    # GPT-2's lm_head is tied to the token embedding: safetensors holds it once, so does the store
    assert "transformer.wte.weight" in store.layout and "lm_head.weight" not in store.layout
    logged = {}
    for entry in state["log_history"]:
        logged.setdefault(entry["step"], {}).update(entry)
    expected_loss = [logged.get(int(s), {}).get("loss", math.nan) for s in store.steps]
    np.testing.assert_array_equal(store.loss, expected_loss)
    assert not np.isnan(store.loss).any()  # 6 is a multiple of logging_steps=3
    for name in ("learning_rate", "grad_norm", "eval_loss"):
        np.testing.assert_array_equal(store.metric(name), [logged[int(s)][name] for s in store.steps])
    assert store.spacing == {"unit": "checkpoint"}


def test_one_hf_checkpoint_folder_is_one_snapshot_and_state_files_are_never_opened(hf_output, tmp_path):
    folder = tmp_path / "checkpoint-12"
    shutil.copytree(hf_output / "checkpoint-12", folder)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (folder / name).write_bytes(b"garbage: opening this would fail")
    store = import_source(folder, tmp_path / "one.zarr")
    assert store.n_snapshots == 1 and int(store.steps[0]) == 12 and int(store.epochs[0]) == 1
    whole = import_source(hf_output, tmp_path / "all.zarr")
    assert _same_bits(store.snapshot(0), whole.snapshot(1))


def test_hf_sharded_and_bin_folders_match_the_single_file(tmp_path):
    model = _tiny_gpt2()
    model.save_pretrained(tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "single" / "config.json", tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")  # transformers 4's format: tied keys share storage
    single = import_source(tmp_path / "single", tmp_path / "a.zarr")
    sharded = import_source(tmp_path / "sharded", tmp_path / "b.zarr")
    binary = import_source(tmp_path / "bin", tmp_path / "c.zarr")
    assert single.n_snapshots == 1 and int(single.steps[0]) == 0
    assert sharded.layout == single.layout and _same_bits(sharded.read(), single.read())
    # the .bin holds lm_head.weight and transformer.wte.weight as one storage: recorded once, under the first name
    assert "lm_head.weight" not in binary.layout and "transformer.wte.weight" in binary.layout
    assert sorted(binary.layout.names) == sorted(single.layout.names)
    for name in single.layout.names:
        assert _same_bits(_store_tensor(binary, 0, name), _store_tensor(single, 0, name))


def test_trainer_checkpoint_with_fsdp_sharded_weights(tmp_path):
    """Trainer + accelerate under FSDP's SHARDED_STATE_DICT: checkpoint-N/pytorch_model_fsdp_0/ is DCP of {"model": ...}."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    folder = tmp_path / "out" / "checkpoint-7"
    _dcp_save({"model": model.state_dict()}, folder / "pytorch_model_fsdp_0")
    (folder / "trainer_state.json").write_text(json.dumps(
        {"global_step": 7, "epoch": 0.5, "log_history": [{"step": 7, "loss": 1.25, "epoch": 0.5}]}))
    store = import_source(tmp_path / "out", tmp_path / "s.zarr")
    assert store.layout.names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert int(store.steps[0]) == 7 and int(store.epochs[0]) == 0 and store.loss.tolist() == [1.25]
    for name, tensor in model.state_dict().items():
        assert _same_bits(_store_tensor(store, 0, name), tensor.numpy())


# ---------------------------------------------------------------------- safetensors
def test_safetensors_folder_steps_from_metadata_or_name(tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "st"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    written = {}
    for step in (300, 20, 100):
        tensors = {"layer.10.weight": torch.randn(3, 4, generator=g), "layer.2.weight": torch.randn(2, 4, generator=g),
                   "layer.2.bias": torch.randn(2, generator=g).to(torch.bfloat16), "count": torch.arange(3)}
        written[step] = tensors
        save_file(tensors, d / f"step_{step}.safetensors", metadata={"epoch": str(step // 100)})
    store = import_source(d, tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.steps, [20, 100, 300])
    np.testing.assert_array_equal(store.epochs, [0, 1, 3])
    assert store.layout.names == ["layer.2.bias", "layer.2.weight", "layer.10.weight"]  # natural order; ints left out
    for k, step in enumerate((20, 100, 300)):
        for name in store.layout.names:
            assert _same_bits(_store_tensor(store, k, name), written[step][name].float().numpy())
    save_file({"w": torch.zeros(2)}, tmp_path / "ckpt.safetensors", metadata={"global_step": "41"})
    assert int(import_source(tmp_path / "ckpt.safetensors", tmp_path / "one.zarr").steps[0]) == 41


_RSS_CHILD = """
import resource, sys
import numpy as np, torch, zarr, safetensors
from traj.record.importers import import_source
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = import_source(sys.argv[1], sys.argv[2], block_bytes=8 << 20)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, store.n_snapshots)
"""


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_checkpoints_larger_than_the_budget_import_in_bounded_memory(tmp_path, fmt):
    """Two 128 MiB checkpoints (4 tensors of 32 MiB) through an 8 MiB budget: the child's peak RSS
    grows by about a tensor (torch.save files) or a slice of one (safetensors), never by a checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    d = tmp_path / "big"
    d.mkdir()
    for step in (1, 2):
        tensors = {f"layer{i}.weight": torch.arange(2048 * 4096, dtype=torch.float32).reshape(2048, 4096) * (i + step)
                   for i in range(4)}
        if fmt == "safetensors":
            save_file(tensors, d / f"step_{step}.safetensors")
        else:
            torch.save(tensors, d / f"step_{step}.pt")
        del tensors
    size = (d / f"step_1.{fmt}").stat().st_size
    run = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(d), str(tmp_path / "s.zarr")], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0, run.stderr
    grown, n = (int(v) for v in run.stdout.split())
    assert n == 2 and size > 128e6
    limit = size / 4 if fmt == "safetensors" else size / 2  # a 32 MiB tensor is a quarter of the file
    assert grown < limit, f"peak RSS grew by {grown / 1e6:.0f} MB for {size / 1e6:.0f} MB checkpoints"
    from traj.store import RunStore

    store = RunStore(tmp_path / "s.zarr")
    entry = store.layout["layer3.weight"]
    last = store.read(rows=slice(1, 2), columns=entry.columns)[0].reshape(entry.shape)
    if fmt == "safetensors":
        with safe_open(str(d / "step_2.safetensors"), "pt") as f:
            assert _same_bits(last, f.get_tensor("layer3.weight").numpy())
    else:
        assert _same_bits(last, torch.load(d / "step_2.pt", weights_only=True)["layer3.weight"].numpy())


# ---------------------------------------------------------------------- torch.distributed.checkpoint
def _dcp_save(state, path):
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.save(state, checkpoint_id=str(path), no_dist=True)


def test_dcp_directories_without_a_process_group(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    saved = {}
    for step in (1, 2, 3):
        model(torch.randn(4, 5)).sum().backward()
        opt.step()
        opt.zero_grad()
        _dcp_save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step * 10}, tmp_path / "ckpts" / f"s{step}")
        saved[step * 10] = {k: v.clone() for k, v in model.state_dict().items()}
    found = []
    store = import_source(tmp_path / "ckpts", tmp_path / "d.zarr", on_found=found.append)
    assert found[0].kind == "dcp"
    np.testing.assert_array_equal(store.steps, [10, 20, 30])  # from the 'step' entry, not the names
    assert store.layout.names == ["0.weight", "0.bias", "2.weight", "2.bias"]  # the optimizer's tensors are not read
    for k, step in enumerate(store.steps):
        for name, tensor in saved[int(step)].items():
            assert _same_bits(_store_tensor(store, k, name), tensor.numpy())
    # a flat state_dict saved directly: one checkpoint directory is one snapshot
    _dcp_save(model.state_dict(), tmp_path / "flat")
    flat = import_source(tmp_path / "flat", tmp_path / "f.zarr")
    assert flat.n_snapshots == 1 and _same_bits(flat.snapshot(0), store.snapshot(2))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_dcp_metadata_that_names_code_is_refused(tmp_path):
    _dcp_save({"w": torch.zeros(3)}, tmp_path / "c")
    (tmp_path / "c" / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ImportSourceError, match=r"names (posix|os)\.system, which is not DCP checkpoint metadata"):
            import_source(tmp_path / "c", tmp_path / "s.zarr")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "s.zarr").exists()


_FSDP_CHILD = """
import os, sys, torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
from torch.distributed.fsdp import fully_shard
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict
rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
for layer in (model[0], model[2]):
    fully_shard(layer)
fully_shard(model)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for step in (1, 2):
    model(torch.randn(4, 5)).sum().backward(); opt.step(); opt.zero_grad()
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=f"{out}/step_{step}")
full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank == 0:
    torch.save(full, f"{out}.full.pt")
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_dcp_written_by_fsdp_on_two_ranks(tmp_path):
    """FSDP2 with gloo on 2 CPU processes: every tensor is split across the ranks' files."""
    out = tmp_path / "fsdp"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _FSDP_CHILD, str(r), str(out)], env=env, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert sorted(p.name for p in (out / "step_2").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    store = import_source(out, tmp_path / "f.zarr")
    np.testing.assert_array_equal(store.steps, [1, 2])
    full = torch.load(f"{out}.full.pt", weights_only=True)
    for name, tensor in full.items():
        assert _same_bits(_store_tensor(store, 1, name), tensor.numpy())


# ---------------------------------------------------------------------- Lightning
def _lightning_fit(dirpath, *, sharded=False):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

    class Regressor(pl.LightningModule):
        def __init__(self, hidden=8):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

        def training_step(self, batch, i):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class ShardedOnCPU(SingleDeviceStrategy):
        """Lightning's own sharded writer (FSDPStrategy, state_dict_type="sharded"), which needs a GPU to train."""

        def save_checkpoint(self, checkpoint, filepath, storage_options=None):
            FSDPStrategy(state_dict_type="sharded").save_checkpoint(checkpoint, filepath)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=dirpath, every_n_train_steps=4, save_top_k=-1, save_last=not sharded,
                                 monitor="train/loss", filename="{epoch}-{step}")
    kwargs = {"strategy": ShardedOnCPU(device=torch.device("cpu"))} if sharded else {}
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoint], **kwargs)
    trainer.fit(Regressor(), data)


@pytest.mark.filterwarnings(LEAFSPEC)
def test_lightning_ckpt_files_with_what_they_log(tmp_path):
    _lightning_fit(tmp_path / "ckpts")
    assert (tmp_path / "ckpts" / "last.ckpt").exists()
    found = []
    store = import_source(tmp_path / "ckpts", tmp_path / "l.zarr", on_found=found.append)
    assert found[0].kind == "lightning" and any("last.ckpt" in n for n in found[0].notes)
    np.testing.assert_array_equal(store.steps, [4, 8, 12, 16])
    np.testing.assert_array_equal(store.epochs, [0, 0, 1, 1])
    assert store.loss is None  # a .ckpt does not hold the training loss
    files = sorted((tmp_path / "ckpts").glob("epoch=*.ckpt"), key=lambda p: int(p.stem.split("=")[-1]))
    for k, path in enumerate(files):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["global_step"] == store.steps[k]
        for name, tensor in ckpt["state_dict"].items():
            assert _same_bits(_store_tensor(store, k, name), tensor.numpy())
        (monitor_state,) = [v for v in ckpt["callbacks"].values() if v.get("monitor") == "train/loss"]
        assert store.metric("train_loss")[k] == float(monitor_state["current_score"])  # '/' -> '_'
    np.testing.assert_array_equal(store.metric("learning_rate"), [0.05] * 4)


@pytest.mark.filterwarnings(LEAFSPEC, NO_DIST)
def test_lightning_sharded_checkpoint_directories(tmp_path):
    _lightning_fit(tmp_path / "sharded", sharded=True)
    first = tmp_path / "sharded" / "epoch=0-step=4.ckpt"
    assert first.is_dir() and (first / ".metadata").is_file() and (first / "meta.pt").is_file()
    _lightning_fit(tmp_path / "plain")
    found = []
    sharded = import_source(tmp_path / "sharded", tmp_path / "s.zarr", on_found=found.append)
    plain = import_source(tmp_path / "plain", tmp_path / "p.zarr")
    assert found[0].kind == "lightning-sharded"
    np.testing.assert_array_equal(sharded.steps, plain.steps)
    np.testing.assert_array_equal(sharded.epochs, plain.epochs)
    assert sharded.layout == plain.layout  # DCP's 'model.' prefix is not part of the names
    assert _same_bits(sharded.read(), plain.read())  # same seed, same data: the same run
    np.testing.assert_array_equal(sharded.metric("train_loss"), plain.metric("train_loss"))


# ---------------------------------------------------------------------- detection and refusals
def test_mixed_folders_are_refused_naming_the_first_offending_entry(tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "mixed"
    d.mkdir()
    for step in (1, 2, 3):
        torch.save({"w": torch.zeros(3)}, d / f"{step}.pt")
    save_file({"w": torch.zeros(3)}, d / "4.safetensors")
    with pytest.raises(ImportSourceError, match=r"mixed checkpoint layouts: 4.safetensors is not one of the 3 torch.save"):
        import_source(d, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
    (d / "4.safetensors").unlink()
    _dcp_save({"w": torch.zeros(3)}, d / "step_9")
    with pytest.raises(ImportSourceError, match="step_9 is not one of the 3 torch.save files"):
        scan_source(d)
    shutil.rmtree(d / "step_9")
    (d / "checkpoint-5").mkdir()
    with pytest.raises(ImportSourceError, match="checkpoint-5 is not one of the 3 torch.save files"):
        scan_source(d)
    for p in d.glob("*.pt"):
        p.unlink()
    with pytest.raises(ImportSourceError, match="checkpoint-5: no model weights"):
        scan_source(d)


runner = CliRunner()


def test_cli_says_what_it_found(hf_output, tmp_path):
    result = runner.invoke(app, ["import", str(hf_output), "--out", str(tmp_path / "r.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_snapshots"] == 3 and summary["source"]["kind"] == "hf-trainer"
    assert "found Hugging Face Trainer output: 3 checkpoints" in result.stderr
    result = runner.invoke(app, ["import", str(hf_output / "checkpoint-6" / "optimizer.pt"), "--out",
                                 str(tmp_path / "o.zarr")])
    assert result.exit_code == 2 and "no state_dict found" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_lightning_folder_after_a_resume_imports_the_newest_file_of_a_step(tmp_path):
    """Issue 25: a fit resumed from step 130 saved step 135 again as epoch=2-step=135-v1.ckpt, and traj import
    refused the folder: `two checkpoints have step 135: epoch=2-step=135-v1.ckpt, epoch=2-step=135.ckpt`."""
    folder = tmp_path / "ckpt"
    folder.mkdir()

    def save(name, step, value, mtime):
        torch.save({"state_dict": {"net.weight": torch.full((2, 3), float(value))}, "global_step": step, "epoch": 2},
                   folder / name)
        os.utime(folder / name, ns=(mtime, mtime))

    save("epoch=2-step=130.ckpt", 130, 1.0, 10**18)
    save("epoch=2-step=135.ckpt", 135, 2.0, 2 * 10**18)  # the first attempt's, before the crash
    save("epoch=2-step=135-v1.ckpt", 135, 3.0, 3 * 10**18)  # the resumed fit's, newer
    save("epoch=2-step=140.ckpt", 140, 4.0, 3 * 10**18)  # the same time as another step's: no matter
    save("epoch=2-step=140-v1.ckpt", 140, 5.0, 3 * 10**18)  # a tie in time: the -v1 suffix decides
    scan = scan_source(folder)
    assert [(s.step, s.label) for s in scan.snapshots] == [
        (130, "epoch=2-step=130.ckpt"), (135, "epoch=2-step=135-v1.ckpt"), (140, "epoch=2-step=140-v1.ckpt")]
    assert scan.notes[-1] == (
        "2 step(s) saved twice (a fit resumed from an earlier checkpoint saves its steps again): imported the newest "
        "file of each, by modification time: epoch=2-step=135-v1.ckpt (not epoch=2-step=135.ckpt), "
        "epoch=2-step=140-v1.ckpt (not epoch=2-step=140.ckpt)")
    store = import_source(folder, tmp_path / "l.zarr")
    np.testing.assert_array_equal(store.read()[:, 0], [1.0, 3.0, 5.0])
    os.utime(folder / "epoch=2-step=135.ckpt", ns=(4 * 10**18, 4 * 10**18))  # the older name written last
    assert scan_source(folder).snapshots[1].label == "epoch=2-step=135.ckpt"
