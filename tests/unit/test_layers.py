"""The layers of ARCHITECTURE.md, checked: a module imports only from its own layer or below.

A lazy import inside a function counts too: it is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jobledger

PACKAGE = Path(jobledger.__file__).parent

#: ARCHITECTURE.md's table, bottom first: each layer's top-level modules or packages.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "values",
        {
            "records",
            "errors",
            "lifecycle",
            "encoding",
            "chain",
            "anchor",
            "names",
            "bounds",
            "identity",
            "policy",
            "lazy",
            "children",
            "handoff",
            "observers",
            "steps",
        },
    ),
    ("decisions", {"projection", "decisions"}),
    ("storage", {"schema", "storage", "store", "database", "migrate"}),
    ("audit", {"audit"}),
    ("ledger", {"ledger"}),
    ("liveness", {"liveness"}),
    (
        "processes",
        {
            "runner",
            "signals",
            "presence",
            "worker",
            "claiming",
            "takeover",
            "recovery",
            "catchup",
            "stats",
            "redelivery",
            "sealer",
            "archive",
            "aio",
        },
    ),
    ("operations", {"ops"}),
    (
        "edges",
        {"cli", "terminal", "timeline", "demo", "integrations", "testing", "web", "__init__"},
    ),
]
RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    """``jobledger.x.y`` -> ``x``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path, module: str) -> list[tuple[str, int]]:
    """Every jobledger module ``path`` imports (``from . import x`` names ``x``), with lines."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:
                found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] == "jobledger"]


def test_every_module_has_a_layer() -> None:
    tops = {_top(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert tops <= set(RANK), f"modules missing from ARCHITECTURE.md's layers: {tops - set(RANK)}"


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        mine = RANK[_top(module)]
        for target, line in _imported(path, module):
            theirs = RANK.get(_top(target))
            if theirs is not None and theirs > mine:
                upward.append(f"{module}:{line} imports {target}")
    assert upward == []
