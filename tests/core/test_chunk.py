"""The chunk model: metadata round trip, record boundaries, malformed metadata."""

from __future__ import annotations

import pytest

from logflume.chunk import FLAG_SPLIT, Chunk, runs_within


def test_metadata_round_trip_keeps_every_field():
    c = Chunk("host-1", "/var/log/a.log", "NginxAccess", 300, "1:2:abc", b"x" * 100, tags={"env": "prod"},
              record_ends=[40, 100], timestamp=1700000000123, flags=[FLAG_SPLIT])
    back = Chunk.from_metadata_json(c.metadata_json(), c.data)
    assert back == c
    assert back.start == 200 and back.key == ("host-1", "/var/log/a.log", "1:2:abc")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"stream": "s", "seq_id": 1}', "lacks field 'source'"),
        (b'{"source": "h", "stream": "s", "seq_id": "x"}', "malformed"),
        (b'{"source": "h", "stream": "s", "seq_id": 3, "length": 5}', "length 5 in metadata but 3 data bytes"),
    ],
)
def test_malformed_metadata_is_a_clear_error(raw, message):
    with pytest.raises(ValueError, match=message):
        Chunk.from_metadata_json(raw, b"abc")


def test_records_by_newline_and_by_record_ends():
    data = b"one\ntwo\r\nthree"
    c = Chunk("h", "s", "Raw", len(data), "e", data)
    assert [bytes(r) for r in c.records()] == [b"one\n", b"two\r\n", b"three"]
    c2 = Chunk("h", "s", "Raw", len(data), "e", data, record_ends=[2, 9])
    assert [bytes(r) for r in c2.records()] == [b"on", b"e\ntwo\r\n", b"three"]


def test_records_of_a_memoryview_are_views_into_it():
    buf = bytearray(b"ab\ncd\n")
    c = Chunk("h", "s", "Raw", 6, "e", memoryview(buf))
    recs = list(c.records())
    buf[0:1] = b"X"
    assert bytes(recs[0]) == b"Xb\n", "records are zero-copy views"


def test_runs_within_keeps_order_and_limit_and_lets_a_big_chunk_go_alone():
    sizes = [3, 4, 2, 9, 1, 1, 5]
    chunks, off = [], 0
    for n in sizes:
        off += n
        chunks.append(Chunk("h", "s", "Raw", off, "e", b"x" * n))
    runs = runs_within(chunks, 6)
    assert [[len(c) for c in r] for r in runs] == [[3], [4, 2], [9], [1, 1], [5]]
    assert [c for r in runs for c in r] == chunks
    assert runs_within(chunks, sum(sizes)) == [chunks]
