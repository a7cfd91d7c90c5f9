"""Peak memory of every traj command against N (issue 23: memory must not grow with the model).

Builds a synthetic store shaped like a transformer (an embedding table, then blocks of attention
and MLP weights, biases and layer norms; the weights prunable), N parameters x T snapshots of
float32 written snapshot by snapshot with ``StoreWriter.append_streamed``, then runs each command
in a fresh process under ``/usr/bin/time`` (its peak RSS is the child's ru_maxrss, forked from
``time``, never from this process) and prints a table: command, wall, peak RSS, peak minus the
baseline (``import traj.cli.app, torch``), and the peak in units of N x 8 bytes (how many float64
copies of θ it holds).

The target: peak <= 1 GiB + O(T²) whatever N (plus the model itself where one is built). Commands
that need a recipe (--evaluate, kga-replay, landscape) build the model; they are not run here on the
synthetic store (it has no recipe): their model-free part is what the other rows measure.

    PYTHONPATH=. python benchmarks/memory_scale.py [--n-params 30000000] [--snapshots 12] [--dir /tmp]
        [--only dmd,cmd] [--keep]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.prunable import prunable_names
from traj.store import Layout, RunStore, StoreWriter

D_MODEL = 768
VOCAB_ROWS = 8192


def transformer_shapes(n: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensors named like GPT-2's, as many blocks as reach about ``n`` parameters (the last one trimmed)."""
    d = D_MODEL
    shapes: list[tuple[str, tuple[int, ...]]] = [("wte.weight", (min(VOCAB_ROWS, max(1, n // (4 * d))), d))]
    total = shapes[0][1][0] * d
    block = [("ln_1.weight", (d,)), ("ln_1.bias", (d,)), ("attn.c_attn.weight", (d, 3 * d)),
             ("attn.c_attn.bias", (3 * d,)), ("attn.c_proj.weight", (d, d)), ("attn.c_proj.bias", (d,)),
             ("ln_2.weight", (d,)), ("ln_2.bias", (d,)), ("mlp.c_fc.weight", (d, 4 * d)), ("mlp.c_fc.bias", (4 * d,)),
             ("mlp.c_proj.weight", (4 * d, d)), ("mlp.c_proj.bias", (d,))]
    i = 0
    while total < n:
        for name, shape in block:
            size = math.prod(shape)
            if total + size > n:
                rows = (n - total) // shape[-1] if len(shape) == 2 else 0
                if rows:
                    shapes.append((f"h.{i}.{name}", (rows, shape[-1])))
                    total += rows * shape[-1]
                if n - total:
                    shapes.append((f"h.{i}.tail.bias", (n - total,)))
                    total = n
                break
            shapes.append((f"h.{i}.{name}", shape))
            total += size
        i += 1
    return shapes


def synthetic_store(path: Path, n: int, t: int, *, seed: int = 0) -> RunStore:
    """θ_k = θ₀ + Σ_j f_j(k) u_j + noise_k: three decaying/oscillating directions, every weight moving.

    Written with ``append_streamed`` in pieces of 1M values, so building it holds a few vectors of N.
    """
    shapes = transformer_shapes(n)
    layout = Layout.from_shapes(shapes, prunable=prunable_names(shapes))
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(n, dtype=np.float32) * 0.02
    basis = rng.standard_normal((3, n), dtype=np.float32) * 0.01
    piece = 1 << 20
    # two epochs of t/2 snapshots (prune decomposes the last one)
    with StoreWriter(path, layout, overwrite=True, spacing={"every": 1, "unit": "step"}) as writer:
        for k in range(t):
            f = np.array([1 - 0.9**k, 0.8**k * np.cos(0.5 * k), 0.8**k * np.sin(0.5 * k)], dtype=np.float32)
            noise = np.random.default_rng([seed, k])

            def pieces(f: np.ndarray = f, noise: np.random.Generator = noise):
                for lo in range(0, n, piece):
                    hi = min(n, lo + piece)
                    yield (base[lo:hi] + f @ basis[:, lo:hi]
                           + noise.standard_normal(hi - lo, dtype=np.float32) * 1e-4)

            writer.append_streamed(pieces(), step=k, epoch=0 if k < t // 2 else 1)
    return RunStore(path)


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall (s), peak RSS (MiB), exit code and the tail of stderr of ``argv`` under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        t0 = time.perf_counter()
        # cwd elsewhere: ``python -c`` puts the working directory first on sys.path (PYTHONPATH decides)
        proc = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M", *argv], env=env, cwd=tempfile.gettempdir(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        lines = [line for line in Path(report.name).read_text().splitlines() if line.strip().isdigit()]
    peak = int(lines[-1]) / 1024 if lines else float("nan")
    return wall, peak, proc.returncode, proc.stderr.strip().splitlines()[-1][:100] if proc.stderr.strip() else ""


def commands(store: str, out: Path) -> list[tuple[str, list[str]]]:
    """(label, traj arguments) of every command measured."""
    o = str(out)
    return [
        ("info", ["info", store]),
        ("dmd", ["dmd", store, "-o", f"{o}/dmd"]),
        ("dmd --per-layer", ["dmd", store, "--per-layer", "-o", f"{o}/dmd-pl"]),
        ("dmd --forecast 5", ["dmd", store, "--forecast", "5", "-o", f"{o}/dmd-fc"]),
        ("dmd --save-modes", ["dmd", store, "--save-modes", "-o", f"{o}/dmd-sm"]),
        ("cmd --modes 10", ["cmd", store, "--modes", "10", "--no-evaluate", "-o", f"{o}/cmd"]),
        ("cmd --sweep 2,5", ["cmd", store, "--sweep", "2,5", "--no-evaluate", "-o", f"{o}/cmd-sw"]),
        ("prune (kmp,gmp,lsp)", ["prune", store, "--method", "kmp,gmp,lsp", "--no-evaluate", "-o", f"{o}/prune"]),
        ("prune --export", ["prune", store, "--method", "kmp,gmp", "--compression", "2,4", "--no-evaluate",
                            "--export", "-o", f"{o}/prune-x"]),
        ("conjugacy --windows 2", ["conjugacy", store, "--windows", "2", "--null-size", "4", "-o", f"{o}/conj"]),
        ("conjugacy pca:3", ["conjugacy", store, "--windows", "2", "--observable", "pca:3", "-o", f"{o}/conj-pca"]),
        ("report", ["report", store, "--no-evaluate", "-o", f"{o}/report"]),
        ("convert", ["convert", store, "-o", f"{o}/converted.zarr"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-params", type=int, default=30_000_000)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--only", default="", help="comma-separated command labels' first words (e.g. dmd,cmd)")
    parser.add_argument("--store", type=Path, help="measure this existing store instead of building one")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic store and outputs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-memory-", dir=args.dir))
    env = {**os.environ, "COLUMNS": "200"}
    traj = [sys.executable, "-c", "from traj.cli.app import main; main()"]
    try:
        if args.store:
            store = RunStore(args.store)
        else:
            t0 = time.perf_counter()
            store = synthetic_store(work / "big.zarr", args.n_params, args.snapshots)
            print(f"built {store.n_params:,} x {store.n_snapshots} float32 ({store.nbytes_stored() / 1e9:.2f} GB on disk, "
                  f"{len(store.layout.entries)} tensors) in {time.perf_counter() - t0:.0f} s", flush=True)
        n = store.n_params
        _, base, _, _ = measure([sys.executable, "-c", "import traj.cli.app, torch, numpy, zarr"], env)
        print(f"baseline (import traj.cli.app, torch, numpy, zarr): {base:.0f} MiB; N x 8 B = {n * 8 / 2**20:.0f} MiB")
        print(f"{'command':24s} {'wall s':>7s} {'peak MiB':>9s} {'- base':>7s} {'peak/8N':>8s}  note")
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        for label, argv in commands(str(store.path), work / "out"):
            if wanted and label.split()[0] not in wanted:
                continue
            wall, peak, rc, tail = measure([*traj, *argv], env)
            note = "" if rc == 0 else f"exit {rc}: {tail}"
            print(f"{label:24s} {wall:7.1f} {peak:9.0f} {peak - base:7.0f} {peak * 2**20 / (8 * n):8.2f}  {note}",
                  flush=True)
            shutil.rmtree(work / "out", ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
