"""KGA against prediction-based Koopman acceleration (issue 17 item 1; the KGA paper, fig. 6a).

Re-runs a recipe plainly, with KGA and as the "predict" (Dogra & Redman: jump to the DMD forecast
τ epochs ahead every J epochs, then train on) and "bootstrap" (Tano et al.: keep a jump only when
the validation loss falls) baselines, for several seeds, and prints the validation accuracy at
some epochs, the final validation loss, the jumps kept and the accuracy right after each jump.
The seed's claim: a prediction-based run loses accuracy after a jump or oscillates; KGA does not.

    python benchmarks/kga_baselines.py [--recipe digits-cnn] [--seeds 3] [--epochs 20] [--alpha 0.25]
                                       [--jump-horizon 5] [--jump-window 5]
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
    parser.add_argument("--recipe", default="digits-cnn")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--jump-window", type=int, default=5)
    parser.add_argument("--jump-horizon", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-kga-baselines-"))
    curves: dict[str, list[list[float]]] = {}
    final_loss: dict[str, list[float]] = {}
    jumps: dict[str, list[tuple[int, int, float, float]]] = {}
    try:
        for seed in range(args.seeds):
            recipe = get_recipe(args.recipe, epochs=args.epochs, seed=seed, every="epoch")
            result = replay(recipe, work / f"s{seed}", alphas=[args.alpha], baselines=["predict", "bootstrap"],
                            jump_window=args.jump_window, jump_horizon=args.jump_horizon)
            for run in (result.plain, *result.runs):
                name = "plain" if run is result.plain else run.name
                curves.setdefault(name, []).append(list(run.val_accuracy or run.val_loss))
                final_loss.setdefault(name, []).append(run.val_loss[-1])
                if run.jumps is not None:
                    j = run.jumps
                    drop = [a - run.val_accuracy[e - 1] for e, a in zip(j.epochs, j.val_accuracy_after, strict=True)
                            ] if run.val_accuracy else [float("nan")]
                    rise = [after - before for before, after in zip(j.val_loss_before, j.val_loss_after, strict=True)]
                    jumps.setdefault(name, []).append((j.n_taken, len(j.taken), float(np.median(rise)),
                                                       float(np.median(drop))))
            print(f"seed {seed}: final " + ", ".join(f"{k} {v[-1][-1]:.3f}" for k, v in curves.items()))
        picks = sorted({4, 5, 8, 10, 15, args.epochs} & set(range(1, args.epochs + 1)))
        print(f"\n{args.recipe}, {args.epochs} epochs, {args.seeds} seed(s), KGA α = {args.alpha:g}, jumps: window "
              f"{args.jump_window}, horizon {args.jump_horizon}; validation accuracy (mean over seeds) at epochs {picks}")
        for name, values in curves.items():
            mean = np.mean(values, axis=0)
            line = "  ".join(f"{mean[e - 1]:.3f}" for e in picks)
            extra = ""
            if name in jumps:
                taken = sum(t for t, *_ in jumps[name])
                tried = sum(n for _, n, *_ in jumps[name])
                extra = (f"   jumps kept {taken}/{tried}, Δval loss at a jump (median) {np.mean([r for *_, r, _ in jumps[name]]):+.3f}, "
                         f"accuracy right after − before {np.mean([d for *_, d in jumps[name]]):+.3f}")
            print(f"  {name:10s} {line}   final val loss {np.mean(final_loss[name]):.4f}{extra}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
