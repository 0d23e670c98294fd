"""logflume.chunkbuffers: chunks built in the buffers of chunks already gone, within the memory they count as.

The chunk size here is 8 MiB, the smallest that uses pooled buffers (2 x REUSE_FROM).
"""

from __future__ import annotations

import gc
import mmap
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from logflume.chunkbuffers import GIVE_BACK_FROM, PAGE, REUSE_FROM, ChunkBuffers
from logflume.chunking import RecordChunker

MIB = 1 << 20
CHUNK = 8 * MIB
LINE = b"%0199d\n"


def block(i: int) -> bytes:
    """1 MiB of 200-byte lines (the last one cut at the block's end), each block its own content."""
    lines = b"".join(LINE % (i * 6000 + k) for k in range(5243))
    return lines[:MIB]


def make(pool: ChunkBuffers, **kw) -> RecordChunker:
    return RecordChunker(source="h", stream="s", datatype="Raw", tags={}, epoch="e", chunk_size=CHUNK,
                         buffers=pool, **kw)


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def test_chunks_are_built_in_the_buffer_of_a_chunk_already_gone():
    """Ten 8 MiB chunks, each dropped before the next is cut (as a channel drops a committed chunk): one or two
    buffers serve them all, each chunk a view of one."""
    pool = ChunkBuffers()
    chunker = make(pool)
    blocks = [block(i) for i in range(4)]
    sent = 0
    for i in range(2 * 9 + 80):
        for c in chunker.feed(blocks[i % 4], 0.0):
            assert isinstance(c.data, memoryview) and isinstance(c.data.obj, mmap.mmap)
            sent += len(c)
            del c
    assert pool.count <= 2 and pool.reused >= 9
    assert sent + chunker.pending_bytes == 98 * MIB


