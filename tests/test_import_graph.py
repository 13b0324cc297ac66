"""The import graph of service/, workers/ and synthetic/ has no circles and keeps its layers.

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``; a circle
closed by an import hidden in a function body is still a circle (it only fails later, at the
call). Read from the source with ``ast`` (nothing is imported), so the check is the same on a
clean clone in CI. The checker itself is tested on a tiny package that has a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "workers", "synthetic")
# Circles tolerated for now: none. An entry would have to leave the list once its circle is gone
# (the test below says so); never add one.
KNOWN_CIRCLES: list[list[str]] = []

# (importer prefix, imported prefixes it must not reach): the bottom layers import nothing above
# them, and the service layer publishes through service.core.queues, never the Celery app.
FORBIDDEN = (
    ("service.core", ("service.dicom", "service.jobs", "service.audit", "service.api",
                      "service.cli", "service.triage", "service.web", "workers", "synthetic")),
    ("service.db", ("service.dicom", "service.jobs", "service.audit", "service.api",
                    "service.cli", "service.triage", "service.web", "workers", "synthetic")),
    ("service", ("workers.celery_app", "workers.tasks")),
    ("workers", ("synthetic",)),
)


def find_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    mods: dict[str, Path] = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(root).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every name an import statement anywhere in the tree may load (``from a import b``
    loads ``a`` and, if it is a module, ``a.b``)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (the nearest enclosing module of each name).

    A module's own parent packages are left out: Python has imported them before the module
    itself runs, so naming one (``from service.audit import chain`` in service/audit/store.py)
    adds no load-order dependency."""
    mods = find_modules(root, packages)

    def resolve(name: str) -> str | None:
        while name:
            if name in mods:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = {resolve(n) for n in _imported_names(tree, mod, path.name == "__init__.py")}
        graph[mod] = {t for t in targets
                      if t is not None and t != mod and not mod.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((mod, dep) for mod, deps in graph.items() for dep in deps
                  for importer, banned in FORBIDDEN
                  if _within(mod, importer) and any(_within(dep, b) for b in banned))


# --- the project -----------------------------------------------------------------------------

def test_no_import_circles() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 80  # the walk saw the project, not an empty folder
    assert [c for c in circles(graph) if c not in KNOWN_CIRCLES] == []


def test_known_circles_are_still_there() -> None:
    """A known circle that is gone must leave the list, so it cannot come back unnoticed."""
    found = circles(import_graph(ROOT, PACKAGES))
    assert [c for c in KNOWN_CIRCLES if c not in found] == []


def test_layers_are_kept() -> None:
    assert layer_violations(import_graph(ROOT, PACKAGES)) == []


# --- the checker can fail ----------------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_a_circle_closed_inside_a_function_is_found(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/jobs/__init__.py": "",
        "pkg/jobs/orchestrate.py": "def enqueue():\n    from pkg.app import celery\n",
        "pkg/app.py": "import pkg.tasks\ncelery = None\n",
        "pkg/tasks.py": "from .jobs import orchestrate\n",
        "pkg/leaf.py": "import os\nfrom pkg import tasks\n",
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.tasks"] == {"pkg.jobs", "pkg.jobs.orchestrate"}  # relative import
    assert circles(graph) == [["pkg.app", "pkg.jobs.orchestrate", "pkg.tasks"]]


def test_a_layered_package_passes_and_a_banned_edge_is_named(tmp_path: Path) -> None:
    _write(tmp_path, {
        "service/__init__.py": "",
        "service/core/__init__.py": "",
        "service/core/queues.py": "import json\n",
        "service/jobs/__init__.py": "",
        "service/jobs/ops.py": "from service.core import queues\n",
        "service/api.py": "def submit():\n    from workers.celery_app import app\n",
        "workers/__init__.py": "",
        "workers/celery_app.py": "from service.core.queues import json\n",
    })
    graph = import_graph(tmp_path, ("service", "workers"))
    assert circles(graph) == []
    assert layer_violations(graph) == [("service.api", "workers.celery_app")]
