"""``logflume cat`` through main(argv), on real files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from logflume.chunk import Chunk
from logflume.sequencefile import LONG_WRITABLE, SequenceFileWriter
from logflume.sequencefile.cat import main

from .conftest import DATA, sidecar


def test_plain_text_text(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main([str(DATA / "f_metadata_none.seq")]) == 0
    out = capsysbinary.readouterr().out
    side = sidecar("f_metadata_none")
    expected = b"".join(
        base64.b64decode(r["key_b64"]) + b"\t" + base64.b64decode(r["value_b64"]) + b"\n"
        for r in side["records"]
    )
    assert out == expected


def test_plain_bytes_raw_and_longs(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main([str(DATA / "a_text_bytes_none.seq"), str(DATA / "h_long_text_none.seq")]) == 0
    out = capsysbinary.readouterr().out
    a = b"".join(
        base64.b64decode(r["key_b64"]) + b"\t" + base64.b64decode(r["value_b64"]) + b"\n"
        for r in sidecar("a_text_bytes_none")["records"]
    )
    h = b"".join(
        b"%d\t%s\n" % (r["key"], r["value"].encode()) for r in sidecar("h_long_text_none")["records"]
    )
    assert out == a + h


@pytest.mark.parametrize(
    "name", ["c_text_bytes_block_deflate", "h2_long_bytes_block_deflate", "e_text_text_none"]
)
def test_json(capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert main(["--json", str(DATA / f"{name}.seq")]) == 0
    lines = capsys.readouterr().out.splitlines()
    side = sidecar(name)
    assert len(lines) == side["record_count"]
    for line, rec in zip(lines, side["records"], strict=True):
        obj = json.loads(line)
        assert obj["key"] == rec.get("key", rec["key_b64"])
        assert obj["value"] == rec.get("value", rec["value_b64"])


def test_json_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "n.seq"
    with (
        path.open("wb") as f,
        SequenceFileWriter(f, key_class=LONG_WRITABLE, value_class="org.apache.hadoop.io.NullWritable") as w,
    ):
        w.append(-7, None)
    assert main(["--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"key": -7, "value": None}


def _sink_file(path: Path, compression: str = "BLOCK") -> list[bytes]:
    lines = [b"first line\n", b"second line\n", b"\xff binary-ish \x00 line\n", b"no newline at end"]
    chunks = [
        Chunk(
            source="h", stream="/var/log/a", datatype="SysLog", seq_id=23, epoch="e", data=b"".join(lines[:2])
        ),
        Chunk(
            source="h",
            stream="/var/log/a",
            datatype="SysLog",
            seq_id=100,
            epoch="e",
            data=b"".join(lines[2:]),
        ),
    ]
    with (
        path.open("wb") as f,
        SequenceFileWriter(f, compression=compression, codec=None if compression == "NONE" else "gzip") as w,
    ):
        for c in chunks:
            w.append_chunk(c)
    return lines


def test_records(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = tmp_path / "sink.seq"
    lines = _sink_file(path)
    assert main(["--records", f"file://{path}"]) == 0  # fsspec URL
    assert capsysbinary.readouterr().out == b"".join(lines)


def test_records_on_a_non_sink_file(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["--records", str(DATA / "h_long_text_none.seq")]) == 1
    assert b"not a sink file" in capsysbinary.readouterr().err


def test_corrupt_file_prints_whole_records_then_one_error_line(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    data = (DATA / "a_text_bytes_none.seq").read_bytes()
    side = sidecar("a_text_bytes_none")
    torn = tmp_path / "torn.seq"
    torn.write_bytes(data[:300])
    assert main([str(torn)]) == 1
    cap = capsysbinary.readouterr()
    first = side["records"][0]
    assert cap.out.startswith(base64.b64decode(first["key_b64"]) + b"\t")
    assert cap.out.count(b"\n") >= 2
    err = cap.err.decode().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"logflume cat: {torn}: ")
    assert "(at byte " in err[0]


def test_missing_file_and_continue(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    missing = tmp_path / "nope.seq"
    assert main([str(missing), str(DATA / "f_metadata_none.seq")]) == 1
    cap = capsysbinary.readouterr()
    assert cap.err.decode().strip() == f"logflume cat: {missing}: no such file"
    assert cap.out.count(b"\n") >= 6


def test_not_a_sequencefile(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"hello world, definitely not a SequenceFile")
    assert main([str(junk)]) == 1
    assert capsysbinary.readouterr().err.decode().strip() == (
        f"logflume cat: {junk}: not a SequenceFile (magic b'hel', expected b'SEQ') (at byte 0)"
    )


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--json", "--records", "x"])
    assert exc.value.code == 2


def test_records_on_keys_that_are_not_chunk_metadata(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["--records", str(DATA / "a_text_bytes_none.seq")]) == 1
    err = capsysbinary.readouterr().err.decode()
    assert "record is not a chunk" in err and "(at byte 87)" in err
