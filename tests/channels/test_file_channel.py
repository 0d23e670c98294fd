"""The durable file channel: transactions, reopen, kill -9 at random points, damage and a full disk.

Everything here uses real files (and real child processes for the crashes);
nothing about the channel is mocked.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.channels.file import ChunkTooLarge, FileChannel
from agent.channels.filelog.records import HEADER_SIZE, MAP_AT_LEAST, LogCorrupted
from agent.channels.filelog.segments import LogWriteError, list_segments, segment_name
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.errors import ConfigError, StartupError
from logflume.registry import resolve
from logflume.settings import parse_settings
from logflume.testing.channel_contract import chunk, ids, put, take_all
from tests.channels.crash_writer import chunk_data, chunk_size, open_channel

WRITER = Path(__file__).with_name("crash_writer.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def make(tmp_path):
    """Factory of started FileChannels on ``tmp_path/ch`` (or ``dir=``); all stopped at teardown."""
    made: list[FileChannel] = []

    def build(start: bool = True, **raw) -> FileChannel:
        raw.setdefault("dir", str(tmp_path / "ch"))
        cfg = parse_settings(FileChannel.schema(), raw, "channels.f", None)
        ch = FileChannel("f", cfg, Context(data_dir=tmp_path / "data"))
        made.append(ch)
        if start:
            ch.start()
        return ch

    yield build
    for ch in made:
        ch.stop()


# -- transactions ---------------------------------------------------------------------------------


def test_registered_as_durable_file_channel():
    assert resolve("channel", "file") is FileChannel
    assert FileChannel.durable is True






















def test_chunk_above_max_chunk_size_is_refused(make):
    ch = make(max_chunk_size="1KiB")
    with pytest.raises(ChunkTooLarge, match="max_chunk_size"):
        ch.transaction().put(chunk(0, 2000))
    put(ch, 1, size=1024)
    assert ch.size_chunks() == 1






# -- reopen ---------------------------------------------------------------------------------------


def test_reopen_after_clean_close_keeps_committed_and_returns_open_takes(make):
    ch = make()
    put(ch, *range(6))
    with ch.transaction() as tx:
        tx.take()
    open_take = ch.transaction()
    assert ids([open_take.take(), open_take.take()]) == [1, 2]
    pending_put = ch.transaction()
    pending_put.put(chunk(99))
    ch.stop()
    ch2 = make()
    assert ids(take_all(ch2)) == [1, 2, 3, 4, 5]
    assert ch2.size_bytes() == 50


def test_reopen_with_big_chunk_round_trips_bytes(make):
    ch = make(segment_size="1MiB")
    data = os.urandom(3 << 20) + b"tail"
    with ch.transaction() as tx:
        tx.put(Chunk("h", "big", "Raw", len(data), "e", memoryview(data), record_ends=[10, len(data)]))
        tx.put(chunk(1))
    ch.stop()
    got = take_all(make())
    assert bytes(got[0].data) == data and got[0].record_ends == [10, len(data)]
    assert ids(got[1:]) == [1]


def test_mapped_chunk_stays_readable_after_its_segment_is_deleted(make):
    """Big chunks come back as views of the segment's mapped pages; deleting the segment must not touch them."""
    ch = make(segment_size="1MiB", checkpoint_interval="1h")
    data = os.urandom(MAP_AT_LEAST * 2)
    with ch.transaction() as tx:
        tx.put(Chunk("h", "big", "Raw", len(data), "e", data))
    first = min(list_segments(ch.directory))
    tx = ch.transaction()
    got = tx.take()
    assert isinstance(got.data, memoryview) and got.data.readonly
    tx.commit()
    put(ch, 1, 3, size=10)
    take_all(ch, commit=True)
    ch.checkpoint()
    assert first not in list_segments(ch.directory)
    assert bytes(got.data) == data


def test_second_channel_on_same_directory_is_refused(make):
    make()
    with pytest.raises(StartupError, match="in use"):
        make()


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="fsync"):
        parse_settings(FileChannel.schema(), {"fsync": "sometimes"}, "channels.f", None)
    with pytest.raises(ConfigError, match="segment_size"):
        parse_settings(FileChannel.schema(), {"segment_size": "1k"}, "channels.f", None)
    cfg = parse_settings(FileChannel.schema(), {"fsync": "interval", "fsync_interval": 0}, "channels.f", None)
    with pytest.raises(ConfigError, match="fsync_interval"):
        FileChannel("f", cfg, Context())


