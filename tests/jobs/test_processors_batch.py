"""Batch processors: each built-in's batch output equals its per-record output, errors and edge cases included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logflume.processor import BatchContext, ParseError, Processor, RecordContext, build_processor

DATA = Path(__file__).resolve().parents[1] / "data" / "jobs"
READ = 1_764_000_000_000  # 2025-11-24
JAN = 1_767_300_000_000  # 2026-01-01

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
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET / HTTP/1.1" 200 5 "r" "a" "x" y',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET / HTTP/1.1" 200 5 "r" "a"z',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET / HTTP/1.1" 200 5 x "r" "a"',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET /" 200 5 ',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET /" 200 5 extra words',
    b'a"b - - [24/Nov/2025:16:00:03 +0000] "GET /" 200 5',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET / HTTP/1.1" 200 - "" ""',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "" 200 5 "r" "a" 0.5',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET a b c" 200 5 "-" "-" ',
    b'1.2.3.4 - - [29/Feb/2024:16:00:03 -0130] "get /" 200 5',
    b'1.2.3.4 - - [29/Feb/2023:16:00:03 +0000] "GET /" 200 5',
    b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "GET \\"/" 200 5',
]
RAW = [b"caf\xc3\xa9", b"\xff", b"", b"a\rb", b"x\xc3"]
SYSLOG = [
    *(DATA / "syslog.log").read_bytes().split(b"\n"),
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 - hi",
    b"<165>1 2003-10-11T22:14:15Z h a p m -",
    b"<13>1 2025-11-24T16:00:03.000-00:00 h a p m - x",
    b"<13>1 2025-11-24T16:00:03.1234567+05:30 h a p m - x",
    b"<13>1 2025-02-30T16:00:03Z h a p m - x",
    b"<13>1 - - - - - -",
    b"<13>1 2025-11-24T16:00:03Z h a p m -x",
    b'<165>1 2003-10-11T22:14:15.003Z h a - ID47 [exampleSDID@32473 iut="3" x="a\\"b\\]c"] \xef\xbb\xbfhi',
    b"<165>1 2003-10-11T22:14:15Z h a p m - \xef\xbb\xbfbom",
    b"\xef\xbb\xbf<13>Nov 24 16:00:01 web1 x: y",
    b"Dec 31 23:59:59 web1 logger: x",
    b"Jan  1 00:00:01 web1 logger: x",
    b"Feb 29 10:00:00 h x[1]: y",
    b"Nov  4 06:25:01 web1 CRON[999]: (root) CMD (x)",
    b"Nov 00 06:25:01 web1 x",
    b"Nov 24 16:00:01 web1",
    b"Nov 24 16:00:01 web1 ",
    b"Nov 24 16:00:01 web1 a[]: x",
    b"Nov 24 16:00:01 web1 " + b"a" * 60 + b": x",
    b"Nov 24 16:00:01 web\x1c1 x: y",
    b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
    b"<192>Oct 11 22:14:15 m x",
    b"<0>Oct 11 22:14:15 m x",
    b"<12345>Oct 11 22:14:15 m x",
    b"<x>Oct 11 22:14:15 m x",
    b"Oct 11 22:14:15 m x\xff\xfey",
    b"",
]
JSON = [
    *(DATA / "app.jsonl").read_bytes().split(b"\n"),
    b'{"a": 1, "b": "x", "t": "2025-11-24T16:00:00Z", "f": 1.5, "ok": true, "n": null}',
    b' {"a": 2.5, "b": "y"} ',
    b'{"a": "three", "c": {"d": 1}}',
    b'{"a": 99999999999999999999}',
    b'{"a": 1, "a": 2}',
    b'{"e": [1, 2]}',
    b'{"s": "caf\\u00e9 \\ud83d\\ude00 \\"q\\""}',
    b"{}",
    b"[1]",
    b'{"a"',
    b"not json",
    b'{"a":"\xff"}',
    b'{"a": NaN}',
    b'{"x": 1}{"y": 2}',
    b"",
]
REGEX = r"(?P<date>\S+) (?P<time>\S+) (?P<level>[A-Z]+) \[(?P<thread>[^\]]+)\] (?P<msg>.*?)(?: took (?P<ms>\d+) ms)?"
APP = [
    *(DATA / "app.log").read_bytes().split(b"\n"),
    b"2025-11-24 16:00:00.001 INFO [main] Started took 123 ms",
    b"2025-11-24 16:00:00.001 INFO [main] Started took 99999999999999999999 ms",
    b"2025-11-24 16:00:00.001 INFO [main] caf\xc3\xa9 took \xd9\xa3 ms",
    b"2025-11-24 16:00:00.001 INFO [main] ",
    b"2025-11-24\x1c16:00:00.001 INFO [main] x",
    b"nope",
]


def normal(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the per-record path gives it, column inference aside: no null keys, nested values as JSON text."""
    return {k: v for k, v in row.items() if v is not None}


