"""forward source: fluent-logger as the real client, every Forward mode, acks after commit, hostile input."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import msgpack
import pytest
from fluent import asyncsender, sender
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.forward.protocol import _jsonable, event_json
from logflume.component import Context
from logflume.errors import ConfigError
from logflume.topology import build_topology
from tests.conftest import free_port, wait_for
from tests.sources.conftest import rss_bytes
from tests.sources.pipeline import metric, pipeline

pytestmark = pytest.mark.timeout(120)


def forward(port: int, **extra) -> dict:
    return {"type": "forward", "listen": f"127.0.0.1:{port}", "flush_interval": "50ms", **extra}


def events(sink, stream: str) -> list[dict]:
    return [json.loads(r) for r in sink.records(stream)]


@pytest.mark.parametrize("nanos", [False, True], ids=["int-time", "event-time"])
def test_fluent_logger_events_all_arrive(tmp_path, nanos):
    port = free_port()
    with pipeline(tmp_path, forward(port)) as agent:
        sink = agent.sinks["out"]
        client = sender.FluentSender("app", host="127.0.0.1", port=port, nanosecond_precision=nanos)
        t0 = time.time()
        for i in range(500):
            assert client.emit("web", {"i": i, "msg": "héllo", "nested": {"a": [1, 2]}}), client.last_error
        client.close()
        wait_for(lambda: len(sink.records()) >= 500, 15)
        got = events(sink, "app.web")
        assert [e["i"] for e in got] == list(range(500))
        assert got[0]["msg"] == "héllo" and got[0]["nested"] == {"a": [1, 2]}
        assert abs(got[0]["time"] - t0) < 5
        assert isinstance(got[0]["time"], float) == nanos
        assert {c.datatype for c in sink.chunks} == {"JSON"}
        assert metric(agent, "events_in") == 500


def test_a_source_that_keeps_up_sends_within_caught_up_flush_not_flush_interval(tmp_path):
    port = free_port()
    with pipeline(tmp_path, forward(port, flush_interval="60s")) as agent:  # caught_up_flush: its default
        sink = agent.sinks["out"]
        client = sender.FluentSender("app", host="127.0.0.1", port=port)
        try:
            assert client.emit("web", {"i": 1}), client.last_error
            # Far inside the 60 s flush_interval even on a loaded machine; the connection stays open.
            wait_for(lambda: len(sink.records()) >= 1, 20, message="the event at the sink")
        finally:
            client.close()
        assert [e["i"] for e in events(sink, "app.web")] == [1]


def test_fluent_logger_async_sender_and_many_tags(tmp_path):
    port = free_port()
    with pipeline(tmp_path, forward(port, stream="fluent:{tag}")) as agent:
        sink = agent.sinks["out"]
        client = asyncsender.FluentSender("svc", host="127.0.0.1", port=port)
        for i in range(300):
            client.emit(f"t{i % 3}", {"n": i})
        client.close()
        wait_for(lambda: len(sink.records()) >= 300, 15)
        assert {c.stream for c in sink.chunks} == {"fluent:svc.t0", "fluent:svc.t1", "fluent:svc.t2"}
        assert [e["n"] for e in events(sink, "fluent:svc.t1")] == list(range(1, 300, 3))


def _send_and_ack(s: socket.socket, message: list, chunk: str) -> dict:
    s.sendall(msgpack.packb(message, use_bin_type=True))
    unpacker = msgpack.Unpacker(raw=False)
    s.settimeout(10)
    while True:
        unpacker.feed(s.recv(4096))
        for obj in unpacker:
            return obj


def test_every_mode_with_ack(tmp_path):
    port = free_port()
    now = int(time.time())
    event_time = msgpack.ExtType(0, (now).to_bytes(4, "big") + (123456789).to_bytes(4, "big"))
    entries = b"".join(msgpack.packb([now, {"k": j}]) for j in range(5))
    with pipeline(tmp_path, forward(port)) as agent:
        sink = agent.sinks["out"]
        with socket.create_connection(("127.0.0.1", port)) as s:
            assert _send_and_ack(s, ["message", event_time, {"m": 1}, {"chunk": "c1"}], "c1") == {"ack": "c1"}
            assert _send_and_ack(s, ["forward", [[now, {"f": 1}], [now, {"f": 2}]], {"chunk": "c2"}], "c2") \
                == {"ack": "c2"}
            assert _send_and_ack(s, ["packed", entries, {"chunk": "c3", "size": 5}], "c3") == {"ack": "c3"}
            gz = gzip.compress(entries[:len(entries) // 2]) + gzip.compress(entries[len(entries) // 2:])
            assert _send_and_ack(s, ["gz", gz, {"chunk": "c4", "compressed": "gzip"}], "c4") == {"ack": "c4"}
            # Fluent Bit 2.1+ entries: [[time, metadata], record].
            assert _send_and_ack(s, ["fb2", [[[event_time, {"otel": 1}], {"v": 2}]], {"chunk": "c5"}], "c5") \
                == {"ack": "c5"}
            # The packed entries as str (old clients) work too.
            s.sendall(msgpack.packb(["oldpacked", entries.decode("latin-1").encode("latin-1"), {}],
                                    use_bin_type=False))
        wait_for(lambda: len(sink.records()) >= 19, 10)
        msg = events(sink, "message")
        assert msg == [{"time": pytest.approx(now + 0.123456789), "m": 1}]
        assert [e["f"] for e in events(sink, "forward")] == [1, 2]
        assert [e["k"] for e in events(sink, "packed")] == list(range(5))
        assert [e["k"] for e in events(sink, "gz")] == list(range(5))
        assert [e["k"] for e in events(sink, "oldpacked")] == list(range(5))
        assert events(sink, "fb2") == [{"time": pytest.approx(now + 0.123456789), "v": 2}]
        assert metric(agent, "acks_sent") == 5


def test_no_ack_until_commit(tmp_path):
    """With the channel full, a message asking for an ack gets none until its records are committed."""
    port = free_port()
    gate = tmp_path / "gate"
    with pipeline(tmp_path, forward(port, chunk_size="4KiB"), capacity="8KiB", gate=gate) as agent:
        sink = agent.sinks["out"]
        channel = agent.channels["ch"]
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(10)
            fill = [[int(time.time()), {"pad": "x" * 1000, "n": i}] for i in range(6)]
            assert _send_and_ack(s, ["fill", fill, {"chunk": "first"}], "first") == {"ack": "first"}
            # The sink holds what it took; the next batch cannot fit: no ack may come.
            s.sendall(msgpack.packb(["wait", [[int(time.time()), {"pad": "y" * 3000}]] * 4, {"chunk": "second"}]))
            s.settimeout(1.5)
            with pytest.raises(TimeoutError):
                s.recv(100)
            assert not any(c.stream == "wait" for c in sink.chunks)
            gate.touch()
            s.settimeout(10)
            assert msgpack.unpackb(s.recv(100)) == {"ack": "second"}
            # The ack came only after the commit: the records are in the channel or already past it.
            committed = [c for c in sink.chunks if c.stream == "wait"]
            in_channel = channel.size_bytes()
            assert committed or in_channel > 0
        wait_for(lambda: len(sink.records("wait")) == 4, 10)


def test_backpressure_blocks_the_client(tmp_path):
    """Without acks, a full channel stops the reads: the client's sends stall, then everything arrives."""
    port = free_port()
    gate = tmp_path / "gate"
    payload = b"".join(msgpack.packb(["bp", int(time.time()), {"n": i, "pad": "p" * 150}]) for i in range(100_000))
    with pipeline(tmp_path, forward(port, chunk_size="4KiB"), capacity="64KiB", gate=gate) as agent:
        sink = agent.sinks["out"]
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sent, stalled = 0, None
        while sent < len(payload):
            try:
                sent += s.send(payload[sent:sent + 65536])
                stalled = None
            except BlockingIOError:
                stalled = stalled or time.monotonic()
                if time.monotonic() - stalled > 1.5:
                    break
                time.sleep(0.01)
        assert sent < len(payload) // 2
        gate.touch()
        s.setblocking(True)
        s.settimeout(60)
        s.sendall(payload[sent:])
        s.close()
        wait_for(lambda: len(sink.records("bp")) >= 100_000, 60)
        assert [e["n"] for e in events(sink, "bp")] == list(range(100_000))


