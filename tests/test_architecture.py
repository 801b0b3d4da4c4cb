"""The project's shape: layers import only downward, no import cycles, modules of one idea,
and a cheap ``import egofeat`` whose public names load on use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "egofeat"
MAX_LINES = 700

#: layer -> the egofeat layers it may import (``_util`` is below every layer; the root package
#: only for ``__version__``)
ALLOWED = {
    "_util": set(),
    "sources": {"_util"},
    "store": {"_util"},
    "eval": {"_util"},
    "extract": {"_util", "sources"},
    "heads": {"_util", "store", "eval"},
    "recipes": {"_util", "recipes"},
    "config": {"_util", "heads", "recipes"},
    "pipelines": {"_util", "sources", "store", "extract", "eval", "heads", "config", "recipes", "pipelines"},
    "cli": {"_util", "config", "recipes", "pipelines", "cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


KNOWN = set(modules())


def imports_of(name: str, path: Path) -> set[str]:
    """egofeat modules ``path`` imports (at any depth, except under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("egofeat"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("egofeat"):
                # ``from package import submodule`` imports the submodule; other names the module
                submodules = {f"{target}.{alias.name}" for alias in node.names} & KNOWN
                found.update(submodules or {target})
                if len(submodules) < len(node.names):
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {target for target in imports_of(name, path) if target in known and target != name}
            for name, path in known.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_import_only_downward():
    wrong = []
    for module, targets in graph().items():
        mine = layer(module)
        if mine not in ALLOWED:
            continue
        for target in targets:
            theirs = layer(target)
            if theirs and theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_heads_never_import_extract():
    assert not [m for m, t in graph().items() if layer(m) == "heads" and any(layer(x) == "extract" for x in t)]


def test_no_import_cycles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in edges:
        if node not in index:
            strongconnect(node)
    assert not cycles, f"import cycles: {cycles}"


def test_modules_hold_one_idea():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_import_egofeat_is_cheap_and_names_load_on_use():
    code = (
        "import sys, egofeat\n"
        "assert 'torch' not in sys.modules and 'polars' not in sys.modules, sorted(sys.modules)\n"
        "egofeat.open_store, egofeat.create_head, egofeat.create_encoder, egofeat.load_head_data\n"
        "egofeat.Trainer\n"
        "assert 'torch' in sys.modules\n"
        "print(sorted(n for n in dir(egofeat) if not n.startswith('_')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "open_store" in result.stdout and "Trainer" in result.stdout
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import egofeat

        egofeat.nope  # noqa: B018
