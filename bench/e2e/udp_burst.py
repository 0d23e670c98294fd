"""UDP burst case: how many of a burst of RFC 5424 datagrams each syslog server receives.

util-linux ``logger --udp --rfc5424`` sends N datagrams (one per stdin line) as fast as it can
(a Python sender when ``logger`` is missing) to: the logflume agent's ``syslog`` source at its
defaults (an 8 MiB ``SO_RCVBUF`` asked for) and with ``udp_receive_buffer: null`` (the kernel's
default, the old behaviour); rsyslog imudp at its defaults and with ``rcvbufSize="8m"``; syslog-ng
network(transport(udp)) at its defaults.  Several bursts per contender, each counted once the
count has stopped growing: logflume by its ``messages_in`` counter (what the source took off the
socket), the peers by the lines of their output file that carry the burst's marker.  The receive
buffer each socket really got is read from ``ss -uamn`` (``skmem rb``), for every contender alike.
"""

from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.e2e.measure import ProcGroup, wait_until
from bench.e2e.peers import PEERS, Peer, Rsyslog, SyslogNg, free_port, render
from bench.e2e.settle import run_settled
from bench.e2e.variants import clear_dir

_MESSAGES_IN = re.compile(r'^logflume_messages_in_total\{[^}]*component="udp"[^}]*\} ([0-9.e+]+)$', re.M)
_RCVBUF_GAUGE = re.compile(r'^logflume_udp_receive_buffer_bytes\{[^}]*component="udp"[^}]*\} ([0-9.e+]+)$', re.M)


def udp_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_bound(port: int) -> bool:
    with open("/proc/net/udp") as f:
        return any(int(line.split()[1].split(":")[1], 16) == port for line in f.readlines()[1:])


def kernel_rcvbuf(port: int) -> int | None:
    """``rb`` of the UDP socket on ``port`` as ss(8) reports it (what the kernel granted), or None."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-uamnH", "sport", "=", f":{port}"], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.search(r"skmem:\(r\d+,rb(\d+),", out)
    return int(m.group(1)) if m else None


def send_burst(port: int, tag: str, n: int) -> float:
    """Send ``n`` RFC 5424 datagrams tagged ``tag``; return the seconds the sender took."""
    lines = "".join(f"{tag}-{i:06d} a burst message of a usual size, padded with some words to about a "
                    f"hundred and sixty bytes\n" for i in range(n))
    t0 = time.monotonic()
    if shutil.which("logger"):
        subprocess.run(["logger", "--udp", "--rfc5424", "-n", "127.0.0.1", "-P", str(port), "-t", "burst"],
                       input=lines.encode(), check=True, timeout=60)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", port))
            for line in lines.splitlines():
                s.send(f"<13>1 - localhost burst - - - {line}".encode())
    return time.monotonic() - t0


def _settled_count(count: Callable[[], int], quiet: float = 1.0, timeout: float = 30.0) -> int:
    """The count once it has not changed for ``quiet`` seconds."""
    last, since = count(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        n = count()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _metric(port: int, pattern: re.Pattern) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            m = pattern.search(r.read().decode())
    except OSError:
        return -1
    return int(float(m.group(1))) if m else 0


def _bursts(name: str, port: int, count: Callable[[], int], n: int, rounds: int) -> dict[str, Any]:
    received, send_s = [], []
    base = _settled_count(count, quiet=0.3)
    for r in range(rounds):
        send_s.append(send_burst(port, f"burst{r}", n))
        total = _settled_count(count)
        received.append(total - base)
        base = total
    return {"contender": name, "datagrams": n, "rounds": rounds, "received": received,
            "lost_median": statistics.median(n - x for x in received), "send_ms_median":
            1000 * statistics.median(send_s), "rcvbuf_bytes": kernel_rcvbuf(port)}


def run_logflume_udp(work: Path, n: int, rounds: int, python: str, env: dict[str, str],
                     receive_buffer: str | None = "default") -> dict[str, Any]:
    """Agent only (syslog UDP -> memory channel -> a null sink): the socket and the source are measured."""
    clear_dir(work)
    port, mport = udp_free_port(), free_port()
    src: dict[str, Any] = {"type": "syslog", "udp": f"127.0.0.1:{port}", "channels": ["buf"]}
    if receive_buffer != "default":
        src["udp_receive_buffer"] = receive_buffer
    cfg = {"agent": {"name": "bench", "data_dir": str(work / "agent"), "metrics": f"127.0.0.1:{mport}",
                     "log_level": "WARNING"},
           "sources": {"udp": src}, "channels": {"buf": {"type": "memory", "capacity": "64MiB"}},
           "sinks": {"out": {"type": "null", "channel": "buf"}}}
    (work / "agent.yaml").write_text(yaml.safe_dump(cfg))
    group = ProcGroup()
    label = "default 8MiB" if receive_buffer == "default" else f"udp_receive_buffer {receive_buffer or 'null'}"
    try:
        group.start("agent", [python, "-m", "logflume", "agent", "-c", str(work / "agent.yaml")],
                    work / "agent.log", env=env)
        wait_until(lambda: _metric(mport, _MESSAGES_IN) >= 0 and udp_bound(port), 30, "the agent's UDP port", group)
        row = _bursts(f"logflume ({label})", port, lambda: _metric(mport, _MESSAGES_IN), n, rounds)
        row["granted_gauge"] = _metric(mport, _RCVBUF_GAUGE)
        return row
    finally:
        group.stop_all(10)


def start_peer_udp(peer: Peer, work: Path, udp_opts: str, group: ProcGroup) -> tuple[int, Path]:
    """Start ``peer``'s UDP receiver (writing one line per datagram) in ``group``; (its port, its file)."""
    clear_dir(work)
    port = udp_free_port()
    out = work / "received.log"
    d = work / "receiver"
    d.mkdir()
    if isinstance(peer, Rsyslog):
        conf = render("rsyslog-udp-receiver.conf", {"WORK": str(d), "PORT": str(port), "OUT": str(out),
                                                    "UDP_OPTS": udp_opts})
    else:
        conf = render("syslog-ng-udp-receiver.conf", {"PORT": str(port), "OUT": str(out), "UDP_OPTS": udp_opts})
    group.start(f"{peer.name}-receiver", peer._cmd(work, conf, "receiver"),  # type: ignore[attr-defined]
                work / "receiver.out", env=peer.env())
    wait_until(lambda: udp_bound(port), 20, f"{peer.name} UDP port", group)
    time.sleep(0.5)
    return port, out


