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


# (low, high): nothing in `low` imports anything in `high` (a package or a module), deferred
# imports included. The package-level directions of docs/architecture.md.
ONE_WAY = [
    ("embedpipe.sinks", "embedpipe.encoding"),  # sinks never import the encoder
    *[
        (low, high)
        for low in ("embedpipe.sinks", "embedpipe.sources", "embedpipe.state", "embedpipe.encoding")
        for high in (
            "embedpipe.runs",
            "embedpipe.engines",
            "embedpipe.promotion",
            "embedpipe.api",
            "embedpipe.cli",
            "embedpipe.index",
            "embedpipe.integrations",
        )
    ],
    ("embedpipe.sinks", "embedpipe.state"),
    ("embedpipe.sinks", "embedpipe.sources"),
    ("embedpipe.sources", "embedpipe.sinks"),
    ("embedpipe.sources", "embedpipe.encoding"),
    ("embedpipe.sources", "embedpipe.state"),
    ("embedpipe.state", "embedpipe.encoding"),
    ("embedpipe.state", "embedpipe.sources"),
    ("embedpipe.encoding", "embedpipe.sinks"),
    ("embedpipe.encoding", "embedpipe.state"),
    ("embedpipe.encoding", "embedpipe.sources"),
    ("embedpipe.runs.planning", "embedpipe.runs.pipeline"),
    ("embedpipe.runs.commit", "embedpipe.runs.pipeline"),
    ("embedpipe.engines", "embedpipe.runs.pipeline"),
    ("embedpipe.promotion", "embedpipe.runs"),
    *[
        (low, high)
        for low in ("embedpipe.runs", "embedpipe.engines", "embedpipe.promotion")
        for high in ("embedpipe.api", "embedpipe.cli", "embedpipe.report")
    ],
    ("embedpipe.api", "embedpipe.cli"),
    ("embedpipe.report", "embedpipe.cli"),
    # the config's models read no registry (config/docs.py and config/template.py do)
    *[
        (low, high)
        for low in ("embedpipe.config.sections", "embedpipe.config.explain")
        for high in (
            "embedpipe.sinks",
            "embedpipe.sources",
            "embedpipe.engines",
            "embedpipe.config.docs",
            "embedpipe.config.template",
        )
    ],
    # the leaves import only leaves
    *[
        (low, high)
        for low in (
            "embedpipe.types",
            "embedpipe.errors",
            "embedpipe.redact",
            "embedpipe.threads",
            "embedpipe.faults",
            "embedpipe.durable",
            "embedpipe.logs",
        )
        for high in (
            "embedpipe.config",
            "embedpipe.sinks",
            "embedpipe.sources",
            "embedpipe.state",
            "embedpipe.encoding",
            "embedpipe.runs",
            "embedpipe.engines",
        )
    ],
]


def test_the_config_models_import_only_leaves_and_their_sections() -> None:
    allowed = {
        "embedpipe.config.sections",
        "embedpipe.config.explain",
        "embedpipe.errors",
        "embedpipe.redact",
        "embedpipe.types",
    }
    assert graph()["embedpipe.config"] - allowed == set()


@pytest.mark.parametrize(("low", "high"), ONE_WAY)
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


def test_all_sql_is_behind_the_ledger() -> None:
    """The ledger's SQL runs only in embedpipe/state/ (the ledger and its migrations): the
    planner and the encoder-less runs ask the ledger, so a schema change is made in one place.
    A database sink's SQL on its own server (sinks/postgres.py) is that sink's business."""
    own_sql = {"embedpipe.sinks.postgres"}
    elsewhere = [
        f"{name}:{node.lineno}"
        for name, path in modules().items()
        if not name.startswith("embedpipe.state") and name not in own_sql
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute", "executemany", "executescript")
    ]
    assert elsewhere == []


def test_every_module_is_named_in_the_architecture_doc() -> None:
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if f"`{path.relative_to(PACKAGE).as_posix()}`" not in text
    ]
    assert missing == []


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in the kits (tests/*kit.py) and conftest.py, never in a test module."""
    tests = PACKAGE.parent / "tests"
    offenders = [
        f"{path.name}: {node.module}"
        for path in sorted(tests.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")
    ]
    assert offenders == []
