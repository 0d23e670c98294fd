"""Agent reload (SIGHUP and ``logflume reload``) against real agent and collector processes.

The exact-delivery test: a live writer appends numbered lines to two files
while the agent is reloaded 20 times (sources added and removed, the sink's
collectors changed, the file channel's capacity changed), and a bad config
is refused twice along the way.  After a drain, ``logflume archive`` runs on
both collectors' stores; every stream must then be the file's bytes exactly
once (contiguous, no overlap, no gap).  Duplicates before archive are the
in-flight window and are only reported.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from logflume.sequencefile import SequenceFileReader
from tests.conftest import REPO, free_port, wait_for

pytestmark = pytest.mark.timeout(240)


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _collector(tmp: Path, name: str) -> tuple[Path, int]:
    port = free_port()
    cfg = {"collector": {"name": name, "listen": f"127.0.0.1:{port}", "data_dir": str(tmp / f"cdata-{name}"),
                         "shutdown_timeout": "20s"},
           "store": {"type": "buffer", "primary": {"type": "seqfile", "url": str(tmp / "store" / name)},
                     "secondary": {"dir": str(tmp / f"cdata-{name}" / "secondary")}}}
    return _write(tmp / f"collector-{name}.yaml", cfg), port


def _agent_config(tmp: Path, metrics: int, *, sources: list[str], collectors: list[int], capacity: str,
                  extra_channel: dict | None = None) -> dict:
    cfg = {
        "agent": {"name": "a1", "data_dir": str(tmp / "adata"), "metrics": f"127.0.0.1:{metrics}",
                  "shutdown_timeout": "10s"},
        "sources": {s: {"type": "tail", "paths": [str(tmp / "logs" / f"{s}.log")], "datatype": "Num",
                        "flush_interval": "100ms", "channels": ["disk"]} for s in sources},
        "channels": {"disk": {"type": "file", "capacity": capacity}},
        "sinks": {"up": {"type": "collector", "channel": "disk", "collectors": [f"127.0.0.1:{p}" for p in collectors],
                         "timeout": "10s", "cooldown": "500ms", "retry_initial": "50ms", "retry_max": "1s"}},
    }
    if extra_channel:
        cfg["channels"].update(extra_channel["channels"])
        cfg["sources"].update(extra_channel["sources"])
        cfg["sinks"].update(extra_channel["sinks"])
    return cfg


def _metric(port: int, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{want}}}")


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as resp:
        return json.loads(resp.read())


def _reload_outcome(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "reload.json").read_text())
    except (OSError, ValueError):
        return None


def _sighup(agent, data_dir: Path) -> dict:
    before = (_reload_outcome(data_dir) or {}).get("generation", 0)
    agent.signal(signal.SIGHUP)
    return wait_for(lambda: (o := _reload_outcome(data_dir)) and o["generation"] > before and o, 60,
                    message="the agent's reload verdict")


def _cli_reload(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logflume", "reload", "-c", str(cfg), "--wait", "60"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


class Writer(threading.Thread):
    """Appends numbered lines to each file, a few hundred a second, until stopped."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.stop = threading.Event()
        self.lines = 0

    def run(self) -> None:
        handles = [open(f, "ab") for f in self.files]  # noqa: SIM115 - closed below
        try:
            while not self.stop.is_set():
                for h in handles:
                    h.write(b"".join(b"%s %09d %s\n" % (Path(h.name).stem.encode(), self.lines + i, b"x" * 60)
                                     for i in range(20)))
                    h.flush()
                self.lines += 20
                time.sleep(0.02)
        finally:
            for h in handles:
                h.close()


def _streams(root: Path) -> dict[tuple[str, str, str], list[tuple[int, bytes]]]:
    out: dict[tuple[str, str, str], list[tuple[int, bytes]]] = {}
    for path in sorted(root.rglob("*.seq")):
        if any(part.startswith((".", "_")) for part in path.relative_to(root).parts):
            continue
        with open(path, "rb") as f:
            for c in SequenceFileReader(f).iter_chunks():
                out.setdefault((c.source, c.stream, c.epoch), []).append((c.seq_id - len(c.data), bytes(c.data)))
    return out


