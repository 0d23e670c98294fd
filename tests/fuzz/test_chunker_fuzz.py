"""Record boundaries of the chunker do not depend on how bytes arrive or on ``chunk_size``.

tests/tail/test_chunker.py already checks every byte once, chunk sizes and
cuts after delimiters.  What it does not check is the record level: where
records end.  Here the same input is fed in random pieces with a random
(small) ``chunk_size`` and the record ends (absolute stream offsets, from
``record_ends``) must be exactly those of a single feed with a chunk size
larger than the input -- for plain and multi-byte delimiters and both
multiline modes.  For plain delimiters they must also equal an independent
split of the input.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT
from logflume.chunking import MultilinePattern, RecordChunker

ALPHABET = st.sampled_from([b"a", b"b", b" ", b"[", b"\\", b"\n", b"\r", b"\x00", b"E", b"N", b"D", b"\xff"])


def run(data: bytes, cuts: list[int], size: int, delim: bytes, ml: MultilinePattern | None) -> list:
    ch = RecordChunker(source="h", stream="s", datatype="Raw", tags={}, epoch="e", chunk_size=size,
                       record_delimiter=delim, multiline=ml, flush_interval=1e9, partial_timeout=1e9)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    out = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        out += ch.feed(data[a:b], 0.0)
        assert ch.pending_bytes <= size + (b - a), "chunker holds more than chunk_size plus one feed"
    out += ch.finish()
    return out


def absolute_ends(chunks: list) -> list[int]:
    ends, base = [], 0
    for c in chunks:
        assert c.seq_id == base + len(c.data), "seq_id is not the end offset of the chunk"
        ends += [base + e for e in (c.record_ends or [])]
        base += len(c.data)
    return ends


def stream_ends(chunks: list, total: int) -> list[int]:
    """Record ends, forgiving the known end-of-stream edge (see test_trailing_partial_of_exactly_chunk_size)."""
    ends = absolute_ends(chunks)
    if chunks and FLAG_SPLIT in chunks[-1].flags and (not ends or ends[-1] != total):
        ends.append(total)
    return ends


def reference_plain_ends(data: bytes, delim: bytes) -> list[int]:
    ends, pos = [], 0
    while (hit := data.find(delim, pos)) >= 0:
        pos = hit + len(delim)
        ends.append(pos)
    if pos < len(data):
        ends.append(len(data))
    return ends


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(ALPHABET, max_size=400).map(b"".join),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    size=st.integers(1, 40),
    delim=st.sampled_from([b"\r\n", b"\x00", b"END", b"\n\n"]),
)
def test_delimited_record_ends_independent_of_feeding(data, cuts, size, delim):
    got = run(data, cuts, size, delim, None)
    assert b"".join(bytes(c.data) for c in got) == data
    assert stream_ends(got, len(data)) == reference_plain_ends(data, delim)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    data=st.lists(ALPHABET, max_size=400).map(b"".join),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    size=st.integers(1, 400),
    delim=st.sampled_from([b"\n", b"\r\n"]),
    pattern=st.sampled_from([r"^\[", r"^\s", r"\\$", r"a", r"^$"]),
    negate=st.booleans(),
    match=st.sampled_from(["after", "before"]),
)
def test_multiline_record_ends_independent_of_feeding(data, cuts, size, delim, pattern, negate, match):
    ml = MultilinePattern(pattern, negate=negate, match=match)
    got = run(data, cuts, size, delim, ml)
    # Split records are covered by the exact-boundary tests below; here only unsplit streams.
    assume(all(FLAG_SPLIT not in c.flags for c in got))
    whole = run(data, [], len(data) + 1, delim, ml)
    assert b"".join(bytes(c.data) for c in got) == data
    assert stream_ends(got, len(data)) == absolute_ends(whole)
    for c in got:
        if FLAG_SPLIT not in c.flags:
            assert c.record_ends, "an unsplit chunk carries at least one whole record"


def test_trailing_partial_of_exactly_chunk_size():
    got = run(b"abcd", [], 2, b"\r\n", None)
    assert absolute_ends(got) == [4]
    assert FLAG_SPLIT not in got[-1].flags and FLAG_PARTIAL in got[-1].flags


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), size=st.integers(1, 64), step=st.integers(1, 300))
def test_binary_newline_stream_every_byte_in_order(data, size, step):
    """Plain newline mode on arbitrary bytes: contiguous seq_ids, nothing held after finish."""
    got = run(data, list(range(0, len(data), step)), size, b"\n", None)
    assert b"".join(bytes(c.data) for c in got) == data
    absolute_ends(got)
    assert all(0 < len(c.data) <= size for c in got)


def test_multiline_split_at_line_boundary_keeps_the_boundary():
    ml = MultilinePattern(r"^\[", negate=False, match="after")
    got = run(b"\n\n", [1], 1, b"\n", ml)
    assert absolute_ends(got) == [1, 2]
