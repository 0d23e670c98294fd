"""Data flows one way: source -> channel -> sink -> collector -> store -> jobs (-> hicc).

A module never imports from a stage after it; everything may import the core
(`logflume/`).  The CLI and quickstart sit at the edge and dispatch to every
stage lazily; they, and the config tester that drives sources and demux
processors (`logflume test`, loaded only by the CLI) and the reload client that
reads either daemon's config (`logflume reload`), are the only exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# package -> packages it must not import
FORBIDDEN = {
    "logflume": {"agent", "sinks", "collector", "jobs"},
    "agent": {"collector", "jobs"},
    "sinks": {"agent", "collector", "jobs"},
    "collector": {"agent", "jobs"},
    "jobs": {"agent", "collector"},
    # the console reads what every stage publishes (/status, manifests, stores), never their code
    "hicc": {"agent", "sinks", "collector"},
}
EDGE = {"logflume/cli.py", "logflume/quickstart.py", "logflume/pipeline_tests.py",
        "logflume/reload_client.py"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


MODULES = [p for pkg in FORBIDDEN for p in sorted((REPO / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_against_the_flow(path):
    rel = str(path.relative_to(REPO))
    if rel in EDGE:
        return
    pkg = rel.split("/")[0]
    bad = imported_packages(path) & FORBIDDEN[pkg]
    assert not bad, f"{rel} imports {sorted(bad)}, a later stage of the flow"
