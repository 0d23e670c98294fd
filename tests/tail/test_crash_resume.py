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

from logflume.testing.recording_sink import read_chunks
from tests.conftest import REPO
from tests.tail.harness import by_epoch, epoch_bytes, start, wait_for
from tests.tail.test_rotation_e2e import agent_config, empty_log
from tests.tail.writer import RotatingWriter, line, numbers

CHUNK = 256 * 1024


def tail_proc(settings: dict, data_dir: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tail.tail_proc", json.dumps(settings), str(data_dir), str(out)],
        cwd=str(REPO), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )


def check_files_collected(chunks, files: list[Path]) -> int:
    """Every file is one epoch under one stream with exactly its bytes; returns duplicated bytes."""
    epochs: dict[str, list] = {}
    for c in chunks:
        epochs.setdefault(c.epoch, []).append(c)
    by_inode = {f"{f.stat().st_dev}:{f.stat().st_ino}:": f for f in files if f.stat().st_size}
    for epoch, group in epochs.items():
        f = by_inode[epoch.rsplit(":", 1)[0] + ":"]
        streams = {c.stream for c in group}
        assert len(streams) == 1, f"epoch {epoch} of {f.name} under several streams {sorted(streams)}"
        assert epoch_bytes(group) == f.read_bytes(), f"epoch {epoch} differs from {f}"
    assert len(epochs) == len(by_inode), "a file has no epoch (its bytes were lost)"
    return sum(len(c.data) for c in chunks) - sum(f.stat().st_size for f in by_inode.values())


def coverage(chunks, files: list[Path]) -> dict[str, tuple[int, int]]:
    """File name -> (bytes collected, size), by content: a duplicate under another stream adds nothing."""
    got: dict[str, int] = {}
    for stream in {c.stream for c in chunks}:
        for epoch, group in by_epoch(chunks, stream).items():
            key = epoch.rsplit(":", 1)[0] + ":"
            got[key] = max(got.get(key, 0), len(epoch_bytes(group)))
    return {f.name: (got.get(f"{f.stat().st_dev}:{f.stat().st_ino}:", 0), f.stat().st_size) for f in files}


def sigkill_at_random_points(tmp_path: Path, seed: int) -> str:
    """Six SIGKILLs of a tail process while a writer rotates by rename every 50 ms, then a final run.

    Every byte must be collected (counted per file, by content), each file under one stream and epoch,
    with duplicates only from batches committed while the last position write was in progress.
    """
    print(f"sigkill seed {seed} (TAIL_SEED={seed} repeats it)")
    rnd = random.Random(seed)
    log, out = empty_log(tmp_path)
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
        started = time.monotonic()

        def short() -> dict[str, tuple[int, int]]:
            return {n: v for n, v in coverage(read_chunks(out), files).items() if v[0] < v[1]}

        try:
            wait_for(lambda: not short(), timeout=60, interval=0.1, message="all bytes collected after restarts")
        except AssertionError:
            alive = "running" if p.poll() is None else f"exited {p.returncode}"
            raise AssertionError(f"seed {seed}: after 60 s the final process ({alive}) still misses bytes of "
                                 f"{len(short())} file(s) (collected, size): {dict(list(short().items())[:5])}; "
                                 f"its log: {(tmp_path / 'proc.log').read_text()[-2000:]}") from None
        took = time.monotonic() - started
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        writer.stop_flag.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    duplicated = check_files_collected(read_chunks(out), files)
    # A kill between the channel commit and the position-file write re-reads that one batch.
    assert duplicated <= kills * 3 * CHUNK, f"seed {seed}: {duplicated} bytes delivered twice"
    return (f"seed {seed}: {kills} kills, {len(files)} files, {expected} bytes, {duplicated} bytes delivered "
            f"twice, final run collected the rest in {took:.1f} s")


def test_sigkill_at_random_points_loses_nothing(tmp_path):
    seed = int(os.environ.get("TAIL_SEED", random.randrange(1 << 30)))
    print(sigkill_at_random_points(tmp_path, seed))


class BusyLoops:
    """Processes that spin on every core for at most ``seconds``: the test runs under CPU load."""

    def __init__(self, n: int, seconds: float) -> None:
        code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]

    def __enter__(self) -> BusyLoops:
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)


def test_sigkill_several_seeds_under_cpu_load(tmp_path):
    """The same, for several seeds, beside busy loops on every core (it once failed under load only)."""
    # 12 was reported failing under load; the kill points also depend on timing, so each run differs.
    seeds = [12, 114, 306, random.randrange(1 << 30)]
    with BusyLoops(os.cpu_count() or 2, seconds=90):
        for seed in seeds:
            print(sigkill_at_random_points(tmp_path / str(seed), seed))


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
    log, out = empty_log(tmp_path)
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
