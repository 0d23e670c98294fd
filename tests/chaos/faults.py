"""The fault schedule (a pure function of the seed) and the faults themselves, including the rogue client.

Faults run one after another, with seeded gaps: SIGKILL and restart of an
agent or a collector, SIGSTOP/SIGCONT of a collector (a hung peer), stopping
sshd (the SFTP primary) and starting it again, a long sshd outage that fills
the collectors' small secondaries to their limit (TRY_LATER), and a rogue
client process sending garbage, oversized frames and half-open connections
to a collector.  Beside that schedule, :func:`twin_stops` hangs agent
``atwin`` (SIGSTOP, then SIGCONT) now and then, in a thread of its own.

``python -m tests.chaos.faults rogue --port P --seconds S --seed N`` is the
rogue client.
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.chaos.deployment import COLLECTORS, REPO, Deployment, die_with_parent

#: Agents the schedule kills (the same two for every seed since the suite began, so schedules stay comparable).
TARGET_AGENTS = ("afile", "amem")
KINDS = ("kill_agent", "kill_collector", "stop_collector", "sshd_restart", "fill_secondary", "rogue")
WEIGHTS = (3, 3, 2, 2, 1, 1)


@dataclass
class Fault:
    at: float  # seconds after the start of the fault phase
    kind: str
    target: str
    hold: float  # how long the fault lasts (down time, stop time, outage, rogue session)

    def describe(self) -> str:
        return f"t+{self.at:6.1f}s {self.kind}({self.target}) for {self.hold:.1f}s"


def schedule(seed: int, duration: float) -> list[Fault]:
    """Faults for ``duration`` seconds from ``seed``; the same seed always gives the same list."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = rng.uniform(2, 5)
    while t < duration:
        kind = rng.choices(KINDS, WEIGHTS)[0]
        if kind == "kill_agent":
            target, hold = rng.choice(TARGET_AGENTS), rng.uniform(0.2, 4)
        elif kind == "kill_collector":
            target, hold = rng.choice(COLLECTORS), rng.uniform(0.5, 5)
        elif kind == "stop_collector":
            target, hold = rng.choice(COLLECTORS), rng.uniform(2, 9)
        elif kind == "sshd_restart":
            target, hold = "sshd", rng.uniform(1, 8)
        elif kind == "fill_secondary":
            target, hold = "sshd", rng.uniform(15, 25)
        else:
            target, hold = rng.choice(COLLECTORS), rng.uniform(3, 8)
        if t + hold > duration:
            break
        faults.append(Fault(round(t, 2), kind, target, round(hold, 2)))
        t += hold + rng.uniform(0.5, 4)
    return faults


def twin_stops(seed: int, duration: float) -> list[Fault]:
    """SIGSTOPs of ``atwin`` (the twin case), long enough to span several of its files' rotations (every 1-3 s).

    A hung twin then sees one truncation where ``afile`` saw several, so the two number the
    same file's generations differently.  Seeded apart from :func:`schedule`.
    """
    rng = random.Random(f"twin:{seed}")
    out: list[Fault] = []
    t = rng.uniform(8, 15)
    while True:
        hold = rng.uniform(9, 12)
        if t + hold > duration:
            return out
        out.append(Fault(round(t, 2), "stop_agent", "atwin", round(hold, 2)))
        t += hold + rng.uniform(10, 20)


class Injector:
    """Applies faults to a running :class:`Deployment`; logs each one."""

    def __init__(self, dep: Deployment, seed: int, log) -> None:
        self.dep = dep
        self.seed = seed
        self.log = log
        self.done: list[Fault] = []

    def run(self, faults: list[Fault], started: float, should_stop) -> None:
        for fault in faults:
            while time.monotonic() - started < fault.at:
                if should_stop():
                    return
                time.sleep(0.05)
            self.log(f"fault {fault.describe()}")
            getattr(self, fault.kind)(fault)
            self.done.append(fault)

    def kill_agent(self, f: Fault) -> None:
        p = self.dep.procs[f.target]
        p.kill()
        time.sleep(f.hold)
        p.start()

    def kill_collector(self, f: Fault) -> None:
        p = self.dep.procs[f.target]
        p.kill()
        time.sleep(f.hold)
        p.start()
        self.dep.wait_listening(f.target)

    def stop_collector(self, f: Fault) -> None:
        p = self.dep.procs[f.target]
        p.send(signal.SIGSTOP)
        time.sleep(f.hold)
        p.send(signal.SIGCONT)

    def sshd_restart(self, f: Fault) -> None:
        self.dep.sshd.stop()
        time.sleep(f.hold)
        self.dep.sshd.start()

    stop_agent = stop_collector  # a hung agent (the twin case's atwin)
    fill_secondary = sshd_restart  # the same outage, long enough for the small secondaries to fill

    def rogue(self, f: Fault) -> None:
        port = self.dep.ports[f.target]
        cmd = [sys.executable, "-m", "tests.chaos.faults", "rogue", "--port", str(port),
               "--seconds", str(f.hold), "--seed", str(self.seed + len(self.done))]
        with open(self.dep.root / "rogue.log", "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            try:
                proc.wait(f.hold + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# -- the rogue client -------------------------------------------------------------------------

def _prefix(header_len: int, body_len: int) -> bytes:
    return struct.pack(">4sIQ", b"LFW1", header_len, body_len)


def _ping() -> bytes:
    """A valid handshake, so that what follows is judged by the post-handshake checks."""
    from logflume.wire.protocol import PROTOCOL_VERSION, Hello, encode_call
    return encode_call("ping", 1, hello=Hello(version=PROTOCOL_VERSION, token=None, sender="rogue"))


def rogue(port: int, seconds: float, seed: int) -> dict[str, int]:
    """Garbage, oversized frames and half-open connections against one collector port, for ``seconds``.

    Half the oversized and half-open attempts first pass the ping handshake, so the size checks and
    timeouts after it are exercised too.
    """
    rng = random.Random(seed)
    ping = _ping()
    held: list[socket.socket] = []
    counts = {"garbage": 0, "oversized": 0, "half_open": 0, "silent": 0, "refused": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        action = rng.choice(list(counts)[:4])
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            counts["refused"] += 1
            time.sleep(0.1)
            continue
        try:
            if action == "garbage":
                s.sendall(rng.randbytes(rng.randint(1, 4096)))
            elif action == "oversized":
                greet = ping if rng.random() < 0.5 else b""
                s.sendall(greet + _prefix(rng.choice([16 << 20, 0xFFFFFFFF, 1]),
                                          rng.choice([1 << 40, (1 << 63) - 1, 1 << 30])))
            elif action == "half_open":
                greet = ping if rng.random() < 0.5 else b""
                s.sendall(greet + _prefix(200, 1000) + rng.randbytes(rng.randint(0, 150)))  # then nothing
            counts[action] += 1
        except OSError:
            pass
        if action in ("half_open", "silent") and len(held) < 50:
            held.append(s)
        else:
            s.close()
        time.sleep(rng.uniform(0.01, 0.1))
    for s in held:
        s.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.faults")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rogue")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--seconds", type=float, default=5)
    r.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("schedule")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--duration", type=float, default=120)
    args = p.parse_args(argv)
    if args.cmd == "rogue":
        print("rogue", rogue(args.port, args.seconds, args.seed), flush=True)
    else:
        for f in schedule(args.seed, args.duration):
            print(f.describe())
        for f in twin_stops(args.seed, args.duration):
            print(f.describe(), "(twin thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