def same_value(got: Any, want: Any) -> bool:
    if got == want and type(got) is type(want) or got != got and want != want:  # NaN is not NaN
        return True
    if isinstance(want, int) and isinstance(got, float) and got == want:
        return True
    if not isinstance(got, str) or isinstance(want, str):
        return False
    parsed = json.loads(got)  # a column of mixed types holds JSON text
    return parsed == want or parsed != parsed and want != want  # NaN


def both(kind: str, lines: list[bytes], read: int = READ, **settings: Any) -> Processor:
    proc = build_processor(kind, settings)
    where = BatchContext.of_chunk(RecordContext("h", "/s", "e", 0, "T", read), list(range(100, 100 + len(lines))))
    batch = proc.process_batch(pa.array(lines, pa.binary()), where)
    assert batch.fields.num_rows == len(lines) == len(batch.reasons)
    schema = proc.output_schema()
    if schema is not None:
        assert batch.fields.schema == schema
    for i, (line, row, reason) in enumerate(zip(lines, batch.fields.to_pylist(), batch.reasons.to_pylist(),
                                                strict=True)):
        try:
            expected, expected_reason = proc.process(line, where.record(i)), None
        except ParseError as exc:
            expected, expected_reason = None, exc.reason
        assert reason == expected_reason, line
        if reason is None:
            got, want = normal(row), normal(expected)
            assert got.keys() == want.keys(), line
            for k in want:
                assert same_value(got[k], want[k]), (line, k, got[k], want[k])
    return proc


@pytest.mark.parametrize("kind, lines, settings", [
    ("access", ACCESS, {}),
    ("raw", RAW, {}),
    ("raw", RAW, {"strict_utf8": True}),
    ("syslog", SYSLOG, {}),
    ("syslog", SYSLOG, {"require_pri": True}),
    ("json", JSON, {}),
    ("json", JSON, {"field": "doc"}),
    ("regex", APP, {"pattern": REGEX, "types": {"ms": "int"}}),
    ("regex", APP, {"pattern": REGEX, "types": {"ms": "float"}}),
    ("regex", APP, {"pattern": r"took (?P<ms>\d+)", "match": "search"}),
    ("regex", APP, {"pattern": r"(?P<a>\w+)(?=\s)(?P<b>.*)"}),  # look-ahead: RE2 refuses, all per record
])
def test_batch_equals_per_record(kind: str, lines: list[bytes], settings: dict) -> None:
    both(kind, lines, **settings)


@pytest.fixture(params=["compiled", "arrow-kernels"])
def batch_path(request, monkeypatch) -> str:
    """The syslog, access and json processors' two batch paths: their compiled pass (_columns.c) and the
    Arrow kernels (Arrow's JSON reader) that run where it is not built."""
    import jobs.processors.access as access
    import jobs.processors.json as json_processor
    import jobs.processors.syslog as syslog

    if request.param == "compiled" and syslog._compiled is None:
        pytest.skip("jobs/processors/_columns.c is not built")
    if request.param == "arrow-kernels":
        for module in (syslog, access, json_processor):
            monkeypatch.setattr(module, "_compiled", None)
    return request.param


def test_access_batch_paths_equal_per_record(batch_path: str) -> None:
    both("access", ACCESS)


_TOKEN = st.sampled_from(["1.2.3.4", "-", "frank", "\u00e9", "a[b", "x\"y", ""])
_ACCESS_LINES = st.tuples(
    _TOKEN, _TOKEN, _TOKEN,
    st.sampled_from(["24/Nov/2025:16:00:03 +0000", "29/Feb/2024:00:00:00 -0130", "29/Feb/2023:00:00:00 +0000",
                     "01/Jan/0000:00:00:00 +0000", "24/nov/2025:16:00:03 +0000", "24/Nov/2025:16:00:03", "x"]),
    st.sampled_from(["GET / HTTP/1.1", "GET /a", "get /", "GET a b c", "POST /x HTTP/", "", "M_-X /\u00e9 H/2.0",
                     "GET  /", "GET /\tHTTP/1.1"]),
    st.sampled_from(["200", "404", "20", "2000"]), st.sampled_from(["0", "-", "123456789012345678",
                                                                   "1234567890123456789", "5x"]),
    st.sampled_from(["", ' "-" "-"', ' "http://r/" "UA 1"', ' "r" "a" x', ' "r" "a"z', ' "r"', " extra words",
                     " -", " ", ' "r" "a" "b"', " x\ny", ' "" ""']),
).map(lambda t: f'{t[0]} {t[1]} {t[2]} [{t[3]}] "{t[4]}" {t[5]} {t[6]}{t[7]}'.encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_ACCESS_LINES, st.binary(max_size=40)), min_size=1, max_size=30))
def test_access_batch_paths_equal_per_record_on_generated_lines(batch_path: str, lines: list[bytes]) -> None:
    both("access", lines)


