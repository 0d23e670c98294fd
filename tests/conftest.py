"""Shared fixtures: free loopback ports and real `logflume` subprocesses that are always cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sinks.naming import FINAL

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sink_file_order(name: str) -> tuple[str, int, str]:
    """Sort key giving a collector's sink files (``sinks.naming.FINAL``) in the order they were opened.

    Only tests need the order (to read a collector's files back as it wrote them); the runtime never sorts so.
    """
    base = name.rsplit("/", 1)[-1]
    m = FINAL.match(base)
    return (m.group("stamp"), int(m.group("n")), base) if m else ("", 0, base)


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` number (KiB for the Vm* fields: VmHWM peak resident set, VmRSS current)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, message: str = "condition"):
    """Poll until ``predicate()`` is truthy; fail the test with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class LogflumeProcess:
    """A `python -m logflume ...` child with its stderr captured to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None, stdin=None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logflume", *args], stdout=self._log, stderr=subprocess.STDOUT,
            stdin=stdin if stdin is not None else subprocess.DEVNULL, cwd=str(REPO), env=full_env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = self.log()[-3000:]
            raise AssertionError(f"process did not stop within {timeout}s after SIGTERM:\n{tail}") from None

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()


@pytest.fixture
def logflume_proc(tmp_path):
    """Factory: ``logflume_proc(["agent", "-c", cfg])`` starts a real process, killed at teardown."""
    procs: list[LogflumeProcess] = []

    def start(args: list[str], name: str = "proc", **kw) -> LogflumeProcess:
        p = LogflumeProcess([str(a) for a in args], tmp_path / f"{name}-{len(procs)}.log", **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


@pytest.fixture(scope="session")
def gen(tmp_path_factory):
    """Python code for the official Scribe and Flume Thrift clients (Apache Thrift's compiler), made once."""
    from tests.wire.official import generate

    return generate(tmp_path_factory.mktemp("gen-py"))