def test_default_dir_is_the_components_state_dir(tmp_path):
    cfg = parse_settings(FileChannel.schema(), {}, "channels.buf", None)
    ch = FileChannel("buf", cfg, Context(data_dir=tmp_path))
    assert not (tmp_path / "channel").exists(), "configure must not touch the disk"
    ch.start()
    try:
        put(ch, 0)
        assert list_segments(tmp_path / "channel" / "buf")
    finally:
        ch.stop()


def test_checkpoint_bounds_replay_and_deletes_consumed_segments(make):
    ch = make(segment_size="64KiB", checkpoint_interval="1h")
    for i in range(40):
        put(ch, i, size=10_000)
    assert len(list_segments(ch.directory)) >= 6
    take_all(ch, commit=True)
    ch.checkpoint()
    assert len(list_segments(ch.directory)) == 1
    put(ch, 100)
    ch.stop()
    assert ids(take_all(make())) == [100]


def test_metrics_report_fill_and_fsyncs(make):
    ch = make()
    put(ch, 0, 1)
    m = ch.context.metrics
    labels = {"kind": "channel", "component": "f"}
    assert m.value("channel_fill_bytes", **labels) == 20
    assert m.value("channel_fill_chunks", **labels) == 2
    assert m.value("channel_fsyncs_total", **labels) >= 1
    assert m.value("chunks_in_total", **labels) == 2
    take_all(ch, commit=True)
    assert m.value("channel_fill_bytes", **labels) == 0
    assert m.value("chunks_out_total", **labels) == 2


# -- torn tails and damage ------------------------------------------------------------------------


def crashed_copy(ch: FileChannel, dest: Path) -> Path:
    """The channel's files as a crash would leave them: copied while open, no final checkpoint."""
    shutil.copytree(ch.directory, dest, ignore=shutil.ignore_patterns("lock"))
    return dest


def test_crash_after_checkpoint_replays_transactions_that_span_it(make, tmp_path):
    ch = make()
    put(ch, 0, 1, 2)
    spanning_put = ch.transaction()
    spanning_put.put(chunk(10))
    spanning_take = ch.transaction()
    assert ids([spanning_take.take()]) == [0]
    open_take = ch.transaction()
    assert ids([open_take.take()]) == [1]
    ch.checkpoint()  # position now after everything above; replay starts here
    spanning_put.put(chunk(11))
    spanning_put.commit()
    spanning_take.commit()
    put(ch, 12)
    copy = crashed_copy(ch, tmp_path / "crashed")  # open_take never committed: it comes back
    assert ids(take_all(make(dir=str(copy)))) == [1, 2, 10, 11, 12]


def test_torn_last_record_is_discarded_and_committed_ones_kept(make, tmp_path, caplog):
    ch = make()
    put(ch, 0, 1)
    put(ch, 2, size=5000)
    copy = crashed_copy(ch, tmp_path / "crashed")
    seg = copy / segment_name(max(list_segments(copy)))
    size = seg.stat().st_size
    commit_record = HEADER_SIZE  # a take-less COMMIT has an empty body
    with open(seg, "r+b") as f:
        f.truncate(size - commit_record - 2000)  # cut the last PUT in half; its COMMIT is gone too
    caplog.set_level(logging.WARNING)
    re = make(dir=str(copy))
    assert ids(take_all(re)) == [0, 1]
    assert "torn record" in caplog.text
    assert seg.stat().st_size < size - commit_record - 2000, "the torn tail is cut off"


def test_cut_record_in_an_older_segment_is_damage_not_a_torn_tail(make, tmp_path):
    ch = make(segment_size="4KiB")
    early_checkpoint = (ch.directory / "checkpoint").read_bytes()  # replay will cover every segment
    for i in range(3):
        put(ch, i, size=3000)  # one segment per record
    copy = crashed_copy(ch, tmp_path / "crashed")
    (copy / "checkpoint").write_bytes(early_checkpoint)
    segs = list_segments(copy)
    assert len(segs) >= 3
    older = copy / segment_name(segs[-2])
    with open(older, "r+b") as f:
        f.truncate(older.stat().st_size - 100)
    with pytest.raises(LogCorrupted, match="not the newest segment") as info:
        make(dir=str(copy))
    assert info.value.segment == str(older)