def run_peer_udp(peer: Peer, work: Path, n: int, rounds: int, udp_opts: str, label: str) -> dict[str, Any]:
    group = ProcGroup()
    try:
        port, out = start_peer_udp(peer, work, udp_opts, group)

        def count() -> int:
            try:
                return sum(1 for line in out.read_bytes().splitlines() if b"burst" in line)
            except FileNotFoundError:
                return 0

        return _bursts(f"{peer.name} ({label})", port, count, n, rounds)
    finally:
        group.stop_all(10)


def markdown(rows: list[dict[str, Any]], n: int) -> str:
    sender = "util-linux logger --udp --rfc5424" if shutil.which("logger") else "a Python sender"
    lines = [f"#### UDP bursts: {n:,} RFC 5424 datagrams sent back to back by {sender}", "",
             "| contender | receive buffer granted (ss rb) | received per burst | lost (median) | "
             "send time ms (median) | load |",
             "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['contender']} | not measured: {r['error'][:120]} | | | | |")
            continue
        rb = f"{r['rcvbuf_bytes']:,}" if r.get("rcvbuf_bytes") else "?"
        lines.append(f"| {r['contender']} | {rb} | {', '.join(f'{x:,}' for x in r['received'])} | "
                     f"{r['lost_median']:,.0f} | {r['send_ms_median']:.0f} | {r.get('loadavg_1m_before', 0):.1f} |")
    with open("/proc/sys/net/core/rmem_max") as f, open("/proc/sys/net/core/rmem_default") as g:
        lines += ["", f"net.core.rmem_max = {int(f.read()):,}, net.core.rmem_default = {int(g.read()):,} "
                      "(Linux doubles a SO_RCVBUF request after capping it at rmem_max; ss shows the doubled size)."]
    return "\n".join(lines)


def run_udp_cases(work: Path, n: int, rounds: int, python: str, env: dict[str, str]) -> dict[str, Any]:
    run = work / "run-udp"
    cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("logflume", lambda: run_logflume_udp(run, n, rounds, python, env)),
        ("logflume null", lambda: run_logflume_udp(run, n, rounds, python, env, receive_buffer=None)),
    ]
    rs, ng = Rsyslog(), SyslogNg()
    if rs.available() is None:
        cases.append(("rsyslog", lambda: run_peer_udp(rs, run, n, rounds, "", "defaults")))
        cases.append(("rsyslog 8m", lambda: run_peer_udp(rs, run, n, rounds, 'rcvbufSize="8m"', 'rcvbufSize="8m"')))
    if ng.available() is None:
        cases.append(("syslog-ng", lambda: run_peer_udp(ng, run, n, rounds, "", "defaults")))
    assert set(PEERS) == {"rsyslog", "syslog-ng"}
    rows = run_settled(cases, "udp", lambda row: f"received {row['received']} of {n}, rb {row['rcvbuf_bytes']}",
                       errors=(RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError))
    return {"rows": rows, "tables": [markdown(rows, n)]}
