"""Torn, bit-flipped and hostile files: whole records first, then a typed error with its offset."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logflume.sequencefile import (
    CorruptFileError,
    SequenceFileError,
    SequenceFileReader,
    SequenceFileWriter,
    TruncatedFileError,
)
from logflume.sequencefile.writables import encode_vint

from .conftest import DATA, sidecar, sidecar_records


def _read_all(
    data: bytes, **kw: object
) -> tuple[list[tuple[bytes, bytes]], list[int], SequenceFileError | None]:
    """Records, the last_record_end after each, and the error that stopped reading (if any)."""
    records: list[tuple[bytes, bytes]] = []
    ends: list[int] = []
    try:
        r = SequenceFileReader(io.BytesIO(data), **kw)  # type: ignore[arg-type]
        for k, v in r.iter_raw():
            records.append((bytes(k), bytes(v)))
            ends.append(r.last_record_end)
    except SequenceFileError as exc:
        return records, ends, exc
    return records, ends, None


@pytest.mark.parametrize(
    "name",
    [
        "a_text_bytes_none",
        "b_text_bytes_record_deflate",
        "c_text_bytes_block_deflate",
        "i_text_bytes_record_gzip",
        "m_text_bytes_record_lz4",
        "g3_sync_interval_4k_record_deflate",
        "k_text_bytes_block_lz4",
        "l_text_bytes_block_snappy",
        "f2_metadata_block_deflate",
    ],
)
def test_truncated_at_many_offsets(name: str) -> None:
    side = sidecar(name)
    data = (DATA / f"{name}.seq").read_bytes()
    full, ends, err = _read_all(data)
    assert err is None and full == sidecar_records(side)
    step = max(1, len(data) // 400)
    cuts = sorted(set(range(0, len(data), step)) | set(ends) | {e + 1 for e in ends} | {e - 1 for e in ends})
    for cut in cuts:
        if cut >= len(data):
            continue
        got, _, err = _read_all(data[:cut])
        whole = [rec for rec, end in zip(full, ends, strict=True) if end <= cut]
        assert got == whole, cut
        if cut < side["header_length"]:
            assert isinstance(err, TruncatedFileError) and "header" in err.reason
        elif cut in ends or cut == side["header_length"]:
            assert err is None, (cut, err)
        else:
            assert isinstance(err, TruncatedFileError), (cut, err)
            assert err.offset == (ends[len(got) - 1] if got else side["header_length"])
            assert f"(at byte {err.offset})" in str(err)


@pytest.mark.parametrize("name", ["g_many_records_none", "g2_many_records_block_deflate"])
def test_bit_flipped_sync_marker(name: str) -> None:
    side = sidecar(name)
    data = bytearray((DATA / f"{name}.seq").read_bytes())
    at = side["sync_offsets"][1]
    data[at + 4 + 7] ^= 0x10
    got, ends, err = _read_all(bytes(data))
    assert isinstance(err, CorruptFileError)
    assert err.offset == at + 4
    assert "sync marker" in err.reason
    assert got == sidecar_records(side)[: len(got)]
    assert got and ends[-1] == at


def _one_record(compression: str = "NONE", codec: str | None = None) -> tuple[bytes, int]:
    buf = io.BytesIO()
    with SequenceFileWriter(buf, compression=compression, codec=codec) as w:
        w.append("key", b"value" * 10)
    r = SequenceFileReader(io.BytesIO(buf.getvalue()))
    return buf.getvalue(), r.header.header_length


@pytest.mark.parametrize(
    ("length", "key_len", "error", "words"),
    [
        (0x7FFFFFFF, 4, TruncatedFileError, "past the end"),
        (-5, 4, CorruptFileError, "negative record length"),
        (10, 11, CorruptFileError, "key length"),
        (10, -1, CorruptFileError, "key length"),
        (54, 5, CorruptFileError, "bad key"),
    ],
)
def test_hostile_record_lengths(length: int, key_len: int, error: type, words: str) -> None:
    data, hl = _one_record()
    bad = data[:hl] + struct.pack(">ii", length, key_len) + data[hl + 8 :]
    got, _, err = _read_all(bad)
    assert got == []
    assert isinstance(err, error) and words in err.reason
    assert err.offset is not None and hl <= err.offset <= hl + 8


def test_hostile_block_sizes() -> None:
    data, hl = _one_record("BLOCK", "deflate")
    n_at = hl + 20
    # the keys-lengths buffer size claims 2 GiB
    bad = data[: n_at + 1] + encode_vint(0x7FFFFFFF) + data[n_at + 2 :]
    _, _, err = _read_all(bad)
    assert isinstance(err, TruncatedFileError) and err.offset == hl
    # a 9-byte VLong that does not fit in an int
    bad = data[:n_at] + bytes.fromhex("887fffffffffffffff") + data[n_at + 1 :]
    _, _, err = _read_all(bad)
    assert isinstance(err, CorruptFileError) and "int" in err.reason
    # a negative record count
    bad = data[:n_at] + encode_vint(-3) + data[n_at + 1 :]
    _, _, err = _read_all(bad)
    assert isinstance(err, CorruptFileError) and "record count" in err.reason


def test_decompression_bomb_is_bounded() -> None:
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    buf = io.BytesIO()
    with SequenceFileWriter(buf, compression="RECORD", codec="deflate") as w:
        w.append("k", b"v")
    data = buf.getvalue()
    hl = SequenceFileReader(io.BytesIO(data)).header.header_length
    bad = data[:hl] + struct.pack(">ii", 2 + len(bomb), 2) + b"\x01k" + bomb
    _, _, err = _read_all(bad, max_unit_size=1 << 20)
    assert isinstance(err, CorruptFileError) and "beyond" in err.reason


def test_lz4_framing_lies_about_length() -> None:
    data, hl = _one_record("RECORD", "lz4")
    key_len = struct.unpack_from(">i", data, hl + 4)[0]
    at = hl + 8 + key_len
    bad = data[:at] + struct.pack(">i", 0x7FFFFFFF) + data[at + 4 :]
    _, _, err = _read_all(bad)
    assert isinstance(err, CorruptFileError) and err.offset == at


@pytest.mark.parametrize(
    ("offset", "byte", "words"),
    [(0, b"X", "not a SequenceFile"), (3, b"\x07", "version 7"), (3, b"\x03", "version 3")],
)
def test_bad_magic_and_version(offset: int, byte: bytes, words: str) -> None:
    data, _ = _one_record()
    _, _, err = _read_all(data[:offset] + byte + data[offset + 1 :])
    assert isinstance(err, CorruptFileError) and words in err.reason


def test_older_versions_are_read() -> None:
    """Version 5 has no metadata; version 4 also has no codec name (implicitly DefaultCodec)."""
    side = sidecar("b_text_bytes_record_deflate")
    data = (DATA / "b_text_bytes_record_deflate.seq").read_bytes()
    hl = side["header_length"]
    codec_text = encode_vint(len(side["codec"])) + side["codec"].encode()
    head = data[: hl - 16]  # up to and including the metadata count
    assert head.endswith(codec_text + b"\x00\x00\x00\x00")
    v5 = b"SEQ\x05" + head[4:-4] + data[hl - 16 :]
    v4 = b"SEQ\x04" + head[4 : -4 - len(codec_text)] + data[hl - 16 :]
    for blob, version in ((v5, 5), (v4, 4)):
        r = SequenceFileReader(io.BytesIO(blob))
        assert r.header.version == version
        assert r.header.codec == side["codec"]
        assert [(bytes(k), bytes(v)) for k, v in r.iter_raw()] == sidecar_records(side)


def _sample_files() -> list[bytes]:
    rng = random.Random(5)
    out = []
    for compression, codec in [
        ("NONE", None),
        ("RECORD", "deflate"),
        ("RECORD", "lz4"),
        ("BLOCK", "gzip"),
        ("BLOCK", "snappy"),
        ("BLOCK", "lz4"),
    ]:
        buf = io.BytesIO()
        with SequenceFileWriter(
            buf, compression=compression, codec=codec, block_size=300, sync_interval=200
        ) as w:
            for i in range(30):
                w.append(f"key-{i}", rng.randbytes(rng.choice([0, 3, 40])))
        out.append(buf.getvalue())
    return out


SAMPLES = _sample_files()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(SAMPLES) - 1),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=9)),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzzed_files_fail_cleanly(which: int, edits: list[tuple[float, bytes]], cut: float | None) -> None:
    """Any damage gives records then a SequenceFileError: no other exception, no hang, no big allocation."""
    data = bytearray(SAMPLES[which])
    for where, blob in edits:
        at = int(where * len(data))
        data[at : at + len(blob)] = blob  # overwrite; favours 4-byte lengths and VInts
    if cut is not None:
        del data[int(cut * len(data)) :]
    tracemalloc.start()
    try:
        _, _, err = _read_all(bytes(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert err is None or isinstance(err, SequenceFileError)
    assert err is None or err.offset is None or 0 <= err.offset <= len(SAMPLES[which]) + 64


@settings(max_examples=200, deadline=None)
@given(length=st.integers(-(2**31), 2**31 - 1), key_len=st.integers(-(2**31), 2**31 - 1))
def test_any_record_header_fails_cleanly(length: int, key_len: int) -> None:
    data, hl = _one_record()
    bad = data[:hl] + struct.pack(">ii", length, key_len) + data[hl + 8 :]
    tracemalloc.start()
    try:
        got, _, err = _read_all(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert (
        err is not None
        or (length == 54 and key_len == 4 and got == [(b"key", b"value" * 10)])
        or length == -1
    )


def test_file_ending_right_after_a_sync_escape_is_torn() -> None:
    side = sidecar("g_many_records_none")
    data = (DATA / "g_many_records_none.seq").read_bytes()
    at = side["sync_offsets"][0]
    got, ends, err = _read_all(data[: at + 20])
    assert isinstance(err, TruncatedFileError) and err.offset == at
    assert ends[-1] == at and got == sidecar_records(side)[: len(got)]
