"""KGA fidelity (issue 7; the KGA paper, fig. 4 and table 1): quadratic-mlp, 25 epochs, 3 seeds.

Final train loss of SGD, KGA-Epoch (refit at every epoch end) and KGA-Iter (refit every k
steps) and the time each adds per epoch.

    python benchmarks/kga_fidelity.py [--seeds 3] [--alpha 0.25] [--alpha-iter 0.1] [--iter-steps 10]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from traj.recipes import get_recipe
from traj.training import replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25, help="α of KGA-Epoch")
    parser.add_argument("--alpha-iter", type=float, default=0.1, help="α of KGA-Iter")
    parser.add_argument("--iter-steps", type=int, default=10, help="KGA-Iter: refit every k steps on the last k snapshots")
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-kga-"))
    rows: dict[str, list[tuple[float, float]]] = {"SGD": [], "KGA-Epoch": [], "KGA-Iter": []}
    try:
        for seed in range(args.seeds):
            recipe = get_recipe("quadratic-mlp", epochs=args.epochs, seed=seed)
            epoch = replay(recipe, work / f"epoch{seed}", alphas=[args.alpha], window=5, interval="epoch").to_dict()
            it = replay(recipe, work / f"iter{seed}", alphas=[args.alpha_iter], window=args.iter_steps,
                        interval=args.iter_steps).to_dict()
            rows["SGD"].append((epoch["plain_final_train_loss"], 0.0))
            rows["KGA-Epoch"].append((epoch["comparison"][0]["final_train_loss"], epoch["comparison"][0]["added_seconds_per_epoch"]))
            rows["KGA-Iter"].append((it["comparison"][0]["final_train_loss"], it["comparison"][0]["added_seconds_per_epoch"]))
            plain_epoch_s = float(np.mean(epoch["plain"]["epoch_seconds"][1:]))
            print(f"seed {seed}: SGD {rows['SGD'][-1][0]:.3f}, KGA-Epoch {rows['KGA-Epoch'][-1][0]:.3f}, "
                  f"KGA-Iter {rows['KGA-Iter'][-1][0]:.3f} (plain epoch {plain_epoch_s * 1e3:.0f} ms)")
        print(f"\nquadratic-mlp, {args.epochs} epochs, {args.seeds} seeds, KGA-Epoch α = {args.alpha:g}, "
              f"KGA-Iter α = {args.alpha_iter:g} every {args.iter_steps} steps: final train loss (MSE)")
        for name, values in rows.items():
            losses = np.array([v[0] for v in values])
            added = np.array([v[1] for v in values])
            print(f"  {name:10s} {losses.mean():8.3f} ± {losses.std():.3f}   added time per epoch {added.mean() * 1e3:+.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
