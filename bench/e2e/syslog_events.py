"""Small-event case: syslog over TCP, ~200-byte messages, into each contender's syslog server.

logflume: agent with the ``syslog`` source (TCP) -> memory channel -> collector sink -> collector
-> seqfile store.  rsyslog: imtcp -> omfwd -> a receiving rsyslog writing a file.  syslog-ng:
network() -> network() -> a receiving syslog-ng writing a file.  Senders push pre-built RFC 3164
messages (newline framed) with ``sendfile`` over ``conns`` connections, as fast as each server
reads them: TCP carries back-pressure, so the rate at which everything arrives, with nothing lost,
is the highest rate the contender sustains without loss.  Every message's sequence number is then
checked at the far end.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.e2e.generator import make_line
from bench.e2e.latency import ArrivalWatcher, Case, measure_latency, write_at_rate
from bench.e2e.logflume_contender import LogflumeOptions, start_logflume
from bench.e2e.measure import ProcGroup, wait_until
from bench.e2e.peers import PEERS, Peer, free_port, port_open
from bench.e2e.settle import run_settled
from bench.e2e.variants import clear_dir

HEAD_CUT = len(b"2026-11-25T03:00:00.000Z web-00 nginx[1000]: ")


def syslog_message(seq: int) -> bytes:
    """An RFC 3164 message around line ``seq`` (about 200 bytes with its newline)."""
    return b"<134>Nov 25 03:04:05 web-%02d nginx[%d]: " % (seq % 10, 1000 + seq % 9000) + make_line(seq)[HEAD_CUT:]


def write_messages(path: Path, first: int, count: int) -> int:
    with open(path, "wb") as f:
        for s0 in range(first, first + count, 8192):
            f.write(b"".join([syslog_message(s) for s in range(s0, min(first + count, s0 + 8192))]))
    return path.stat().st_size


def send(port: int, files: list[str]) -> None:
    """One connection per file, all at once (threads), each sent with sendfile."""
    import threading

    def one(p: str) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s, open(p, "rb") as f:
            s.sendfile(f)

    threads = [threading.Thread(target=one, args=(p,)) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _agent_config(opts: LogflumeOptions, work: Path, syslog_port: int, cport: int, mport: int,
                  source: dict[str, str] | None = None) -> dict:
    settings = {"flush_interval": "200ms"} if source is None else source
    return {
        "agent": {"name": "bench", "data_dir": str(work / "agent"), "metrics": f"127.0.0.1:{mport}",
                  "log_level": "WARNING", "shutdown_timeout": "10s"},
        "sources": {"syslog": {"type": "syslog", "tcp": f"127.0.0.1:{syslog_port}", "channels": ["buf"],
                               "stream": "syslog:{host}", **settings}},
        "channels": {"buf": {"type": "memory", "capacity": "64MiB"}},
        "sinks": {"fwd": {"type": "collector", "channel": "buf", "collectors": [f"127.0.0.1:{cport}"]}},
    }


def _measure(name: str, group: ProcGroup, port: int, files: list[str], total: int,
             far: Callable[[], Iterable[Path]], python: str, env: dict[str, str], work: Path,
             stall: float = 20.0) -> dict[str, Any]:
    watcher = ArrivalWatcher(far, total)
    group.mark_start()
    t0 = time.monotonic()
    sender = group.start("sender", [python, "-m", "bench.e2e.syslog_events", "send", str(port), *files],
                         work / "sender.log", env=env)
    last, last_t = 0, t0
    while watcher.count < total:
        watcher.poll()
        group.sample()
        now = time.monotonic()
        if watcher.count > last:
            last, last_t = watcher.count, now
        elif now - last_t > stall:
            break
        time.sleep(0.02)
    seconds = max(last_t - t0, 1e-9)
    sender.stop(10)
    usage = [u for u in group.stop_all(30) if u.name != "sender"]
    cpu = sum(u.cpu_user + u.cpu_sys for u in usage)
    return {"contender": name, "events": total, "connections": len(files), "seconds": seconds,
            "events_s": watcher.count / seconds, "lines_lost": total - watcher.count,
            "cpu_s_per_million": cpu / (total / 1e6), "peak_rss_bytes": {u.name: u.peak_rss for u in usage}}


@contextlib.contextmanager
def _syslog_pipeline(work: Path, python: str, env: dict[str, str], source: dict[str, str] | None = None,
                     ) -> Iterator[tuple[ProcGroup, int, Callable[[], list[Path]]]]:
    """A collector and an agent whose syslog source has ``source``'s settings: (processes, syslog port, the
    collector's sink files); stopped on exit."""
    clear_dir(work)
    opts = LogflumeOptions(channel="memory", sync="every_batch")
    sport, cport, mport = free_port(), free_port(), free_port()
    group = ProcGroup()
    root = work / "collector" / "sink"
    try:
        start_logflume(group, opts, work, _agent_config(opts, work, sport, cport, mport, source), cport, mport,
                       python, env, ready=(lambda: port_open(sport), "the agent's syslog port"))
        yield group, sport, lambda: [p for p in root.rglob("*") if p.is_file()]
    finally:
        group.stop_all(10)


