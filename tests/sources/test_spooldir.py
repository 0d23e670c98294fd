"""spooldir source: whole files in, .COMPLETED/delete after commit, changed files refused, restart resumes."""

from __future__ import annotations

import os
import time

import pytest

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT
from logflume.errors import StartupError
from tests.conftest import wait_for
from tests.sources.pipeline import metric, pipeline

pytestmark = pytest.mark.timeout(120)


def spool(path, **extra) -> dict:
    return {"type": "spooldir", "dir": str(path), "min_age": 0, "poll_interval": "50ms", **extra}


def lines(n: int, tag: str = "line") -> bytes:
    return b"".join(b"%s %06d\n" % (tag.encode(), i) for i in range(n))


def test_files_ingested_then_renamed(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    (d / "a.log").write_bytes(lines(20000, "a"))
    (d / "b.log").write_bytes(b"x" * 5000 + b"\nno newline at end")
    (d / ".hidden.log").write_bytes(b"skipped\n")
    (d / "c.tmp").write_bytes(b"skipped by pattern\n")
    (d / "d.log.COMPLETED").write_bytes(b"already done\n")
    with pipeline(tmp_path, spool(d, pattern="*.log", chunk_size="4KiB")) as agent:
        sink = agent.sinks["out"]
        wait_for(lambda: (d / "a.log.COMPLETED").exists() and (d / "b.log.COMPLETED").exists(), 15)
        wait_for(lambda: len(sink.records(str(d / "b.log"))) >= 3, 5)
        a = [c for c in sink.chunks if c.stream == str(d / "a.log")]
        assert b"".join(bytes(c.data) for c in a) == lines(20000, "a")
        assert all(len(c) <= 4096 and bytes(c.data).endswith(b"\n") for c in a)
        assert [c.seq_id for c in a] == sorted(c.seq_id for c in a) and a[-1].seq_id == len(lines(20000, "a"))
        assert len({c.epoch for c in a}) == 1
        b = [c for c in sink.chunks if c.stream == str(d / "b.log")]
        assert [(len(c), c.flags) for c in b] == [(4096, [FLAG_SPLIT]), (5018 - 4096, [FLAG_PARTIAL])]
        assert sorted(os.listdir(d)) == [".hidden.log", "a.log.COMPLETED", "b.log.COMPLETED", "c.tmp",
                                         "d.log.COMPLETED"]
        assert metric(agent, "files_completed") == 2
        assert {c.stream for c in sink.chunks} == {str(d / "a.log"), str(d / "b.log")}


def test_delete_policy_and_min_age(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    with pipeline(tmp_path, spool(d, on_complete="delete", min_age="1s")) as agent:
        sink = agent.sinks["out"]
        (d / "new.log").write_bytes(b"fresh\n")
        time.sleep(0.5)
        assert (d / "new.log").exists() and not sink.chunks  # too young to be complete
        wait_for(lambda: not (d / "new.log").exists(), 5)
        wait_for(lambda: sink.records() == [b"fresh"], 5)


def test_file_changed_after_pickup_is_reported_and_left(tmp_path, caplog):
    d = tmp_path / "spool"
    d.mkdir()
    gate = tmp_path / "gate"
    f = d / "growing.log"
    f.write_bytes(lines(5000))
    # A tiny channel and a gated sink stall the source mid-file; the file then changes.
    with pipeline(tmp_path, spool(d, chunk_size="4KiB"), capacity="8KiB", gate=gate) as agent:
        time.sleep(0.5)  # 60 KB do not fit in 8 KiB: the source is now blocked mid-file
        with open(f, "ab") as fh:
            fh.write(b"appended later\n")
        gate.touch()
        wait_for(lambda: metric(agent, "files_failed") == 1, 10)
        assert f.exists() and not (d / "growing.log.COMPLETED").exists()
        assert "changed while being ingested" in caplog.text
        time.sleep(0.3)
        assert metric(agent, "files_failed") == 1  # not retried in a loop
        # Other files go on.
        (d / "next.log").write_bytes(b"next\n")
        wait_for(lambda: (d / "next.log.COMPLETED").exists(), 5)


def test_restart_resumes_inside_a_file(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    data = lines(20000)
    (d / "big.log").write_bytes(data)
    state = tmp_path / "state"
    gate = tmp_path / "gate"
    with pipeline(tmp_path, spool(d, chunk_size="4KiB"), capacity="16KiB", gate=gate, data_dir=state) as agent:
        time.sleep(0.5)  # the source is now blocked mid-file on the full channel
        first_sink = agent.sinks["out"]
        # Stop mid-file: the sink is gated, so nothing beyond a few chunks was committed.
        agent.sources["src"].stop()
    first = list(first_sink.chunks)  # what run 1 committed (drained at stop once the gate opened)
    assert first
    assert (d / "big.log").exists() and not (d / "big.log.COMPLETED").exists()
    with pipeline(tmp_path, spool(d, chunk_size="4KiB"), data_dir=state) as agent:
        sink = agent.sinks["out"]
        wait_for(lambda: (d / "big.log.COMPLETED").exists(), 15)
        wait_for(lambda: sink.chunks and sink.chunks[-1].seq_id == len(data), 5)
        second = list(sink.chunks)
    assert second[0].start > 0, "the restart must resume, not start the file again"
    assert second[0].epoch == first[0].epoch
    # Together the two runs cover the file; overlap (in-flight chunks) is allowed, gaps are not.
    covered = 0
    for c in sorted(first + second, key=lambda c: c.start):
        assert c.start <= covered
        assert bytes(c.data) == data[c.start:c.seq_id]
        covered = max(covered, c.seq_id)
    assert covered == len(data)
    assert len(first) + len(second) < len(data) // 4096 + 6


def test_missing_directory_is_a_startup_error(tmp_path):
    with pytest.raises(StartupError, match="does not exist"):
        with pipeline(tmp_path, spool(tmp_path / "nope")):
            pass


def test_reads_for_loop_detection(tmp_path):
    with pipeline(tmp_path, spool(tmp_path)) as agent:
        assert agent.sources["src"].reads() == [f"file:{tmp_path}/*"]


def test_a_file_sink_writing_into_the_spool_directory_is_a_loop(tmp_path):
    from logflume.component import Context
    from logflume.errors import ConfigError
    from logflume.topology import build_topology

    raw = {"sources": {"src": {**spool(tmp_path), "channels": ["ch"]}},
           "channels": {"ch": {"type": "memory"}},
           "sinks": {"out": {"type": "file", "url": str(tmp_path), "channel": "ch"}}}
    with pytest.raises(ConfigError, match="loop in the pipeline"):
        build_topology(raw, "agent.yaml", Context(data_dir=tmp_path / "data"))
