"""Fixtures for the sink tests: a context, and chunks whose streams each have their own datatype."""

from __future__ import annotations

from pathlib import Path

import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from tests.conftest import sink_file_order
from tests.store.conftest import STREAMS, ChunkMaker
from tests.wire.conftest import serving, wire_server  # noqa: F401 - loopback collectors for test_to_collector

#: Each stream's datatype: ``app:json`` needs escaping (``:`` is illegal in HDFS path components).
DATATYPES = {STREAMS[0]: "Nginx", STREAMS[1]: "app:json", STREAMS[2]: "Syslog"}
#: The directory each datatype gets.
DIRS = {"Nginx": "Nginx", "app:json": "app%3Ajson", "Syslog": "Syslog"}


class TypedChunkMaker(ChunkMaker):
    """ChunkMaker whose chunks carry their stream's datatype (so per-stream order is per-datatype order)."""

    def chunk(self, stream: str) -> Chunk:
        c = super().chunk(stream)
        c.datatype = DATATYPES[stream]
        return c


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(agent_name="coll1", data_dir=tmp_path / "state")


def files_by_dir(root: Path, pattern: str = "*/*/*.seq") -> dict[str, list[Path]]:
    """Finished files under ``root`` grouped by their top directory, each list in the order written."""
    out: dict[str, list[Path]] = {}
    for p in root.glob(pattern):
        out.setdefault(p.relative_to(root).parts[0], []).append(p)
    return {k: sorted(v, key=lambda p: sink_file_order(p.name)) for k, v in out.items()}
