"""The shape of the code itself: imports go one way (no cycle among mlplab's modules, counting
function-local imports too), no module over 300 lines and no function over 60 — the limits
docs/architecture.md promises a newcomer."""

from __future__ import annotations

import ast
from pathlib import Path

import mlplab

SRC = Path(mlplab.__file__).parent
MODULES = sorted(p for p in SRC.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _imports(path: Path) -> set[str]:
    """The mlplab modules `path` imports, at any depth of the file (lazy imports count)."""
    package = list(path.parent.relative_to(SRC).parts)  # what a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            targets = [mod] if node.module else [".".join([*base, a.name]) for a in node.names]
            found.update(t for t in targets if t)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlplab."):
            found.add(node.module.removeprefix("mlplab."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("mlplab.") for a in node.names
                         if a.name.startswith("mlplab."))
    return found


def _graph() -> dict[str, set[str]]:
    names = {_name(p) for p in MODULES}
    graph = {}
    for p in MODULES:
        deps = set()
        for t in _imports(p):
            while t and t not in names:  # `from .layers import dense` names a module or a symbol
                t = t.rpartition(".")[0]
            if t and t != _name(p) and not _name(p).startswith(t + "."):
                deps.add(t)  # a submodule importing its own package's __init__ is not a cycle
        graph[_name(p)] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_go_one_way():
    graph = _graph()
    assert graph["train"] >= {"fused", "group"}  # the graph is real: it sees the engine's imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_module_over_300_lines():
    long = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 300}
    assert not long


def test_no_function_over_60_lines():
    long = {f"{_name(p)}.{node.name}": node.end_lineno - node.lineno + 1
            for p in MODULES for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 60}
    assert not long
