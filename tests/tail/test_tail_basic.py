"""TailSource in-process: reading, settings, identity, truncation, deletion, permissions, checkpoints."""

from __future__ import annotations

import json
import os
import time

import pytest

from logflume.chunk import FLAG_PARTIAL
from logflume.errors import ConfigError
from tests.tail.harness import make_source, start, wait_for

FAST = {"flush_interval": "50ms", "partial_timeout": "300ms", "scan_interval": "200ms", "rotate_wait": "200ms"}


@pytest.fixture
def running():
    started = []

    def go(tmp_path, raw, name="t"):
        r = start(tmp_path, raw, name)
        started.append(r)
        return r

    yield go
    for r in started:
        r.source.stop()


def lines(a: int, b: int, tag: str = "") -> bytes:
    return b"".join(b"%s%08d %s\n" % (tag.encode(), i, b"x" * (i % 37)) for i in range(a, b))


def test_reads_existing_and_appended_bytes(tmp_path, running):
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 1000))
    r = running(tmp_path, {"paths": [str(tmp_path / "*.log")], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 1000), message="existing content")
    with open(log, "ab") as fh:
        fh.write(lines(1000, 2000))
    wait_for(lambda: r.stream_bytes(log) == lines(0, 2000), message="appended content")
    c = r.output.snapshot()[0]
    assert c.source == "testhost" and c.datatype == "Raw" and c.epoch.count(":") == 2
    assert r.metric("tail_bytes_read_total") == len(lines(0, 2000))
    assert r.metric("tail_files_open") == 1


def test_start_at_end_skips_existing_but_reads_new_files(tmp_path, running):
    old = tmp_path / "old.log"
    old.write_bytes(lines(0, 10))
    r = running(tmp_path, {"paths": [str(tmp_path / "*.log")], "start_at": "end", **FAST})
    wait_for(lambda: r.source.files, message="old.log tracked")
    with open(old, "ab") as fh:
        fh.write(b"after start\n")
    new = tmp_path / "new.log"
    new.write_bytes(b"new file line\n")
    wait_for(lambda: r.stream_bytes(old, from_zero=False) == b"after start\n", message="appended bytes of old.log")
    wait_for(lambda: r.stream_bytes(new) == b"new file line\n", message="new.log from its beginning")


def test_per_glob_datatype_tags_and_exclude(tmp_path, running):
    (tmp_path / "a.log").write_bytes(b"a\n")
    (tmp_path / "b.txt").write_bytes(b"b\n")
    (tmp_path / "skip.log").write_bytes(b"s\n")
    (tmp_path / "r.log.1.gz").write_bytes(b"\x1f\x8b compressed")
    r = running(tmp_path, {
        "paths": [str(tmp_path / "*.log*"), {"glob": str(tmp_path / "*.txt"), "datatype": "Txt", "tags": {"k": "v"}}],
        "exclude": ["skip.*"], "tags": {"env": "test"}, **FAST,
    })
    wait_for(lambda: r.stream_bytes(tmp_path / "a.log") and r.stream_bytes(tmp_path / "b.txt"))
    chunks = {c.stream: c for c in r.output.snapshot()}
    assert chunks[str(tmp_path / "b.txt")].datatype == "Txt"
    assert chunks[str(tmp_path / "b.txt")].tags == {"env": "test", "k": "v"}
    assert chunks[str(tmp_path / "a.log")].tags == {"env": "test"}
    assert set(chunks) == {str(tmp_path / "a.log"), str(tmp_path / "b.txt")}  # no skip.log, no .gz
    assert r.source.reads() == ["file:" + str(tmp_path / "*.log*"), "file:" + str(tmp_path / "*.txt")]


def test_gz_read_when_glob_names_it(tmp_path, running):
    (tmp_path / "r.log.1.gz").write_bytes(b"\x1f\x8b\x00binary")
    r = running(tmp_path, {"paths": [str(tmp_path / "*.gz")], **FAST})
    wait_for(lambda: r.stream_bytes(tmp_path / "r.log.1.gz") == b"\x1f\x8b\x00binary")


def test_no_trailing_newline_sent_partial_after_timeout(tmp_path, running):
    log = tmp_path / "p.log"
    log.write_bytes(b"complete\nincomplete")
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == b"complete\nincomplete", message="partial record")
    last = r.output.snapshot()[-1]
    assert bytes(last.data) == b"incomplete" and FLAG_PARTIAL in last.flags


