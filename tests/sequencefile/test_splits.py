"""Reading a file as N byte-range splits yields every record exactly once (Hadoop split semantics)."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from logflume.sequencefile import SequenceFileReader, SequenceFileWriter

from .conftest import DATA, sidecar, sidecar_records


def _splits(data: bytes, n: int) -> list[tuple[bytes, bytes]]:
    size = len(data)
    bounds = [size * i // n for i in range(n + 1)]
    out: list[tuple[bytes, bytes]] = []
    for start, end in itertools.pairwise(bounds):
        r = SequenceFileReader(io.BytesIO(data), start=start, end=end)
        out.extend((bytes(k), bytes(v)) for k, v in r.iter_raw())
    return out


def _file(compression: str, codec: str | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    rng = random.Random(11)
    records = [(f"r{i:05d}".encode(), rng.randbytes(rng.choice([0, 50, 500, 5000]))) for i in range(2000)]
    buf = io.BytesIO()
    with SequenceFileWriter(
        buf, compression=compression, codec=codec, sync_interval=8192, block_size=20_000
    ) as w:
        for k, v in records:
            w.append(k, v)
    return buf.getvalue(), records


@pytest.mark.parametrize(
    ("compression", "codec"),
    [("NONE", None), ("RECORD", "deflate"), ("BLOCK", "deflate"), ("BLOCK", "snappy"), ("RECORD", "lz4")],
)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 400])
def test_every_record_exactly_once(compression: str, codec: str | None, n: int) -> None:
    data, records = _file(compression, codec)
    assert _splits(data, n) == records


@pytest.mark.parametrize(
    "name",
    [
        "g_many_records_none",
        "g2_many_records_block_deflate",
        "g3_sync_interval_4k_record_deflate",
        "k_text_bytes_block_lz4",
    ],
)
@pytest.mark.parametrize("n", [2, 4, 13])
def test_hadoop_goldens_split(name: str, n: int) -> None:
    data = (DATA / f"{name}.seq").read_bytes()
    assert _splits(data, n) == sidecar_records(sidecar(name))


def test_split_without_markers_is_read_by_the_first() -> None:
    side = sidecar("g_many_records_none")
    data = (DATA / "g_many_records_none.seq").read_bytes()
    escape = b"\xff\xff\xff\xff" + bytes.fromhex(side["sync_marker_hex"])
    stripped = data[: side["header_length"]] + data[side["header_length"] :].replace(escape, b"")
    assert len(stripped) == len(data) - 20 * len(side["sync_offsets"])
    r = SequenceFileReader(io.BytesIO(stripped), start=0, end=1000)
    assert len(list(r)) == side["record_count"]
    assert _splits(stripped, 4) == sidecar_records(side)


def test_split_starting_in_the_middle_begins_at_a_marker() -> None:
    side = sidecar("g_many_records_none")
    data = (DATA / "g_many_records_none.seq").read_bytes()
    first, second = side["sync_offsets"][:2]
    r = SequenceFileReader(io.BytesIO(data), start=first - 3, end=first + 1)
    got = list(r.iter_raw())
    assert got  # reads from the first marker up to and including the record before the second
    assert r.last_record_end == second
    with_offsets = SequenceFileReader(io.BytesIO(data), start=first + 1)
    assert bytes(next(with_offsets.iter_raw())[0]) != bytes(got[0][0])
