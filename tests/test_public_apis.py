"""traj uses its dependencies' public APIs only, except where none exists; each exception is listed here and
says why beside its use."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (file, private name) kept on purpose: a comment at the use says which public API is missing.
ALLOWED = {
    ("traj/store/guard.py", "zarr.core.sync"),  # no public way to run a coroutine on zarr's own event loop
    ("traj/record/recorder.py", "threading._register_atexit"),  # atexit runs after zarr's executor has stopped
}


def _private(dotted: str) -> bool:
    parts = dotted.split(".")
    return any(p.startswith("_") and not p.startswith("__") for p in parts) or parts[:2] == ["zarr", "core"]


def private_uses(source: str) -> set[str]:
    """Private names of other packages that ``source`` imports or reaches by attribute or ``getattr``."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> module it binds
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
                if _private(alias.name):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if _private(node.module) or _private(alias.name):
                    found.add(f"{node.module}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if _private(node.attr):
                found.add(f"{modules[node.value.id]}.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in modules
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            found.add(f"{modules[node.args[0].id]}.{node.args[1].value}")
    return found


def test_the_checker_sees_private_uses() -> None:
    source = ("import threading\nfrom typer._click.exceptions import ClickException\nfrom zarr.core.buffer import Buffer\n"
              "from zarr.abc.buffer import BufferPrototype\nregister = getattr(threading, '_register_atexit', None)\n"
              "threading._shutdown()\nthreading.Thread\n")
    assert private_uses(source) == {"typer._click.exceptions.ClickException", "zarr.core.buffer.Buffer",
                                    "threading._register_atexit", "threading._shutdown"}


def test_only_the_listed_private_apis_are_used() -> None:
    found = set()
    for path in sorted((ROOT / "traj").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        found |= {(rel, name) for name in private_uses(path.read_text(encoding="utf-8"))}
    # zarr.core.sync is reached as "from zarr.core.sync import sync"
    found = {(rel, "zarr.core.sync" if name == "zarr.core.sync.sync" else name) for rel, name in found}
    assert found == ALLOWED


def test_the_lazy_training_package_names_what_it_loads():
    """traj.training loads its names on first use (the CLI must not import torch): each is where the
    package says, the TYPE_CHECKING imports name the same set, and a submodule never shadows a name."""
    import ast
    import importlib

    import traj.training as training
    import traj.training.replays  # noqa: F401  (a submodule import binds its module on the package)

    source = ast.parse(Path(training.__file__).read_text())
    typed = {alias.name for node in ast.walk(source) if isinstance(node, ast.ImportFrom) for alias in node.names
             if node.level == 1}
    assert typed == set(training.__all__) == set(training._WHERE)
    for name, module in training._WHERE.items():
        assert getattr(training, name) is getattr(importlib.import_module(f"traj.training.{module}"), name)
    assert callable(training.replay) and training.replay.__module__ == "traj.training.replays"
    assert set(training.__all__) <= set(dir(training))
