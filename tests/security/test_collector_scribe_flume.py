"""H4: the Scribe and Flume endpoints authenticate (a token, or a client certificate over TLS) when the
collector has credentials, record who sent what, and never listen beyond loopback open to everyone.

Before the fix both endpoints took anything from anyone: a forged Scribe message was stored.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct

import pytest
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.protocol.compact import TCompactProtocol
from thriftpy2.thrift import TMessageType
from thriftpy2.transport.memory import TMemoryBuffer

from logflume.wire.idl import flume_thrift, scribe_thrift
from tests.fuzz.collector_proc import CollectorProcess, Cost, stored_chunks
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(180)

APP = "c4e8a1f5b9d3e7a2c6f0b4d8e2a6c0f4"


def framed(proto_cls, name: str, args) -> bytes:
    buf = TMemoryBuffer()
    proto = proto_cls(buf)
    proto.write_message_begin(name, TMessageType.CALL, 1)
    args.write(proto)
    proto.write_message_end()
    raw = buf.getvalue()
    return struct.pack(">i", len(raw)) + raw


def scribe_log(category: str, message: str) -> bytes:
    entry = scribe_thrift.LogEntry(category=category, message=message)
    return framed(TBinaryProtocol, "Log", scribe_thrift.scribe.Log_args(messages=[entry]))


def flume_batch(headers: dict[str, str], body: bytes) -> bytes:
    event = flume_thrift.ThriftFlumeEvent(headers=headers, body=body)
    return framed(TCompactProtocol, "appendBatch", flume_thrift.ThriftSourceProtocol.appendBatch_args(events=[event]))


def call(sock: socket.socket, frame: bytes) -> bytes | None:
    """Send one framed call; the reply frame, or None when the collector closed the connection."""
    sock.sendall(frame)
    try:
        size = sock.recv(4)
        if len(size) < 4:
            return None
        want, got = struct.unpack(">i", size)[0], b""
        while len(got) < want:
            more = sock.recv(want - len(got))
            if not more:
                return None
            got += more
        return got
    except OSError:
        return None


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
def collector(tmp_path, pki):
    (tmp_path / "c").mkdir()
    coll = CollectorProcess(tmp_path / "c", extra=(
        f"  tls: {{cert: {pki.server_cert}, key: {pki.server_key}, client_ca: {pki.ca}}}\n"
        "  scribe_tls: true\n"
        f"  identities:\n"
        f"    app: {{token: {APP}, sources: [none]}}\n"
        f"    agent-cert: {{certificate: agent, sources: [none]}}\n"))
    coll.start()
    yield coll
    if coll.alive():
        coll.stop()


def scribe_tls(port: int, pki, with_cert: bool) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=pki.ca)
    if with_cert:
        ctx.load_cert_chain(pki.client_cert, pki.client_key)  # subject CN "agent"
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10), server_hostname="127.0.0.1")


def test_scribe_and_flume_need_credentials_and_record_the_sender(collector, pki):
    scribe = collector.ports["scribe"]
    with Cost(collector) as cost:
        with scribe_tls(scribe, pki, with_cert=False) as s:
            forged = call(s, scribe_log("app", "forged line\n"))
        with socket.create_connection(("127.0.0.1", collector.ports["flume"]), 10) as s:
            forged_flume = call(s, flume_batch({"h": "v"}, b"forged event\n"))
        with scribe_tls(scribe, pki, with_cert=False) as s:
            guessed = call(s, scribe_log("guess:app", "forged line\n"))
    print(f"forged Scribe/Flume calls: {forged!r} {forged_flume!r} {guessed!r}; {cost}")
    assert forged is None and forged_flume is None and guessed is None  # closed, nothing answered
    assert cost.peak_growth_mib < 16 and cost.seconds < 10, cost
    log = collector.log()
    assert "refusing" in log and "missing logflume-token header" in log and "unknown token" in log
    with scribe_tls(scribe, pki, with_cert=False) as s:
        assert call(s, scribe_log(f"{APP}:app", "real line\n")) is not None
    with scribe_tls(scribe, pki, with_cert=True) as s:  # the certificate is the credential: no token prefix
        assert call(s, scribe_log("certified", "certified line\n")) is not None
    with socket.create_connection(("127.0.0.1", collector.ports["flume"]), 10) as s:
        assert call(s, flume_batch({"logflume-token": APP, "h": "v"}, b"real event\n")) is not None
    assert collector.stop() == 0
    stored = stored_chunks(collector.store)
    data = b"".join(bytes(c.data) for c in stored)
    assert b"forged" not in data
    senders = {c.stream: json.loads(c.metadata_json())["sender"] for c in stored}
    assert senders == {"app": "app", "flume": "app", "certified": "agent-cert"}
    assert all("logflume-token" not in c.tags and APP not in c.stream for c in stored)
    assert b"real line\n" in data and b"real event\n" in data and b"certified line\n" in data


def test_calls_that_would_make_unusable_metadata_are_refused(collector, pki):
    with scribe_tls(collector.ports["scribe"], pki, with_cert=False) as s:
        nul = call(s, scribe_log(f"{APP}:app\x00/../../etc", "poison line\n"))
    with socket.create_connection(("127.0.0.1", collector.ports["flume"]), 10) as s:
        bad_tag = call(s, flume_batch({"logflume-token": APP, "bad key\n": "v"}, b"poison event\n"))
    assert nul is None and bad_tag is None
    assert collector.log().count("metadata refused") == 2
    assert collector.stop() == 0
    assert stored_chunks(collector.store) == []
