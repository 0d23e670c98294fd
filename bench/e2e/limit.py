"""The physical limit: the same bytes read from page cache and copied over loopback TCP into a file.

No shipper can beat this on this machine: it is what moving the bytes costs with nothing else done.
The sender is ``os.sendfile`` from the page cache (zero-copy); the receiver ``recv_into`` a reusable
1 MiB buffer and ``os.write``s it into the output file (page cache: no fsync, as a shipper with
sync off), both in their own process, socket buffers left to the kernel's autotuning.  Run by
:func:`run_limit` after the harness has written back dirty pages (``bench/e2e/settle.py``); the
two halves are ``python -m bench.e2e.limit recv|send``.  :func:`run_socat` is the same copy with
socat(1) as the receiver, when it is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from bench.e2e.measure import ProcGroup, Result, SeqVerifier, wait_until
from bench.e2e.peers import free_port
from bench.e2e.variants import clear_dir

BUF = 1 << 20


def receive(port_file: Path, out: Path) -> int:
    """Accept one connection on a free loopback port (written to ``port_file``), store all it sends."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(srv.getsockname()[1]))
    os.rename(tmp, port_file)
    conn, _ = srv.accept()
    buf = bytearray(BUF)
    view = memoryview(buf)
    total = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            pos = 0
            while pos < n:
                pos += os.write(fd, view[pos:n])
            total += n
    finally:
        os.close(fd)
        conn.close()
        srv.close()
    port_file.with_suffix(".end").write_text(repr(time.monotonic()))
    return total


def send(port: int, start_file: Path, files: list[str]) -> int:
    """Send every file over one loopback connection with sendfile (page cache -> socket, no copy)."""
    start_file.write_text(repr(time.monotonic()))
    sock = socket.create_connection(("127.0.0.1", port))
    total = 0
    try:
        for p in files:
            with open(p, "rb") as f:
                total += sock.sendfile(f)
    finally:
        sock.close()
    return total


def run_limit(files: list[str], total_lines: int, total_bytes: int, variant: str, work: Path,
              python: str, env: dict[str, str]) -> Result:
    """Time the copy from the sender's start to the receiver's exit (all bytes written), then verify."""
    clear_dir(work)
    port_file = work / "port"
    out = work / "received.log"
    res = Result("limit", variant, total_bytes, total_lines)
    group = ProcGroup()
    try:
        recv = group.start("receiver", [python, "-m", "bench.e2e.limit", "recv", str(port_file), str(out)],
                           work / "recv.log", env=env)
        wait_until(port_file.exists, 20, "the limit receiver's port", group)
        group.mark_start()
        snd = group.start("sender", [python, "-m", "bench.e2e.limit", "send", port_file.read_text(),
                                     str(work / "start"), *files], work / "send.log", env=env)
        if snd.wait(600).exit_code:
            recv.stop(5)
        recv.wait(600)
        if snd.usage.exit_code or recv.usage.exit_code:
            raise RuntimeError(f"limit copy failed: {snd.log_tail()} {recv.log_tail()}")
        # Both halves stamp CLOCK_MONOTONIC (system-wide): the copy itself, without interpreter start-up.
        res.seconds = float(port_file.with_suffix(".end").read_text()) - float((work / "start").read_text())
        res.add_usage(group.usages())
        if out.stat().st_size != total_bytes:
            res.notes.append(f"received {out.stat().st_size} of {total_bytes} bytes")
        v = SeqVerifier(total_lines)
        v.feed_file(out)
        res.lines_lost, res.duplicates = v.lost, v.duplicates
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        res.error = str(exc)[-500:]
        res.seconds = None
    finally:
        group.stop_all(5)
        out.unlink(missing_ok=True)
    return res


def listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (from /proc/net/tcp: a probe connection would be
    the one connection socat accepts)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return True
    return False


def run_socat(files: list[str], total_lines: int, total_bytes: int, variant: str, work: Path,
              python: str, env: dict[str, str]) -> Result:
    """The page-cache copy with socat(1) receiving into the file: timed until the file holds every byte."""
    res = Result("limit-socat", variant, total_bytes, total_lines)
    socat = shutil.which("socat")
    if socat is None:
        res.error = "socat not installed"
        return res
    clear_dir(work)
    out = work / "received.log"
    port = free_port()
    group = ProcGroup()
    try:
        recv = group.start("socat", [socat, "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                                     f"CREATE:{out}"], work / "socat.log")
        wait_until(lambda: listening(port), 20, "socat listening", group)
        group.mark_start()
        snd = group.start("sender", [python, "-m", "bench.e2e.limit", "send", str(port), str(work / "start"),
                                     *files], work / "send.log", env=env)
        deadline = time.monotonic() + 600
        while True:  # tight poll: the copy of 1 GiB takes about half a second
            try:
                if out.stat().st_size >= total_bytes:
                    end = time.monotonic()
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("socat copy did not finish in 600 s")
            group.check_alive()
            time.sleep(0.001)
        snd.wait(60)
        recv.wait(60)
        res.seconds = end - float((work / "start").read_text())
        res.add_usage(group.usages())
        v = SeqVerifier(total_lines)
        v.feed_file(out)
        res.lines_lost, res.duplicates = v.lost, v.duplicates
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        res.error = str(exc)[-500:]
        res.seconds = None
    finally:
        group.stop_all(5)
        out.unlink(missing_ok=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e.limit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("port_file")
    r.add_argument("out")
    s = sub.add_parser("send")
    s.add_argument("port", type=int)
    s.add_argument("start_file")
    s.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "recv":
        receive(Path(a.port_file), Path(a.out))
    else:
        send(a.port, Path(a.start_file), a.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
