"""Data flows one way (DESIGN.md §5): no import cycles, and nothing imports what sits above it.

Read from the source with `ast` (nothing is imported), so an import inside a function counts
too: a lazy import is still a dependency, only a later one. Imports under `if TYPE_CHECKING:`
count for the layers (a type is still knowledge of the layer above) but not for cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ["dunning", "workflows", "activities", "runtime", "starter", "worker.py", "fakes", "bench", "tests"]

SERVICE = {
    "dunning", "workflows", "activities", "runtime", "starter", "starter.cases", "starter.api", "starter.cli", "worker"
}
EVERYTHING = SERVICE | {"fakes", "bench", "tests"}

# layer → the layers it may import (its own always included).
MAY_IMPORT: dict[str, set[str]] = {
    "dunning": {"dunning"},
    "workflows": {"dunning"},
    "runtime": {"dunning"},
    "activities": {"dunning", "runtime"},
    # starter/__init__.py is only the namespace of the two below.
    "starter": set(),
    # How a case is opened (signal-with-start), shared by the webhook and `dunning reconcile`.
    "starter.cases": {"dunning", "runtime"},
    "starter.api": {"dunning", "runtime", "activities", "starter.cases"},
    # The CLI names the API only as the string "starter.api:app", which is not an import; it runs
    # the worker (`dunning worker`). Tests, bench and fakes are not installed with the service.
    "starter.cli": SERVICE - {"starter.api"},
    "worker": {"dunning", "workflows", "activities", "runtime"},
    "fakes": {"dunning"},
    "bench": EVERYTHING - {"tests"},
    "tests": EVERYTHING,
}
# Workflow code runs in Temporal's sandbox and must replay deterministically: besides our pure
# core, only the standard library and the SDK.
WORKFLOW_THIRD_PARTY = {"temporalio"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. "starter.api.app"
    target: str  # the most specific module of ours it names, e.g. "dunning.contract"
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_files() -> Iterator[Path]:
    for entry in OURS:
        path = ROOT / entry
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)
        else:
            yield path


def our_modules() -> set[str]:
    return {module_name(path) for path in our_files()}


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top == "starter" and module.count(".") >= 1:
        return ".".join(module.split(".")[:2])
    return top


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for statement in node.body for child in ast.walk(statement))
    return inside


def imports_of(path: Path, modules: set[str]) -> tuple[list[Import], list[tuple[int, str]]]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules)


def imports_in(
    text: str, source: str, is_package: bool, modules: set[str]
) -> tuple[list[Import], list[tuple[int, str]]]:
    """Our modules a file imports, and the top-level names of every other import, in line order."""
    tree = ast.parse(text)
    type_only = _type_checking_nodes(tree)
    ours: list[Import] = []
    others: list[tuple[int, str]] = []

    def add(name: str, line: int, node: ast.AST) -> None:
        if name.split(".")[0] in {m.split(".")[0] for m in modules}:
            # `from pkg import sub` names the submodule when there is one.
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            ours.append(Import(source, name, line, id(node) in type_only))
        else:
            others.append((line, name.split(".")[0]))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = source.split(".") if is_package else source.split(".")[:-1]
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                add(candidate if candidate in modules else base, node.lineno, node)
    return sorted(ours, key=lambda i: i.line), sorted(others)


def all_imports() -> tuple[list[Import], dict[str, list[tuple[int, str]]]]:
    modules = our_modules()
    edges: list[Import] = []
    third_party: dict[str, list[tuple[int, str]]] = {}
    for path in our_files():
        ours, others = imports_of(path, modules)
        edges += ours
        third_party[module_name(path)] = others
    return edges, third_party


def _where(module: str) -> str:
    path = ROOT / module.replace(".", "/")
    return f"{module.replace('.', '/')}/__init__.py" if path.is_dir() else f"{module.replace('.', '/')}.py"


def test_no_layer_imports_one_it_may_not() -> None:
    edges, _ = all_imports()
    violations = sorted(
        f"{_where(e.source)}:{e.line}: {layer(e.source)} imports {e.target}"
        for e in edges
        if layer(e.target) != layer(e.source) and layer(e.target) not in MAY_IMPORT[layer(e.source)]
    )
    assert not violations, "imports against the flow (DESIGN.md §5):\n" + "\n".join(violations)


def test_workflow_code_imports_only_the_core_the_sdk_and_the_standard_library() -> None:
    _, third_party = all_imports()
    allowed = set(sys.stdlib_module_names) | WORKFLOW_THIRD_PARTY
    violations = sorted(
        f"{_where(module)}:{line}: {name}"
        for module, names in third_party.items()
        if layer(module) == "workflows"
        for line, name in names
        if name not in allowed
    )
    assert not violations, "the workflow sandbox gets only these:\n" + "\n".join(violations)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the cycles of the graph, each as its sorted members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    edges, _ = all_imports()
    graph: dict[str, set[str]] = {}
    for e in edges:
        # A package importing its own submodule (the lazy `app` of starter.api) is no cycle.
        if not e.type_only and e.source != e.target:
            graph.setdefault(e.source, set()).add(e.target)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_reader_resolves_relative_lazy_and_type_only_imports() -> None:
    """The reader itself, on a file shaped like ours."""
    text = """
from __future__ import annotations
from typing import TYPE_CHECKING
import httpx
from . import deps
from .. import cli
from dunning import contract
if TYPE_CHECKING:
    from workflows.dunning_workflow import DunningWorkflow
def later():
    import runtime.settings
"""
    ours, others = imports_in(text, "starter.api.example", False, our_modules())
    assert [(i.target, i.type_only) for i in ours] == [
        ("starter.api.deps", False),
        ("starter.cli", False),
        ("dunning.contract", False),
        ("workflows.dunning_workflow", True),
        ("runtime.settings", False),
    ]
    assert [name for _, name in others] == ["typing", "httpx"]
