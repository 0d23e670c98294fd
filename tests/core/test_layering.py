"""Data flows one way: source -> channel -> sink -> collector -> store -> jobs (-> hicc).

A module never imports from a stage after it; everything may import the core
(`logflume/`).  The command line (`logflume/cli/`, and `logflume/__main__.py`
that runs it) is the composition root: it starts every stage, so it may import
them all, and nothing imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STAGES = {"agent", "sinks", "collector", "jobs", "hicc"}
ROOT = ("logflume/cli/", "logflume/__main__.py")

# package -> packages it must not import
FORBIDDEN = {
    "logflume": STAGES,
    "agent": {"collector", "jobs", "hicc"},
    "sinks": {"agent", "collector", "jobs", "hicc"},
    "collector": {"agent", "jobs", "hicc"},
    "jobs": {"agent", "collector", "hicc"},
    # the console reads what every stage publishes (/status, manifests, stores), never their code
    "hicc": {"agent", "sinks", "collector"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute import, as a dotted name (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = [p for pkg in FORBIDDEN for p in sorted((REPO / pkg).rglob("*.py"))
           if not str(p.relative_to(REPO)).startswith(ROOT)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_against_the_flow(path):
    rel = str(path.relative_to(REPO))
    imported = imported_modules(path)
    bad = {m.split(".")[0] for m in imported} & FORBIDDEN[rel.split("/")[0]]
    assert not bad, f"{rel} imports {sorted(bad)}, a later stage of the flow"
    root = sorted(m for m in imported if m == "logflume.cli" or m.startswith("logflume.cli."))
    assert not root, f"{rel} imports {root}: the command line starts the stages, never the reverse"


def test_the_command_line_is_the_root_that_starts_every_stage():
    """What the root is for: were the daemons started elsewhere, it would not need to be the root."""
    imported = set()
    for path in (REPO / "logflume" / "cli").rglob("*.py"):
        imported |= {m.split(".")[0] for m in imported_modules(path)}
    assert {"agent", "collector", "jobs"} <= imported
