"""http source: real HTTP clients, 200 only after commit, 429 when full, 4xx for bad input."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time

import pytest

from logflume.component import Context
from logflume.errors import ConfigError
from logflume.topology import build_topology
from tests.conftest import free_port, wait_for
from tests.sources.pipeline import metric, pipeline
from tests.sources.test_http_lines import ODD_LINES

pytestmark = pytest.mark.timeout(120)
AUTH = {"Authorization": "Bearer s3cret"}


def http_source(port: int, **extra) -> dict:
    return {"type": "http", "listen": f"127.0.0.1:{port}", "tokens": ["s3cret", "other"], **extra}


def post(port: int, path: str, body: bytes, headers: dict | None = None, timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    finally:
        conn.close()


def test_ndjson_lines_and_gzip_arrive(tmp_path):
    port = free_port()
    with pipeline(tmp_path, http_source(port)) as agent:
        sink = agent.sinks["out"]
        body = b"".join(json.dumps({"i": i, "msg": "ok"}).encode() + b"\n" for i in range(1000))
        assert post(port, "/app/web", body, AUTH)[:2] == (200, {"accepted": 1000})
        gz = gzip.compress(b'{"z": 1}\r\n\n{"z": 2}')  # CRLF, a blank line, no final newline
        status, reply, _ = post(port, "/app/gz", gz, {**AUTH, "Content-Encoding": "gzip"})
        assert (status, reply) == (200, {"accepted": 2})
        wait_for(lambda: len(sink.records()) >= 1002, 10)
        assert [json.loads(r)["i"] for r in sink.records("http:app/web")] == list(range(1000))
        assert [json.loads(r) for r in sink.records("http:app/gz")] == [{"z": 1}, {"z": 2}]
        assert {c.datatype for c in sink.chunks} == {"JSON"}
        assert metric(agent, "records_in") == 1002


def test_200_means_committed(tmp_path):
    """The answer comes after the channel commit: when 200 arrives the records are already in the channel."""
    port = free_port()
    gate = tmp_path / "gate"
    with pipeline(tmp_path, http_source(port), gate=gate) as agent:
        channel = agent.channels["ch"]
        assert post(port, "/s", b'{"n": 1}\n', AUTH)[0] == 200
        wait_for(lambda: channel.size_chunks() == 0, 5)  # the gated sink took it and holds it
        time.sleep(0.3)  # past its batch_timeout: it is blocked in deliver, taking nothing more
        for n in range(2, 6):
            assert post(port, "/s", b'{"n": %d}\n' % n, AUTH)[0] == 200
            # Checked right after the answer, without waiting: the request's chunk is already committed.
            assert channel.size_chunks() == n - 1


def test_stream_from_header_and_raw_lines(tmp_path):
    port = free_port()
    src = http_source(port, format="lines", stream_from="header", stream_header="X-Stream", stream_prefix="")
    with pipeline(tmp_path, src) as agent:
        sink = agent.sinks["out"]
        assert post(port, "/ignored", b"plain text line\nnot json {\n", {**AUTH, "X-Stream": "app1"})[0] == 200
        status, reply, _ = post(port, "/x", b"line\n", AUTH)
        assert status == 400 and "missing header X-Stream" in reply["error"]
        wait_for(lambda: len(sink.records()) >= 2, 5)
        assert sink.records("app1") == [b"plain text line", b"not json {"]
        assert {c.datatype for c in sink.chunks} == {"Raw"}


def test_client_errors(tmp_path):
    port = free_port()
    with pipeline(tmp_path, http_source(port, max_body_size="64KiB")) as agent:
        sink = agent.sinks["out"]
        assert post(port, "/a", b'{"a":1}\n')[0] == 401
        assert post(port, "/a", b'{"a":1}\n', {"Authorization": "Bearer wrong"})[0] == 401
        assert post(port, "/a", b'{"a":1}\n', {"Authorization": "Bearer other"})[0] == 200
        status, reply, _ = post(port, "/a", b'{"a":1}\n{"b": \n', AUTH)
        assert status == 400 and reply["error"].startswith("line 2: not JSON")
        status, reply, _ = post(port, "/a", b"not gzip", {**AUTH, "Content-Encoding": "gzip"})
        assert status == 400 and "bad gzip" in reply["error"]
        status, reply, _ = post(port, "/a", b"x", {**AUTH, "Content-Encoding": "br"})
        assert status == 400 and "unsupported Content-Encoding" in reply["error"]
        assert post(port, "/a", b"x" * (65 << 10), AUTH)[0] == 413
        bomb = gzip.compress(b"{}\n" * (1 << 20))
        status, reply, _ = post(port, "/a", bomb, {**AUTH, "Content-Encoding": "gzip"})
        assert status == 413 and "after gunzip" in reply["error"]
        # No Content-Length (chunked upload): 411.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", "/a")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Authorization", "Bearer s3cret")
        conn.endheaders()
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 411
        conn.close()
        # A huge Content-Length is refused before anything is read.
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999\r\nAuthorization: Bearer s3cret\r\n\r\n"
                        + b"{}" * 1000)
            raw.settimeout(10)
            assert raw.recv(100).startswith(b"HTTP/1.1 413")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        time.sleep(0.3)
        assert sink.records() == [b'{"a":1}']  # only the one good request went through


def test_429_with_retry_after_when_channel_full(tmp_path):
    port = free_port()
    gate = tmp_path / "gate"
    src = http_source(port, full_wait="300ms", retry_after=2, chunk_size="4KiB")
    line = json.dumps({"pad": "x" * 3000}).encode() + b"\n"
    with pipeline(tmp_path, src, capacity="8KiB", gate=gate) as agent:
        sink = agent.sinks["out"]
        statuses = []
        # Fill the channel (the gated sink holds what it takes), then one request waits for room...
        for _ in range(2):  # ~3 KB each: one held by the gated sink, one queued
            statuses.append(post(port, "/fill", line, AUTH)[0])
        assert statuses == [200, 200]
        # ... and a request that finds no room within full_wait is told to come back later.
        t0 = time.monotonic()
        status, reply, headers = post(port, "/later", line, AUTH)
        assert status == 429, (status, reply)
        assert time.monotonic() - t0 >= 0.25, "it waited full_wait for room first"
        assert headers["Retry-After"] == "2"
        gate.touch()
        # once the sink drains, the client's retry is accepted
        wait_for(lambda: post(port, "/later", line, AUTH)[0] == 200, 10)
        wait_for(lambda: len(sink.records()) >= 3, 10)
        assert sorted({c.stream for c in sink.chunks}) == ["http:fill", "http:later"]
        assert len(sink.records("http:later")) == 1  # the 429'd body was not taken
        assert len(sink.records()) == 3


def test_slow_and_silent_clients_do_not_block_others(tmp_path):
    port = free_port()
    with pipeline(tmp_path, http_source(port, read_timeout="1s")) as agent:
        sink = agent.sinks["out"]
        silent = socket.create_connection(("127.0.0.1", port))
        silent.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 100\r\nAuthorization: Bearer s3cret\r\n\r\n{")
        assert post(port, "/fast", b'{"ok": 1}\n', AUTH)[0] == 200
        silent.settimeout(5)
        assert silent.recv(100) == b""  # dropped after read_timeout, nothing accepted
        silent.close()
        wait_for(lambda: sink.records() == [b'{"ok": 1}'], 5)


def test_config_error(tmp_path):
    raw = {"sources": {"src": {"type": "http", "format": "xml", "channels": ["ch"]}},
           "channels": {"ch": {"type": "memory"}}, "sinks": {"out": {"type": "null", "channel": "ch"}}}
    with pytest.raises(ConfigError, match="sources.src.format: expected one of ndjson, lines"):
        build_topology(raw, "agent.yaml", Context(data_dir=tmp_path))


def test_ndjson_lines_are_kept_exactly_when_the_standard_library_parses_them(tmp_path):
    """orjson checks first, json.loads decides what it refuses: one POST per edge line, answered as before."""
    port = free_port()
    with pipeline(tmp_path, http_source(port)) as agent:
        sink = agent.sinks["out"]
        expected = []
        for line in ODD_LINES:
            try:
                json.loads(line.strip())
                ok = True
            except ValueError:
                ok = not line.strip()  # a blank line is skipped, not refused
            status = post(port, "/edge", b"x\n".replace(b"x", line), AUTH)[0]
            assert status == (200 if ok else 400), (line, status)
            if ok and line.strip():
                expected.append(line)
        wait_for(lambda: len(sink.records()) >= len(expected), 10)
        assert sink.records() == expected