def test_binary_crlf_nul_pass_unchanged(tmp_path, running):
    data = bytes(range(256)) * 40 + b"\r\n\x00\x00end\r\n"
    log = tmp_path / "bin.log"
    log.write_bytes(data)
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == data, message="binary bytes")


def test_custom_delimiter_and_multiline_settings(tmp_path, running):
    log = tmp_path / "java.log"
    text = (b"2024-01-01 ERROR x\nException: y\n\tat a(A.java:1)\n\tat b(B.java:2)\n"
            b"2024-01-01 INFO z\n")
    log.write_bytes(text)
    r = running(tmp_path, {"paths": [str(log)], "multiline": {"pattern": r"^\d{4}-", "negate": True}, **FAST})
    wait_for(lambda: r.stream_bytes(log) == text)
    recs = [bytes(x) for c in r.output.snapshot() for x in c.records()]
    assert recs == [b"2024-01-01 ERROR x\nException: y\n\tat a(A.java:1)\n\tat b(B.java:2)\n",
                    b"2024-01-01 INFO z\n"]


def test_delimiter_escape_in_yaml_style(tmp_path, running):
    log = tmp_path / "crlf.log"
    log.write_bytes(b"a\r\nb\r\n")
    r = running(tmp_path, {"paths": [str(log)], "record_delimiter": "\\r\\n", **FAST})
    wait_for(lambda: r.stream_bytes(log) == b"a\r\nb\r\n")
    assert r.source.delimiter == b"\r\n"
    assert [c.record_ends for c in r.output.snapshot()][0] == [3, 6]


def test_copytruncate_new_epoch_from_zero(tmp_path, running):
    log = tmp_path / "t.log"
    log.write_bytes(lines(0, 100))
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 100))
    with open(log, "r+b") as fh:
        fh.truncate(0)
    with open(log, "ab") as fh:
        fh.write(lines(100, 120))
    wait_for(lambda: r.stream_bytes(log) == lines(0, 100) + lines(100, 120), message="new epoch after truncate")
    epochs = {c.epoch for c in r.output.snapshot()}
    assert len(epochs) == 2 and any(e.endswith("#1") for e in epochs)
    assert r.metric("tail_truncations_total") == 1


@pytest.mark.parametrize("order", ["copy-seen-first", "truncate-seen-first"])
def test_copytruncate_copy_is_continued_not_read_again(tmp_path, running, order):
    """The copy copytruncate makes continues the generation it copies, from what was read of it.

    Its bytes past that point (written after the source's last read, before the truncate: the loss
    window) arrive under the original stream and epoch; nothing is read twice and nothing comes under
    the copy's name.
    """
    log = tmp_path / "t.log"
    copy = tmp_path / "t.log.1"
    log.write_bytes(lines(0, 100))
    r = running(tmp_path, {"paths": [str(tmp_path / "t.log*")], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 100))
    (first_epoch,) = {c.epoch for c in r.output.snapshot()}
    window = lines(100, 130)  # in the copy only: appended and copied before the source read them

    def make_copy() -> None:
        tmp = tmp_path / ".copy.tmp"  # whole at once, as if the source had not looked while it was written
        tmp.write_bytes(lines(0, 100) + window)
        os.rename(tmp, copy)

    if order == "copy-seen-first":
        make_copy()
        time.sleep(0.5)  # events and a scan look at the copy while the original still holds the generation
        assert not [c for c in r.output.snapshot() if c.stream == str(copy)]
        os.truncate(log, 0)
    else:
        os.truncate(log, 0)
        wait_for(lambda: r.metric("tail_truncations_total") == 1, message="truncation noticed")
        make_copy()
    with open(log, "ab") as fh:
        fh.write(lines(130, 140))
    wait_for(lambda: r.stream_bytes(log) == lines(0, 140), message="window from the copy, then the new epoch")
    chunks = r.output.snapshot()
    assert {c.stream for c in chunks} == {str(log)}, "the copy was read as a file of its own"
    by = {}
    for c in chunks:
        by.setdefault(c.epoch, []).append(c)
    assert [c.start for c in by[first_epoch]][-1] == len(lines(0, 100))  # continued, not re-read from 0
    assert b"".join(bytes(c.data) for c in by[first_epoch]) == lines(0, 130)


