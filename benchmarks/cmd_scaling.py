"""CMD at scale, against the DMD Gram pass on the same store, in the same run.

(a) The 10M x 200 synthetic store of benchmarks/dmd_scaling.py: wall time of the DMD Gram
    pass (Engine.gram) and of `traj.cmd(..., modes=10, samples=1000)` writing its model to
    disk, each in a fresh process with its peak RSS (psutil).
    Targets (issue 4): CMD <= 2x the Gram pass, RSS <= 1 GiB.
(b) A real run: digits-cnn recorded every step for 10 epochs; CMD for several M; the smallest
    M whose reconstructed validation accuracy at the last snapshot is within 1 point of the
    original.

    python benchmarks/cmd_scaling.py [--n-params 10000000] [--snapshots 200] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dmd_scaling import measure, synthetic_store  # noqa: E402

GRAM = "import sys; from traj.store import RunStore; from traj.engine import Engine; Engine().gram(RunStore(sys.argv[1]))"
CMD = ("import sys; from traj.analysis.cmd import cmd; "
       "r = cmd(sys.argv[1], modes=10, samples=1000, out=sys.argv[2]); print(r.relative_error)")


def timed(code: str, *args: str) -> tuple[float, float]:
    return measure(["-c", code, *args])


def real_run(work: Path) -> None:
    from traj.analysis.cmd import cmd, evaluate
    from traj.recipes import get_recipe

    recipe = get_recipe("digits-cnn", epochs=10)
    store = recipe.record(work / "digits.zarr")
    print(f"(b) digits-cnn, 10 epochs every step: T = {store.n_snapshots}, N = {store.n_params}")
    smallest = None
    for m in (1, 2, 3, 4, 5, 6, 8, 10, 15, 20):
        result = cmd(store, modes=m, samples=1000)
        ev = evaluate(result, store, recipe, max_points=1)  # max_points=1 scores the last snapshot
        last = {"original_accuracy": ev.original["accuracy"][-1], "cmd_accuracy": ev.cmd["accuracy"][-1]}
        gap = 100 * (last["original_accuracy"] - last["cmd_accuracy"])
        print(f"    M = {m:2d}: original {100 * last['original_accuracy']:.2f} %, CMD {100 * last['cmd_accuracy']:.2f} % "
              f"(gap {gap:+.2f} points), weight relative error {result.relative_error:.3g}")
        if smallest is None and gap <= 1.0:
            smallest = m
    print(f"    smallest M within 1 point of the original: {smallest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-params", type=int, default=10_000_000)
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--skip-a", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-cmd-bench-", dir=args.dir))
    try:
        if not args.skip_a:
            store = synthetic_store(work / "big.zarr", args.n_params, args.snapshots)
            print(f"(a) store {args.n_params:,} x {args.snapshots} float32, {store.nbytes_stored() / 1e9:.2f} GB")
            t_gram, rss_gram = timed(GRAM, str(store.path))
            t_cmd, rss_cmd = timed(CMD, str(store.path), str(work / "cmd.zarr"))
            print(f"    DMD Gram pass  {t_gram:6.1f} s   peak RSS {rss_gram:.0f} MiB")
            print(f"    CMD (M = 10)   {t_cmd:6.1f} s   peak RSS {rss_cmd:.0f} MiB")
            print(f"    ratio CMD / Gram = {t_cmd / t_gram:.2f}  target <= 2;  RSS target <= 1024 MiB")
        real_run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
