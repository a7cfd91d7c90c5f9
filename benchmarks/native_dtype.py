"""bfloat16 stored natively (2 bytes per value) against the same weights stored as float32.

A GPT-2 small (``GPT2Config()``, 124M parameters) in bfloat16 is trained with AdamW on random
tokens and recorded by ``traj.Recorder`` in its own dtype (the default); ``traj convert --dtype
float32`` makes the float32 twin (the same values, exactly). For each store: bytes on disk per
snapshot, the floor (one plain pass reading every block, then the same pass plus the float64
Gram), and ``traj dmd`` in a fresh process (wall time, peak RSS), each the best of ``--repeat``.
The eigenvalues of both runs must be equal (bit for bit).

    python benchmarks/native_dtype.py [--snapshots 12] [--dir /tmp/native-dtype] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

TRAJ = shutil.which("traj") or "traj"


def record_gpt2(path: Path, snapshots: int, seq: int = 64, batch: int = 2) -> float:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import traj

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).to(torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    with traj.Recorder(path, model, overwrite=True) as rec:
        rec.attach(optimizer)
        for _ in range(snapshots - 1):
            tokens = torch.randint(0, 50257, (batch, seq))
            loss = model(tokens, labels=tokens).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - t0


def floors(path: Path) -> tuple[float, float, int]:
    """dmd_scaling's floor passes (read every block; read + float64 Gram) and the stored bytes."""
    from dmd_scaling import floor_passes  # benchmarks/ is on the path when this file runs

    from traj.store import RunStore

    store = RunStore(path)
    read, gram = floor_passes(store)
    return read, gram, store.nbytes_stored()


def traj_dmd(path: Path, out: Path) -> tuple[float, float, list]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([TRAJ, "dmd", str(path), "--out", str(out), "--json"], check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / "summary.json").read_text())
    return wall, max(peak, before) / 2**10, summary["eigenvalues"]  # ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/native-dtype"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    bf16, f32 = args.dir / "gpt2-bf16.zarr", args.dir / "gpt2-f32.zarr"
    if not bf16.exists():
        print(f"recording GPT-2 small in bfloat16, {args.snapshots} snapshots ...", flush=True)
        print(f"  {record_gpt2(bf16, args.snapshots):.0f} s (training included)", flush=True)
    if not f32.exists():
        subprocess.run([TRAJ, "convert", str(bf16), "--dtype", "float32", "--out", str(f32)],
                       check=True, capture_output=True)
    rows = {}
    for name, path in (("bfloat16", bf16), ("float32", f32)):
        best = {"read": np.inf, "floor": np.inf, "dmd": np.inf, "rss": 0.0}
        for _ in range(args.repeat):
            read, floor, size = floors(path)
            wall, rss, eigenvalues = traj_dmd(path, args.dir / f"dmd-{name}")
            best = {"read": min(best["read"], read), "floor": min(best["floor"], floor), "dmd": min(best["dmd"], wall),
                    "rss": max(best["rss"], rss), "size": size, "eigenvalues": eigenvalues}
        rows[name] = best
    t = args.snapshots
    print(f"\nGPT-2 small (124M) bfloat16 AdamW, T = {t}; best of {args.repeat}")
    print(f"{'stored as':<10} {'bytes/snapshot':>15} {'read pass s':>12} {'floor s':>9} {'traj dmd s':>11} "
          f"{'dmd/floor':>10} {'peak RSS MiB':>13}")
    for name, r in rows.items():
        print(f"{name:<10} {r['size'] / t:>15.3e} {r['read']:>12.2f} {r['floor']:>9.2f} {r['dmd']:>11.2f} "
              f"{r['dmd'] / r['floor']:>10.2f} {r['rss']:>13.0f}")
    same = rows["bfloat16"]["eigenvalues"] == rows["float32"]["eigenvalues"]
    print(f"eigenvalues equal bit for bit: {same}")
    print(f"bfloat16 / float32: bytes {rows['bfloat16']['size'] / rows['float32']['size']:.2f}, "
          f"dmd time {rows['bfloat16']['dmd'] / rows['float32']['dmd']:.2f}")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
