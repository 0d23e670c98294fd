"""CI entry of the chaos suite: a 2-minute seeded run as a real subprocess, plus fast checks of its own parts.

The run is ``python -m tests.chaos --duration 120 --seed 8`` exactly as a
person would type it; it must pass (no loss, no duplicate after archive, no
damaged line, clean shutdown).  Needs OpenSSH's ``sshd`` (Debian package
openssh-server), which scripts/test installs.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.cases import CASES
from tests.chaos.faults import schedule, twin_stops
from tests.chaos.lines import make_line, parse_line
from tests.chaos.verify import count_lines, disagreeing, judge
from tests.chaos.writers import LogFile
from tests.store.conftest import SSHD

REPO = Path(__file__).resolve().parents[2]
CI_SEED = 8
CI_DURATION = 120


def test_lines_carry_their_identity_and_detect_damage():
    rng = random.Random(1)
    for seq in range(1, 2000):
        line = make_line("f1", seq, rng)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert parse_line(line[:-1]) == ("f1", seq)
        pos = rng.randrange(len(line) - 1)
        damaged = line[:pos] + bytes([line[pos] ^ 0x01]) + line[pos + 1:-1]
        assert parse_line(damaged) != ("f1", seq) or damaged == line[:-1]
        assert parse_line(line[: max(1, pos)]) is None or pos >= len(line) - 1


def test_judge_counts_losses_windows_and_duplicates():
    seen = Counter({("a", 1): 1, ("a", 2): 2, ("a", 4): 1, ("b", 1): 1, ("b", 9): 1})
    v = judge({"a": 5, "b": 2}, [["a", 5, 5]], seen, corrupt=0)
    assert (v.written, v.lost, v.lost_in_ct_window, v.duplicated, v.unknown) == (7, 2, 1, 1, 1)
    assert v.first_missing == ("a", 3)


def test_judge_twin_allows_one_copy_per_name_and_counts_set_aside_lines():
    """Two agents with one name: a line stored under two names may be kept twice, a third copy is a duplicate,
    and a line kept only in _conflicts is not lost."""
    a, b = ("afile", "/t.log", "E#1"), ("afile", "/t.log", "E#2")
    names = {("t", 1): {a}, ("t", 2): {a, b}, ("t", 3): {a, b}, ("t", 4): {a}}
    seen = Counter({("t", 1): 2, ("t", 2): 2, ("t", 3): 3})
    v = judge({"t": 5}, [], seen, corrupt=0, names=names, set_aside=Counter({("t", 4): 1}))
    assert (v.lost, v.duplicated, v.read_twice, v.first_missing) == (1, 1 + 1, 2, ("t", 5))
    plain = judge({"t": 5}, [], seen, corrupt=0)
    assert (plain.lost, plain.duplicated) == (2, 1 + 1 + 2)


def test_disagreeing_compares_the_bytes_of_overlapping_ranges():
    assert not disagreeing([(10, b"0123456789"), (15, b"56789abcde"), (30, b"x" * 10)])
    assert disagreeing([(10, b"0123456789"), (15, b"5678Xabcde")])
    assert not disagreeing([(10, b"0123456789"), (20, b"ABCDEFGHIJ")])  # adjacent, not overlapping


def test_rename_shifts_like_logrotate_and_first_write_is_whole_lines(tmp_path):
    rng = random.Random(3)
    f = LogFile(tmp_path, "rename-w0-f0", first_write=1024)
    assert f.write(rng) > 1 and f.size >= 1024  # one write of whole lines, at least 1 KiB
    first = f.seq
    inode = os.stat(f.path).st_ino
    for i in range(3):
        f.rotate_rename(shift=True, by_copy=i == 0)  # the first move copies and unlinks (mv across filesystems)
        f.write(rng)
    assert os.stat(tmp_path / "rename-w0-f0.log.3").st_ino != inode
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rename-w0-f0.log", "rename-w0-f0.log.1", "rename-w0-f0.log.2", "rename-w0-f0.log.3"]
    oldest = (tmp_path / "rename-w0-f0.log.3").read_bytes().split(b"\n")
    assert parse_line(oldest[0]) == ("rename-w0-f0", 1) and parse_line(oldest[-2]) == ("rename-w0-f0", first)


def test_every_case_is_written_and_the_twin_is_hung_across_rotations():
    assert {c.name for c in CASES} == {"mixed", "rename", "copies", "twin", "memory"}
    stops = twin_stops(8, 120)
    assert stops == twin_stops(8, 120) and len(stops) >= 3
    twin = next(c for c in CASES if c.name == "twin")
    # a stop outlasts two of the twin's rotation gaps (at most 1.5 x rotate_every each): afile sees two
    # truncations where atwin sees one
    assert all(f.hold > 3 * twin.rotate_every and f.target == "atwin" for f in stops)


def test_schedule_is_a_function_of_the_seed():
    assert schedule(5, 600) == schedule(5, 600)
    assert schedule(5, 600) != schedule(6, 600)
    long = schedule(1, 1800)
    assert len(long) >= 100, "the long run must inject at least 100 faults"
    assert {f.kind for f in long} == {"kill_agent", "kill_collector", "stop_collector", "sshd_restart",
                                      "fill_secondary", "rogue"}
    assert all(f.at + f.hold <= 1800 for f in long)


@pytest.mark.timeout(900)
@pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH sshd not installed (Debian package openssh-server)")
def test_two_minute_chaos_run(tmp_path):
    """Two minutes of faults, then drain, archive and verify: every line exactly once."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--duration", str(CI_DURATION), "--seed", str(CI_SEED),
         "--workdir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=840, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    summary_line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(summary_line)
    assert proc.returncode == 0, f"{summary_line}\n{proc.stderr[-15000:]}"
    doc = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert doc["passed"] and doc["lost"] == 0 and doc["duplicated_after_archive"] == 0 and doc["corrupt"] == 0
    assert doc["faults"] >= 10 and doc["lines"] > 10_000
    assert re.search(r"^chaos seed=8 duration=120s faults=\d+ lines=\d+ lost=0 dup_after_archive=0 "
                     r"dup_before_archive=\d+ drain=", summary_line)
    for case in ("mixed", "rename", "copies", "twin"):
        assert re.search(rf"\| {case}: lines=\d+ lost=0 dup_after_archive=0 ", summary_line), case
        assert doc["cases"][case]["lines"] > 1000
    twin = doc["cases"]["twin"]
    assert twin["conflicts_archive"] > 0 and twin["conflicts_seen"] > 0, "the twin case must end in a reported conflict"


