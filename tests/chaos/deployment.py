"""The deployment under test, every part a real process on 127.0.0.1: sshd (SFTP primary), two collectors, three agents.

Collectors share one SFTP primary (a real OpenSSH ``sshd``, started the way
tests/store does it, with throwaway keys) and each has a small local
secondary, so an sshd outage fills it to its limit and TRY_LATER is
exercised.  Agent ``afile`` has a file channel (the full promise) and one
tail source per file-channel case, agent ``amem`` a memory channel (the
weaker one), agent ``atwin`` a file channel and the name ``afile``
(``tests/chaos/cases.py``).  Each process's peak RSS is sampled from
``/proc/PID/status`` (VmHWM), kept across restarts.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from agent.sources.tail.identity import FINGERPRINT_BYTES, fingerprint
from tests.chaos.cases import AGENT_NAMES, AGENTS, CASES
from tests.store.conftest import Sshd

REPO = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1
COLLECTORS = ("c1", "c2")
#: Secondary size limits: small, so that a long primary outage fills them (TRY_LATER).
SECONDARY_MAX = {"c1": "1MiB", "c2": "256KiB"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """preexec_fn: the kernel SIGKILLs this child if the runner dies, so no process outlives a run."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Process:
    """A child process that can be killed, stopped, continued and restarted with the same command."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.peak_kib = 0
        self.starts = 0
        self.stopped = False  # SIGSTOPped

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO, env=env, preexec_fn=die_with_parent)
        self.starts += 1
        self.stopped = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> None:
        if self.alive():
            self.peak_kib = max(self.peak_kib, peak_rss_kib(self.pid))

    def send(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)  # type: ignore[union-attr]
            if sig == signal.SIGSTOP:
                self.stopped = True
            elif sig == signal.SIGCONT:
                self.stopped = False

    def kill(self) -> None:
        self.sample()
        if self.alive():
            self.send(signal.SIGCONT)
            self.proc.kill()  # type: ignore[union-attr]
            self.proc.wait(10)  # type: ignore[union-attr]

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        self.sample()
        if self.alive():
            self.send(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def scrape(port: int) -> dict[str, float]:
    """Prometheus text from 127.0.0.1:PORT as {'name{labels}': value}; empty when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def committed(entries: list[dict], path: Path) -> int:
    """What a position file's entries say was committed of the file at ``path``, found by its content.

    A file is matched by the fingerprint of its first bytes, not by its inode: a file moved by copying
    (a new inode) is the same generation, and an inode freed by an unlink may already hold a new file.
    A copy that the agent never had to read (its bytes came through the original) has no entry: it
    counts as committed, as its original was waited for while it was at a watched path.
    """
    with open(path, "rb") as f:
        head = f.read(FINGERPRINT_BYTES)
    best = None
    for e in entries:
        n = e.get("fp_len", 0)
        if len(head) >= n and fingerprint(head[:n]) == e.get("fp"):
            best = max(best or 0, int(e.get("offset", 0)))
    return path.stat().st_size if best is None and path.name.count(".log.") else (best or 0)


