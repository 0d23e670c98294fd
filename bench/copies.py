"""Where the bytes of one chunk are copied on their way from a tailed file to a SequenceFile.

    python -m bench.copies [--size-mb 64] [--channel memory|file] [--sync every_batch|none]

Runs a real agent (tail -> channel -> collector sink) and a real collector (seqfile store) under
``strace -f``, feeds them one file of ``--size-mb`` MiB (one chunk at the default ``chunk_size``
of 64 MiB), and counts per process:

- bytes through each data syscall (``pread64``, ``read``, ``recvfrom``, ``sendmsg``, ``write``,
  ``pwrite64``, ``sendfile``, ...): every one moves bytes between kernel and user space, i.e. one
  copy of the chunk (or of part of it), except ``sendfile``/``splice`` (kernel only);
- anonymous memory mapped in pieces of >= 1 MiB (``mmap``, ``mremap``) and page faults: glibc
  serves every allocation that large with its own mapping, so each is a fresh user-space buffer
  being filled (by a syscall or a ``memcpy``); fresh pages fault on first touch.

and, under ``--tracemalloc``, the Python lines that allocated blocks of >= 1 MiB (snapshots taken
every few milliseconds inside both processes; how it hooks in: ``bench/copies_hook.py``).
Nothing here changes the pipeline; it is a measuring instrument for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.e2e.generator import generate
from bench.e2e.logflume_contender import LogflumeOptions, acked_bytes, agent_config, collector_config, python_env
from bench.e2e.measure import ProcGroup, wait_until
from bench.e2e.peers import free_port, port_open
from bench.e2e.variants import clear_dir

REPO = Path(__file__).resolve().parent.parent
DATA_CALLS = ("read", "pread64", "readv", "preadv", "preadv2", "recvfrom", "recvmsg", "write", "pwrite64", "writev",
              "pwritev", "pwritev2", "sendto", "sendmsg", "sendfile", "splice", "copy_file_range")
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)")
_UNFINISHED = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<args>.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+<\.\.\. (?P<call>\w+) resumed>(?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)")
_BIG = 1 << 20


def _calls(path: Path):
    """(call, args, return value) of each finished syscall, joining strace's unfinished/resumed halves."""
    pending: dict[str, tuple[str, str]] = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = _LINE.match(line)
            if m:
                yield m["call"], m["args"], m["ret"]
                continue
            m = _UNFINISHED.match(line)
            if m:
                pending[m["pid"]] = (m["call"], m["args"])
                continue
            m = _RESUMED.match(line)
            if m:
                call, args = pending.pop(m["pid"], (m["call"], ""))
                yield call, args + m["args"], m["ret"]


def parse_strace(path: Path) -> dict[str, Any]:
    """Per syscall: calls and bytes (return values); big anonymous mappings and remappings."""
    calls: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    big_maps: list[int] = []
    remaps: list[int] = []
    for call, args, ret in _calls(path):
        if call in DATA_CALLS:
            n = int(ret, 0)
            if n > 0:
                calls[call][0] += 1
                calls[call][1] += n
        elif call == "mmap" and "MAP_ANONYMOUS" in args and "PROT_NONE" not in args:  # not stacks, arenas
            size = int(args.split(",")[1].strip(), 0)
            if size >= _BIG:
                big_maps.append(size)
        elif call == "mremap":
            new = int(args.split(",")[2].strip(), 0)
            if new >= _BIG:
                remaps.append(new)
    return {"calls": {k: {"calls": v[0], "bytes": v[1]} for k, v in sorted(calls.items())},
            "big_mmaps": big_maps, "big_mremaps": remaps}


