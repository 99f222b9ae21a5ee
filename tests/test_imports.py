"""The import graph: no module of ``gantune/`` or ``ui/`` imports, even lazily, a module that imports it back.

Read with ``ast`` (imports inside functions and under ``TYPE_CHECKING`` count, as they do for a reader),
so a circle hidden from Python by a lazy import still fails here, named module by module.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Each module's imports inside ``package``; importing ``a.b.c`` also runs ``a`` and ``a.b`` (unless the
    importer lives inside them, where they are already running)."""
    modules = _modules(package)

    def known(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets.update(f"{base}.{a.name}" for a in node.names)  # a submodule, or a name in ``base``
        graph[name] = set()
        for target in filter(None, map(known, targets)):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step != name and not name.startswith(step + "."):
                    graph[name].add(step)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each strongly connected group of more than one module, as one path round it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                found.append(_round(graph, sorted(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _round(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One path from the group's first module back to itself, through the group only (breadth first)."""
    start, inside = group[0], set(group)
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [*reversed(path), start]
                if w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    return group


@pytest.mark.parametrize("package", ["gantune", "ui"])
def test_no_import_cycles(package):
    circles = cycles(import_graph(package))
    assert not circles, "import cycles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_cycle_test_finds_a_lazy_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_shared_facts_are_leaves():
    """The hub probe, free memory and the LoRA target rule import nothing that could lead back to their users."""
    graph = import_graph("gantune")
    for leaf in ("gantune.hub", "gantune.memory", "gantune.methods.lora_targets"):
        assert graph[leaf] <= {"gantune", "gantune.errors", "gantune.methods"}, leaf
    assert not any(t.startswith("gantune.methods.") for t in graph["gantune.models"])


# the library's layers, lowest first (README's Layout): a module imports only from its own layer and those below it
LAYERS = [
    ["gantune", "gantune.errors", "gantune.settings", "gantune.hub", "gantune.memory", "gantune.cpu", "gantune.stats",
     "gantune.scoring", "gantune.generation", "gantune.compiled", "gantune.methods", "gantune.methods.gan", "gantune.methods.gan.settings",
     "gantune.methods.peft_settings", "gantune.methods.lora_targets"],
    ["gantune.config"],
    ["gantune.data", "gantune.models", "gantune.runs", "gantune.runs.*", "gantune.metrics", "gantune.monitor",
     "gantune.budget"],
    ["gantune.methods.*", "gantune.inference", "gantune.share", "gantune.init_from", "gantune.validation"],
    ["gantune.trainer"],
    ["gantune.evaluate", "gantune.compare", "gantune.compare.*"],
    ["gantune.bench", "gantune.cli", "gantune.__main__"],
]


def _layer(module: str) -> int:
    placed = [i for i, patterns in enumerate(LAYERS) if any(module == p or fnmatch(module, p) for p in patterns)]
    assert placed, f"{module} is in no layer: add it to LAYERS (and to README's Layout)"
    return placed[0]


def test_the_arrows_run_one_way():
    graph = import_graph("gantune")
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if _layer(t) > _layer(m))
    assert not upward, "imports against the layers: " + "; ".join(upward)
