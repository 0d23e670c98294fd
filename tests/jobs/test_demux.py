"""demux: records per datatype with the counts each sample implies, errors kept, plugins, formats."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml

from jobs.demux import load_spec, run
from logflume.chunk import FLAG_SPLIT, Chunk
from logflume.sequencefile import SequenceFileReader
from tests.jobs.conftest import (
    SAMPLE_CONFIG,
    T0,
    make_sample_sinks,
    make_sink_set,
    read_seq_chunks,
    run_cli,
    write_sink_file,
)


def part_records(path: Path) -> list[dict]:
    """One part file's records, read the way a user reads them (JSON lines, pyarrow, a SequenceFile reader)."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open("rb") as f:
        return [json.loads(v) for _, v in SequenceFileReader(f)]


def read_output(root: Path) -> dict[tuple[str, ...], list[dict]]:
    """Records by (datatype, day) or ("_errors", datatype, day), over every published part file and hour."""
    out: dict[tuple[str, ...], list[dict]] = {}
    for p in sorted(root.rglob("part-*")):
        parts = p.parent.relative_to(root).parts
        assert [x.split("=")[0] for x in parts[-3:]] == ["datatype", "date", "hour"], p
        key = (*parts[:-3], parts[-3].split("=", 1)[1], parts[-2].split("=", 1)[1])
        out.setdefault(key, []).extend(part_records(p))
    return out


def canonical(parts: dict[tuple[str, ...], list[dict]]) -> list[str]:
    return sorted(json.dumps([list(k), r], sort_keys=True, default=str) for k, rs in parts.items() for r in rs)


@pytest.fixture
def samples(tmp_path: Path) -> tuple[Path, Path, dict]:
    sink = tmp_path / "sink"
    expected = make_sample_sinks(sink)
    config = tmp_path / "demux.yaml"
    config.write_text(yaml.safe_dump(SAMPLE_CONFIG))
    return sink, config, expected


def test_demux_each_builtin_datatype_with_counts(samples, tmp_path: Path) -> None:
    sink, config, expected = samples
    out = tmp_path / "out"
    r = run_cli("demux", "--input", str(sink), "--output", str(out), "--config", str(config), "--json",
                "--workers", "2", "--split-size", "1KiB")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    parts = read_output(out)
    for name, exp in expected.items():
        dt = exp["datatype"]
        good = parts.get((dt, "2025-11-24"), [])
        bad = parts.get(("_errors", dt, "2025-11-24"), [])
        assert (len(good), len(bad)) == (exp["records"], exp["errors"]), name
        lines = (Path(__file__).parents[1] / "data" / "jobs" / name).read_bytes().split(b"\n")[:-1]
        # provenance: the offset points at the record's own bytes in its stream
        data = (Path(__file__).parents[1] / "data" / "jobs" / name).read_bytes()
        starts = {sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))}
        assert {r["_offset"] for r in good + bad} == starts
        assert all(r["_source"] == "host0" and r["_stream"] == f"/var/log/{name}" for r in good + bad)
        assert all(r["reason"] and data[r["_offset"]:].startswith(r["raw"].encode()[:5]) for r in bad)
    assert summary["records"] == sum(e["records"] for e in expected.values())
    assert summary["errors"] == sum(e["errors"] for e in expected.values())
    assert summary["tasks"] > 2  # the 1KiB splits cut both files
    syslog = {r["_offset"]: r for r in parts[("SysLog", "2025-11-24")]}
    assert syslog[0]["host"] == "mymachine" and syslog[0]["app"] == "su"
    access = parts[("NginxAccess", "2025-11-24")]
    assert Counter(r["status"] for r in access)[200] == 3
    jsons = parts[("AppJSON", "2025-11-24")]
    spoof = next(r for r in jsons if r.get("source") == "mine")
    assert spoof["_offset"] != "spoof"  # provenance wins over a record's own keys
    applog = parts[("AppLog", "2025-11-24")]
    assert [r["level"] for r in applog] == ["INFO", "WARN", "ERROR", "DEBUG"]


def test_local_engine_same_records_whatever_the_split_and_workers(samples, tmp_path: Path) -> None:
    sink, config, _ = samples
    spec = load_spec(str(config), [])
    a = run(str(sink), str(tmp_path / "a"), spec, workers=1)
    b = run(str(sink), str(tmp_path / "b"), spec, workers=2, split_size=1024)
    assert b.tasks > a.tasks
    assert canonical(read_output(tmp_path / "a")) == canonical(read_output(tmp_path / "b"))