def test_torn_tail_followed_by_an_empty_segment_is_still_a_torn_tail(make, tmp_path):
    ch = make()
    put(ch, 0)
    put(ch, 1, size=3000)
    copy = crashed_copy(ch, tmp_path / "crashed")
    newest = copy / segment_name(max(list_segments(copy)))
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size - HEADER_SIZE - 1000)
    (copy / segment_name(max(list_segments(copy)) + 1)).touch()
    assert ids(take_all(make(dir=str(copy)))) == [0]


def test_zeroed_tail_after_power_loss_is_discarded(make, tmp_path):
    ch = make()
    put(ch, 0)
    copy = crashed_copy(ch, tmp_path / "crashed")
    seg = copy / segment_name(max(list_segments(copy)))
    with open(seg, "ab") as f:
        f.write(b"\0" * 8192)
    assert ids(take_all(make(dir=str(copy)))) == [0]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_damage_in_replayed_log_is_reported_with_segment_and_offset(make, tmp_path):
    ch = make()
    put(ch, 0, size=1000)
    put(ch, 1, size=1000)
    copy = crashed_copy(ch, tmp_path / "crashed")
    seg = copy / segment_name(max(list_segments(copy)))
    flip_byte(seg, HEADER_SIZE + 500)  # inside the data of the first PUT; valid records follow
    with pytest.raises(LogCorrupted) as info:
        make(dir=str(copy))
    assert info.value.segment == str(seg) and info.value.offset == 0
    assert str(seg) in str(info.value) and "checksum" in str(info.value)
    assert "says the segment was on disk up to" in str(info.value)
    assert isinstance(info.value, StartupError)


def test_unsynced_pages_lost_with_power_are_cut_not_reported(make, tmp_path, caplog):
    """After a power loss, damage past the last fsync (no later record vouches for it) is a lost write."""
    ch = make(fsync="interval", fsync_interval="1h")
    put(ch, 0, size=1000)
    ch.checkpoint()  # fsyncs the log: chunk 0 is durable
    put(ch, 1, size=1000)
    put(ch, 2, size=1000)  # not fsynced: in interval mode a power loss may take them
    copy = crashed_copy(ch, tmp_path / "crashed")
    seg = copy / segment_name(max(list_segments(copy)))
    first_unsynced = 2 * HEADER_SIZE + len(chunk(0, 1000).metadata_json()) + 1000
    flip_byte(seg, first_unsynced + HEADER_SIZE + 500)  # a page of chunk 1 never reached the disk
    caplog.set_level(logging.WARNING)
    assert ids(take_all(make(dir=str(copy)))) == [0]
    assert "torn record" in caplog.text


@pytest.mark.parametrize("size", [1000, MAP_AT_LEAST + 12345], ids=["read", "mapped"])
def test_damage_in_checkpointed_chunk_fails_the_take_and_is_not_skipped(make, size):
    ch = make()
    put(ch, 0, 1, size=size)
    ch.stop()  # checkpointed: reopen does not replay (or check) these records
    seg = ch.directory / segment_name(min(list_segments(ch.directory)))
    flip_byte(seg, HEADER_SIZE + size - 300)
    re = make()
    for _ in range(2):
        tx = re.transaction()
        with pytest.raises(LogCorrupted, match=rf"{seg.name} at offset 0: committed chunk unreadable"):
            tx.take()
        tx.rollback()
    assert re.size_chunks() == 2, "a damaged committed chunk must stay, not be dropped"


def test_damaged_checkpoint_refuses_to_start(make):
    ch = make()
    put(ch, 0)
    ch.stop()
    flip_byte(ch.directory / "checkpoint", 20)
    with pytest.raises(LogCorrupted, match="checkpoint checksum"):
        make()


def test_missing_checkpoint_with_segments_refuses_to_start(make):
    ch = make()
    put(ch, 0)
    ch.stop()
    (ch.directory / "checkpoint").unlink()
    with pytest.raises(LogCorrupted, match="checkpoint missing"):
        make()


