"""What a contender cost: wall time, CPU seconds and peak RSS of every process it ran, lines lost.

Each contender's processes are started with :class:`Proc` and reaped with ``os.wait4``, whose
``rusage`` gives the exact user and system CPU seconds of that process (and of any children it
waited for) without psutil; peak RSS is ``/proc/PID/status`` ``VmHWM``, sampled while it runs
(every poll of the harness, and just before it is asked to stop).  Completeness is verified from
the sequence numbers in the output (:class:`SeqVerifier`), so it works on any output format.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.e2e.generator import SEQ_DIGITS, SEQ_MARK

_SEQ_RE = re.compile(re.escape(SEQ_MARK) + rb"(\d{%d})" % SEQ_DIGITS)


@dataclass
class ProcUsage:
    """Resources one process used over its whole life."""

    name: str
    cpu_user: float
    cpu_sys: float
    peak_rss: int  # bytes
    exit_code: int | None


class Proc:
    """A contender's process: started with its own log file, reaped with wait4 for exact usage."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid
        self.hwm = 0
        self.usage: ProcUsage | None = None
        self.cpu_base = (0.0, 0.0)  # (user, sys) spent before the measured interval: start-up

    def sample(self) -> None:
        """Record the current VmHWM (peak RSS so far) from /proc."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        self.hwm = max(self.hwm, int(line.split()[1]) * 1024)
                        break
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass

    def cpu_now(self) -> tuple[float, float]:
        """(user, sys) CPU seconds so far, from /proc/PID/stat (all threads)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            tick = os.sysconf("SC_CLK_TCK")
            return int(fields[11]) / tick, int(fields[12]) / tick
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            return 0.0, 0.0

    def mark_start(self) -> None:
        """Exclude CPU spent so far (interpreter start-up, config, connecting) from the usage."""
        self.cpu_base = self.cpu_now()

    def alive(self) -> bool:
        if self.usage is not None:
            return False
        try:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        self._reaped(status, ru)
        return False

    def _reaped(self, status: int, ru: Any) -> None:
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code
        # Peak RSS from VmHWM samples only: wait4's ru_maxrss keeps the high-water mark from before
        # exec (the forked copy of this harness), so it would report the harness's size.
        self.usage = ProcUsage(self.name, max(0.0, ru.ru_utime - self.cpu_base[0]),
                               max(0.0, ru.ru_stime - self.cpu_base[1]), self.hwm, code)
        self._log.close()

    def wait(self, timeout: float) -> ProcUsage:
        """Wait for the process to exit by itself; kill it (SIGKILL) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                self.send_signal(signal.SIGKILL)
                pid, status, ru = os.wait4(self.pid, 0)
                self._reaped(status, ru)
                break
            self.sample()
            time.sleep(0.02)
        assert self.usage is not None
        return self.usage

    def send_signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> ProcUsage:
        """Ask the process to stop (SIGTERM), wait, SIGKILL after ``timeout``; return its usage."""
        self.sample()
        if self.usage is None:
            self.send_signal(sig)
        return self.wait(timeout)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


class ProcGroup:
    """Every process of one contender run, sampled together and stopped in a given order."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, name: str, cmd: list[str], log: Path, **kw: Any) -> Proc:
        p = Proc(name, cmd, log, **kw)
        self.procs.append(p)
        return p

    def mark_start(self) -> None:
        """The measured interval starts now: start-up CPU of the processes running so far is excluded."""
        for p in self.procs:
            p.mark_start()

    def sample(self) -> None:
        for p in self.procs:
            if p.usage is None:
                p.sample()

    def check_alive(self) -> None:
        """Raise with the log tail when a process died before its time."""
        for p in self.procs:
            if not p.alive() and p.usage is not None and p.usage.exit_code not in (0, None):
                raise RuntimeError(f"{p.name} exited with {p.usage.exit_code}: {p.log_tail()}")

    def stop_all(self, timeout: float = 30.0) -> list[ProcUsage]:
        return [p.stop(timeout) for p in self.procs]

    def usages(self) -> list[ProcUsage]:
        return [p.usage for p in self.procs if p.usage is not None]


