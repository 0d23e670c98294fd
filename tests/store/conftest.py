"""A real OpenSSH ``sshd`` on a loopback port, with throwaway keys, serving SFTP from tmp_path."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.sequencefile import SequenceFileReader
from logflume.settings import parse_settings
from tests.conftest import free_port, sink_file_order, wait_for  # noqa: F401 - re-exported to the store tests

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd forks a monitor and a session process per connection)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Sshd:
    """One sshd (``-D -e``), stoppable and restartable on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None
        keys = root / "keys"
        keys.mkdir()
        self.host_key = keys / "host_ed25519"
        self.user_key = keys / "user_ed25519"
        for key in (self.host_key, self.user_key):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        (keys / "authorized_keys").write_text((keys / "user_ed25519.pub").read_text())
        self.config = keys / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {keys}/sshd.pid\n"
            f"AuthorizedKeysFile {keys}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n"
        )
        self.log = open(root / "sshd.log", "ab")

    def url(self, path: Path | str) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    @property
    def host_key_fingerprint(self) -> str:
        """The server's key as OpenSSH prints it (``SHA256:...``), read with ssh-keygen, not with our code."""
        out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()[1]

    def storage_options(self) -> dict:
        """Log in with the throwaway user key, trusting this server's host key by fingerprint."""
        return {"key_filename": str(self.user_key), "look_for_keys": False, "allow_agent": False,
                "host_key_fingerprint": self.host_key_fingerprint}

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(7).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the daemon and every session it forked: connections drop as if the server died."""
        if self.proc is None:
            return
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(agent_name="coll1", data_dir=tmp_path / "state")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH sshd is not installed (Debian package openssh-server)")
    d = tmp_path / "sshd"
    d.mkdir()
    server = Sshd(d)
    server.start()
    try:
        yield server
    finally:
        server.close()


# -- chunks in, chunks out ----------------------------------------------------

STREAMS = ("/var/log/a.log", "/var/log/b.log", "syslog:app")


class ChunkMaker:
    """Chunks of several streams with increasing seq_ids, like an agent sends them."""

    def __init__(self, source: str = "host1", size: int = 2000) -> None:
        self.source = source
        self.size = size
        self.offsets = dict.fromkeys(STREAMS, 0)
        self.count = 0

    def chunk(self, stream: str) -> Chunk:
        self.count += 1
        line = f"{stream} record {self.count} ".encode()
        data = (line * (self.size // len(line) + 1))[: self.size - 1] + b"\n"
        self.offsets[stream] += len(data)
        return Chunk(self.source, stream, "Raw", self.offsets[stream], "epoch-1", data, tags={"env": "test"})

    def batch(self, n: int = 6) -> list[Chunk]:
        return [self.chunk(STREAMS[i % len(STREAMS)]) for i in range(n)]


def read_chunks(paths: list[str] | list[Path], opener=open) -> list[Chunk]:
    out: list[Chunk] = []
    for p in paths:
        with opener(p, "rb") as f:
            out.extend(SequenceFileReader(f).iter_chunks())
    return out


def final_files(root: Path) -> list[Path]:
    """Finished sink files under a store root, in the order they were opened."""
    return sorted(root.glob("*/*.seq"), key=lambda p: sink_file_order(p.name))


def check_delivery(sent: list[Chunk], got: list[Chunk], max_duplicates: int) -> None:
    """Every sent chunk is there, per stream in order; duplicates are re-sends of earlier chunks, and few."""
    ids = {(c.stream, c.seq_id) for c in sent}
    seen: set[tuple[str, int]] = set()
    last: dict[str, int] = {}
    dups = 0
    for c in got:
        key = (c.stream, c.seq_id)
        assert key in ids, f"chunk {key} was never sent"
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        assert c.seq_id > last.get(c.stream, 0), f"{c.stream}: {c.seq_id} after {last.get(c.stream)}: out of order"
        last[c.stream] = c.seq_id
    missing = ids - seen
    assert not missing, f"{len(missing)} chunks missing, e.g. {sorted(missing)[:5]}"
    assert dups <= max_duplicates, f"{dups} duplicates (bound {max_duplicates})"
    by_key = {(c.stream, c.seq_id): c for c in sent}
    for c in got:
        assert bytes(c.data) == bytes(by_key[(c.stream, c.seq_id)].data)


def make_sink(cls, name: str, raw: dict, context: Context):
    return cls(name, parse_settings(cls.schema(), raw, name, None), context)


REPO = Path(__file__).resolve().parents[2]


def run_until_acked(module: str, args: list[str], tmp_path: Path, acks_before_kill: int) -> set[tuple[str, int]]:
    """Run ``python -m module args`` (a writer printing ``ack STREAM SEQ`` lines once each chunk is durable),
    SIGKILL it once it has printed this many acks; return every ack it printed, those that raced the kill too."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    acked: set[tuple[str, int]] = set()
    with open(tmp_path / "writer.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=log, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                _, stream, seq = line.decode().split()
                acked.add((stream, int(seq)))
                if len(acked) >= acks_before_kill:
                    proc.send_signal(signal.SIGKILL)
                    break
            for line in proc.stdout.read().decode().splitlines():  # acks printed before the kill landed
                _, stream, seq = line.split()
                acked.add((stream, int(seq)))
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    writer_log = (tmp_path / "writer.log").read_text()[-2000:]
    assert proc.returncode == -signal.SIGKILL, writer_log
    assert len(acked) >= acks_before_kill, writer_log
    return acked
