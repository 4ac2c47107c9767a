"""Data flows one way (DESIGN.md section 5): no package imports what sits above it.

Read from the source (every import statement, also those inside functions), so a lazy import
cannot hide an upward one. Processes start each other by name, not by import: the CLI's `api`
and `up` commands name the ASGI app "starter.api:app" and spawn processes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"dunning", "workflows", "activities", "runtime", "starter", "worker", "bench", "fakes", "tests"}

# Where a module lives → which of our top-level homes it may import (its own always).
ALLOWED: dict[str, set[str]] = {
    "dunning": set(),
    "workflows": {"dunning"},
    "activities": {"dunning", "runtime"},
    "runtime": {"dunning"},
    "starter.cases": {"dunning", "runtime"},  # how a case is opened: shared by the API and the CLI
    "starter.api": {"dunning", "workflows", "activities", "runtime", "starter.cases"},
    "starter.cli": {"dunning", "workflows", "activities", "runtime", "worker", "starter.cases"},
    "worker": {"dunning", "workflows", "activities", "runtime"},
    "fakes": {"dunning"},
    "bench": {"dunning", "workflows", "activities", "runtime", "worker", "fakes"},
}


def _home(dotted: str) -> str:
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] == "starter" and len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from starter import cli` names the subpackage in the alias
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def _sources(home: str) -> list[Path]:
    top = ROOT.joinpath(*home.split("."))
    return [top.with_suffix(".py")] if top.with_suffix(".py").is_file() else sorted(top.rglob("*.py"))


@pytest.mark.parametrize("home", sorted(ALLOWED))
def test_nothing_imports_upward(home: str) -> None:
    allowed = ALLOWED[home] | {home}
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _sources(home)
        for line, name in _imports(path)
        if _home(name) not in allowed and name.split(".")[0] not in allowed
    ]
    assert not upward, "\n".join(upward)
