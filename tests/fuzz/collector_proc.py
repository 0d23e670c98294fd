"""A real collector process (``python -m logflume collector``) for the wire fuzz tests, with its memory readable."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port, proc_status

REPO = Path(__file__).resolve().parents[2]


class CollectorProcess:
    """Collector with logflume, scribe and flume listeners and a local store, under an address-space limit."""

    def __init__(self, root: Path, *, max_frame_size: str = "16MiB", as_limit: int = 2 << 30,
                 extra: str = "") -> None:
        """``extra``: more ``collector:`` settings, as YAML lines indented by two spaces."""
        self.root = root
        self.ports = {"logflume": free_port(), "scribe": free_port(), "flume": free_port()}
        self.store = root / "store"
        self.config = root / "collector.yaml"
        self.config.write_text(
            "collector:\n"
            "  name: fuzzcoll\n"
            f"  listen: 127.0.0.1:{self.ports['logflume']}\n"
            f"  scribe: 127.0.0.1:{self.ports['scribe']}\n"
            f"  flume: 127.0.0.1:{self.ports['flume']}\n"
            f"  data_dir: {root / 'data'}\n"
            f"  max_frame_size: {max_frame_size}\n"
            "  idle_timeout: 3s\n"
            "  frame_timeout: 2s\n"
            "  max_connections: 64\n"
            f"{extra}"
            "store:\n"
            "  type: buffer\n"
            f"  primary: {{type: seqfile, url: {self.store}, roll_interval: 1h, collector_name: fuzzcoll}}\n"
            f"  secondary: {{dir: {root / 'secondary'}}}\n"
        )
        self.log_path = root / "collector.log"
        self._log = open(self.log_path, "ab")
        self.as_limit = as_limit
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        limit = self.as_limit

        def cap() -> None:  # a runaway allocation fails in the collector instead of taking the machine
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "logflume", "collector", "-c", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, env=env, preexec_fn=cap)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                for port in self.ports.values():
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"collector did not listen: {self.log()[-2000:]}") from None
                time.sleep(0.05)

    def restart(self) -> None:
        """Start again after a crash (same ports, same store); the crash stays in the log."""
        if self.alive():
            return
        self.restarts = getattr(self, "restarts", 0) + 1
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_mib(self) -> float:
        assert self.proc is not None
        return proc_status(self.proc.pid, "VmHWM") / 1024

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_quiet(self, timeout: float = 90.0) -> None:
        """Wait until the collector stops burning CPU (work a hostile frame caused is over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            before = self.cpu_seconds()
            time.sleep(0.5)
            if self.cpu_seconds() - before < 0.1:
                return

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (``clear_refs`` 5), so the next peak is this test's own."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (drain and close the store's files); SIGKILL if it does not exit in 30 s."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


class Cost:
    """What an attack cost a collector: peak RSS growth (VmHWM after a reset), CPU and wall time."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.peak_growth_mib = self.seconds = self.cpu_seconds = 0.0

    def __enter__(self) -> Cost:
        self.collector.wait_quiet()
        self.collector.reset_peak()
        self._rss = self.collector.peak_rss_mib()
        self._cpu = self.collector.cpu_seconds()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._t0
        self.collector.wait_quiet()
        self.peak_growth_mib = self.collector.peak_rss_mib() - self._rss
        self.cpu_seconds = self.collector.cpu_seconds() - self._cpu

    def __str__(self) -> str:
        return f"peak RSS +{self.peak_growth_mib:.0f} MiB, {self.seconds:.1f} s, {self.cpu_seconds:.2f} s CPU"


def stored_chunks(store: Path) -> list:
    """Every chunk in the SequenceFiles under ``store`` (stop the collector first, so every file is closed)."""
    from logflume.sequencefile import SequenceFileReader

    out = []
    for path in sorted(store.rglob("*.seq")):
        with open(path, "rb") as f:
            out.extend(SequenceFileReader(f).iter_chunks())
    return out
