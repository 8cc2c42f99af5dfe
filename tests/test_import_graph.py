"""The import graph of grm_jax and data_pipeline, read from the source with ast (every import statement,
module level or inside a function): no cycle between modules, none between packages (so there is a layering and
no import goes from a lower package back up), the parity package is a leaf that only the command line imports,
and the library never imports the command line or data_pipeline.

    .venv/bin/python -m pytest -q tests/test_import_graph.py
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("grm_jax", "data_pipeline")


def _module_files() -> dict[str, Path]:
    modules = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(importer: str, tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, node)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c: each is an edge
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in MODULES and prefix != importer and not importer.startswith(prefix + "."):
                    found.add(prefix)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: _targets(name, ast.parse(path.read_text(), str(path))) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_of(module: str) -> str:
    """grm_jax.models.vit -> grm_jax.models; grm_jax.config -> grm_jax.config (a top-level module is its own unit)."""
    parts = module.split(".")
    return ".".join(parts[:2])


GRAPH = import_graph()


def test_the_graph_is_read():
    assert len(MODULES) > 40
    assert "grm_jax.config" in GRAPH["grm_jax.parity.bundle"]
    assert "grm_jax.parity.registry" in GRAPH["grm_jax.parity.model"]
    assert "data_pipeline.readers" in GRAPH["grm_jax.cli.train"]


def test_no_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        src = _package_of(module)
        packages.setdefault(src, set()).update(t for t in map(_package_of, targets) if t != src and t != "grm_jax")
    assert _cycles(packages) == []


@pytest.mark.parametrize("package, allowed_importers", [
    ("grm_jax.parity", ("grm_jax.parity", "grm_jax.cli")),
    ("grm_jax.cli", ("grm_jax.cli",)),
    ("data_pipeline", ("data_pipeline", "grm_jax.cli")),
])
def test_who_may_import(package, allowed_importers):
    offenders = sorted(f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets
                       if (target == package or target.startswith(package + "."))
                       and not any(module == a or module.startswith(a + ".") for a in allowed_importers))
    assert offenders == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["grm_jax.models", "grm_jax.convert", "grm_jax.train.optim"])
def test_below_the_config_boundary_nothing_reads_the_config(package):
    """models/, convert/ and the optimiser take plain specs (grm_jax/specs.py makes them from a Config)."""
    offenders = sorted(f"{module} -> grm_jax.config" for module, targets in GRAPH.items()
                       if (module == package or module.startswith(package + ".")) and "grm_jax.config" in targets)
    assert offenders == []


def test_the_boundary_rule_sees_an_import_inside_a_function():
    tree = ast.parse("def f():\n    from ..config import Config\n")
    assert "grm_jax.config" in _targets("grm_jax.models.grm", tree)