@pytest.mark.parametrize("settings", [{}, {"require_pri": True}])
@pytest.mark.parametrize("read", [READ, JAN])
def test_syslog_batch_paths_equal_per_record(batch_path: str, settings: dict, read: int) -> None:
    both("syslog", SYSLOG, read=read, **settings)


def test_json_batch_paths_equal_per_record(batch_path: str) -> None:
    both("json", JSON)


_JSON_EDGES = [
    b'{"a": 1}', b'{"a": "x"}', b'{"a": true}', b'{"a": 2.5}', b'{"a": null}', b'{"a": 1e400}', b'{"a": -0}',
    b'{"a": -0.0}', b'{"a": 123456789012345678}', b'{"a": 1234567890123456789}', b'{"a": 9007199254740993}',
    b'{"a": 0.1, "b": 1E+2, "c": 5e-324}', b'{"a": 01}', b'{"a": 1.}', b'{"a": .5}', b'{"a": -}', b'{"a": +1}',
    b'{"a": Infinity}', b'{"a": NaN}', rb'{"a": "\ud83d"}', rb'{"a": "\udc00x"}', rb'{"a": "\u00e9\n\/\b"}',
    rb'{"a": "\x"}', rb'{"a": "tab\there"}', b'{"a": "raw\ttab"}', rb'{"a": "\u00"}', rb'{"\u0061": 2}',
    rb'{"a": 1, "\u0061": 2}', b'{"a": 1,}', b'{,}', b'{"a" 1}', b'{"a": 1} x', b'\t{"a": 1}\r ', b' {} ',
    b'{"a": "\xed\xa0\x80"}', b'{"a": "caf\xc3\xa9"}', b'{"": 1}', b'{"a": [1]}', b'{"a": {}}',
    b'\xef\xbb\xbf{"a": 1}', b'{"a": 1}\x00', rb'{"a\u0000b": "\u0000"}', rb'{"a": "\ud83d\ude00"}',
    rb'{"a": "\uD83D\uDE00", "b": "\\"}', b'{"a": 1, "b": 2, "a": 3}', b'{"a":1}\n', b'{"a":"\x7f"}',
    b'{"a": 9223372036854775807}', b'{"a": "x", "a": "yy"}', rb'{"a": "\ud83dabcdefgh"}', b'{"a": "after"}',
]
#: Integers past int64: their column's type depends on the whole batch, which then goes per record.
_JSON_BIG = [b'{"a": 9223372036854775808}', b'{"a": -9223372036854775809}', b'{"a": 9999999999999999999}',
             b'{"a": 1}', b'{"a": "x"}']


@pytest.mark.parametrize("lines", [_JSON_EDGES, _JSON_EDGES[::-1], _JSON_BIG, _JSON_BIG[:4],
                                   [b'{"a": 1}', b'{"a": 2}', b'{"a": 2.5}'],
                                   [b'{"a": true}', b'{"a": 1}'], [b'{"a": 0.1}', b'{"a": "x"}', b'{"a": 1e400}']])
def test_json_batch_is_the_per_record_batch(batch_path: str, lines: list[bytes]) -> None:
    """Column by column, values and types: the batch path infers each column over the batch as the
    per-record path does (int and float as float, a mixed column as JSON text)."""
    exact("json", lines)


def exact(kind: str, lines: list[bytes]) -> None:
    proc = build_processor(kind)
    where = BatchContext.of_chunk(RecordContext("h", "/s", "e", 0, "T", READ), list(range(len(lines))))
    records = pa.array(lines, pa.binary())
    got, want = proc.process_batch(records, where), proc.process_each(records, where)
    assert got.reasons.to_pylist() == want.reasons.to_pylist()
    assert sorted(got.fields.schema.names) == sorted(want.fields.schema.names)
    for name in want.fields.schema.names:
        g, w = got.fields.column(name), want.fields.column(name)
        assert g.type == w.type, name
        assert [repr(v) for v in g.to_pylist()] == [repr(v) for v in w.to_pylist()], name  # -0.0 is not 0.0


