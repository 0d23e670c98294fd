"""logflume.chunking: the one way sources make chunks.

RecordChunker (byte streams): every byte out exactly once, cut after records,
split and partial flagged.  EventStreams and StreamLedger (delimited records):
chunk cutting, splitting, ordering and numbering across restarts.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, FLAG_TRUNCATED
from logflume.chunking import EventStreams, MultilinePattern, RecordChunker, StreamLedger


def make(**kw) -> RecordChunker:
    args = dict(source="h", stream="s", datatype="Raw", tags={"a": "b"}, epoch="e", chunk_size=64)
    args.update(kw)
    return RecordChunker(**args)


def run(chunker: RecordChunker, pieces: list[bytes]) -> list:
    out = []
    for i, p in enumerate(pieces):
        out += chunker.feed(p, float(i))
        out += chunker.poll(float(i))
    out += chunker.finish()
    return out


def check_stream(chunks, data: bytes, start: int = 0) -> None:
    assert b"".join(bytes(c.data) for c in chunks) == data
    pos = start
    for c in chunks:
        assert len(c.data) > 0
        assert c.seq_id == pos + len(c.data)
        pos = c.seq_id


def test_newline_chunks_cut_after_last_complete_line():
    ch = make(chunk_size=10)
    out = ch.feed(b"aaa\nbbb\ncccc\n", 0.0)
    assert [bytes(c.data) for c in out] == [b"aaa\nbbb\n"]
    assert out[0].seq_id == 8 and out[0].record_ends is None and out[0].flags == []
    assert ch.offset == 8 and ch.pending_bytes == 5
    rest = ch.finish()
    assert [bytes(c.data) for c in rest] == [b"cccc\n"] and rest[0].seq_id == 13 and rest[0].flags == []


def test_start_offset_numbers_seq_ids():
    ch = make(start_offset=1000)
    out = ch.feed(b"x\n", 0) + ch.finish()
    assert out[0].seq_id == 1002 and out[0].start == 1000


def test_flush_interval_sends_complete_records_only():
    ch = make(flush_interval=1.0, partial_timeout=5.0)
    assert ch.feed(b"one\ntw", 10.0) == []
    assert ch.poll(10.5) == []
    out = ch.poll(11.0)
    assert [bytes(c.data) for c in out] == [b"one\n"]
    assert ch.pending_bytes == 2
    assert ch.poll(12.0) == []  # partial waits for partial_timeout since the last byte


def test_quiet_flush_sends_complete_records_once_caught_up_input_is_quiet():
    ch = make(flush_interval=1.0, partial_timeout=5.0, quiet_flush=0.005)
    assert ch.feed(b"one\ntw", 10.0) == []
    assert ch.poll(10.004, caught_up=True) == []  # quiet for less than quiet_flush
    assert ch.next_deadline(caught_up=True) == pytest.approx(10.005)
    assert ch.next_deadline(caught_up=False) == pytest.approx(11.0)
    assert ch.poll(10.5, caught_up=False) == [], "a reader that is behind waits for chunk_size or flush_interval"
    out = ch.poll(10.005, caught_up=True)
    assert [bytes(c.data) for c in out] == [b"one\n"] and ch.pending_bytes == 2
    assert ch.poll(10.006, caught_up=True) == [] and ch.next_deadline(caught_up=True) == pytest.approx(15.0)
    assert ch.feed(b"o\nthree\n", 10.1) == []  # a new byte restarts the quiet time
    assert ch.poll(10.104, caught_up=True) == []
    assert [bytes(c.data) for c in ch.poll(10.105, caught_up=True)] == [b"two\nthree\n"]


def test_quiet_and_caught_up_flush_off_by_default():
    ch = make(flush_interval=1.0, partial_timeout=5.0)
    ch.feed(b"one\n", 0.0)
    assert ch.poll(0.9, caught_up=True) == [] and ch.next_deadline(caught_up=True) == pytest.approx(1.0)


def test_caught_up_flush_bounds_the_wait_of_a_writer_that_never_pauses():
    """Bytes every second (time in whole seconds here) are never quiet for quiet_flush (2), but once caught up
    they leave caught_up_flush (4) after the first unsent byte; a reader that is behind waits for chunk_size or
    flush_interval."""
    ch = make(flush_interval=100.0, partial_timeout=500.0, quiet_flush=2.0, caught_up_flush=4.0, chunk_size=1 << 20)
    sent = []
    for i in range(12):  # first unsent byte at 0: due at 4 (lines 0-4); then at 5: due at 9 (lines 5-9)
        ch.feed(b"line %d\n" % i, float(i))
        assert ch.poll(float(i), caught_up=False) == [], "behind: nothing before flush_interval"
        sent += ch.poll(float(i), caught_up=True)
    assert [bytes(c.data) for c in sent] == [b"".join(b"line %d\n" % i for i in range(0, 5)),
                                            b"".join(b"line %d\n" % i for i in range(5, 10))]
    assert ch.next_deadline(caught_up=True) == 11.0 + 2.0  # quiet_flush after line 11, before 10 + 4
    assert ch.next_deadline(caught_up=False) == 110.0
    ch.feed(b"partial", 12.5)  # the quiet time restarts; the first unsent byte is still line 10's
    assert ch.next_deadline(caught_up=True) == 14.0
    assert [bytes(c.data) for c in ch.poll(14.0, caught_up=True)] == [b"line 10\nline 11\n"]
    assert ch.poll(100.0, caught_up=True) == [] and ch.next_deadline(caught_up=True) == 512.5  # partial_timeout


def test_pump_sends_a_slow_pipe_within_caught_up_flush():
    """A pipe written a line every 10 ms (never quiet long) is sent while it is written, not after flush_interval."""
    import os
    import threading
    import time

    from logflume.chunking import pump

    r, w = os.pipe()
    got: list[tuple[float, int]] = []
    ch = make(flush_interval=60.0, partial_timeout=60.0, caught_up_flush=0.02, chunk_size=1 << 20)

    def writer() -> None:
        for i in range(60):
            os.write(w, b"line %d\n" % i)
            time.sleep(0.01)
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    pump(r, ch, lambda chunks: got.extend((time.monotonic(), len(c)) for c in chunks), lambda: False)
    t.join()
    os.close(r)
    assert sum(n for _, n in got) == len(b"".join(b"line %d\n" % i for i in range(60)))
    assert len(got) >= 4, f"{len(got)} chunk(s): the pipe was only sent at its end"


def test_partial_timeout_sends_partial_flagged():
    ch = make(flush_interval=1.0, partial_timeout=2.0)
    ch.feed(b"no newline", 0.0)
    assert ch.poll(1.9) == []
    out = ch.poll(2.0)
    assert [bytes(c.data) for c in out] == [b"no newline"] and out[0].flags == [FLAG_PARTIAL]
    assert ch.next_deadline() is None


def test_finish_flags_partial_only_without_delimiter():
    assert make().feed(b"a\n", 0) == []
    ch = make()
    ch.feed(b"a\nb", 0)
    out = ch.finish()
    assert out[0].flags == [FLAG_PARTIAL]
    ch = make()
    ch.feed(b"a\n", 0)
    assert ch.finish()[0].flags == []


def test_oversized_record_split_into_flagged_pieces():
    ch = make(chunk_size=10)
    line = b"x" * 25 + b"\n"
    out = ch.feed(line + b"ok\n", 0) + ch.finish()
    assert [len(c.data) for c in out] == [10, 10, 9]
    assert out[0].flags == [FLAG_SPLIT] and out[1].flags == [FLAG_SPLIT] and out[2].flags == []
    check_stream(out, line + b"ok\n")


def test_custom_delimiter_fills_record_ends():
    ch = make(record_delimiter=b"\r\n", chunk_size=100)
    ch.feed(b"a\r", 0)
    ch.feed(b"\nbb\r\nc", 1)
    out = ch.finish()
    assert bytes(out[0].data) == b"a\r\nbb\r\nc"
    assert out[0].record_ends == [3, 7, 8] and out[0].flags == [FLAG_PARTIAL]


def test_nul_delimiter_and_binary_bytes_unchanged():
    data = bytes(range(256)) * 3
    ch = make(record_delimiter=b"\x00", chunk_size=300)
    out = run(ch, [data[i:i + 77] for i in range(0, len(data), 77)])
    check_stream(out, data)
    for c in out[:-1]:
        assert bytes(c.data).endswith(b"\x00") or FLAG_SPLIT in c.flags


JAVA = (
    b"2024-01-01 10:00:00 ERROR boom\n"
    b"java.lang.IllegalStateException: x\n"
    b"\tat a.b.C.d(C.java:10)\n"
    b"\tat a.b.C.e(C.java:20)\n"
    b"Caused by: java.io.IOException\n"
    b"\t... 3 more\n"
    b"2024-01-01 10:00:01 INFO fine\n"
    b"2024-01-01 10:00:02 INFO also fine\n"
)


def test_multiline_java_stack_trace_is_one_record():
    ml = MultilinePattern(r"^\d{4}-\d{2}-\d{2} ", negate=True, match="after")
    ch = make(multiline=ml, chunk_size=1 << 20)
    out = []
    for i in range(0, len(JAVA), 7):  # arbitrary read boundaries
        out += ch.feed(JAVA[i:i + 7], 0)
    out += ch.poll(1.0)  # flush_interval: complete records only; the last one is still open
    assert len(out) == 1
    recs = [bytes(r) for r in out[0].records()]
    assert len(recs) == 2
    assert recs[0].startswith(b"2024-01-01 10:00:00 ERROR") and recs[0].endswith(b"\t... 3 more\n")
    assert recs[1] == b"2024-01-01 10:00:01 INFO fine\n"
    last = ch.poll(100.0)  # partial_timeout closes the open record
    assert [bytes(r) for r in last[0].records()] == [b"2024-01-01 10:00:02 INFO also fine\n"]
    assert last[0].flags == []


def test_multiline_record_starting_on_the_last_unterminated_line_is_its_own_record():
    """finish() classifies the last line even without its delimiter: it may start a record (was: one record)."""
    ml = MultilinePattern("^2026", negate=True, match="after")
    assert make(multiline=ml, chunk_size=1000).feed(b"2026 a\n  cont\n2026 b", 0) == []  # nothing due yet
    ch = make(multiline=ml, chunk_size=1000)
    out = ch.feed(b"2026 a\n  cont\n2026 b", 0) + ch.finish()
    assert [bytes(r) for r in out[0].records()] == [b"2026 a\n  cont\n", b"2026 b"]
    assert out[0].flags == [FLAG_PARTIAL]
    ch = make(multiline=ml, chunk_size=1000, partial_timeout=3)  # the same through partial_timeout
    out = ch.feed(b"2026 a\n  cont\n2026 b", 0) + ch.poll(10.0)
    assert [bytes(r) for r in out[0].records()] == [b"2026 a\n  cont\n", b"2026 b"]
    # A trailing line that continues the record stays in it.
    ch = make(multiline=ml, chunk_size=1000)
    out = ch.feed(b"2026 a\n  cont\n  more", 0) + ch.finish()
    assert [bytes(r) for r in out[0].records()] == [b"2026 a\n  cont\n  more"]


def test_multiline_before_joins_backslash_continuations():
    ml = MultilinePattern(r"\\$", negate=False, match="before")
    ch = make(multiline=ml, chunk_size=1000)
    data = b"a \\\nb \\\nc\nd\n"
    out = ch.feed(data, 0) + ch.finish()
    assert [bytes(r) for r in out[0].records()] == [b"a \\\nb \\\nc\n", b"d\n"]


def test_multiline_bad_settings():
    with pytest.raises(ValueError, match="invalid regular expression"):
        MultilinePattern("(", False, "after")
    with pytest.raises(ValueError, match="after' or 'before"):
        MultilinePattern("x", False, "around")  # type: ignore[arg-type]


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk_size"):
        make(chunk_size=0)
    with pytest.raises(ValueError, match="record_delimiter"):
        make(record_delimiter=b"")


def test_memoryview_input_and_reused_buffer():
    buf = bytearray(b"abc\ndef\n")
    ch = make(chunk_size=100)
    ch.feed(memoryview(buf)[:4], 0)
    buf[:] = b"XXXXXXXX"  # the caller reuses its buffer: fed bytes must not change
    assert bytes(ch.finish()[0].data) == b"abc\n"


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=600).map(lambda b: b.replace(b"\x01", b"\n")),
    cuts=st.lists(st.integers(0, 600), max_size=12),
    size=st.integers(1, 80),
    delim=st.sampled_from([b"\n", b"\r\n", b"\x00", b"END"]),
    use_ml=st.booleans(),
    poll_every=st.booleans(),
)
def test_property_every_byte_once_and_cut_at_records(data, cuts, size, delim, use_ml, poll_every):
    ml = MultilinePattern(r"^\s", negate=False, match="after") if use_ml else None
    ch = make(chunk_size=size, record_delimiter=delim, multiline=ml, flush_interval=0.5, partial_timeout=3)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    out = []
    for i, p in enumerate(pieces):
        out += ch.feed(p, float(i))
        if poll_every:
            out += ch.poll(float(i) + 0.7)
    out += ch.finish()
    check_stream(out, data)
    for c in out:
        assert len(c.data) <= size
        body = bytes(c.data)
        if FLAG_SPLIT not in c.flags and FLAG_PARTIAL not in c.flags and c is not out[-1]:
            assert body.endswith(delim)
        if c.record_ends is not None:
            assert c.record_ends == sorted(c.record_ends) and all(0 < e <= len(body) for e in c.record_ends)
            if FLAG_SPLIT not in c.flags:
                assert c.record_ends[-1] == len(body)
            assert ml is not None or delim != b"\n"



def test_complete_records_wait_for_flush_interval_then_leave():
    ch = make(chunk_size=8 << 20, flush_interval=1.0)
    assert ch.feed(b"one line\n", 0.0) == []
    assert ch.poll(0.5) == [] and ch.next_deadline() == pytest.approx(1.0)
    assert [bytes(c.data) for c in ch.poll(1.0)] == [b"one line\n"]


# -- EventStreams and StreamLedger ---------------------------------------------------------


def streams(tmp_path, delivered, chunk_size=100, **kw) -> EventStreams:
    return EventStreams(source="h", datatype="T", tags={"env": "t"}, chunk_size=chunk_size, flush_interval=1.0,
                        deliver=delivered.extend, ledger=StreamLedger(tmp_path / "l.json"), **kw)


def test_caught_up_flush_cuts_early_unless_a_reader_was_behind(tmp_path):
    out: list = []
    es = streams(tmp_path, out, chunk_size=1 << 20, caught_up_flush=0.02)  # flush_interval 1 s
    es.add("s", b"a", terminator=b"\n")
    start = es._pending["s"].since
    es.poll(now=start + 0.019)
    assert out == [], "not before caught_up_flush"
    es.behind(now=start + 0.01)  # a reader took a full read: more was waiting
    es.poll(now=start + 0.025)
    assert out == [], "a reader that is behind waits for flush_interval (or chunk_size)"
    es.poll(now=start + 0.031)  # caught_up_flush since the reader was last behind
    assert [bytes(c.data) for c in out] == [b"a\n"]
    es.add("s", b"b", terminator=b"\n")
    t = es._pending["s"].since
    es.behind(now=t + 0.5)
    es.poll(now=t + 0.51)
    assert len(out) == 1
    es.poll(now=t + 1.0)  # flush_interval bounds it either way
    assert [bytes(c.data) for c in out] == [b"a\n", b"b\n"]


def test_caught_up_flush_off_by_default(tmp_path):
    out: list = []
    es = streams(tmp_path, out)
    es.add("s", b"a", terminator=b"\n")
    es.poll(now=es._pending["s"].since + 0.9)
    assert out == []


def test_cut_at_chunk_size_and_on_flush_interval(tmp_path):
    out: list = []
    es = streams(tmp_path, out)
    for i in range(10):
        es.add("s", b"record-%02d" % i, terminator=b"\n")  # 10 bytes each
    assert [len(c) for c in out] == [100]
    assert out[0].record_ends == list(range(10, 101, 10))
    es.add("s", b"x", (FLAG_TRUNCATED,), terminator=b"\n")
    es.poll(now=0.0)
    assert len(out) == 1  # not due yet
    es.poll(now=10**9)
    assert len(out) == 2 and out[1].flags == [FLAG_TRUNCATED] and bytes(out[1].data) == b"x\n"
    assert out[1].start == 100 and out[1].seq_id == 102
    assert out[0].tags == {"env": "t"} and out[0].source == "h" and out[0].datatype == "T"


def test_long_record_is_split_and_flagged(tmp_path):
    out: list = []
    es = streams(tmp_path, out)
    es.add("s", b"a" * 250)
    es.flush()
    assert [(len(c), c.flags, c.record_ends) for c in out] == [
        (100, [FLAG_SPLIT], []), (100, [FLAG_SPLIT], []), (50, [], [50])]
    assert [c.seq_id for c in out] == [100, 200, 250]


def test_deliver_now_includes_pending_records_in_order(tmp_path):
    out: list = []
    es = streams(tmp_path, out, chunk_size=1000)
    es.add("s", b"early\n")
    es.deliver_now([("s", [b"now1\n", b"now2\n"]), ("t", [b"other\n"])])
    assert [(c.stream, bytes(c.data)) for c in out] == [("s", b"early\nnow1\nnow2\n"), ("t", b"other\n")]
    assert es.pending_bytes == 0


def test_max_streams_sends_the_rest_to_overflow(tmp_path):
    es = streams(tmp_path, [], max_streams=2)
    assert [es.admit(f"s{i}", "s_other") for i in range(4)] == ["s0", "s1", "s_other", "s_other"]
    assert es.admit("s0", "s_other") == "s0"


def test_ledger_reserves_ahead_so_a_crash_never_reuses_numbers(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = StreamLedger(path, reserve=1000)
    epoch, end = ledger.allocate("s", 10)
    assert end == 10
    assert json.loads(path.read_text())["streams"]["s"] == {"epoch": epoch, "reserved": 1010}
    ledger.allocate("s", 500)  # within the reservation: no write needed
    # "Crash": a new ledger from the same file continues above the reservation, same epoch.
    again = StreamLedger(path, reserve=1000)
    epoch2, end2 = again.allocate("s", 5)
    assert epoch2 == epoch and end2 == 1015
    # A damaged file starts new epochs instead of failing.
    path.write_text("{not json")
    fresh = StreamLedger(path)
    assert fresh.allocate("s", 1)[1] == 1


def test_ledger_without_a_file_starts_a_new_epoch_each_time_and_numbers_from_threads():
    """In memory (endpoints: Scribe, Flume): epochs never repeat, seq_ids never overlap across threads."""
    import threading

    first, second = StreamLedger(None), StreamLedger(None)
    assert first.epoch("s") != second.epoch("s")
    ends: list[int] = []

    def number() -> None:
        for _ in range(500):
            ends.append(first.allocate("s", 3)[1])

    workers = [threading.Thread(target=number) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(ends) == list(range(3, 3 * 2000 + 1, 3))
    chunk = first.records_chunk(source="h", stream="s", datatype="T", tags={"a": "b"}, records=[b"x\n", b"yz"])
    assert (bytes(chunk.data), chunk.record_ends, chunk.seq_id, chunk.epoch) == (b"x\nyz", [2, 4], 6004,
                                                                                  first.epoch("s"))


def test_an_idle_flusher_sleeps_until_a_record_arrives(tmp_path):
    """With nothing pending the flusher does not wake every few ms (2 % of a core for an idle agent's two
    event sources before); a record that arrives is still cut within caught_up_flush."""
    out: list = []
    es = streams(tmp_path, out, chunk_size=1 << 20, caught_up_flush=0.02)  # flush_interval 1 s
    polls = []
    real_poll = es.poll
    es.poll = lambda now=None: (polls.append(time.monotonic()), real_poll(now))  # type: ignore[method-assign]
    stopping = threading.Event()
    flusher = threading.Thread(target=es.poll_until, args=(stopping,), daemon=True)
    flusher.start()
    try:
        time.sleep(0.5)
        assert len(polls) <= 2, f"{len(polls)} polls in 0.5 s with nothing pending"
        sent = time.monotonic()
        es.add("s", b"a", terminator=b"\n")
        deadline = sent + 5
        while not out and time.monotonic() < deadline:
            time.sleep(0.002)
        assert [bytes(c.data) for c in out] == [b"a\n"]
        assert time.monotonic() - sent < 0.9, "cut by caught_up_flush, not flush_interval"  # 1 s on a loaded machine
    finally:
        stopping.set()
        flusher.join(2)
    assert not flusher.is_alive(), "the idle flusher notices stopping"
