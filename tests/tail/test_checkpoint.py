"""The position file and its writer thread: atomic replace, newest snapshot wins, errors reported."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict

import pytest

from agent.sources.tail.checkpoint import CheckpointWriter, Position, PositionFile
from logflume.errors import StartupError


def pos(offset: int, ino: int = 7) -> Position:
    return Position(dev=1, ino=ino, fp_len=3, fp="ab", epoch="1:7:ab", stream="/s", path="/s", offset=offset,
                    seq_id=offset, truncations=0, last_seen=1.0)


def test_save_load_round_trip_and_no_temp_left(tmp_path):
    f = PositionFile(tmp_path / "positions.json")
    assert f.load() == []
    f.save([pos(10), pos(20, ino=8)])
    assert f.load() == [pos(10), pos(20, ino=8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["positions.json"]


def test_version_1_is_read_and_rewritten_as_version_2(tmp_path):
    f = PositionFile(tmp_path / "positions.json")
    v1 = {k: v for k, v in asdict(pos(10)).items() if k != "ended"}
    f.path.write_text(json.dumps({"version": 1, "files": [v1]}))
    assert f.load() == [pos(10)]
    ended = Position(**{**asdict(pos(4)), "epoch": "1:7:ab#0", "ended": True})
    f.save([pos(10), ended])  # two generations of one inode: the current one and the one its copy continues
    doc = json.loads(f.path.read_bytes())
    assert doc["version"] == 2 and [e["ended"] for e in doc["files"]] == [False, True]
    assert f.load() == [pos(10), ended]


def test_wrong_version_is_a_startup_error(tmp_path):
    (tmp_path / "positions.json").write_text(json.dumps({"version": 99, "files": []}))
    with pytest.raises(StartupError, match="unsupported version 99"):
        PositionFile(tmp_path / "positions.json").load()


def test_writer_coalesces_and_keeps_the_newest(tmp_path):
    f = PositionFile(tmp_path / "positions.json")
    w = CheckpointWriter(f, 0.0, on_error=lambda exc: None)
    try:
        for i in range(500):
            w.submit([pos(i)])
        assert w.flush(10)
        assert f.load() == [pos(499)]
    finally:
        w.close()


def test_writer_reports_errors_and_keeps_going(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    errors: list[OSError] = []
    got = threading.Event()
    w = CheckpointWriter(PositionFile(blocker / "positions.json"), 0.0,
                         on_error=lambda exc: (errors.append(exc), got.set()))
    try:
        w.submit([pos(1)])
        assert got.wait(10)
        assert isinstance(errors[0], NotADirectoryError)
    finally:
        w.close(timeout=3)