def test_truncation_to_empty_moves_the_position_to_the_new_epoch(tmp_path, running):
    """A truncate that leaves nothing to send still checkpoints offset 0 of the new epoch.

    Otherwise the position file keeps the old epoch's offset for the inode, and a
    copytruncate tool waiting on it (the chaos writers) would take lines written
    after the truncate as already shipped.
    """
    log = tmp_path / "t.log"
    log.write_bytes(lines(0, 100))
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 100))
    positions = tmp_path / "data" / "source" / "t" / "positions.json"

    def entry() -> dict:
        try:
            (e,) = [e for e in json.loads(positions.read_bytes())["files"] if not e["ended"]]
        except (OSError, ValueError):
            return {}
        return e

    wait_for(lambda: entry().get("offset") == len(lines(0, 100)), message="old epoch checkpointed")
    os.truncate(log, 0)
    wait_for(lambda: entry().get("truncations") == 1, message="truncation checkpointed")
    assert entry()["offset"] == 0 and entry()["epoch"].endswith("#1") and entry()["fp_len"] == 0


def test_max_buffered_bounds_bytes_held_across_files(tmp_path, running):
    """Ten files, each far from a full chunk: past max_buffered their records leave early, not after flush_interval."""
    logs = [tmp_path / f"f{i}.log" for i in range(10)]
    for i, log in enumerate(logs):
        log.write_bytes(lines(0, 400, tag=f"f{i}-"))  # ~22 KiB each, 220 KiB in all
    total = sum(log.stat().st_size for log in logs)
    slow = {"paths": [str(tmp_path / "*.log")], **FAST, "flush_interval": "10m", "partial_timeout": "10m",
            "quiet_flush": "0s", "caught_up_flush": "0s", "chunk_size": "1MiB"}

    # Control: a limit above what the files hold: everything is read and held, nothing sent.
    loose = running(tmp_path, {**slow, "max_buffered": "1MiB"}, name="loose")
    wait_for(lambda: sum(tf.chunker.pending_bytes for tf in loose.source.files.values()) == total,
             message="every file read into the chunkers")
    assert loose.output.snapshot() == []
    loose.source.stop()

    tight = running(tmp_path, {**slow, "max_buffered": "64KiB"}, name="tight")
    wait_for(lambda: sum(len(c) for c in tight.output.snapshot()) >= total - (64 << 10), timeout=15,
             message="all but max_buffered sent before flush_interval")
    held = sum(tf.chunker.pending_bytes for tf in tight.source.files.values())
    assert held <= 64 << 10 and held + sum(len(c) for c in tight.output.snapshot()) == total
    for i, log in enumerate(logs):
        assert lines(0, 400, tag=f"f{i}-").startswith(tight.stream_bytes(log))


def test_a_reused_chunk_buffer_counts_at_its_size_against_max_buffered(tmp_path, running, monkeypatch):
    """A file's chunker that moved into a reused 8 MiB buffer holds 8 MiB of memory however few bytes it has: with
    a second file read beside it, max_buffered (8 MiB) makes its records leave early.  Counted by bytes (4.5 +
    3 MiB), nothing would leave before flush_interval (10 minutes) while the agent held 8 + 3 MiB: the bench's
    rotation rows went past the agent's memory bound that way (199-200 MiB against 192)."""
    from logflume import chunking
    from logflume.chunkbuffers import ChunkBuffers

    pool = ChunkBuffers()
    monkeypatch.setattr(chunking, "CHUNK_BUFFERS", pool)
    filler = chunking.RecordChunker(source="h", stream="s", datatype="Raw", tags={}, epoch="e", chunk_size=8 << 20)
    for _ in range(9):
        for c in filler.feed(lines(0, 50_000)[:1 << 20], 0.0):
            del c  # a full chunk cut and dropped: its buffer is free, 8 MiB of it in place
    assert pool.count == 1 and filler.pending_bytes < 2 << 20
    del filler
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(lines(0, 300_000)[:9 << 19])  # 4.5 MiB: past the 4 MiB where a chunker takes a pooled buffer
    b.write_bytes(lines(300_000, 450_000)[:3 << 20])
    r = running(tmp_path, {"paths": [str(tmp_path / "*.log")], **FAST, "flush_interval": "10m",
                           "partial_timeout": "10m", "quiet_flush": "0s", "caught_up_flush": "0s",
                           "chunk_size": "8MiB", "max_buffered": "8MiB"})
    wait_for(lambda: r.stream_bytes(a) == _complete(a.read_bytes()), timeout=30,
             message="a.log's records sent early: its reused buffer counted at 8 MiB")
    assert pool.reused >= 1
    held = sum(tf.chunker.held_bytes for tf in r.source.files.values())
    assert held <= 8 << 20


