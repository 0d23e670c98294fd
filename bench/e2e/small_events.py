"""Small-event case: ~200-byte messages over TCP, into each contender's syslog server, and into
logflume's ``forward`` and ``http`` sources.

logflume: agent with the ``syslog`` source (TCP) -> memory channel -> collector sink -> collector
-> seqfile store; the same with the ``forward`` source (PackedForward messages of 1,000 events, as
Fluent Bit's forward output sends them) and the ``http`` source (NDJSON, a POST of 1,000 lines at a
time on a keep-alive connection, the next after the answer, as Vector's and Fluent Bit's http
outputs do), carrying the same messages as ``{"message": ...}`` records.  rsyslog: imtcp -> omfwd ->
a receiving rsyslog writing a file.  syslog-ng: network() -> network() -> a receiving syslog-ng
writing a file.  Senders push pre-built RFC 3164 messages (newline framed; Forward messages) with
``sendfile`` over ``conns`` connections, as fast as each server reads them: TCP carries back-
pressure, so the rate at which everything arrives, with nothing lost, is the highest rate the
contender sustains without loss. Every message's sequence number is then checked at the far end.
"""

from __future__ import annotations

import argparse
import contextlib
import re
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
#: Events per Forward message and per HTTP POST.
BATCH = 1000


def syslog_message(seq: int) -> bytes:
    """An RFC 3164 message around line ``seq`` (about 200 bytes with its newline)."""
    return b"<134>Nov 25 03:04:05 web-%02d nginx[%d]: " % (seq % 10, 1000 + seq % 9000) + make_line(seq)[HEAD_CUT:]


def write_messages(path: Path, first: int, count: int) -> int:
    with open(path, "wb") as f:
        for s0 in range(first, first + count, 8192):
            f.write(b"".join([syslog_message(s) for s in range(s0, min(first + count, s0 + 8192))]))
    return path.stat().st_size


def write_records(syslog_file: Path, path: Path, kind: str) -> None:
    """The messages of ``syslog_file`` as ``{"message": ...}`` records: HTTP requests of BATCH NDJSON
    lines (``http``) or PackedForward messages of BATCH events with EventTime stamps (``forward``)."""
    import json
    import struct

    import msgpack

    lines = syslog_file.read_bytes().splitlines()
    with open(path, "wb") as f:
        for i in range(0, len(lines), BATCH):
            batch = [{"message": line.decode()} for line in lines[i:i + BATCH]]
            if kind == "http":  # whole requests, so that the sender only sends them and reads the answers
                f.write(http_request(b"".join(json.dumps(r).encode() + b"\n" for r in batch)))
            else:
                stamp = msgpack.ExtType(0, struct.pack(">II", 1764039845, 0))
                packed = b"".join(msgpack.packb([stamp, r], use_bin_type=True) for r in batch)
                f.write(msgpack.packb(["syslog.web", packed], use_bin_type=True))


def http_request(body: bytes) -> bytes:
    """A POST of ``body`` as NDJSON, ready to send (what :func:`send_http` sends)."""
    return (b"POST /web HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def send(port: int, files: list[str]) -> None:
    """One connection per file, all at once (threads), each sent with sendfile."""
    def one(p: str) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s, open(p, "rb") as f:
            s.sendfile(f)

    _each(one, files)


def send_http(port: int, files: list[str]) -> None:
    """One keep-alive connection per file, all at once: its pre-built POSTs, each after the last's
    answer (200, or the sender fails).  Plain sockets, so that the client costs next to nothing, as
    a compiled client (Vector, Fluent Bit) does, and the bench measures the server."""
    def one(p: str) -> None:
        data = memoryview(Path(p).read_bytes())
        with socket.create_connection(("127.0.0.1", port)) as s:
            pos, buf = 0, b""
            while pos < len(data):
                head_end = bytes(data[pos:pos + 512]).index(b"\r\n\r\n") + 4
                length = int(re.search(rb"Content-Length: (\d+)", data[pos:pos + head_end]).group(1))
                s.sendall(data[pos:pos + head_end + length])
                pos += head_end + length
                while True:  # the answer: headers, then Content-Length bytes of body
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        need = end + 4 + int(re.search(rb"Content-Length: (\d+)", buf[:end]).group(1))
                        if len(buf) >= need:
                            break
                    more = s.recv(65536)
                    if not more:
                        raise SystemExit("the server closed the connection")
                    buf += more
                if not buf.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"POST answered {buf[:40]!r}")
                buf = buf[need:]

    _each(one, files)


