"""sinks/direct_file.py: files appended with O_DIRECT hold exactly the bytes written, at every flush."""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import sinks.direct_file as direct_file
from logflume.component import Context
from logflume.sequencefile import SequenceFileReader
from sinks.direct_file import BLOCK, DirectBuffer, DirectFile, open_direct
from sinks.naming import inprogress_name
from sinks.seqfile import SeqFileSink
from sinks.storage import LocalFiles
from tests.conftest import REPO
from tests.store.conftest import ChunkMaker, make_sink


def _direct(path: Path, stage: DirectBuffer) -> DirectFile:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    f = open_direct(fd, stage)
    assert f is not None, "this file system refuses O_DIRECT"
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    return f


@pytest.mark.parametrize("seed", range(4))
def test_random_writes_and_flushes_leave_exactly_the_bytes_written(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    stage = DirectBuffer(4 * BLOCK)  # small, so that writes span several rounds of the staging buffer
    f = _direct(tmp_path / "f", stage)
    written = bytearray()
    for _ in range(300):
        n = rng.choice([0, 1, 17, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5, 9 * BLOCK + 123, rng.randrange(40_000)])
        data = rng.randbytes(n)
        assert f.write(memoryview(data)) == n
        written += data
        if rng.random() < 0.3:
            f.flush()
            assert (tmp_path / "f").read_bytes() == written  # no padding left, nothing missing
    f.close()
    f.close()  # twice: a no-op
    assert (tmp_path / "f").read_bytes() == written


def test_a_reader_never_sees_the_file_longer_than_what_was_written(tmp_path: Path, monkeypatch) -> None:
    """The tail used to be written zero-padded to a whole block and truncated back: between the two calls a
    reader following the file (the latency bench's) saw zeros past the end, and lost the line written there."""
    written = [0]
    sizes: list[tuple[int, int]] = []
    real_pwrite = os.pwrite

    def watched(fd, data, offset):
        k = real_pwrite(fd, data, offset)
        sizes.append((os.fstat(fd).st_size, written[0]))
        return k

    monkeypatch.setattr(direct_file.os, "pwrite", watched)
    f = _direct(tmp_path / "f", DirectBuffer(2 * BLOCK))
    rng = random.Random(7)
    for _ in range(100):
        data = rng.randbytes(rng.choice([10, BLOCK + 3, 5 * BLOCK + 1]))
        written[0] += len(data)
        f.write(data)
        f.flush()
    f.close()
    assert sizes and all(size <= logical for size, logical in sizes)
    assert (tmp_path / "f").stat().st_size == written[0]


def test_two_files_sharing_one_staging_buffer_keep_their_own_tails(tmp_path: Path) -> None:
    stage = DirectBuffer(2 * BLOCK)
    a, b = _direct(tmp_path / "a", stage), _direct(tmp_path / "b", stage)
    for i in range(50):
        a.write(bytes([65 + i % 26]) * (i * 97))
        b.write(bytes([97 + i % 26]) * (i * 131 + 1))
    a.close()
    b.close()
    assert (tmp_path / "a").read_bytes() == b"".join(bytes([65 + i % 26]) * (i * 97) for i in range(50))
    assert (tmp_path / "b").read_bytes() == b"".join(bytes([97 + i % 26]) * (i * 131 + 1) for i in range(50))


def test_where_o_direct_is_refused_the_file_is_written_through_the_page_cache(tmp_path: Path, monkeypatch) -> None:
    real = fcntl.fcntl

    def refusing(fd, cmd, arg=0):  # what a file system without O_DIRECT answers
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(direct_file.fcntl, "fcntl", refusing)
    files = LocalFiles(str(tmp_path))
    f = files.create("x", direct=True)
    assert not isinstance(f, DirectFile)
    f.write(b"abc")
    f.close()
    assert (tmp_path / "x").read_bytes() == b"abc"


@pytest.mark.parametrize(("settings", "direct"), [
    ({}, True),  # sync every_batch (the default) and direct_io auto
    ({"sync": "none"}, False),
    ({"sync": "none", "direct_io": "on"}, True),
    ({"direct_io": "off"}, False),
])
def test_the_seqfile_store_writes_with_o_direct_when_it_fsyncs_every_batch(tmp_path: Path, settings: dict,
                                                                           direct: bool) -> None:
    context = Context(agent_name="coll1", data_dir=tmp_path / "state")
    sink = make_sink(SeqFileSink, "store", {"url": str(tmp_path / "store"), **settings}, context)
    sink.start()
    maker = ChunkMaker(size=10_000)
    sent = []
    try:
        for _ in range(20):
            batch = maker.batch(7)
            sink.deliver(batch)
            sent += [(c.stream, c.seq_id, bytes(c.data)) for c in batch]
        (of,) = sink._open.values()
        assert isinstance(of.file, DirectFile) is direct
        if direct and sink.config.sync == "every_batch":  # every acked byte is on the file: a reader sees it all
            with open(tmp_path / "store" / inprogress_name(of.rel), "rb") as r:
                assert len(list(SequenceFileReader(r).iter_chunks())) == len(sent)
    finally:
        sink.stop()
    (final,) = (tmp_path / "store").rglob("*.seq")
    with open(final, "rb") as r:
        got = [(c.stream, c.seq_id, bytes(c.data)) for c in SequenceFileReader(r).iter_chunks()]
    assert got == sent


FAILING_WRITE = """
import os, resource, signal, sys
from sinks.direct_file import BLOCK, DirectBuffer, open_direct

path, data_path = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (5 * BLOCK, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
data = os.urandom(12 * BLOCK + 10)
open(data_path, "wb").write(data[:5 * BLOCK])  # what the file may hold: a prefix of the bytes written
f = open_direct(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), DirectBuffer(2 * BLOCK))
f.write(data[:2 * BLOCK + 10])
f.flush()
try:
    f.write(data[2 * BLOCK + 10:])  # one round of the staging buffer fits, the next passes the limit
except OSError as exc:
    print("failed:", exc.errno)
try:
    f.write(b"x" * 10)
except OSError:
    print("refused")
f.close()
"""


def test_after_a_failed_write_nothing_more_is_written(tmp_path: Path) -> None:
    """The tail it held belonged before the blocks written since: closing used to write it at the new end."""
    done = subprocess.run([sys.executable, "-c", FAILING_WRITE, str(tmp_path / "f"), str(tmp_path / "data")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["failed: 27", "refused"]  # EFBIG
    got, data = (tmp_path / "f").read_bytes(), (tmp_path / "data").read_bytes()
    assert len(got) >= 2 * BLOCK + 10
    assert got == data[:len(got)]