_KILL_AT_FIRST_START = """
import os, sys
sys.path.insert(0, {repo!r})
from agent.channels.filelog import segments, checkpoint
from tests.channels.crash_writer import open_channel
where = {where!r}
if where == "segment":
    original = segments.SegmentLog.__init__
    def init(self, *a, **kw):
        original(self, *a, **kw)
        os.kill(os.getpid(), 9)  # the first segment exists
    segments.SegmentLog.__init__ = init
else:
    original = checkpoint.save
    def save(*a, **kw):
        original(*a, **kw)
        os.kill(os.getpid(), 9)  # the first checkpoint is on disk
    checkpoint.save = save
open_channel({directory!r}, "every_commit")
"""


@pytest.mark.parametrize("where", ["segment", "checkpoint"])
def test_kill_9_during_the_first_start_leaves_a_channel_that_opens(make, tmp_path, where):
    """A first start killed after its first segment or first checkpoint reached disk: the next start opens
    (it refused, "checkpoint missing but 1 segment file(s) exist", when the segment came first)."""
    directory = tmp_path / "ch"
    script = _KILL_AT_FIRST_START.format(repo=str(REPO), where=where, directory=str(directory))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
    ch = make(dir=str(directory))
    put(ch, 1, 2)
    assert ids(take_all(ch)) == [1, 2]


