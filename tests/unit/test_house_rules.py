"""The house rules of plugin/ehr_imaging, read from its own imports (README "Layout"):

- no module over 400 lines;
- core/ is pure: it imports nothing of the plugin outside core/, and no Orthanc, database, HTTP or process I/O;
- only pacs.py, plugin.py and hooks/ import ``orthanc``; only store/ and bootstrap.py import SQLAlchemy or psycopg;
- no hand-written HTTP server (``http.server``);
- the layers point one way: adapters (api/, hooks/) -> use cases (app/) -> rules (core/) and effects (store/,
  pacs.py); only the composition root (plugin.py) sees every part;
- no import cycle, neither between modules nor between the plugin's top-level parts (``TYPE_CHECKING``
  imports count: a cycle of types is still a cycle of ideas).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plugin" / "ehr_imaging"
MAX_LINES = 400
ORTHANC_USERS = ("pacs.py", "plugin.py", "hooks/")
DATABASE_USERS = ("store/", "bootstrap.py")
NOT_IN_CORE = ("orthanc", "sqlalchemy", "psycopg", "requests", "socket", "http", "urllib.request", "subprocess",
               "waitress")  # urllib.parse is string work: allowed


def _modules() -> dict[str, Path]:
    """Dotted name (relative to the package, "" for it) -> file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _where(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(name: str, path: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, inside the plugin) of every import of the module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or "", False))
                continue
            base = package[: len(package) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
            # ``from . import x`` names modules; ``from .m import x`` names m (or its submodule x).
            for alias in node.names:
                candidate = f"{module}.{alias.name}" if module else alias.name
                found.append((node.lineno, candidate if candidate in MODULES else module, True))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_line_limit(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{_where(MODULES[name])} has {lines} lines"


def test_core_is_pure_and_each_outside_library_has_its_own_users() -> None:
    broken = []
    for name, path in MODULES.items():
        where = _where(path)
        for line, module, internal in _imports(name, path):
            top = _top(module)
            if internal:
                if where.startswith("core/") and not module.startswith("core"):
                    broken.append(f"{where}:{line} (core) imports {module}")
                continue
            if where.startswith("core/") and any(module == m or module.startswith(m + ".") for m in NOT_IN_CORE):
                broken.append(f"{where}:{line} (core) imports {module}")
            if top == "orthanc" and not where.startswith(ORTHANC_USERS):
                broken.append(f"{where}:{line} imports orthanc")
            if top in ("sqlalchemy", "psycopg") and not where.startswith(DATABASE_USERS):
                broken.append(f"{where}:{line} imports {module}")
            if module.startswith("http.server"):
                broken.append(f"{where}:{line} imports http.server")
    assert broken == []


# What each top-level part may import ("" is the package itself: its version).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "config": set(),
    "private_dirs": set(),
    "pacs": {"core"},
    "store": {"core"},
    "services": {"config", "core", "store"},
    "bootstrap": {"config", "core", "services", "store"},
    "app": {"config", "core", "private_dirs", "services", "store"},
    "hooks": {"app", "config", "core", "services", "store"},
    "api": {"", "app", "config", "core", "services", "store"},
}


def _parts_imported() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for _, module, internal in _imports(name, path):
            if internal and module in MODULES and name and _top(name) != _top(module):
                edges[_top(name)].add(_top(module))
    return edges


def test_the_layers_point_one_way() -> None:
    edges = _parts_imported()
    assert set(edges) - set(MAY_IMPORT) <= {"plugin"}, "a new top-level part: say what it may import"
    broken = {part: sorted(targets - MAY_IMPORT[part]) for part, targets in edges.items()
              if part in MAY_IMPORT and targets - MAY_IMPORT[part]}
    assert broken == {}
    assert {"api", "hooks"} <= edges["plugin"] and "app" in edges["api"]  # the check sees real imports


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of nodes that reach each other (strongly connected, more than one node)."""
    order: list[str] = []
    seen: set[str] = set()

    def finish(node: str, edges: dict[str, set[str]], into: list[str], done: set[str]) -> None:
        stack = [(node, iter(sorted(edges.get(node, ()))))]
        done.add(node)
        while stack:
            current, children = stack[-1]
            child = next((c for c in children if c not in done), None)
            if child is None:
                stack.pop()
                into.append(current)
            else:
                done.add(child)
                stack.append((child, iter(sorted(edges.get(child, ())))))

    nodes = set(graph) | {n for targets in graph.values() for n in targets}
    for node in sorted(nodes):
        if node not in seen:
            finish(node, graph, order, seen)
    reverse: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            reverse[target].add(source)
    groups: list[list[str]] = []
    assigned: set[str] = set()
    for node in reversed(order):
        if node not in assigned:
            group: list[str] = []
            finish(node, reverse, group, assigned)
            if len(group) > 1:
                groups.append(sorted(group))
    return groups


def test_nothing_imports_in_a_circle() -> None:
    modules: dict[str, set[str]] = defaultdict(set)
    parts: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for _, module, internal in _imports(name, path):
            if internal and module in MODULES and module not in (name, ""):
                modules[name].add(module)
                if name and _top(name) != _top(module):
                    parts[_top(name)].add(_top(module))
    assert _cycles(modules) == []
    assert _cycles(parts) == []


def test_the_cycle_finder_finds_cycles() -> None:
    # The check above must be able to fail.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
