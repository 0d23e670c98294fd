"""The chunk model: metadata round trip, record boundaries, malformed metadata."""

from __future__ import annotations

import pytest

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Chunk, runs_within


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


def _pieces_tile(chunk: Chunk, pieces: list[Chunk]) -> None:
    """The pieces are the chunk: same bytes in order, consecutive ranges, metadata carried over."""
    assert b"".join(bytes(p.data) for p in pieces) == bytes(chunk.data)
    assert pieces[0].start == chunk.start and pieces[-1].seq_id == chunk.seq_id
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert b.start == a.seq_id
    for p in pieces:
        assert (p.source, p.stream, p.epoch, p.datatype, p.tags, p.timestamp) == (
            chunk.source, chunk.stream, chunk.epoch, chunk.datatype, chunk.tags, chunk.timestamp)
        assert p.metadata_error() is None


@pytest.mark.parametrize("wrap", [bytes, bytearray, lambda b: memoryview(bytes(b))])
def test_cut_splits_after_lines_into_about_equal_pieces(wrap):
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 37)) for i in range(3000))
    c = Chunk("h", "s", "Raw", 10_000 + len(data), "e", wrap(data), tags={"k": "v"}, timestamp=1700000000000)
    pieces = c.cut(20_000)
    _pieces_tile(c, pieces)
    sizes = [len(p) for p in pieces]
    assert len(pieces) == -(-len(data) // 20_000)  # as few as the limit allows
    assert max(sizes) <= 20_000 and max(sizes) - min(sizes) < 200  # about equal: no small last piece
    assert all(bytes(p.data).endswith(b"\n") for p in pieces)
    assert all(isinstance(p.data, memoryview) for p in pieces)  # views of the chunk's buffer, not copies


def test_cut_follows_record_ends_and_keeps_partial_on_the_last_piece():
    records = [b"<%d>" % i + b"r" * (i % 50) for i in range(500)]  # no newlines: record_ends say where they end
    data = b"".join(records)
    ends, pos = [], 0
    for r in records:
        pos += len(r)
        ends.append(pos)
    c = Chunk("h", "s", "Raw", len(data) + 5, "e", data, record_ends=ends, flags=[FLAG_PARTIAL])
    pieces = c.cut(4000)
    _pieces_tile(c, pieces)
    assert len(pieces) > 1
    rebuilt = [len(bytes(p.data[a:b])) for p in pieces for a, b in p.record_spans()]
    assert rebuilt == [len(r) for r in records]  # every record whole, in one piece
    assert [p.flags for p in pieces] == [[]] * (len(pieces) - 1) + [[FLAG_PARTIAL]]


def test_cut_leaves_a_long_record_whole_and_does_not_cut_flagged_or_small_chunks():
    data = b"a\n" + b"L" * 5000 + b"\n" + b"b\n" * 10
    c = Chunk("h", "s", "Raw", len(data), "e", data)
    pieces = c.cut(1000)
    _pieces_tile(c, pieces)
    assert [len(p) for p in pieces] == [2, 5001, 20]
    ends = [2, 5003] + [5003 + 2 * (k + 1) for k in range(10)]
    delimited = Chunk("h", "s", "Raw", len(data), "e", data, record_ends=ends)  # the same records by record_ends
    assert [len(p) for p in delimited.cut(1000)] == [2, 5001, 20]
    split = Chunk("h", "s", "Raw", len(data), "e", data, flags=[FLAG_SPLIT])
    assert split.cut(1000) == [split]  # the flag is about the whole chunk's last record
    assert c.cut(len(data)) == [c]