def test_twenty_reloads_under_a_live_writer_deliver_every_line_exactly_once(tmp_path, logflume_proc):
    (tmp_path / "logs").mkdir()
    files = [tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"]
    for f in files:
        f.touch()
    (c1_cfg, p1), (c2_cfg, p2) = _collector(tmp_path, "c1"), _collector(tmp_path, "c2")
    metrics = free_port()
    cfg = tmp_path / "agent.yaml"
    _write(cfg, _agent_config(tmp_path, metrics, sources=["a", "b"], collectors=[p1], capacity="64MiB"))
    collectors = [logflume_proc(["collector", "-c", c], name=n) for c, n in ((c1_cfg, "c1"), (c2_cfg, "c2"))]
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    data_dir = tmp_path / "adata"
    for p in collectors:
        wait_for(lambda p=p: "ready:" in p.log() or not p.alive(), 60, message="collector ready")
        assert p.alive(), p.log()
    wait_for(lambda: (data_dir / "agent.pid").exists() or not agent.alive(), 60, message="agent started")
    assert agent.alive(), agent.log()

    writer = Writer(files)
    writer.start()
    sent = lambda: _metric(metrics, "logflume_bytes_out_total", kind="sink", component="up")  # noqa: E731
    wait_for(lambda: sent() > 0, 60, message="first deliveries")
    t0 = time.monotonic()
    targets = [[p1], [p2], [p1, p2]]
    kinds = []
    for i in range(1, 21):
        sources = ["a"] if i % 3 == 1 else ["a", "b"]
        capacity = "48MiB" if (i // 4) % 2 else "64MiB"
        _write(cfg, _agent_config(tmp_path, metrics, sources=sources, collectors=targets[i % 3], capacity=capacity))
        if i % 4 == 0:
            done = _cli_reload(cfg)
            assert done.returncode == 0, done.stderr
            assert "logflume reload: done:" in done.stdout
            outcome = _reload_outcome(data_dir)
        else:
            outcome = _sighup(agent, data_dir)
        assert outcome["ok"], outcome
        kinds.append(outcome["changes"])
        if i == 10:
            # a bad config: refused with its key path, by SIGHUP and by the CLI; the old pipeline keeps delivering
            bad = _agent_config(tmp_path, metrics, sources=sources, collectors=targets[i % 3], capacity=capacity)
            bad["channels"]["disk"]["capcity"] = bad["channels"]["disk"].pop("capacity")
            _write(cfg, bad)
            refused = _sighup(agent, data_dir)
            assert not refused["ok"] and "channels.disk.capcity" in refused["error"], refused
            assert "reload refused" in agent.log() and "channels.disk.capcity" in agent.log()
            done = _cli_reload(cfg)
            assert done.returncode == 2 and "channels.disk.capcity" in done.stderr, done.stderr
            before = sent()
            wait_for(lambda before=before: sent() > before, 60, message="delivery after a refused reload")
    # every kind of change happened
    assert any("stop sources b" in k and "start sources" not in k for k in kinds), kinds
    assert any(k.endswith("start sources b") for k in kinds), kinds
    assert any("start channels disk" in k for k in kinds), kinds
    assert any(k == "stop sinks up; start sinks up" for k in kinds), kinds
    reload_seconds = time.monotonic() - t0

    # final config: both sources, both collectors; then stop writing and drain
    _write(cfg, _agent_config(tmp_path, metrics, sources=["a", "b"], collectors=[p1, p2], capacity="64MiB"))
    assert _sighup(agent, data_dir)["ok"]
    writer.stop.set()
    writer.join(10)
    sizes = {str(f): f.stat().st_size for f in files}

    def drained() -> bool:
        doc = _status(metrics)
        acked = {s["stream"]: s["lag_bytes"] for s in doc["streams"]}
        return (all(acked.get(f) == 0 for f in sizes) and all(c["fill_chunks"] == 0 for c in doc["channels"]))

    wait_for(drained, 90, interval=0.5, message="sources caught up and the channel empty")
    assert agent.terminate(60) == 0
    for p in collectors:
        assert p.terminate(60) == 0
    raw = _streams(tmp_path / "store")
    archive = tmp_path / "archive"
    done = subprocess.run([sys.executable, "-m", "logflume", "archive", "--input", str(tmp_path / "store"),
                           "--output", str(archive), "--no-progress", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    archived = _streams(archive)

    by_stream = {stream: chunks for (_src, stream, _epoch), chunks in archived.items()}
    assert len(archived) == len(by_stream) == 2, sorted(archived)  # one epoch per file: no restart of numbering
    for f in files:
        chunks = sorted(by_stream[str(f)])
        end = 0
        for start, data in chunks:
            assert start == end, f"{f.name}: {'gap' if start > end else 'overlap'} at {end}..{start}"
            end = start + len(data)
        assert b"".join(d for _s, d in chunks) == f.read_bytes(), f"{f.name}: archived bytes differ from the file"
    dup_bytes = sum(len(d) for chunks in raw.values() for _s, d in chunks) - sum(sizes.values())
    print(f"\nreload test: 20 reloads in {reload_seconds:.1f}s, {writer.lines} lines per file, "
          f"{sum(sizes.values())} bytes; duplicates before archive: {dup_bytes} bytes")


def _lines(root: Path) -> set[bytes]:
    return {line for chunks in _streams(root).values() for _s, data in chunks for line in data.splitlines()}


def test_removed_file_channel_kept_unchanged_channel_keeps_data_failed_start_reported(tmp_path, logflume_proc):
    """A removed file channel that cannot drain stays on disk (warning) and delivers once configured again;
    an unchanged memory channel keeps what it holds through reloads; a source that cannot start is
    reported and the rest of the reload applies."""
    (tmp_path / "logs").mkdir()
    a, b = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"
    a.write_bytes(b"".join(b"a %06d\n" % i for i in range(3000)))
    b.write_bytes(b"".join(b"b %06d\n" % i for i in range(3000)))
    c1_cfg, live = _collector(tmp_path, "c1")
    dead, metrics, busy = free_port(), free_port(), free_port()
    sink = {"timeout": "2s", "cooldown": "200ms", "retry_initial": "50ms", "retry_max": "300ms", "batch_chunks": 2}

    def config(*, a_to: int, with_b: bool, b_to: int = 0, syslog: bool = False, a_flush: str = "100ms") -> dict:
        cfg = {
            "agent": {"name": "a1", "data_dir": str(tmp_path / "adata"), "metrics": f"127.0.0.1:{metrics}",
                      "shutdown_timeout": "2s"},
            "sources": {"a": {"type": "tail", "paths": [str(a)], "flush_interval": a_flush, "chunk_size": "4KiB",
                              "channels": ["mem"]}},
            "channels": {"mem": {"type": "memory", "capacity": "16MiB"}},
            "sinks": {"up": {"type": "collector", "channel": "mem", "collectors": [f"127.0.0.1:{a_to}"], **sink}},
        }
        if with_b:
            cfg["sources"]["b"] = {"type": "tail", "paths": [str(b)], "flush_interval": "100ms",
                                   "chunk_size": "4KiB", "channels": ["disk2"]}
            cfg["channels"]["disk2"] = {"type": "file", "capacity": "16MiB"}
            cfg["sinks"]["up2"] = {"type": "collector", "channel": "disk2", "collectors": [f"127.0.0.1:{b_to}"],
                                   **sink}
        if syslog:
            cfg["sources"]["Sys"] = {"type": "syslog", "tcp": f"127.0.0.1:{busy}", "channels": ["mem"]}
        return cfg

    cfg = _write(tmp_path / "agent.yaml", config(a_to=dead, with_b=True, b_to=dead))
    collector = logflume_proc(["collector", "-c", c1_cfg], name="c1")
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    data_dir = tmp_path / "adata"
    wait_for(lambda: (data_dir / "agent.pid").exists() or not agent.alive(), 60, message="agent started")
    assert agent.alive(), agent.log()

    def fill(name: str) -> float:
        return next(c["fill_chunks"] for c in _status(metrics)["channels"] if c["name"] == name)

    # both files read, nothing delivered (both sinks point at a closed port)
    wait_for(lambda: all(s["lag_bytes"] == 0 for s in _status(metrics)["streams"])
             and len(_status(metrics)["streams"]) == 2 and fill("mem") > 0 and fill("disk2") > 0, 60,
             interval=0.5, message="both files read into their channels")
    time.sleep(1.5)  # the status document is cached for a moment: read the settled value
    held = fill("mem")

    # remove b, its file channel and its sink: not drained within shutdown_timeout, kept on disk
    _write(cfg, config(a_to=dead, with_b=False))
    outcome = _sighup(agent, data_dir)
    assert outcome["ok"] and "stop channels disk2" in outcome["changes"], outcome
    assert "removed channel disk2 was not drained" in agent.log() and "stay on disk" in agent.log()
    assert "channels mem" not in outcome["changes"] and fill("mem") == held  # untouched

    # a source that cannot start (its port is taken; it starts before "a"): reported, the rest applies
    # (the replaced source "a" runs again and reads what is appended), the agent runs on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        _write(cfg, config(a_to=dead, with_b=False, syslog=True, a_flush="150ms"))
        outcome = _sighup(agent, data_dir)
        assert not outcome["ok"] and "sources.Sys" in outcome["error"], outcome
        assert "start sources Sys,a" in outcome["changes"], outcome
        assert agent.alive() and fill("mem") == held
    with open(a, "ab") as f:
        f.write(b"".join(b"a %06d\n" % i for i in range(3000, 4000)))
    wait_for(lambda: fill("mem") > held, 60, interval=0.5, message="lines appended after the failed start read")

    # the memory channel's sink moves to the live collector: everything it held is delivered;
    # b comes back with its old channel directory: what stayed on disk is delivered too
    _write(cfg, config(a_to=live, with_b=True, b_to=live))
    outcome = _sighup(agent, data_dir)
    assert outcome["ok"] and "channels mem" not in outcome["changes"], outcome
    wait_for(lambda: fill("mem") == 0 and fill("disk2") == 0, 60, interval=0.5, message="both channels drained")
    assert agent.terminate(60) == 0
    assert collector.terminate(60) == 0
    got = _lines(tmp_path / "store")
    assert got == set(a.read_bytes().splitlines()) | set(b.read_bytes().splitlines())
