"""The shape of src/adrlab, checked from its syntax trees: no import cycle between adrlab
modules (imports inside functions count: they only defer the cycle), and no function over
MAX_FUNCTION_LINES lines (DEVELOPERS.md asks for ~60; this is the hard cap)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "adrlab"
MAX_FUNCTION_LINES = 80

# Over-long functions in files that other branches are rewriting right now; each entry is
# "path:function" relative to src/. To be emptied at merge: once those branches land, this
# must be () and the limit holds everywhere.
ALLOWED_LONG_FUNCTIONS: tuple[str, ...] = (
    "adrlab/bench.py:write_report",  # owned by the cost-accounting branch
)


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The adrlab modules `name` imports anywhere in its file, relative imports resolved.
    `from a.b import c` names module a.b.c when that is a module, else a.b (c is an attribute)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            targets = [t for t in targets[:-1] if t in modules] or [base]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def long_functions(limit: int = MAX_FUNCTION_LINES) -> dict[str, str]:
    """ "path:function" → "path:line name (N lines)" for every def longer than `limit` lines
    (methods and nested functions included; decorators not counted, docstrings counted)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found[f"{rel}:{node.name}"] = f"src/{rel}:{node.lineno} {node.name} ({lines} lines)"
    return found


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    modules = module_files()
    graph = import_graph()
    assert {"adrlab", "adrlab.train", "adrlab.sweep.runner", "adrlab.optim.routing"} <= set(modules)
    assert "adrlab.tracking" in graph["adrlab.train"]  # `from adrlab import tracking` is a module
    assert "adrlab.train" in graph["adrlab.cli"]  # imported inside a function
    # Relative imports resolve too (src uses none today; the next test builds one).


def test_cycle_finder_reports_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from adrlab.sub.a import x\n")
    modules = {
        "adrlab.sub.a": pkg / "sub" / "a.py",
        "adrlab.sub.b": pkg / "sub" / "b.py",
        "adrlab.sub": pkg / "sub" / "__init__.py",
    }
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert find_cycles(graph) == [["adrlab.sub.a", "adrlab.sub.b"]]


def test_no_import_cycle_among_adrlab_modules() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (function-level imports included): " + "; ".join(
        " ↔ ".join(c) for c in cycles
    )


def test_no_function_over_the_line_cap() -> None:
    found = long_functions()
    offenders = [where for key, where in found.items() if key not in ALLOWED_LONG_FUNCTIONS]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)
    stale = [key for key in ALLOWED_LONG_FUNCTIONS if key not in found]
    assert not stale, f"now within {MAX_FUNCTION_LINES} lines, remove from ALLOWED_LONG_FUNCTIONS: {stale}"
