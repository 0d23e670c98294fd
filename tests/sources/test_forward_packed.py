"""The forward source's compiled PackedForward transcoder (_packed.c) against the Python path.

Where it takes a message, every line must be the JSON value ``event_json`` gives for that event
(floats may be written differently: repr's ``1e-07`` against orjson's ``1e-7``; strings, integers and
key order byte for byte); where it does not, it must say so (None) and leave the message to the
Python path, which decides, raising ProtocolError for what is malformed.
"""

from __future__ import annotations

import json
import math
import struct

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.sources.forward import protocol
from agent.sources.forward.protocol import Budget, ProtocolError, container_budget, decode_message, event_json

transcode = protocol.transcode
needs_build = pytest.mark.skipif(transcode is None, reason="_packed.c not built (or LOGFLUME_PURE_PYTHON=1)")
MAX = 1 << 20


def event_time(sec: int, nsec: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", sec, nsec))


def nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


def python_path(blob: bytes, time_key: str | None) -> list[bytes] | str:
    """What the source makes of a PackedForward message without the transcoder: lines, or the error."""
    budget = Budget(container_budget(MAX))
    msg = decode_message(["tag", blob], MAX, budget)
    try:
        return [event_json(t, r, time_key) + b"\n" for t, r in msg.events]
    except ProtocolError as exc:
        return f"ProtocolError: {exc}"


def compiled_path(blob: bytes, time_key: str | None, budget: int | None = None) -> list[bytes] | None:
    out = transcode(blob, time_key, container_budget(MAX) - 1 if budget is None else budget)
    if out is None:
        return None
    records, ends = out
    return [records[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)]


def has_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    return isinstance(value, list) and any(has_float(v) for v in value)


def same_json(line: bytes, expected: bytes) -> bool:
    """Equal JSON values (NaN never reaches here: the transcoder leaves it to the Python path)."""
    return json.loads(line) == json.loads(expected)


scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["", "é", "\u2028", "\x00\x1f\x7f", '"\\', "a\nb\tc\r\x08\x0c"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=15)
times = (st.integers(0, (1 << 32) - 1) | st.floats(0, 4e9)
         | st.builds(event_time, st.integers(0, (1 << 32) - 1), st.integers(0, 999_999_999)))
#: What the Python path decodes and drops (an entry's time metadata, elements past [time, record]): any
#: msgpack, bin and ext of every length class included; the transcoder skips it without writing it.
int64 = st.integers(-(1 << 63), (1 << 63) - 1)
dropped = st.recursive(
    scalars | st.binary(max_size=300) | st.text(min_size=32, max_size=300)
    | st.builds(msgpack.ExtType, st.integers(1, 127), st.binary(max_size=20)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | int64, inner, max_size=3),
    max_leaves=8)
entries = st.builds(
    lambda t, record, extra: (t, record, *extra),
    times | st.builds(lambda t, m: [t, m], times, dropped),
    values | st.dictionaries(st.sampled_from(["time", "message", "log", "k"]), values, max_size=4),
    st.lists(dropped, max_size=2))


@needs_build
@settings(max_examples=400, deadline=None)
@given(st.lists(entries, max_size=6), st.sampled_from(["time", "message", None, "@t"]))
@example([(event_time(1767225600, 5), {"message": "x", "n": 0})], "time")
@example([(1767225600, "not a map")], "message")
def test_the_transcoder_writes_what_event_json_writes(events, time_key):
    blob = b"".join(msgpack.packb(list(e), use_bin_type=True) for e in events)
    expected = python_path(blob, time_key)
    got = compiled_path(blob, time_key)
    assert got is not None, f"not taken: {events!r}"
    assert isinstance(expected, list) and len(got) == len(expected)
    for line, want in zip(got, expected, strict=True):
        assert same_json(line, want), (line, want)
        if not has_float(json.loads(want)):  # byte for byte
            assert line == want


@needs_build
@pytest.mark.parametrize("entry, why", [
    ([1, {"b": b"\xff"}], "bin value"),
    ([1, {1: "int key"}], "key not a string"),
    ([1, {"x": msgpack.ExtType(5, b"ab")}], "ext other than EventTime"),
    ([1, {"f": math.nan}], "NaN"),
    ([True, {}], "bool time"),
    (["1", {}], "string time"),
    ([1], "entry of one element"),
    ({"not": "an entry"}, "entry not an array"),
    ([[], {}], "empty time array"),
    ([[1, {(1, 2): 3}], {}], "metadata map keyed by an array: the Python path fails on it"),
    ([1, {"d": nested(70)}], "nested past MAX_DEPTH"),
    ([1, {f"k{i}": i for i in range(65)}], "more keys than MAX_KEYS"),
])
def test_what_the_transcoder_does_not_take_goes_to_the_python_path(entry, why):
    blob = msgpack.packb([1, {"ok": 1}], use_bin_type=True) + msgpack.packb(entry, use_bin_type=True)
    assert compiled_path(blob, "time") is None, why
    python_path(blob, "time")  # the Python path decides: lines or a ProtocolError, never another exception


@needs_build
def test_duplicate_keys_and_invalid_utf8_are_as_the_python_path_makes_them():
    blob = b"\x92\x01" + b"\x82\xa1a\x01\xa1a\x02"  # [1, {"a": 1, "a": 2}]
    assert compiled_path(blob, "time") is None  # a dict keeps the last value: the Python path decides
    assert python_path(blob, "time") == [b'{"time":1,"a":2}\n']
    raw = b"\x92\x01\x81\xa3msg\xa6caf\xe9 \xff"  # a str of invalid UTF-8: its bytes are kept as received
    assert compiled_path(raw, "time") == python_path(raw, "time") == [b'{"time":1,"msg":"caf\xe9 \xff"}\n']


@needs_build
@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_malformed_bytes_are_refused_or_decoded_as_the_python_path_decodes_them(blob):
    got = compiled_path(blob, "time")
    if got is not None:
        expected = python_path(blob, "time")
        assert isinstance(expected, list) and len(expected) == len(got)
        assert all(same_json(a, b) for a, b in zip(got, expected, strict=True))


@needs_build
def test_lying_lengths_and_the_container_budget_are_refused_in_bounded_time():
    liar = b"\x92\x01\xdf\xff\xff\xff\xff"  # a map of 4 billion entries in 7 bytes
    assert compiled_path(liar, "time") is None
    many = b"".join(msgpack.packb([1, {"a": [[]] * 10}]) for _ in range(10))  # 13 containers an entry
    assert compiled_path(many, "time", budget=130) is not None
    assert compiled_path(many, "time", budget=129) is None
    budget = Budget(129)
    msg = decode_message(["tag", many], MAX, budget)
    with pytest.raises(ProtocolError, match="more than 129"):
        list(msg.events)