def test_count_lines_joins_split_lines_and_finds_gaps(tmp_path):
    """The verifier on real SequenceFiles: a line cut across two chunks counts once, a dropped chunk is a loss."""
    from logflume.chunk import Chunk
    from logflume.sequencefile import SequenceFileWriter

    rng = random.Random(2)
    stream = b"".join(make_line("f", n, rng) for n in range(1, 7))
    cuts = [0, 40, len(stream) // 2, len(stream)]  # the first cut is inside line 1
    chunks = [Chunk("afile", "/logs/f.log", "Raw", b, "e1", stream[a:b])
              for a, b in zip(cuts, cuts[1:], strict=False)]
    with open(tmp_path / "all.seq", "wb") as f, SequenceFileWriter(f) as w:
        for c in chunks + chunks[1:2]:  # the second chunk twice: a re-send
            w.append_chunk(c)
    counted = count_lines([tmp_path / "all.seq"])
    v = judge({"f": 6}, [], counted.seen["f.log"], counted.corrupt.get("f.log", 0))
    assert (v.lost, v.corrupt) == (0, 0) and v.duplicated >= 1 and not counted.conflicts
    with open(tmp_path / "gap.seq", "wb") as f, SequenceFileWriter(f) as w:
        for c in (chunks[0], chunks[2]):
            w.append_chunk(c)
    counted = count_lines([tmp_path / "gap.seq"])
    v = judge({"f": 6}, [], counted.seen["f.log"], counted.corrupt.get("f.log", 0))
    assert v.lost >= 1 and v.first_missing == ("f", 1) and v.corrupt == 0 and counted.orphans >= 1
    damaged = bytearray(stream)
    damaged[len(stream) // 2 + 30] ^= 0x20  # one bit inside a line of the last chunk
    with open(tmp_path / "bad.seq", "wb") as f, SequenceFileWriter(f) as w:
        w.append_chunk(Chunk("afile", "/logs/f.log", "Raw", len(stream), "e1", bytes(damaged)))
    counted = count_lines([tmp_path / "bad.seq"])
    assert counted.corrupt["f.log"] == 1


def test_count_lines_keeps_two_readers_apart_and_finds_their_conflict(tmp_path):
    """Two agents with one name: the same name over different bytes is a conflict; each reader's lines count."""
    from logflume.chunk import Chunk
    from logflume.sequencefile import SequenceFileWriter

    rng = random.Random(4)
    gen2 = b"".join(make_line("twin-w0-f0", n, rng) for n in range(1, 4))
    gen3 = b"".join(make_line("twin-w0-f0", n, rng) for n in range(4, 8))
    name = ("afile", "/logs/twin-w0-f0.log", "E#1")
    with open(tmp_path / "p.seq", "wb") as f, SequenceFileWriter(f) as w:
        w.append_chunk(Chunk(*name[:2], "Raw", len(gen2), name[2], gen2, tags={"reader": "afile"}))
        w.append_chunk(Chunk(*name[:2], "Raw", len(gen3), name[2], gen3, tags={"reader": "atwin"}))
    apart = count_lines([tmp_path / "p.seq"], by_reader=True, names_for=("twin",))
    assert apart.conflicts == {"twin": 1} and not apart.corrupt
    assert sum(apart.seen["twin"].values()) == 7 and apart.names[("twin-w0-f0", 5)] == {name}
    assert count_lines([tmp_path / "p.seq"]).conflicts == {"twin": 1}  # found by name, readers or not
