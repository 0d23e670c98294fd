"""archive: each byte exactly once, grouped by datatype and hour, idempotent, crash-safe."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.archive import ArchiveOptions, Archiver
from jobs.dedup import RangeSet
from logflume.chunk import Chunk
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