def test_hostile_input(tmp_path):
    port = free_port()
    with pipeline(tmp_path, forward(port, max_message_size="1MiB")) as agent:
        sink = agent.sinks["out"]
        before = rss_bytes()

        def closed_by_source(data: bytes) -> bool:
            with socket.create_connection(("127.0.0.1", port)) as s:
                try:
                    s.sendall(data)
                    s.settimeout(10)
                    return s.recv(10) == b""
                except (ConnectionResetError, BrokenPipeError):
                    return True

        # Garbage that is not msgpack at all (0xc1 is never used).
        assert closed_by_source(b"\xc1" * 100)
        # A huge length prefix (bin32 of 4 GiB): buffered only up to max_message_size, then refused.
        assert closed_by_source(b"\xc6\xff\xff\xff\xff" + b"a" * (2 << 20))
        # A message past max_message_size: streamed in, refused at the limit.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"\xc6" + (50 << 20).to_bytes(4, "big"))
            try:
                for _ in range(50):
                    s.sendall(b"b" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass
        # Well-formed msgpack, wrong shape; a gzip bomb.
        assert closed_by_source(msgpack.packb({"not": "an array"}))
        bomb = gzip.compress(b"\x00" * (20 << 20))
        assert closed_by_source(msgpack.packb(["bomb", bomb, {"compressed": "gzip"}]))
        assert rss_bytes() - before < 40 << 20
        wait_for(lambda: metric(agent, "protocol_errors") >= 5, 5)
        # A slow sender trickling one message does not hold up a normal one.
        slow = socket.create_connection(("127.0.0.1", port))
        data = msgpack.packb(["slow", 1, {"a": 1}])
        t = threading.Thread(target=lambda: [slow.sendall(data[i:i + 1]) or time.sleep(0.05)
                                             for i in range(len(data))])
        t.start()
        client = sender.FluentSender("ok", host="127.0.0.1", port=port)
        assert client.emit("x", {"fine": True})
        client.close()
        wait_for(lambda: sink.records("ok.x"), 5)
        t.join(10)
        slow.close()
        wait_for(lambda: sink.records("slow"), 5)
        # The server sees the closed connection shortly after (its records may arrive first).
        wait_for(lambda: agent.sources["src"]._listener.connections == 0, 5, message="no connection left")


def test_config_errors(tmp_path):
    raw = {"sources": {"src": {"type": "forward", "stream": "{host}", "channels": ["ch"]}},
           "channels": {"ch": {"type": "memory"}}, "sinks": {"out": {"type": "null", "channel": "ch"}}}
    with pytest.raises(ConfigError, match=r"sources.src.stream: unknown field; expected only \{tag\}"):
        build_topology(raw, "agent.yaml", Context(data_dir=tmp_path))


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text() | st.binary(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12))
def test_event_json_says_what_the_standard_library_says(record):
    """orjson encodes events now: the same JSON values as ``json.dumps`` (the encoder before it)."""
    line = event_json(1767225600.25, record, "time")
    wrapped = record if isinstance(record, dict) else {"message": record}
    before = json.dumps({"time": 1767225600.25, **wrapped} if "time" not in wrapped else wrapped,
                        ensure_ascii=False, separators=(",", ":"), default=_jsonable)
    assert json.loads(line) == json.loads(before)


