"""Agent -> collector -> buffer store with an SFTP primary, all real processes.

The SFTP server is down and the secondary is small: the collector answers
TRY_LATER, the agent keeps its data, and once the server is back every record
reaches the primary.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from logflume.sequencefile import SequenceFileError, SequenceFileReader
from tests.conftest import free_port

from .conftest import Sshd, final_files, read_chunks, wait_for

pytestmark = pytest.mark.timeout(180)

N = 6000
WIDTH = 200


def _generator(n: int = N, pause: float = 0.02) -> list[str]:
    script = (
        "import sys,time\n"
        f"pad='x'*({WIDTH}-11)\n"
        f"for i in range({n}):\n"
        "    sys.stdout.write(f'{i:09d} {pad}\\n')\n"
        "    if i % 500 == 499:\n"
        f"        sys.stdout.flush(); time.sleep({pause})\n"
        "sys.stdout.flush()\n"
    )
    return [sys.executable, "-c", script]


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + "{") and 'component="store"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def start_collector_and_agent(logflume_proc, tmp_path: Path, collector_cfg: dict, agent_cfg: dict):
    """Both as real processes (configs written beside them), the agent once the collector is ready."""
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(collector_cfg))
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))
    collector = logflume_proc(["collector", "-c", tmp_path / "collector.yaml"], name="collector")
    wait_for(lambda: "ready:" in collector.log() or not collector.alive(), 20, message="collector ready")
    assert collector.alive(), collector.log()[-3000:]
    return collector, logflume_proc(["agent", "-c", tmp_path / "agent.yaml"], name="agent")


def test_secondary_full_try_later_agent_keeps_data_until_sftp_returns(sshd: Sshd, tmp_path: Path,
                                                                       logflume_proc) -> None:
    sshd.stop()
    primary, secondary = tmp_path / "primary", tmp_path / "secondary"
    port, metrics_port = free_port(), free_port()
    collector_cfg = {
        "collector": {"name": "coll1", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "cdata"),
                      "metrics": f"127.0.0.1:{metrics_port}", "shutdown_timeout": "20s"},
        "store": {
            "type": "buffer",
            "primary": {"url": sshd.url(primary), "storage_options": sshd.storage_options(), "timeout": "5s"},
            "secondary": {"dir": str(secondary), "max_bytes": "300KiB", "file_size": "64KiB"},
            "retry_interval": "500ms",
        },
    }
    agent_cfg = {
        "agent": {"name": "agent1", "data_dir": str(tmp_path / "adata"), "shutdown_timeout": "10s"},
        "sources": {"gen": {"type": "exec", "command": _generator(), "restart": "never", "chunk_size": "32KiB",
                            "flush_interval": "100ms", "channels": ["buf"]}},
        "channels": {"buf": {"type": "memory", "capacity": "64MiB"}},
        "sinks": {"fwd": {"type": "collector", "channel": "buf", "collectors": [f"127.0.0.1:{port}"],
                          "timeout": "10s", "cooldown": "200ms", "retry_initial": "50ms", "retry_max": "500ms"}},
    }
    collector, agent = start_collector_and_agent(logflume_proc, tmp_path, collector_cfg, agent_cfg)

    wait_for(lambda: _metric(metrics_port, "logflume_secondary_full_total") >= 2, 60,
             message="the full secondary answering TRY_LATER")
    assert agent.alive(), agent.log()[-3000:]
    assert not primary.exists() or not final_files(primary)
    on_disk = sum(p.stat().st_size for p in secondary.iterdir() if p.is_file())
    assert on_disk <= 300 * 1024

    sshd.start()

    def records_so_far() -> int:
        """Distinct records on the primary, in finished and (flushed) in-progress files."""
        got = set()
        for path in primary.glob("*/*.seq*"):  # hidden in-progress files too
            with open(path, "rb") as f:
                try:
                    for c in SequenceFileReader(f).iter_chunks():
                        got.update(int(bytes(r)[:9]) for r in c.records())
                except SequenceFileError:
                    pass  # a record being written right now
        return len(got)

    # the collector replays its backlog and the agent's retries go through
    wait_for(lambda: _metric(metrics_port, "logflume_primary_up") == 1, 60, message="backlog replayed")
    wait_for(lambda: records_so_far() == N, 60, message="every record on the SFTP primary")
    assert agent.terminate(30) == 0, agent.log()[-3000:]
    assert collector.terminate(30) == 0, collector.log()[-3000:]
    nums = [int(bytes(r)[:9]) for c in read_chunks(final_files(primary)) for r in c.records()]
    assert sorted(set(nums)) == list(range(N))
    assert nums == sorted(nums) or len(nums) > N  # one stream, in order unless a resend duplicated a batch


def _records_in(root: Path) -> list[int]:
    """Record numbers in every sink file under root, finished or in progress (a torn tail is skipped)."""
    out = []
    for path in sorted(root.glob("*/*.seq*")) + sorted(root.glob("*/.*.inprogress")):
        with open(path, "rb") as f:
            try:
                for c in SequenceFileReader(f).iter_chunks():
                    out.extend(int(bytes(r)[:9]) for r in c.records())
            except SequenceFileError:
                pass
    return out


def test_collector_sigkill_mid_file_restart_recovers_and_nothing_acked_is_lost(tmp_path: Path,
                                                                                logflume_proc) -> None:
    n = 20000
    primary = tmp_path / "primary"
    port = free_port()
    collector_cfg = {
        "collector": {"name": "coll1", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "cdata"),
                      "shutdown_timeout": "20s"},
        "store": {"type": "buffer", "primary": {"url": str(primary)},
                  "secondary": {"dir": str(tmp_path / "secondary")}, "retry_interval": "500ms"},
    }
    agent_cfg = {
        "agent": {"name": "agent1", "data_dir": str(tmp_path / "adata"), "shutdown_timeout": "10s"},
        "sources": {"gen": {"type": "exec", "command": _generator(n, pause=0.05), "restart": "never",
                            "chunk_size": "16KiB", "flush_interval": "50ms", "channels": ["buf"]}},
        "channels": {"buf": {"type": "memory", "capacity": "64MiB"}},
        "sinks": {"fwd": {"type": "collector", "channel": "buf", "collectors": [f"127.0.0.1:{port}"],
                          "timeout": "5s", "cooldown": "200ms", "retry_initial": "50ms", "retry_max": "500ms"}},
    }
    collector, agent = start_collector_and_agent(logflume_proc, tmp_path, collector_cfg, agent_cfg)
    wait_for(lambda: len(_records_in(primary)) >= n // 5, 60, message="a part of the stream in the store")
    collector.kill()  # SIGKILL, mid-stream, with a file in progress
    assert list(primary.glob("*/.*.inprogress")), "the kill left a file in progress"
    before = set(_records_in(primary))
    assert len(before) < n

    collector2 = logflume_proc(["collector", "-c", tmp_path / "collector.yaml"], name="collector")
    wait_for(lambda: "ready:" in collector2.log() or not collector2.alive(), 20, message="collector restarted")
    assert collector2.alive(), collector2.log()[-3000:]
    wait_for(lambda: len(set(_records_in(primary))) == n, 90, message="the whole stream in the store")
    assert agent.terminate(30) == 0, agent.log()[-3000:]
    assert collector2.terminate(30) == 0, collector2.log()[-3000:]
    assert not list(primary.glob("*/.*")), "recovered at restart, closed at stop"
    nums = [int(bytes(r)[:9]) for c in read_chunks(final_files(primary)) for r in c.records()]
    assert set(nums) == set(range(n))
    assert before <= set(nums)  # what was written before the kill survived recovery
    assert len(nums) - n < n // 4  # duplicates only from batches re-sent around the kill
