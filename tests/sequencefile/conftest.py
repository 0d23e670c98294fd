"""Shared fixtures: the Hadoop-written golden files and their sidecars."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from logflume.sequencefile.writables import decode_vint

DATA = Path(__file__).resolve().parent.parent / "data" / "seqfile"
GOLDEN = sorted(p.stem for p in DATA.glob("*.seq"))


def sidecar(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def sidecar_records(side: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """(key payload, value payload) of every record, as the sidecar states them."""
    return [(base64.b64decode(r["key_b64"]), base64.b64decode(r["value_b64"])) for r in side["records"]]


@pytest.fixture(params=GOLDEN)
def golden(request: pytest.FixtureRequest) -> tuple[Path, dict[str, Any]]:
    return DATA / f"{request.param}.seq", sidecar(request.param)


def block_counts(data: bytes, hl: int) -> list[int]:
    """Record count of each block of a BLOCK file whose header is ``hl`` bytes long."""
    counts, pos = [], hl
    while pos < len(data):
        assert data[pos : pos + 4] == b"\xff\xff\xff\xff"
        pos += 20
        n, pos = decode_vint(data, pos)
        counts.append(n)
        for _ in range(4):
            size, pos = decode_vint(data, pos)
            pos += size
    return counts
