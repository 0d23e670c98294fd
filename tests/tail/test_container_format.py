"""``format: cri`` / ``format: docker``: the runtime's pieces of one message stay in one record, bytes unchanged."""

from __future__ import annotations

import json
import random

import pytest

from agent.sources.tail.container_format import parse_cri, parse_docker
from logflume.chunk import FLAG_SPLIT
from logflume.errors import ConfigError
from tests.tail.container_lines import lines, messages
from tests.tail.harness import make_source

FORMATS = ["cri", "docker"]


def test_cri_lines():
    assert parse_cri(b"2016-10-06T00:17:09.669794202Z stdout P part") == (b"stdout", True)
    assert parse_cri(b"2016-10-06T00:17:09.669794202Z stderr F last") == (b"stderr", False)
    assert parse_cri(b"2016-10-06T00:17:09.669794202+02:00 stdout F:x:y tagged") == (b"stdout", False)
    assert parse_cri(b"2016-10-06T00:17:09.669794202Z stdout F") == (b"stdout", False)  # empty line
    for bad in (b"", b"plain text", b"2016-10-06T00:17:09Z stdin P x", b"2016-10-06T00:17:09Z stdout X x",
                b"2016-10-06T00:17:09Z stdout Px", b"\x00\xff" * 100):
        assert parse_cri(bad) is None, bad


def test_docker_lines():
    def line(log, **kw):
        return json.dumps({"log": log, "stream": "stdout", "time": "2020-01-01T00:00:00Z", **kw},
                          separators=(",", ":")).encode()

    assert parse_docker(line("done\n")) == (b"stdout", False)
    assert parse_docker(line("piece")) == (b"stdout", True)
    assert parse_docker(line("ends in backslash n: \\n")) == (b"stdout", True)  # text ends in '\' 'n'
    assert parse_docker(line("backslash then newline \\\n")) == (b"stdout", False)
    assert parse_docker(line("quote \" inside\n", stream="stderr")) == (b"stderr", False)
    assert parse_docker(json.dumps({"stream": "stderr", "log": "keys reordered"}).encode()) == (b"stderr", True)
    for bad in (b"", b"not json", b'{"log": 5, "stream": "stdout"}', b'{"log": "x\\n", "stream": "stdin"}',
                b"[1,2]", b"{" * 200_000):
        assert parse_docker(bad) is None, bad[:40]


def _conversation(fmt: str, rng: random.Random) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A file's bytes: messages short and long, stderr lines landing between a stdout message's pieces."""
    data, expected = bytearray(), []
    for i in range(120):
        size = rng.choice([10, 100, 5000, 20_000, 40_000, 70_000])
        msg = (f"msg {i:04d} ".encode() + bytes(rng.choice(b"abcdefgh") for _ in range(16))) * (size // 25 + 1)
        pieces = lines(fmt, "stdout", msg, piece=16 * 1024)
        if len(pieces) > 1 and rng.random() < 0.5:  # the other stream writes between two pieces
            other = f"err {i:04d}".encode()
            at = rng.randrange(1, len(pieces))
            pieces[at:at] = lines(fmt, "stderr", other)
            expected.append(("stderr", other))
        expected.append(("stdout", msg))
        for p in pieces:
            data += p
    return bytes(data), expected


def _records(chunks) -> list[bytes]:
    """Whole records, pieces of a record cut by chunk_size (flagged split) joined again."""
    out, carry = [], b""
    for c in chunks:
        spans = list(c.record_spans())
        for n, (a, b) in enumerate(spans):
            piece = carry + bytes(c.data[a:b])
            carry = b""
            if n == len(spans) - 1 and FLAG_SPLIT in c.flags:
                carry = piece
            else:
                out.append(piece)
    assert not carry
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_pieces_stay_in_one_record_whatever_the_reads_and_chunk_cuts(tmp_path, fmt):
    rng = random.Random(7)
    data, expected = _conversation(fmt, rng)
    src = make_source(tmp_path, {"paths": [str(tmp_path / "*.log")], "format": fmt, "chunk_size": "48KiB"})
    chunker = src._make_chunker("s", "e", 0, "CRI", {})  # the chunker the source gives each file
    chunks, pos = [], 0
    while pos < len(data):  # reads end anywhere: mid-line, between a P and its F
        step = rng.choice([1, 7, 100, 4096, 30_000])
        chunks += chunker.feed(data[pos:pos + step], now=0.0)
        pos += step
    chunks += chunker.finish()
    # the bytes are the file's, and each chunk names its range
    assert b"".join(bytes(c.data) for c in chunks) == data
    assert chunks[-1].seq_id == len(data)
    assert all(c.seq_id - len(c) == p.seq_id for p, c in zip(chunks, chunks[1:], strict=False))
    assert any(FLAG_SPLIT in c.flags for c in chunks)  # some messages are longer than a chunk
    got = []
    for rec in _records(chunks):
        msgs, still_open = messages(fmt, rec)
        assert msgs and not still_open, rec[:200]  # every record ends where no message is open
        got += msgs
    assert got == expected
    # and records are as small as that allows: a message of one piece is a record of its own
    assert len(_records(chunks)) > len(expected) // 2


def test_raw_format_keeps_lines_as_records(tmp_path):
    src = make_source(tmp_path, {"paths": [str(tmp_path / "*.log")]})
    assert src.container_format is None
    chunker = src._make_chunker("s", "e", 0, "Raw", {})
    assert chunker.multiline is None and not chunker.track_ends  # the plain newline fast path


@pytest.mark.parametrize("key,value", [("multiline", {"pattern": "^x"}), ("record_delimiter", "\\0")])
def test_format_refuses_settings_that_decide_records_too(tmp_path, key, value):
    with pytest.raises(ConfigError) as err:
        make_source(tmp_path, {"paths": [str(tmp_path / "*.log")], "format": "cri", key: value})
    assert f"sources.t.{key}" in str(err.value) and "format: cri" in str(err.value)


def test_unknown_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        make_source(tmp_path, {"paths": [str(tmp_path / "*.log")], "format": "json"})
    assert "sources.t.format" in str(err.value)