def _each(one: Callable[[str], None], files: list[str]) -> None:
    import threading

    threads = [threading.Thread(target=one, args=(p,)) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _source(kind: str, port: int, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's source of ``kind`` (syslog, syslog-udp, forward, http) listening on ``port``."""
    if kind == "syslog":
        base = {"type": "syslog", "tcp": f"127.0.0.1:{port}", "stream": "syslog:{host}"}
    elif kind == "syslog-udp":
        base = {"type": "syslog", "udp": f"127.0.0.1:{port}", "stream": "syslog:{host}"}
    else:
        base = {"type": kind, "listen": f"127.0.0.1:{port}"}
    if settings is None:  # the http source has no flush_interval: it commits each request's records
        settings = {} if kind == "http" else {"flush_interval": "200ms"}
    return {**base, **settings}


def _agent_config(opts: LogflumeOptions, work: Path, source: dict[str, str], cport: int, mport: int) -> dict:
    return {
        "agent": {"name": "bench", "data_dir": str(work / "agent"), "metrics": f"127.0.0.1:{mport}",
                  "log_level": "WARNING", "shutdown_timeout": "10s"},
        "sources": {"in": {**source, "channels": ["buf"]}},
        "channels": {"buf": {"type": "memory", "capacity": "64MiB"}},
        "sinks": {"fwd": {"type": "collector", "channel": "buf", "collectors": [f"127.0.0.1:{cport}"]}},
    }


def _measure(name: str, group: ProcGroup, port: int, files: list[str], total: int,
             far: Callable[[], Iterable[Path]], python: str, env: dict[str, str], work: Path,
             stall: float = 20.0, how: str = "send") -> dict[str, Any]:
    """Send ``files`` (``how``: ``send`` with sendfile, ``send-http`` as POSTs) and wait until every
    message arrived at the far end, or none arrived for ``stall`` seconds."""
    watcher = ArrivalWatcher(far, total)
    group.mark_start()
    t0 = time.monotonic()
    sender = group.start("sender", [python, "-m", "bench.e2e.small_events", how, str(port), *files],
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
def _pipeline(work: Path, python: str, env: dict[str, str], kind: str = "syslog",
              settings: dict[str, str] | None = None) -> Iterator[tuple[ProcGroup, int, Callable[[], list[Path]]]]:
    """A collector and an agent whose source of ``kind`` has ``settings``: (processes, the source's port,
    the collector's sink files); stopped on exit."""
    clear_dir(work)
    opts = LogflumeOptions(channel="memory", sync="every_batch")
    sport, cport, mport = free_port(), free_port(), free_port()
    listening = port_open
    if kind == "syslog-udp":
        from bench.e2e.udp_burst import udp_bound, udp_free_port

        sport, listening = udp_free_port(), udp_bound
    group = ProcGroup()
    root = work / "collector" / "sink"
    try:
        start_logflume(group, opts, work, _agent_config(opts, work, _source(kind, sport, settings), cport, mport),
                       cport, mport, python, env, ready=(lambda: listening(sport), f"the agent's {kind} port"))
        yield group, sport, lambda: [p for p in root.rglob("*") if p.is_file()]
    finally:
        group.stop_all(10)


def run_logflume_events(work: Path, files: list[str], total: int, python: str, env: dict[str, str],
                        label: str = "logflume (syslog source, memory channel, sync on)", kind: str = "syslog",
                        ) -> dict:
    with _pipeline(work, python, env, kind) as (group, sport, far):
        return _measure(label, group, sport, files, total, far, python, env, work,
                        how="send-http" if kind == "http" else "send")


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
    lines = ["#### Small events: ~200-byte messages over TCP (syslog; logflume's forward and http sources too)", "",
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
    goals = targets(rows)
    if goals:
        lines += ["", "Targets of issue 20 (small events ≥ rsyslog, measured in this run):", *goals]
    return "\n".join(lines)


#: The rows held to the target: the sources as installed (the pure-Python row is the before).
TARGET_CASES = ("logflume", "logflume-forward", "logflume-http")


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """One line per logflume source: its events/s against rsyslog's in the same run, met or missed."""
    peer = next((r for r in rows if r.get("case") == "rsyslog" and "error" not in r), None)
    if peer is None:
        return []
    out = []
    for r in rows:
        if r.get("case") in TARGET_CASES and "error" not in r:
            ratio = r["events_s"] / peer["events_s"]
            ok = ratio >= 1 and not r["lines_lost"]
            out.append(f"- {r['contender']}: {r['events_s']:,.0f} events/s, {ratio:.2f}× rsyslog "
                       f"({peer['events_s']:,.0f}), lost {r['lines_lost']}: {'met' if ok else 'MISSED'}")
    return out


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
    records = {}
    for kind in ("forward", "http"):
        records[kind] = [str(data / f"{kind}-{Path(p).name}") for p in files]
        for src, dst in zip(files, records[kind], strict=True):
            if not Path(dst).exists():
                write_records(Path(src), Path(dst), kind)
    # The source's pure-Python path (what runs where the compiled scanner could not be built) beside the
    # default, in the same run: the scanner's before and after.
    pure = {**env, "LOGFLUME_PURE_PYTHON": "1"}
    cases: list[tuple[str, Callable[[], dict]]] = [
        ("logflume", lambda: run_logflume_events(work / "run-events", files, total, python, env)),
        ("logflume-pure-python", lambda: run_logflume_events(
            work / "run-events", files, total, python, pure,
            label="logflume, pure Python (LOGFLUME_PURE_PYTHON=1: no compiled scanner)")),
        ("logflume-forward", lambda: run_logflume_events(
            work / "run-events", records["forward"], total, python, env, kind="forward",
            label=f"logflume (forward source, PackedForward of {BATCH:,} events)")),
        ("logflume-http", lambda: run_logflume_events(
            work / "run-events", records["http"], total, python, env, kind="http",
            label=f"logflume (http source, NDJSON POSTs of {BATCH:,} lines)"))]
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
    with _pipeline(work, python, env, "syslog", source) as (group, sport, far):
        return measure_latency(label, group, [python, "-m", "bench.e2e.small_events", "send-at-rate", str(sport)],
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
    ap = argparse.ArgumentParser(prog="python -m bench.e2e.small_events")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("send", "send-http"):
        s = sub.add_parser(cmd)
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
    elif a.cmd == "send-http":
        send_http(a.port, a.files)
    else:
        send_at_rate(a.port, a.rate, a.seconds, Path(a.times_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())