_JSON_KEYS = st.sampled_from(["a", "b", "\u00e9", "c d", "", "\ud800"])
_JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1),
                         st.integers(-(10 ** 20), 10 ** 20), st.floats(allow_nan=False),
                         st.text(max_size=8), st.sampled_from([[1], {"x": 1}]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(
    st.dictionaries(_JSON_KEYS, _JSON_VALUES, max_size=4).map(
        lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.dictionaries(_JSON_KEYS, _JSON_VALUES, max_size=4).map(
        lambda d: json.dumps(d, separators=(",", ":")).encode()),
    st.sampled_from(_JSON_EDGES + _JSON_BIG), st.binary(max_size=20)), min_size=1, max_size=25))
def test_json_batch_paths_equal_per_record_on_generated_records(batch_path: str, rows: list[bytes]) -> None:
    exact("json", rows)


_NS = st.sampled_from(["a", "web-1", "x.y", "-", "\u00e9t\u00e9", "[", "]", ":", "a[1]", "a[]", "1", "\x1c"])
_SYSLOG_LINES = st.one_of(
    st.tuples(st.sampled_from(["", "<13>", "<191>", "<192>", "<0>", "<007>", "<1234>", "<x>", "\ufeff<13>"]),
              st.sampled_from(["1", "2", "01"]),
              st.sampled_from(["-", "2025-11-24T16:00:03Z", "2025-11-24T16:00:03.5+05:30", "2025-02-29T00:00:00Z",
                               "2024-02-29T23:59:59.000000-00:00", "2025-11-24T16:00:03.1234567Z",
                               "2025-11-24T24:00:00Z", "2025-11-24T16:00:03+24:00", "2025-11-24 16:00:03Z"]),
              _NS, _NS, _NS, _NS, st.sampled_from(["-", "- msg", "-x", "- \ufeffbom", "[a b=\"c\"] m", "- a\nb"]))
    .map(lambda t: f"{t[0]}{t[1]} {t[2]} {t[3]} {t[4]} {t[5]} {t[6]} {t[7]}"),
    st.tuples(st.sampled_from(["", "<34>", "<200>", "<"]),
              st.sampled_from(["Jan", "Feb", "Dec", "Foo", "jan"]), st.sampled_from([" 1", "29", "31", "00", "1 "]),
              st.sampled_from(["00:00:00", "23:59:59", "24:00:00", "1:00:00"]),
              _NS, st.sampled_from(["", " ", "\t"]), st.lists(_NS, max_size=4).map(" ".join),
              st.sampled_from(["", ": x", ":x", "[12]: y", ": ", " : z"]))
    .map(lambda t: f"{t[0]}{t[1]} {t[2]} {t[3]} {t[4]}{t[5]}{t[6]}{t[7]}"),
).map(lambda text: text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_SYSLOG_LINES, st.binary(max_size=40)), min_size=1, max_size=30),
       read=st.sampled_from([READ, JAN, 951_782_400_000]))  # 2000-02-29: a leap day's year
def test_syslog_batch_paths_equal_per_record_on_generated_lines(batch_path: str, lines: list[bytes],
                                                                read: int) -> None:
    both("syslog", lines, read=read)


def test_syslog_batch_of_a_sliced_array_with_nulls(batch_path: str) -> None:
    """An array that starts inside its buffers (a slice) and has null records: each row its own fields."""
    lines = [b"x", b"<13>Nov 24 16:00:01 web1 cron[1]: a", None, b"<165>1 2003-10-11T22:14:15Z h a p m - hi",
             b"Nov 24 16:00:01 web2 b"]
    arr = pa.array(lines, pa.binary()).slice(1)
    proc = build_processor("syslog")
    where = BatchContext.of_chunk(RecordContext("h", "/s", "e", 0, "T", READ), list(range(4)))
    batch = proc.process_batch(arr, where)
    rows = batch.fields.to_pylist()
    assert [r["host"] for r in rows] == ["web1", None, "h", "web2"]
    assert [r["app"] for r in rows] == ["cron", None, "a", None]
    assert rows[3]["message"] == "b" and rows[2]["time"] == "2003-10-11T22:14:15+00:00"
    assert batch.reasons.to_pylist()[1] is not None  # the null record: the per-record path's reason


