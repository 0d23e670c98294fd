"""Latency case: at a fixed 10,000 lines/s, how long from a line's write to its arrival at the far end.

A writer process appends lines at the fixed rate (a batch every 10 ms) and records when each
batch was written.  The harness follows the far end's files as they grow: for logflume the
collector's in-progress sink file (store ``sync: every_batch``, so those bytes are fsynced before
the collector acks them), for rsyslog and syslog-ng the receiving instance's output file, and
notes when each sequence number first appears (polling every 5 ms).  Latency = first seen -
written, per line; p50/p99/max over every line.  The harness's polling adds up to ~5 ms.
"""

from __future__ import annotations

import argparse
import array
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.e2e.generator import SEQ_DIGITS, SEQ_MARK, make_line
from bench.e2e.logflume_contender import LogflumeOptions, agent_config, start_logflume
from bench.e2e.measure import ProcGroup, wait_until
from bench.e2e.peers import PEERS, Peer, free_port, port_open
from bench.e2e.settle import run_settled
from bench.e2e.variants import clear_dir

_SEQ_RE = re.compile(re.escape(SEQ_MARK) + rb"(\d{%d})" % SEQ_DIGITS)
TICK = 0.01


def write_at_rate(write: Callable[[bytes], object], line: Callable[[int], bytes], rate: int, seconds: float,
                  times_file: Path) -> None:
    """``write`` ``rate`` lines/s (``line(seq)`` each) for ``seconds``; save each line's write time (monotonic)."""
    per_tick = max(1, int(rate * TICK))
    total = int(rate * seconds)
    times = array.array("d", bytes(8 * total))
    t0 = time.monotonic()
    seq = 0
    tick = 0
    while seq < total:
        n = min(per_tick, total - seq)
        write(b"".join([line(s) for s in range(seq, seq + n)]))
        now = time.monotonic()
        for s in range(seq, seq + n):
            times[s] = now
        seq += n
        tick += 1
        delay = t0 + tick * TICK - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    tmp = times_file.with_suffix(".tmp")
    tmp.write_bytes(times.tobytes())
    os.rename(tmp, times_file)


def append_at_rate(path: Path, rate: int, seconds: float, times_file: Path) -> None:
    """:func:`write_at_rate` appending the generator's lines to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        write_at_rate(lambda data: os.write(fd, data), make_line, rate, seconds, times_file)
    finally:
        os.close(fd)


class ArrivalWatcher:
    """Follows growing files (by path, then inode) and records when each sequence number first shows."""

    def __init__(self, files: Callable[[], Iterable[Path]], total: int) -> None:
        self._files = files
        self.seen = array.array("d", bytes(8 * total))
        self.total = total
        self.count = 0
        self._state: dict[tuple[int, int], tuple[int, bytes]] = {}

    def poll(self) -> None:
        now = time.monotonic()
        for p in self._files():
            try:
                with open(p, "rb") as f:
                    st = os.fstat(f.fileno())
                    key = (st.st_dev, st.st_ino)
                    pos, carry = self._state.get(key, (0, b""))
                    if st.st_size <= pos:
                        continue
                    f.seek(pos)
                    data = f.read(st.st_size - pos)
            except FileNotFoundError:
                continue
            buf = carry + data
            cut = buf.rfind(b"\n") + 1
            self._state[key] = (pos + len(data), buf[cut:])
            seen = self.seen
            for m in _SEQ_RE.finditer(buf, 0, cut):
                s = int(m.group(1))
                if s < self.total and not seen[s]:
                    seen[s] = now
                    self.count += 1


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def measure_latency(name: str, group: ProcGroup, writer: list[str], far_files: Callable[[], Iterable[Path]],
                    rate: int, seconds: float, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run ``writer`` (a command taking RATE SECONDS TIMES_FILE after its own arguments) beside ``group``
    and watch ``far_files`` for each line's arrival."""
    total = int(rate * seconds)
    watcher = ArrivalWatcher(far_files, total)
    times_file = work / "write-times.bin"
    group.mark_start()
    writer = group.start("writer", [*writer, str(rate), str(seconds), str(times_file)], work / "writer.log", env=env)
    t0 = time.monotonic()
    deadline = t0 + seconds + 30
    while watcher.count < total and time.monotonic() < deadline:
        watcher.poll()
        group.sample()
        time.sleep(0.005)
    writer.wait(30)
    wait_until(times_file.exists, 10, "the writer's timing file")
    written = array.array("d")
    written.frombytes(times_file.read_bytes())
    lat = sorted(watcher.seen[i] - written[i] for i in range(total) if watcher.seen[i])
    usage = [u for u in group.stop_all(30) if u.name != "writer"]
    cpu = sum(u.cpu_user + u.cpu_sys for u in usage)
    return {
        "contender": name, "rate_lines_s": rate, "seconds": seconds, "lines": total,
        "lines_lost": total - len(lat),
        "p50_s": _percentile(lat, 0.50), "p99_s": _percentile(lat, 0.99), "max_s": lat[-1] if lat else None,
        "mean_s": statistics.fmean(lat) if lat else None,
        "cpu_s": cpu, "cpu_percent": 100 * cpu / (seconds + 1),
        "peak_rss_bytes": {u.name: u.peak_rss for u in usage},
    }


