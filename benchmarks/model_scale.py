"""Every command at model scale: GPT-2 small (124M) trained by the Hugging Face Trainer with
``TrajCallback``, in bfloat16, then each command on its store against a floor measured here.

Runs (bfloat16 parameters, AdamW, random tokens, ``use_cpu=True``; stored in bfloat16, the
callback's default for a bfloat16 model):
  ``base``  seed 0, lr 1e-4, ``--snapshots`` snapshots (every step);
  ``seed1`` seed 1, same learning rate (conjugacy's seed null);
  ``lr10``  seed 0, lr 1e-3 (the run conjugacy compares).

For the callback: the median time per snapshot on the training thread against
``safetensors.torch.save_file`` of the same state dict (the issue's bound), and the step time
with and without the callback.

For each command, in a fresh process: wall time, peak RSS (``wait4``), bytes read
(``/proc/self/io`` rchar at exit) and ratios to floors measured in this run on the same store:
  read  = one plain pass reading every stored byte (``RunStore.iter_blocks``, nothing computed);
  gram  = read + the float64 Gram of every block (the floor of ``traj dmd``);
  cmd is also given as a ratio to ``traj dmd`` (target ≤ 2); conjugacy's floor is one gram per
  run plus one Gram per bent copy of its reparametrisation null.
Targets (issue 23): dmd ≤ 1.3 × gram; every command ≤ 1 GiB + O(T²) beyond the model itself.

    python benchmarks/model_scale.py [--snapshots 50] [--dir /tmp/model-scale] [--skip-train]
        [--commands info,dmd,cmd,prune,conjugacy,report] [--null-size 4] [--rounds 2]

Needs transformers and accelerate (the test extra) and ~2.6 GB of disk per 10 snapshots per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_LAUNCH = """
import atexit, sys
def _io():
    fields = dict(line.split(': ') for line in open('/proc/self/io').read().splitlines())
    peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))
    sys.stderr.write('\\n__IO__ %s %s %s\\n' % (fields['rchar'], fields['read_bytes'], peak))
atexit.register(_io)
from traj.cli.app import main
sys.argv = ['traj', *sys.argv[1:]]
main()
"""


def train(path: Path, seed: int, lr: float, snapshots: int, timing: dict | None = None) -> float:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from traj.integrations.huggingface import TrajCallback

    class Tokens(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x = torch.randint(0, 50257, (4 * snapshots, 64), generator=torch.Generator().manual_seed(seed))

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": self.x[i], "labels": self.x[i]}

    class Clock(TrainerCallback):
        """Step starts, and the callback's own time on the training thread per snapshot."""

        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_step_begin(self, *args, **kwargs) -> None:
            self.starts.append(time.perf_counter())

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config()).to(torch.bfloat16)
    callback = TrajCallback(path, overwrite=True)
    hooks = {"seconds": []}
    for name in ("on_optimizer_step", "on_step_begin", "on_step_end"):  # time the callback's hooks
        original = getattr(callback, name)

        def timed(*args, _original=original, **kwargs):
            t0 = time.perf_counter()
            _original(*args, **kwargs)
            hooks["seconds"].append((len(clock.starts), time.perf_counter() - t0))  # (step, seconds)

        setattr(callback, name, timed)
    clock = Clock()
    args = TrainingArguments(output_dir=str(path.parent / f".hf-{path.stem}"), max_steps=snapshots - 1,
                             per_device_train_batch_size=2, learning_rate=lr, seed=seed, use_cpu=True,
                             report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[callback, clock])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    shutil.rmtree(path.parent / f".hf-{path.stem}", ignore_errors=True)
    if timing is not None:
        from safetensors.torch import save_file

        steps = np.diff(clock.starts)[2:]
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        saves = []
        for _ in range(3):
            t1 = time.perf_counter()
            save_file(state, str(path.parent / "save_file.safetensors"))
            saves.append(time.perf_counter() - t1)
        (path.parent / "save_file.safetensors").unlink()
        params = [p.detach() for p in model.parameters()]
        buffer = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype)
        copies = []
        for _ in range(3):  # the copy off the model into a buffer already touched: the training thread's floor
            t1 = time.perf_counter()
            offset = 0
            for p in params:
                buffer[offset : offset + p.numel()].copy_(p.reshape(-1))
                offset += p.numel()
            copies.append(time.perf_counter() - t1)
        per_step: dict[int, float] = {}
        for step, seconds in hooks["seconds"]:
            per_step[step] = per_step.get(step, 0.0) + seconds
        per_snapshot = list(per_step.values())
        timing.update(step=float(np.median(steps)), callback_per_snapshot=float(np.sum(per_snapshot) / max(1, snapshots - 1)),
                      callback_median=float(np.median(per_snapshot)), save_file=min(saves), copy=min(copies))
    return wall


def floors(path: Path) -> dict:
    """dmd_scaling's floor passes (read every block; read + float64 Gram) and the store's size."""
    from dmd_scaling import floor_passes  # benchmarks/ is on the path when this file runs

    from traj.store import RunStore

    store = RunStore(path)
    read, gram = floor_passes(store)
    return {"read": read, "gram": gram, "bytes": store.nbytes_stored(), "n": store.n_params, "t": store.n_snapshots}


