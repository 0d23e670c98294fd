"""EventStreams and StreamLedger: chunk cutting, splitting, ordering and numbering across restarts."""

from __future__ import annotations

import json

from agent.sources.record_batcher import EventStreams, StreamLedger
from logflume.chunk import FLAG_SPLIT, FLAG_TRUNCATED


def streams(tmp_path, delivered, chunk_size=100, **kw) -> EventStreams:
    return EventStreams(source="h", datatype="T", tags={"env": "t"}, chunk_size=chunk_size, flush_interval=1.0,
                        deliver=delivered.extend, ledger=StreamLedger(tmp_path / "l.json"), **kw)


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
