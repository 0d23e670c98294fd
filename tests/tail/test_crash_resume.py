"""SIGKILL at random points, restart: no byte lost, duplicates only in the last uncommitted batch."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tail.harness import by_epoch, epoch_bytes, start, wait_for
from tests.tail.sinks import read_chunks
from tests.tail.test_rotation_e2e import agent_config
from tests.tail.writer import RotatingWriter, line, numbers

CHUNK = 256 * 1024


def tail_proc(settings: dict, data_dir: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tail.tail_proc", json.dumps(settings), str(data_dir), str(out)],
        cwd=str(REPO), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )


def check_files_collected(chunks, files: list[Path]) -> int:
    """Every file is one epoch with exactly its bytes; returns duplicated bytes (overlapping deliveries)."""
    epochs = {}
    for stream in {c.stream for c in chunks}:
        epochs.update(by_epoch(chunks, stream))
    by_inode = {f"{f.stat().st_dev}:{f.stat().st_ino}:": f for f in files if f.stat().st_size}
    for epoch, group in epochs.items():
        f = by_inode[epoch.rsplit(":", 1)[0] + ":"]
        assert epoch_bytes(group) == f.read_bytes(), f"epoch {epoch} differs from {f}"
    assert len(epochs) == len(by_inode), "a file has no epoch (its bytes were lost)"
    return sum(len(c.data) for c in chunks) - sum(f.stat().st_size for f in by_inode.values())


def test_sigkill_at_random_points_loses_nothing(tmp_path):
    rnd = random.Random(int(os.environ.get("TAIL_SEED", time.time())))
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"")
    out = tmp_path / "out.bin"
    settings = {"paths": [str(log) + "*"], "chunk_size": CHUNK, "read_block_size": "64KiB",
                "flush_interval": "20ms", "scan_interval": "100ms", "rotate_wait": "300ms"}
    writer = RotatingWriter(log, "rename", rotate_every=0.05, pause=0.001)
    writer.start()
    kills = 0
    procs = []
    try:
        for _ in range(6):
            p = tail_proc(settings, tmp_path / "data", out, tmp_path / "proc.log")
            procs.append(p)
            time.sleep(rnd.uniform(0.15, 0.8))
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            kills += 1
            time.sleep(rnd.uniform(0, 0.2))
        writer.finish()
        files = [*writer.rotations, log]
        p = tail_proc(settings, tmp_path / "data", out, tmp_path / "proc.log")
        procs.append(p)
        expected = sum(f.stat().st_size for f in files)

        def unique_bytes() -> int:
            chunks = read_chunks(out)
            total = 0
            for stream in {c.stream for c in chunks}:
                total += sum(len(epoch_bytes(g)) for g in by_epoch(chunks, stream).values())
            return total

        wait_for(lambda: unique_bytes() >= expected, timeout=60, message="all bytes collected after restarts")
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        writer.stop_flag.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    duplicated = check_files_collected(read_chunks(out), files)
    print(f"{kills} kills, {len(files)} files, {expected} bytes, {duplicated} bytes delivered twice")
    # A kill between the channel commit and the position-file write re-reads that one batch.
    assert duplicated <= kills * 3 * CHUNK


def test_renamed_out_of_glob_while_down_is_finished_after_restart(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(line(n) for n in range(100)))
    settings = {"paths": [str(log)], "flush_interval": "20ms", "scan_interval": "100ms", "rotate_wait": "200ms"}
    r = start(tmp_path, settings)
    wait_for(lambda: r.stream_bytes(log) == log.read_bytes())
    r.source.stop()
    with open(log, "ab") as fh:
        fh.write(b"".join(line(n) for n in range(100, 150)))
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(b"".join(line(n) for n in range(150, 160)))
    r2 = start(tmp_path, settings)
    try:
        wait_for(lambda: sorted(numbers(r2.stream_bytes(log, from_zero=False))) == list(range(100, 160)),
                 message="rest of the renamed file and the new file")
    finally:
        r2.source.stop()


@pytest.mark.skipif(not (REPO / "agent" / "channels" / "file.py").exists(), reason="needs the file channel")
def test_agent_sigkill_with_file_channel(tmp_path, logflume_proc):
    """The whole agent (tail -> file channel -> durable sink) killed -9 while a writer rotates."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"")
    out = tmp_path / "out.bin"
    cfg = agent_config(tmp_path, [str(log) + "*"], out, channel={"type": "file"}, chunk_size=CHUNK,
                       rotate_wait="300ms")
    writer = RotatingWriter(log, "rename", rotate_every=0.1, pause=0.001)
    writer.start()
    rnd = random.Random()
    try:
        for i in range(3):
            agent = logflume_proc(["agent", "-c", cfg], name=f"agent{i}")
            time.sleep(rnd.uniform(0.8, 1.5))
            agent.kill()
        writer.finish()
        files = [*writer.rotations, log]
        expected = sum(f.stat().st_size for f in files)
        agent = logflume_proc(["agent", "-c", cfg], name="final")

        def unique_bytes() -> int:
            chunks = read_chunks(out)
            return sum(len(epoch_bytes(g)) for s in {c.stream for c in chunks} for g in by_epoch(chunks, s).values())

        wait_for(lambda: unique_bytes() >= expected, timeout=90, message="all bytes through the agent")
        assert agent.terminate() == 0, agent.log()
    finally:
        writer.stop_flag.set()
    duplicated = check_files_collected(read_chunks(out), files)
    print(f"agent: 3 kills, {len(files)} files, {expected} bytes, {duplicated} bytes delivered twice")