def stop_traced(strace_pid: int) -> None:
    """SIGTERM the process strace runs (its child), so it shuts down as usual and strace exits after it."""
    try:
        with open(f"/proc/{strace_pid}/task/{strace_pid}/children") as f:
            children = [int(x) for x in f.read().split()]
    except OSError:
        return
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def run(size_mb: int, channel: str, sync: str, work: Path, tracemalloc: bool) -> dict[str, Any]:
    if shutil.which("strace") is None:
        raise SystemExit("bench.copies: strace(1) is needed")
    clear_dir(work)
    ds = generate(work.parent / "copies-data", size_mb << 20, 1, "app")
    watch = work / "watch"
    watch.mkdir()
    opts = LogflumeOptions(channel=channel, sync=sync)
    cport, mport = free_port(), free_port()
    (work / "agent.yaml").write_text(yaml.safe_dump(agent_config(opts, work, [str(watch / "app.log")], cport, mport)))
    (work / "collector.yaml").write_text(yaml.safe_dump(collector_config(opts, work, cport)))
    env = python_env(REPO)
    py = [sys.executable]
    if tracemalloc:
        env["LOGFLUME_COPIES_TRACE"] = str(work)
        py = [sys.executable, "-X", "tracemalloc=8", "-m", "bench.copies_hook"]
    else:
        py = [sys.executable, "-m", "logflume"]
    strace = ["strace", "-f", "-qq", "-e", "signal=none", "-e",
              "trace=" + ",".join(DATA_CALLS + ("mmap", "mremap", "munmap"))]
    if tracemalloc:
        strace = ["strace", "-qq", "-e", "trace=none"]  # the snapshots are slow enough without tracing
    group = ProcGroup()
    try:
        group.start("collector", [*strace, "-o", str(work / "collector.strace"), *py, "collector", "-c",
                                  str(work / "collector.yaml")], work / "collector.log", env=env)
        wait_until(lambda: port_open(cport), 60, "the collector listening", group)
        group.start("agent", [*strace, "-o", str(work / "agent.strace"), *py, "agent", "-c",
                              str(work / "agent.yaml")], work / "agent.log", env=env)
        wait_until(lambda: acked_bytes(mport) >= 0, 60, "the agent's metrics endpoint", group)
        time.sleep(0.5)
        # Only what happens from here on is counted: start-up is cut off at this marker.
        marks = {name: (work / f"{name}.strace").stat().st_size for name in ("agent", "collector")}
        (work / "watch-now").touch()
        time.sleep(0.5)
        t0 = time.monotonic()
        os.link(ds.files[0], watch / "app.log")
        wait_until(lambda: acked_bytes(mport) >= ds.total_bytes, 300, "every byte acknowledged", group)
        seconds = time.monotonic() - t0
        time.sleep(0.3)
        for p in reversed(group.procs):  # the traced process, then strace (SIGTERM to strace only detaches)
            stop_traced(p.pid)
            p.wait(60)
    finally:
        for p in group.procs:
            stop_traced(p.pid)
        group.stop_all(20)
    out: dict[str, Any] = {"size_bytes": ds.total_bytes, "channel": channel, "sync": sync, "seconds": seconds}
    for name, start in marks.items():
        full = work / f"{name}.strace"
        cut = work / f"{name}.measured.strace"
        with open(full, "rb") as src, open(cut, "wb") as dst:
            src.seek(start)
            src.readline()  # a partial line at the mark
            shutil.copyfileobj(src, dst)
        out[name] = parse_strace(cut)
        hook = work / f"{name}.bigallocs.json"
        if hook.exists():
            out[name]["python_big_allocations"] = json.loads(hook.read_text())
    return out


def table(doc: dict[str, Any]) -> str:
    size = doc["size_bytes"]
    lines = [f"One file of {size >> 20} MiB, {doc['channel']} channel, store sync {doc['sync']} "
             f"({doc['seconds']:.2f} s under strace):", "",
             "| process | syscall | calls | MiB | × the chunk |", "|---|---|---:|---:|---:|"]
    for name in ("agent", "collector"):
        for call, d in doc[name]["calls"].items():
            lines.append(f"| {name} | {call} | {d['calls']:,} | {d['bytes'] / 2**20:,.1f} | {d['bytes'] / size:.2f} |")
        maps = doc[name]["big_mmaps"]
        remaps = doc[name]["big_mremaps"]
        lines.append(f"| {name} | mmap ≥ 1 MiB (fresh buffers) | {len(maps)} | {sum(maps) / 2**20:,.1f} | "
                     f"{sum(maps) / size:.2f} |")
        lines.append(f"| {name} | mremap ≥ 1 MiB (grown buffers) | {len(remaps)} | "
                     f"{(max(remaps) if remaps else 0) / 2**20:,.1f} (largest) | |")
        for a in doc[name].get("python_big_allocations", [])[:12]:
            lines.append(f"| {name} | Python ≥ 1 MiB at {a['where']} | {a['count']} | {a['bytes'] / 2**20:,.1f} | "
                         f"{a['bytes'] / size:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.copies", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--channel", choices=("memory", "file"), default="memory")
    ap.add_argument("--sync", choices=("every_batch", "none"), default="every_batch")
    ap.add_argument("--tracemalloc", action="store_true", help="also list Python lines allocating >= 1 MiB")
    ap.add_argument("--work-dir", default=str(REPO / "bench" / "work" / "copies"))
    a = ap.parse_args(argv)
    doc = run(a.size_mb, a.channel, a.sync, Path(a.work_dir), a.tracemalloc)
    (Path(a.work_dir) / "copies.json").write_text(json.dumps(doc, indent=2))
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