def run_command(args: list[str]) -> dict:
    """One traj command in a fresh process: wall, exit code, its own peak RSS, bytes it read.

    The peak is the process's own VmHWM, read at exit: wait4's ru_maxrss of a child forked from this
    process counts this process's resident memory at the fork (Linux carries the high-water mark across
    fork and exec), so after training GPT-2 in-process every command read as 2.6 GB."""
    import tempfile

    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    io = [line.split()[1:] for line in text.splitlines() if line.startswith("__IO__")]
    rss = int(io[-1][2]) * 1024 if io else usage.ru_maxrss * 1024  # a command killed before atexit: wait4's bound
    return {"wall": wall, "rc": proc.returncode, "rss": rss, "rchar": int(io[-1][0]) if io else None,
            "error": None if proc.returncode in (0, 1) else [line for line in text.splitlines() if line.strip()][-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/model-scale"))
    parser.add_argument("--skip-train", action="store_true", help="reuse the stores in --dir")
    parser.add_argument("--commands", default="info,dmd,cmd,prune,conjugacy,report")
    parser.add_argument("--null-size", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="repeat floors and commands, keep the fastest of each")
    args = parser.parse_args()
    root = args.dir
    root.mkdir(parents=True, exist_ok=True)
    runs = {"base": (0, 1e-4), "seed1": (1, 1e-4), "lr10": (0, 1e-3)}
    timing: dict = {}
    if not args.skip_train:
        for name, (seed, lr) in runs.items():
            wall = train(root / f"{name}.zarr", seed, lr, args.snapshots, timing if name == "base" else None)
            print(f"trained {name}: {wall:.0f} s", flush=True)
        print(f"callback: {timing['callback_per_snapshot']:.3f} s per snapshot on the training thread (mean; median "
              f"{timing['callback_median']:.3f} s); the copy off the model alone {timing['copy']:.3f} s; safetensors "
              f"save_file of the same state dict {timing['save_file']:.3f} s; step {timing['step']:.2f} s", flush=True)
    base = root / "base.zarr"
    floor = floors(base)
    measured = [floor]
    print(f"store: T = {floor['t']}, N = {floor['n']}, {floor['bytes'] / 2**30:.2f} GiB on disk; floors: read "
          f"{floor['read']:.1f} s, read + Gram {floor['gram']:.1f} s", flush=True)
    commands = {
        "info": ["info", str(base)],
        "dmd": ["dmd", str(base), "--out", str(root / "out-dmd")],
        "cmd": ["cmd", str(base), "--modes", "10", "--no-evaluate", "--out", str(root / "out-cmd")],
        "prune": ["prune", str(base), "--no-evaluate", "--out", str(root / "out-prune")],
        "conjugacy": ["conjugacy", str(base), str(root / "lr10.zarr"), "--null", str(root / "seed1.zarr"),
                      "--null-size", str(args.null_size), "--out", str(root / "out-conjugacy")],
        "report": ["report", str(base), "--no-evaluate", "--out", str(root / "out-report")],
    }
    runs: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):  # floors and commands interleaved: a busy machine slows both alike
        if round_:
            measured.append(floors(base))
            print(f"floors, round {round_ + 1}: read {measured[-1]['read']:.1f} s, read + Gram "
                  f"{measured[-1]['gram']:.1f} s", flush=True)
        for name in args.commands.split(","):
            for out in root.glob(f"out-{name}"):
                shutil.rmtree(out)
            result = run_command(commands[name])
            runs.setdefault(name, []).append(result)
            print(name, json.dumps(result), flush=True)
    # the fastest of the rounds, for the floors and for each command (the least disturbed)
    floor = {**floor, "read": min(f["read"] for f in measured), "gram": min(f["gram"] for f in measured)}
    rows = [(name, min(results, key=lambda r: r["wall"])) for name, results in runs.items()]
    gib = 2**30
    print(f"\nGPT-2 small, bfloat16, T = {floor['t']} (HF Trainer + TrajCallback); floors: read {floor['read']:.1f} s, "
          f"read + Gram {floor['gram']:.1f} s; store {floor['bytes'] / gib:.2f} GiB")
    print(f"{'command':<10} {'wall s':>8} {'/ gram floor':>13} {'peak RSS GiB':>13} {'read / store':>13}")
    dmd_wall = next((r["wall"] for n, r in rows if n == "dmd"), None)
    for name, r in rows:
        ratio = r["wall"] / floor["gram"]
        passes = r["rchar"] / floor["bytes"] if r["rchar"] else float("nan")
        extra = f"  ({r['wall'] / dmd_wall:.2f} x dmd)" if name == "cmd" and dmd_wall else ""
        rss = f"{r['rss'] / gib:.2f}" if r["rss"] else "?"
        print(f"{name:<10} {r['wall']:>8.1f} {ratio:>13.2f} {rss:>13} {passes:>13.2f}{extra}"
              + (f"  FAILED {r['error']}" if r["error"] else ""))
    if timing:
        print(f"callback per snapshot {timing['callback_per_snapshot']:.3f} s vs save_file {timing['save_file']:.3f} s "
              f"(ratio {timing['callback_per_snapshot'] / timing['save_file']:.2f}); median step {timing['step']:.2f} s")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
