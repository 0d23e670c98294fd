"""`logflume channel verify|salvage` and `on_corruption: quarantine`, on real channels damaged on disk.

Each test fills a real file channel, damages its files the way a disk or an
operator would (a flipped byte mid-segment, a segment cut short, a damaged
checkpoint), runs the real commands, then a real agent process, and checks
that exactly the intact chunks are delivered, once each, in commit order.
"""

from __future__ import annotations

import json
import mmap
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.channels.file import FileChannel
from agent.channels.filelog import checkpoint as checkpoints
from agent.channels.filelog.records import HEADER_SIZE, OP_PUT, BadRecord, LogCorrupted, parse_at
from agent.channels.filelog.salvage import salvage, survey
from agent.channels.filelog.segments import list_segments, segment_name
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings
from logflume.testing.recording_sink import read_chunks
from tests.channels.test_file_channel import flip_byte
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
CHUNKS = 40
CONSUMED = 3  # the first chunks are taken and committed before the damage: they must not come back

AGENT = """
agent: {{name: h, data_dir: {data}, shutdown_timeout: 5s}}
sources:
  idle: {{type: tests.core.plugins:CountingSource, channels: [disk], count: 0}}
channels:
  disk: {{type: file, dir: {channel}, on_corruption: {mode}}}
sinks:
  out: {{type: logflume.testing.recording_sink:RecordingSink, channel: disk, path: {out}}}
"""


def channel(directory: Path, **raw) -> FileChannel:
    cfg = parse_settings(FileChannel.schema(), {"dir": str(directory), **raw}, "channels.f", None)
    ch = FileChannel("f", cfg, Context(data_dir=directory.parent / "data"))
    ch.start()
    return ch


def chunk(i: int) -> Chunk:
    data = "".join(f"chunk {i} line {j}\n" for j in range(12)).encode()
    return Chunk("h", "app.log", "Raw", (i + 1) * len(data), "e", data, tags={"i": str(i)})


def fill(directory: Path, *, crash: bool, **raw) -> None:
    """CHUNKS committed chunks, the first CONSUMED taken and committed; ``crash``: no checkpoint at stop."""
    ch = channel(directory, checkpoint_interval="1h", **raw)
    for i in range(CHUNKS):
        with ch.transaction() as tx:
            tx.put(chunk(i))
    with ch.transaction() as tx:
        for _ in range(CONSUMED):
            assert tx.take() is not None
    if crash:
        copy = directory.with_name(directory.name + "-crashed")
        shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("lock"))
        ch.stop()
        shutil.rmtree(directory)
        copy.rename(directory)
    else:
        ch.stop()


def puts(directory: Path) -> dict[int, tuple[Path, int, int]]:
    """Chunk number -> (segment, offset, record length) of every PUT record in the log."""
    out = {}
    for seg in list_segments(directory):
        path = directory / segment_name(seg)
        with open(path, "rb") as f:
            if not path.stat().st_size:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                off = 0
                while off < len(mm):
                    try:
                        rec = parse_at(mm, off)
                    except BadRecord:
                        break
                    if rec.op == OP_PUT:
                        meta = json.loads(mm[off + HEADER_SIZE:off + HEADER_SIZE + rec.meta_len])
                        out[int(meta["tags"]["i"])] = (path, off, rec.end - off)
                    off = rec.end
    return out


def logflume(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logflume", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def delivered(out: Path) -> list[int]:
    return [int(c.tags["i"]) for c in read_chunks(out)]


def run_agent(logflume_proc, tmp_path: Path, directory: Path, expected: list[int], mode: str = "refuse"):
    """Start a real agent on the channel; wait until ``expected`` chunks are out; stop it; returns (ids, log)."""
    out = tmp_path / "out.chunks"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT.format(data=tmp_path / "data", channel=directory, mode=mode, out=out))
    agent = logflume_proc(["agent", "-c", cfg])
    wait_for(lambda: len(delivered(out)) >= len(expected), 60, message=f"{len(expected)} chunks delivered")
    agent.signal(15)
    assert agent.wait(30) == 0, agent.log()
    return delivered(out), agent.log()


