"""Hostile SequenceFiles read in a child process under RLIMIT_AS: a typed error, quickly, in bounded memory.

tests/sequencefile/test_corruption.py checks that torn, bit-flipped and
hostile-length files end in the right ``SequenceFileError``; tracemalloc
there cannot see allocations made in C (zlib, lz4, snappy).  Here each file
is read the way the store's replay reads a secondary file
(``SequenceFileReader(open(path)).iter_chunks()`` with default limits) in a
fresh interpreter whose address space is capped at 1 GiB: a lying length
must give an error, not a MemoryError, a hang or a crash, and the child's
peak RSS (VmHWM) must stay within the reader's unit ceiling plus the
interpreter.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cramjam
import lz4.block
import pytest

from logflume.sequencefile import SequenceFileReader, SequenceFileWriter
from logflume.sequencefile.reader import MAX_UNIT
from logflume.sequencefile.writables import encode_vint

REPO = Path(__file__).resolve().parents[2]
AS_LIMIT = 1 << 30
# A legitimate unit may be as big as the reader's ceiling; beyond it: the interpreter and one inflate step.
MAX_RSS_MIB = MAX_UNIT / (1 << 20) + 96

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    from logflume.sequencefile import SequenceFileError, SequenceFileReader
    t = time.monotonic()
    outcome, chunks = "ok", 0
    try:
        with open(sys.argv[1], "rb") as f:
            for _ in SequenceFileReader(f).iter_chunks():
                chunks += 1
    except SequenceFileError as exc:
        outcome = type(exc).__name__ + ": " + str(exc)[:200]
    except MemoryError:
        outcome = "MemoryError"
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child of a big
    # pytest process would report the parent's size.
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"outcome": outcome, "chunks": chunks, "seconds": time.monotonic() - t,
                      "maxrss_mib": hwm / 1024}))
""").replace("AS_LIMIT", str(AS_LIMIT))


def _file(compression: str = "NONE", codec: str | None = None) -> tuple[bytes, int]:
    buf = io.BytesIO()
    with SequenceFileWriter(buf, compression=compression, codec=codec) as w:
        w.append("key", b"value" * 10)
    data = buf.getvalue()
    return data, SequenceFileReader(io.BytesIO(data)).header.header_length


def record_length(n: int) -> bytes:
    data, hl = _file()
    return data[:hl] + struct.pack(">ii", n, 4) + data[hl + 8:]


def block_keys_buffer(n: int) -> bytes:
    data, hl = _file("BLOCK", "deflate")
    at = hl + 20
    return data[: at + 1] + encode_vint(n) + data[at + 2:]


def record_bomb(codec: str, body: bytes) -> bytes:
    data, hl = _file("RECORD", codec)
    return data[:hl] + struct.pack(">ii", 2 + len(body), 2) + b"\x01k" + body


def _hadoop_block(raw: bytes) -> bytes:
    """Hadoop BlockCompressorStream framing: u32 uncompressed size, then (u32 length, compressed) pieces."""
    return struct.pack(">I", 1 << 30) + struct.pack(">I", len(raw)) + raw


def deflate_zeros(n: int, wbits: int = 15) -> bytes:
    """zlib (or gzip, wbits 31) stream of ``n`` zero bytes, built without holding them."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(1 << 20)
    out = [c.compress(block) for _ in range(n >> 20)]
    return b"".join(out) + c.flush()


#: Bigger than any chunk a logflume writer produces (file channel max_chunk_size is 256 MiB).
BOMB = 1536 << 20

CASES = {
    "record length 2^31-1": lambda: record_length(0x7FFFFFFF),
    "record length 2^31-1, file padded to 8 MiB": lambda: record_length(0x7FFFFFFF) + bytes(8 << 20),
    "block keys buffer 2^31-1": lambda: block_keys_buffer(0x7FFFFFFF),
    "deflate record inflating to 1.5 GiB": lambda: record_bomb("deflate", deflate_zeros(BOMB)),
    "gzip record inflating to 1.5 GiB": lambda: record_bomb("gzip", deflate_zeros(BOMB, 31)),
    "lz4 record claiming 1 GiB": lambda: record_bomb("lz4", _hadoop_block(lz4.block.compress(bytes(1 << 20),
                                                                                           store_size=False))),
    "snappy record claiming 1 GiB": lambda: record_bomb("snappy", _hadoop_block(bytes(cramjam.snappy.compress_raw(
        bytes(1 << 20))))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file_read_in_bounded_memory(tmp_path, name):
    path = tmp_path / "hostile.seq"
    path.write_bytes(CASES[name]())
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, f"{name}: child died ({proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"] not in ("ok", "MemoryError"), f"{name}: {result}"
    assert result["seconds"] < 10, f"{name}: took {result['seconds']:.1f}s"
    assert result["maxrss_mib"] < MAX_RSS_MIB, f"{name}: peak RSS {result['maxrss_mib']:.0f} MiB ({result})"
