"""Conjugacy power where the answer is known (issue 26): planted linear systems in Redman et al. 2024's setting.

Each seed choice i: run A, a 4-dimensional linear system (eigenvalues 0.95, 0.85, 0.7, 0.5, a fixed
orthogonal basis) from 25 initial conditions (stacked, 4 delays, rank 4); runs whose eigenvalue 0.95
is 0.95 + δ (non-conjugate: the smallest δ found is the test's power); runs of A seen through a cubic
bend of every coordinate, x -> mid + half (u ± s u³) on its range (conjugate: a change of coordinates);
the seed null is A from 4 other sets of initial conditions. Printed per --null-strength and --null-size:
how often each δ is called non-conjugate and each bend s conjugate, over --choices seed choices, by
the default command (rule reproducible), and the smallest δ found in every choice.

    python benchmarks/conjugacy_power.py [--choices 10] [--strengths 0.1,0.2] [--sizes 20,40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' generator

from tests.conftest import planted_initial_conditions, write_store  # noqa: E402
from traj.analysis.conjugacy import conjugacy  # noqa: E402
from traj.store import RunStore  # noqa: E402

PLANTED = [0.95, 0.85, 0.7, 0.5]
DELTAS = (0.005, 0.01, 0.015, 0.02, 0.03)
BENDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--choices", type=int, default=10)
    parser.add_argument("--strengths", default="0.1,0.2")
    parser.add_argument("--sizes", default="20,40")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-power-"))

    def run(name: str, eigenvalues: list[float], seed: int, bend: float = 0.0) -> RunStore:
        path = work / f"{name}.zarr"
        if not path.exists():
            write_store(path, planted_initial_conditions(eigenvalues, seed, bend=bend))
        return RunStore(path)

    try:
        print(f"{'strength':>8} {'maps':>4}  non-conjugate found, of {args.choices}, at delta = "
              f"{' '.join(f'{d:g}' for d in DELTAS)}  |  conjugate kept at bend = {' '.join(f'{b:g}' for b in BENDS)}"
              "  |  smallest delta found in every choice")
        for strength in (float(s) for s in args.strengths.split(",")):
            for size in (int(n) for n in args.sizes.split(",")):
                t0 = time.perf_counter()
                found = dict.fromkeys(DELTAS, 0)
                kept = dict.fromkeys(BENDS, 0)
                for i in range(args.choices):
                    a = run(f"a{i}", PLANTED, i)
                    null = [run(f"n{i}-{j}", PLANTED, 1000 + 4 * i + j) for j in range(4)]
                    moved = [run(f"d{i}-{d}", [0.95 + d, *PLANTED[1:]], 100 + i) for d in DELTAS]
                    bent = [run(f"b{i}-{b}", PLANTED, 200 + i, b) for b in BENDS]
                    r = conjugacy([a, *moved, *bent], null=null, stack=25, delays=4, k=4, null_size=size,
                                  null_strength=strength)
                    first = r.verdicts[: len(DELTAS) + len(BENDS)]  # (A, each moved run), then (A, each bent run)
                    for d, v in zip(DELTAS, first, strict=False):
                        found[d] += v.verdict == "non-conjugate"
                    for b, v in zip(BENDS, first[len(DELTAS):], strict=True):
                        kept[b] += v.verdict == "conjugate"
                always = next((d for d in DELTAS if found[d] == args.choices), None)
                print(f"{strength:8.2f} {size:4d}  {' '.join(f'{found[d]:>5d}' for d in DELTAS)}"
                      f"{'':>24}|  {' '.join(f'{kept[b]:>3d}' for b in BENDS)}  |  "
                      f"{'none' if always is None else f'{always:g}'}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
