"""All four sources in one real `python -m logflume agent` process, fed by real clients, drained on SIGTERM."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess

import pytest
from fluent import sender

from logflume.testing.recording_sink import read_chunks
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(120)


def test_agent_process_with_network_sources(tmp_path, logflume_proc):
    sport, hport, fport = free_port(), free_port(), free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    out = tmp_path / "out.chunks"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent:
  name: edge1
  data_dir: {tmp_path / "data"}
sources:
  sys:
    type: syslog
    tcp: 127.0.0.1:{sport}
    udp: 127.0.0.1:{sport}
    flush_interval: 100ms
    channels: [mem]
  web:
    type: http
    listen: 127.0.0.1:{hport}
    channels: [mem]
  fluent:
    type: forward
    listen: 127.0.0.1:{fport}
    flush_interval: 100ms
    channels: [mem]
  drop:
    type: spooldir
    dir: {spool}
    min_age: 0s
    poll_interval: 100ms
    channels: [mem]
channels:
  mem:
    type: memory
sinks:
  out:
    type: logflume.testing.recording_sink:RecordingSink
    channel: mem
    path: {out}
""")
    proc = logflume_proc(["agent", "-c", cfg], name="agent")

    def up(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(lambda: up(sport) and up(hport) and up(fport), 20, message="listeners up")
    if shutil.which("logger"):
        subprocess.run(["logger", "-n", "127.0.0.1", "-P", str(sport), "--tcp", "--octet-count", "-t", "app"],
                       input=b"".join(b"sys %d\n" % i for i in range(100)), check=True, timeout=30)
    else:
        with socket.create_connection(("127.0.0.1", sport)) as s:
            s.sendall(b"".join(b"<13>Jan  1 00:00:00 h app: sys %d\n" % i for i in range(100)))
    conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=30)
    conn.request("POST", "/orders", body=b"".join(b'{"h": %d}\n' % i for i in range(100)))
    assert conn.getresponse().status == 200
    conn.close()
    client = sender.FluentSender("svc", host="127.0.0.1", port=fport)
    for i in range(100):
        assert client.emit("api", {"f": i})
    client.close()
    (spool / "batch.log").write_bytes(b"".join(b"spool %d\n" % i for i in range(100)))
    wait_for(lambda: (spool / "batch.log.COMPLETED").exists(), 20, message="spool file completed")

    def count() -> dict:
        streams: dict = {}
        for c in read_chunks(out):
            streams[c.stream] = streams.get(c.stream, 0) + len(bytes(c.data).splitlines())
        return streams

    wait_for(lambda: sum(count().values()) >= 400, 20, message=f"400 records, have {count()}")
    assert proc.terminate() == 0, proc.log()[-2000:]
    assert count() == {"syslog:app": 100, "http:orders": 100, "svc.api": 100, str(spool / "batch.log"): 100}
    chunks = read_chunks(out)
    assert {c.source for c in chunks} == {"edge1"}
    assert {c.stream: c.datatype for c in chunks}["syslog:app"] == "SysLog"