def run_logflume_events(work: Path, files: list[str], total: int, python: str, env: dict[str, str],
                        label: str = "logflume (syslog source, memory channel, sync on)") -> dict:
    with _syslog_pipeline(work, python, env) as (group, sport, far):
        return _measure(label, group, sport, files, total, far, python, env, work)


def run_peer_events(peer: Peer, work: Path, files: list[str], total: int, python: str,
                    env: dict[str, str]) -> dict:
    clear_dir(work)
    in_port, port = free_port(), free_port()
    out = work / "received.log"
    group = ProcGroup()
    try:
        group.start(f"{peer.name}-receiver", peer.receiver_cmd(work, port, out), work / "receiver.out", env=peer.env())
        wait_until(lambda: port_open(port), 20, f"{peer.name} receiver", group)
        group.start(f"{peer.name}-relay", peer.relay_cmd(work, in_port, port), work / "relay.out", env=peer.env())
        wait_until(lambda: port_open(in_port), 20, f"{peer.name} syslog port", group)
        return _measure(peer.name, group, in_port, files, total, lambda: [out], python, env, work)
    finally:
        group.stop_all(10)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["#### Small events: syslog over TCP, ~200-byte messages", "",
             "| contender | events | connections | events/s | lost | CPU s per million events | peak RSS MiB | load |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['contender']} | not measured: {r['error'][:120]} | | | | | | |")
            continue
        rss = ", ".join(f"{k} {v >> 20}" for k, v in r["peak_rss_bytes"].items())
        lines.append(f"| {r['contender']} | {r['events']:,} | {r['connections']} | {r['events_s']:,.0f} | "
                     f"{r['lines_lost']} | {r['cpu_s_per_million']:.1f} | {rss} | "
                     f"{r.get('loadavg_1m_before', float('nan')):.1f} |")
    return "\n".join(lines)


def run_event_cases(work: Path, events: int, python: str, env: dict[str, str], conns: int = 4) -> dict[str, Any]:
    data = work / "data" / "syslog"
    data.mkdir(parents=True, exist_ok=True)
    per = events // conns
    files = []
    for i in range(conns):
        p = data / f"syslog-{events}-{i}.txt"
        if not p.exists():
            write_messages(p, i * per, per)
        files.append(str(p))
    total = per * conns
    # The source's pure-Python path (what runs where the compiled scanner could not be built) beside the
    # default, in the same run: the scanner's before and after.
    pure = {**env, "LOGFLUME_PURE_PYTHON": "1"}
    cases: list[tuple[str, Callable[[], dict]]] = [
        ("logflume", lambda: run_logflume_events(work / "run-events", files, total, python, env)),
        ("logflume-pure-python", lambda: run_logflume_events(
            work / "run-events", files, total, python, pure,
            label="logflume, pure Python (LOGFLUME_PURE_PYTHON=1: no compiled scanner)"))]
    for name, cls in PEERS.items():
        peer = cls()
        if peer.available() is None:
            cases.append((name, lambda p=peer: run_peer_events(p, work / "run-events", files, total, python, env)))
    rows = run_settled(cases, "events", lambda row: f"{row['events_s']:,.0f} events/s, lost {row['lines_lost']}, "
                       f"{row['cpu_s_per_million']:.1f} CPU s per million")
    return {"rows": rows, "tables": [markdown(rows)]}


def send_at_rate(port: int, rate: int, seconds: float, times_file: Path) -> None:
    """The latency case's writer for the syslog source: messages over one TCP connection at ``rate``/s."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        write_at_rate(s.sendall, syslog_message, rate, seconds, times_file)


def run_logflume_syslog_latency(work: Path, rate: int, seconds: float, python: str, env: dict[str, str],
                                source: dict[str, str], label: str) -> dict[str, Any]:
    with _syslog_pipeline(work, python, env, source) as (group, sport, far):
        return measure_latency(label, group, [python, "-m", "bench.e2e.syslog_events", "send-at-rate", str(sport)],
                               far, rate, seconds, env, work)


def syslog_latency_cases(python: str, env: dict[str, str]) -> Callable[[Path, int, float], list[Case]]:
    """The syslog source in the latency table: at its defaults, and with ``caught_up_flush`` off (before)."""
    def cases(work: Path, rate: int, seconds: float) -> list[Case]:
        variants = [("defaults: caught_up_flush 20ms, flush_interval 500ms", {}),
                    ("caught_up_flush 0s, flush_interval 500ms (before)", {"caught_up_flush": "0s"})]
        return [(f"logflume-syslog-tcp ({label})",
                 lambda label=label, extra=extra: run_logflume_syslog_latency(
                     work, rate, seconds, python, env, extra, f"logflume, syslog source over TCP ({label})"))
                for label, extra in variants]
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e.syslog_events")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("port", type=int)
    s.add_argument("files", nargs="+")
    r = sub.add_parser("send-at-rate")
    r.add_argument("port", type=int)
    r.add_argument("rate", type=int)
    r.add_argument("seconds", type=float)
    r.add_argument("times_file")
    a = ap.parse_args(argv)
    if a.cmd == "send":
        send(a.port, a.files)
    else:
        send_at_rate(a.port, a.rate, a.seconds, Path(a.times_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())

