"""The layout keeps showing the data flow: stages import only downwards, no import circles.

Walks every ``import`` statement of the package (module level, inside functions and under
``TYPE_CHECKING`` alike) with ``ast``, so the rules of ARCHITECTURE.md stay true as code is
added. No Neo4j, no torch: this reads source files only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG_ROOT = Path(__file__).resolve().parents[1] / "lineage_index"
INDEXER = "lineage_index.indexer"
# read <- sketch <- recover <- impute/check <- pipeline (a stage may import the ones before it)
STAGE_RANK = {"read": 0, "sketch": 1, "recover": 2, "impute": 3, "check": 3, "pipeline": 4}
# the indexer is a library for these, never their user
ABOVE_INDEXER = ("api", "cli", "behaviour", "sim", "zoo", "evaluation", "baselines")
LONG_LINES = 500
LONG_REASON = "Why this module is long:"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PKG_ROOT.rglob("*.py"):
        parts = list(path.relative_to(PKG_ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The package's own modules that module ``name`` imports (resolved to module names)."""
    path, is_pkg = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _stage(module: str) -> str | None:
    if not module.startswith(INDEXER + "."):
        return None
    return module[len(INDEXER) + 1:].split(".")[0]


def test_the_walker_sees_imports_of_every_form():
    # a guard for the guard: function-local and relative imports are resolved too
    assert "lineage_index.indexer.read.ranges" in GRAPH["lineage_index.indexer.read.remote"]
    assert "lineage_index.indexer.recover.declared" in GRAPH["lineage_index.indexer.pipeline"]
    assert any(m.startswith("lineage_index.queries") for m in GRAPH["lineage_index.indexer.check.graph"])


def test_no_import_circle_between_modules():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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
                circles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert circles == []


def test_every_indexer_module_belongs_to_a_stage():
    for m in MODULES:
        if m.startswith(INDEXER + "."):
            assert _stage(m) in STAGE_RANK, f"{m} sits outside the stages {sorted(STAGE_RANK)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _stage(m)))
def test_a_stage_imports_only_the_stages_before_it(module):
    mine = _stage(module)
    for dep in GRAPH[module]:
        other = _stage(dep)
        if other is not None and other != mine:
            assert STAGE_RANK[other] < STAGE_RANK[mine], f"{module} imports {dep}: {other} is not before {mine}"
        top = dep.split(".")[1] if dep.count(".") >= 1 else dep
        assert top not in ABOVE_INDEXER, f"{module} imports {dep}, which uses the indexer"


def test_the_cli_is_the_top_and_the_library_never_imports_it():
    for m, deps in GRAPH.items():
        if not m.startswith("lineage_index.cli"):
            assert not any(d.startswith("lineage_index.cli") for d in deps), f"{m} imports the CLI"
    assert not any(d.startswith("lineage_index.api") for m in GRAPH if m.startswith(INDEXER) for d in GRAPH[m])


@pytest.mark.parametrize("stage", ["read", "sketch", "recover", "impute", "check"])
def test_each_stage_says_what_flows_in_and_out(stage):
    path, _ = MODULES[f"{INDEXER}.{stage}"]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "In:" in doc and "Out:" in doc, f"{stage}/__init__.py must say what flows in and out"


def test_no_module_needs_a_prefix_to_say_where_it_belongs():
    prefixes = {*STAGE_RANK, "reader", "sources", "store", "verify", "sketch"}
    for m in MODULES:
        if m.startswith(INDEXER + "."):
            leaf = m.rsplit(".", 1)[1]
            assert leaf.split("_")[0] not in prefixes or "_" not in leaf, f"{m}: a prefix instead of a package"


def test_long_modules_say_why_they_are_long():
    for m, (path, _) in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert LONG_REASON in doc, f"{m} has over {LONG_LINES} lines and no '{LONG_REASON}' in its docstring"
