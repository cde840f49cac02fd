"""The house rules of embedpipe/, read statically: one-way imports, no cycle, no module reaching
into another's underscore names (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "embedpipe"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every embedpipe import in `path`, including
    imports inside functions (they are still dependencies, only deferred)."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedpipe"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("embedpipe")]
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the embedpipe modules it imports (a name imported from a package that is itself
    a module counts as that module)."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, names in imports(path):
            subs = {f"{target}.{n}" for n in names} & known.keys()
            edges[name] |= subs or ({target} & known.keys())
        edges[name].discard(name)
    return edges


def test_no_module_imports_an_underscore_name_from_another() -> None:
    offenders = [
        f"{name}: from {target} import {n}"
        for name, path in modules().items()
        for target, names in imports(path)
        for n in names
        if n.startswith("_") and target != name
    ]
    assert offenders == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("embedpipe.sinks", "embedpipe.encoding.encoder"),  # sinks never import the encoder
        ("embedpipe.runs.planning", "embedpipe.runs.pipeline"),
        ("embedpipe.runs.commit", "embedpipe.runs.pipeline"),
        ("embedpipe.engines", "embedpipe.runs.pipeline"),
        ("embedpipe.runs.pipeline", "embedpipe.api"),
        ("embedpipe.api", "embedpipe.cli"),
    ],
)
def test_dependencies_point_one_way(low: str, high: str) -> None:
    edges = graph()
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in edges.items()
        if name == low or name.startswith(low + ".")
        for target in targets
        if target == high or target.startswith(high + ".")
    )
    assert wrong == []


def test_every_exception_class_lives_in_errors() -> None:
    elsewhere = [
        f"{name}.{node.name}"
        for name, path in modules().items()
        if name != "embedpipe.errors"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(b, ast.Name)
            and (b.id.endswith(("Error", "Exception")) or b.id == "Interrupted")
            for b in node.bases
        )
    ]
    assert elsewhere == []
