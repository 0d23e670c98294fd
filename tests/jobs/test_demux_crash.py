"""demux exactly once: a real demux process killed mid-run leaves nothing a reader counts; reruns never double."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from jobs.manifest import Manifest
from jobs.sinkfiles import open_fs
from logflume.chunk import Chunk
from tests.jobs.conftest import ROOT, T0, cli_command, write_sink_file

FILES, LINES = 6, 300
SLOW = textwrap.dedent('''
    import time
    from typing import ClassVar
    from logflume.processor import ParseError, Processor

    class Slow(Processor):
        """A third party's per-record processor, slow enough that a kill lands mid-run."""
        settings: ClassVar = {}

        def process(self, record, where):
            time.sleep(0.0015)
            if record.startswith(b"bad"):
                raise ParseError("bad line")
            return {"n": int(record.split()[1]), "text": record.decode()}
''')


def make_input(root: Path) -> int:
    """FILES sink files, one stream each, hours apart; returns the number of records."""
    for f in range(FILES):
        body = b"".join((b"bad %d\n" if i % 50 == 7 else b"line %d of file\n") % i for i in range(LINES))
        chunks, pos = [], 0
        while pos < len(body):
            end = body.index(b"\n", min(len(body) - 1, pos + 700)) + 1
            chunks.append(Chunk("h", f"/var/log/f{f}.log", "Raw", end, "1", body[pos:end],
                                timestamp=T0 + f * 3_600_000 + pos))
            pos = end
        write_sink_file(root / "d" / f"c-{f}-{f}.seq", chunks)
    return FILES * LINES


def demux(sink: Path, out: Path, plug: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{plug}{os.pathsep}{ROOT}"}
    return subprocess.Popen(cli_command("demux", "--input", str(sink), "--output", str(out), "--processor",
                                        "Raw=slowproc:Slow", "--batch-size", "1KiB", "--workers", "2",
                                        "--split-size", "4KiB", "--json", *extra),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def visible(out: Path) -> list[tuple[str, int]]:
    """What a reader counts: (stream, offset) of every row pyarrow finds (hive partitions, hidden files skipped)."""
    if not any(out.rglob("*.parquet")):
        return []
    table = ds.dataset(str(out), format="parquet", partitioning="hive").to_table(columns=["_stream", "_offset"])
    return list(zip(table.column("_stream").to_pylist(), table.column("_offset").to_pylist(), strict=True))


def duckdb_count(out: Path) -> int:
    duckdb = pytest.importorskip("duckdb")
    return duckdb.sql(f"select count(*) from read_parquet('{out}/datatype=*/date=*/hour=*/*.parquet', "
                      f"hive_partitioning=true)").fetchall()[0][0]


def committed_records(out: Path) -> int:
    fs, root = open_fs(str(out))
    return Manifest(fs, root).load().totals.get("records", 0)


def _read(path: Path, key: str) -> int:
    try:
        return int(json.loads(path.read_text())[key])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture
def plug(tmp_path: Path) -> Path:
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "slowproc.py").write_text(SLOW)
    return tmp_path / "plug"


def test_killed_mid_run_then_rerun_counts_each_record_once(tmp_path: Path, plug: Path) -> None:
    sink, out, clean = tmp_path / "sink", tmp_path / "out", tmp_path / "clean"
    total = make_input(sink)
    errors = FILES * sum(1 for i in range(LINES) if i % 50 == 7)
    manifest = out / "_manifest"
    for kill in (1, 3):  # kill once after the first commit, once after the third
        p = demux(sink, out, plug)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            batches, pending = _read(manifest / "manifest.json", "batches"), _read(manifest / "pending.json", "batch")
            if batches >= kill and pending > batches:  # a batch in flight, uncommitted
                break
            time.sleep(0.005)
        assert p.poll() is None, f"demux ended before the kill: {p.communicate()}"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        p.stdout.close()
        p.stderr.close()
        rows = visible(out)
        committed = committed_records(out)
        assert 0 < committed < total - errors
        assert len(rows) == committed == duckdb_count(out)  # the batch in flight is invisible
        assert len(set(rows)) == len(rows)
    p = demux(sink, out, plug)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["recovered_batches"] == 1 and summary["skipped_files"] > 0
    rows = visible(out)
    assert len(rows) == len(set(rows)) == total - errors == committed_records(out) == duckdb_count(out)
    errs = ds.dataset(str(out / "_errors"), format="parquet", partitioning="hive").to_table()
    assert errs.num_rows == errors and set(errs.column("reason").to_pylist()) == {"bad line"}
    assert not [p for p in out.rglob("*") if p.name.endswith((".staged", ".tmp"))]
    # the same rows as one uninterrupted run, and a rerun adds nothing
    p = demux(sink, clean, plug)
    assert p.communicate(timeout=300)[0] and p.returncode == 0
    assert sorted(visible(clean)) == sorted(rows)
    p = demux(sink, out, plug)
    stdout, _ = p.communicate(timeout=300)
    assert json.loads(stdout)["records"] == 0 and sorted(visible(out)) == sorted(rows)


def test_a_batch_killed_after_its_commit_is_published_by_the_next_run(tmp_path: Path, plug: Path) -> None:
    """The window between the commit and the renames: the next run finishes the renames, redoes nothing."""
    sink, out = tmp_path / "sink", tmp_path / "out"
    total = make_input(sink)
    p = demux(sink, out, plug)
    assert p.communicate(timeout=300)[1] == "" or p.returncode == 0
    rows = sorted(visible(out))
    fs, root = open_fs(str(out))
    m = Manifest(fs, root)
    last = m.load().batches
    from jobs.manifest import Pending

    m.begin(Pending(last, {}))  # as if killed right after committing batch `last`, before its renames
    published = [x for x in out.rglob(f"part-{last:06d}-*")]
    assert published
    for x in published:
        x.rename(x.with_name(f".{x.name}.staged"))
    assert len(visible(out)) < len(rows)
    p = demux(sink, out, plug)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    assert json.loads(stdout)["records"] == 0 and sorted(visible(out)) == rows
    assert len(rows) < total and not (out / "_manifest" / "pending.json").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
