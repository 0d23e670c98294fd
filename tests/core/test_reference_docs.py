"""docs/reference.md is generated from the declared settings and must match them."""

from __future__ import annotations

from pathlib import Path

from logflume.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_doc_is_current(capsys):
    assert main(["plugins"]) == 0
    generated = capsys.readouterr().out
    assert "## source `tail`" in generated and "| `chunk_size` |" in generated
    assert DOC.read_text() == generated, "docs/reference.md is stale: run `logflume plugins > docs/reference.md`"
