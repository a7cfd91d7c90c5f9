"""The walk of a run store through one command: every traj function the store is handed to, in order.

A *stop* is a call site in ``traj/`` that hands the store to a function of ``traj/`` (its path, or the
opened :class:`~traj.store.RunStore`; the store's own methods, where it is ``self``, are not stops), counted
once however often it runs (a loop over snapshots is one stop), as a reader following the store through the
code meets it. A stop called from another module *enters* its module; a *climb back up* is an entry into a
module the walk has entered before (the CLI calling the library a second time, an analysis re-entered by
the evaluation after its fit, the engine called for a second read). Run::

    python benchmarks/store_walk.py dmd sample_data/digits-cnn.zarr --evaluate

It prints the walk, the entries per module and the counts (``--json`` for a machine-readable form).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "traj"
sys.path.insert(0, str(ROOT))  # the checkout this script belongs to, whichever traj is installed


def _name(file: Path) -> str:
    return file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else file.name


def walk(argv: list[str]) -> list[tuple[str, str, str]]:
    """(caller's module, module, function) of every stop of ``traj ARGV`` (the store: ARGV's first path that exists)."""
    from traj.cli.app import app
    from traj.store import RunStore

    path = next((Path(a).resolve() for a in argv[1:] if Path(a).exists()), None)
    if path is None:
        raise SystemExit(f"no store among {argv[1:]}: give a command and an existing store")
    stops: list[tuple[str, str, str]] = []
    sites: set[tuple[str, int, object]] = set()

    def is_store(value: object) -> bool:
        if isinstance(value, list | tuple):  # the runs of conjugacy, the peers of report
            return any(is_store(v) for v in value)
        if isinstance(value, RunStore):
            return Path(value.path).resolve() == path
        return isinstance(value, str | Path) and str(value).endswith(path.name) and Path(value).resolve() == path

    def profile(frame, event, arg):  # noqa: ANN001, ANN202
        if event != "call":
            return
        code = frame.f_code
        file = Path(code.co_filename)
        if not file.is_relative_to(PACKAGE) or code.co_name.startswith("<"):
            return
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals.get(n) for n in names]
        if names[:1] == ("self",) and values and isinstance(values[0], RunStore):
            return  # the store's own methods
        if any(is_store(v) for v in values):
            caller = frame.f_back
            site = (caller.f_code.co_filename, caller.f_lineno, code)
            if site not in sites:
                sites.add(site)
                stops.append((_name(Path(caller.f_code.co_filename)), _name(file), code.co_name))

    sys.setprofile(profile)
    try:
        app(argv, standalone_mode=False)
    finally:
        sys.setprofile(None)
    return stops


def summary(stops: list[tuple[str, str, str]]) -> dict:
    entries = [m for caller, m, _ in stops if caller != m]
    climbs = sum(m in entries[:i] for i, m in enumerate(entries))
    return {"stops": len(stops), "entries": len(entries), "climbs": climbs,
            "per_module": dict(collections.Counter(entries).most_common()),
            "walk": [f"{m}:{f}" + ("" if caller == m else f"  <- {caller}") for caller, m, f in stops]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args, argv = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        import typer

        from traj.cli.app import app

        command = typer.main.get_command(app).commands.get(argv[0]) if argv else None
        takes_out = command is not None and any("--out" in p.opts for p in command.params)
        if takes_out and "--out" not in argv and "-o" not in argv:
            argv = [*argv, "--out", str(Path(tmp) / "out")]
        result = summary(walk(argv))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for stop in result["walk"]:
        print(" ", stop)
    print("entries per module:")
    for module, n in result["per_module"].items():
        print(f"  {n:3d}  {module}")
    print(f"{result['stops']} stops, {result['entries']} module entries, {result['climbs']} climbs back up")


if __name__ == "__main__":
    main()