# -- full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_full_disk_fails_the_put_clearly_and_loses_nothing(make, small_tmpfs):
    ch = make(dir=str(small_tmpfs / "ch"), segment_size="8MiB")
    committed = []
    with pytest.raises(LogWriteError, match="No space left on device"):
        for i in range(100):
            put(ch, i, size=100_000)
            committed.append(i)
    assert 10 < len(committed) < 40
    assert ch.size_chunks() == len(committed)
    assert ids(take_all(ch)) == committed
    ch.stop()
    re = make(dir=str(small_tmpfs / "ch"))
    got = take_all(re, commit=True)
    assert ids(got) == committed and all(bytes(c.data) == bytes([c.seq_id // 100_000 - 1]) * 100_000 for c in got)
    put(re, 500)  # space was freed by consuming: puts work again
    assert ids(take_all(re)) == [500]


def test_file_size_limit_in_child_fails_put_and_loses_nothing(tmp_path):
    """RLIMIT_FSIZE (EFBIG) in a child: the same path as a full disk, without root."""
    directory = tmp_path / "ch"
    out = subprocess.run([sys.executable, str(WRITER), str(directory), "7", "1", "every_commit", f"fsize:{1 << 20}"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("X LogWriteError") and "File too large" in lines[-1], lines[-3:]
    committed = [int(x) for line in lines if line.startswith("E P ") for x in line[4:].split(",")]
    assert committed
    ch = open_channel(str(directory), "every_commit")
    try:
        tx = ch.transaction()
        got = []
        while (c := tx.take()) is not None:
            assert bytes(c.data) == chunk_data(int(c.tags["id"]))
            got.append(int(c.tags["id"]))
        tx.rollback()
    finally:
        ch.stop()
    assert got == committed


# -- kill -9 --------------------------------------------------------------------------------------


class Child:
    """crash_writer.py in a child process; its stdout lines are collected by a thread."""

    def __init__(self, directory: Path, seed: int, first_id: int, fsync: str, log: Path, mode: str = "serial") -> None:
        self._err = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(directory), str(seed), str(first_id), fsync, mode],
            stdout=subprocess.PIPE, stderr=self._err, cwd=REPO)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.changed:
                self.lines.append(raw.decode().rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("EOF")
            self.changed.notify_all()

    def wait_for(self, prefix: str, count: int, timeout: float, where=lambda line: True) -> bool:
        """Wait until ``count`` lines start with ``prefix`` (and satisfy ``where``)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum(line.startswith(prefix) and where(line) for line in self.lines) < count:
                if "EOF" in self.lines or not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    return False
            return True

    def kill(self) -> list[str]:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        self._err.close()
        return [line for line in self.lines if line != "EOF"]


def expected_after(present: list[int], lines: list[str]) -> tuple[list[int], tuple[str, list[int]] | None]:
    """Replay the child's report: what is certainly in the channel, and the one transaction in doubt."""
    present = list(present)
    doubt = None
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] not in "BE":
            continue
        kind, op, numbers = parts[0], parts[1], [int(x) for x in parts[2].split(",")]
        if op == "T":
            assert numbers == present[:len(numbers)], f"take returned {numbers}, head was {present[:8]}"
        if kind == "B":
            doubt = (op, numbers)
        elif op == "P":
            present += numbers
            doubt = None
        else:
            del present[:len(numbers)]
            doubt = None
    return present, doubt


def crash_iterations(tmp_path: Path, iterations: int, seed: int, min_torn: int = 0,
                     extra: int = 0) -> dict[str, int]:
    """Kill a writer ``iterations`` times at random points, checking the channel after each kill.

    Then, up to ``extra`` more times, kill it mid-put until ``min_torn`` kills have left a torn record.
    """
    rnd = random.Random(seed)
    directory = tmp_path / "ch"
    present: list[int] = []
    next_id = 1
    stats = {"iterations": 0, "doubt_put_kept": 0, "doubt_put_lost": 0, "doubt_take_kept": 0, "doubt_take_done": 0,
             "torn": 0, "committed_puts": 0, "committed_takes": 0}
    handler = _CountTorn()
    logging.getLogger("logflume.channel.crash").addHandler(handler)
    try:
        for it in range(iterations + extra):
            if it >= iterations and handler.count >= min_torn:
                break
            fsync = "every_commit" if it % 2 else "interval"
            child = Child(directory, rnd.randrange(1 << 30), next_id, fsync, tmp_path / f"child-{it}.err")
            try:
                assert child.wait_for("READY", 1, 30), (tmp_path / f"child-{it}.err").read_text()
                mode = it % 4 if it < iterations else 1
                if mode == 0:
                    time.sleep(rnd.uniform(0.02, 0.5))
                elif mode == 1:  # mid-put: right after it announced a put of a MiB-sized chunk
                    child.wait_for("W P", rnd.randint(1, 3), 10, where=lambda line: chunk_size(int(line[4:])) > 1 << 20)
                    time.sleep(rnd.uniform(0.0005, 0.003))
                elif mode == 2:  # mid-take: takes made, commit starting
                    child.wait_for("B T", rnd.randint(1, 4), 10)
                    time.sleep(rnd.uniform(0, 0.002))
                else:  # mid-commit of a put
                    child.wait_for("B P", rnd.randint(1, 8), 10)
                    time.sleep(rnd.uniform(0, 0.002))
            finally:
                lines = child.kill()
            err = (tmp_path / f"child-{it}.err").read_text()
            assert "Traceback" not in err, err
            present, doubt = expected_after(present, lines)
            stats["committed_puts"] += sum(line.startswith("E P") for line in lines)
            stats["committed_takes"] += sum(line.startswith("E T") for line in lines)
            next_id = max([next_id - 1] + [int(x) for line in lines if line.startswith("W P") for x in [line[4:]]]) + 1

            got = read_back(directory)
            if doubt is None:
                assert got == present, f"iteration {it}: lost or duplicated chunks"
            elif doubt[0] == "P":
                assert got in (present, present + doubt[1]), f"iteration {it}: put in doubt {doubt[1]} half-applied"
                stats["doubt_put_kept" if got != present else "doubt_put_lost"] += 1
            else:
                rest = present[len(doubt[1]):]
                assert got in (present, rest), f"iteration {it}: take in doubt {doubt[1]} half-applied"
                stats["doubt_take_done" if got == rest and doubt[1] else "doubt_take_kept"] += 1
            present = got
            stats["iterations"] += 1
    finally:
        logging.getLogger("logflume.channel.crash").removeHandler(handler)
    stats["torn"] = handler.count
    ch = open_channel(str(directory), "every_commit")
    try:
        with ch.transaction() as tx:
            assert [int(c.tags["id"]) for c in iter(tx.take, None)] == present
    finally:
        ch.stop()
    stats["segments_left_after_drain"] = len(list_segments(directory))
    return stats


class _CountTorn(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "torn record" in record.getMessage():
            self.count += 1


@pytest.mark.timeout(120)
def test_kill_9_mid_put_and_mid_take_loses_nothing(tmp_path):
    stats = crash_iterations(tmp_path, iterations=60, seed=20261125, min_torn=1, extra=100)
    print(stats)
    assert stats["iterations"] >= 60
    assert stats["torn"] > 0, "no kill landed inside a write; the test did not exercise torn tails"
    assert stats["committed_puts"] > 20 and stats["committed_takes"] > 5
    assert stats["segments_left_after_drain"] == 1, "fully consumed segments must be deleted"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_many_iterations(tmp_path):
    stats = crash_iterations(tmp_path, iterations=400, seed=7, min_torn=10, extra=200)
    print(stats)
    assert stats["torn"] > 5
    assert stats["doubt_put_kept"] + stats["doubt_put_lost"] > 0


def read_back(directory: Path) -> list[int]:
    """Reopen the channel, check every chunk's bytes, return the ids in channel order (nothing consumed)."""
    ch = open_channel(str(directory), "every_commit")
    try:
        tx = ch.transaction()
        got = []
        while (c := tx.take()) is not None:
            assert bytes(c.data) == chunk_data(int(c.tags["id"])), f"chunk {c.tags['id']} damaged"
            got.append(int(c.tags["id"]))
        tx.rollback()
        return got
    finally:
        ch.stop()


@pytest.mark.timeout(120)
def test_kill_9_with_concurrent_producer_and_consumer_loses_nothing(tmp_path):
    """Commits from two threads share fsyncs (group commit); a kill must still lose nothing committed."""
    rnd = random.Random(99)
    directory = tmp_path / "ch"
    put_ok: set[int] = set()
    taken_ok: set[int] = set()
    next_id = 1
    for it in range(16):
        child = Child(directory, rnd.randrange(1 << 30), next_id, "every_commit" if it % 2 else "interval",
                      tmp_path / f"child-{it}.err", mode="concurrent")
        try:
            assert child.wait_for("READY", 1, 30), (tmp_path / f"child-{it}.err").read_text()
            time.sleep(rnd.uniform(0.05, 0.4))
        finally:
            lines = child.kill()
        err = (tmp_path / f"child-{it}.err").read_text()
        assert "Traceback" not in err, err
        began: dict[str, set[int]] = {"P": set(), "T": set()}
        for line in lines:
            kind, _, rest = line.partition(" ")
            op, _, numbers = rest.partition(" ")
            if kind == "W":
                next_id = max(next_id, int(numbers) + 1)
            elif kind in "BE" and numbers:
                nums = {int(x) for x in numbers.split(",")}
                if kind == "B":
                    began[op] |= nums
                else:
                    began[op] -= nums
                    (put_ok if op == "P" else taken_ok).update(nums)
        got = read_back(directory)
        assert got == sorted(got) and len(set(got)) == len(got), "one producer: commit order is id order, no dups"
        must = put_ok - taken_ok - began["T"]
        may = must | began["P"] | (began["T"] - taken_ok)
        assert must <= set(got), f"iteration {it}: committed chunks lost: {sorted(must - set(got))[:10]}"
        assert set(got) <= may, f"iteration {it}: consumed or never committed chunks present: {sorted(set(got) - may)}"
        # What we saw is now the truth: chunks present were committed, the rest are gone for good.
        put_ok = set(got)
        taken_ok = set()


def test_records_keep_zlibs_crc32_so_logs_written_before_isal_replay():
    """The log's checksum is ISA-L's CRC32 (6x faster); its values must be zlib's, or an agent upgraded with
    chunks in its channel would find every record "corrupted"."""
    import zlib

    from agent.channels.filelog import records

    assert records.crc32 is not zlib.crc32  # the fast one is in use (isal is a dependency)
    meta, data = b'{"source":"h"}', os.urandom(3 << 20)
    tail = records._TAIL.pack(records.OP_PUT, 7, len(meta), len(data), 0)
    by_zlib = zlib.crc32(tail, zlib.crc32(data, zlib.crc32(meta)))  # a record as the zlib build wrote it
    segment = records.MAGIC + by_zlib.to_bytes(4, "little") + tail + meta + data
    rec = records.parse_at(segment, 0)
    assert (rec.op, rec.txid, rec.data_len) == (records.OP_PUT, 7, len(data))
    assert records.header(records.OP_PUT, 7, len(meta), len(data), 0, records.body_crc(meta, data)) == segment[:40]
