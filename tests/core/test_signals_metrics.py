"""A second signal exits at once; the Prometheus endpoint reports per-component counters."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import pytest

from logflume.testing.recording_sink import read_chunks
from tests.conftest import free_port, wait_for

CFG = """
agent: {{name: h, data_dir: {data}, shutdown_timeout: 60s, metrics: "127.0.0.1:{port}"}}
sources:
  n: {{type: tests.core.plugins:CountingSource, channels: [m], count: {count}, lines_per_chunk: 10}}
channels:
  m: {{type: memory, capacity: 1MiB}}
sinks:
  out: {{type: logflume.testing.recording_sink:RecordingSink, channel: m, path: {out}, delay: {delay}}}
"""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_endpoint_counts_bytes_and_chunks(tmp_path, logflume_proc):
    port = free_port()
    out = tmp_path / "out.chunks"
    cfg = tmp_path / "a.yaml"
    cfg.write_text(CFG.format(data=tmp_path / "d", port=port, count=1000, out=out, delay=0))
    agent = logflume_proc(["agent", "-c", cfg])
    wait_for(lambda: len(read_chunks(out)) == 100, 20, message="100 chunks delivered")

    def settled():
        try:
            text = scrape(port)
        except OSError:
            return None
        return text if sample(text, "logflume_chunks_out_total", kind="sink", component="out") == 100 else None

    text = wait_for(settled, 10, message="metrics")
    total = 1000 * len("line 00000000\n")
    assert sample(text, "logflume_bytes_in_total", kind="channel", component="m") == total
    assert sample(text, "logflume_bytes_out_total", kind="sink", component="out") == total
    assert sample(text, "logflume_channel_fill_bytes", kind="channel", component="m") == 0
    assert sample(text, "logflume_channel_capacity_bytes", kind="channel", component="m") == 1024 * 1024
    # no tap_token configured: the tap, which shows the records themselves, is off
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/tap?component=n&records=5", timeout=5)
    assert refused.value.code == 403 and b"tap is off: set tap_token" in refused.value.read()
    assert agent.terminate() == 0


def test_metrics_port_in_use_is_a_startup_error(tmp_path, logflume_proc):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "a.yaml"
        cfg.write_text(CFG.format(data=tmp_path / "d", port=port, count=1, out=tmp_path / "o", delay=0))
        agent = logflume_proc(["agent", "-c", cfg])
        assert agent.wait(20) == 1
    assert f"cannot start: metrics endpoint 127.0.0.1:{port}" in agent.log()


def test_second_signal_exits_at_once(tmp_path, logflume_proc):
    out = tmp_path / "out.chunks"
    cfg = tmp_path / "a.yaml"
    # a sink so slow that draining would take minutes
    cfg.write_text(CFG.format(data=tmp_path / "d", port=free_port(), count=5000, out=out, delay="5s"))
    agent = logflume_proc(["agent", "-c", cfg])
    wait_for(lambda: "agent h started" in agent.log(), 20, message="agent start")
    time.sleep(0.5)
    agent.signal(signal.SIGTERM)
    wait_for(lambda: "send again to exit at once" in agent.log(), 10, message="first signal logged")
    time.sleep(0.5)
    assert agent.alive(), "the first signal drains (slowly here)"
    t0 = time.monotonic()
    agent.signal(signal.SIGTERM)
    code = agent.wait(10)
    assert time.monotonic() - t0 < 5
    assert code == 128 + signal.SIGTERM
