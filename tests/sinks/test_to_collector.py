"""CollectorSink against real in-process collectors on loopback: failover, cool-down, TRY_LATER, batching."""

from __future__ import annotations

import time

import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.errors import ConfigError, DeliveryError, TryLater
from logflume.settings import parse_settings
from sinks.to_collector import CollectorSink, parse_collectors_file
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)


def make_sink(tmp_path, **raw) -> CollectorSink:
    raw.setdefault("channel", "c")
    raw.setdefault("cooldown", "5s")
    raw.setdefault("retry_initial", "10ms")
    values = parse_settings(CollectorSink.schema(), raw, "sinks.fwd", "agent.yaml")
    ctx = Context(agent_name="agent-1", data_dir=tmp_path, config_file="agent.yaml")
    sink = CollectorSink("fwd", values, ctx)
    sink.start()
    return sink


def batch(n: int = 3, size: int = 10) -> list[Chunk]:
    return [Chunk(source="a", stream="s", datatype="Raw", seq_id=(i + 1) * size, epoch="e", data=b"x" * size)
            for i in range(n)]


def addr(srv) -> str:
    return f"{srv.address[0]}:{srv.address[1]}"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"sinks\.fwd\.collectors: no collectors"):
        make_sink(tmp_path)
    with pytest.raises(ConfigError, match="cert and key go together"):
        make_sink(tmp_path, collectors=["127.0.0.1:1"], tls={"cert": "x.crt"})
    with pytest.raises(ConfigError, match=r"collectors\[0\]: expected HOST:PORT"):
        make_sink(tmp_path, collectors=["localhost"])


def test_spreads_batches_over_healthy_collectors(tmp_path, wire_server):
    (s1, r1), (s2, r2) = wire_server(), wire_server()
    sink = make_sink(tmp_path, collectors=[addr(s1), addr(s2)])
    for _ in range(40):
        sink.deliver(batch())
    sink.stop()
    assert len(r1.chunks) + len(r2.chunks) == 120
    assert len(r1.chunks) >= 15 and len(r2.chunks) >= 15  # random choice, both used
    assert sink.writes() == [f"tcp:{addr(s1)}", f"tcp:{addr(s2)}"]


def test_fails_over_and_cools_down_a_dead_collector(tmp_path, wire_server):
    srv, rec = wire_server()
    dead = f"127.0.0.1:{free_port()}"
    sink = make_sink(tmp_path, collectors=[dead, addr(srv)])
    for _ in range(20):
        sink.deliver(batch())  # never raises: the dead one is skipped
    sink.stop()
    assert len(rec.chunks) == 60
    # the dead collector was tried at most once: then it cooled down for 5s
    assert sink.metrics._m.value("failovers_total", kind="sink", component="fwd") <= 1


def test_error_and_try_later_answers_fail_over(tmp_path, wire_server):
    (bad, rbad), (busy, rbusy), (good, rgood) = wire_server(), wire_server(), wire_server()

    def broken(_):
        raise OSError("disk")

    def full(_):
        raise TryLater("full", 3.0)

    rbad.hook, rbusy.hook = broken, full
    sink = make_sink(tmp_path, collectors=[addr(bad), addr(busy), addr(good)])
    for _ in range(10):
        sink.deliver(batch())
    assert len(rgood.chunks) == 30 and not rbad.chunks and not rbusy.chunks
    sink.stop()


def test_all_try_later_raises_try_later_with_their_delay(tmp_path, wire_server):
    (a, ra), (b, rb) = wire_server(), wire_server()

    def full(_):
        raise TryLater("full", 2.0)

    ra.hook = rb.hook = full
    sink = make_sink(tmp_path, collectors=[addr(a), addr(b)])
    with pytest.raises(TryLater) as info:
        sink.deliver(batch())
    assert info.value.delay == 2.0
    with pytest.raises(TryLater, match="all 2 collectors cooling down") as info:
        sink.deliver(batch())  # nobody is asked again before the delay is over
    assert 0 < info.value.delay <= 2.0
    sink.stop()


def test_all_down_raises_delivery_error(tmp_path):
    sink = make_sink(tmp_path, collectors=[f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
    with pytest.raises(DeliveryError, match="no collector took the batch.*cannot connect"):
        sink.deliver(batch())
    sink.stop()


def test_batch_is_split_to_fit_the_collectors_frame_limit(tmp_path, wire_server):
    srv, rec = wire_server(max_frame_size=3 * 1024 * 1024)
    sink = make_sink(tmp_path, collectors=[addr(srv)])
    sink.deliver(batch(n=6, size=1024 * 1024))  # 6 MiB in frames of at most 3 MiB
    sink.stop()
    assert len(rec.chunks) == 6


def test_collectors_file_parsing(tmp_path):
    text = "# comment\n\n127.0.0.1:1\nhttp://collector-2:8080/\n[::1]:9 # v6\n"
    assert parse_collectors_file(text) == [("127.0.0.1", 1), ("collector-2", 8080), ("::1", 9)]
    with pytest.raises(ConfigError, match="line 2: expected HOST:PORT"):
        parse_collectors_file("a:1\nnot a collector\n", "collectors")
    listing = tmp_path / "collectors"
    listing.write_text("127.0.0.1:5\n")
    sink = make_sink(tmp_path, collectors_file=str(listing))
    assert sink.writes() == ["tcp:127.0.0.1:5"]
    sink.stop()


def test_big_chunks_go_as_frames_cut_after_lines(tmp_path, wire_server):
    srv, rec = wire_server()
    sink = make_sink(tmp_path, collectors=[addr(srv)], frame_bytes="64KiB", frames_in_flight=3)
    data = b"".join(b"%06d %s\n" % (i, b"z" * (i % 90)) for i in range(20_000))
    big = Chunk(source="a", stream="s", datatype="Raw", seq_id=len(data), epoch="e", data=bytearray(data))
    sink.deliver([big])
    sink.stop()
    assert len(rec.chunks) == -(-len(data) // (64 * 1024))  # as few frames as 64 KiB allows
    assert b"".join(bytes(c.data) for c in rec.chunks) == data
    assert [c.seq_id for c in rec.chunks] == sorted(c.seq_id for c in rec.chunks) and rec.chunks[-1].seq_id == len(data)
    assert all(bytes(c.data).endswith(b"\n") and len(c) <= 64 * 1024 for c in rec.chunks)


def test_a_frame_answered_try_later_fails_the_batch_after_the_frames_behind_it(tmp_path, wire_server):
    srv, rec = wire_server()
    calls = []

    def third_is_refused(chunks):
        calls.append(len(chunks))
        if len(calls) == 3:
            raise TryLater("full", 0.5)

    rec.hook = third_is_refused
    sink = make_sink(tmp_path, collectors=[addr(srv)], frame_bytes="64KiB")
    data = b"".join(b"%07d\n" % i for i in range(60_000))  # 480 KB: 8 frames
    big = Chunk(source="a", stream="s", datatype="Raw", seq_id=len(data), epoch="e", data=data)
    with pytest.raises(TryLater, match="full"):
        sink.deliver([big])
    stored = len(rec.chunks)
    assert 2 <= stored < 8  # frames before (and the one behind) the refused one are stored; the batch is not
    (target,) = sink._collectors.values()
    assert target.client.in_flight == 0  # the answers behind the refused frame were read: the connection is in step
    time.sleep(0.6)  # the collector asked for 0.5 s
    sink.deliver([big])  # the retry sends the whole batch again on the same connection, in step
    sink.stop()
    assert len(rec.chunks) == stored + 8
    assert b"".join(bytes(c.data) for c in rec.chunks[stored:]) == data
