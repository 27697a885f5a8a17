"""The shape of the code, checked from the source: no import cycles, no oversized modules.

The import graph is read with ``ast`` (nothing is imported): every ``import`` and ``from ...
import`` anywhere in a module is an edge -- at module level, inside a function (a lazy import
that dodges a cycle is still a cycle) or under ``if TYPE_CHECKING:`` (a type-only back edge is
still two layers that know each other).  Importing a submodule does not count as importing its
package's ``__init__`` (a package that re-exports its modules would otherwise always be a cycle).

Known offenders are allowed explicitly, each with its reason; an entry that no longer matches
anything fails too, so the lists shrink as the code is fixed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "s3orch"

#: Import cycles that exist today, each with why it is allowed for now.  A cycle is allowed when
#: all its modules are in one entry (a cycle that shrinks is progress).
ALLOWED_CYCLES: dict[frozenset[str], str] = {}

#: Where the line count is measured (the shipped package and the code tests and tools share).
SIZE_ROOTS = ("s3orch", "tools", "tests/support")
MAX_LINES = 600

#: Modules over MAX_LINES, each with why it is allowed (none today: sigv4, xml and config were
#: split into packages/modules by what they own).
ALLOWED_LARGE: dict[str, str] = {}


# --- the import graph --------------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module a ``from`` import names (relative imports resolved against ``current``)."""
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package modules ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, name, path.name == "__init__.py")
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    yield submodule  # ``from pkg import module``
                elif target in modules:
                    yield target  # ``from module import name``


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(root, package)
    return {name: set(imports_of(name, path, modules)) - {name} for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module (each holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One concrete cycle inside ``component``, as the import chain ``a -> b -> ... -> a``."""
    start = min(component)
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {component}")


def test_the_graph_sees_module_level_function_level_type_only_and_relative_imports(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "from pkg.a import thing\n",
        "pkg/a.py": "import pkg.b\nthing = 1\n",
        "pkg/b.py": "def later():\n    from pkg import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.d import D\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "from .. import a\nfrom ..b import later\nimport os\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},  # inside a function
        "pkg.c": {"pkg.sub.d"},  # type-only, relative
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.a", "pkg.b"},  # relative, two levels
    }
    assert [sorted(c) for c in strongly_connected(graph)] == [["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"]]


def test_the_real_graph_is_read() -> None:
    graph = import_graph()
    assert "s3orch.s3.sigv4" in graph["s3orch.backend.s3"]
    assert "s3orch.s3.sigv4" in graph["s3orch.testing.s3server"]  # ``from s3orch.s3 import sigv4``


def test_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    (component,) = strongly_connected(graph)
    assert component == {"a", "b", "c"}
    assert a_cycle(graph, component) == ["a", "b", "c", "a"]


def test_no_import_cycles_among_s3orch_modules() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    unexpected = [
        " -> ".join(a_cycle(graph, c))
        for c in components
        if not any(c <= allowed for allowed in ALLOWED_CYCLES)
    ]
    assert unexpected == [], "import cycles:\n" + "\n".join(unexpected)
    stale = [sorted(allowed) for allowed in ALLOWED_CYCLES if not any(c & allowed for c in components)]
    assert stale == [], f"ALLOWED_CYCLES entries that no longer match a cycle (remove them): {stale}"


# --- module size -------------------------------------------------------------------------------


def line_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for root in SIZE_ROOTS:
        for path in sorted((ROOT / root).rglob("*.py")):
            counts[path.relative_to(ROOT).as_posix()] = len(path.read_text().splitlines())
    return counts


def test_no_module_over_the_line_limit() -> None:
    counts = line_counts()
    over = {path: n for path, n in counts.items() if n > MAX_LINES and path not in ALLOWED_LARGE}
    assert over == {}, f"modules over {MAX_LINES} lines (split them by what they own): {over}"
    stale = [path for path in ALLOWED_LARGE if counts.get(path, 0) <= MAX_LINES]
    assert stale == [], f"ALLOWED_LARGE entries now within {MAX_LINES} lines or gone (remove them): {stale}"