def test_a_delivered_chunk_is_not_kept_while_the_next_file_is_read(tmp_path):
    """Ten files read in one round into an output that lets go of what it takes (the file channel writes a
    chunk and drops it): the source's peak memory stays near max_buffered.  A reference kept to the last
    file's read result held a delivered chunk_size chunk beside the next one: the bench's ten-file rows
    with the file channel were 65 MiB above its single-file rows (237 against 172 MiB)."""
    import tracemalloc

    from logflume.source import SourceOutput

    class Dropping(SourceOutput):
        def __init__(self) -> None:
            self.bytes = 0

        def deliver(self, chunks) -> None:
            self.bytes += sum(len(c) for c in chunks)

    mib = 1 << 20
    total = 0
    for i in range(10):  # ~6 MiB each, each its own content (a copy would be recognised as one file)
        data = lines(0, 200_000, tag=f"f{i}-")
        (tmp_path / f"f{i}.log").write_bytes(data)
        total += len(data)
    src = make_source(tmp_path, {"paths": [str(tmp_path / "*.log")], **FAST, "flush_interval": "10m",
                                 "partial_timeout": "10m", "chunk_size": "4MiB", "read_block_size": "1MiB"})
    out = Dropping()
    tracemalloc.start()
    try:
        src.start(out)
        wait_for(lambda: out.bytes == total, timeout=60, message="every file delivered")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        src.stop()
        tracemalloc.stop()
    # max_buffered (4 MiB) read and held, a 4 MiB slice being verified, a 1 MiB block: 9.1 MiB measured; with
    # the stale reference one more chunk (14.1 MiB).  tracemalloc counts allocations, not time: no load changes it.
    assert peak < 11 * mib, f"peak {peak / mib:.1f} MiB"


def test_a_burst_is_sent_once_the_file_is_quiet_not_after_flush_interval(tmp_path, running):
    """quiet_flush: 5ms: read to the end and quiet for 5 ms, complete records leave; flush_interval (here 10
    minutes) is only the upper bound.  Without it nothing would be sent before the wait below gives up."""
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    r = running(tmp_path, {"paths": [str(log)], **FAST, "flush_interval": "10m", "partial_timeout": "10m",
                           "quiet_flush": "5ms", "caught_up_flush": "0s"})
    for burst in range(3):
        with open(log, "ab") as fh:
            fh.write(lines(burst * 10, burst * 10 + 10) + b"partial")  # a record still being written stays
        wait_for(lambda b=burst: r.stream_bytes(log) == _complete(log.read_bytes()), timeout=30,
                 message=f"burst {burst} sent while flush_interval is 10 minutes")
        with open(log, "ab") as fh:
            fh.write(b" end\n")
    assert r.stream_bytes(log) == log.read_bytes()[:-len(b"partial end\n")]


def test_a_reader_behind_cuts_full_chunks_despite_quiet_flush(tmp_path, running):
    """8 MiB present before the source starts: the reader is behind until the end, so every chunk but the last
    is a full chunk_size one (the quiet and caught-up flushes fire only once the file is read to its end)."""
    log = tmp_path / "big.log"
    data = lines(0, 300_000)
    log.write_bytes(data)
    r = running(tmp_path, {"paths": [str(log)], **FAST, "flush_interval": "10m", "chunk_size": "1MiB",
                           "read_block_size": "64KiB", "max_buffered": "4MiB",  # not max_buffered's early cuts
                           "quiet_flush": "5ms", "caught_up_flush": "20ms"})
    wait_for(lambda: r.stream_bytes(log) == data, timeout=60, message="everything sent")
    sizes = [len(c) for c in r.output.snapshot()]
    assert len(sizes) >= 8 and all(size > (1 << 20) - 100 for size in sizes[:-1]), sizes  # 8.5 MB of lines


