"""Checking the outcome: every written line exactly once in the archive, duplicates counted before it.

Lines are identified by their own content (``tests/chaos/lines.py``: file id,
number, CRC), so the check does not depend on how chunks were cut, which
stream name a rotated file kept, or how many times a chunk was re-sent.
Chunks of one (source, stream, epoch) are joined in offset order before
splitting into lines, so a line cut across two chunks (a partial record sent
after ``partial_timeout``) still counts once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sinks.sequencefile import SequenceFileReader
from tests.chaos.lines import parse_line


@dataclass
class LineCount:
    """Occurrences of each (file id, seq) per agent (chunk source), and bytes that were not intact lines.

    ``corrupt`` counts damaged lines inside contiguous data (always a failure); ``orphans`` counts line
    pieces next to a gap in a stream, which only a loss explains (and the loss is reported as such).
    """

    seen: dict[str, Counter] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    orphans: int = 0
    chunks: int = 0
    files: int = 0


def sink_files(root: Path) -> list[Path]:
    """Finished SequenceFiles under a store or archive root (Hadoop-hidden names are skipped)."""
    return sorted(p for p in root.rglob("*.seq") if not any(part.startswith((".", "_")) for part in
                                                              p.relative_to(root).parts))


def count_lines(paths: list[Path]) -> LineCount:
    out = LineCount()
    groups: dict[tuple[str, str, str], list[tuple[int, bytes]]] = {}
    for path in paths:
        out.files += 1
        with open(path, "rb") as f:
            for c in SequenceFileReader(f).iter_chunks():
                out.chunks += 1
                groups.setdefault((c.source, c.stream, c.epoch), []).append((c.seq_id, bytes(c.data)))
    for (source, _stream, _epoch), chunks in groups.items():
        seen = out.seen.setdefault(source, Counter())
        chunks.sort(key=lambda x: (x[0] - len(x[1]), x[0]))
        tails: dict[int, bytes] = {}  # end offset -> bytes after the last newline of a chunk ending there
        used: set[int] = set()
        bad = 0
        for seq_id, data in chunks:
            start = seq_id - len(data)
            pieces = data.split(b"\n")
            head = tails.get(start)
            first = 0
            if head is not None:
                pieces[0] = head + pieces[0]
                used.add(start)
            elif start != 0 and parse_line(pieces[0]) is None:
                out.orphans += 1  # the chunk before this one is missing (a loss, found as missing lines)
                first = 1
            tails[seq_id] = pieces.pop()
            for line in pieces[first:]:
                key = parse_line(line)
                if key is None:
                    bad += 1
                else:
                    seen[key] += 1
        # a record whose continuation is missing: a loss too, found as missing lines
        out.orphans += sum(1 for end, rest in tails.items() if rest and end not in used)
        if bad:
            out.corrupt[source] = out.corrupt.get(source, 0) + bad
    return out


@dataclass
class Verdict:
    written: int
    lost: int
    lost_in_ct_window: int
    duplicated: int  # extra copies
    corrupt: int
    first_missing: tuple[str, int] | None
    unknown: int  # lines never written (must be 0)


def judge(written: dict[str, int], windows: list[list], seen: Counter, corrupt: int) -> Verdict:
    """Compare what the writers wrote (last seq per file id) with the lines seen for one agent."""
    in_window = set()
    for fid, first, last in windows:
        in_window.update((fid, s) for s in range(first, last + 1))
    lost = lost_window = dups = 0
    first_missing = None
    total = 0
    for fid in sorted(written):
        for seq in range(1, written[fid] + 1):
            total += 1
            n = seen.get((fid, seq), 0)
            if n == 0:
                if (fid, seq) in in_window:
                    lost_window += 1
                else:
                    lost += 1
                    if first_missing is None:
                        first_missing = (fid, seq)
            elif n > 1:
                dups += n - 1
    unknown = sum(n for (fid, seq), n in seen.items() if seq > written.get(fid, 0) or seq < 1)
    return Verdict(total, lost, lost_window, dups, corrupt, first_missing, unknown)
