"""Batch processors: each built-in's batch output equals its per-record output, errors and edge cases included."""

from __future__ import annotations

import pyarrow as pa
import pytest

from logflume.processor import BatchContext, ParseError, build_processor

ACCESS = [
    b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "http://e.com/" "M [en]"',
    b'1.2.3.4 - - [24/Nov/2025:16:00:02 +0100] "GET / HTTP/1.1" 304 -',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "\\x16\\x03" 400 157 "-" "-" 0.012',
    b'1.2.3.4 - - [30/Feb/2025:16:00:06 +0000] "GET / HTTP/1.1" 200 1',
    b'1.2.3.4 - - [01/Jan/0000:16:00:06 +0000] "GET / HTTP/1.1" 200 1',
    b'1.2.3.4 - - [99/Foo/2025:16:00:06 +0000] "GET / HTTP/1.1" 200 1',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET /" \xd9\xa3\xd9\xa0\xd9\xa0 1',  # Arabic-Indic digits
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET /" 200 99999999999999999999',
    b"\xff\xfe - - [24/Nov/2025:16:00:03 +0000] \"GET /\" 200 1 \"\" \"\"  x ",
    b"garbage",
    b"",
]
RAW = [b"caf\xc3\xa9", b"\xff", b"", b"a\rb", b"x\xc3"]


def both(kind: str, lines: list[bytes], **settings) -> None:
    proc = build_processor(kind, settings)
    where = BatchContext("h", "/s", "e", list(range(len(lines))), "T", 1_764_000_000_000)
    batch = proc.process_batch(pa.array(lines, pa.binary()), where)
    assert batch.fields.num_rows == len(lines) == len(batch.reasons)
    for i, (line, row, reason) in enumerate(zip(lines, batch.fields.to_pylist(), batch.reasons.to_pylist(),
                                                strict=True)):
        try:
            expected, expected_reason = proc.process(line, where.record(i)), None
        except ParseError as exc:
            expected, expected_reason = None, exc.reason
        assert reason == expected_reason, line
        if reason is None:
            assert row == expected, line


@pytest.mark.parametrize("kind, lines, settings", [
    ("access", ACCESS, {}),
    ("raw", RAW, {}),
    ("raw", RAW, {"strict_utf8": True}),
])
def test_batch_equals_per_record(kind: str, lines: list[bytes], settings: dict) -> None:
    both(kind, lines, **settings)


def test_per_record_plugins_get_the_batch_api() -> None:
    """A processor with only process() is driven through process_batch, one reason per rejected record."""
    both("json", [b'{"a": 1, "b": "x"}', b"[1]", b'{"a"', b'{"a": 2, "b": "y"}'])
