"""Checking the outcome: every written line exactly once in the archive, duplicates counted before it.

Lines are identified by their own content (``tests/chaos/lines.py``: file id,
number, CRC), so the check does not depend on how chunks were cut, which
stream name a rotated file kept, or how many times a chunk was re-sent.
Chunks of one (source, stream, epoch) are joined in offset order before
splitting into lines, so a line cut across two chunks (a partial record sent
after ``partial_timeout``) still counts once.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from logflume.sequencefile import SequenceFileReader
from tests.chaos.cases import case_of
from tests.chaos.lines import parse_line

Name = tuple[str, str, str]  # (source, stream, epoch): what archive de-duplicates by


@dataclass
class LineCount:
    """Occurrences of each (file id, seq) per case, and bytes that were not intact lines.

    ``corrupt`` counts damaged lines inside contiguous data (always a failure); ``orphans`` counts line
    pieces next to a gap in a stream, which only a loss explains (and the loss is reported as such).
    ``names`` holds, for the lines of the cases asked for, every name the line was read under;
    ``conflicts`` counts, per case, the names under which two chunks hold different bytes for the same
    range.
    """

    seen: dict[str, Counter] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    names: dict[tuple[str, int], set[Name]] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)
    orphans: int = 0
    chunks: int = 0
    files: int = 0


def sink_files(root: Path, under: str | None = None) -> list[Path]:
    """Finished SequenceFiles under a store or archive root (Hadoop-hidden names are skipped).

    ``under`` names one hidden partition to read instead (``_conflicts``).
    """
    if under is not None:
        root = root / under
        if not root.is_dir():
            return []
    return sorted(p for p in root.rglob("*.seq") if not any(part.startswith((".", "_")) for part in
                                                              p.relative_to(root).parts))


def stream_case(stream: str) -> str:
    """The case of a stream: its file's name starts with the file id (a followed copy: ``<id>.log.N``)."""
    return case_of(os.path.basename(stream))


def disagreeing(chunks: list[tuple[int, bytes]]) -> bool:
    """True when two of these chunks (end offset, bytes) of one name hold different bytes for a common range."""
    spans = sorted((end - len(data), end, data) for end, data in chunks)
    for i, (s1, e1, d1) in enumerate(spans):
        for s2, e2, d2 in spans[i + 1:]:
            if s2 >= e1:
                break
            lo, hi = s2, min(e1, e2)
            if d1[lo - s1:hi - s1] != d2[lo - s2:hi - s2]:
                return True
    return False


def count_lines(paths: list[Path], *, by_reader: bool = False, names_for: tuple[str, ...] = ()) -> LineCount:
    """Count the lines in these sink files.

    Chunks of one name are joined in offset order; with ``by_reader`` the chunks of each reader (tag
    ``reader``, set only in the twin case) are joined apart, as two agents with one name read apart.
    """
    out = LineCount()
    groups: dict[tuple[str, str, str, str], list[tuple[int, bytes]]] = {}
    for path in paths:
        out.files += 1
        with open(path, "rb") as f:
            for c in SequenceFileReader(f).iter_chunks():
                out.chunks += 1
                reader = c.tags.get("reader", "") if by_reader else ""
                groups.setdefault((c.source, c.stream, c.epoch, reader), []).append((c.seq_id, bytes(c.data)))
    by_name: dict[Name, list[tuple[int, bytes]]] = {}
    for (source, stream, epoch, _reader), chunks in groups.items():
        by_name.setdefault((source, stream, epoch), []).extend(chunks)
        case = stream_case(stream)
        seen = out.seen.setdefault(case, Counter())
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
                    if case in names_for:
                        out.names.setdefault(key, set()).add((source, stream, epoch))
        # a record whose continuation is missing: a loss too, found as missing lines
        out.orphans += sum(1 for end, rest in tails.items() if rest and end not in used)
        if bad:
            out.corrupt[case] = out.corrupt.get(case, 0) + bad
    for (_source, stream, _epoch), chunks in by_name.items():
        if disagreeing(chunks):
            case = stream_case(stream)
            out.conflicts[case] = out.conflicts.get(case, 0) + 1
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
    read_twice: int = 0  # lines read under two names (the twin case), so legitimately kept twice


def judge(written: dict[str, int], windows: list[list], seen: Counter, corrupt: int, *,
          set_aside: Counter | None = None, names: dict[tuple[str, int], set[Name]] | None = None) -> Verdict:
    """Compare what the writers wrote (last seq per file id) with the lines seen for one case.

    Exactly once means once per name.  Without ``names`` a line must be seen once.  With ``names``
    (the twin case: two agents with one name) a line may be seen once for every distinct
    ``(source, stream, epoch)`` it was stored under before archive: those are different reads of the
    same bytes, which no job can tell from the lines alone; any copy beyond that is a duplicate.
    ``set_aside`` holds the lines archive set aside as the losing side of a conflict (``_conflicts``):
    they count as present (not lost), never as duplicates.
    """
    in_window = set()
    for fid, first, last in windows:
        in_window.update((fid, s) for s in range(first, last + 1))
    lost = lost_window = dups = twice = 0
    first_missing = None
    total = 0
    for fid in sorted(written):
        for seq in range(1, written[fid] + 1):
            total += 1
            key = (fid, seq)
            n = seen.get(key, 0)
            allowed = 1
            if names is not None:
                allowed = max(1, len(names.get(key, ())))
                twice += allowed > 1
            if n == 0 and not (set_aside and set_aside.get(key)):
                if key in in_window:
                    lost_window += 1
                else:
                    lost += 1
                    if first_missing is None:
                        first_missing = key
            elif n > allowed:
                dups += n - allowed
    unknown = sum(n for (fid, seq), n in seen.items() if seq > written.get(fid, 0) or seq < 1)
    return Verdict(total, lost, lost_window, dups, corrupt, first_missing, unknown, twice)
