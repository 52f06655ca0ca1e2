"""The package's import graph, built from the source: no cycles, no import up a layer.

Every ``import`` and ``from ... import`` in ``naq_nb/`` counts, wherever it sits
(module level, inside a function, under ``TYPE_CHECKING``): a late import that
dodges a cycle at run time still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "naq_nb"
LAYERS = {"core": 0, "client": 1, "notebook": 2, "cli": 3}


def _module_name(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = mod.split(".")
        parts = parts if is_pkg else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    files = {_module_name(p, pkg): p for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(mod, path.name == "__init__.py", node)
            else:
                continue
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # Package __init__ modules count too: a module importing its own package's __init__, which
    # imports it back, is a cycle that only import order keeps working.
    assert _cycles(import_graph()) == []


def test_a_cycle_inside_one_package_is_found_even_through_a_late_import(tmp_path: Path) -> None:
    # Guards the check above: the cycles issue 9 named were within one package, one side a function-level import.
    pkg = tmp_path / "naq_nb"
    (pkg / "client").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "client" / "__init__.py"):
        init.write_text("")
    (pkg / "client" / "future.py").write_text("from .session import connect\n")
    (pkg / "client" / "session.py").write_text("from . import watch\n")
    (pkg / "client" / "watch.py").write_text("def f():\n    from .future import JobFuture  # late\n")
    assert _cycles(import_graph(pkg)) == [["naq_nb.client.future", "naq_nb.client.session", "naq_nb.client.watch"]]


def test_no_import_reaches_up_a_layer() -> None:
    def layer(mod: str) -> int | None:
        parts = mod.split(".")
        return LAYERS.get(parts[1]) if len(parts) > 1 else None

    upward = [(m, t) for m, ts in import_graph().items() for t in ts
              if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)]
    assert upward == []


def test_the_graph_sees_imports() -> None:
    # Guards the checks above against passing vacuously.
    g = import_graph()
    assert "naq_nb.core.broker" in g["naq_nb.core.queue"]
    assert "naq_nb.core.layout" in g["naq_nb.core.job"]


def test_the_package_lists_every_scheduling_call_its_module_exports():
    # naq_nb lists the scheduling names itself (importing the module would defeat the lazy import);
    # this keeps that list and the module's own __all__ from drifting apart.
    import naq_nb
    from naq_nb.client import scheduling
    calls = set(scheduling.__all__) - {"ScheduledTemplate", "ScheduleNotFoundError"}
    assert set(naq_nb._SCHEDULING) == calls
    assert all(getattr(naq_nb, n) is getattr(scheduling, n) for n in calls)