def wait_until(cond: Callable[[], bool], timeout: float, what: str, group: ProcGroup | None = None,
               interval: float = 0.02) -> None:
    """Poll ``cond`` until true; raise TimeoutError naming ``what``; also fail fast if a process died."""
    deadline = time.monotonic() + timeout
    while not cond():
        if group is not None:
            group.sample()
            group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class NewlineCounter:
    """Follows growing output files and counts their newlines: how many lines a peer has written."""

    def __init__(self, paths: Callable[[], Iterable[Path]]) -> None:
        self._paths = paths
        self._pos: dict[Path, int] = {}
        self.lines = 0
        self.last_growth = time.monotonic()
        self._buf = bytearray(8 << 20)

    def poll(self) -> int:
        view = memoryview(self._buf)
        for p in self._paths():
            try:
                with open(p, "rb", buffering=0) as f:
                    f.seek(self._pos.get(p, 0))
                    while True:
                        n = f.readinto(self._buf)
                        if not n:
                            break
                        self.lines += self._buf.count(b"\n", 0, n)
                        self._pos[p] = self._pos.get(p, 0) + n
                        self.last_growth = time.monotonic()
            except FileNotFoundError:
                continue
        view.release()
        return self.lines


class SeqVerifier:
    """Marks each sequence number seen in the output; reports lines lost and duplicated."""

    def __init__(self, total_lines: int) -> None:
        self.total = total_lines
        self.seen = bytearray(total_lines)
        self.duplicates = 0
        self.foreign = 0  # sequence numbers outside the data set: corruption

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        seen = self.seen
        total = self.total
        for m in _SEQ_RE.finditer(data):
            s = int(m.group(1))
            if s >= total:
                self.foreign += 1
            elif seen[s]:
                self.duplicates += 1
            else:
                seen[s] = 1

    def feed_file(self, path: Path, block: int = 16 << 20) -> None:
        """Feed a whole file, in blocks cut at line ends so no sequence number is split."""
        with open(path, "rb") as f:
            rest = b""
            while True:
                data = f.read(block)
                if not data:
                    break
                data = rest + data
                cut = data.rfind(b"\n") + 1
                self.feed(memoryview(data)[:cut] if cut else b"")
                rest = data[cut:]
            if rest:
                self.feed(rest)

    @property
    def present(self) -> int:
        return self.total - self.seen.count(0)

    @property
    def lost(self) -> int:
        return self.seen.count(0)

    def first_missing(self, n: int = 5) -> list[int]:
        out = []
        start = 0
        while len(out) < n:
            i = self.seen.find(0, start)
            if i < 0:
                break
            out.append(i)
            start = i + 1
        return out


@dataclass
class Result:
    """One contender in one variant, as the report shows it."""

    contender: str
    variant: str
    bytes: int
    lines: int
    seconds: float | None = None
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    peak_rss: dict[str, int] = field(default_factory=dict)
    lines_lost: int | None = None
    duplicates: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float | None:
        return self.bytes / 1e6 / self.seconds if self.seconds else None

    @property
    def lines_s(self) -> float | None:
        return self.lines / self.seconds if self.seconds else None

    @property
    def cpu_s_per_gb(self) -> float | None:
        if self.seconds is None:
            return None
        return (self.cpu_user + self.cpu_sys) / (self.bytes / 1e9)

    def add_usage(self, usages: Iterable[ProcUsage]) -> None:
        for u in usages:
            self.cpu_user += u.cpu_user
            self.cpu_sys += u.cpu_sys
            key = u.name
            i = 2
            while key in self.peak_rss:
                key = f"{u.name}#{i}"
                i += 1
            self.peak_rss[key] = u.peak_rss

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        """Rebuild from :meth:`to_json` output (to re-render a saved run's tables)."""
        known = {"contender", "variant", "bytes", "lines", "seconds", "mb_s", "lines_s", "cpu_user_s", "cpu_sys_s",
                 "cpu_s_per_gb", "peak_rss_bytes", "lines_lost", "duplicates", "error", "notes"}
        return cls(d["contender"], d["variant"], d["bytes"], d["lines"], d["seconds"], d["cpu_user_s"],
                   d["cpu_sys_s"], dict(d["peak_rss_bytes"]), d["lines_lost"], d["duplicates"], d["error"],
                   list(d["notes"]), {k: v for k, v in d.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        return {
            "contender": self.contender, "variant": self.variant, "bytes": self.bytes, "lines": self.lines,
            "seconds": self.seconds, "mb_s": self.mb_s, "lines_s": self.lines_s,
            "cpu_user_s": self.cpu_user, "cpu_sys_s": self.cpu_sys, "cpu_s_per_gb": self.cpu_s_per_gb,
            "peak_rss_bytes": self.peak_rss, "lines_lost": self.lines_lost, "duplicates": self.duplicates,
            "error": self.error, "notes": self.notes, **self.extra,
        }


def self_cpu() -> float:
    """CPU seconds of this process so far (the harness's own cost, reported apart)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
