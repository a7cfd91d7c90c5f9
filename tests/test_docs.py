"""The repo explains itself: pointers into docs/methods.md name sections that exist, papers cited in the code
are listed in its references, and nothing points to files the repo does not contain."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "docs" / "methods.md"
#: Where code and docs may point into docs/methods.md.
SOURCES = ("traj", "tests", "benchmarks", "docs", "README.md")
#: "docs/methods.md §2.4", "docs/methods.md §1.2-§1.4"
POINTER = re.compile(r"docs/methods\.md,? §(\d+(?:\.\d+)?)(?:-§(\d+(?:\.\d+)?))?")
#: "docs/methods.md, Notation" and the like: a pointer to a named (unnumbered) section.
NAMED = re.compile(r"docs/methods\.md, ([A-Z][a-z]+)\b")
#: Files the repository does not contain, and the numbering of a paper collection outside it.
FOREIGN = re.compile(r"engineering\.md|seed 00\d|(?<!docs/)\bmethods\.md")
#: "Turjeman et al. 2022", "Gavish & Donoho 2014", "Dogra & Redman (2020)", "Halko, Martinsson & Tropp 2011"
_NAME = r"[A-Z][^\W\dA-Z_][\w-]*"  # a surname: capitalised, then lower case (not "DMD")
CITATION = re.compile(rf"((?:{_NAME},\s+)*{_NAME})(?:\s+et al\.|\s+&\s+{_NAME})[ ,]+\(?(\d{{4}})\b")


def _texts() -> dict[str, str]:
    files = []
    for source in SOURCES:
        path = ROOT / source
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".md")]
    # this file holds broken pointers on purpose, to show the checks see them
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files if p != Path(__file__).resolve()}


def sections(markdown: str) -> tuple[set[str], set[str]]:
    """The numbered sections ("## 1. …" → "1", "### 1.2 …" → "1.2") and named ones ("## Notation") of a page."""
    numbered = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", markdown, flags=re.M))
    named = set(re.findall(r"^## ([A-Z][a-z]+)\s*$", markdown, flags=re.M))
    return numbered, named


def broken_pointers(text: str, numbered: set[str], named: set[str]) -> list[str]:
    """Every pointer into docs/methods.md in ``text`` that names no section of it."""
    broken = []
    for match in POINTER.finditer(text):
        broken += [f"§{s}" for s in match.groups() if s is not None and s not in numbered]
    broken += [m.group(1) for m in NAMED.finditer(text) if m.group(1) not in named]
    return broken


def reference_keys(markdown: str) -> set[tuple[str, str]]:
    """(first author's surname, year) of every entry under "## References"."""
    listed = markdown.split("\n## References", 1)[1]
    return {(m.group(1), m.group(2)) for m in re.finditer(r"^- ([\w-]+)\b[^\n]*?\((\d{4})\)", listed, flags=re.M)}


def test_methods_sections_are_numbered_in_order() -> None:
    numbered, named = sections(METHODS.read_text(encoding="utf-8"))
    assert {"1", "2", "3", "4", "5", "6"} <= numbered
    assert {"1.1", "1.7", "2.1", "2.5", "3.3", "4.3", "4.4", "4.7", "5.3"} <= numbered
    assert {"Notation", "References"} <= named


def test_every_pointer_names_a_section() -> None:
    numbered, named = sections(METHODS.read_text(encoding="utf-8"))
    texts = _texts()
    pointers = sum(len(POINTER.findall(t)) for t in texts.values())
    assert pointers >= 40  # the code does point here: a pattern that stopped matching would pass vacuously
    broken = {path: b for path, text in texts.items() if (b := broken_pointers(text, numbered, named))}
    assert broken == {}


def test_the_checker_sees_a_broken_pointer() -> None:
    numbered, named = sections("## Notation\n## 1. DMD\n### 1.2 The rank rule\n")
    text = "see docs/methods.md §1.2, docs/methods.md §1.3-§1.2, docs/methods.md §7 and docs/methods.md, Glossary"
    assert broken_pointers(text, numbered, named) == ["§1.3", "§7", "Glossary"]


def test_no_pointer_to_files_outside_the_repo() -> None:
    found = {path: FOREIGN.findall(text) for path, text in _texts().items() if FOREIGN.search(text)}
    assert found == {}
    assert FOREIGN.findall("methods.md §1, ../shared/methods.md, engineering.md, seed 002; docs/methods.md §1 is fine"
                           ) == ["methods.md", "methods.md", "engineering.md", "seed 002"]


def test_papers_cited_in_the_code_are_referenced() -> None:
    listed = reference_keys(METHODS.read_text(encoding="utf-8"))
    assert ("Turjeman", "2022") in listed and ("Erichson", "2019") in listed and ("Brunton", "2015") in listed
    cited = {(re.split(r",\s+", m.group(1))[0], m.group(2)) for text in _texts().values() for m in CITATION.finditer(text)}
    cited = {c for c in cited if c[0] != "Anonymous"}
    assert len(cited) >= 8
    assert sorted(cited - listed) == []


def test_the_docs_name_the_store_format_version_written() -> None:
    import traj.store
    from traj.store.schema import FORMAT_VERSION

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert set(re.findall(r"## The run store \(format v(\d+)\)", readme)) == {str(FORMAT_VERSION)}
    assert set(re.findall(r'`\{"format": "traj-run", "version": (\d+)\}`', readme)) == {str(FORMAT_VERSION)}
    assert re.match(rf"The run store: format v{FORMAT_VERSION}\b", traj.store.__doc__ or "")


# ---------------------------------------------------------------------- docs/architecture.md against the tree
def room_table(markdown: str) -> list[tuple[str, list[str], str]]:
    """(room, its packages or modules under traj/, the row's text) of each row of "## The rooms"."""
    table = markdown.split("## The rooms", 1)[1].split("\n\n", 2)[1]
    rows = []
    for line in table.splitlines()[2:]:  # after the header and its rule
        room, files, _ = (cell.strip() for cell in line.strip().strip("|").split("|", 2))
        rows.append((room, re.findall(r"`(traj/[\w/.]*)`", files), line))
    return rows


def room_problems(markdown: str, root: Path) -> list[str]:
    """What the room table says that the tree under ``root`` (the repository) does not hold, and back."""
    problems = []
    described: set[Path] = set()
    for room, paths, text in room_table(markdown):
        packages = [root / p for p in paths if p.endswith("/")]
        named = set(re.findall(r"`(?:traj/)?([\w/]+\.py|[\w/]+/)`", text))
        for path in paths:
            if not (root / path).exists():
                problems.append(f"{room}: {path} does not exist")
            described.add((root / path).resolve())
        # a room of packages names their modules; a room of one module may name its users anywhere in traj/
        where = packages or [p for p in (root / "traj").rglob("*") if p.is_dir() and p.name != "__pycache__"]
        for name in named - {p.removeprefix("traj/") for p in paths}:
            if not any((pkg / name).exists() for pkg in [*where, root / "traj"]):
                problems.append(f"{room}: {name} is in none of its packages")
        for pkg in packages:
            for child in sorted(pkg.iterdir()) if pkg.is_dir() else []:
                if child.name in ("__init__.py", "__pycache__") or not (child.suffix == ".py" or child.is_dir()):
                    continue
                label = child.name + ("/" if child.is_dir() else "")
                if not any(n == label or n.endswith(f"{pkg.name}/{label}") for n in named):
                    problems.append(f"{room}: {pkg.name}/{label} is not described")
    for child in sorted((root / "traj").iterdir()):
        if child.name == "__pycache__" or not (child.suffix == ".py" or (child / "__init__.py").exists()):
            continue
        if child.resolve() not in described and f"`traj/{child.name}" not in markdown:
            problems.append(f"traj/{child.name} is in no room")
    return problems


def test_the_architecture_rooms_are_the_tree() -> None:
    markdown = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert len(room_table(markdown)) >= 9
    assert room_problems(markdown, ROOT) == []


def test_the_room_check_sees_a_missing_and_an_undescribed_module(tmp_path) -> None:
    for name in ("traj/__init__.py", "traj/errors.py", "traj/store/__init__.py", "traj/store/schema.py",
                 "traj/store/extra.py", "traj/orphan/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    markdown = ("## The rooms\n\n| Room | Files | What it owns |\n|---|---|---|\n"
                "| store | `traj/store/` | `schema.py`, `writer.py` |\n\nCross-cutting: `traj/errors.py`.\n")
    assert room_problems(markdown, tmp_path) == [
        "store: writer.py is in none of its packages", "store: store/extra.py is not described",
        "traj/__init__.py is in no room", "traj/orphan is in no room"]
