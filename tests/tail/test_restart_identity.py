"""A real agent killed and restarted after its file was rotated: the file keeps its stream, epoch and offset."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from logflume.testing.recording_sink import read_chunks
from tests.tail.harness import by_epoch, epoch_bytes, wait_for
from tests.tail.test_rotation_e2e import agent_config
from tests.tail.writer import line, numbers


def block(a: int, b: int) -> bytes:
    return b"".join(line(n) for n in range(a, b))


def committed(positions: Path, path: Path) -> int:
    """Offset the agent's position file holds for the file now at ``path`` (same inode), 0 if none."""
    try:
        doc = json.loads(positions.read_bytes())
    except (OSError, ValueError):
        return 0
    ino = path.stat().st_ino
    return max((e["offset"] for e in doc["files"] if e["ino"] == ino and not e.get("ended")), default=0)


@pytest.mark.parametrize("first", [500, 5], ids=["long", "young"])
@pytest.mark.parametrize("rotation", ["rename", "copy-and-unlink"])
@pytest.mark.parametrize("glob_suffix", ["", "*"], ids=["rotated-out-of-glob", "rotated-inside-glob"])
def test_restart_after_rotation_keeps_stream_epoch_and_offset(tmp_path, logflume_proc, rotation, glob_suffix,
                                                              first):
    """Rotation while the agent is down, by rename (same inode) or by a move that copies (``mv`` to another
    filesystem, logrotate's ``olddir`` there): the rest is read once, under the stream it was first read
    under, from the checkpointed offset, never from 0 under the rotated name.  ``young``: the agent knew
    only 155 bytes of the file (a fingerprint shorter than 1 KiB); its copy was never read outside the
    glob, and read again from 0 under the glob (chaos seeds 32 and 33)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "x.log"
    rotated = logs / "x.log.1"
    out = tmp_path / "out.bin"
    positions = tmp_path / "data" / "source" / "t" / "positions.json"
    cfg = agent_config(tmp_path, [str(logs / "*.log") + glob_suffix], out)
    log.write_bytes(block(0, first))
    agent = logflume_proc(["agent", "-c", cfg], name="first")
    wait_for(lambda: committed(positions, log) == log.stat().st_size
             and sum(len(c.data) for c in read_chunks(out)) == log.stat().st_size,
             timeout=30, message="first part delivered and its position written")
    agent.kill()
    before = len(read_chunks(out))
    (epoch,) = by_epoch(read_chunks(out), str(log))

    with open(log, "ab") as fh:  # written while the agent is down, then rotated away
        fh.write(block(first, 800))
    fresh = logs / ".fresh"  # the next generation, made before the old inode is freed: no inode reuse hides
    fresh.write_bytes(block(800, 850))  # the move (a reused inode would tell the agent the old file is gone)
    if rotation == "rename":
        os.rename(log, rotated)
    else:
        shutil.copyfile(log, rotated)  # a new inode with the same bytes
    os.replace(fresh, log)

    agent = logflume_proc(["agent", "-c", cfg], name="second")

    def streams() -> dict[str, dict[str, bytes]]:
        chunks = read_chunks(out)
        return {s: {e: epoch_bytes(g) for e, g in by_epoch(chunks, s).items()} for s in {c.stream for c in chunks}}

    def done() -> bool:
        mine = streams().get(str(log), {})
        return len(mine.get(epoch, b"")) >= len(block(0, 800)) and len(mine) == 2

    wait_for(done, timeout=60, message="the rest of the rotated file and the new one")
    assert agent.terminate() == 0, agent.log()
    got = streams()
    assert set(got) == {str(log)}, f"chunks under other streams: {sorted(set(got) - {str(log)})}"
    assert got[str(log)][epoch] == block(0, 800)  # one epoch: the old one, continued at its offset
    (new_epoch,) = set(got[str(log)]) - {epoch}
    assert got[str(log)][new_epoch] == block(800, 850)
    # nothing read twice: the second agent started at the checkpointed offset, not at 0
    second = [c for c in read_chunks(out)[before:] if c.epoch == epoch]
    assert min(c.start for c in second) == len(block(0, first))
    assert sorted(numbers(b"".join(bytes(c.data) for c in read_chunks(out)))) == list(range(850))


@pytest.mark.parametrize("glob_suffix", ["", "*"], ids=["rotated-out-of-glob", "rotated-inside-glob"])
def test_crash_before_the_first_position_write_keeps_the_stream(tmp_path, logflume_proc, glob_suffix):
    """The agent dies after the channel committed a new file's first chunks and before any position write
    named that file; the file is renamed before the restart.  The position file must already name it
    (under its first stream, from offset 0): what is read again then carries the same stream and epoch,
    a duplicate archive removes, instead of coming back under the rotated name (or not at all)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "x.log"
    out = tmp_path / "out.bin"
    positions = tmp_path / "data" / "source" / "t" / "positions.json"
    # Positions are written at start and then at most once an hour: only a new file's announcement can
    # put it in the position file before the kill.
    cfg = agent_config(tmp_path, [str(logs / "*.log") + glob_suffix], out, checkpoint_interval="1h")
    agent = logflume_proc(["agent", "-c", cfg], name="first")
    wait_for(lambda: positions.exists(), message="agent started")
    log.write_bytes(block(0, 300))
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) == log.stat().st_size, message="first part sent")
    agent.kill()
    (epoch,) = by_epoch(read_chunks(out), str(log))
    with open(log, "ab") as fh:
        fh.write(block(300, 400))
    os.rename(log, logs / "x.log.1")

    agent = logflume_proc(["agent", "-c", cfg], name="second")
    wait_for(lambda: len(epoch_bytes(by_epoch(read_chunks(out), str(log)).get(epoch, []))) == len(block(0, 400))
             or {c.stream for c in read_chunks(out)} != {str(log)}, timeout=30, message="the rest of x.log")
    assert agent.terminate() == 0, agent.log()
    chunks = read_chunks(out)
    assert {c.stream for c in chunks} == {str(log)}, "read again under the rotated name"
    assert epoch_bytes(by_epoch(chunks, str(log))[epoch]) == block(0, 400)


