"""coalesce: a stream's adjacent small chunks become one archive record; no byte, boundary or label changes."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.coalesce import MAX_MERGED, coalesce
from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, FLAG_TRUNCATED, Chunk
from tests.jobs.conftest import T0, read_seq_chunks, run_cli, write_sink_file

BODY = b"".join(b"line %04d of the stream\n" % i for i in range(200))


def piece(a: int, b: int, ts: int = T0, data: bytes | None = None, **kw) -> Chunk:
    meta = {"source": "web-01", "stream": "/var/log/app.log", "datatype": "Raw", "epoch": "ino-1", "tags": {"a": "b"},
            "sender": "web-01/tail", **kw}
    return Chunk(seq_id=b, data=BODY[a:b] if data is None else data, timestamp=ts, **meta)


def spans(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Every record as a stream byte range."""
    return [(c.start + s, c.start + e) for c in chunks for s, e in c.record_spans()]


def test_adjacent_pieces_of_a_stream_become_one_chunk():
    pieces = [piece(0, 120, T0), piece(120, 240, T0 + 20), piece(240, 500, T0 + 40, flags=[FLAG_PARTIAL])]
    (merged,) = coalesce(pieces)
    assert (merged.start, merged.seq_id, bytes(merged.data)) == (0, 500, BODY[:500])
    assert merged.timestamp == T0 and merged.flags == [FLAG_PARTIAL]  # the last piece's flags describe its end
    assert (merged.tags, merged.sender, merged.datatype) == ({"a": "b"}, "web-01/tail", "Raw")
    assert merged.record_ends is None and spans([merged]) == spans(pieces)


def test_what_is_never_merged():
    base = piece(0, 120)
    cases = {
        "a gap": piece(144, 240),
        "an overlap": piece(96, 240),
        "another epoch": piece(120, 240, epoch="ino-2"),
        "another stream": piece(120, 240, stream="/var/log/other.log"),
        "other tags": piece(120, 240, tags={"a": "c"}),
        "another sender": piece(120, 240, sender="clone/tail"),
        "another datatype": piece(120, 240, datatype="Access"),
        "other flags": piece(120, 240, flags=[FLAG_TRUNCATED]),
        "past the window": piece(120, 240, T0 + 1001),
        "behind in time past the window": piece(120, 240, T0 - 1001),
    }
    for what, nxt in cases.items():
        assert len(coalesce([base, nxt])) == 2, what
    for flag in (FLAG_SPLIT, FLAG_PARTIAL):  # the first piece's last record continues in the next
        assert len(coalesce([piece(0, 120, flags=[flag]), piece(120, 240)])) == 2, flag
    assert len(coalesce([base, piece(120, 240)], window_ms=0)) == 2, "--merge-window 0 keeps every chunk"
    assert len(coalesce([base, piece(120, 240, T0 + 1000)])) == 1, "within the window"


