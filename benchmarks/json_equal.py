"""Every command's ``--json`` on ``sample_data/``, saved or compared value by value.

A refactor that should change no behaviour is checked by saving the outputs before it and
comparing after::

    python benchmarks/json_equal.py save /tmp/json-before      # at the old commit
    python benchmarks/json_equal.py compare /tmp/json-before   # at the new one

Output folders are put at the same place in both runs (under the given folder), and the path of
``sample_data/`` is saved as ``{data}``, so paths in the JSON compare equal too (the old commit may
be checked out elsewhere, e.g. ``git worktree add``). Floats must agree to ``--rtol`` (default 0: bit for bit).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sample_data"

#: (name, argv after ``traj``); ``{out}`` is this case's output folder.
CASES: list[tuple[str, list[str]]] = [
    ("info", ["info", "{data}/digits-cnn.zarr"]),
    ("dmd", ["dmd", "{data}/digits-cnn.zarr", "--out", "{out}"]),
    ("dmd-options", ["dmd", "{data}/digits-cnn.zarr", "--per-layer", "--forecast", "5",
                     "--save-modes", "--out", "{out}"]),
    ("dmd-evaluate", ["dmd", "{data}/digits-cnn.zarr", "--evaluate", "--out", "{out}"]),
    ("cmd", ["cmd", "{data}/digits-cnn.zarr", "--modes", "5", "--out", "{out}"]),
    ("cmd-compare", ["cmd", "{data}/digits-cnn.zarr", "--modes", "5", "--compare-dmd", "5",
                     "--out", "{out}"]),
    ("prune", ["prune", "{data}/digits-cnn.zarr", "--out", "{out}"]),
    ("conjugacy", ["conjugacy", "{data}/mirror-omd.zarr", "{data}/mirror-ogd.zarr",
                   "{data}/mirror-bisection.zarr", "--null", "{data}/mirror-omd-seed1.zarr",
                   "--out", "{out}"]),
    ("kga-replay", ["kga-replay", "{data}/quadratic-mlp.zarr", "--alpha", "0.1,0.5",
                    "--out", "{out}"]),
    ("landscape", ["landscape", "{data}/quadratic-mlp.zarr", "--out", "{out}"]),
    ("report", ["report", "{data}/digits-cnn.zarr", "--out", "{out}"]),
]

#: Keys whose values are wall-clock measurements or versions, not results.
VOLATILE = {"seconds", "elapsed", "elapsed_s", "wall", "wall_s", "created", "traj_version",
            "version", "generated", "added_seconds_per_epoch", "dmd_seconds_total"}


def run_all(folder: Path) -> dict[str, object]:
    outs = {}
    for name, argv in CASES:
        out = folder / "out" / name
        if out.exists():
            shutil.rmtree(out)
        args = [a.format(data=DATA, out=out) for a in argv]
        proc = subprocess.run(["traj", *args, "--json"], capture_output=True, text=True)
        if proc.returncode != 0:
            outs[name] = {"returncode": proc.returncode, "stderr": proc.stderr.strip()[-400:]}
        else:  # the data's folder as a placeholder: a checkout elsewhere (a worktree of the old commit) compares equal
            outs[name] = json.loads(proc.stdout.replace(json.dumps(str(DATA))[1:-1], "{data}"))
        print(f"{name}: rc {proc.returncode}", file=sys.stderr)
    return outs


def differences(a: object, b: object, rtol: float, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE or key.endswith("_seconds"):
                continue
            if key not in a or key not in b:
                found.append(f"{path}/{key}: only in {'after' if key in b else 'before'}")
            else:
                found += differences(a[key], b[key], rtol, f"{path}/{key}")
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} -> {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, rtol, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return []
        if math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(abs(a), abs(b)):
            return []
    elif a == b:
        return []
    return [f"{path}: {a!r} -> {b!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "compare"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    outs = run_all(args.folder)
    if args.action == "save":
        (args.folder / "before.json").write_text(json.dumps(outs, indent=1))
        return 0
    before = json.loads((args.folder / "before.json").read_text())
    found = differences(before, json.loads(json.dumps(outs)), args.rtol)
    for line in found:
        print(line)
    print(f"{len(found)} difference(s) over {len(CASES)} commands", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
