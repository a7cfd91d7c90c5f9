"""Conjugacy fidelity (issue 6; seed 002 figs. 2, 5 and 4's transformer comparison).

(1) mnist1d-mlp with h = 5, 10, 40, several seeds each, observable = the last layer's weights
    (as the authors did for FCNs): the W1 matrix between widths, with the h = 40 seeds as null.
(2) modular-transformer with and without the weight-norm constraint over the first training
    steps, with each configuration's other seeds as null.
(3) mirror-descent: OMD vs OGD vs bisection with random-IC seed nulls.

    python benchmarks/conjugacy_fidelity.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from traj.analysis.conjugacy import conjugacy
from traj.recipes import get_recipe


def record(work: Path, name: str, **config) -> Path:
    path = work / f"{name}-{'-'.join(f'{k}{v}' for k, v in config.items())}.zarr"
    get_recipe(name, config).record(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="transformer steps compared")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-conj-"))
    try:
        seeds = range(args.seeds)
        widths = (40, 10, 5)  # the first run is A; its seeds are the null
        runs = {h: [record(work, "mnist1d-mlp", h=h, seed=s, epochs=10) for s in seeds] for h in widths}
        result = conjugacy([runs[h][0] for h in widths], layer="4.weight", null=runs[40][1:], k=10)
        print("(1) mnist1d-mlp, last layer, W1 between h = 40, 10, 5 (seed 0 each):")
        print(np.array2string(result.distance, precision=4))
        print(f"    null (h = 40 seeds): {np.round(result.null_distances, 4).tolist()}, threshold {result.threshold:.4f}")
        for v in result.verdicts:
            print(f"    {Path(v.a).name[:22]} vs {Path(v.b).name[:22]}: {v.distance:.4f} {v.verdict}")
        within = [conjugacy([runs[h][0], runs[h][i]], layer="4.weight", k=10).distance[0, 1]
                  for h in widths for i in range(1, args.seeds)]
        print(f"    seed-to-seed W1 within each width: {np.round(within, 4).tolist()}")

        free = [record(work, "modular-transformer", seed=s, epochs=args.steps) for s in seeds]
        held = [record(work, "modular-transformer", seed=s, epochs=args.steps, constrain_norm=True) for s in seeds]
        res = conjugacy([free[0], held[0]], layer="mlp_in.weight", null=free[1:], k=10)
        print(f"(2) modular-transformer, first {args.steps} steps, observable mlp_in.weight: "
              f"W1 free vs constrained = {res.distance[0, 1]:.4f}, null {np.round(res.null_distances, 4).tolist()}, "
              f"verdict {res.verdicts[0].verdict}")

        mirror = {a: [record(work, "mirror-descent", algorithm=a, seed=s) for s in seeds] for a in ("omd", "ogd", "bisection")}
        res = conjugacy([mirror["omd"][0], mirror["ogd"][0], mirror["bisection"][0]], null=mirror["omd"][1:])
        print(f"(3) mirror-descent: OMD-OGD {res.distance[0, 1]:.4g}, OMD-bisection {res.distance[0, 2]:.4g}, "
              f"null {np.round(res.null_distances, 8).tolist()} -> {[v.verdict for v in res.verdicts]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
