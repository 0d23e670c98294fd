"""Record-level interceptors: exact against a per-record reference, and dedup-safe under any chunk boundaries."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.interceptors.mask import MaskInterceptor
from agent.interceptors.regex_filter import RegexFilterInterceptor
from jobs.dedup import Deduplicator
from logflume.chunk import FLAG_PARTIAL, Chunk
from logflume.settings import parse_settings


def make(cls, **raw):
    return cls(f"t.{cls.__name__}", parse_settings(cls.schema(), raw, "t", None))


def stream_chunks(data: bytes, cuts: list[int], epoch: str = "e1") -> list[Chunk]:
    """``data`` cut at record ends near ``cuts`` (a source cuts after a record), as a stream's chunks."""
    ends = sorted({i + 1 for i, b in enumerate(data) if b == 10} | {len(data)})
    bounds = sorted({min(e for e in ends if e >= c) for c in cuts if c <= len(data)} | {len(data)})
    out, prev = [], 0
    for b in bounds:
        if b > prev:
            out.append(Chunk("h", "/app.log", "Raw", b, epoch, data[prev:b]))
            prev = b
    return out


def reference_keep(data: bytes, pattern: str, mode: str) -> bytes:
    regex = re.compile(pattern.encode(), re.MULTILINE)
    lines = data.splitlines(keepends=True)
    return b"".join(x for x in lines if (regex.search(x.removesuffix(b"\n")) is not None) == (mode == "keep"))


lines_st = st.lists(st.sampled_from([b"INFO ok\n", b"DEBUG noise\n", b"ERROR card 4111111111111111\n",
                                     b"\n", b"x\n", b"token=abc123 DEBUG\n"]), min_size=1, max_size=60)


PATTERNS = ["DEBUG", "^ERROR", "ok$", "^$", "ok\\nDEBUG", "\\n", "x?"]


@settings(max_examples=150, deadline=None)
@given(lines=lines_st, cuts_a=st.lists(st.integers(0, 1500), max_size=8), cuts_b=st.lists(st.integers(0, 1500),
       max_size=8), mode=st.sampled_from(["keep", "drop"]), pattern=st.sampled_from(PATTERNS))
def test_filter_is_exact_and_any_two_cuttings_dedup_to_the_kept_records(lines, cuts_a, cuts_b, mode, pattern):
    data = b"".join(lines)
    expected = reference_keep(data, pattern, mode)
    dedup = Deduplicator()
    for cuts in (cuts_a, cuts_b):
        f = make(RegexFilterInterceptor, pattern=pattern, mode=mode)
        pieces = f.intercept(stream_chunks(data, cuts))
        # every piece is the source's bytes at its own range, and together they are the kept records
        for p in pieces:
            assert bytes(p.data) == data[p.start:p.seq_id]
        assert b"".join(bytes(p.data) for p in pieces) == expected
        assert [p.seq_id for p in pieces] == sorted({p.seq_id for p in pieces})
        dedup.run(pieces)
    assert dedup.conflicts == []
    kept = dedup.streams[("h", "/app.log", "e1")].covered if expected else None
    assert (kept.covered() if kept else 0) == len(expected), "a re-read with other boundaries must dedup fully"


@settings(max_examples=100, deadline=None)
@given(lines=lines_st, cuts_a=st.lists(st.integers(0, 1500), max_size=8), cuts_b=st.lists(st.integers(0, 1500),
       max_size=8))
def test_mask_keeps_offsets_and_moves_to_a_derived_epoch(lines, cuts_a, cuts_b):
    data = b"".join(lines)
    expected = re.sub(rb"\d{12}(\d{4})", lambda m: b"*" * 12 + m.group(1), data)
    expected = re.sub(rb"(?<=token=)[a-z0-9]+", lambda m: b"#" * len(m.group(0)), expected)
    dedup = Deduplicator()
    epochs = set()
    for cuts in (cuts_a, cuts_b):
        cards = make(MaskInterceptor, pattern=r"(?P<num>\d{12})\d{4}", group="num")
        tokens = make(MaskInterceptor, pattern=r"token=(?P<t>[a-z0-9]+)", group="t", char="#")
        out = tokens.intercept(cards.intercept(stream_chunks(data, cuts)))
        assert b"".join(bytes(c.data) for c in out) == expected
        for c in out:
            assert bytes(c.data) == expected[c.start:c.seq_id], "each byte keeps its stream offset"
            epochs.add(c.epoch)
        dedup.run(out)
    assert len(epochs) == 1 and epochs.pop().startswith("e1~")
    assert dedup.conflicts == []


def test_two_mask_configs_are_two_numbering_spaces_not_a_conflict():
    data = b"card 4111111111111111\n"
    a = make(MaskInterceptor, pattern=r"\d{16}").intercept(stream_chunks(data, []))
    b = make(MaskInterceptor, pattern=r"\d{16}", char="X").intercept(stream_chunks(data, []))
    plain = stream_chunks(data, [])
    assert a[0].epoch != b[0].epoch and a[0].epoch != plain[0].epoch
    dedup = Deduplicator()
    dedup.run(a + b + plain)
    assert dedup.conflicts == [] and len(dedup.streams) == 3
    assert make(MaskInterceptor, pattern=r"\d{16}").intercept(stream_chunks(data, []))[0].epoch == a[0].epoch


def test_a_record_cut_by_the_source_follows_its_first_piece():
    f = make(RegexFilterInterceptor, pattern="DEBUG", mode="drop")
    first = Chunk("h", "/a", "Raw", 21, "e", b"keep\nDEBUG half of a ", flags=[FLAG_PARTIAL])
    rest = Chunk("h", "/a", "Raw", 34, "e", b"long line\nok\n")
    out = f.intercept([first]) + f.intercept([rest])
    assert [(c.start, bytes(c.data)) for c in out] == [(0, b"keep\n"), (31, b"ok\n")]
    k = make(RegexFilterInterceptor, pattern="^ERROR", mode="keep")
    first = Chunk("h", "/b", "Raw", 10, "e", b"ERROR: a ", flags=[FLAG_PARTIAL])
    rest = Chunk("h", "/b", "Raw", 20, "e", b"b c\nDEBUG\n")
    out = k.intercept([first]) + k.intercept([rest])
    assert b"".join(bytes(c.data) for c in out) == b"ERROR: a b c\n"


def test_record_ends_chunks_are_filtered_by_record():
    f = make(RegexFilterInterceptor, pattern="drop me", mode="drop")
    c = Chunk("h", "syslog:app", "SysLog", 1030, "e", b"one\nline" b"drop me" b"two\nlines", record_ends=[8, 15, 24])
    out = f.intercept([c])
    assert [(x.start, bytes(x.data), x.record_ends) for x in out] == [(1006, b"one\nline", [8]),
                                                                       (1021, b"two\nlines", [9])]
    assert f.records_dropped._value.get() == 1
