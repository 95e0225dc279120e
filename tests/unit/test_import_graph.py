"""The import graph of `src/financemath_mlops`, read with `ast` (nothing is imported).

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:`. A circle
through a function-local or type-only import is still two modules that need each other, so the
rule is simply: no circles. Shared code goes one floor down (e.g. `errors.py`, `scoring.py`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = "financemath_mlops"
SRC = REPO_ROOT / "src" / PACKAGE

# Only these packages may import mlflow: the run contract (`runs/`) and the logged model (`model/`).
MLFLOW_HOMES = (f"{PACKAGE}.runs", f"{PACKAGE}.model")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of ours, or the top-level name of a third-party package
    line: int


def module_name(path: Path, root: Path = SRC.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _ours(dotted: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of `dotted` that is one of our modules (None for third-party names)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _with_packages(target: str, importer: str, known: dict[str, Path]) -> Iterator[str]:
    """`import a.b.c` runs a, a.b and a.b.c; an importer's own enclosing packages are already
    running when it is imported, so edges to them are not dependencies."""
    parts = target.split(".")
    for end in range(1, len(parts) + 1):
        name = ".".join(parts[:end])
        if name in known and name != importer and not importer.startswith(name + "."):
            yield name


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):  # walk: function bodies and TYPE_CHECKING blocks too
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(name, path).split(".")
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
            dotted = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in dotted:
            ours = _ours(target, known)
            if ours is None:
                yield Import(name, target.partition(".")[0], node.lineno)
                continue
            for module in _with_packages(ours, name, known):
                yield Import(name, module, node.lineno)


def import_graph() -> tuple[dict[str, set[str]], list[Import]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    third_party: list[Import] = []
    for name, path in known.items():
        for imp in imports_of(name, path, known):
            if imp.target in known:
                graph[name].add(imp.target)
            else:
                third_party.append(imp)
    return graph, third_party


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest circle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while (parent := parents[path[-1]]) is not None:
                        path.append(parent)
                    return [*reversed(path), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    return " -> ".join(m.removeprefix(PACKAGE + ".") for m in a_cycle(graph, component))


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The reader itself: function-local, TYPE_CHECKING, relative and `from pkg import sub`."""
    root = tmp_path / PACKAGE
    (root / "stage").mkdir(parents=True)
    for rel in ("__init__.py", "stage/__init__.py", "base.py", "stage/sub.py", "stage/other.py"):
        (root / rel).write_text("")
    (root / "stage" / "sub.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from financemath_mlops.base import X\n"
        "def f():\n    from . import other\n    import numpy.linalg\n"
    )
    (root / "stage" / "other.py").write_text("from ..stage import sub\nfrom ..base import Y\n")
    known = {module_name(p, tmp_path): p for p in sorted(root.rglob("*.py"))}
    found = {
        (i.importer, i.target)
        for name, path in known.items()
        for i in imports_of(name, path, known)
    }
    assert found == {
        (f"{PACKAGE}.stage.sub", "typing"),
        (f"{PACKAGE}.stage.sub", f"{PACKAGE}.base"),
        (f"{PACKAGE}.stage.sub", f"{PACKAGE}.stage.other"),
        (f"{PACKAGE}.stage.sub", "numpy"),
        (f"{PACKAGE}.stage.other", f"{PACKAGE}.stage.sub"),
        (f"{PACKAGE}.stage.other", f"{PACKAGE}.base"),
    }
    graph: dict[str, set[str]] = {name: set() for name in known}
    for a, b in found:
        if b in known:
            graph[a].add(b)
    cycles = strongly_connected(graph)
    assert cycles == [[f"{PACKAGE}.stage.other", f"{PACKAGE}.stage.sub"]]
    assert describe(graph, cycles[0]) == "stage.other -> stage.sub -> stage.other"


def circles_in(graph: dict[str, set[str]]) -> list[str]:
    return [describe(graph, component) for component in strongly_connected(graph)]


def test_no_import_circles_between_modules() -> None:
    graph, _ = import_graph()
    assert len(graph) > 50, "the reader found too few modules: is SRC right?"
    circles = circles_in(graph)
    assert not circles, "import circles (counting function-local and TYPE_CHECKING imports):\n" + (
        "\n".join(circles)
    )


def top_level(module: str) -> str:
    """`financemath_mlops.features.build` -> `financemath_mlops.features` (a stage or a module)."""
    return ".".join(module.split(".")[:2])


def test_no_import_circles_between_stages() -> None:
    """Stages meet through files and MLflow: if training imports evaluation, evaluation may not
    import training back (shared code lives one floor down, beside `records.py`)."""
    graph, _ = import_graph()
    stages: dict[str, set[str]] = {}
    for importer, targets in graph.items():
        stages.setdefault(top_level(importer), set()).update(
            top_level(t) for t in targets if top_level(t) != top_level(importer)
        )
    circles = circles_in(stages)
    assert not circles, "stages importing each other:\n" + "\n".join(circles)


def test_mlflow_is_imported_only_by_the_run_contract_and_the_model() -> None:
    _, third_party = import_graph()
    outside = sorted(
        f"{imp.importer}:{imp.line}"
        for imp in third_party
        if imp.target == "mlflow" and not imp.importer.startswith(MLFLOW_HOMES)
    )
    assert not outside, f"mlflow imported outside {MLFLOW_HOMES}: {outside}"


def test_the_model_package_never_resolves_embedding_weights() -> None:
    """model/ logs and serves the ONNX bundle it is given: it never calls the features stage or
    the weight resolution (both may probe the hub), e.g. while an MLflow run is open."""
    graph, _ = import_graph()
    resolvers = {f"{PACKAGE}.features.build", f"{PACKAGE}.features.weights"}
    reaching = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith(f"{PACKAGE}.model.")
        for target in targets & resolvers
    )
    assert not reaching, reaching


def test_shared_errors_sit_on_the_ground_floor() -> None:
    """Any module may raise StageError without pulling in another of ours (cli.py used to hold
    it, so stages imported the command-line plumbing for an exception type)."""
    graph, _ = import_graph()
    assert graph[f"{PACKAGE}.errors"] == set()
    tree = ast.parse((SRC / "cli.py").read_text(encoding="utf-8"))
    assert not any(isinstance(n, ast.ClassDef) and n.name == "StageError" for n in ast.walk(tree))
