"""Collector reload (SIGHUP and ``logflume reload``) under a delivering agent, all real processes.

The listener keeps its socket through every reload, so the agent never meets a
refused connection; a token revoked by a reload is refused at once (open
connections re-authenticate); restoring it resumes delivery and no line is lost.
"""

from __future__ import annotations

import json
import signal
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

T1 = "token-one-0123456789abcdef0123456789"
T2 = "token-two-0123456789abcdef0123456789"
T3 = "token-three-0123456789abcdef012345678"


def _collector_cfg(tmp: Path, port: int, *, a1_token: str = T1, extra: dict | None = None,
                   roll: str = "5m", pending: str = "512MiB", level: str = "INFO") -> dict:
    return {
        "collector": {"name": "c", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp / "cdata"),
                      "shutdown_timeout": "10s", "max_pending_bytes": pending, "log_level": level,
                      "identities": {"a1": {"token": a1_token, "sources": ["a1"]}, **(extra or {})}},
        "store": {"type": "seqfile", "url": str(tmp / "store"), "roll_interval": roll},
    }


def _sent(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("logflume_bytes_out_total{") and 'kind="sink"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _verdict(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "reload.json").read_text())
    except (OSError, ValueError):
        return None


def test_collector_reloads_keep_the_listener_and_revoke_tokens(tmp_path, logflume_proc):
    port, metrics = free_port(), free_port()
    ccfg = tmp_path / "collector.yaml"
    ccfg.write_text(yaml.safe_dump(_collector_cfg(tmp_path, port)))
    log = tmp_path / "a.log"
    log.touch()
    acfg = tmp_path / "agent.yaml"
    acfg.write_text(yaml.safe_dump({
        "agent": {"name": "a1", "data_dir": str(tmp_path / "adata"), "metrics": f"127.0.0.1:{metrics}",
                  "shutdown_timeout": "10s"},
        "sources": {"t": {"type": "tail", "paths": [str(log)], "flush_interval": "100ms", "channels": ["disk"]}},
        "channels": {"disk": {"type": "file", "capacity": "64MiB"}},
        "sinks": {"up": {"type": "collector", "channel": "disk", "collectors": [f"127.0.0.1:{port}"],
                         "token": T1, "timeout": "10s", "cooldown": "300ms", "retry_initial": "50ms",
                         "retry_max": "500ms"}},
    }))
    collector = logflume_proc(["collector", "-c", ccfg], name="collector")
    cdata = tmp_path / "cdata"
    wait_for(lambda: (cdata / "collector.pid").exists() or not collector.alive(), 60, message="collector ready")
    assert collector.alive(), collector.log()
    agent = logflume_proc(["agent", "-c", acfg], name="agent")
    wait_for(lambda: (tmp_path / "adata" / "agent.pid").exists() or not agent.alive(), 60, message="agent ready")

    stop = threading.Event()
    written = [0]

    def write() -> None:
        with open(log, "ab") as f:
            while not stop.is_set():
                f.write(b"".join(b"line %08d\n" % (written[0] + i) for i in range(10)))
                f.flush()
                written[0] += 10
                time.sleep(0.01)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_for(lambda: _sent(metrics) > 0, 60, message="first deliveries")

    def reload(cfg: dict, via_cli: bool) -> dict:
        ccfg.write_text(yaml.safe_dump(cfg))
        before = (_verdict(cdata) or {}).get("generation", 0)
        if via_cli:
            done = subprocess.run([sys.executable, "-m", "logflume", "reload", "-c", str(ccfg)], cwd=REPO,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            if "store" in (_verdict(cdata) or {}).get("needs_restart", []):
                assert "store changed and needs a restart" in done.stderr
        else:
            collector.signal(signal.SIGHUP)
        return wait_for(lambda: (v := _verdict(cdata)) and v["generation"] > before and v, 60,
                        message="the collector's verdict")

    changes = [
        _collector_cfg(tmp_path, port, extra={"a2": {"token": T2, "sources": ["a2"]}}),
        _collector_cfg(tmp_path, port, pending="256MiB"),
        _collector_cfg(tmp_path, port, level="DEBUG"),
        _collector_cfg(tmp_path, port, roll="1m"),
        _collector_cfg(tmp_path, port),
        _collector_cfg(tmp_path, port, extra={"a2": {"token": T2, "sources": ["a2"]}}),
    ]
    for i, cfg in enumerate(changes):
        verdict = reload(cfg, via_cli=i % 2 == 1)
        assert verdict["ok"], verdict
        if i == 3:
            assert verdict["needs_restart"] == ["store"], verdict
        before = _sent(metrics)
        wait_for(lambda before=before: _sent(metrics) > before, 60, message=f"delivery after reload {i + 1}")
    assert "applied collector.identities" in collector.log()
    assert "max_pending_bytes" in collector.log() and "log_level" in collector.log()
    assert "refused" not in agent.log().lower(), agent.log()[-3000:]

    # revoke a1's token: open connections re-authenticate and are refused
    verdict = reload(_collector_cfg(tmp_path, port, a1_token=T3), via_cli=False)
    assert verdict["ok"] and "re-authenticate" in verdict["changes"], verdict
    wait_for(lambda: "unknown token" in agent.log(), 60, message="the agent refused with its revoked token")
    stalled = _sent(metrics)
    time.sleep(2)
    assert _sent(metrics) == stalled, "a revoked token still delivers"

    # give it back: delivery resumes, nothing was lost
    reload(_collector_cfg(tmp_path, port), via_cli=True)
    wait_for(lambda: _sent(metrics) > stalled, 60, message="delivery after the token came back")
    stop.set()
    writer.join(10)
    total = written[0]
    size = log.stat().st_size
    wait_for(lambda: _sent(metrics) >= size, 90, message="every byte acknowledged")
    assert agent.terminate(60) == 0
    assert collector.terminate(60) == 0
    seen = set()
    for path in sorted((tmp_path / "store").rglob("*.seq")):
        if path.name.startswith((".", "_")):
            continue
        with open(path, "rb") as f:
            for c in SequenceFileReader(f).iter_chunks():
                seen.update(int(line.split()[1]) for line in bytes(c.data).splitlines())
    assert seen == set(range(total)), f"missing {sorted(set(range(total)) - seen)[:5]}"
