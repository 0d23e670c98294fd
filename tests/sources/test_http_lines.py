"""The http source's compiled line splitter (_lines.c) against the line-by-line Python path.

A body it takes must give the very records the Python path gives; every line it calls JSON must be
one json.loads accepts; what it does not take (None) goes to the Python path, which decides.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.sources import http as http_source
from agent.sources.http import BadRequest, HttpSource
from logflume.chunking import RecordBlock
from logflume.component import Context
from logflume.metrics import Metrics
from logflume.topology import build_topology

split_lines = http_source.split_lines
needs_build = pytest.mark.skipif(split_lines is None, reason="_lines.c not built (or LOGFLUME_PURE_PYTHON=1)")


def source(tmp_path, fmt: str) -> HttpSource:
    raw = {"sources": {"h": {"type": "http", "format": fmt, "channels": ["c"]}},
           "channels": {"c": {"type": "memory"}}, "sinks": {"s": {"type": "null", "channel": "c"}}}
    topo = build_topology(raw, None, Context(agent_name="t", data_dir=tmp_path, metrics=Metrics()))
    return topo.sources["h"].component


SOURCES: dict[str, HttpSource] = {}


def records_of(result) -> list[bytes]:
    if isinstance(result, RecordBlock):
        data = bytes(result.data)
        return [data[a:b] for a, b in zip([0, *result.ends][:-1], result.ends, strict=True)]
    return [bytes(r) for r in result]


def python_path(src: HttpSource, body: bytes) -> list[bytes] | str:
    with mock.patch.object(http_source, "split_lines", None):
        try:
            return records_of(src.split_records(body))
        except BadRequest as exc:
            return f"{exc.status} {exc}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10)
json_lines = st.builds(lambda v, pre, post, ascii_: pre + json.dumps(v, ensure_ascii=ascii_).encode() + post,
                       json_values, st.sampled_from([b"", b" ", b"\t", b" \r"]), st.sampled_from([b"", b" ", b"\r"]),
                       st.booleans())
#: Lines at the grammar's edges: each is JSON to json.loads or not, and the source must not say more (here
#: against the splitter, in test_http.py over HTTP).
ODD_LINES = [b'{"a":1}', b' {"a": [1, 2.5e-7, null, true]} \r', b"Infinity", b"123456789012345678901234567890",
             b'"just a string"', b"{'a':1}", b"NaN", b"\xef\xbb\xbf{}", b'{"s":"\\ud800"}', b"   ", b"", b"\x0b{}",
             b'{"a":1', b"01", b"-01", b"1.",
             b"-", b".5", b"1e", b"1e+", b'"\x01"', b'"\x1f"', b'"\xed\xa0\x80"', b'"\xc0\xaf"', b'"\xe0\x80\xaf"',
             b'"\xf0\x80\x80\xaf"', b'"\xf4\x90\x80\x80"', b'"\xff"', b'"\x80"', b"[1,]", b'{"a" 1}', b'{"a",1}',
             b'{"a":}', b'{1:2}', b"tru", b"nul", b"falsey", b'"\\x"', b'"\\u12"', b'"\\u12g4"', b'"abc',
             b"[" * 600 + b"]" * 600, b"1 2", b"{}}", b"[]]", b'{"a":1,}', b"\x00", b"0", b"-0.0e+1", b"1E400",
             b'"\\u0000\\/"', b'{"":{"":[]}}', b'"\x7f"', b'"\xf4\x8f\xbf\xbf"',
             b"[" * 512 + b"]" * 512, b"[" * 513 + b"]" * 513]
odd_lines = st.sampled_from(ODD_LINES)


@needs_build
@settings(max_examples=300, deadline=None)
@given(st.lists(json_lines | odd_lines | st.binary(max_size=12), max_size=8), st.booleans(),
       st.sampled_from(["ndjson", "lines"]))
@example([b'{"a":1}', b"[1, 2.5e-3, null]"], True, "ndjson")
@example([b'{"a":1}', b"NaN"], True, "ndjson")
def test_the_splitter_gives_the_records_the_python_path_gives(tmp_path_factory, lines, newline_at_end, fmt):
    if fmt not in SOURCES:
        SOURCES[fmt] = source(tmp_path_factory.mktemp("h"), fmt)
    src = SOURCES[fmt]
    body = b"\n".join(line.replace(b"\n", b" ") for line in lines) + (b"\n" if newline_at_end else b"")
    expected = python_path(src, body)
    try:
        got = src.split_records(body)
    except BadRequest as exc:
        got = f"{exc.status} {exc}"
    if isinstance(got, RecordBlock):
        for record in records_of(got):
            json.loads(record) if fmt == "ndjson" else None  # every line it took is JSON to json.loads
        got = records_of(got)
    else:
        got = got if isinstance(got, str) else records_of(got)
    assert got == expected


@needs_build
def test_a_body_of_json_lines_is_taken_whole(tmp_path):
    src = source(tmp_path, "ndjson")
    body = b"".join(json.dumps({"n": i, "msg": "caf\u00e9 \"q\" \\ \t"}, ensure_ascii=i % 2 == 0).encode() + b"\n"
                    for i in range(1000))
    got = src.split_records(body)
    assert isinstance(got, RecordBlock) and len(got) == 1000 and bytes(got.data) == body
    assert isinstance(src.split_records(body + b"NaN\n"), list)  # one line only json.loads takes: line by line


@needs_build
@pytest.mark.parametrize("line", ODD_LINES)
def test_every_line_the_splitter_calls_json_is_json(line):
    """Alone and among good lines: taken only if json.loads takes it."""
    for body in (line + b"\n", b'{"a":1}\n' + line + b"\n[2]\n"):
        if split_lines(body, True) is not None:
            json.loads(line)


@needs_build
@settings(max_examples=200, deadline=None)
@given(st.lists(json_lines, min_size=1, max_size=8))
def test_bodies_of_json_lines_are_taken_whole(lines):
    body = b"\n".join(lines) + b"\n"
    assert split_lines(body, True) is not None, body


def test_a_line_nested_past_any_parsers_depth_is_refused_with_400(tmp_path):
    """json.loads raises RecursionError (not ValueError) past ~1000 levels: it must still be a 400."""
    src = source(tmp_path, "ndjson")
    for impl in (split_lines, None):
        with mock.patch.object(http_source, "split_lines", impl), pytest.raises(BadRequest) as info:
            src.split_records(b'{"ok":1}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n")
        assert info.value.status == 400 and "line 2: nested too deeply" in str(info.value)
