"""archive: each byte exactly once, grouped by datatype and hour, idempotent, crash-safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.archive import ArchiveOptions, Archiver
from jobs.dedup import RangeSet
from logflume.chunk import Chunk
from logflume.sequencefile import BYTES_WRITABLE, TEXT, SequenceFileReader, SequenceFileWriter
from tests.jobs.conftest import HOUR_MS, T0, SinkSet, make_sink_set, read_seq_chunks, run_cli, write_sink_file


def archive_files(root: Path) -> dict[str, bytes]:
    """Every finished file of an archive (and its manifest), by relative path: what 'identical' means."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith((".",)) for part in p.relative_to(root).parts)}


def check_exactly_once(sinks: SinkSet, out: Path) -> int:
    """Every byte of every stream appears exactly once in the archive, in the right hour and datatype."""
    got: dict[tuple[str, str, str], list[Chunk]] = {}
    for p in sorted(out.rglob("archive-*.seq")):
        rel = p.relative_to(out).parts
        chunks = read_seq_chunks(p)
        keys = [(c.source, c.stream, c.epoch, c.seq_id) for c in chunks]
        assert keys == sorted(keys), f"{p} is not sorted"
        for c in chunks:
            assert rel[0] == c.datatype
            hour = (c.timestamp - T0 + 16 * HOUR_MS) // HOUR_MS  # T0 is 16:00 UTC on 2025-11-24
            assert rel[1] == "2025-11-24" and int(rel[2]) == hour, (rel, c.timestamp)
            got.setdefault(c.key, []).append(c)
    total = 0
    for key, body in sinks.streams.items():
        chunks = sorted(got.pop(key), key=lambda c: c.seq_id)
        ranges = RangeSet()
        for c in chunks:
            assert ranges.missing(c.start, c.seq_id) == [(c.start, c.seq_id)], f"bytes {c.start}-{c.seq_id} twice"
            ranges.add(c.start, c.seq_id)
            assert bytes(c.data) == bytes(body[c.start:c.seq_id])
            assert all(bytes(r).endswith(b"\n") for r in c.records())
        assert list(ranges) == [(0, len(body))], f"{key}: bytes missing"
        total += len(body)
    assert not got
    return total


