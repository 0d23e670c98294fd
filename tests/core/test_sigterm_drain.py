"""SIGTERM drains a pipeline; what a slow sink could not take stays in the file channel for the next run."""

from __future__ import annotations

import signal

from logflume.testing.recording_sink import read_chunks
from tests.conftest import wait_for

CFG = """
agent: {{name: h, data_dir: {data}, shutdown_timeout: {timeout}}}
sources:
  n: {{type: tests.core.plugins:CountingSource, channels: [disk], count: {count}, lines_per_chunk: 50}}
channels:
  disk: {{type: file, capacity: 64MiB}}
sinks:
  out: {{type: logflume.testing.recording_sink:RecordingSink, channel: disk, path: {out}, delay: 100ms,
        batch_chunks: 4}}
"""


def delivered_lines(out):
    return [line for c in read_chunks(out) for line in bytes(c.data).decode("latin-1").splitlines()]


def test_sigterm_with_slow_sink_loses_nothing_from_file_channel(tmp_path, logflume_proc):
    out = tmp_path / "out.chunks"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(CFG.format(data=tmp_path / "data", timeout="1s", count=20000, out=out))
    agent = logflume_proc(["agent", "-c", cfg])
    # the source commits all 400 chunks to the channel quickly; the sink needs ~5 s to take them all
    wait_for(lambda: "counting source n done: 20000 lines" in agent.log(), 30, message="all lines in the channel")
    wait_for(lambda: len(delivered_lines(out)) >= 400, 20, message="first deliveries")
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    first_run = delivered_lines(out)
    assert 0 < len(first_run) < 20000, "the drain deadline must have cut the first run short"
    assert "stay in channel disk" in agent.log()

    # Next run: no new data; the file channel hands over what the first run left.
    cfg.write_text(CFG.format(data=tmp_path / "data", timeout="30s", count=0, out=out))
    agent2 = logflume_proc(["agent", "-c", cfg])
    wait_for(lambda: len(set(delivered_lines(out))) >= 20000, 60, message="the rest from the file channel")
    agent2.signal(signal.SIGTERM)
    assert agent2.wait(30) == 0
    lines = delivered_lines(out)
    assert set(lines) == {f"line {i:08d}" for i in range(20000)}
    # duplicates only from the batch that was in flight at the deadline (at most batch_chunks chunks)
    assert len(lines) - 20000 <= 4 * 50
