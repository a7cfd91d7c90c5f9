"""Memory that does not grow with the model (issue 23), tested with an address-space limit in a child.

Each command runs twice in a fresh process: on a small store (N = 1M) with no limit, which gives its
address-space high-water mark (VmPeak: the interpreter, torch, numpy, zarr and one working block),
then on a large one (N = 32M) under RLIMIT_AS = that mark + :data:`MARGIN`. The margin is smaller
than one float64 copy of the large θ (N x 8 B = 244 MiB), so a command that holds anything of size N
(labels, a and b, scores, masks) fails; one whose memory is bounded by its blocks passes. Both runs use
the same small working block (``--block-mb 4``), so the blocks weigh the same in both.

Variations, each said where it is used: a command without ``--block-mb`` (info, landscape) runs its small
case on N = 12M, where its default blocks are full; where a command builds a model (dmd --evaluate,
landscape, with ``memrecipe``: a user recipe of the stores' layout) the large run may also hold a stated
number of float32 copies of the model; ``traj import`` compares the peak RSS (safetensors maps whole
files into the address space). The Recorder is run on a model of N values.

Not here: ``traj kga-replay`` trains its recipe anew and never reads the store's snapshots (only its
recipe attributes), so its N is the model it trains: its memory is the model, the optimizer and KGA's
own state (the last t snapshots and the basis U, N x (t + r), as docs/methods.md §5 needs), not the store's;
tests/training/test_kga_memory.py bounds it by a stated number of model copies, whatever the epochs.
The callbacks (Hugging Face, Lightning) record through the Recorder tested here.
"""

from __future__ import annotations

import inspect
import json
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
SMALL, MID, LARGE, SNAPSHOTS = 1_000_000, 12_000_000, 32_000_000, 4
MARGIN = 200 * MiB

#: Writes the process's address-space and RSS high-water marks (VmPeak, VmHWM, KiB) at exit.
PEAKS = """
import atexit, os
def peak():
    with open("/proc/self/status") as status:
        marks = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("VmPeak", "VmHWM"))}
    with open(os.environ["TRAJ_TEST_VMPEAK"], "w") as out:
        out.write(marks["VmPeak"] + " " + marks["VmHWM"])
atexit.register(peak)
"""
CHILD = PEAKS + """
from traj.cli.app import main
main()
"""


