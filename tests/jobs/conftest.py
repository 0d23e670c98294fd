"""Fixtures for the jobs tests: real sink files, as collectors write them, with real duplicates."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logflume.chunk import Chunk
from logflume.sequencefile import BYTES_WRITABLE, TEXT, SequenceFileReader, SequenceFileWriter

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "jobs"
HOUR_MS = 3_600_000
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def write_sink_file(path: Path, chunks: list[Chunk], compression: str = "NONE", codec: str | None = None) -> Path:
    """A finished sink file: written under a hidden name, renamed when closed (as the store does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("_" + path.name)
    with open(tmp, "wb") as f:
        w = SequenceFileWriter(f, key_class=TEXT, value_class=BYTES_WRITABLE, compression=compression, codec=codec,
                               metadata={"logflume.writer": "test"})
        for c in chunks:
            w.append_chunk(c)
        w.close()
    os.replace(tmp, path)
    return path


def read_seq_chunks(path: Path) -> list[Chunk]:
    with open(path, "rb") as f:
        return [Chunk(**_copy(c)) for c in SequenceFileReader(f).iter_chunks()]


def _copy(c: Chunk) -> dict:
    return {"source": c.source, "stream": c.stream, "datatype": c.datatype, "seq_id": c.seq_id, "epoch": c.epoch,
            "data": bytes(c.data), "tags": c.tags, "record_ends": c.record_ends, "timestamp": c.timestamp,
            "flags": c.flags, "sender": c.sender}


@dataclass
class SinkSet:
    """Sink files on disk plus the truth: every stream's full bytes."""

    root: Path
    streams: dict[tuple[str, str, str], bytearray] = field(default_factory=dict)
    datatypes: dict[tuple[str, str, str], str] = field(default_factory=dict)
    chunks_written: int = 0


def make_sink_set(root: Path, seed: int = 1, n_streams: int = 6, lines: int = 400, collectors: int = 3,
                  files_per_collector: int = 4, dup_rate: float = 0.3, hours: int = 3) -> SinkSet:
    """Streams chunked differently per delivery, spread over collectors' files, with retries and re-reads.

    Each stream is delivered once in full (split among collectors); then some of its chunks are delivered
    again (a retry after a lost ack: same bytes to another collector) and some ranges re-read from an
    earlier checkpoint with different chunk boundaries (overlaps).
    """
    rng = random.Random(seed)
    out = SinkSet(root)
    pool: list[Chunk] = []
    dts = ["SysLog", "NginxAccess", "AppJSON", "Raw"]
    for s in range(n_streams):
        key = (f"host{s % 3}", f"/var/log/app{s}.log", f"ino-{s}")
        dt = dts[s % len(dts)]
        body = bytearray()
        ends = []
        for i in range(lines):
            body += f"{key[0]} app{s} line {i} {'x' * rng.randrange(0, 60)}\n".encode()
            ends.append(len(body))
        out.streams[key] = body
        out.datatypes[key] = dt

        def cut(pos: int, explicit: bool, key=key, dt=dt, body=body, ends=ends) -> Chunk:
            cands = [e for e in ends if e > pos][: rng.randrange(1, 20)]
            end = cands[-1]
            ts = T0 + (pos * hours * HOUR_MS) // len(body) + rng.randrange(0, 1000)
            rec = [e - pos for e in ends if pos < e <= end] if explicit else None
            return Chunk(source=key[0], stream=key[1], datatype=dt, seq_id=end, epoch=key[2],
                         data=bytes(body[pos:end]), tags={"env": "test"}, record_ends=rec, timestamp=ts)

        pos = 0
        first: list[Chunk] = []
        while pos < len(body):
            c = cut(pos, explicit=s % 2 == 0)
            first.append(c)
            pos = c.seq_id
        pool.extend(first)
        for c in first:
            if rng.random() < dup_rate:
                pool.append(c)  # exact retry
            if rng.random() < dup_rate / 2:  # re-read from an earlier checkpoint: new boundaries
                start = rng.choice([0] + [e for e in ends if e < c.start])
                pos = start
                while pos < c.seq_id:
                    r = cut(pos, explicit=s % 2 == 1)
                    pool.append(r)
                    pos = r.seq_id
    rng.shuffle(pool)
    per_file = -(-len(pool) // (collectors * files_per_collector))
    n = 0
    for col in range(collectors):
        for k in range(files_per_collector):
            part = pool[n: n + per_file]
            n += per_file
            if not part:
                continue
            day = "2025-11-24"
            write_sink_file(root / day / f"collector{col}-{1764000000 + k}-{k}.seq", part)
    out.chunks_written = len(pool)
    # an in-progress file and a hidden one: never read
    write_sink_file(root / "2025-11-24" / "collector9-1-1.seq", pool[:3]).rename(
        root / "2025-11-24" / "_inprogress.seq")
    write_sink_file(root / "2025-11-24" / ".hidden.seq", pool[:3])
    return out


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m logflume ...`` (or the job module directly if the CLI is not there yet)."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def cli_command(*args: str) -> list[str]:
    if (ROOT / "logflume" / "__main__.py").exists() and (ROOT / "logflume" / "cli.py").exists():
        return [sys.executable, "-m", "logflume", *args]
    return [sys.executable, "-m", f"jobs.{args[0]}", *args[1:]]


@pytest.fixture
def sink_set(tmp_path: Path) -> SinkSet:
    return make_sink_set(tmp_path / "sink")


def chunks_of(data: bytes, key: tuple[str, str, str], datatype: str, rng: random.Random, ts: int = T0,
              explicit: bool = False) -> list[Chunk]:
    """``data`` cut after random record boundaries, as an agent would chunk a file."""
    ends = [i + 1 for i, b in enumerate(data) if b == 10]
    if not ends or ends[-1] != len(data):
        ends.append(len(data))
    out, pos = [], 0
    while pos < len(data):
        cands = [e for e in ends if e > pos][: rng.randrange(1, 6)]
        end = cands[-1]
        rec = [e - pos for e in ends if pos < e <= end] if explicit else None
        out.append(Chunk(source=key[0], stream=key[1], datatype=datatype, seq_id=end, epoch=key[2],
                         data=data[pos:end], record_ends=rec, timestamp=ts + pos, tags={"env": "test"}))
        pos = end
    return out


SAMPLE_CONFIG = {
    "processors": {
        "AppLog": {"type": "regex",
                   "pattern": r"(?P<date>\S+) (?P<time>\S+) (?P<level>[A-Z]+) \[(?P<thread>[^\]]+)\] (?P<msg>.*)"},
    },
}


def make_sample_sinks(root: Path, seed: int = 3, copies: int = 1) -> dict[str, dict]:
    """The samples of tests/data/jobs as sink files, one stream each; returns expected.json."""
    import json

    rng = random.Random(seed)
    expected = json.loads((DATA / "expected.json").read_text())
    chunks: list[Chunk] = []
    for i, (name, exp) in enumerate(sorted(expected.items())):
        data = (DATA / name).read_bytes()
        for c in range(copies):
            chunks += chunks_of(data * 1, (f"host{c}", f"/var/log/{name}", "1"), exp["datatype"], rng,
                                explicit=i % 2 == 1)
    rng.shuffle(chunks)
    half = len(chunks) // 2
    write_sink_file(root / "2025-11-24" / "collector0-1-0.seq", chunks[:half])
    write_sink_file(root / "2025-11-24" / "collector1-1-0.seq", chunks[half:], compression="BLOCK",
                    codec="deflate")
    return expected