def test_event_json_falls_back_for_what_orjson_refuses():
    """Invalid UTF-8 kept as surrogates, keys that are not strings, integers past 64 bits: as before."""
    raw = msgpack.unpackb(msgpack.packb({"msg": b"caf\xe9 \xff"}, use_bin_type=False), raw=False,
                          unicode_errors="surrogateescape")
    assert event_json(1.0, raw, None) == b'{"msg":"caf\xe9 \xff"}'  # the original bytes, as received
    assert event_json(1.0, {1: "a", None: 2}, None) == b'{"1":"a","null":2}'
    assert event_json(1.0, {"n": 1 << 70}, None) == b'{"n":%d}' % (1 << 70)
    assert event_json(1.0, {"v": float("nan")}, None) == b'{"v":null}'  # JSON has no NaN


def test_a_map_keyed_by_an_array_drops_the_connection_as_bad_input(tmp_path):
    """msgpack raises TypeError (unhashable key), not ValueError: it must count as a protocol error like
    any other bad input, in a message and in packed entries alike, and keep what came before it."""
    port = free_port()
    with pipeline(tmp_path, forward(port)) as agent:
        sink = agent.sinks["out"]
        good = msgpack.packb(["app.ok", 1, {"i": 1}])
        for bad in (b"\x93\xa3tag\x01\x81\x91\x01\x02",  # [tag, 1, {[1]: 2}]
                    msgpack.packb(["app.bad", b"\x92\x01\x81\x91\x01\x02"], use_bin_type=True)):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(good + bad)
                s.settimeout(10)
                assert s.recv(1) == b"", "the connection is dropped"
        wait_for(lambda: metric(agent, "protocol_errors") == 2, 10)
        wait_for(lambda: len(sink.records()) >= 2, 10)
        assert [json.loads(r)["i"] for r in sink.records()] == [1, 1]