def test_archive_keeps_each_byte_exactly_once(sink_set: SinkSet, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    summary = Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    total = check_exactly_once(sink_set, out)
    assert summary.bytes_out == total
    assert summary.chunks_in == sink_set.chunks_written
    assert summary.duplicates_dropped > 0 and summary.overlaps_trimmed > 0
    assert summary.batches > 1 and summary.input_files == 12
    manifest = json.loads((out / "_manifest" / "manifest.json").read_text())
    assert len(manifest["done"]) == 12 and not (out / "_manifest" / "pending.json").exists()
    # a second run finds nothing to do and changes nothing
    before = archive_files(out)
    again = Archiver(ArchiveOptions(str(sink_set.root), str(out))).run()
    assert again.batches == 0 and archive_files(out) == before


def test_late_chunks_go_to_a_new_file_in_an_archived_hour(sink_set: SinkSet, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    Archiver(ArchiveOptions(str(sink_set.root), str(out))).run()
    key = next(iter(sink_set.streams))
    body = sink_set.streams[key]
    dt = sink_set.datatypes[key]
    # late: a retry of the stream's first bytes (duplicate) plus new bytes appended to the stream
    extra = b"late line 1\nlate line 2\n"
    late = [
        Chunk(key[0], key[1], dt, 100, key[2], bytes(body[:100]), timestamp=T0 + 10),
        Chunk(key[0], key[1], dt, len(body) + len(extra), key[2], bytes(body[-50:]) + extra, timestamp=T0 + 20),
    ]
    write_sink_file(sink_set.root / "2025-11-25" / "collector0-1764100000-0.seq", late)
    s = Archiver(ArchiveOptions(str(sink_set.root), str(out))).run()
    assert (s.batches, s.input_files, s.chunks_in, s.duplicates_dropped, s.overlaps_trimmed) == (1, 1, 2, 1, 1)
    (new,) = map(Path, s.outputs)
    assert new.parent == out / dt / "2025-11-24" / "16"
    (c,) = read_seq_chunks(new)
    assert bytes(c.data) == extra and c.seq_id == len(body) + len(extra)
    body += extra
    check_exactly_once(sink_set, out)


def test_dry_run_writes_nothing_and_reports(sink_set: SinkSet, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    r = run_cli("archive", "--input", str(sink_set.root), "--output", str(out), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["dry_run"] and summary["chunks_in"] == sink_set.chunks_written
    assert summary["duplicates_dropped"] > 0 and summary["output_files"] > 0
    assert not out.exists() or not any(out.rglob("*"))
    r = run_cli("archive", "--input", str(sink_set.root), "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "dropped" in r.stdout and "trimmed" in r.stdout
    assert check_exactly_once(sink_set, out) == summary["bytes_out"]


def test_compressed_archive_round_trips(tmp_path: Path) -> None:
    sinks = make_sink_set(tmp_path / "sink", seed=5, n_streams=3, lines=200)
    out = tmp_path / "archive"
    r = run_cli("archive", "--input", str(sinks.root), "--output", str(out), "--compression", "block",
                "--codec", "deflate")
    assert r.returncode == 0, r.stderr
    check_exactly_once(sinks, out)


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "sink"
    root.mkdir()
    (root / "broken.seq").write_bytes(b"SEQ\x06garbage")
    r = run_cli("archive", "--input", str(root), "--output", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "broken.seq" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("archive", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = run_cli("archive", "--input", str(root), "--output", str(root / "archive"))
    assert r.returncode == 1 and "inside input" in r.stderr
    r = run_cli("archive", "--input", str(root), "--output", str(tmp_path / "out"), "--batch-size", "lots")
    assert r.returncode == 2 and "expected a size" in r.stderr


class _Crash(Exception):
    pass


def test_crash_between_outputs_and_commit_is_redone_identically(sink_set: SinkSet, tmp_path: Path,
                                                                monkeypatch) -> None:
    """The worst moment: every output of a batch renamed into place, manifest not yet written."""
    ref = tmp_path / "ref"
    Archiver(ArchiveOptions(str(sink_set.root), str(ref), batch_size=40_000)).run()
    out = tmp_path / "archive"
    from jobs.manifest import Manifest

    real_commit = Manifest.commit
    calls = {"n": 0}

    def crash_on_third(self, committed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Crash
        real_commit(self, committed)

    monkeypatch.setattr(Manifest, "commit", crash_on_third)
    try:
        Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    except _Crash:
        pass
    monkeypatch.setattr(Manifest, "commit", real_commit)
    assert (out / "_manifest" / "pending.json").exists()
    s = Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    assert s.recovered_batches == 1
    assert archive_files(out) == archive_files(ref)


def _raw_records(path: Path) -> list[tuple[dict, bytes]]:
    """(key JSON, value bytes) of every record of a sink-format file."""
    with open(path, "rb") as f:
        return [(json.loads(bytes(k)), bytes(v)) for k, v in SequenceFileReader(f).iter_raw()]


def test_conflicting_chunk_is_kept_and_reported(tmp_path: Path) -> None:
    """Issue 14 H2 / two hosts with one agent name: a chunk claiming a kept range with other bytes."""
    body = b"".join(b"real line %03d\n" % i for i in range(40))
    key = ("web-01", "/var/log/app.log", "ino-1")

    def piece(a: int, b: int, data: bytes | None = None, sender: str = "web-01/tail", ts: int = T0) -> Chunk:
        return Chunk(key[0], key[1], "Raw", b, key[2], data if data is not None else body[a:b], timestamp=ts,
                     sender=sender)

    sink = tmp_path / "sink"
    write_sink_file(sink / "a" / "c0-1-0.seq", [piece(0, 150), piece(150, 300)])
    forged = piece(0, 320, b"X" * 320, sender="clone/tail", ts=T0 + 5)
    # a later batch: the forged chunk, an exact retry (dropped silently) and the stream's real continuation
    write_sink_file(sink / "b" / "c1-1-0.seq", [forged, piece(150, 300), piece(300, len(body))])
    out = tmp_path / "archive"
    r = run_cli("archive", "--input", str(sink), "--output", str(out), "--batch-size", "1", "--json")
    assert r.returncode == 3, r.stderr
    s = json.loads(r.stdout)
    assert (s["conflicts"], s["duplicates_dropped"], s["batches"]) == (1, 1, 2)
    assert "conflict" in r.stderr and "_conflicts" in r.stderr
    # the archive holds the real bytes, each once
    kept = sorted((c for p in out.rglob("archive-*.seq") for c in read_seq_chunks(p)), key=lambda c: c.seq_id)
    assert b"".join(bytes(c.data) for c in kept) == body
    # the collector's sender survives archive; batch 1's adjacent pieces are one record
    assert [(c.start, c.seq_id, c.sender) for c in kept] == [(0, 300, "web-01/tail"), (300, len(body), "web-01/tail")]
    # the other side is kept whole, with both sides' metadata and senders
    (conflicts,) = (out / "_conflicts").glob("conflicts-*.seq")
    assert conflicts.name == "conflicts-000002.seq"
    ((meta, data),) = _raw_records(conflicts)
    assert data == b"X" * 320
    assert (meta["sender"], meta["seq_id"], meta["timestamp"]) == ("clone/tail", 320, T0 + 5)
    info = meta["conflict"]
    assert info["range"] == [0, 300] and info["input"].endswith("b/c1-1-0.seq")  # the merged record, re-read
    assert info["kept"]["sender"] == "web-01/tail" and info["kept"]["seq_id"] == 300
    assert info["kept_in"] == "Raw/2025-11-24/16/archive-000001.seq"
    # the set-aside record reads back as the chunk it was
    (again,) = read_seq_chunks(conflicts)
    assert (again.key, again.seq_id, bytes(again.data)) == (key, 320, b"X" * 320)
    # committed: a rerun has nothing to do and reports no conflict
    r = run_cli("archive", "--input", str(sink), "--output", str(out), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["batches"] == 0


def test_conflict_in_one_batch_loses_no_byte(tmp_path: Path) -> None:
    """Both sides in one batch: one stays in the archive, the other in _conflicts; every real byte is kept."""
    body = b"".join(b"line %03d\n" % i for i in range(30))
    real = [Chunk("h", "s", "Raw", b, "e", body[a:b], timestamp=T0) for a, b in ((0, 90), (90, len(body)))]
    forged = Chunk("h", "s", "Raw", 200, "e", b"Y" * 200, timestamp=T0, sender="clone")
    sink = tmp_path / "sink"
    write_sink_file(sink / "c-1-0.seq", [*real, forged])
    s = Archiver(ArchiveOptions(str(sink), str(tmp_path / "out"))).run()
    assert s.conflicts >= 1
    archived = [c for p in s.outputs for c in read_seq_chunks(Path(p))]
    set_aside = [c for p in s.set_aside for c in read_seq_chunks(Path(p))]
    got = RangeSet()
    for c in archived:
        assert ((c.start, c.seq_id), bytes(c.data)) in {((0, 200), b"Y" * 200), ((200, 270), body[200:])}
    for c in archived + set_aside:
        if c.sender == "":
            got.add(c.start, c.seq_id)
            assert bytes(c.data) == body[c.start:c.seq_id]
    assert list(got) == [(0, len(body))]


def _poison_file(path: Path, good: list[Chunk]) -> int:
    """A sink file with good chunks between records no job can use; returns how many are bad."""
    good_meta = json.loads(good[0].metadata_json())
    bad_keys = [
        {**good_meta, "timestamp": 2**62},  # year out of range
        {**good_meta, "datatype": "D" * 300},  # ENAMETOOLONG as a directory
        {**good_meta, "stream": "\ud800"},  # not writable as UTF-8
        {**good_meta, "seq_id": 1e400},  # inf
        {k: v for k, v in good_meta.items() if k != "seq_id"},
        "[" * 100_000,  # deeper than the JSON parser recurses
        "not json",
        {**good_meta, "length": 99},  # does not match the bytes
        {**good_meta, "seq_id": 2**70},  # overflows Parquet's int64 _offset and Hadoop's long
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        w = SequenceFileWriter(f, key_class=TEXT, value_class=BYTES_WRITABLE)
        w.append_chunk(good[0])
        for k in bad_keys:
            w.append(k if isinstance(k, str) else json.dumps(k), bytes(good[0].data))
        for c in good[1:]:
            w.append_chunk(c)
        w.close()
    return len(bad_keys)


def test_poison_chunks_go_to_errors_and_archive_exits_0(tmp_path: Path) -> None:
    body = b"".join(b"line %03d\n" % i for i in range(20))
    good = [Chunk("h", "s", "Raw", b, "e", body[a:b], timestamp=T0) for a, b in ((0, 45), (45, len(body)))]
    sink = tmp_path / "sink"
    n_bad = _poison_file(sink / "c-1-0.seq", good)
    out = tmp_path / "archive"
    # as the old archive left it after crashing on this batch: pending.json and a partial output
    (out / "_manifest").mkdir(parents=True)
    (out / "_manifest" / "pending.json").write_text(json.dumps(
        {"format": 1, "batch": 1, "inputs": {f"file://{sink}/c-1-0.seq": 1}}))
    (out / "Raw" / "2025-11-24" / "16").mkdir(parents=True)
    (out / "Raw" / "2025-11-24" / "16" / "archive-000001.seq").write_bytes(b"half a file")
    r = run_cli("archive", "--input", str(sink), "--output", str(out), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["bad_chunks"], s["chunks_out"], s["recovered_batches"], s["conflicts"]) == (n_bad, 2, 1, 0)
    assert not (out / "_manifest" / "pending.json").exists()
    (arch,) = out.rglob("archive-*.seq")
    assert b"".join(bytes(c.data) for c in read_seq_chunks(arch)) == body
    errors = _raw_records(out / "_errors" / "errors-000001.seq")
    assert len(errors) == n_bad
    assert all(data == bytes(good[0].data) and meta["error"] and meta["input"].endswith("c-1-0.seq@" + meta[
        "input"].rsplit("@", 1)[1]) for meta, data in errors)
    reasons = [meta["error"] for meta, _ in errors]
    assert "2100" in reasons[0] and "datatype" in reasons[1] and "Unicode" in reasons[2]
    assert errors[0][0]["timestamp"] == 2**62 and errors[6][0]["raw_key"] == "not json"
    # the text summary says so too
    r = run_cli("archive", "--input", str(sink), "--output", str(tmp_path / "again"))
    assert r.returncode == 0 and f"set aside {n_bad} bad chunk(s) to _errors, 0 conflict(s)" in r.stdout, r.stdout


def test_failure_mid_batch_is_rolled_back_by_the_next_run(sink_set: SinkSet, tmp_path: Path, monkeypatch) -> None:
    """Any exception after some outputs of a batch are in place: the next run completes, each byte once."""
    ref = tmp_path / "ref"
    Archiver(ArchiveOptions(str(sink_set.root), str(ref), batch_size=40_000)).run()
    out = tmp_path / "archive"
    real_write = Archiver.write_group
    calls = {"n": 0}

    def fail_mid_batch(self, batch, key, chunks):
        if batch == 2:
            calls["n"] += 1
            if calls["n"] == 2:
                raise _Crash
        return real_write(self, batch, key, chunks)

    monkeypatch.setattr(Archiver, "write_group", fail_mid_batch)
    with pytest.raises(_Crash):
        Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    monkeypatch.setattr(Archiver, "write_group", real_write)
    assert list(out.rglob("archive-000002.seq")) and (out / "_manifest" / "pending.json").exists()
    s = Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    assert s.recovered_batches == 1
    check_exactly_once(sink_set, out)
    assert archive_files(out) == archive_files(ref)


def test_a_file_left_half_written_is_hidden_then_removed_by_the_next_run(sink_set: SinkSet, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """Killed while an archive file is written: it is left under the sink's in-progress name, which readers skip
    and the next run's rollback removes (the writer and the rollback agree on that name)."""
    import jobs.archive

    out = tmp_path / "archive"
    real_sync = jobs.archive.sync_file

    def fail_on_batch_2(f):
        if ".archive-000002.seq" in f.name:
            raise _Crash
        return real_sync(f)

    monkeypatch.setattr(jobs.archive, "sync_file", fail_on_batch_2)
    with pytest.raises(_Crash):
        Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    monkeypatch.setattr(jobs.archive, "sync_file", real_sync)
    (left,) = out.rglob(".archive-000002.seq*")
    assert left.name == ".archive-000002.seq.inprogress"
    archiver = Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000))
    archiver.rollback(2)  # what the next run does first; its redo would overwrite a file of the same name anyway
    assert not list(out.rglob(".archive-*")), "the rollback removes the half-written file"
    assert archiver.run().recovered_batches == 1
    check_exactly_once(sink_set, out)


def test_batch_stopped_by_a_damaged_file_does_not_stall_once_it_is_moved_aside(sink_set: SinkSet,
                                                                                tmp_path: Path) -> None:
    """The documented fix for a damaged sink file (move it aside, re-run) works mid-batch too."""
    damaged = sink_set.root / "2025-11-24" / "collector0-zz.seq"
    damaged.write_bytes(next(sink_set.root.rglob("collector1-*.seq")).read_bytes()[:-9])
    out = tmp_path / "archive"
    r = run_cli("archive", "--input", str(sink_set.root), "--output", str(out))
    assert r.returncode == 1 and "collector0-zz.seq" in r.stderr
    assert (out / "_manifest" / "pending.json").exists()
    damaged.rename(tmp_path / "aside.seq")
    r = run_cli("archive", "--input", str(sink_set.root), "--output", str(out))
    assert r.returncode == 0, r.stderr
    check_exactly_once(sink_set, out)


def test_rolled_back_batch_leaves_no_output_when_the_next_run_plans_differently(sink_set: SinkSet, tmp_path: Path,
                                                                               monkeypatch) -> None:
    """New sink files arrive between the failed run and the next: the failed batch's outputs must not linger."""
    out = tmp_path / "archive"
    real_write = Archiver.write_group

    def fail_mid_batch_2(self, batch, key, chunks):
        if batch == 2 and list(out.rglob("archive-000002.seq")):
            raise _Crash
        return real_write(self, batch, key, chunks)

    monkeypatch.setattr(Archiver, "write_group", fail_mid_batch_2)
    with pytest.raises(_Crash):
        Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    monkeypatch.setattr(Archiver, "write_group", real_write)
    assert list(out.rglob("archive-000002.seq"))
    # a collector's late file of retries, sorted first: the next batch 2 is only this file, all duplicates
    done = json.loads((out / "_manifest" / "manifest.json").read_text())["done"]
    retries = [c for url in sorted(done) for c in read_seq_chunks(Path(url.removeprefix("file://")))]
    write_sink_file(sink_set.root / "2025-11-24" / "aaa-late.seq", retries * 4)
    s = Archiver(ArchiveOptions(str(sink_set.root), str(out), batch_size=40_000)).run()
    assert s.recovered_batches == 1 and s.conflicts == 0
    check_exactly_once(sink_set, out)
