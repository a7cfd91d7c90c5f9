"""Koopman pruning near convergence (issue 5's fidelity check; Redman et al. 2022 figs. 1-3).

Records digits-cnn to a plateau (every step), then prunes its last epoch with KMP, GMP and
LSP at compressions 2-64 and prints the KMP/GMP mask overlap (Redman et al. 2022 reports >= 95 %) and
accuracy after pruning and after one epoch of refinement (mean over seeds).

    python benchmarks/prune_fidelity.py [--epochs 30] [--seeds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from traj.analysis.prune import prune
from traj.recipes import get_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-prune-fidelity-"))
    try:
        t0 = time.perf_counter()
        recipe = get_recipe("digits-cnn", epochs=args.epochs)
        store = recipe.record(work / "digits.zarr")
        print(f"digits-cnn, {args.epochs} epochs every step: T = {store.n_snapshots} ({time.perf_counter() - t0:.0f} s)")
        compressions = [2, 4, 8, 16, 32, 64]
        result = prune(store, methods=["kmp", "gmp", "lsp"], compressions=compressions, seeds=args.seeds, recipe=recipe)
        print(f"epoch {result.epoch}: λ1 = {result.lambda1.real:.6f}{result.lambda1.imag:+.6f}i, "
              f"unpruned accuracy {100 * result.baseline['accuracy']:.2f} %")
        print("c      " + "  ".join(f"{c:>6}" for c in compressions))
        print("KMP-GMP overlap " + "  ".join(f"{100 * v:5.1f}%" for v in result.overlap["kmp", "gmp"]))
        for m in ("kmp", "gmp", "lsp"):
            after = "  ".join(f"{100 * v:5.1f}%" for v in result.accuracy[m].mean)
            tuned = "  ".join(f"{100 * v:5.1f}%" for v in result.accuracy_refined[m].mean)
            print(f"{m.upper()} pruned  {after}")
            print(f"{m.upper()} refined {tuned}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
