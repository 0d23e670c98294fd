"""The established C shippers, run side by side with logflume: rsyslog and syslog-ng.

Each runs as two instances on loopback, as logflume runs as an agent and a collector: a sender
that tails the input (rsyslog imfile, syslog-ng file()/wildcard-file()) and forwards it over TCP,
and a receiver that writes what arrives into one file.  Both are started unprivileged-style with
their own config, pid and state files in a scratch directory; the configs (throughput-tuned, with
the tuning written down) are the templates in ``bench/configs/``.  rsyslog comes from its Debian
package; syslog-ng, whose Debian package conflicts with rsyslog, is unpacked into ``bench/peers/``
by ``bench/setup_peers.sh``.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from bench.e2e.measure import NewlineCounter, ProcGroup, Result, SeqVerifier, wait_until
from bench.e2e.variants import Variant, clear_dir

BENCH = Path(__file__).resolve().parent.parent
CONFIGS = BENCH / "configs"
SYSLOG_NG_ROOT = BENCH / "peers" / "syslog-ng"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def render(template: str, values: dict[str, str]) -> str:
    text = (CONFIGS / template).read_text()
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", v)
    if "@@" in text:
        raise ValueError(f"{template}: placeholder left unfilled: {text[text.index('@@'):][:40]}")
    return text


@dataclass
class Peer:
    """How to run one shipper: its binary, environment and config rendering."""

    name: str

    def available(self) -> str | None:
        """None when runnable, else why not (the report says so instead of a figure)."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def sender_cmd(self, work: Path, variant: Variant, watch: Path, port: int) -> list[str]:
        raise NotImplementedError

    def receiver_cmd(self, work: Path, port: int, out: Path) -> list[str]:
        raise NotImplementedError

    def relay_cmd(self, work: Path, in_port: int, port: int) -> list[str]:
        """A syslog server on ``in_port`` (TCP) forwarding to the receiver on ``port``."""
        raise NotImplementedError


class Rsyslog(Peer):
    def __init__(self) -> None:
        super().__init__("rsyslog")
        self.binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"

    def available(self) -> str | None:
        return None if os.access(self.binary, os.X_OK) else "rsyslogd not installed (run bench/setup_peers.sh)"

    def _cmd(self, work: Path, conf_text: str, role: str) -> list[str]:
        d = work / role
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "rsyslog.conf"
        conf.write_text(conf_text)
        return [self.binary, "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")]

    def sender_cmd(self, work: Path, variant: Variant, watch: Path, port: int) -> list[str]:
        d = work / "sender"
        d.mkdir(parents=True, exist_ok=True)
        text = render("rsyslog-sender.conf", {"WORK": str(d), "FILES": str(watch / variant.pattern), "PORT": str(port)})
        return self._cmd(work, text, "sender")

    def receiver_cmd(self, work: Path, port: int, out: Path) -> list[str]:
        d = work / "receiver"
        d.mkdir(parents=True, exist_ok=True)
        text = render("rsyslog-receiver.conf", {"WORK": str(d), "PORT": str(port), "OUT": str(out)})
        return self._cmd(work, text, "receiver")

    def relay_cmd(self, work: Path, in_port: int, port: int) -> list[str]:
        d = work / "sender"
        d.mkdir(parents=True, exist_ok=True)
        text = render("rsyslog-relay.conf", {"WORK": str(d), "IN_PORT": str(in_port), "PORT": str(port)})
        return self._cmd(work, text, "sender")