# -- a flipped byte mid-segment, in the log replayed at start --------------------------------------------------


def test_flipped_byte_mid_segment_is_refused_verified_salvaged_then_delivered(tmp_path, logflume_proc):
    d = tmp_path / "ch"
    fill(d, crash=True)
    seg, off, length = puts(d)[17]
    flip_byte(seg, off + length - 50)  # inside chunk 17's data; later records vouch the segment was on disk

    # the default refuses to start, and says what to run
    cfg = tmp_path / "refuse.yaml"
    cfg.write_text(AGENT.format(data=tmp_path / "data", channel=d, mode="refuse", out=tmp_path / "none"))
    refused = logflume("agent", "-c", cfg)
    assert refused.returncode == 1
    assert f"{seg} at offset {off}" in refused.stderr
    assert f"logflume channel salvage {d}" in refused.stderr and f"logflume channel verify {d}" in refused.stderr

    verify = logflume("channel", "verify", d)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert f"damaged: {seg} at offset {off} ({length} bytes): checksum mismatch" in verify.stdout
    assert "chunk put by transaction" in verify.stdout
    assert f"intact: {CHUNKS - CONSUMED - 1} committed chunk(s)" in verify.stdout
    assert list(d.iterdir()) and not (tmp_path / "ch.quarantine").exists(), "verify must not change anything"

    done = logflume("channel", "salvage", d)
    assert done.returncode == 0, done.stdout + done.stderr
    [folder] = (tmp_path / "ch.quarantine").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["quarantined_bytes"] == length and manifest["kept_chunks"] == CHUNKS - CONSUMED - 1
    [item] = manifest["damage"]
    assert (item["path"], item["offset"], item["length"]) == (str(seg), off, length)
    saved = (folder / item["saved_as"]).read_bytes()
    assert len(saved) == length and saved == seg.read_bytes()[off:off + length]
    assert "checksum mismatch" in (folder / "README.txt").read_text()
    assert logflume("channel", "verify", d).returncode == 0, "salvaged channel verifies clean"

    expected = [i for i in range(CONSUMED, CHUNKS) if i != 17]
    got, _ = run_agent(logflume_proc, tmp_path, d, expected)
    assert got == expected


def test_on_corruption_quarantine_salvages_at_start_and_counts_the_bytes(tmp_path, logflume_proc):
    d = tmp_path / "ch"
    fill(d, crash=True)
    seg, off, length = puts(d)[25]
    flip_byte(seg, off + HEADER_SIZE + 10)  # chunk 25's metadata
    expected = [i for i in range(CONSUMED, CHUNKS) if i != 25]
    got, log = run_agent(logflume_proc, tmp_path, d, expected, mode="quarantine")
    assert got == expected
    assert f"quarantined {seg} at offset {off} ({length} bytes)" in log
    assert len(list((tmp_path / "ch.quarantine").iterdir())) == 1


def test_quarantined_bytes_metric(tmp_path):
    d = tmp_path / "ch"
    fill(d, crash=True)
    seg, off, length = puts(d)[5]
    flip_byte(seg, off + length - 1)
    ch = channel(d, on_corruption="quarantine")
    try:
        labels = {"kind": "channel", "component": "f"}
        assert ch.context.metrics.value("channel_quarantined_bytes_total", **labels) == length
        assert ch.size_chunks() == CHUNKS - CONSUMED - 1
    finally:
        ch.stop()


# -- a segment cut short ---------------------------------------------------------------------------------------