def shapes_of(n: int) -> list[tuple[str, tuple[int, ...]]]:
    """Four (rows, 1000) weights and a bias, N values in all."""
    width = 1000
    shapes = [(f"layer{i}.weight", (n // 4 // width - 1, width)) for i in range(4)]
    return [*shapes, ("tail.bias", (n - sum(r * c for _, (r, c) in shapes),))]


def build(path: Path, n: int) -> RunStore:
    """θ_k = θ₀ + f(k)·u + noise over a few weight tensors, every weight moving, written in 1M pieces."""
    shapes = shapes_of(n)
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


@pytest.fixture(scope="module")
def mid_stores(stores, tmp_path_factory):
    """(N = MID, the large store), for commands without ``--block-mb``: their default blocks (64 MiB of
    float64, reads of 64 MiB) fill up only past N = 8M at T = 4, so the small run is this size."""
    return build(tmp_path_factory.mktemp("memory-mid") / "mid.zarr", MID), stores[1]


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory):
    """A PYTHONPATH holding ``memrecipe``: a recipe whose model has the stores' layout (``memrecipe:small``,
    ``:mid``, ``:large``) and costs next to nothing to score (8 + 8 samples through one row of layer0)."""
    root = tmp_path_factory.mktemp("recipe")
    sizes = {"small": SMALL, "mid": MID, "large": LARGE}
    (root / "memrecipe.py").write_text(RECIPE + inspect.getsource(shapes_of) + f"\n\nSIZES = {sizes!r}\n")
    return {"PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}


RECIPE = """
import torch
from torch import nn

from traj.recipes import Dataset, Recipe


class Wide(nn.Module):
    def __init__(self, n):
        super().__init__()
        for name, shape in shapes_of(n):
            module, parameter = name.split(".")
            if not hasattr(self, module):
                setattr(self, module, nn.Module())
            setattr(getattr(self, module), parameter, nn.Parameter(torch.zeros(shape)))

    def forward(self, x):
        return x @ self.layer0.weight[:1].T


class WideRecipe(Recipe):
    name = "wide"
    task = "regression"
    n = 0

    def build_model(self):
        return Wide(self.n)

    def load_data(self):
        x = torch.linspace(-1, 1, 8 * 1000).reshape(8, 1000)
        return Dataset(x, x[:, :1], x, x[:, :1])


def sized(size):
    recipe = WideRecipe()
    recipe.n = SIZES[size]
    return recipe


def small():
    return sized("small")


def mid():
    return sized("mid")


def large():
    return sized("large")


"""


def run_traj(args: list[str], tmp_path: Path, *, limit: int | None = None, env: dict[str, str] | None = None,
             code: str = CHILD) -> tuple[int, str, int, int]:
    """Exit code, stderr, VmPeak and VmHWM (bytes) of ``traj ARGS`` (or ``code`` with ARGS) in a fresh process,
    under RLIMIT_AS = ``limit``."""
    peak_file = tmp_path / "vmpeak"
    peak_file.unlink(missing_ok=True)

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "COLUMNS": "1000", "TRAJ_TEST_VMPEAK": str(peak_file), "MALLOC_ARENA_MAX": "2", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, preexec_fn=limited, timeout=600)
    peak, hwm = (int(kib) * 1024 for kib in peak_file.read_text().split()) if peak_file.exists() else (-1, -1)
    return proc.returncode, proc.stderr, peak, hwm


def bounded(stores, tmp_path: Path, command: list[str], *, block: bool = True, margin: int = MARGIN,
            model_copies: float = 0, rss: bool = False, env: dict[str, str] | None = None) -> None:
    """``traj COMMAND STORE ...`` runs on the large input within the small input's address space + ``margin``.

    ``stores``: the (small, large) run stores, or any (small, large) inputs (paths) put where STORE is;
    ``{size}`` in an argument becomes the input's size: "small", "mid" or "large". ``model_copies``: where the command builds a
    model, the large run may also hold that many float32 copies of the model (N x 4 B each) beyond the
    small run's. ``rss``: compare the peak RSS instead (no address-space limit), where the address space
    counts files a library maps whole but reads a piece at a time.
    """
    (small, n_small), (large, n_large) = ((Path(getattr(s, "path", s)), getattr(s, "n_params", n))
                                          for s, n in zip(stores, (SMALL, LARGE), strict=True))
    args = [command[0], "STORE", *command[1:], *(["--block-mb", "4"] if block else [])]
    sizes = {SMALL: "small", MID: "mid", LARGE: "large"}

    def filled(source: Path, n: int, out: str) -> list[str]:
        return [str(source) if a == "STORE" else a.replace("{size}", sizes[n]) for a in args] + ["-o", str(tmp_path / out)]

    rc, err, base, base_rss = run_traj(filled(small, n_small, "small"), tmp_path, env=env)
    assert rc == 0, err
    extra = margin + int(model_copies * (n_large - n_small) * 4)
    if rss:
        rc, err, _, peak = run_traj(filled(large, n_large, "large"), tmp_path, env=env)
        assert rc == 0, err
        assert peak <= base_rss + extra, f"traj {command[0]} on N = {n_large:,} peaked at {peak / MiB:.0f} MiB RSS, " \
                                         f"N = {n_small:,} at {base_rss / MiB:.0f} MiB"
        return
    rc, err, _, _ = run_traj(filled(large, n_large, "large"), tmp_path, limit=base + extra, env=env)
    assert rc == 0, f"traj {command[0]} on N = {n_large:,} exceeded {(base + extra) / MiB:.0f} MiB of address " \
                    f"space (N = {n_small:,} needed {base / MiB:.0f} MiB):\n{err[-2000:]}"


def test_cmd_memory_does_not_grow_with_n(stores, tmp_path):
    bounded(stores, tmp_path, ["cmd", "--modes", "3", "--samples", "200", "--no-evaluate"])
    model = tmp_path / "large" / "cmd.zarr"
    assert (model / "labels").is_dir() and (model / "a").is_dir()


def test_online_cmd_memory_does_not_grow_with_n(stores, tmp_path):
    # the running sums of a block of weights live and die with the block (docs/methods.md §2.6)
    bounded(stores, tmp_path, ["cmd", "--modes", "3", "--samples", "200", "--online", "--warmup", "3", "--no-evaluate"])
    assert (tmp_path / "large" / "cmd.zarr" / "a").is_dir()


@pytest.mark.scale  # 80 s on 2 cores: run with -m scale
def test_cmd_sweep_memory_does_not_grow_with_n(stores, tmp_path):
    bounded(stores, tmp_path, ["cmd", "--modes", "3", "--samples", "200", "--sweep", "2", "--no-evaluate"])


@pytest.mark.parametrize("options", [[], ["--per-layer"], ["--save-modes"], ["--forecast", "2"]],
                         ids=lambda c: " ".join(c) or "plain")
def test_dmd_memory_does_not_grow_with_n(stores, tmp_path, options):
    # the Gram path in both runs (auto decomposes the small window in memory: at most 128 MiB, whatever N)
    bounded(stores, tmp_path, ["dmd", *options, "--method", "gram"])


@pytest.mark.parametrize("options", [["--null-size", "0"], ["--null-size", "4"],
                                     pytest.param(["--observable", "pca:2"], marks=pytest.mark.scale),  # 200 s
                                     # stacked trajectories: the pooled Gram, a band of every trajectory at a time
                                     ["--stack", "2", "--null-size", "0"],
                                     pytest.param(["--stack", "2", "--null-size", "4"], marks=pytest.mark.scale),  # 32 s
                                     ["--stack", "2", "--observable", "pca:2", "--null-size", "0"]],
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


def test_info_memory_does_not_grow_with_n(mid_stores, tmp_path):
    # with -o: the NaN scan, the layer norms and the report (one pass); no --block-mb: N = 12M beside 32M, and a
    # margin below one float64 copy of the 20M more values (153 MiB)
    bounded(mid_stores, tmp_path, ["info"], block=False, margin=120 * MiB)
    assert (tmp_path / "large" / "report.html").is_file()


@pytest.mark.parametrize("options", [[], ["--dtype", "bfloat16"]], ids=lambda c: " ".join(c) or "as stored")
def test_convert_memory_does_not_grow_with_n(stores, tmp_path, options):
    # one snapshot's shard row at a time, whatever the block: the small store gives the baseline
    bounded(stores, tmp_path, ["convert", *options], block=False)
    converted = RunStore(tmp_path / "large")
    assert (converted.n_snapshots, converted.n_params) == (SNAPSHOTS, LARGE)
    assert converted.stored_dtype == (options[-1] if options else "float32")


def checkpoints(path: Path, n: int, suffix: str) -> Path:
    """SNAPSHOTS checkpoints of an N-parameter state dict (step-0.safetensors or step-0.pt, ...), float32."""
    import torch
    from safetensors.numpy import save_file

    path.mkdir()
    base = {name: np.random.default_rng(i).standard_normal(shape, dtype=np.float32)
            for i, (name, shape) in enumerate(shapes_of(n))}
    for k in range(SNAPSHOTS):
        state = {name: value * np.float32(0.9**k) for name, value in base.items()}
        if suffix == ".pt":
            torch.save({name: torch.from_numpy(value) for name, value in state.items()}, path / f"step-{k}.pt")
        else:
            save_file(state, path / f"step-{k}.safetensors")
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])  # two readers: safe_open, torch.load(mmap=True)
def test_import_memory_does_not_grow_with_n(tmp_path_factory, tmp_path, suffix):
    # peak RSS, not address space: safetensors.safe_open and torch.load(mmap=True) map a whole file (4 MiB
    # pieces of a 122 MiB file: VmPeak grew by 450 and 330 MiB while the RSS stayed flat)
    root = tmp_path_factory.mktemp("checkpoints")
    sources = checkpoints(root / "small", SMALL, suffix), checkpoints(root / "large", LARGE, suffix)
    bounded(sources, tmp_path, ["import", "--block-mb", "4"], block=False, rss=True)
    imported = RunStore(tmp_path / "large")
    assert (imported.n_snapshots, imported.n_params) == (SNAPSHOTS, LARGE)
    assert imported.steps.tolist() == list(range(SNAPSHOTS))
    assert float(imported.snapshot(3)[0]) == pytest.approx(
        0.9**3 * np.random.default_rng(0).standard_normal(1, dtype=np.float32)[0], rel=1e-6)


def test_dmd_evaluate_memory_is_the_models(stores, tmp_path, recipe_path):
    # 2 ranks x 3 points = 6 reconstructed θ's (732 MiB at N = 32M) go to scratch files; the model, the θ
    # scored and its copy in the store's dtype are the model's own (3 float32 copies)
    bounded(stores, tmp_path, ["dmd", "--method", "gram", "--evaluate", "--recipe", "memrecipe:{size}",
                               "--eval-ranks", "1,2", "--eval-points", "3"], model_copies=3, env=recipe_path)
    evaluation = json.loads((tmp_path / "large" / "summary.json").read_text())["evaluation"]
    assert evaluation["ranks"] == [1, 2] and len(evaluation["reconstructed"][1]["loss"]) == 3



@pytest.mark.scale  # 125 s on 2 busy cores: run with -m scale
def test_cmd_evaluate_memory_is_the_models(stores, tmp_path, recipe_path):
    # CMD's model and the EMAs go to scratch Zarr arrays and come back a snapshot at a time; measured: the
    # large run needs 4.5 float32 copies of the model more than the small one (a snapshot read in float64,
    # its float32 copy, the model)
    bounded(stores, tmp_path, ["cmd", "--modes", "3", "--samples", "200", "--recipe", "memrecipe:{size}",
                               "--eval-points", "2", "--ema", "0.9"], model_copies=5, env=recipe_path)
    evaluation = json.loads((tmp_path / "large" / "summary.json").read_text())["evaluation"]
    assert [row["snapshot"] for row in evaluation] == [0, 3] and all(row["ema0.9_loss"] > 0 for row in evaluation)

def test_landscape_memory_is_the_models(mid_stores, tmp_path, recipe_path):
    # the plane (μ, d₁, d₂ in float64: 6 float32 copies of the model), the model and the θ scored; the grid's
    # rows are built point by point. No --block-mb: the small run is N = 12M
    bounded(mid_stores, tmp_path, ["landscape", "--recipe", "memrecipe:{size}", "--grid", "3"], block=False,
            model_copies=8, env=recipe_path)
    assert (tmp_path / "large" / "report.html").is_file()


RECORDER = PEAKS + """
import sys
import torch
from torch import nn
import traj

n, snapshots, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model = nn.Module()
model.weight = nn.Parameter(torch.linspace(-1, 1, n).reshape(n // 1000, 1000))
with traj.Recorder(path, model) as recorder:
    for _ in range(snapshots):
        with torch.no_grad():
            model.weight.mul_(0.99)
        recorder.step()
"""


def test_recorder_memory_is_a_few_rows(tmp_path):
    """The Recorder's snapshot buffers are its pool (at least 4 rows, else 256 MiB of them), reused whatever
    the number of snapshots: recording 12 snapshots of a 32M-value model needs the model and 4 rows (N x 4 B
    each) beyond what 1M values need; a Recorder that kept a row per snapshot would need 13."""
    snapshots = 12
    rc, err, base, _ = run_traj([str(SMALL), str(snapshots), str(tmp_path / "small.zarr")], tmp_path, code=RECORDER)
    assert rc == 0, err
    limit = base + MARGIN + (1 + 4) * (LARGE - SMALL) * 4
    rc, err, _, _ = run_traj([str(LARGE), str(snapshots), str(tmp_path / "large.zarr")], tmp_path, limit=limit,
                             code=RECORDER)
    assert rc == 0, f"recording N = {LARGE:,} exceeded {limit / MiB:.0f} MiB (N = {SMALL:,}: {base / MiB:.0f} MiB)\n{err}"
    store = RunStore(tmp_path / "large.zarr")
    assert store.n_snapshots == snapshots + 1
    last = store.snapshot(snapshots)
    np.testing.assert_allclose(last[[0, -1]], [-(0.99**snapshots), 0.99**snapshots], rtol=1e-6)
