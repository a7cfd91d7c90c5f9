"""No arrow runs back up to the package face: modules inside traj/ never import traj/__init__.py (issue 27).

The face imports the rooms (store, errors, the lazy analyses); a room that imports the face back makes a
cycle that only import order keeps from failing. What several rooms need, such as the version, lives in a
leaf module (``traj/_version.py``), which is also where pyproject reads the version from.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import traj
import traj._version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "traj"


def imports_of_the_face(path: Path, package: Path = PACKAGE) -> list[int]:
    """Lines of ``path`` (a module under ``package``) that import the package's ``__init__``."""
    parts = path.relative_to(package.parent).with_suffix("").parts  # ("traj", "store", "writer")
    here = parts[:-1] if path.name != "__init__.py" else parts  # the package the module sits in
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = base + tuple(node.module.split(".")) if node.module else base
            else:
                target = tuple((node.module or "").split("."))
            if target == (package.name,):  # `from .. import x` / `from traj import x`: the face itself
                found.append(node.lineno)
        elif isinstance(node, ast.Import) and any(alias.name == package.name for alias in node.names):
            found.append(node.lineno)
    return found


def test_the_check_sees_an_import_of_the_face(tmp_path: Path) -> None:
    package = tmp_path / "traj"
    (package / "store").mkdir(parents=True)
    module = package / "store" / "writer.py"
    module.write_text("from .. import __version__\nfrom .._version import __version__\nfrom . import schema\n"
                      "from traj import Recorder\nimport traj\nfrom traj.errors import TrajError\n")
    assert imports_of_the_face(module, package) == [1, 4, 5]


def test_no_module_imports_the_package_face() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if path != PACKAGE / "__init__.py" for line in imports_of_the_face(path)]
    assert found == []


def test_the_version_has_one_source_that_pyproject_reads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "traj._version.__version__"}
    # setuptools reads an `attr:` statically (ast) where it can: the leaf module is one literal assignment
    tree = ast.parse((PACKAGE / "_version.py").read_text(encoding="utf-8"))
    (assign,) = [n for n in tree.body if isinstance(n, ast.Assign)]
    assert isinstance(assign.value, ast.Constant) and assign.value.value == traj.__version__ == traj._version.__version__