@pytest.mark.parametrize("fmt", ["seq", "parquet"])
def test_other_formats_hold_the_same_records(samples, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    sink, config, _ = samples
    spec = load_spec(str(config), [])
    run(str(sink), str(tmp_path / "jsonl"), spec)
    run(str(sink), str(tmp_path / fmt), spec, fmt=fmt)
    assert all(p.name.endswith(f".{fmt}") for p in (tmp_path / fmt).rglob("part-*"))

    def norm(parts):  # parquet stores nested values as JSON text
        return canonical({k: [{f: (json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                                   if isinstance(v, (dict, list)) else v) for f, v in r.items() if v is not None}
                              for r in rs] for k, rs in parts.items()})

    assert norm(read_output(tmp_path / fmt)) == norm(read_output(tmp_path / "jsonl"))


def test_archive_then_demux_counts_each_record_once(tmp_path: Path) -> None:
    """Duplicated deliveries demuxed straight from sink files double; through archive they do not."""
    sink = tmp_path / "sink"
    expected = make_sample_sinks(sink, copies=1)
    # the same chunks again, as a second collector's retries
    make_sample_sinks(tmp_path / "again", copies=1, seed=9)
    for p in (tmp_path / "again").rglob("*.seq"):
        if not p.name.startswith(("_", ".")):
            p.rename(sink / "2025-11-24" / ("retry-" + p.name))
    arch = tmp_path / "archive"
    assert run_cli("archive", "--input", str(sink), "--output", str(arch)).returncode == 0
    out = tmp_path / "out"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(SAMPLE_CONFIG))
    r = run_cli("demux", "--input", str(arch), "--output", str(out), "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["records"] == sum(e["records"] for e in expected.values())
    assert s["errors"] == sum(e["errors"] for e in expected.values())


def test_split_record_goes_to_errors_not_lost(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    c1 = Chunk("h", "s", "Raw", 10, "e", b"ok\nxxxxxxx", timestamp=T0, flags=[FLAG_SPLIT])
    c2 = Chunk("h", "s", "Raw", 14, "e", b"yyy\n", timestamp=T0)
    write_sink_file(sink / "d" / "c-1-1.seq", [c1, c2])
    s = run(str(sink), str(tmp_path / "out"), load_spec(None, []))
    parts = read_output(tmp_path / "out")
    assert (s.records, s.errors) == (2, 1)
    (err,) = parts[("_errors", "Raw", "2025-11-24")]
    assert err["raw"] == "xxxxxxx" and "split" in err["reason"] and err["_offset"] == 3


def test_third_party_processor_by_path_and_by_entry_point(samples, tmp_path: Path, monkeypatch) -> None:
    sink, _, expected = samples
    plug = tmp_path / "plugins"
    (plug / "acme_proc").mkdir(parents=True)
    (plug / "acme_proc" / "__init__.py").write_text(textwrap.dedent('''
        from typing import ClassVar
        from logflume.processor import ParseError, Processor
        from logflume.settings import Int, Setting

        class WordCount(Processor):
            """A third party's processor: counts words, rejects long lines."""
            settings: ClassVar = {"max_words": Setting(Int(min=1), 20, "longer lines are errors")}

            def process(self, record, where):
                words = record.split()
                if len(words) > self.config.max_words:
                    raise ParseError(f"{len(words)} words > {self.config.max_words}")
                return {"words": len(words), "first": words[0].decode() if words else None}
    '''))
    dist = plug / "acme_proc-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-proc\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[logflume.processors]\nwordcount = acme_proc:WordCount\n")
    monkeypatch.setenv("PYTHONPATH", str(plug))
    cfg = tmp_path / "wc.yaml"
    cfg.write_text(yaml.safe_dump({"processors": {"AppLog": {"type": "wordcount", "max_words": 8}},
                                   "default": "acme_proc:WordCount"}))
    out = tmp_path / "out"
    r = run_cli("demux", "--input", str(sink), "--output", str(out), "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    parts = read_output(out)
    applog_lines = (Path(__file__).parents[1] / "data" / "jobs" / "app.log").read_text().splitlines()
    long_lines = sum(len(x.split()) > 8 for x in applog_lines)
    assert len(parts[("_errors", "AppLog", "2025-11-24")]) == long_lines > 0
    assert len(parts[("AppLog", "2025-11-24")]) == len(applog_lines) - long_lines
    assert all("words" in r for r in parts[("SysLog", "2025-11-24")])  # the default: by module path
    n_lines = sum(len((Path(__file__).parents[1] / "data" / "jobs" / n).read_bytes().split(b"\n")) - 1
                  for n in expected)
    s = json.loads(r.stdout)
    assert s["records"] + s["errors"] == n_lines


def test_bad_invocations_are_one_clear_line(samples, tmp_path: Path) -> None:
    sink, _, _ = samples
    out = tmp_path / "out"
    cases = [
        (["--processor", "SysLog=nope"], 2, "unknown processor type 'nope'"),
        (["--processor", "SysLog"], 2, "DATATYPE=TYPE"),
        (["--processor", "AppLog=regex"], 2, "pattern: missing required key"),
        (["--format", "xml"], 2, "invalid choice"),
    ]
    for extra, code, message in cases:
        r = run_cli("demux", "--input", str(sink), "--output", str(out), *extra)
        assert (r.returncode, message in r.stderr, "Traceback" in r.stderr) == (code, True, False), r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("processors:\n  AppLog: {type: regex, pattern: 'no groups'}\n")
    r = run_cli("demux", "--input", str(sink), "--output", str(out), "--config", str(bad))
    assert r.returncode == 2 and "bad.yaml" in r.stderr and "named group" in r.stderr
    assert run_cli("demux", "--input", str(sink), "--output", str(out)).returncode == 0
    r = run_cli("demux", "--input", str(sink), "--output", str(out), "--json")  # committed input: nothing again
    assert r.returncode == 0 and json.loads(r.stdout)["records"] == 0 and json.loads(r.stdout)["skipped_files"] == 2
    foreign = tmp_path / "foreign"
    (foreign / "x").mkdir(parents=True)
    (foreign / "x" / "data.csv").write_text("a,b\n")
    r = run_cli("demux", "--input", str(sink), "--output", str(foreign))
    assert r.returncode == 1 and "--overwrite" in r.stderr and "no demux manifest" in r.stderr
    arch = tmp_path / "arch"
    assert run_cli("archive", "--input", str(sink), "--output", str(arch)).returncode == 0
    r = run_cli("demux", "--input", str(sink), "--output", str(arch))
    assert r.returncode == 1 and "holds archive output" in r.stderr, r.stderr
    assert run_cli("demux", "--input", str(sink), "--output", str(out), "--overwrite").returncode == 0
    # a damaged file fails the job in a worker process, named, without a traceback
    (sink / "2025-11-24" / "zz-broken.seq").write_bytes((sink / "2025-11-24" / "collector0-1-0.seq").read_bytes()[:-7])
    r = run_cli("demux", "--input", str(sink), "--output", str(out), "--overwrite", "--workers", "2")
    assert r.returncode == 1 and "zz-broken.seq" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_explicit_record_ends_without_newlines(tmp_path: Path) -> None:
    """Datagram sources (syslog over UDP) mark record ends; records need no newline."""
    msgs = [b"<13>1 2025-11-24T16:00:00Z h a - - - one", b"<13>1 2025-11-24T16:00:01Z h a - - - two\nlines",
            b"junk"]
    data = b"".join(msgs)
    ends = [sum(map(len, msgs[: i + 1])) for i in range(len(msgs))]
    c = Chunk("h", "syslog:a", "SysLog", len(data), "e", data, record_ends=ends, timestamp=T0)
    write_sink_file(tmp_path / "sink" / "d" / "c-1-1.seq", [c])
    s = run(str(tmp_path / "sink"), str(tmp_path / "out"), load_spec(None, []))
    assert (s.records, s.errors) == (2, 1)
    parts = read_output(tmp_path / "out")
    assert [r["message"] for r in parts[("SysLog", "2025-11-24")]] == ["one", "two\nlines"]


def test_every_record_of_every_chunk_comes_out(tmp_path: Path) -> None:
    """Straight from sink files (duplicates included): records + errors = lines in all chunks read."""
    sinks = make_sink_set(tmp_path / "sink", n_streams=4, lines=300)
    lines = sum(bytes(c.data).count(b"\n") for p in sinks.root.rglob("*.seq") if not p.name.startswith(("_", "."))
                for c in read_seq_chunks(p))
    s = run(str(sinks.root), str(tmp_path / "out"), load_spec(None, []), workers=2, split_size=4096)
    assert s.chunks == sinks.chunks_written
    assert s.records + s.errors == lines
    assert s.errors == sum(len(rs) for k, rs in read_output(tmp_path / "out").items() if k[0] == "_errors")


def test_raw_records_offsets_crlf_blank_and_partial_lines() -> None:
    from jobs.records import raw_records

    c = Chunk("h", "s", "Raw", 100 + 10, "e", b"a\r\nb\n\nc\r", timestamp=T0)
    assert raw_records(c) == [(0, b"a"), (3, b"b"), (5, b""), (6, b"c\r")]
    c.record_ends = [3, 5]
    assert raw_records(c) == [(0, b"a"), (3, b"b"), (5, b"\nc\r")]


def test_chunks_with_bad_metadata_are_set_aside_not_fatal(tmp_path: Path) -> None:
    """A poison chunk (as archive sets aside) neither stops demux nor vanishes: _errors/_chunks, whole."""
    from tests.jobs.test_archive import _poison_file, _raw_records

    body = b"one\ntwo\nthree\n"
    good = [Chunk("h", "s", "Raw", 8, "e", body[:8], timestamp=T0), Chunk("h", "s", "Raw", 14, "e", body[8:],
                                                                          timestamp=T0)]
    n_bad = _poison_file(tmp_path / "sink" / "d" / "c-1-1.seq", good)
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        r = run_cli("demux", "--input", str(tmp_path / "sink"), "--output", str(out), "--json", "--workers", workers,
                    "--split-size", "1KiB")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert (s["records"], s["errors"], s["bad_chunks"], s["chunks"]) == (3, 0, n_bad, 2)
        assert [x["message"] for x in read_output(out)[("Raw", "2025-11-24")]] == ["one", "two", "three"]
        aside = [rec for p in sorted((out / "_errors" / "_chunks").glob("chunks-*.seq")) for rec in _raw_records(p)]
        assert len(aside) == n_bad and all(meta["error"] and data == body[:8] for meta, data in aside)


def test_parquet_is_hive_partitioned_zstd_with_provenance(samples, tmp_path: Path) -> None:
    """The default output: datatype=/date=/hour= directories pyarrow reads as columns, zstd, provenance."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from logflume.processor import build_processor

    sink, config, expected = samples
    out = tmp_path / "out"
    s = run(str(sink), str(out), load_spec(str(config), []))
    table = ds.dataset(str(out), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == s.records == sum(e["records"] for e in expected.values())
    assert {"datatype", "date", "hour", "_source", "_stream", "_epoch", "_offset", "_timestamp"} <= set(
        table.column_names)
    assert set(table.column("date").to_pylist()) == {"2025-11-24"}
    files = sorted(out.glob("datatype=NginxAccess/date=2025-11-24/hour=16/part-*.parquet"))
    assert files
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(files[0])
    declared = build_processor("access").output_schema()
    assert schema.names[:len(declared)] == declared.names and schema.field("status").type == declared.field(
        "status").type
    errors = ds.dataset(str(out / "_errors"), format="parquet", partitioning="hive").to_table()
    assert errors.num_rows == s.errors and {"reason", "raw", "_offset"} <= set(errors.column_names)
    assert s.by_datatype["NginxAccess"]["records"] == expected["access.log"]["records"]
    assert s.by_datatype["NginxAccess"]["errors"] == expected["access.log"]["errors"]


def test_progress_bar_and_summary_on_a_terminal(samples, tmp_path: Path) -> None:
    """On a terminal: a progress bar on stderr, then the summary with each datatype's records and errors."""
    import os
    import pty
    import subprocess

    from tests.jobs.conftest import ROOT, cli_command

    sink, config, expected = samples
    primary, secondary = pty.openpty()
    p = subprocess.Popen(cli_command("demux", "--input", str(sink), "--output", str(tmp_path / "out"), "--config",
                                     str(config)), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=secondary)
    os.close(secondary)
    stdout, _ = p.communicate(timeout=120)
    err = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(primary)
    assert p.returncode == 0
    assert b"demux [" in err and b"100.0%" in err and b"MB/s" in err
    text = stdout.decode()
    for exp in expected.values():
        line = next(x for x in text.splitlines() if x.strip().startswith(exp["datatype"] + " "))
        assert line.split()[1:3] == [str(exp["records"]), str(exp["errors"])], line
    assert "MB/s" in text.splitlines()[0]