def cut_short(d: Path) -> tuple[Path, int, int, list[int]]:
    """Fill a channel over several segments (all checkpointed at stop), then cut chunk 12's segment in half of
    that chunk: returns (segment, chunk offset, chunk length, the committed unconsumed chunks the cut took)."""
    fill(d, crash=False, segment_size="4KiB")
    records = puts(d)
    seg, off, length = records[12]
    with open(seg, "r+b") as f:
        f.truncate(off + length // 2)
    lost = sorted(i for i, (s, o, _) in records.items() if s == seg and o >= off and i >= CONSUMED)
    return seg, off, length, lost


def test_truncated_segment_verify_salvage_delivers_the_rest(tmp_path, logflume_proc):
    d = tmp_path / "ch"
    seg, off, _, lost = cut_short(d)
    assert lost, "the cut must take committed chunks with it"

    verify = logflume("channel", "verify", d)
    assert verify.returncode == 1
    assert f"damaged: {seg} at offset {off}" in verify.stdout and "segment ends inside the record" in verify.stdout

    assert logflume("channel", "salvage", d).returncode == 0
    expected = [i for i in range(CONSUMED, CHUNKS) if i not in lost]
    got, _ = run_agent(logflume_proc, tmp_path, d, expected)
    assert got == expected


def test_on_corruption_quarantine_at_take_time_with_a_truncated_segment(tmp_path, logflume_proc):
    """Damage behind the checkpoint is found only at take: quarantine mode sets each chunk aside and goes on."""
    d = tmp_path / "ch"
    seg, off, length, lost = cut_short(d)
    expected = [i for i in range(CONSUMED, CHUNKS) if i not in lost]
    got, log = run_agent(logflume_proc, tmp_path, d, expected, mode="quarantine")
    assert got == expected
    assert f"quarantined the held chunk at {seg} offset {off} ({length // 2} bytes)" in log
    assert logflume("channel", "verify", d).returncode == 0, "the quarantined chunks were consumed durably"


def test_take_time_quarantine_counts_bytes_and_survives_a_restart(tmp_path):
    d = tmp_path / "ch"
    fill(d, crash=False)
    seg, off, length = puts(d)[8]
    flip_byte(seg, off + length - 3)
    ch = channel(d, on_corruption="quarantine")
    crashed = tmp_path / "crashed"
    try:
        tx = ch.transaction()
        got = [int(c.tags["i"]) for c in iter(tx.take, None)]
        tx.rollback()  # the intact chunks go back; the quarantined one was consumed on its own
        labels = {"kind": "channel", "component": "f"}
        assert ch.context.metrics.value("channel_quarantined_bytes_total", **labels) == length
        shutil.copytree(d, crashed, ignore=shutil.ignore_patterns("lock"))  # no checkpoint after the take
    finally:
        ch.stop()
    assert got == [i for i in range(CONSUMED, CHUNKS) if i != 8]
    [folder] = (tmp_path / "ch.quarantine").iterdir()
    [item] = json.loads((folder / "manifest.json").read_text())["damage"]
    assert (item["offset"], item["length"], item["impact"]) == (off, length, "committed chunk lost")
    ch = channel(crashed)
    try:
        assert ch.size_chunks() == CHUNKS - CONSUMED - 1, "the quarantine is logged: a crash does not undo it"
    finally:
        ch.stop()


def test_refuse_at_take_time_keeps_the_chunk_and_names_the_commands(tmp_path):
    d = tmp_path / "ch"
    fill(d, crash=False)
    seg, off, length = puts(d)[CONSUMED]
    flip_byte(seg, off + length - 3)
    ch = channel(d)
    try:
        tx = ch.transaction()
        with pytest.raises(LogCorrupted, match=f"logflume channel salvage {d}"):
            tx.take()
        tx.rollback()
        assert ch.size_chunks() == CHUNKS - CONSUMED
    finally:
        ch.stop()


# -- a damaged checkpoint --------------------------------------------------------------------------------------


def test_damaged_checkpoint_is_rebuilt_from_the_log_and_delivers_exactly_once(tmp_path, logflume_proc):
    d = tmp_path / "ch"
    fill(d, crash=False)
    flip_byte(d / checkpoints.FILE_NAME, 20)  # the position's segment number: the checkpoint cannot be believed
    verify = logflume("channel", "verify", d)
    assert verify.returncode == 1
    assert f"damaged: {d / 'checkpoint'} at offset 0" in verify.stdout and "rebuilt from the log" in verify.stdout

    refused = logflume("agent", "-c", _write_cfg(tmp_path, d))
    assert refused.returncode == 1 and "checkpoint checksum mismatch" in refused.stderr
    assert "logflume channel salvage" in refused.stderr

    assert logflume("channel", "salvage", d).returncode == 0
    expected = list(range(CONSUMED, CHUNKS))
    got, _ = run_agent(logflume_proc, tmp_path, d, expected)
    assert got == expected


def _write_cfg(tmp_path: Path, d: Path) -> Path:
    cfg = tmp_path / "refuse.yaml"
    cfg.write_text(AGENT.format(data=tmp_path / "data", channel=d, mode="refuse", out=tmp_path / "none"))
    return cfg


def test_checkpoint_with_only_its_checksum_damaged_is_used_as_it_is(tmp_path):
    d = tmp_path / "ch"
    fill(d, crash=False)
    ckpt = d / checkpoints.FILE_NAME
    flip_byte(ckpt, ckpt.stat().st_size - 1)
    found = survey(d)
    assert [x.impact for x in found.damage] == ["every entry checks out against the log: used as it is"]
    assert len(found.queue) == CHUNKS - CONSUMED and found.in_doubt == 0


def test_missing_checkpoint_rebuilds_from_the_log(tmp_path):
    d = tmp_path / "ch"
    fill(d, crash=False)
    (d / checkpoints.FILE_NAME).unlink()
    moved = salvage(d)
    assert moved is not None and moved.bytes == 0 and moved.kept_chunks == CHUNKS - CONSUMED
    ch = channel(d)
    try:
        assert ch.size_chunks() == CHUNKS - CONSUMED
    finally:
        ch.stop()


# -- what survey decides -----------------------------------------------------------------------------------------


def test_damaged_commit_keeps_its_chunks_rather_than_losing_them(tmp_path):
    """A damaged region that may have been a transaction's COMMIT: its chunks are kept (at least once)."""
    d = tmp_path / "ch"
    ch = channel(d)
    with ch.transaction() as tx:
        tx.put(chunk(0))
        tx.put(chunk(1))
    with ch.transaction() as tx:
        tx.put(chunk(2))
    copy = tmp_path / "copy"
    shutil.copytree(d, copy, ignore=shutil.ignore_patterns("lock"))
    ch.stop()
    seg = copy / segment_name(max(list_segments(copy)))
    commit_at = puts(copy)[1][1] + puts(copy)[1][2]
    with open(seg, "r+b") as f:  # wipe the COMMIT record's header: its op and txid are unknown now
        f.seek(commit_at)
        f.write(b"\0" * HEADER_SIZE)
    found = survey(copy)
    assert [x.offset for x in found.damage] == [commit_at]
    assert "kept (at least once)" in found.damage[0].impact
    assert len(found.queue) == 3 and found.in_doubt == 2


def test_torn_tail_is_not_damage(tmp_path):
    d = tmp_path / "ch"
    fill(d, crash=True)
    seg = d / segment_name(max(list_segments(d)))
    with open(seg, "ab") as f:
        f.write(b"LFR1 half a record")
    verify = logflume("channel", "verify", d)
    assert verify.returncode == 0, verify.stdout
    assert "torn tail (not damage" in verify.stdout and "no damage" in verify.stdout


def test_salvage_refuses_a_channel_in_use(tmp_path):
    d = tmp_path / "ch"
    ch = channel(d)
    try:
        done = logflume("channel", "salvage", d)
        assert done.returncode == 1 and "in use by a running channel" in done.stderr
    finally:
        ch.stop()


def test_verify_of_a_directory_that_is_no_channel_is_a_usage_error(tmp_path):
    done = logflume("channel", "verify", tmp_path)
    assert done.returncode == 2 and "not a file channel directory" in done.stderr


@pytest.mark.parametrize("junk", [b"\xff" * 64, b"LFCP" + b"\xff" * 60])
def test_hostile_checkpoint_is_refused_in_bounded_time(tmp_path, junk):
    """Garbage counts and lengths in a checkpoint must not make survey allocate or loop on them."""
    d = tmp_path / "ch"
    fill(d, crash=False)
    (d / checkpoints.FILE_NAME).write_bytes(junk)
    found = survey(d)
    assert "rebuilt from the log" in found.damage[0].impact
    assert len(found.queue) == CHUNKS - CONSUMED
