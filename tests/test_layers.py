"""ponder's imports run one way: no room imports a room on a floor above it, and no new circle.

The import graph is read from the source with ``ast`` (every ``import`` inside ``ponder/``, also
the ones inside functions and under ``TYPE_CHECKING``: a lazy or typing-only import is still a
dependency). A room is a subpackage (``ponder.cascade``) or a top-level module (``ponder._client``);
FLOORS lists them from the bottom up. A room may import rooms on its own floor or below.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ponder"

# Bottom first. Each floor names what it is for; a new room must be given a floor here.
FLOORS: list[tuple[str, ...]] = [
    ("ponder._secrets",),                                           # scrubbing keys from text
    ("ponder._exceptions",),                                        # the error tree
    ("ponder._types", "ponder._jsonl", "ponder._persist", "ponder._answers", "ponder._features",
     "ponder._risk", "ponder._bounds", "ponder._memo"),
    ("ponder._pricing", "ponder._gauges", "ponder._verify", "ponder._cache_backend"),  # prices, gauges, checks
    ("ponder._catalog", "ponder._config"),                         # the model catalogue, the config file
    ("ponder.local",),                                              # the engine and its provider
    ("ponder.strategies",),                                         # the live strategy protocol
    ("ponder.evaluation",),                                         # outcome tables, the evaluator
    ("ponder.providers",),
    ("ponder._cache", "ponder._redis_cache"),
    ("ponder._client",),
    ("ponder._batch", "ponder._provider_batch"),
    ("ponder.collect",),
    ("ponder.grading",),
    ("ponder.scorers",),
    ("ponder.cascade",),
    ("ponder.routers",),
    ("ponder.server",),
    ("ponder.cli", "ponder", "ponder.__main__"),                    # entry points
]

# Imports that still run up a floor: (importer's room, imported room) -> why it is allowed.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

# Circles that remain, each a set of modules -> why. Remove an entry when its circle is gone.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the ponder modules it imports (from-imports of submodules name the submodule)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in paths.items():
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                         for a in node.names]
            else:
                continue
            for name in names:
                target = known(name) if name.split(".")[0] == "ponder" else None
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The graph's strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def floor_of(module: str) -> int | None:
    return next((i for i, rooms in enumerate(FLOORS) if room(module) in rooms), None)


def upward_imports(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(importer's room, imported room) -> the module edges that run up a floor (rooms without a
    floor are left to test_every_room_has_one_floor)."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a, targets in graph.items():
        for b in targets:
            fa, fb = floor_of(a), floor_of(b)
            if fa is not None and fb is not None and fa < fb:
                out[(room(a), room(b))].append(f"{a} -> {b}")
    return out


def test_every_room_has_one_floor():
    listed = [r for rooms in FLOORS for r in rooms]
    assert len(listed) == len(set(listed))
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    unplaced = sorted({room(m) for m in modules if floor_of(m) is None})
    assert not unplaced, f"rooms with no floor (add each to FLOORS in {__file__}): {unplaced}"


def test_no_import_runs_up_a_floor():
    up = upward_imports(import_graph())
    unexpected = {k: v for k, v in up.items() if k not in KNOWN_UPWARD}
    assert not unexpected, "imports that run up a floor (see FLOORS):\n" + "\n".join(
        e for edges in unexpected.values() for e in sorted(edges))


def test_no_new_import_circle():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, f"new import circles: {new}"


def test_the_checks_see_an_upward_import_and_a_circle():
    graph = import_graph()
    assert "ponder._exceptions" in graph["ponder._client"]
    assert "ponder.local._provider" in graph["ponder.providers._registry"]  # inside a function
    graph["ponder._exceptions"].add("ponder.server._app")
    graph["ponder.server._app"].add("ponder._exceptions")
    assert ("ponder._exceptions", "ponder.server") in upward_imports(graph)
    assert any({"ponder._exceptions", "ponder.server._app"} <= c for c in cycles(graph))


def test_import_ponder_loads_no_heavy_library() -> None:
    """``import ponder`` (every CLI command, the llama.cpp CPU runtime) loads neither pandas nor
    torch: they cost 70+ MB and half a second before any work starts."""
    import subprocess
    import sys

    code = "import sys, ponder; print(sorted(m for m in ('pandas', 'torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_outside_local_is_over_500_lines():
    """One job per module (issue 22): a module that grows past 500 lines is split by job."""
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text("utf-8").splitlines())
             for p in PACKAGE.rglob("*.py") if "local" not in p.relative_to(PACKAGE).parts}
    assert len(sizes) > 100 and max(sizes.values()) > 300  # the walk sees the package
    assert {m: n for m, n in sizes.items() if n > 500} == {}