class Deployment:
    """Builds configs under ``root`` and runs every process; ``close()`` leaves nothing running."""

    def __init__(self, root: Path, *, agent_chunk_flush: str = "1s") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for case in CASES:
            (root / "logs" / case.name).mkdir(parents=True, exist_ok=True)
        self.primary = root / "primary"
        self.primary.mkdir(exist_ok=True)
        sshd_dir = root / "sshd"
        sshd_dir.mkdir(exist_ok=True)
        self.sshd = Sshd(sshd_dir)
        self.ports = {name: free_port() for name in COLLECTORS}
        self.metric_ports = {name: free_port() for name in (*COLLECTORS, *AGENTS)}
        self.procs: dict[str, Process] = {}
        py = sys.executable
        for name in COLLECTORS:
            cfg = root / f"{name}.yaml"
            cfg.write_text(self._collector_yaml(name))
            self.procs[name] = Process(name, [py, "-m", "logflume", "collector", "-c", str(cfg)],
                                       root / f"{name}.log")
        for name in AGENTS:
            cfg = root / f"{name}.yaml"
            cfg.write_text(self._agent_yaml(name, agent_chunk_flush))
            self.procs[name] = Process(name, [py, "-m", "logflume", "agent", "-c", str(cfg)], root / f"{name}.log")
        self.undrained: tuple[str, str, Path] | None = None  # (agent, case, file) drained() last waited for
        self._sampler_stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_loop, name="rss-sampler", daemon=True)

    # -- configs --------------------------------------------------------------------------------

    def _collector_yaml(self, name: str) -> str:
        opts = json.dumps(self.sshd.storage_options())
        return (
            "collector:\n"
            f"  name: {name}\n"
            f"  listen: 127.0.0.1:{self.ports[name]}\n"
            f"  data_dir: {self.root / name}\n"
            f"  metrics: 127.0.0.1:{self.metric_ports[name]}\n"
            "  idle_timeout: 30s\n"
            "  frame_timeout: 10s\n"
            "  max_frame_size: 16MiB\n"
            "  shutdown_timeout: 20s\n"
            "store:\n"
            "  type: buffer\n"
            "  primary:\n"
            "    type: seqfile\n"
            f"    url: {self.sshd.url(self.primary)}\n"
            f"    collector_name: {name}\n"
            "    roll_interval: 15s\n"
            "    timeout: 5s\n"
            f"    storage_options: {opts}\n"
            f"  secondary: {{dir: {self.root / name / 'secondary'}, max_bytes: {SECONDARY_MAX[name]}}}\n"
            "  retry_interval: 2s\n"
        )

    def _agent_yaml(self, name: str, flush: str) -> str:
        channel = (f"{{type: file, capacity: 256MiB, dir: {self.root / name / 'channel'}}}" if name != "amem"
                   else "{type: memory, capacity: 64MiB}")
        collectors = ", ".join(f"127.0.0.1:{self.ports[c]}" for c in COLLECTORS)
        sources = ""
        for case in CASES:
            if name not in case.agents:
                continue
            tags = f"    tags: {{reader: {name}}}\n" if len(case.agents) > 1 else ""
            sources += (
                f"  {case.name}:\n"
                "    type: tail\n"
                f"    paths: ['{self.logs(case.name)}/{case.glob}']\n"
                "    channels: [buf]\n"
                f"{tags}"
                f"    flush_interval: {flush}\n"
                "    scan_interval: 1s\n"
                "    rotate_wait: 3s\n"
            )
        return (
            f"agent: {{name: {AGENT_NAMES[name]}, data_dir: {self.root / name},"
            f" metrics: 127.0.0.1:{self.metric_ports[name]}, shutdown_timeout: 20s}}\n"
            f"sources:\n{sources}"
            "channels:\n"
            f"  buf: {channel}\n"
            "sinks:\n"
            "  up:\n"
            "    type: collector\n"
            "    channel: buf\n"
            f"    collectors: [{collectors}]\n"
            "    timeout: 5s\n"
            "    cooldown: 1s\n"
            "    batch_bytes: 4MiB\n"
            "    retry_max: 3s\n"
        )

    def logs(self, case: str) -> Path:
        return self.root / "logs" / case

    def positions(self, agent: str, case: str) -> Path:
        return self.root / agent / "source" / case / "positions.json"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.sshd.start()
        for name in COLLECTORS:
            self.procs[name].start()
        for name in COLLECTORS:
            self.wait_listening(name)
        for name in AGENTS:
            self.procs[name].start()
        self._sampler.start()

    def wait_listening(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ports[name]), timeout=1).close()
                return
            except OSError:
                p = self.procs[name]
                if not p.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not listening: {p.log_tail()}") from None
                time.sleep(0.1)

    def _sample_loop(self) -> None:
        while not self._sampler_stop.wait(0.5):
            for p in self.procs.values():
                p.sample()

    def heal(self) -> None:
        """Every process running and not stopped, sshd up: the state drain starts from."""
        if self.sshd.proc is None:
            self.sshd.start()
        for name in (*COLLECTORS, *AGENTS):
            p = self.procs[name]
            if p.stopped:
                p.send(signal.SIGCONT)
            if not p.alive():
                p.start()

    def drained(self) -> tuple[bool, str]:
        """True when every written byte is committed by every agent that tails it, channels are empty and
        no collector holds a backlog."""
        for agent in AGENTS:
            p = self.procs[agent]
            if not p.alive():
                return False, f"{agent} not running (exit {p.proc.returncode if p.proc else None})"
        for case in CASES:
            for agent in case.agents:
                try:
                    doc = json.loads(self.positions(agent, case.name).read_bytes())
                except (OSError, ValueError):
                    return False, f"{agent}: no positions of {case.name} yet"
                entries = doc.get("files", [])
                for f in self.logs(case.name).iterdir():
                    if ".log" not in f.name:  # copies named ct-*.copy are not followed
                        continue
                    size = f.stat().st_size
                    done = committed(entries, f)
                    if done < size:
                        self.undrained = (agent, case.name, f)
                        return False, f"{agent}: {case.name}/{f.name} committed {done} of {size}"
        for agent in AGENTS:
            m = scrape(self.metric_ports[agent])
            if not m or metric_sum(m, "logflume_channel_fill_chunks") != 0:
                return False, f"{agent}: channel not empty ({metric_sum(m, 'logflume_channel_fill_chunks')})"
        for name in COLLECTORS:
            m = scrape(self.metric_ports[name])
            if not m:
                return False, f"{name}: no metrics"
            if metric_sum(m, "logflume_backlog_bytes") != 0 or metric_sum(m, "logflume_primary_up") != 1:
                return False, (f"{name}: backlog {metric_sum(m, 'logflume_backlog_bytes'):.0f} bytes, "
                               f"primary_up {metric_sum(m, 'logflume_primary_up'):.0f}")
        return True, "drained"

    def explain_undrained(self) -> str:
        """What the agent knew of the file ``drained`` last found not committed: its position entries with
        the file's first bytes or inode, and the agent's last log lines about that case (a failed run's
        work directory may not be kept)."""
        if self.undrained is None:
            return ""
        agent, case, path = self.undrained
        try:
            st = path.stat()
            with open(path, "rb") as fh:
                head = fh.read(FINGERPRINT_BYTES)
            entries = json.loads(self.positions(agent, case).read_bytes()).get("files", [])
        except (OSError, ValueError) as exc:
            return f"\n(cannot explain: {exc})"
        mine = [e for e in entries if e.get("ino") == st.st_ino
                or fingerprint(head[:e.get("fp_len", 0)]) == e.get("fp")]
        lines = [f"\n{path.name}: inode {st.st_ino}, {st.st_size} bytes; its position entries:"]
        lines += [f"  {json.dumps(e, sort_keys=True)}" for e in mine]
        logger = f"logflume.source.{case}:"
        log = [line for line in self.procs[agent].log_tail(1 << 22).splitlines() if logger in line]
        lines.append(f"{agent}'s last {min(len(log), 25)} lines of {logger}")
        lines += log[-25:]
        return "\n".join(lines)

    def stop(self) -> dict[str, int | None]:
        """Agents then collectors by SIGTERM (collectors close their files); exit codes by name."""
        codes = {}
        for name in (*AGENTS, *COLLECTORS):
            codes[name] = self.procs[name].terminate(60)
        return codes

    def close(self) -> None:
        self._sampler_stop.set()
        for p in self.procs.values():
            p.kill()
        self.sshd.close()

    def count_in_logs(self, names: tuple[str, ...], needle: str) -> int:
        """How many log lines of these processes mention ``needle`` (e.g. TRY_LATER answers agents got)."""
        total = 0
        for name in names:
            try:
                with open(self.procs[name].log_path, "rb") as f:
                    total += sum(1 for line in f if needle.encode() in line)
            except OSError:
                pass
        return total

    def peaks_mib(self) -> dict[str, float]:
        return {name: round(p.peak_kib / 1024, 1) for name, p in self.procs.items()}
