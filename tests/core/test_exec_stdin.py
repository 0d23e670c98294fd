"""exec and stdin sources: every byte of the command's stdout / the agent's stdin reaches the sink."""

from __future__ import annotations

import json
import signal
import subprocess

from logflume.testing.recording_sink import read_chunks
from tests.conftest import wait_for


def agent_yaml(tmp_path, source: str, out) -> str:
    return f"""
agent: {{name: h, data_dir: {tmp_path / 'data'}, shutdown_timeout: 10s}}
sources:
  src:
{source}
    channels: [m]
    flush_interval: 100ms
channels:
  m: {{type: memory}}
sinks:
  out: {{type: logflume.testing.recording_sink:RecordingSink, channel: m, path: {out}}}
"""


def test_exec_collects_all_output_and_restarts_on_failure(tmp_path, logflume_proc):
    out = tmp_path / "out.chunks"
    marker = tmp_path / "runs"
    # The command appends to a marker file on each run and fails the first time: it must be restarted.
    cmd = (f"echo run >> {marker}; seq 1 5000; "
           f"if [ $(wc -l < {marker}) -lt 2 ]; then echo boom >&2; exit 3; fi")
    src = f"    type: exec\n    command: {json.dumps(cmd)}\n    restart: on-failure\n    restart_delay: 200ms"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_yaml(tmp_path, src, out))
    agent = logflume_proc(["agent", "-c", cfg])

    def text():
        return "".join(bytes(c.data).decode() for c in read_chunks(out))

    wait_for(lambda: text().count("\n") >= 10000, 20, message="two runs of output")
    runs = read_chunks(out)
    epochs = []
    for c in runs:
        if c.epoch not in epochs:
            epochs.append(c.epoch)
    assert len(epochs) == 2, "each run of the command is a new epoch"
    for epoch in epochs:
        data = "".join(bytes(c.data).decode() for c in runs if c.epoch == epoch)
        assert data == "".join(f"{i}\n" for i in range(1, 5001))
        ends = [c.seq_id for c in runs if c.epoch == epoch]
        assert ends == sorted(ends) and ends[-1] == len(data)
    assert agent.terminate() == 0
    log = agent.log()
    assert "exited with status 3" in log and "boom" in log


def test_stdin_reaches_sink_including_unterminated_last_line(tmp_path, logflume_proc):
    out = tmp_path / "out.chunks"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_yaml(tmp_path, "    type: stdin", out))
    agent = logflume_proc(["agent", "-c", cfg], stdin=subprocess.PIPE)
    payload = b"".join(b"line %d \x00\xff\r\n" % i for i in range(2000)) + b"no newline at end"
    agent.proc.stdin.write(payload)
    agent.proc.stdin.close()
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) == len(payload), 20, message="all stdin data")
    agent.signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    chunks = read_chunks(out)
    assert b"".join(bytes(c.data) for c in chunks) == payload
    assert chunks[-1].flags == ["partial"], "the unterminated last line is sent at EOF, flagged partial"