# The loop above in a process with the agent's allocation policy (logflume/allocator.py), where a chunk grown
# in plain memory is a fresh mapping each time: prints the page faults of the last 80 MiB of chunks.
FAULTS = textwrap.dedent("""
    import resource, sys
    from logflume.allocator import configure_allocator
    from logflume.chunkbuffers import ChunkBuffers
    from tests.core.test_chunkbuffers import block, make

    assert configure_allocator() == "bounded"
    chunker = make(ChunkBuffers(max_buffers=int(sys.argv[1])))
    blocks = [block(i) for i in range(4)]
    for i in range(2 * 9):  # the first chunks fault their buffers in
        for c in chunker.feed(blocks[i % 4], 0.0):
            del c
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(80):
        for c in chunker.feed(blocks[i % 4], 0.0):
            del c
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def test_reused_buffers_are_not_faulted_in_again():
    """Measured against the same loop with no pooled buffer (max_buffers=0) in the same test: 20,490 faults
    for 80 MiB of chunks then (2,048 per 8 MiB chunk), 0 with the pool (2026-12-08)."""
    root = Path(__file__).resolve().parents[2]
    environ = {k: v for k, v in os.environ.items() if k not in ("LOGFLUME_MALLOPT", "MALLOC_MMAP_THRESHOLD_")}

    def faults(max_buffers: int) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS, str(max_buffers)], capture_output=True, text=True,
                             timeout=120, env=environ, cwd=root, check=True).stdout
        return int(out.split()[-1])

    plain, pooled = faults(0), faults(4)
    assert plain > 10 * 2048, f"{plain} faults without the pool: the loop no longer builds chunks in fresh memory"
    assert pooled < plain // 10, f"{pooled} page faults with the pool against {plain} without"


def test_a_buffer_is_not_written_again_while_its_chunk_or_any_view_of_it_lives():
    """The chunks kept (and a slice of one, kept after its chunk is dropped) keep their bytes; past
    ``max_buffers`` buffers in use, chunks are built in plain memory."""
    pool = ChunkBuffers(max_buffers=2)
    chunker = make(pool)
    data = b"".join(block(i) for i in range(40))
    out = []
    for i in range(40):
        for c in chunker.feed(data[i * MIB:(i + 1) * MIB], 0.0):
            out.append(c)
    out += chunker.finish()
    first_slice = memoryview(out[0].data)[100:200]
    expected_slice = bytes(first_slice)
    kept = out[1:]
    del out
    gc.collect()
    assert pool.count == 2
    # chunk 1 (its slice kept) and chunk 2 hold the two buffers: chunks 3 on were built in plain memory
    assert [type(c.data) for c in kept[:3]] == [memoryview, bytearray, bytearray]
    chunker2 = make(pool)
    for i in range(20):
        chunker2.feed(block(i), 0.0)  # would write into a buffer if one were taken for free
    assert bytes(first_slice) == expected_slice
    assert b"".join(bytes(c.data) for c in kept) == data[kept[0].start:]


def test_a_small_cut_gives_back_the_pages_past_it():
    """A chunk cut small from a buffer that held a full chunk before (a flush, a rotated file's last chunk)
    keeps resident only its own pages: the channel counts it by its length."""
    pool = ChunkBuffers()
    chunker = make(pool)
    for i in range(9):
        for c in chunker.feed(block(i), 0.0):
            del c  # a full chunk, dropped: its buffer is free with 8 MiB written
    small = make(pool)
    for i in range(5):
        small.feed(block(i), 0.0)
    assert small.held_bytes >= CHUNK  # the taken buffer's pages are in place past what it holds
    before = resident()
    (chunk,) = small.flush_complete(0.0)
    assert len(chunk) < 5 * MIB
    given_back = before - resident()
    assert given_back >= CHUNK - 5 * MIB - GIVE_BACK_FROM, f"{given_back} bytes given back"
    assert small.held_bytes == small.pending_bytes < MIB
    assert chunk.data.tobytes() == b"".join(block(i) for i in range(5))[:len(chunk)]


def test_free_buffers_are_unmapped_but_one():
    pool = ChunkBuffers(max_buffers=4)
    chunkers = [make(pool) for _ in range(3)]
    chunks = []
    for ch in chunkers:
        for i in range(5):
            ch.feed(block(i), 0.0)
        chunks += ch.finish()
    assert pool.count == 3
    del chunks
    pool.sweep()
    assert pool.count == 1
    pool.sweep(keep=0)
    assert pool.count == 0


def test_a_chunker_that_is_dropped_while_building_frees_its_buffer():
    """A chunker dropped midway (a tail rewinding after an error, a source stopping) gives its buffer back."""
    pool = ChunkBuffers(max_buffers=1)
    chunker = make(pool)
    for i in range(6):
        chunker.feed(block(i), 0.0)
    assert chunker.held_bytes >= 6 * MIB and pool.count == 1
    writer = make(pool)
    assert pool.take(CHUNK, writer) is None  # the only buffer is in use
    del chunker
    assert pool.take(CHUNK, writer) is not None


def test_chunkers_in_threads_never_share_a_buffer():
    """Four threads cutting chunks from one pool of two buffers: every chunk has the bytes it was fed."""
    pool = ChunkBuffers(max_buffers=2)
    errors: list[str] = []

    def work(t: int) -> None:
        chunker = make(pool)
        expected = b""
        got = []
        for i in range(30):
            b = block(t * 100 + i)
            expected += b
            got += [bytes(c.data) for c in chunker.feed(b, 0.0)]  # each chunk dropped once copied
        got += [bytes(c.data) for c in chunker.finish()]
        if b"".join(got) != expected:
            errors.append(f"thread {t}: bytes differ")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and pool.reused > 0


def test_small_chunk_sizes_do_not_use_the_pool():
    pool = ChunkBuffers()
    chunker = RecordChunker(source="h", stream="s", datatype="Raw", tags={}, epoch="e", chunk_size=2 * REUSE_FROM - 1,
                            buffers=pool)
    for i in range(12):
        chunker.feed(block(i), 0.0)
    assert pool.count == 0
