"""The instruments behind the copy figures in docs/benchmarks.md: strace parsing and the zero-copy model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.copies import parse_strace

REPO = Path(__file__).resolve().parents[2]

STRACE = """\
101 pread64(5, "2026"..., 1048576, 0) = 1048576
102 sendmsg(7, {msg_iov=[...]}, 0 <unfinished ...>
101 mmap(NULL, 8392704, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, -1, 0) = 0x7f00
101 mmap(NULL, 67112960, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f10
102 <... sendmsg resumed>) = 67108864
101 mremap(0x7f20, 1052672, 2101248, MREMAP_MAYMOVE) = 0x7f20
101 read(3, "", 10) = 0
101 write(9, "x", 1) = -1 EAGAIN (Resource temporarily unavailable)
"""


def test_strace_counts_bytes_joins_resumed_calls_and_skips_reservations(tmp_path: Path) -> None:
    p = tmp_path / "t.strace"
    p.write_text(STRACE)
    doc = parse_strace(p)
    assert doc["calls"] == {"pread64": {"calls": 1, "bytes": 1 << 20}, "sendmsg": {"calls": 1, "bytes": 64 << 20}}
    assert doc["big_mmaps"] == [67112960]  # the PROT_NONE stack reservation is no buffer
    assert doc["big_mremaps"] == [2101248]


@pytest.mark.timeout(120)
def test_zero_copy_model_moves_every_byte_each_way(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.zerocopy_model", "--size-mb", "8", "--rounds", "1",
                           "--work-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| today") or line.startswith("| ranges")]
    assert len(rows) == 4, proc.stdout
    for row in rows:
        mb_s = float(row.split("|")[3].replace(",", ""))
        assert mb_s > 0, row