def test_crash_after_a_truncation_epoch_was_sent_before_a_position_named_it(tmp_path, logflume_proc):
    """The agent sends the first chunks of the generation after a copytruncate, then dies before any position
    write names that generation.  The restart must take the file for that generation (its epoch, read again
    from 0: duplicates archive removes), not for a new file under another epoch (duplicates archive cannot
    see: chaos seed 8 under load, 2026-12-07).  The position file must name the new epoch before its first
    chunk is sent, as it names a new file before its first chunk."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "x.log"
    out = tmp_path / "out.bin"
    # Positions are written at start and then at most once an hour: only announcements write in between.
    cfg = agent_config(tmp_path, [str(logs / "*.log")], out, checkpoint_interval="1h")
    log.write_bytes(block(0, 100))
    agent = logflume_proc(["agent", "-c", cfg], name="first")
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) == log.stat().st_size, message="first generation")
    shutil.copyfile(log, logs / "x.log.1")  # copytruncate; the copy is outside the glob
    with open(log, "r+b") as fh:
        fh.truncate(0)
    with open(log, "ab") as fh:
        fh.write(block(100, 150))
    second = block(100, 150)

    def epochs_with_second() -> set[str]:
        return {c.epoch for c in read_chunks(out) if c.stream == str(log) and bytes(c.data) in second}

    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) >= len(block(0, 150)), message="the next generation")
    agent.kill()
    (first_epoch,) = epochs_with_second()
    sent = sum(len(c.data) for c in read_chunks(out))
    agent = logflume_proc(["agent", "-c", cfg], name="second")
    # Nothing committed of the next generation is on record, so the restart reads it again from 0 either way.
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) >= sent + len(second), message="the restart's read")
    assert agent.terminate() == 0, agent.log()
    assert epochs_with_second() == {first_epoch}, "the next generation read again under another epoch"


def test_a_truncation_seen_while_the_file_was_empty_names_no_epoch_that_fits_any_content(tmp_path, logflume_proc):
    """The truncation is seen while the file is empty, with the old generation's unfinished last line still to
    send: that send announces positions, when the new generation has no bytes to fingerprint yet.  Its next
    generation is then sent, the agent killed, and the file truncated and written again while it is down.
    The restart must not take the new content for that generation (its empty fingerprint fits any content):
    one name would then carry two contents (chaos seed 8 under load, 2026-12-07)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "x.log"
    out = tmp_path / "out.bin"
    cfg = agent_config(tmp_path, [str(logs / "*.log")], out, checkpoint_interval="1h", partial_timeout="1h")
    log.write_bytes(block(0, 100) + b"an unfinished line")
    agent = logflume_proc(["agent", "-c", cfg], name="first")
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) == len(block(0, 100)), message="first generation")
    with open(log, "r+b") as fh:
        fh.truncate(0)
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) > len(block(0, 100)),
             message="the old generation's last piece, sent once the truncation is seen")
    with open(log, "ab") as fh:
        fh.write(block(100, 150))
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) >= len(block(0, 150)), message="the next generation")
    agent.kill()
    with open(log, "r+b") as fh:  # truncated and written again while the agent is down
        fh.truncate(0)
        fh.write(block(500, 560))
    sent = sum(len(c.data) for c in read_chunks(out))
    agent = logflume_proc(["agent", "-c", cfg], name="second")
    wait_for(lambda: sum(len(c.data) for c in read_chunks(out)) >= sent + len(block(500, 560)),
             message="the restart's read")
    assert agent.terminate() == 0, agent.log()
    for epoch, group in by_epoch(read_chunks(out), str(log)).items():
        data = epoch_bytes(group)  # raises when one range of a name carries two contents
        lines = set(numbers(data.replace(b"an unfinished line", b"")))
        assert not (lines & set(range(100, 150)) and lines & set(range(500, 560))), f"epoch {epoch} holds both"


