"""Byte-range de-duplication: each byte of a stream kept exactly once, records intact."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.dedup import Deduplicator, RangeSet, trim
from logflume.chunk import FLAG_SPLIT, Chunk


def chunk(data: bytes, end: int, *, record_ends=None, stream="s", epoch="e", flags=None, ts=1000,
          sender: str = "") -> Chunk:
    return Chunk(source="h", stream=stream, datatype="T", seq_id=end, epoch=epoch, data=data,
                 record_ends=record_ends, timestamp=ts, flags=list(flags or []), sender=sender)


class FakeArchive:
    """Stands in for archive files: what one run kept, by (file, offset), as archive.read_archived gives it."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, int], list[Chunk]] = {}
        self.reads = 0

    def keep(self, d: Deduplicator, kept: list[Chunk], file: str) -> None:
        by_key: dict[tuple, list[Chunk]] = {}
        for c in kept:
            by_key.setdefault(c.key, []).append(c)
        for n, (key, cs) in enumerate(sorted(by_key.items())):
            self.files[(file, n)] = [Chunk(**{**_fields(c), "data": bytes(c.data)}) for c in cs]
            d.locate(key, cs[0].start, cs[-1].seq_id, file, n)

    def read(self, file: str, offset: int, key: tuple) -> list[Chunk]:
        self.reads += 1
        if (file, offset) not in self.files:
            raise FileNotFoundError(file)
        return [c for c in self.files[(file, offset)] if c.key == key]


def _fields(c: Chunk) -> dict:
    return {f: getattr(c, f) for f in c.__dataclass_fields__}


def test_rangeset_merges_and_reports_gaps() -> None:
    rs = RangeSet()
    rs.add(10, 20)
    rs.add(30, 40)
    assert rs.missing(0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert rs.missing(12, 18) == []
    assert rs.missing(15, 35) == [(20, 30)]
    rs.add(20, 30)  # touching ranges merge
    assert list(rs) == [(10, 40)]
    rs.add(5, 45)
    assert list(rs) == [(5, 45)]
    assert rs.covered() == 40


def test_exact_duplicate_dropped_and_overlap_trimmed_with_record_ends() -> None:
    d = Deduplicator()
    a = chunk(b"aa\nbb\n", 6)
    assert d.feed(a) == [a]
    assert d.feed(chunk(b"aa\nbb\n", 6)) == []
    # re-read from offset 3 with explicit record ends: "bb\n" is old, "cc\ndd\n" new
    b = chunk(b"bb\ncc\ndd\n", 12, record_ends=[3, 6, 9])
    (piece,) = d.feed(b)
    assert bytes(piece.data) == b"cc\ndd\n"
    assert (piece.start, piece.seq_id) == (6, 12)
    assert piece.record_ends == [3, 6]
    assert [bytes(r) for r in piece.records()] == [b"cc\n", b"dd\n"]
    assert d.stats.duplicates_dropped == 1 and d.stats.overlaps_trimmed == 1
    assert d.stats.bytes_out == 12


def test_chunk_spanning_a_gap_yields_two_pieces() -> None:
    d = Deduplicator()
    d.feed(chunk(b"0123", 4))
    d.feed(chunk(b"89", 10))
    pieces = d.feed(chunk(b"23456789ab", 12))
    assert [(p.start, p.seq_id, bytes(p.data)) for p in pieces] == [(4, 8, b"4567"), (10, 12, b"ab")]


def test_trim_keeps_tail_flags_only_with_the_tail() -> None:
    c = chunk(b"xxxxyyyy", 8, flags=[FLAG_SPLIT])
    assert trim(c, 4, 8).flags == [FLAG_SPLIT]
    assert trim(c, 0, 4).flags == []
    assert trim(c, 0, 8) is c
    with pytest.raises(ValueError, match="not inside chunk"):
        trim(c, 6, 10)


def test_streams_and_epochs_are_separate() -> None:
    d = Deduplicator()
    assert d.feed(chunk(b"abc", 3))
    assert d.feed(chunk(b"abc", 3, stream="other"))
    assert d.feed(chunk(b"abc", 3, epoch="rotated"))
    assert not d.feed(chunk(b"abc", 3))


def test_state_round_trip_drops_bytes_of_an_earlier_run_after_reading_them_back() -> None:
    archive = FakeArchive()
    d = Deduplicator()
    archive.keep(d, d.run([chunk(b"aa\n", 3), chunk(b"bb\n", 6)]), "f1")
    again = Deduplicator.from_state(d.state(), archive.read)
    assert again.run([chunk(b"aa\nbb\ncc\n", 9)])[0].data.tobytes() == b"cc\n"
    assert archive.reads == 1 and not again.conflicts


def test_overlap_with_other_bytes_in_a_batch_is_a_conflict_kept_whole() -> None:
    """A forged or cloned-host chunk claims a range with other bytes: neither side is dropped."""
    real = [chunk(b"aa\n", 3, sender="web-01"), chunk(b"bb\n", 6, sender="web-01")]
    forged = chunk(b"XX\nYY\nZZ\n", 9, sender="evil")
    d = Deduplicator()
    kept = d.run([*real, forged])
    # dedup order: the longest chunk at offset 0 (the forged one) is seen first and kept
    assert [bytes(c.data) for c in kept] == [b"XX\nYY\nZZ\n"]
    assert [c.chunk for c in d.conflicts] == [real[0], real[1]]
    assert d.stats.conflicts == 2 and d.stats.duplicates_dropped == 0
    c = d.conflicts[0]
    assert (c.start, c.end, c.kept) == (0, 3, forged)
    key = c.key(lambda ch: "in-" + ch.sender)
    assert key["sender"] == "web-01" and key["conflict"]["kept"]["sender"] == "evil"
    assert key["conflict"]["input"] == "in-web-01" and key["conflict"]["kept_in"] == "in-evil"


def test_conflicting_chunk_is_set_aside_whole_and_claims_no_range() -> None:
    d = Deduplicator()
    assert d.feed(chunk(b"aa\n", 3))
    assert d.feed(chunk(b"XX\nYY\n", 6)) == []  # disagrees on [0, 3): its [3, 6) is not taken either
    assert [bytes(p.data) for p in d.feed(chunk(b"bb\n", 6))] == [b"bb\n"]
    assert d.feed(chunk(b"aa\nbb\n", 6)) == []  # an exact copy is still dropped silently
    assert d.stats.conflicts == 1 and d.stats.duplicates_dropped == 1


def test_overlap_with_an_earlier_run_is_compared_with_the_archived_bytes() -> None:
    archive = FakeArchive()
    d = Deduplicator()
    archive.keep(d, d.run([chunk(b"aa\n", 3, sender="web-01"), chunk(b"bb\n", 6, sender="web-01")]), "f1")
    later = Deduplicator.from_state(d.state(), archive.read)
    forged = chunk(b"aa\nXX\ncc\n", 9, sender="evil")
    assert later.run([forged]) == []
    (c,) = later.conflicts
    assert (c.chunk, c.start, c.end, c.kept_in) == (forged, 3, 6, "f1")
    assert c.kept.sender == "web-01" and bytes(c.kept.data) == b"bb\n"
    # the conflicting chunk claimed nothing: the real continuation is kept
    assert [bytes(p.data) for p in later.run([chunk(b"bb\ncc\n", 9)])] == [b"cc\n"]


def test_overlap_that_cannot_be_read_back_is_a_conflict_not_a_drop() -> None:
    d = Deduplicator()
    d.run([chunk(b"aa\n", 3)])
    d.locate(("h", "s", "e"), 0, 3, "gone.seq", 7)
    later = Deduplicator.from_state(d.state(), FakeArchive().read)
    assert later.run([chunk(b"aa\n", 3)]) == []
    (c,) = later.conflicts
    assert "cannot be re-read" in c.reason and "gone.seq" in c.reason and c.kept is None


def test_ranges_kept_without_a_location_are_trusted() -> None:
    """Manifest format 1 (before byte checks) and dry runs name no file: overlaps with them are not compared."""
    legacy = Deduplicator.from_state([["h", "s", "e", [[0, 6]]]])
    assert [bytes(p.data) for p in legacy.run([chunk(b"XX\nYY\ncc\n", 9)])] == [b"cc\n"]
    assert not legacy.conflicts
    dry = Deduplicator()
    dry.run([chunk(b"aa\n", 3)])
    dry.locate(("h", "s", "e"), 0, 3, None)
    assert Deduplicator.from_state(dry.state()).run([chunk(b"aa\nbb\n", 6)])[0].data.tobytes() == b"bb\n"


def _lines(rng: random.Random, n: int) -> bytes:
    return b"".join(f"line {i} {'x' * rng.randrange(0, 30)}\n".encode() for i in range(n))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), copies=st.integers(1, 4), explicit=st.booleans())
