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

from tests.chaos.faults import schedule
from tests.chaos.lines import make_line, parse_line
from tests.chaos.verify import judge
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
    assert proc.returncode == 0, f"{summary_line}\n{proc.stderr[-6000:]}"
    doc = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert doc["passed"] and doc["lost"] == 0 and doc["duplicated_after_archive"] == 0 and doc["corrupt"] == 0
    assert doc["faults"] >= 10 and doc["lines"] > 10_000
    assert re.search(r"faults=\d+ lines=\d+ lost=0 dup_after_archive=0 dup_before_archive=\d+ drain=", summary_line)


def test_count_lines_joins_split_lines_and_finds_gaps(tmp_path):
    """The verifier on real SequenceFiles: a line cut across two chunks counts once, a dropped chunk is a loss."""
    from logflume.chunk import Chunk
    from sinks.sequencefile import SequenceFileWriter
    from tests.chaos.verify import count_lines

    rng = random.Random(2)
    stream = b"".join(make_line("f", n, rng) for n in range(1, 7))
    cuts = [0, 40, len(stream) // 2, len(stream)]  # the first cut is inside line 1
    chunks = [Chunk("afile", "/x.log", "Raw", b, "e1", stream[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    with open(tmp_path / "all.seq", "wb") as f, SequenceFileWriter(f) as w:
        for c in chunks + chunks[1:2]:  # the second chunk twice: a re-send
            w.append_chunk(c)
    counted = count_lines([tmp_path / "all.seq"])
    v = judge({"f": 6}, [], counted.seen["afile"], counted.corrupt.get("afile", 0))
    assert (v.lost, v.corrupt) == (0, 0) and v.duplicated >= 1
    with open(tmp_path / "gap.seq", "wb") as f, SequenceFileWriter(f) as w:
        for c in (chunks[0], chunks[2]):
            w.append_chunk(c)
    counted = count_lines([tmp_path / "gap.seq"])
    v = judge({"f": 6}, [], counted.seen["afile"], counted.corrupt.get("afile", 0))
    assert v.lost >= 1 and v.first_missing == ("f", 1) and v.corrupt == 0 and counted.orphans >= 1
    damaged = bytearray(stream)
    damaged[len(stream) // 2 + 30] ^= 0x20  # one bit inside a line of the last chunk
    with open(tmp_path / "bad.seq", "wb") as f, SequenceFileWriter(f) as w:
        w.append_chunk(Chunk("afile", "/x.log", "Raw", len(stream), "e1", bytes(damaged)))
    counted = count_lines([tmp_path / "bad.seq"])
    assert counted.corrupt["afile"] == 1