def test_merges_stop_at_max_merged_and_leave_big_chunks_alone():
    big = (MAX_MERGED // len(BODY)) + 2
    body = BODY * big
    n = len(BODY)
    pieces = [piece(i * n, (i + 1) * n, data=body[i * n:(i + 1) * n]) for i in range(big)]
    out = coalesce(pieces)
    assert len(out) == 2 and all(len(c.data) <= MAX_MERGED for c in out)
    assert b"".join(bytes(c.data) for c in out) == body
    huge = piece(0, MAX_MERGED + 10, data=b"x" * (MAX_MERGED + 9) + b"\n")
    after = piece(MAX_MERGED + 10, MAX_MERGED + 20, data=b"y" * 9 + b"\n")
    assert [len(c) for c in coalesce([huge, after])] == [MAX_MERGED + 10, 10]


def test_record_boundaries_without_a_newline_become_explicit():
    """A piece ending without a newline (records cut by record_ends, not newlines) keeps its boundary."""
    a = Chunk("h", "s", "Raw", 11, "e", b"rec-one|rec", record_ends=[8, 11], timestamp=T0)
    b = Chunk("h", "s", "Raw", 20, "e", b"-two|xyz|", record_ends=[5, 9], timestamp=T0)
    (m,) = coalesce([a, b])
    assert m.record_ends == [8, 11, 16, 20] and [bytes(r) for r in m.records()] == \
        [b"rec-one|", b"rec", b"-two|", b"xyz|"]


@st.composite
def streams(draw):
    """Chunks of two streams cut at random, with random metadata changes and timestamps, sorted as dedup leaves
    them."""
    out = []
    for stream in ("s1", "s2"):
        pos, ts = 0, T0
        for _ in range(draw(st.integers(0, 12))):
            n = draw(st.integers(1, 40))
            gap = draw(st.sampled_from([0, 0, 0, 3]))
            ts += draw(st.sampled_from([0, 5, 400, 2000]))
            data = draw(st.sampled_from([b"x" * (n - 1) + b"\n", b"y" * n]))
            ends = draw(st.sampled_from([None, None, sorted({n, *draw(st.lists(st.integers(1, n), max_size=3))})]))
            flags = draw(st.sampled_from([[], [], [FLAG_PARTIAL], [FLAG_TRUNCATED]]))
            tags = draw(st.sampled_from([{}, {}, {"k": "v"}]))
            pos += gap
            out.append(Chunk("h", stream, "Raw", pos + n, "e", data, tags=tags, record_ends=ends,
                             timestamp=ts, flags=flags))
            pos += n
    return out


@settings(max_examples=300, deadline=None)
@given(streams(), st.sampled_from([0, 1, 1000]))
def test_coalescing_changes_no_byte_record_or_label(chunks, window):
    out = coalesce(chunks, window)
    assert len(out) <= len(chunks)
    for stream in ("s1", "s2"):
        before = [c for c in chunks if c.stream == stream]
        after = [c for c in out if c.stream == stream]
        assert [(c.start, bytes(c.data)) for c in before] == [
            (c.start + off, bytes(c.data[off:off + n])) for c in after for off, n in _pieces(c, before)]
        assert spans(after) == spans(before)
        for c in after:  # every byte keeps its tags and non-tail flags; a merged chunk's metadata is valid
            assert c.metadata_error() is None
            covered = [b for b in before if c.start <= b.start < c.seq_id]
            assert all(b.tags == c.tags and b.timestamp - c.timestamp <= window for b in covered)
            assert all([f for f in b.flags if f == FLAG_TRUNCATED] == [f for f in c.flags if f == FLAG_TRUNCATED]
                       for b in covered)


def _pieces(merged: Chunk, before: list[Chunk]) -> list[tuple[int, int]]:
    """(offset in ``merged``, length) of each original chunk inside it."""
    return [(b.start - merged.start, len(b.data)) for b in before if merged.start <= b.start < merged.seq_id]


def test_archive_stores_a_trickle_as_few_records(tmp_path: Path):
    """200 one-line chunks 20 ms apart (a slow file sent within caught_up_flush) are stored as one record per
    second of the stream, exactly once; with --merge-window 0 as 200."""
    pieces, pos = [], 0
    for i in range(200):
        line = b"line %04d\n" % i
        pieces.append(Chunk("h", "/var/log/app.log", "Raw", pos + len(line), "e", line, timestamp=T0 + 20 * i))
        pos += len(line)
    write_sink_file(tmp_path / "sink" / "c-1-0.seq", pieces)
    results = {}
    for window in ("1s", "0"):
        out = tmp_path / f"archive-{window}"
        r = run_cli("archive", "--input", str(tmp_path / "sink"), "--output", str(out), "--merge-window", window,
                    "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        stored = [c for p in sorted(out.rglob("archive-*.seq")) for c in read_seq_chunks(p)]
        assert b"".join(bytes(c.data) for c in stored) == b"".join(p.data for p in pieces)
        assert spans(stored) == spans(pieces) and s["chunks_out"] == 200 and s["chunks_written"] == len(stored)
        results[window] = len(stored)
    assert results == {"1s": 4, "0": 200}  # 4 s of timestamps: a record per second