@pytest.mark.parametrize("rotation", ["rename", "copy-and-unlink", "copytruncate"])
def test_every_generation_rotated_away_during_an_outage_is_read_to_its_end(tmp_path, logflume_proc, rotation):
    """Four files, each rotated out of the glob with unread bytes while the agent was down, and one descriptor
    (``max_open_files: 1``) after the restart: the start's search can resume only one of them.  Every later
    scan must pick up the next, whether the rest sits at the generation's old inode (``rename``) or only in
    a copy at a new inode (``copy-and-unlink``: ``mv`` to another filesystem; ``copytruncate``: the old inode
    holds the next generation).  Before, the other three were never read to their end: their rest was lost
    (chaos seed 43 lost a renamed generation the same way, renamed while the start listed its directory;
    seed 51 the copy of a generation whose old inode held other bytes, renamed while the start searched)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    names = [logs / f"{c}.log" for c in "abcd"]
    out = tmp_path / "out.bin"
    positions = tmp_path / "data" / "source" / "t" / "positions.json"
    for i, log in enumerate(names):
        log.write_bytes(block(100 * i, 100 * i + 50))
    cfg = agent_config(tmp_path, [str(logs / "*.log")], out)
    agent = logflume_proc(["agent", "-c", cfg], name="first")
    wait_for(lambda: all(committed(positions, log) == log.stat().st_size for log in names)
             and sum(len(c.data) for c in read_chunks(out)) == sum(log.stat().st_size for log in names),
             timeout=30, message="every file delivered and its position written")  # memory channel: both
    agent.kill()
    epochs = {str(log): set(by_epoch(read_chunks(out), str(log))) for log in names}
    for i, log in enumerate(names):
        with open(log, "ab") as fh:
            fh.write(block(100 * i + 50, 100 * i + 100))
        rotated = log.with_name(log.name + ".1")
        if rotation == "rename":
            os.rename(log, rotated)
        else:
            shutil.copyfile(log, rotated)
            if rotation == "copy-and-unlink":
                log.unlink()
            else:  # truncated in place, then the next generation is written to the same inode
                with open(log, "r+b") as fh:
                    fh.truncate(0)
                    fh.write(block(1000 + 10 * i, 1010 + 10 * i))

    cfg = agent_config(tmp_path, [str(logs / "*.log")], out, max_open_files=1)
    agent = logflume_proc(["agent", "-c", cfg], name="second")
    want = sorted(n for i in range(4) for n in range(100 * i, 100 * i + 100))
    if rotation == "copytruncate":
        want = sorted(want + list(range(1000, 1040)))
    wait_for(lambda: sorted(numbers(b"".join(bytes(c.data) for c in read_chunks(out)))) == want, timeout=60,
             message="the rest of every rotated file")
    assert agent.terminate() == 0, agent.log()
    chunks = read_chunks(out)
    for i, log in enumerate(names):  # each continued under its own stream and first epoch, from its offset
        (epoch,) = epochs[str(log)]
        assert epoch_bytes(by_epoch(chunks, str(log))[epoch]) == block(100 * i, 100 * i + 100)
        assert len(by_epoch(chunks, str(log))) == (2 if rotation == "copytruncate" else 1)
