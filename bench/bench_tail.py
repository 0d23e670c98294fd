"""Read throughput of the tail source, against ``cat FILE > /dev/null`` on the same file, in one run.

The pipeline is the real one, in-process: tail source -> memory channel ->
null sink (Agent runtime).  The clock runs from the agent's start until the
null sink has taken every byte of the file.  The file is in the page cache
for both (it was just written and is read once before timing), so the
comparison is CPU cost per byte, not disk speed.  The baseline ``cat`` is the
floor (GNU cat may move the bytes in the kernel with copy_file_range, never
touching them in user space); ``dd bs=1M`` is printed too: a plain read() loop
into one buffer, no record finding, no chunks.

The same run also times the path with one chunk-level interceptor (``host``)
and with a record-level one (``regex_filter``), once matching no line (the cost
of scanning) and once dropping every tenth line (kept records go on as one
chunk per run of kept lines: the cost of exact delivery, see docs/routing.md).

    .venv/bin/python bench/bench_tail.py [--size-mb 1024] [--line 200] [--chunk-size 64MiB]
                                         [--block 1MiB] [--repeat 3] [--dir DIR] [--no-interceptors]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.agent import Agent  # noqa: E402
from logflume.allocator import configure_allocator  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.metrics import Metrics  # noqa: E402
from logflume.topology import build_topology  # noqa: E402

MIB = 1 << 20


#: name -> interceptor chain (None: the plain path) and the regex of the lines it drops.
VARIANTS: dict[str, tuple[list[dict] | None, str | None]] = {
    "tail -> memory -> null    ": (None, None),
    "  + host (chunk-level)    ": ([{"type": "host", "value": "bench"}], None),
    "  + regex_filter, no match": ([{"type": "regex_filter", "pattern": "ERROR", "mode": "drop"}], "ERROR"),
    "  + regex_filter, 1 in 10 ": ([{"type": "regex_filter", "pattern": "7 x", "mode": "drop"}], "7 x"),
}


def block_of(line_len: int) -> bytes:
    body = b"x" * (line_len - 12) + b"\n"
    return b"".join(b"%010d " % i + body for i in range(4096))


def kept_bytes(size: int, line_len: int, dropped: str | None) -> int:
    """Bytes a filter dropping lines that match ``dropped`` lets through (the file repeats one block)."""
    if dropped is None:
        return size
    block = block_of(line_len)
    regex = re.compile(dropped.encode())
    gone = sum(len(line) for line in block.splitlines(keepends=True) if regex.search(line))
    return size - (size // len(block)) * gone


def make_file(path: Path, size: int, line_len: int) -> int:
    """``size`` bytes of numbered ``line_len``-byte lines (the last one cut at a newline)."""
    block = block_of(line_len)
    written = 0
    with open(path, "wb") as fh:
        while written + len(block) <= size:
            fh.write(block)
            written += len(block)
    return written


def time_cat(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def time_dd(path: Path) -> float:
    """A plain read() loop into one 1 MiB buffer (cat may use copy_file_range and skip user space)."""
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def time_tail(path: Path, size: int, work: Path, chunk_size: str, block: str,
              interceptors: list[dict] | None = None) -> float:
    """Seconds until the null sink took ``size`` bytes (what the interceptors let through)."""
    data_dir = work / f"data-{time.time_ns()}"
    source = {"type": "tail", "paths": [str(path)], "channels": ["ch"], "chunk_size": chunk_size,
              "read_block_size": block, "flush_interval": "10ms"}
    if interceptors:
        source["interceptors"] = interceptors
    raw = {
        "sources": {"t": source},
        "channels": {"ch": {"type": "memory", "capacity": "512MiB"}},
        "sinks": {"out": {"type": "null", "channel": "ch", "batch_timeout": "5ms"}},
    }
    ctx = Context(agent_name="bench", data_dir=data_dir, metrics=Metrics())
    agent = Agent(build_topology(raw, None, ctx))
    t0 = time.perf_counter()
    agent.start()
    try:
        while ctx.metrics.value("bytes_in_total", kind="sink", component="out") < size:
            time.sleep(0.002)
        return time.perf_counter() - t0
    finally:
        agent.stop(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--line", type=int, default=200, help="line length in bytes (default 200)")
    ap.add_argument("--chunk-size", default="64MiB")
    ap.add_argument("--block", default="1MiB", help="tail read_block_size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the test file goes (default: a temp dir)")
    ap.add_argument("--no-interceptors", action="store_true", help="time only the plain tail path")
    args = ap.parse_args()
    variants = dict(list(VARIANTS.items())[:1]) if args.no_interceptors else VARIANTS
    configure_allocator()  # as `logflume agent` does (LOGFLUME_MALLOPT=1 to compare with)
    work = Path(tempfile.mkdtemp(prefix="bench-tail-", dir=args.dir))
    try:
        path = work / "bench.log"
        size = make_file(path, args.size_mb * MIB, args.line)
        time_cat(path)  # warm the page cache
        cats, dds = [], []
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            cats.append(time_cat(path))
            dds.append(time_dd(path))
            for name, (chain, dropped) in variants.items():
                times[name].append(time_tail(path, kept_bytes(size, args.line, dropped), work, args.chunk_size,
                                             args.block, chain))
        cat_s, dd_s = min(cats), min(dds)
        tail_s = min(times[next(iter(variants))])
        mb = size / MIB
        print(f"file: {mb:.0f} MiB of {args.line}-byte lines; chunk_size {args.chunk_size}, "
              f"read_block_size {args.block}; best of {args.repeat}")
        print(f"cat > /dev/null           : {mb / cat_s:8.1f} MiB/s  ({cat_s:.3f} s)")
        print(f"dd bs=1M of=/dev/null     : {mb / dd_s:8.1f} MiB/s  ({dd_s:.3f} s)")
        for name in variants:
            best = min(times[name])
            print(f"{name}: {mb / best:8.1f} MiB/s  ({best:.3f} s; {best / tail_s:.2f}x the plain path's time)")
        print(f"ratio tail / cat          : {cat_s / tail_s:8.2f}  (1.00 = as fast as cat)")
        print(f"ratio tail / dd           : {dd_s / tail_s:8.2f}  (1.00 = as fast as a read() loop)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
