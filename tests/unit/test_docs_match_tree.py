"""The maps a newcomer reads first match the tree: README's layout and architecture.md's "Where
does X live" table (issue 34).

Both directions: every package and top-level module under src/financemath_mlops has a line (a
row), and every path, module, command and name a line gives exists. A module moved or added
without its line fails here, with the line to write. Pure file reads: milliseconds.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "financemath_mlops"
ROOT_FOLDERS = ("tests/", "scripts/", "configs/", "docs/", "docker/", "deploy/")


def packages() -> set[str]:
    return {p.parent.name for p in SRC.glob("*/__init__.py")}


def top_modules() -> set[str]:
    return {p.name for p in SRC.glob("*.py") if p.name != "__init__.py"}


def tiers_on_disk() -> set[str]:
    return {
        p.parent.relative_to(ROOT / "tests").parts[0] for p in (ROOT / "tests").rglob("test_*.py")
    }


def section(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


# --- README: the layout ----------------------------------------------------------------------


def readme_layout() -> list[str]:
    block = section(ROOT / "README.md", "## Layout").split("```")[1]
    return [line for line in block.splitlines() if line.strip()]


def readme_names() -> tuple[set[str], set[str], set[str]]:
    """(packages, top-level modules, test tiers) the layout names. A package opens its line
    (`  runs/  ...`); a top-level module sits on a line of its own at that indent; a package's
    own files (`rows.py` under features/) are described on its lines and are not counted."""
    named_packages: set[str] = set()
    named_modules: set[str] = set()
    tiers: set[str] = set()
    for line in readme_layout():
        if line.startswith("tests/{"):
            tiers |= set(line[len("tests/{") : line.index("}")].split(","))
            continue
        if not line.startswith("  ") or line.startswith("   "):
            continue  # the src/ header, or a package's continuation line
        if match := re.match(r"  (\w+)/", line):
            named_packages.add(match.group(1))
            continue
        named_modules |= set(re.findall(r"\b(\w+\.py)\b", re.sub(r"\([^)]*\)", "", line)))
    return named_packages, named_modules, tiers


def test_readme_layout_names_every_package_and_only_real_ones() -> None:
    named, _, _ = readme_names()
    assert not packages() - named, f"README ## Layout has no line for {packages() - named}"
    assert not named - packages(), f"README ## Layout names missing packages {named - packages()}"


def test_readme_layout_names_every_top_level_module_and_only_real_ones() -> None:
    _, named, _ = readme_names()
    assert not top_modules() - named, f"README ## Layout omits {top_modules() - named}"
    assert not named - top_modules(), f"README ## Layout names missing {named - top_modules()}"


def test_readme_layout_names_every_test_tier() -> None:
    _, _, tiers = readme_names()
    assert tiers == tiers_on_disk(), (
        f"tests/{{...}} in README ## Layout should be {tiers_on_disk()}"
    )


# --- architecture.md: "Where does X live" ----------------------------------------------------


def where_rows() -> list[tuple[str, str]]:
    table = section(ROOT / "docs" / "architecture.md", "## Where does X live")
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]  # header, rule
    return [tuple(cell.strip() for cell in row.strip("|").split(" | ", 1)) for row in rows]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def path_of(span: str) -> Path | None:
    """The file or folder a span names (`features/rows.py`, `runs/`, `tests/helpers.py`), or
    None for a command, a name or a pattern (every stage's `__main__.py`)."""
    if " " in span or "<" in span or "*" in span or span == "__main__.py":
        return None
    if span.endswith((".py", "/", ".yaml")):
        return ROOT / span if span.startswith(ROOT_FOLDERS) else SRC / span
    return None


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_every_package_and_top_level_module_has_a_row() -> None:
    named = {span for _, where in where_rows() for span in code_spans(where)}
    heads = {
        span.split("/")[0] for span in named if path_of(span) and not span.startswith(ROOT_FOLDERS)
    }
    missing = sorted((packages() | top_modules()) - heads)
    assert not missing, f"docs/architecture.md 'Where does X live' has no row naming {missing}"


@pytest.mark.parametrize("row", where_rows(), ids=lambda row: row[0][:40])
def test_every_row_names_what_exists(row: tuple[str, str]) -> None:
    """Paths exist; `python -m financemath_mlops.X` is a module that runs; a name in a row
    (`check_reachable`) is defined in one of that row's modules."""
    _, where = row
    spans = code_spans(where)
    files = [path for span in spans if (path := path_of(span)) is not None]
    for path in files:
        assert path.exists(), f"{path.relative_to(ROOT)} (named in the row) does not exist"
    for span in spans:
        if match := re.match(r"python -m (financemath_mlops[\w.]*)", span):
            module = match.group(1)
            spec = importlib.util.find_spec(module)
            runs = spec is not None and (
                spec.submodule_search_locations is None
                or importlib.util.find_spec(f"{module}.__main__") is not None
            )
            assert runs, f"`python -m {module}` (named in the row) is not a runnable module"
    modules = [path for path in files if path.suffix == ".py" and path.is_file()]
    defined = set().union(*(defined_names(path) for path in modules)) if modules else set()
    for span in spans:
        if modules and re.fullmatch(r"[A-Za-z_]\w*", span) and span.isidentifier():
            assert span in defined, f"`{span}` is not defined in {[str(m.name) for m in modules]}"
