"""/health, /ready and /status of real agent and collector processes (logflume/status.py)."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
import yaml

from logflume.status import CACHE_SECONDS, BacklogAge
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(120)


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if path != "/metrics" else {"text": body.decode()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def answers(port: int) -> bool:
    try:
        return get(port, "/health", timeout=1)[0] == 200
    except OSError:
        return False


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def collector_yaml(tmp_path, port, mport, primary=None, max_bytes="1GiB"):
    return write_yaml(tmp_path / "collector.yaml", {
        "collector": {"name": "c1", "listen": f"127.0.0.1:{port}", "metrics": f"127.0.0.1:{mport}",
                      "data_dir": str(tmp_path / "cdata")},
        "store": {"type": "buffer", "primary": primary or {"type": "seqfile", "url": str(tmp_path / "sink")},
                  "secondary": {"dir": str(tmp_path / "secondary"), "max_bytes": max_bytes, "file_size": "256KiB"},
                  "retry_interval": "1h"},
    })


def agent_yaml(tmp_path, cport, mport, timeout="60s", chunk_size="64MiB"):
    return write_yaml(tmp_path / "agent.yaml", {
        "agent": {"name": "web-01", "data_dir": str(tmp_path / "adata"), "metrics": f"127.0.0.1:{mport}",
                  "shutdown_timeout": "1s"},
        "sources": {"logs": {"type": "tail", "paths": [str(tmp_path / "logs" / "*.log")], "flush_interval": "100ms",
                             "rotate_wait": "500ms", "chunk_size": chunk_size, "channels": ["mem"]}},
        "channels": {"mem": {"type": "memory", "capacity": "64MiB"}},
        "sinks": {"up": {"type": "collector", "channel": "mem", "collectors": [f"127.0.0.1:{cport}"],
                         "timeout": timeout, "cooldown": "30s", "batch_bytes": chunk_size,
                         "retry_initial": "50ms", "retry_max": "500ms"}},
    })


def test_backlog_age_follows_the_oldest_uncommitted_byte():
    clock = BacklogAge(max_marks=8)
    clock.observe(0.0, 0, 0)
    assert clock.age(5.0) == 0
    clock.observe(1.0, 100, 0)    # bytes 0..99 arrive at t=1
    clock.observe(2.0, 250, 0)    # bytes 100..249 at t=2
    assert clock.age(4.0) == 3.0
    clock.observe(3.0, 250, 100)  # the first 100 are handed on: the oldest left arrived at t=2
    assert clock.age(4.0) == 2.0
    clock.observe(4.0, 250, 250)
    assert clock.age(10.0) == 0
    for t in range(100):          # a stuck output: marks stay bounded, the age never reads older than it is
        clock.observe(10.0 + t, 300 + t, 250)
    assert len(clock._marks) <= 8
    assert 0 < clock.age(110.0) <= 100.0


def test_agent_endpoints_and_a_stuck_channel(tmp_path, logflume_proc):
    cport, cmport, amport = free_port(), free_port(), free_port()
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    collector = logflume_proc(["collector", "-c", collector_yaml(tmp_path, cport, cmport)], name="collector")
    wait_for(lambda: answers(cmport), 30, message="collector endpoint up")
    agent = logflume_proc(["agent", "-c", agent_yaml(tmp_path, cport, amport)], name="agent")
    wait_for(lambda: answers(amport), 30, message="agent endpoint up")

    code, health = get(amport, "/health")
    assert code == 200 and health["status"] == "alive"
    assert "logflume_bytes_in_total" in get(amport, "/metrics")[1]["text"]
    wait_for(lambda: get(amport, "/status")[1]["totals"]["bytes_out"] >= log.stat().st_size, 30,
             message="the log delivered")
    code, status = get(amport, "/status")
    assert code == 200 and status["role"] == "agent" and status["name"] == "web-01"
    kinds = {(c["kind"], c["name"]) for c in status["components"]}
    assert kinds == {("source", "logs"), ("channel", "mem"), ("sink", "up")}
    size = log.stat().st_size
    assert status["streams"] == [{"source": "logs", "stream": str(log), "path": str(log), "lag_bytes": 0,
                                  "bytes_read": size, "bytes_acked": size, "files": 1, "last_rotation": None}]
    assert status["channels"][0]["capacity_bytes"] == 64 * 1024 * 1024
    assert status["collectors"][0]["collectors"] == [f"127.0.0.1:{cport}"]
    assert status["collectors"][0]["healthy"] == 1
    assert status["collectors"][0]["cooldowns"] == [{"address": f"127.0.0.1:{cport}", "cooldown_left_s": 0.0}]
    assert status["ready"] == {"ok": True, "reasons": []}
    assert get(amport, "/ready?max_age=2s") == (200, {"ready": True, "reasons": []})
    code, cstatus = get(cmport, "/status")
    assert code == 200 and cstatus["role"] == "collector" and cstatus["store"]["primary_up"] is True
    assert cstatus["totals"]["bytes_in"] >= log.stat().st_size
    assert get(cmport, "/ready")[0] == 200

    # Rotation by rename: the stream's row names the new file, the time the old one was let go, and the
    # new file's bytes once committed (HICC's Streams page shows these).
    before = time.time()
    log.rename(log.with_name("app.log.1"))
    log.write_text("".join(f"next {i}\n" for i in range(10)))
    row = wait_for(lambda: (r := get(amport, "/status")[1]["streams"]) and r[0]["last_rotation"] and
                   r[0]["bytes_acked"] == log.stat().st_size and r[0], 30, message="the rotation in /status")
    assert row["files"] == 1 and row["path"] == str(log) and row["lag_bytes"] == 0
    assert before <= row["last_rotation"] <= time.time()

    # Stuck: the collector stops answering (SIGSTOP), so the sink waits on an ack that never comes.
    collector.signal(signal.SIGSTOP)
    try:
        with log.open("a") as f:
            f.write("".join(f"late {i}\n" for i in range(100)))
        code, body = wait_for(lambda: (r := get(amport, "/ready?max_age=2s"))[0] == 503 and r, 30,
                              message="/ready turning 503")
        assert body["ready"] is False
        assert any(r.startswith("channel mem: oldest uncommitted byte is") for r in body["reasons"]), body
        assert get(amport, "/ready?max_age=10m")[0] == 200, "the threshold is the probe's"
        status = get(amport, "/status")[1]
        assert status["channels"][0]["oldest_uncommitted_s"] > 1  # (cached up to 0.5 s)
    finally:
        collector.signal(signal.SIGCONT)
    wait_for(lambda: get(amport, "/ready?max_age=2s")[0] == 200, 30, message="ready again once delivering")
    assert agent.terminate() == 0
    assert collector.terminate() == 0


def test_ready_fails_on_a_dead_store(tmp_path, logflume_proc):
    """Primary unusable, a small secondary filling up: the collector and then the agent say why they are not ready."""
    cport, cmport, amport = free_port(), free_port(), free_port()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    collector = logflume_proc(["collector", "-c", collector_yaml(
        tmp_path, cport, cmport, primary={"type": "seqfile", "url": str(blocker / "sink")}, max_bytes="1MiB")],
        name="collector")
    wait_for(lambda: answers(cmport), 30, message="collector endpoint up")
    code, status = get(cmport, "/status")
    assert status["store"]["primary_up"] is False and status["store"]["secondary_max_bytes"] == 1024 * 1024
    assert get(cmport, "/ready")[0] == 200, "a primary down with an empty secondary is still delivering"

    log.write_text("".join(f"{i:08d} {'x' * 200}\n" for i in range(8000)))  # ~1.6 MB: more than the secondary holds
    logflume_proc(["agent", "-c", agent_yaml(tmp_path, cport, amport, timeout="5s", chunk_size="64KiB")], name="agent")
    # The secondary refuses a batch that would pass max_bytes, so its fill stops a batch short of 100%.
    code, body = wait_for(lambda: (r := get(cmport, "/ready?secondary_full=0.5"))[0] == 503 and r, 60,
                          message="collector not ready")
    assert any("primary down and secondary" in r for r in body["reasons"]), body
    code, body = wait_for(lambda: (r := get(amport, "/ready"))[0] == 503 and r, 60, message="agent not ready")
    assert any(r == "sink up: every collector (1) is cooling down" for r in body["reasons"]), body
    cooling = get(amport, "/status")[1]["collectors"][0]["cooldowns"]
    assert len(cooling) == 1 and cooling[0]["address"] == f"127.0.0.1:{cport}"
    assert collector.alive()


def test_ready_fails_on_a_routes_dead_store(tmp_path, logflume_proc):
    """A route's buffer store counts as the default store does: its refused chunks are traffic not delivered."""
    cport, cmport, amport = free_port(), free_port(), free_port()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    (tmp_path / "logs").mkdir()
    cfg = yaml.safe_load(collector_yaml(tmp_path, cport, cmport).read_text())
    cfg["routes"] = {"audit": {"match": {"datatype": "Audit"}, "store": {
        "type": "buffer", "primary": {"type": "seqfile", "url": str(blocker / "sink")},
        "secondary": {"dir": str(tmp_path / "audit-secondary"), "max_bytes": "1MiB", "file_size": "256KiB"},
        "retry_interval": "1h"}}}
    collector = logflume_proc(["collector", "-c", write_yaml(tmp_path / "collector.yaml", cfg)], name="collector")
    wait_for(lambda: answers(cmport), 30, message="collector endpoint up")
    assert get(cmport, "/ready")[0] == 200, "a route's primary down with an empty secondary is still delivering"
    (tmp_path / "logs" / "audit.log").write_text("".join(f"{i:08d} {'x' * 200}\n" for i in range(8000)))
    acfg = yaml.safe_load(agent_yaml(tmp_path, cport, amport, timeout="5s", chunk_size="64KiB").read_text())
    acfg["sources"]["logs"]["paths"] = [{"glob": str(tmp_path / "logs" / "*.log"), "datatype": "Audit"}]
    logflume_proc(["agent", "-c", write_yaml(tmp_path / "agent.yaml", acfg)], name="agent")
    code, body = wait_for(lambda: (r := get(cmport, "/ready?secondary_full=0.5"))[0] == 503 and r, 60,
                          message="collector not ready")
    assert any("primary down and secondary" in r and "audit" in r for r in body["reasons"]), body
    status = get(cmport, "/status")[1]
    assert status["store"]["primary_up"] is True, "the default store is fine: only the route's is down"
    assert [b["primary_up"] for b in status["buffers"]] == [True, False], status["buffers"]
    assert collector.alive()