def test_syslog_year_from_each_records_chunk() -> None:
    """RFC 3164 years come from each record's own chunk: a December line read in January is last year's."""
    both("syslog", SYSLOG, read=JAN)
    proc = build_processor("syslog")
    chunks = [RecordContext("h", "/s", "e", 0, "T", READ), RecordContext("h", "/s", "e", 0, "T", JAN)]
    where = BatchContext("T", chunks, pa.array([0, 1], pa.int32()), pa.array([0, 50], pa.int64()))
    batch = proc.process_batch(pa.array([b"Dec 31 23:59:59 h x: y"] * 2, pa.binary()), where)
    assert batch.fields.column("time").to_pylist() == ["2025-12-31T23:59:59", "2025-12-31T23:59:59"]
    batch = proc.process_batch(pa.array([b"Jan  1 00:00:00 h x: y"] * 2, pa.binary()), where)
    assert batch.fields.column("time").to_pylist() == ["2025-01-01T00:00:00", "2026-01-01T00:00:00"]


class _Counting:
    """Counts per-record calls, to show the common forms never take the per-record path."""

    calls = 0

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        type(self).calls += 1
        return super().process(record, where)  # type: ignore[misc]


@pytest.mark.parametrize("kind, lines, settings", [
    ("syslog", [b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed", b"Nov  4 06:25:01 web1 CRON[9]: x",
                b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 - hi"], {}),
    ("json", [b'{"a": 1, "b": "x", "t": "2025-11-24T16:00:00Z"}', b' {"a": 2.5, "c": false}\t'], {}),
    ("regex", [b"2025-11-24 16:00:00.001 INFO [main] Started took 123 ms"],
     {"pattern": REGEX, "types": {"ms": "int"}}),
    ("access", ACCESS[:3], {}),
])
def test_common_forms_are_vectorized(kind: str, lines: list[bytes], settings: dict) -> None:
    from logflume.registry import resolve

    cls = type("Counting", (_Counting, resolve("processor", kind)), {"calls": 0})
    proc = cls("p", build_processor(kind, settings).config, build_processor(kind, settings).context)
    where = BatchContext.of_chunk(RecordContext("h", "/s", "e", 0, "T", READ), list(range(len(lines))))
    batch = proc.process_batch(pa.array(lines * 50, pa.binary()), BatchContext(
        "T", where.chunks, pa.array([0] * len(lines) * 50, pa.int32()), pa.array(range(len(lines) * 50), pa.int64())))
    assert batch.reasons.null_count == len(lines) * 50
    assert cls.calls == 0


def test_per_record_plugins_get_the_batch_api() -> None:
    """A processor with only process() is driven through process_batch, one reason per rejected record."""

    class Words(Processor):
        def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
            if not record:
                raise ParseError("empty")
            if record == b"boom":
                raise RuntimeError("bug")
            return {"words": len(record.split()), "offset": where.offset}

    raw = build_processor("raw")
    proc = Words("w", raw.config, raw.context)
    where = BatchContext.of_chunk(RecordContext("h", "/s", "e", 0, "T", READ), [7, 9, 11])
    batch = proc.process_batch(pa.array([b"a b", b"", b"boom"], pa.binary()), where)
    assert batch.fields.to_pylist()[0] == {"words": 2, "offset": 7}
    assert batch.reasons.to_pylist()[:2] == [None, "empty"]
    assert "RuntimeError('bug')" in batch.reasons[2].as_py()


def test_access_usual_shapes_skip_the_capturing_patterns() -> None:
    """Common and combined lines are cut by splits; only the rest goes through RE2's (slow) capturing path."""
    from jobs.processors.access import AccessLogProcessor

    taken: list[int] = []

    class Counting(AccessLogProcessor):
        def _regex_batch(self, text):  # type: ignore[no-untyped-def]
            taken.append(len(text))
            return super()._regex_batch(text)

    base = build_processor("access")
    proc = Counting("a", base.config, base.context)
    lines = ACCESS[:2] * 100 + [ACCESS[2]]  # the third has a backslash: capturing path
    where = BatchContext.of_chunk(RecordContext("h", "/s", "e", 0, "T", READ), list(range(len(lines))))
    batch = proc.process_batch(pa.array(lines, pa.binary()), where)
    assert batch.reasons.null_count == len(lines) and taken == [1]


def test_json_batch_too_big_for_the_compiled_pass_takes_the_reader_path(monkeypatch) -> None:
    """Over 2 GiB of text in one column, the compiled pass refuses (OverflowError): Arrow's reader does the batch."""
    import jobs.processors.json as json_processor

    if json_processor._compiled is None:
        pytest.skip("jobs/processors/_columns.c is not built")

    class TooBig:
        def json(self, *args: Any) -> Any:
            raise OverflowError("a JSON column of more than 2 GiB")

    monkeypatch.setattr(json_processor, "_compiled", TooBig())
    exact("json", [b'{"a": 1, "b": "x"}', b'{"a": 2.5}', b"not json"])