def test_any_mix_of_copies_and_rechunkings_keeps_each_byte_once(seed: int, copies: int, explicit: bool) -> None:
    """Several 'collectors' each hold a differently chunked, partly duplicated view of one stream."""
    rng = random.Random(seed)
    stream = _lines(rng, rng.randrange(1, 60))
    bounds = [i + 1 for i, b in enumerate(stream) if b == 10]
    pool: list[Chunk] = []
    for _ in range(copies):
        pos = 0
        while pos < len(stream):
            cands = [b for b in bounds if b > pos]
            end = rng.choice(cands[:8])
            data = stream[pos:end]
            ends = [b - pos for b in bounds if pos < b <= end] if explicit else None
            pool.append(chunk(data, end, record_ends=ends, ts=rng.randrange(10**6)))
            # sometimes an agent re-reads from an earlier checkpoint
            pos = end if rng.random() < 0.8 else rng.choice([0] + [b for b in bounds if b < end])
            if pos == 0 and rng.random() < 0.5:
                break
    rng.shuffle(pool)
    kept = Deduplicator().run(pool)
    covered = sorted((c.start, c.seq_id) for c in kept)
    # non-overlapping and in order
    assert [c.seq_id for c in kept] == sorted(c.seq_id for c in kept)
    for (_, e1), (s2, _) in zip(covered, covered[1:], strict=False):
        assert e1 <= s2
    # every byte that any chunk carried is present exactly once, and equal to the stream's
    union = RangeSet((c.start, c.seq_id) for c in pool)
    assert sum(len(c.data) for c in kept) == union.covered()
    for c in kept:
        assert bytes(c.data) == stream[c.start:c.seq_id]
        # records still end on line boundaries
        assert all(bytes(r).endswith(b"\n") for r in c.records())