def test_endpoint_refuses_bad_requests_within_bounds(tmp_path, logflume_proc):
    cport, cmport = free_port(), free_port()
    logflume_proc(["collector", "-c", collector_yaml(tmp_path, cport, cmport)], name="collector")
    wait_for(lambda: answers(cmport), 30, message="collector endpoint up")
    assert get(cmport, "/nope")[0] == 404
    assert get(cmport, "/ready?max_age=soon")[0] == 400
    assert get(cmport, "/ready?secondary_full=2")[0] == 400
    assert get(cmport, "/status?streams=x")[0] == 400
    # An over-long request line is refused at once, not buffered.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", cmport), timeout=10) as s:
        s.sendall(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 414")
    assert time.monotonic() - t0 < 5
    # Idle connections beyond the cap are closed at once and never starve the endpoint for long.
    idle = [socket.create_connection(("127.0.0.1", cmport), timeout=10) for _ in range(40)]
    try:
        closed = 0
        for s in idle[32:]:
            s.settimeout(5)
            closed += s.recv(1) == b""
        assert closed == 8
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: answers(cmport), 15, message="endpoint serving again after the idle clients left")


def test_building_the_document_takes_at_most_a_tenth_of_the_time():
    """10,000 streams: however often /status is asked, builds are at least ten build-times apart."""
    from logflume.metrics import Metrics
    from logflume.status import PipelineStatus

    class Source:
        kind, name, config = "source", "app", {}

        def status(self):
            return {}

    metrics = Metrics()
    source = metrics.component("source", "app")
    for j in range(10000):
        source.gauge("tail_file_lag_bytes", "lag", path=f"/var/log/f{j}.log").set(j)
    status = PipelineStatus("agent", "big", metrics, [Source()])
    builds, took = [], []
    real_build = status._build

    def build(now, limit):
        builds.append(time.monotonic())
        doc = real_build(now, limit)
        took.append(time.monotonic() - builds[-1])
        return doc

    status._build = build
    # Asked without pause until three builds were seen (a build takes ~0.1 s idle, 0.4 s on a loaded
    # 2-core machine, so three builds take 2-9 s), or a minute.
    began = time.monotonic()
    while len(builds) < 3 and time.monotonic() - began < 60:
        doc = status.document(20000)
    elapsed = time.monotonic() - began
    assert doc["totals"]["streams"] == 10000 and len(doc["streams"]) == 10000
    assert doc["streams"][0]["lag_bytes"] == 9999, "most lagging first"
    gaps = [b - a for a, b in zip(builds, builds[1:], strict=False)]
    assert len(gaps) == 2 and all(gap >= 10 * t for gap, t in zip(gaps, took, strict=False)), (gaps, took)
    assert len(builds) <= elapsed / CACHE_SECONDS + 1