def _append_cmd(python: str, path: Path) -> list[str]:
    return [python, "-m", "bench.e2e.latency", "write", str(path)]


def run_logflume_latency(opts: LogflumeOptions, work: Path, rate: int, seconds: float, python: str,
                         env: dict[str, str]) -> dict[str, Any]:
    clear_dir(work)
    watch = work / "watch"
    watch.mkdir()
    cport, mport = free_port(), free_port()
    group = ProcGroup()
    sink_root = work / "collector" / "sink"
    try:
        start_logflume(group, opts, work, agent_config(opts, work, [str(watch / "app.log")], cport, mport), cport,
                       mport, python, env)
        out = measure_latency(f"{opts.name} ({opts.tail_label})", group, _append_cmd(python, watch / "app.log"),
                              lambda: [p for p in sink_root.rglob("*") if p.is_file()], rate, seconds, env, work)
    finally:
        group.stop_all(10)
    return out


def run_peer_latency(peer: Peer, work: Path, rate: int, seconds: float, python: str,
                     env: dict[str, str]) -> dict[str, Any]:
    from bench.e2e.variants import Variant

    clear_dir(work)
    watch = work / "watch"
    watch.mkdir()
    out_file = work / "received.log"
    port = free_port()
    group = ProcGroup()
    dummy = Variant("latency", None, "app.log")  # type: ignore[arg-type]
    try:
        group.start(f"{peer.name}-receiver", peer.receiver_cmd(work, port, out_file), work / "receiver.out",
                    env=peer.env())
        wait_until(lambda: port_open(port), 20, f"{peer.name} receiver", group)
        group.start(f"{peer.name}-sender", peer.sender_cmd(work, dummy, watch, port), work / "sender.out",
                    env=peer.env())
        time.sleep(1.0)
        group.check_alive()
        out = measure_latency(peer.name, group, _append_cmd(python, watch / "app.log"), lambda: [out_file], rate,
                              seconds, env, work)
    finally:
        group.stop_all(10)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["#### Latency at a fixed rate (write -> far end)", "",
             "| contender | rate lines/s | p50 ms | p99 ms | max ms | lines lost | CPU % (all processes) | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['contender']} | not measured: {r['error'][:120]} | | | | | | |")
            continue
        lines.append(f"| {r['contender']} | {r['rate_lines_s']:,} | {1000 * r['p50_s']:.0f} | {1000 * r['p99_s']:.0f} "
                     f"| {1000 * (r['max_s'] or 0):.0f} | {r['lines_lost']} | {r['cpu_percent']:.0f} | "
                     f"{r.get('loadavg_1m_before', float('nan')):.1f} |")
    return "\n".join(lines)


Case = tuple[str, Callable[[], dict[str, Any]]]


def run_latency_cases(args: Any, work: Path, python: str, env: dict[str, str], rate: int = 10_000,
                      seconds: float = 15.0, more: Callable[[Path, int, float], list[Case]] | None = None,
                      ) -> dict[str, Any]:
    """logflume at its defaults (``caught_up_flush: 20ms``), with ``quiet_flush: 5ms`` besides, and with both off
    (as before issue 20) at each of ``args.latency_flush``; rsyslog and syslog-ng; then ``more(work, rate,
    seconds)``'s cases (other sources); all at ``rate`` lines/s, in one table."""
    cases: list[Case] = []
    base = LogflumeOptions(channel="memory", sync="every_batch", chunk_size=args.chunk_size_mb << 20)
    options = [base, replace(base, quiet_flush="5ms")]
    options += [replace(base, flush_interval=fi, caught_up_flush="0s")
                for fi in getattr(args, "latency_flush", ["500ms", "200ms"])]
    for o in options:
        cases.append((f"{o.name} ({o.tail_label})",
                      lambda o=o: run_logflume_latency(o, work / "run-latency", rate, seconds, python, env)))
    for name, cls in PEERS.items():
        peer = cls()
        if peer.available() is None:
            cases.append((name, lambda p=peer: run_peer_latency(p, work / "run-latency", rate, seconds, python, env)))
    if more is not None:
        cases += more(work / "run-latency", rate, seconds)
    rows = run_settled(cases, "latency", lambda row: f"p50 {1000 * row['p50_s']:.0f} ms, "
                       f"p99 {1000 * row['p99_s']:.0f} ms, lost {row['lines_lost']}, CPU {row['cpu_percent']:.0f}%")
    return {"rows": rows, "tables": [markdown(rows)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e.latency")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="append lines at a fixed rate, saving write times")
    w.add_argument("path")
    w.add_argument("rate", type=int)
    w.add_argument("seconds", type=float)
    w.add_argument("times_file")
    a = ap.parse_args(argv)
    append_at_rate(Path(a.path), a.rate, a.seconds, Path(a.times_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
