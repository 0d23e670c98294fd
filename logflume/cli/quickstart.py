"""`logflume quickstart`: a real pipeline on loopback with embedded defaults, no config to write.

It writes an agent config and a collector config under a data directory,
starts both as real processes (exactly what `logflume agent` and `logflume
collector` run in production), writes a demo access log, waits until every
line is durable in finished SequenceFiles, stops both gracefully and says
where everything is and how to look at it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logflume.errors import StartupError

COLLECTOR_YAML = """\
# Written by `logflume quickstart`. Run it yourself with: logflume collector -c {dir}/collector.yaml
collector:
  name: quickstart-collector
  listen: 127.0.0.1:{port}
  metrics: 127.0.0.1:{collector_metrics}
  data_dir: {dir}/collector
store:
  type: buffer
  primary:
    type: seqfile
    url: {dir}/store
    roll_interval: 2s
  secondary:
    dir: {dir}/collector/secondary
"""

AGENT_YAML = """\
# Written by `logflume quickstart`. Run it yourself with: logflume agent -c {dir}/agent.yaml
agent:
  name: quickstart-agent
  data_dir: {dir}/agent
  metrics: 127.0.0.1:{agent_metrics}
  shutdown_timeout: 20s
sources:
  demo:
    type: tail
    paths: ["{dir}/logs/*.log"]
    datatype: NginxAccess
    tags: {{env: quickstart}}
    start_at: beginning
    flush_interval: 200ms
    channels: [disk]
channels:
  disk:
    type: file
    capacity: 256MiB
sinks:
  upstream:
    type: collector
    channel: disk
    collectors: ["127.0.0.1:{port}"]
"""

HICC_YAML = """\
# Written by `logflume quickstart`. Run it yourself with: logflume hicc -c {dir}/hicc.yaml
hicc:
  listen: 127.0.0.1:{port}
  data_dir: {dir}/hicc
  agents: ["127.0.0.1:{agent_metrics}"]
  collectors: ["127.0.0.1:{collector_metrics}"]
  poll_interval: 1s
  refresh: 2s
  store: {dir}/store
  archive: {dir}/archive
  demux: {dir}/demux
"""

PATHS = ["/", "/index.html", "/api/orders", "/api/users/42", "/static/app.js", "/login", "/healthz"]
AGENTS = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "Go-http-client/2.0", "python-requests/2.32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo_line(i: int, rng: random.Random) -> str:
    ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    status = rng.choice([200, 200, 200, 200, 301, 404, 500])
    return (f'10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)} - - [{ts}] "GET {rng.choice(PATHS)}?req={i} HTTP/1.1" '
            f'{status} {rng.randint(80, 40000)} "-" "{rng.choice(AGENTS)}"\n')


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
    return subprocess.Popen([sys.executable, "-m", "logflume", *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0, what: str = "collector") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartupError(f"{what} exited with status {proc.returncode}; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise StartupError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; see {log}")


def _archive_and_demux(root: Path) -> None:
    """Give the console's Store and Records pages something to show."""
    for job in (["archive", "--input", f"{root}/store", "--output", f"{root}/archive"],
                ["demux", "--input", f"{root}/archive", "--output", f"{root}/demux", "--no-progress"]):
        subprocess.run([sys.executable, "-m", "logflume", *job], stdout=subprocess.DEVNULL, check=False, timeout=300)


def _stored_lines(store: Path) -> list[bytes]:
    from logflume.sequencefile import SequenceFileReader

    lines: list[bytes] = []
    for path in sorted(store.rglob("*.seq")):
        if path.name.startswith((".", "_")):
            continue
        with open(path, "rb") as f:
            for chunk in SequenceFileReader(f).iter_chunks():
                lines.extend(bytes(r) for r in chunk.records())
    return lines


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def run_quickstart(data_dir: str | None, seconds: float = 5.0, lines: int = 20000, keep_running: bool = False) -> int:
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="logflume-quickstart-"))
    root = root.resolve()
    for sub in ("logs", "agent", "collector", "store"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    port, hicc_port = _free_port(), _free_port()
    ports = {"port": port, "agent_metrics": _free_port(), "collector_metrics": _free_port()}
    (root / "collector.yaml").write_text(COLLECTOR_YAML.format(dir=root, **ports))
    (root / "agent.yaml").write_text(AGENT_YAML.format(dir=root, **ports))
    (root / "hicc.yaml").write_text(HICC_YAML.format(dir=root, **{**ports, "port": hicc_port}))
    print(f"logflume quickstart: data dir {root}")
    print(f"  collector on 127.0.0.1:{port}  config {root}/collector.yaml  log {root}/collector.log")
    print(f"  agent tailing {root}/logs/*.log  config {root}/agent.yaml  log {root}/agent.log")
    print(f"  console (HICC): http://127.0.0.1:{hicc_port}/  config {root}/hicc.yaml  log {root}/hicc.log")

    collector = _spawn(["collector", "-c", str(root / "collector.yaml")], root / "collector.log")
    hicc = _spawn(["hicc", "-c", str(root / "hicc.yaml")], root / "hicc.log")
    agent = None
    try:
        _wait_port(port, collector, root / "collector.log")
        _wait_port(hicc_port, hicc, root / "hicc.log", what="hicc")
        agent = _spawn(["agent", "-c", str(root / "agent.yaml")], root / "agent.log")
        rng = random.Random(42)
        written = []
        log_path = root / "logs" / "access.log"
        per_tick = max(1, int(lines / max(seconds / 0.1, 1)))
        with open(log_path, "a") as f:
            i = 0
            while i < lines:
                for _ in range(min(per_tick, lines - i)):
                    line = _demo_line(i, rng)
                    f.write(line)
                    written.append(line.encode())
                    i += 1
                f.flush()
                if agent.poll() is not None:
                    raise StartupError(f"agent exited with status {agent.returncode}; see {root}/agent.log")
                time.sleep(0.1)
        print(f"  wrote {len(written)} lines ({sum(map(len, written))} bytes) to {log_path}")
        deadline = time.monotonic() + 60
        stored: list[bytes] = []
        while time.monotonic() < deadline:
            stored = _stored_lines(root / "store")
            if len(stored) >= len(written):
                break
            time.sleep(0.5)
        if keep_running:
            _archive_and_demux(root)
            print(f"running: open http://127.0.0.1:{hicc_port}/ (Pipeline, Streams, Store and jobs, Records); "
                  "Ctrl-C stops everything", flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        if agent is not None:
            _stop(agent)
        _stop(collector)
        _stop(hicc)
    stored = _stored_lines(root / "store")
    missing = len(set(written) - set(stored))
    files = sorted(p for p in (root / "store").rglob("*.seq") if not p.name.startswith((".", "_")))
    print(f"  stored {len(stored)} lines in {len(files)} SequenceFile(s) under {root}/store; missing: {missing}")
    if files:
        print("look at them:")
        print(f"  logflume cat --records {files[0]} | head")
        print(f"  logflume cat --json {files[0]} | head -c 600")
        print(f"  logflume archive --input {root}/store --output {root}/archive")
    if missing:
        print(f"logflume quickstart: {missing} line(s) did not arrive; see {root}/agent.log and "
              f"{root}/collector.log", file=sys.stderr)
        return 1
    print("every line arrived. Stop here, or edit the configs and run them with "
          "`logflume agent -c` / `logflume collector -c` / `logflume hicc -c`; "
          "`logflume quickstart --keep-running` leaves the pipeline and the console up.")
    return 0


if __name__ == "__main__":
    sys.exit(run_quickstart(os.environ.get("LOGFLUME_QUICKSTART_DIR")))
