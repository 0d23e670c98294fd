"""A real agent process with one network source, for the hostile-client tests of the listeners.

The agent is ``python -m logflume agent`` (memory channel, a RecordingSink writing
the chunks to a file); its peak resident memory (VmHWM) and thread count are read from
``/proc/PID/status``, after ``clear_refs`` reset the peak to the idle level.
"""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from logflume.testing.recording_sink import read_chunks
from tests.conftest import proc_status, wait_for


def peak_mib(pid: int) -> float:
    return proc_status(pid, "VmHWM") / 1024


def rss_mib(pid: int) -> float:
    return proc_status(pid, "VmRSS") / 1024


def threads(pid: int) -> int:
    return proc_status(pid, "Threads")


def reset_peak(pid: int) -> None:
    """Make VmHWM the current RSS, so the next peak is the attack's own."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


def can_connect(port: int, source_ip: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5, source_address=(source_ip, 0)).close()
        return True
    except OSError:
        return False


class Agent:
    """One agent subprocess around ``source`` (a mapping for YAML) on loopback."""

    def __init__(self, logflume_proc, tmp_path: Path, source: dict, *, port: int) -> None:
        self.out = tmp_path / "out.chunks"
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(yaml.safe_dump({
            "agent": {"name": "victim", "data_dir": str(tmp_path / "data")},
            "sources": {"src": {**source, "channels": ["mem"]}},
            "channels": {"mem": {"type": "memory"}},
            "sinks": {"out": {"type": "logflume.testing.recording_sink:RecordingSink", "channel": "mem",
                                      "path": str(self.out)}},
        }))
        self.config = cfg
        self.port = port
        self.proc = logflume_proc(["agent", "-c", cfg], name="agent")

    def wait_listening(self) -> None:
        wait_for(lambda: can_connect(self.port) or not self.proc.alive(), 30, message="agent listening")
        assert self.proc.alive(), self.proc.log()[-3000:]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def records(self) -> list[str]:
        """Every record the sink got so far."""
        return [r for c in read_chunks(self.out) for r in bytes(c.data).decode("utf-8", "replace").splitlines()]
