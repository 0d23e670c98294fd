"""Sink runner: deliver, commit; on failure roll back and retry with backoff, in order."""

from __future__ import annotations

import threading
import time

from agent.agent import Agent
from agent.runner import ChannelOutput
from logflume.chunk import Chunk
from logflume.topology import build_topology
from tests.conftest import wait_for


def pipeline(tmp_path, failures: int, count: int = 200, capacity: str = "1MiB"):
    raw = {
        "agent": {"name": "h", "data_dir": str(tmp_path / "data"), "shutdown_timeout": "5s"},
        "sources": {"n": {"type": "tests.core.plugins:CountingSource", "channels": ["m"], "count": count,
                          "lines_per_chunk": 7}},
        "channels": {"m": {"type": "memory", "capacity": capacity}},
        "sinks": {"f": {"type": "tests.core.plugins:FlakySink", "channel": "m", "failures": failures,
                        "retry_initial": "20ms", "retry_max": "200ms", "batch_chunks": 5}},
    }
    return Agent(build_topology(raw, "test.yaml"))


def lines_of(chunks):
    return b"".join(bytes(c.data) for c in chunks).decode().splitlines()


def test_failed_deliveries_are_retried_in_order_without_loss(tmp_path):
    agent = pipeline(tmp_path, failures=4)
    agent.start()
    sink = agent.sinks["f"]
    try:
        wait_for(lambda: len(lines_of(sink.delivered)) >= 200, 10, message="all lines delivered")
    finally:
        agent.stop()
    assert lines_of(sink.delivered) == [f"line {i:08d}" for i in range(200)]
    assert sink.attempts > 4
    assert agent.context.metrics.value("retries_total", kind="sink", component="f") == 4
    gaps = [b - a for a, b in zip(sink.attempt_times, sink.attempt_times[1:5], strict=False)]
    assert all(g >= 0.01 for g in gaps), f"retries must back off, got gaps {gaps}"


def test_back_pressure_small_channel_loses_nothing(tmp_path):
    agent = pipeline(tmp_path, failures=2, count=2000, capacity="300")
    agent.start()
    try:
        wait_for(lambda: len(lines_of(agent.sinks["f"].delivered)) >= 2000, 20, message="all lines")
    finally:
        agent.stop()
    assert lines_of(agent.sinks["f"].delivered) == [f"line {i:08d}" for i in range(2000)]


def test_stop_drains_memory_channel(tmp_path):
    agent = pipeline(tmp_path, failures=0, count=500)
    agent.start()
    time.sleep(0.2)
    agent.stop()
    assert len(lines_of(agent.sinks["f"].delivered)) == 500
    assert agent.channels["m"].size_chunks() == 0


def test_channel_write_failures_are_retried_for_the_source(tmp_path):
    """A channel that fails a put (e.g. disk full) makes the source wait and retry, losing nothing."""
    agent = pipeline(tmp_path, failures=0, count=0)
    channel = agent.channels["m"]
    real = channel.transaction
    calls = {"n": 0}

    def flaky_transaction():
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OSError(28, "No space left on device")
        return real()

    channel.transaction = flaky_transaction
    out = ChannelOutput([channel], retry_initial=0.01)
    out.deliver([Chunk("h", "s", "Raw", 3, "e", b"ab\n")])
    assert calls["n"] == 4 and channel.size_chunks() == 1


def test_batch_bigger_than_the_channel_does_not_deadlock(tmp_path):
    """One delivery larger than the whole channel is committed in parts instead of waiting forever."""
    agent = pipeline(tmp_path, failures=0, count=0, capacity="1000")
    agent.start()
    try:
        chunks, off = [], 0
        for i in range(10):
            data = f"{i:03d}".ljust(399, "x").encode() + b"\n"
            off += len(data)
            chunks.append(Chunk("h", "big", "Raw", off, "e", data))
        done = threading.Event()
        t = threading.Thread(target=lambda: (ChannelOutput([agent.channels["m"]]).deliver(chunks), done.set()))
        t.start()
        assert done.wait(10), "a 4000-byte batch into a 1000-byte channel must not deadlock"
        wait_for(lambda: len(lines_of(agent.sinks["f"].delivered)) == 10, 10, message="all delivered")
    finally:
        agent.stop()
    assert [c.seq_id for c in agent.sinks["f"].delivered] == [c.seq_id for c in chunks]


def test_a_store_sink_in_an_agent_is_counted_once(tmp_path):
    """A seqfile sink counts its own output (it is also a collector's store): the runner must not count it again."""
    raw = {
        "agent": {"name": "h", "data_dir": str(tmp_path / "data"), "shutdown_timeout": "5s"},
        "sources": {"n": {"type": "tests.core.plugins:CountingSource", "channels": ["m", "m2"], "count": 70,
                          "lines_per_chunk": 7}},
        "channels": {"m": {"type": "memory", "capacity": "1MiB"}, "m2": {"type": "memory", "capacity": "1MiB"}},
        "sinks": {"files": {"type": "seqfile", "channel": "m", "url": str(tmp_path / "out")},
                  "plain": {"type": "null", "channel": "m2"}},
    }
    agent = Agent(build_topology(raw, "test.yaml"))
    agent.start()
    value = agent.context.metrics.value
    try:
        wait_for(lambda: value("chunks_out_total", kind="sink", component="plain") >= 10, 10, message="delivered")
        wait_for(lambda: value("chunks_out_total", kind="sink", component="files") >= 10, 10, message="delivered")
    finally:
        agent.stop()
    assert value("chunks_out_total", kind="sink", component="files") == 10
    assert value("chunks_out_total", kind="sink", component="plain") == 10
    assert value("bytes_out_total", kind="sink", component="files") == 70 * len("line 00000000\n")
