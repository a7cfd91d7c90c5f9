"""``traj kga-replay``'s memory is its model's and KGA's window's, not the run's length (issue 23).

kga-replay trains its recipe anew (the store gives only the recipe), so its N is the model it trains and
its T the epochs. KGA needs the last t snapshots and the basis U, N x (t + r) in float64 (docs/methods.md
§5): a stated number of model copies, whatever the number of epochs. The test runs the replay of a wide
model (the memory tests' ``Wide`` recipe, which costs next to nothing to score) for 12 epochs in a fresh
process, first at N = 1M with no limit (its address-space high-water mark), then at N = 8M under RLIMIT_AS
= that mark + :data:`~tests.test_memory_bound.MARGIN` + :data:`MODEL_COPIES` float32 copies of the 7M more
values. A replay that kept the run's snapshots (O(N·T) in float64: 26 copies for T = 13) fails it; so
does a window of t = 12 (checked by hand: the large run peaked at 3319 MiB with ``--window 12`` and was
refused at the limit, about 2400 MiB, with exit 2; at t = 3 it peaked at 2137-2182 MiB, the small run at
1020-1062 MiB).
"""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest

from tests.conftest import write_store
from tests.test_memory_bound import MARGIN, MID, RECIPE, SMALL, MiB, run_traj, shapes_of

pytestmark = pytest.mark.slow  # 15-40 s on 2 busy cores

LARGE = 8_000_000
EPOCHS = 12
#: float32 copies of the model the large run may hold beyond the small one's: the model and its gradient (2),
#: KGA's window of t = 3 float64 snapshots (6) and their stack for the fit (6), the basis U (r <= 2 float64
#: columns: 4), a step's θ before and after in float64 (4), the Recorder's pool (up to 8 rows of 32 MB at this
#: N: 8): 30; measured 40-44 over three pairs of runs (the allocator's slack; MARGIN takes the run-to-run spread).
MODEL_COPIES = 44


@pytest.fixture(scope="module")
def replay_inputs(tmp_path_factory):
    """(a tiny store naming no recipe, a PYTHONPATH holding ``kgarecipe`` with ``small`` and ``large`` Wide models)."""
    root = tmp_path_factory.mktemp("kga-memory")
    store = write_store(root / "tiny.zarr", np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32))
    sizes = {"small": SMALL, "mid": MID, "large": LARGE}
    # a step size the one moving row converges with (its Hessian is ~333: lr 0.01 diverges), so KGA fits throughout
    (root / "kgarecipe.py").write_text(RECIPE + inspect.getsource(shapes_of) + f"\n\nSIZES = {sizes!r}\n"
                                       "WideRecipe.defaults = {'lr': 0.001}\n")
    return store, {"PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_kga_replay_memory_is_the_model_and_the_window(replay_inputs, tmp_path):
    store, env = replay_inputs

    def args(size: str) -> list[str]:
        return ["kga-replay", str(store), "--recipe", f"kgarecipe:{size}", "--epochs", str(EPOCHS), "--window", "3",
                "--alpha", "0.5", "--json", "-o", str(tmp_path / size)]

    rc, err, base, _ = run_traj(args("small"), tmp_path, env=env)
    assert rc == 0, err
    limit = base + MARGIN + MODEL_COPIES * (LARGE - SMALL) * 4
    rc, err, _, _ = run_traj(args("large"), tmp_path, limit=limit, env=env)
    assert rc == 0, (f"traj kga-replay on N = {LARGE:,} exceeded {limit / MiB:.0f} MiB of address space "
                     f"(N = {SMALL:,} needed {base / MiB:.0f} MiB):\n{err[-2000:]}")
    (run,) = json.loads((tmp_path / "large" / "report" / "summary.json").read_text())["runs"]
    # KGA fitted at every epoch's end from the third snapshot on and accelerated every step after its first fit
    assert (run["refits"], run["accelerated_steps"], run["diverged_epoch"]) == (EPOCHS - 1, EPOCHS - 2, None)
