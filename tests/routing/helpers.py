"""Real agent, collector and archive processes on loopback for the routing tests."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from logflume.sequencefile import SequenceFileReader
from tests.conftest import REPO, free_port, wait_for


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def collector_config(tmp: Path, name: str, port: int | None = None) -> tuple[Path, int]:
    """A collector with a buffer store whose primary is SequenceFiles under ``tmp/store/NAME``."""
    port = port or free_port()
    cfg = {"collector": {"name": name, "listen": f"127.0.0.1:{port}", "data_dir": str(tmp / f"cdata-{name}"),
                         "shutdown_timeout": "20s"},
           "store": {"type": "buffer", "primary": {"type": "seqfile", "url": str(tmp / "store" / name),
                                                   "roll_interval": "1s"},
                     "secondary": {"dir": str(tmp / f"cdata-{name}" / "secondary")}}}
    return write_yaml(tmp / f"collector-{name}.yaml", cfg), port


def tail_agent_config(tmp: Path, log: Path, metrics: int, sinks: dict, **sections: dict) -> Path:
    """``tmp/agent.yaml``: an agent tailing ``log`` (4 KiB chunks) into a file channel ``disk`` that ``sinks``
    take from; ``sections`` adds top-level sections (``sinkgroups``)."""
    return write_yaml(tmp / "agent.yaml", {
        "agent": {"name": "a1", "data_dir": str(tmp / "adata"), "metrics": f"127.0.0.1:{metrics}",
                  "shutdown_timeout": "10s"},
        "sources": {"app": {"type": "tail", "paths": [str(log)], "chunk_size": "4KiB", "flush_interval": "100ms",
                            "channels": ["disk"]}},
        "channels": {"disk": {"type": "file"}},
        "sinks": sinks,
        **sections,
    })


def collector_sink(port: int, channel: str = "disk") -> dict:
    return {"type": "collector", "channel": channel, "collectors": [f"127.0.0.1:{port}"], "timeout": "5s",
            "cooldown": "500ms", "retry_initial": "50ms", "retry_max": "500ms"}


def wait_ready(proc, timeout: float = 30.0) -> None:
    wait_for(lambda: "ready:" in proc.log() or not proc.alive(), timeout, message="collector ready")
    assert proc.alive(), proc.log()


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as resp:
        return json.loads(resp.read())


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of the agent's /metrics, 0 when absent or the endpoint is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def drained(port: int, files: list[Path]) -> bool:
    """Every byte of ``files`` (as long as they are now) committed, and every channel empty (per /status)."""
    try:
        doc = status(port)
    except OSError:
        return False
    acked = {s["stream"]: s.get("bytes_acked") for s in doc.get("streams", [])}
    return (all(acked.get(str(f)) == f.stat().st_size for f in files)
            and all(c["fill_chunks"] == 0 for c in doc["channels"]))


def read_chunks(root: Path) -> list:
    """Every chunk in the closed SequenceFiles under ``root`` (files being written start with '_' or '.')."""
    out = []
    for path in sorted(root.rglob("*.seq")):
        if any(part.startswith((".", "_")) for part in path.relative_to(root).parts):
            continue
        with open(path, "rb") as f:
            out.extend(SequenceFileReader(f).iter_chunks())
    return out


def archive(store: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "logflume", "archive", "--input", str(store), "--output", str(out),
                           "--no-progress", "--json"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
