"""Demux's record cutting: the compiled pass and the Arrow kernels cut every chunk as Chunk.record_spans does."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobs.records as records
from jobs.records import chunk_records
from logflume.chunk import Chunk


@pytest.fixture(params=["compiled", "arrow-kernels"])
def cutting(request, monkeypatch) -> str:
    if request.param == "compiled" and records._compiled is None:
        pytest.skip("jobs/_records.c is not built")
    if request.param == "arrow-kernels":
        monkeypatch.setattr(records, "_compiled", None)
    return request.param


def expected(chunks: list[Chunk]) -> list[tuple[bytes, int, int]]:
    """Each record without its "\\n" (and a "\\r" before it), its chunk and stream offset, in chunk order."""
    out = []
    for i, c in enumerate(chunks):
        for start, end in c.record_spans():
            rec = bytes(c.data[start:end])
            if rec.endswith(b"\n"):
                rec = rec[:-2] if rec.endswith(b"\r\n") else rec[:-1]
            out.append((rec, i, c.start + start))
    return out


def cut(chunks: list[Chunk]) -> list[tuple[bytes, int, int]]:
    recs, chunk_of, offsets = chunk_records(chunks)
    assert len(recs) == len(chunk_of) == len(offsets)
    return list(zip(recs.to_pylist(), chunk_of.to_pylist(), offsets.to_pylist(), strict=True))


def chunk(data: bytes, seq: int = 1000, record_ends: list[int] | None = None) -> Chunk:
    return Chunk("h", "/s", "T", seq, "e", data, record_ends=record_ends, timestamp=1)


EDGES = [
    chunk(b"a\nb\r\n\n\r\nc\n"), chunk(b"no newline at the end\r"), chunk(b""), chunk(b"\n"), chunk(b"x\ry\n"),
    chunk(b"rec-one|rec", 11, [8, 11]), chunk(b"ab\ncd\r\nef", 500, [3, 7]), chunk(b"abc", 3, [0, 2, 2, 9]),
    chunk(memoryview(b"view\nof\nbytes\n")), chunk(bytearray(b"array\n")), chunk(b"tail\nwithout", 2000, []),
]


def test_edges(cutting: str) -> None:
    assert cut(EDGES) == expected(EDGES)
    assert cut([]) == []


_PIECES = st.lists(st.sampled_from([b"a", b"\n", b"\r", b"\r\n", b"xyz", b"\xff", b""]), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(st.tuples(_PIECES, st.one_of(st.none(), st.lists(st.integers(-2, 40), max_size=6))),
                      max_size=6))
def test_generated_chunks(cutting: str, specs: list[tuple[bytes, list[int] | None]]) -> None:
    chunks = [chunk(data, 100 * (i + 1) + len(data), ends) for i, (data, ends) in enumerate(specs)]
    assert cut(chunks) == expected(chunks)