class SyslogNg(Peer):
    def __init__(self) -> None:
        super().__init__("syslog-ng")
        self.binary = str(SYSLOG_NG_ROOT / "usr" / "sbin" / "syslog-ng")
        self.modules = str(SYSLOG_NG_ROOT / "usr" / "lib" / "syslog-ng" / "3.38")

    def available(self) -> str | None:
        if not os.access(self.binary, os.X_OK):
            return "syslog-ng not unpacked (run bench/setup_peers.sh)"
        return None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [SYSLOG_NG_ROOT / "usr" / "lib" / "syslog-ng", SYSLOG_NG_ROOT / "usr" / "lib" / "x86_64-linux-gnu",
                SYSLOG_NG_ROOT / "lib" / "x86_64-linux-gnu"]
        env["LD_LIBRARY_PATH"] = ":".join([str(p) for p in libs] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        return env

    def _cmd(self, work: Path, conf_text: str, role: str) -> list[str]:
        d = work / role
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "syslog-ng.conf"
        conf.write_text(conf_text)
        return [self.binary, "-F", "--no-caps", "-f", str(conf), "-p", str(d / "syslog-ng.pid"),
                "-R", str(d / "syslog-ng.persist"), "-c", str(d / "syslog-ng.ctl"),
                f"--module-path={self.modules}"]

    def sender_cmd(self, work: Path, variant: Variant, watch: Path, port: int) -> list[str]:
        common = "flags(no-parse) follow-freq(0.1) log-fetch-limit(10000) log-iw-size(100000)"
        if "*" in variant.pattern:
            source = (f'wildcard-file(base-dir("{watch}") filename-pattern("{variant.pattern}") recursive(no) '
                      f"max-files(100) {common});")
        else:
            source = f'file("{watch / variant.pattern}" {common});'
        text = render("syslog-ng-sender.conf", {"SOURCE": source, "PORT": str(port)})
        return self._cmd(work, text, "sender")

    def receiver_cmd(self, work: Path, port: int, out: Path) -> list[str]:
        return self._cmd(work, render("syslog-ng-receiver.conf", {"PORT": str(port), "OUT": str(out)}), "receiver")

    def relay_cmd(self, work: Path, in_port: int, port: int) -> list[str]:
        return self._cmd(work, render("syslog-ng-relay.conf", {"IN_PORT": str(in_port), "PORT": str(port)}), "sender")


PEERS: dict[str, type[Peer]] = {"rsyslog": Rsyslog, "syslog-ng": SyslogNg}


def run_peer(peer: Peer, variant: Variant, work: Path, python: str, py_env: dict[str, str],
             stall_timeout: float = 20.0, max_seconds: float = 600.0) -> Result:
    """Sender tails the variant's input, forwards to the receiver; timed until the last line is written.

    The clock starts when the input appears; it stops at the last growth of the receiver's output
    once every line arrived, or when the output has not grown for ``stall_timeout`` (lines lost).
    """
    res = Result(peer.name, variant.name, variant.dataset.total_bytes, variant.dataset.total_lines)
    why = peer.available()
    if why:
        res.error = why
        return res
    clear_dir(work)
    watch = work / "watch"
    watch.mkdir()
    out = work / "received.log"
    port = free_port()
    group = ProcGroup()
    writer = None
    try:
        group.start(f"{peer.name}-receiver", peer.receiver_cmd(work, port, out), work / "receiver.out",
                    env=peer.env())
        wait_until(lambda: port_open(port), 20, f"{peer.name} receiver listening on {port}", group)
        group.start(f"{peer.name}-sender", peer.sender_cmd(work, variant, watch, port), work / "sender.out",
                    env=peer.env())
        time.sleep(1.0)  # let the sender set up its watches and connect
        group.check_alive()
        counter = NewlineCounter(lambda: [out])
        group.mark_start()
        t0, writer = variant.feed(watch, python, py_env, work)
        total = variant.dataset.total_lines
        deadline = t0 + max_seconds
        while counter.poll() < total:
            group.sample()
            group.check_alive()
            now = time.monotonic()
            idle = now - counter.last_growth
            writer_done = writer is None or not writer.alive()
            if writer_done and idle > stall_timeout and now - t0 > stall_timeout:
                res.notes.append(f"output stalled at {counter.lines} of {total} lines for {stall_timeout:.0f}s")
                break
            if now > deadline:
                res.notes.append(f"gave up after {max_seconds:.0f}s at {counter.lines} of {total} lines")
                break
            time.sleep(0.05)
        res.seconds = max(counter.last_growth - t0, 1e-9)
        if writer is not None:
            writer.wait(120)
        group.stop_all(30)
        res.add_usage(group.usages())
        v = SeqVerifier(total)
        if out.exists():
            v.feed_file(out)
        res.lines_lost, res.duplicates = v.lost, v.duplicates
        if v.foreign:
            res.notes.append(f"{v.foreign} lines with sequence numbers outside the data set")
        if v.lost:
            res.notes.append(f"first missing sequence numbers: {v.first_missing()}")
    except (RuntimeError, TimeoutError, OSError) as exc:
        res.error = str(exc)[-500:]
        res.seconds = None
    finally:
        if writer is not None:
            writer.stop(5)
        group.stop_all(10)
        shutil.rmtree(work, ignore_errors=True)
    return res
