"""Memory that does not grow with the model (issue 23), tested with an address-space limit in a child.

Each command runs twice in a fresh process: on a small store (N = 1M) with no limit, which gives its
address-space high-water mark (VmPeak: the interpreter, torch, numpy, zarr and one working block),
then on a large one (N = 32M) under RLIMIT_AS = that mark + :data:`MARGIN`. The margin is smaller
than one float64 copy of the large θ (N x 8 B = 244 MiB), so a command that holds anything of size N
(labels, a and b, scores, masks) fails; one whose memory is bounded by its blocks passes. Both runs use
the same small working block (``--block-mb 4``), so the blocks weigh the same in both.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from traj.store import Layout, RunStore, StoreWriter

pytestmark = pytest.mark.slow

MiB = 1 << 20
SMALL, LARGE, SNAPSHOTS = 1_000_000, 32_000_000, 4
MARGIN = 200 * MiB

CHILD = """
import atexit, os
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmPeak"))
    with open(os.environ["TRAJ_TEST_VMPEAK"], "w") as out:
        out.write(kib)
atexit.register(peak)
from traj.cli.app import main
main()
"""


def build(path: Path, n: int) -> RunStore:
    """θ_k = θ₀ + f(k)·u + noise over a few weight tensors, every weight moving, written in 1M pieces."""
    width = 1000
    shapes = [(f"layer{i}.weight", (n // 4 // width - 1, width)) for i in range(4)]
    shapes.append(("tail.bias", (n - sum(r * c for _, (r, c) in shapes),)))
    layout = Layout.from_shapes(shapes, prunable=[name for name, _ in shapes[:4]])
    with StoreWriter(path, layout, spacing={"every": 1, "unit": "step"}) as writer:
        for k in range(SNAPSHOTS):
            def pieces(k: int = k):
                for lo in range(0, n, 1 << 20):
                    rng = np.random.default_rng([lo, k])
                    size = min(n, lo + (1 << 20)) - lo
                    base = np.random.default_rng(lo).standard_normal((2, size), dtype=np.float32)
                    yield base[0] + np.float32(0.9**k) * base[1] + rng.standard_normal(size, dtype=np.float32) * 1e-3
            writer.append_streamed(pieces(), step=k, epoch=0)
    return RunStore(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    return build(root / "small.zarr", SMALL), build(root / "large.zarr", LARGE)


def run_traj(args: list[str], tmp_path: Path, *, limit: int | None = None) -> tuple[int, str, int]:
    """Exit code, stderr and VmPeak (bytes) of ``traj ARGS`` in a fresh process, under RLIMIT_AS = ``limit``."""
    peak_file = tmp_path / "vmpeak"
    peak_file.unlink(missing_ok=True)

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "COLUMNS": "1000", "TRAJ_TEST_VMPEAK": str(peak_file), "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, preexec_fn=limited, timeout=600)
    peak = int(peak_file.read_text()) * 1024 if peak_file.exists() else -1
    return proc.returncode, proc.stderr, peak


def bounded(stores, tmp_path: Path, command: list[str], *, block: bool = True) -> None:
    """``traj COMMAND STORE ...`` runs on the large store within the small store's address space + MARGIN."""
    small, large = stores
    args = [command[0], "STORE", *command[1:], *(["--block-mb", "4"] if block else [])]
    rc, err, base = run_traj([str(small.path) if a == "STORE" else a for a in args]
                             + ["-o", str(tmp_path / "small")], tmp_path)
    assert rc == 0, err
    rc, err, peak = run_traj([str(large.path) if a == "STORE" else a for a in args] + ["-o", str(tmp_path / "large")],
                             tmp_path, limit=base + MARGIN)
    assert rc == 0, f"traj {command[0]} on N = {LARGE:,} exceeded {(base + MARGIN) / MiB:.0f} MiB of address " \
                    f"space (N = {SMALL:,} needed {base / MiB:.0f} MiB):\n{err[-2000:]}"


def test_cmd_memory_does_not_grow_with_n(stores, tmp_path):
    bounded(stores, tmp_path, ["cmd", "--modes", "3", "--samples", "200", "--no-evaluate"])
    model = tmp_path / "large" / "cmd.zarr"
    assert (model / "labels").is_dir() and (model / "a").is_dir()


@pytest.mark.scale  # 80 s on 2 cores: run with -m scale
def test_cmd_sweep_memory_does_not_grow_with_n(stores, tmp_path):
    bounded(stores, tmp_path, ["cmd", "--modes", "3", "--samples", "200", "--sweep", "2", "--no-evaluate"])


@pytest.mark.parametrize("options", [[], ["--per-layer"], ["--save-modes"], ["--forecast", "2"]],
                         ids=lambda c: " ".join(c) or "plain")
def test_dmd_memory_does_not_grow_with_n(stores, tmp_path, options):
    # the Gram path in both runs (auto decomposes the small window in memory: at most 128 MiB, whatever N)
    bounded(stores, tmp_path, ["dmd", *options, "--method", "gram"])


@pytest.mark.parametrize("options", [["--null-size", "0"], ["--null-size", "4"],
                                     pytest.param(["--observable", "pca:2"], marks=pytest.mark.scale)],  # 200 s
                         ids=lambda c: " ".join(c))
def test_conjugacy_memory_does_not_grow_with_n(stores, tmp_path, options):
    bounded(stores, tmp_path, ["conjugacy", "STORE", "--k", "2", *options])


@pytest.mark.parametrize("options", [[], ["--method", "kmp,gmp", "--compression", "2,4", "--export"]],
                         ids=lambda c: " ".join(c) or "default methods")
def test_prune_memory_does_not_grow_with_n(stores, tmp_path, options):
    # scores, masks and LSP's draws go to scratch files; masks.zarr and the exports are written piece by piece
    bounded(stores, tmp_path, ["prune", "--no-evaluate", *options])
    out = tmp_path / "large"
    assert (out / "masks.zarr" / "kmp" / "c2").is_dir()
    if "--export" in options:
        assert (out / "export" / "gmp-c4.safetensors").stat().st_size > LARGE * 4


def test_report_memory_does_not_grow_with_n(stores, tmp_path):
    bounded(stores, tmp_path, ["report", "--no-evaluate"])
    summary = (tmp_path / "large" / "summary.json").read_text()
    assert '"prune": {' in summary
