"""The recording sink's file stays readable across kills: a torn last chunk is cut off before appending."""

from __future__ import annotations

import os

from logflume.chunk import Chunk
from logflume.testing.recording_sink import append_chunks, open_chunk_file, read_chunks


def chunk(n: int) -> Chunk:
    data = b"".join(b"line %d.%d\n" % (n, i) for i in range(100))
    return Chunk(source="h", stream="s", datatype="d", seq_id=(n + 1) * len(data), epoch="e", data=data)


def test_a_chunk_torn_by_a_kill_is_cut_off_and_later_chunks_are_read(tmp_path):
    path = tmp_path / "chunks"
    fd = open_chunk_file(path)
    append_chunks(fd, [chunk(0), chunk(1)])
    os.close(fd)
    whole = os.path.getsize(path)
    with open(path, "ab") as fh:  # a kill in the middle of the third chunk's data (a short write)
        fh.write(_encoded(tmp_path, chunk(2))[:-100])
    fd = open_chunk_file(path)  # the next process
    assert os.path.getsize(path) == whole
    append_chunks(fd, [chunk(3)])
    os.close(fd)
    assert [c.data for c in read_chunks(path)] == [chunk(n).data for n in (0, 1, 3)]


def _encoded(tmp_path, c: Chunk) -> bytes:
    fd = os.open(tmp_path / "one", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        append_chunks(fd, [c])
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)