def test_a_writer_that_never_pauses_is_sent_within_caught_up_flush_by_default(tmp_path, running):
    """A line every 2 ms for 1.5 s: never quiet for quiet_flush, and flush_interval is 10 minutes, yet with the
    default caught_up_flush (20ms) a reader that keeps up sends while the writer is still writing.  Without it
    nothing would leave before the writer stops."""
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    r = running(tmp_path, {"paths": [str(log)], **FAST, "flush_interval": "10m", "partial_timeout": "10m"})
    assert r.source.config.caught_up_flush == pytest.approx(0.02) and r.source.config.quiet_flush == 0
    sent_while_writing = 0
    with open(log, "ab", buffering=0) as fh:
        end = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < end:
            fh.write(b"line %06d\n" % i)
            i += 1
            time.sleep(0.002)
        sent_while_writing = len(r.output.snapshot())
    assert sent_while_writing >= 3, f"{sent_while_writing} chunk(s) sent while {i} lines were written"
    wait_for(lambda: r.stream_bytes(log) == log.read_bytes(), timeout=30, message="every line sent")


def _complete(data: bytes) -> bytes:
    return data[:data.rfind(b"\n") + 1]


def test_truncated_and_regrown_detected_by_fingerprint(tmp_path, running):
    log = tmp_path / "t.log"
    log.write_bytes(b"first content line\n")
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == b"first content line\n")
    r.source.watcher.use_events = False
    with open(log, "r+b") as fh:  # truncate and write more than before in one go
        fh.truncate(0)
        fh.write(b"SECOND content, longer than the first one\n")
    wait_for(lambda: len({c.epoch for c in r.output.snapshot()}) == 2, message="second epoch")
    assert r.stream_bytes(log) == b"first content line\nSECOND content, longer than the first one\n"


def test_deleted_while_open_read_to_end_and_closed(tmp_path, running):
    log = tmp_path / "d.log"
    log.write_bytes(lines(0, 10))
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 10))
    fh = open(log, "ab")
    fh.write(lines(10, 20))
    fh.flush()
    os.unlink(log)
    fh.write(lines(20, 30))  # the writer still holds it
    fh.close()
    wait_for(lambda: r.stream_bytes(log) == lines(0, 30), message="deleted file read to its end")
    wait_for(lambda: not r.source.files and r.source.open_count == 0, message="descriptor released")
    pid_fds = os.listdir("/proc/self/fd")
    assert not any(os.readlink(f"/proc/self/fd/{fd}").endswith("d.log (deleted)") for fd in pid_fds
                   if os.path.exists(f"/proc/self/fd/{fd}"))


def test_unreadable_file_reported_others_flow(tmp_path, running):
    if os.geteuid() == 0:
        pytest.skip("root reads any file; the subprocess test covers permissions as an unprivileged user")
    bad = tmp_path / "bad.log"
    bad.write_bytes(b"secret\n")
    bad.chmod(0)
    good = tmp_path / "good.log"
    good.write_bytes(b"ok\n")
    r = running(tmp_path, {"paths": [str(tmp_path / "*.log")], **FAST})
    wait_for(lambda: r.stream_bytes(good) == b"ok\n")
    assert r.metric("tail_files_unreadable_total") == 1


def test_checkpoint_resume_and_format(tmp_path, running):
    log = tmp_path / "c.log"
    log.write_bytes(lines(0, 50))
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 50))
    r.source.stop()
    doc = json.loads((tmp_path / "data" / "source" / "t" / "positions.json").read_bytes())
    assert doc["version"] == 2
    (entry,) = doc["files"]
    assert entry["ended"] is False
    st = os.stat(log)
    assert (entry["dev"], entry["ino"], entry["offset"], entry["seq_id"]) == (
        st.st_dev, st.st_ino, len(lines(0, 50)), len(lines(0, 50)))
    assert entry["stream"] == str(log) and entry["truncations"] == 0
    with open(log, "ab") as fh:
        fh.write(lines(50, 60))
    r2 = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r2.stream_bytes(log, from_zero=False) == lines(50, 60), message="resumed at the committed offset")
    first = r2.output.snapshot()[0]
    assert first.start == len(lines(0, 50)) and first.epoch == entry["epoch"]


