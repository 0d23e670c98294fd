"""Helpers for collector tests: YAML for real collector and agent processes on loopback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.collector.store_plugin import read_store, records
from tests.conftest import free_port, wait_for
from tests.wire.conftest import serving, wire_server  # noqa: F401 - shared fixtures (wire_server uses serving)

STORE = "tests.collector.store_plugin:SeqDirStore"


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def collector_config(tmp_path: Path, name: str, port: int | None = None, store: dict | None = None,
                     **collector: Any) -> tuple[Path, int, Path]:
    """(config path, port, store dir) for a collector writing SequenceFiles to its own directory."""
    port = port or free_port()
    store_dir = tmp_path / f"store-{name}"
    cfg = {
        "collector": {"name": name, "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / f"data-{name}"),
                      "log_level": "INFO", "shutdown_timeout": "20s", **collector},
        "store": {"type": STORE, "dir": str(store_dir), **(store or {})},
    }
    return write_yaml(tmp_path / f"collector-{name}.yaml", cfg), port, store_dir


def generator_command(n: int, width: int = 200, pause_every: int = 5000, pause: float = 0.05) -> list[str]:
    """A command printing ``n`` numbered records of ``width`` bytes, pausing now and then (a steady stream)."""
    script = (
        "import sys,time\n"
        f"pad='x'*({width}-11)\n"
        f"for i in range({n}):\n"
        "    sys.stdout.write(f'{i:09d} {pad}\\n')\n"
        f"    if i % {pause_every} == {pause_every - 1}:\n"
        "        sys.stdout.flush(); time.sleep(" + repr(pause) + ")\n"
        "sys.stdout.flush()\n"
    )
    return [sys.executable, "-c", script]


def agent_config(tmp_path: Path, name: str, sink: dict[str, Any], sources: dict[str, Any] | None = None,
                 channel: dict[str, Any] | None = None) -> Path:
    cfg = {
        "agent": {"name": name, "data_dir": str(tmp_path / f"agent-{name}"), "log_level": "INFO",
                  "shutdown_timeout": "3s"},
        "sources": sources or {},
        "channels": {"buf": channel or {"type": "memory", "capacity": "256MiB"}},
        "sinks": {"fwd": {"type": "collector", "channel": "buf", "timeout": "10s", "cooldown": "1s",
                          "retry_initial": "50ms", "retry_max": "1s", **sink}},
    }
    for src in cfg["sources"].values():
        src.setdefault("channels", ["buf"])
    return write_yaml(tmp_path / f"agent-{name}.yaml", cfg)


def exec_source(n: int, **kw: Any) -> dict[str, Any]:
    return {"type": "exec", "command": generator_command(n, **kw), "restart": "never", "chunk_size": "256KiB",
            "flush_interval": "100ms"}


def numbers(store_dirs: list[Path]) -> list[int]:
    """Record numbers found in the stores (with duplicates)."""
    out = []
    for d in store_dirs:
        for r in records(read_store(d)):
            out.append(int(r[:9]))
    return out


def wait_ready(proc, timeout: float = 20.0) -> None:
    wait_for(lambda: "ready:" in proc.log() or not proc.alive(), timeout, message="collector ready")
    assert proc.alive(), proc.log()


def wait_all(store_dirs: list[Path], n: int, timeout: float, procs=()) -> None:
    def done():
        return set(numbers(store_dirs)) >= set(range(n))

    try:
        wait_for(done, timeout, interval=0.3, message=f"all {n} records in the stores")
    except AssertionError:
        got = set(numbers(store_dirs))
        logs = "\n".join(p.log()[-3000:] for p in procs)
        raise AssertionError(f"{len(got)} of {n} records arrived; missing e.g. {sorted(set(range(n)) - got)[:5]}\n"
                             f"{logs}") from None


def stop_all(procs, timeout: float = 30.0) -> list[int]:
    """SIGTERM every process at once, then collect exit codes (shutdowns overlap instead of adding up)."""
    import signal

    for p in procs:
        p.signal(signal.SIGTERM)
    return [p.wait(timeout) for p in procs]


@pytest.fixture
def start_collector(logflume_proc):
    def start(cfg: Path, name: str = "collector", ready: bool = True):
        p = logflume_proc(["collector", "-c", cfg], name=name)
        if ready:
            wait_ready(p)
        return p

    return start


@pytest.fixture
def start_agent(logflume_proc):
    def start(cfg: Path, name: str = "agent", **kw):
        return logflume_proc(["agent", "-c", cfg], name=name, **kw)

    return start
