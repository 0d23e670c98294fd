"""Many files with few descriptors, a 200 MiB line, and files we may not read."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from logflume.chunk import FLAG_SPLIT
from logflume.testing.recording_sink import read_chunks
from tests.conftest import REPO
from tests.tail.harness import start, wait_for


def open_fds_under(directory: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory) + "/"):  # files, not the dir a scan reads
                n += 1
        except OSError:
            pass
    return n


def test_5000_files_with_100_descriptors(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    n_files = 5000
    for i in range(n_files):
        (logs / f"f{i:05d}.log").write_bytes(b"file %05d line 1\n" % i)
    r = start(tmp_path, {"paths": [str(logs / "*.log")], "max_open_files": 100, "flush_interval": "50ms",
                         "scan_interval": "1s", "close_inactive": "2s"})
    try:
        max_open = 0

        def done(expect_lines: int) -> bool:
            nonlocal max_open
            max_open = max(max_open, int(r.metric("tail_files_open")))
            chunks = r.output.snapshot()
            return sum(bytes(c.data).count(b"\n") for c in chunks) >= expect_lines

        wait_for(lambda: done(n_files), timeout=90, interval=0.1, message="first line of every file")
        for i in range(0, n_files, 7):  # files closed for lack of descriptors grow: reopened by identity
            with open(logs / f"f{i:05d}.log", "ab") as fh:
                fh.write(b"file %05d line 2\n" % i)
        grown = len(range(0, n_files, 7))
        wait_for(lambda: done(n_files + grown), timeout=90, interval=0.1, message="second lines")
        assert max_open <= 100
        # /proc/self/fd cannot be listed atomically while descriptors churn: compare once idle.
        time.sleep(0.3)
        assert open_fds_under(logs) == r.source.open_count <= 100
        for i in (0, 7, 4998, 4999):
            want = b"file %05d line 1\n" % i + (b"file %05d line 2\n" % i if i % 7 == 0 else b"")
            assert r.stream_bytes(logs / f"f{i:05d}.log") == want
        assert r.metric("tail_files_tracked") == n_files
    finally:
        r.source.stop()
        shutil.rmtree(logs, ignore_errors=True)


def test_200mib_single_line_split_into_flagged_pieces(tmp_path):
    size = 200 * 1024 * 1024
    log = tmp_path / "huge.log"
    block = (b"0123456789abcdef" * 65536)  # 1 MiB
    h = hashlib.sha256()
    with open(log, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
            h.update(block)
        fh.write(b"\nnext\n")
        h.update(b"\nnext\n")
    r = start(tmp_path, {"paths": [str(log)], "chunk_size": "64MiB", "read_block_size": "8MiB",
                         "flush_interval": "50ms"})
    try:
        wait_for(lambda: sum(len(c.data) for c in r.output.snapshot()) == size + 6, timeout=120,
                 message="200 MiB collected")
        chunks = r.output.snapshot()
        assert [len(c.data) for c in chunks[:3]] == [64 << 20] * 3
        assert all(FLAG_SPLIT in c.flags for c in chunks[:3])
        assert FLAG_SPLIT not in chunks[3].flags and bytes(chunks[3].data).startswith(b"0123")
        got = hashlib.sha256()
        for c in chunks:
            got.update(c.data)
        assert got.digest() == h.digest()
        assert [c.seq_id for c in chunks][:3] == [64 << 20, 128 << 20, 192 << 20]
    finally:
        r.source.stop()
        log.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_unreadable_file_reported_and_skipped_rest_flows():
    base = Path(tempfile.mkdtemp(prefix="tail-perm-", dir="/tmp"))
    try:
        base.chmod(0o777)
        logs = base / "logs"
        logs.mkdir()
        logs.chmod(0o755)
        (logs / "secret.log").write_bytes(b"secret\n")
        (logs / "secret.log").chmod(0o600)  # root's, unreadable for nobody
        (logs / "ok.log").write_bytes(b"ok 1\n")
        (logs / "ok.log").chmod(0o644)
        out = base / "out.bin"
        settings = {"paths": [str(logs / "*.log")], "flush_interval": "20ms", "scan_interval": "100ms"}
        env = {**os.environ, "PYTHONPATH": str(REPO), "TAIL_PROC_UID": "65534"}
        log = open(base / "proc.log", "wb")
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.tail.tail_proc", __import__("json").dumps(settings), str(base / "data"),
             str(out)], cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: [bytes(c.data) for c in read_chunks(out)] == [b"ok 1\n"] or p.poll() is not None,
                     timeout=30, message="ok.log collected")
            assert p.poll() is None, (base / "proc.log").read_text()
            with open(logs / "ok.log", "ab") as fh:
                fh.write(b"ok 2\n")
            wait_for(lambda: b"".join(bytes(c.data) for c in read_chunks(out)) == b"ok 1\nok 2\n", timeout=30)
            text = (base / "proc.log").read_text()
            assert f"cannot read {logs / 'secret.log'} (Permission denied)" in text
            assert text.count("cannot read") == 1  # reported once, not on every scan
            time.sleep(0.3)
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 0, (base / "proc.log").read_text()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            log.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