def test_reused_inode_with_other_first_bytes_is_a_new_file(tmp_path, running):
    log = tmp_path / "i.log"
    log.write_bytes(lines(0, 200, "old"))
    r = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 200, "old"))
    r.source.stop()
    ino = os.stat(log).st_ino
    os.unlink(log)
    for attempt in range(200):
        log.write_bytes(lines(0, 300, "new"))  # longer than the old offset: only the fingerprint tells
        if os.stat(log).st_ino == ino:
            break
        os.rename(log, tmp_path / f"spare{attempt}")  # keep that inode busy, try for the old one again
    else:  # (another process may have taken it: the last try was renamed away too)
        pytest.skip("filesystem did not reuse the inode")
    r2 = running(tmp_path, {"paths": [str(log)], **FAST})
    wait_for(lambda: r2.stream_bytes(log) == lines(0, 300, "new"), message="new file read from 0")


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="paths"):
        make_source(tmp_path, {})
    with pytest.raises(ConfigError, match=r"start_at.*one of beginning, end"):
        make_source(tmp_path, {"paths": ["/x"], "start_at": "middle"})
    with pytest.raises(ConfigError, match="multiline.pattern.*regular expression"):
        make_source(tmp_path, {"paths": ["/x"], "multiline": {"pattern": "("}})
    with pytest.raises(ConfigError, match="record_delimiter"):
        make_source(tmp_path, {"paths": ["/x"], "record_delimiter": ""})
    with pytest.raises(ConfigError, match=r"paths\[0\].globb.*did you mean 'glob'"):
        make_source(tmp_path, {"paths": [{"globb": "/x"}]})
    with pytest.raises(ConfigError, match="chunk_size"):
        make_source(tmp_path, {"paths": ["/x"], "chunk_size": "lots"})


def test_damaged_position_file_stops_start(tmp_path):
    src = make_source(tmp_path, {"paths": [str(tmp_path / "*.log")]})
    d = tmp_path / "data" / "source" / "t"
    d.mkdir(parents=True)
    (d / "positions.json").write_text("{not json")
    from logflume.errors import StartupError
    from tests.tail.harness import CollectingOutput

    with pytest.raises(StartupError, match="positions.json is damaged"):
        src.start(CollectingOutput())
    src.stop()


def test_scan_only_mode_follows_rotation(tmp_path, running):
    log = tmp_path / "s.log"
    log.write_bytes(lines(0, 10))
    r = running(tmp_path, {"paths": [str(log)], **FAST, "use_events": False})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 10))
    with open(log, "ab") as fh:
        fh.write(lines(10, 20))
    os.rename(log, tmp_path / "s.log.1")
    log.write_bytes(lines(20, 30))
    wait_for(lambda: r.stream_bytes(log) == lines(0, 20) + lines(20, 30), message="both files without events")
    assert r.source.watcher._observer is None
    wait_for(lambda: r.metric("tail_rotations_total") == 1, message="rotated file let go")


def test_forget_after_drops_positions_of_long_gone_files(tmp_path, running):
    import time

    d = tmp_path / "data" / "source" / "t"
    d.mkdir(parents=True)
    entry = {"dev": 1, "ino": 2, "fp_len": 0, "fp": "", "epoch": "1:2:x", "stream": "/gone", "path": "/gone",
             "offset": 5, "seq_id": 5, "truncations": 0}
    (d / "positions.json").write_text(json.dumps({"version": 1, "files": [
        {**entry, "last_seen": time.time() - 7200},
        {**entry, "ino": 3, "epoch": "1:3:x", "last_seen": time.time()},
    ]}))
    r = running(tmp_path, {"paths": [str(tmp_path / "*.log")], **FAST, "forget_after": "1h"})
    wait_for(lambda: [e["ino"] for e in json.loads((d / "positions.json").read_text())["files"]] == [3],
             message="old entry dropped, recent one kept")
    assert r.source.alive


def test_lag_metric_and_close_inactive(tmp_path, running):
    log = tmp_path / "lag.log"
    log.write_bytes(lines(0, 10))
    r = running(tmp_path, {"paths": [str(log)], **FAST, "close_inactive": "300ms"})
    wait_for(lambda: r.stream_bytes(log) == lines(0, 10))
    m = r.source.context.metrics
    labels = {"kind": "source", "component": "t", "path": str(log)}
    assert m.registry.get_sample_value("logflume_tail_file_lag_bytes", labels) == 0
    wait_for(lambda: r.metric("tail_files_open") == 0, message="idle file closed")
    with open(log, "ab") as fh:
        fh.write(lines(10, 12))
    wait_for(lambda: r.stream_bytes(log) == lines(0, 12), message="reopened by identity when it grew")


