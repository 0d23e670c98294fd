"""Failover and ordered replay per route, through a real agent, collector and OpenSSH sshd.

Two routes of one collector, each a ``buffer`` store: ``audit`` (datatype ``Audit``) writes to an SFTP
primary, the default store to a local one.  While sshd is down the audit route buffers in its own
secondary and the default route keeps writing to its primary as if nothing happened; once sshd is back
the audit route replays its backlog, and its primary holds every record, in the order written.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from logflume.sequencefile import SequenceFileError, SequenceFileReader
from tests.collector.conftest import wait_ready
from tests.conftest import free_port, sink_file_order, wait_for
from tests.store.conftest import SSHD, Sshd

pytestmark = pytest.mark.timeout(240)

AUDIT = "routes.audit.store"


def metric(port: int, name: str, component: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"logflume_{name}{{") and f'component="{component}"' in line:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no logflume_{name} of {component} on /metrics")


def numbers_in(root: Path) -> list[int]:
    """Record numbers in a primary's files in the order they were written (files by their names, the open
    file last); a record being written right now is skipped."""
    closed = [p for p in root.rglob("*.seq") if not p.name.startswith(".")]
    files = sorted(closed, key=lambda p: sink_file_order(p.name)) + sorted(root.rglob(".*.inprogress"))
    out = []
    for path in files:
        with open(path, "rb") as f:
            try:
                for c in SequenceFileReader(f).iter_chunks():
                    out.extend(int(bytes(r).split()[1]) for r in c.records())
            except SequenceFileError:
                pass
    return out


def first_seen(nums: list[int]) -> list[int]:
    seen, out = set(), []
    for n in nums:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


class Logs:
    def __init__(self, directory: Path) -> None:
        self.dir, self.n = directory, 0

    def write(self, count: int, slices: int = 5) -> None:
        """``count`` numbered lines to each log, in a few appends (several batches)."""
        for s in range(slices):
            for name in ("audit", "web"):
                lines = "".join(f"{name} {i:07d} {'x' * 80}\n"
                                for i in range(self.n + s * count // slices, self.n + (s + 1) * count // slices))
                with open(self.dir / f"{name}.log", "a") as f:
                    f.write(lines)
            time.sleep(0.05)
        self.n += count


@pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH sshd is not installed (Debian package openssh-server)")
def test_one_routes_primary_down_other_route_keeps_going_then_replays_in_order(tmp_path, logflume_proc):
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    try:
        _run(tmp_path, logflume_proc, sshd)
    finally:
        sshd.close()


def _run(tmp_path: Path, logflume_proc, sshd: Sshd) -> None:
    audit_primary, web_primary = tmp_path / "audit-primary", tmp_path / "web-primary"
    port, mport = free_port(), free_port()
    collector_cfg = {
        "collector": {"name": "coll1", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "cdata"),
                      "metrics": f"127.0.0.1:{mport}", "shutdown_timeout": "20s"},
        "routes": {"audit": {"match": {"datatype": "Audit"}, "store": {
            "type": "buffer",
            "primary": {"url": sshd.url(audit_primary), "storage_options": sshd.storage_options(),
                        "timeout": "5s", "roll_size": "64KiB"},
            "secondary": {"dir": str(tmp_path / "audit-secondary"), "file_size": "16KiB"},
            "retry_interval": "300ms"}}},
        "store": {"type": "buffer", "primary": {"url": str(web_primary), "roll_size": "64KiB"},
                  "secondary": {"dir": str(tmp_path / "web-secondary")}, "retry_interval": "300ms"},
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    agent_cfg = {
        "agent": {"name": "agent1", "data_dir": str(tmp_path / "adata"), "shutdown_timeout": "10s"},
        "sources": {"logs": {"type": "tail", "channels": ["buf"], "flush_interval": "20ms", "chunk_size": "16KiB",
                             "paths": [{"glob": str(logs / "audit.log"), "datatype": "Audit"},
                                       {"glob": str(logs / "web.log"), "datatype": "Web"}]}},
        "channels": {"buf": {"type": "file"}},
        # batches of at most ~2 chunks (32 KiB, ~340 lines): the duplicate bound below is one batch, however
        # many chunks a loaded machine lets pile up in the channel
        "sinks": {"fwd": {"type": "collector", "channel": "buf", "collectors": [f"127.0.0.1:{port}"],
                          "batch_bytes": "16KiB", "timeout": "10s", "cooldown": "200ms", "retry_initial": "50ms",
                          "retry_max": "500ms"}},
    }
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(collector_cfg))
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))
    collector = logflume_proc(["collector", "-c", tmp_path / "collector.yaml"], name="collector")
    wait_ready(collector)
    agent = logflume_proc(["agent", "-c", tmp_path / "agent.yaml"], name="agent")
    w = Logs(logs)

    def has_all(root: Path, n: int) -> bool:
        return set(numbers_in(root)) >= set(range(n))

    w.write(1000)
    wait_for(lambda: has_all(audit_primary, 1000) and has_all(web_primary, 1000), 60,
             message="both routes' primaries have the first 1000 lines")

    sshd.stop()  # the audit route's primary goes down
    w.write(1000)
    wait_for(lambda: has_all(web_primary, 2000), 60, message="the default route keeps writing to its primary")
    wait_for(lambda: metric(mport, "primary_up", AUDIT) == 0 and metric(mport, "backlog_bytes", AUDIT) > 0, 60,
             message="the audit route buffering in its own secondary")
    w.write(500)
    wait_for(lambda: has_all(web_primary, 2500), 60, message="the default route still writing to its primary")
    assert len(set(numbers_in(audit_primary))) < 2500  # the audit lines written while down are not there
    assert metric(mport, "failovers_total", "store") == 0 and metric(mport, "primary_up", "store") == 1
    assert not any((tmp_path / "web-secondary").glob("*.seq")), "the default route never buffered"
    assert agent.alive() and collector.alive()

    sshd.start()  # back: the audit route replays its backlog, oldest first, then goes direct again
    wait_for(lambda: metric(mport, "primary_up", AUDIT) == 1, 60, message="the audit route's backlog replayed")
    w.write(500)
    wait_for(lambda: has_all(audit_primary, 3000) and has_all(web_primary, 3000), 60,
             message="every line in both primaries")
    assert metric(mport, "failovers_total", AUDIT) >= 1 and metric(mport, "replayed_files_total", AUDIT) >= 1
    assert agent.terminate(30) == 0, agent.log()[-3000:]
    assert collector.terminate(30) == 0, collector.log()[-3000:]
    for root in (audit_primary, web_primary):
        nums = numbers_in(root)
        assert first_seen(nums) == list(range(3000)), root  # every line, in the order written
        assert len(nums) - 3000 <= 400, root  # duplicates bounded (a batch resent around the outage)