def test_files_that_start_alike_are_each_read(tmp_path, running):
    """Identical short content (a banner) in two live files, or in a file read and let go before, is not
    taken for a copy for longer than rotate_wait: each file is read, under its own stream, from 0."""
    logs = tmp_path / "logs"
    logs.mkdir()
    banner = b"service starting\n"
    (logs / "a.log").write_bytes(banner)
    (logs / "b.log").write_bytes(banner)
    r = running(tmp_path, {"paths": [str(logs / "*.log")], **FAST})
    wait_for(lambda: r.stream_bytes(logs / "a.log") == banner and r.stream_bytes(logs / "b.log") == banner,
             message="both files")
    os.rename(logs / "a.log", logs / "a.log.1")  # let go after rotate_wait, remembered
    wait_for(lambda: r.metric("tail_rotations_total") == 1, message="a.log let go")
    (logs / "c.log").write_bytes(banner + b"c only\n")
    wait_for(lambda: r.stream_bytes(logs / "c.log") == banner + b"c only\n", message="c.log from 0")


def test_lag_series_of_a_let_go_file_is_removed(tmp_path, running):
    """Rotated and deleted files are let go: their lag series go too (they piled up, one per file ever read)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    m = None

    def series() -> set[str]:
        return {s.labels["path"] for metric in m.registry.collect() if metric.name == "logflume_tail_file_lag_bytes"
                for s in metric.samples}

    gone, kept = logs / "gone.log", logs / "kept.log"
    gone.write_bytes(lines(0, 10, "g"))
    kept.write_bytes(lines(0, 10, "k"))
    r = running(tmp_path, {"paths": [str(logs / "*.log")], **FAST})
    m = r.source.context.metrics
    wait_for(lambda: r.stream_bytes(gone) == lines(0, 10, "g") and r.stream_bytes(kept) == lines(0, 10, "k"))
    assert series() == {str(gone), str(kept)}
    os.rename(gone, logs / "gone.log.1")  # out of the globs: read to its end, let go after rotate_wait
    # The counter rises just before the file is forgotten (and its series removed): wait for both.
    wait_for(lambda: r.metric("tail_rotations_total") == 1 and series() == {str(kept)},
             message="rotated file let go, its series removed")
    os.unlink(kept)  # deleted: let go as well
    wait_for(lambda: r.metric("tail_rotations_total") == 2 and series() == set(),
             message="deleted file let go, its series removed")


def test_failed_delivery_is_read_again_without_gap(tmp_path):
    """An output that fails once (not ChannelClosed): the source re-reads from the committed position."""
    from tests.tail.harness import CollectingOutput

    class FlakyOutput(CollectingOutput):
        failures = 1

        def deliver(self, chunks) -> None:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("next hop refused")
            super().deliver(chunks)

    log = tmp_path / "f.log"
    log.write_bytes(lines(0, 100))
    src = make_source(tmp_path, {"paths": [str(log)], **FAST})
    out = FlakyOutput()
    src.start(out)
    try:
        from tests.tail.harness import assemble

        wait_for(lambda: assemble(out.snapshot(), str(log)) == lines(0, 100), message="re-read after failure")
        assert src.context.metrics.value("errors_total", kind="source", component="t") == 1
        assert src.alive
    finally:
        src.stop()


def test_event_glob_matching_rules():
    from agent.sources.tail.paths import glob_matches as _glob_matches

    assert _glob_matches("/var/log/app.log", "/var/log/*.log")
    assert not _glob_matches("/var/log/x/app.log", "/var/log/*.log")
    assert not _glob_matches("/var/log/.app.log.swp", "/var/log/*")
    assert _glob_matches("/var/log/.hidden.log", "/var/log/.*.log")
    assert _glob_matches("/var/log/a/b/c.log", "/var/log/**/*.log")


def test_recursive_glob_new_subdirectory_and_per_path_exclude(tmp_path, running):
    root = tmp_path / "logs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.log").write_bytes(b"one\n")
    (root / "a" / "noise.log").write_bytes(b"noise\n")
    r = running(tmp_path, {"paths": [{"glob": str(root / "**" / "*.log"), "exclude": ["noise.*"]}],
                           **FAST, "scan_interval": "10s"})
    wait_for(lambda: r.stream_bytes(root / "a" / "one.log") == b"one\n")
    (root / "b" / "c").mkdir(parents=True)  # created after the start: found through its directory event
    (root / "b" / "c" / "deep.log").write_bytes(b"deep\n")
    wait_for(lambda: r.stream_bytes(root / "b" / "c" / "deep.log") == b"deep\n", timeout=5,
             message="file in a new subdirectory, before the 10 s scan")
    assert str(root / "a" / "noise.log") not in {c.stream for c in r.output.snapshot()}
