"""``logflume tap`` against real agent and collector processes: what it shows, its filters, its rate limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from logflume.tap import stream
from tests.conftest import REPO, free_port, wait_for

pytestmark = pytest.mark.timeout(180)

#: The daemons' tap_token (both have the same one here).
TOKEN = "f3b1c0de" * 5


class Writer(threading.Thread):
    """Appends a numbered line to each file every few milliseconds until stopped."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.files, self.stop, self.n = files, threading.Event(), 0

    def run(self) -> None:
        while not self.stop.is_set():
            for f in self.files:
                with open(f, "ab") as h:
                    h.write(b"%s line %06d\n" % (f.stem.encode(), self.n))
            self.n += 1
            time.sleep(0.005)


def _agent_cfg(tmp: Path, metrics: int, sink: dict, flush: str = "100ms") -> dict:
    return {
        "agent": {"name": "tapped", "data_dir": str(tmp / "adata"), "metrics": f"127.0.0.1:{metrics}",
                  "tap_token": TOKEN, "shutdown_timeout": "5s"},
        "sources": {"logs": {"type": "tail", "flush_interval": flush, "channels": ["mem"],
                             "paths": [{"glob": str(tmp / "logs" / "a.log"), "datatype": "Alpha",
                                        "tags": {"team": "x"}},
                                       {"glob": str(tmp / "logs" / "b.log"), "datatype": "Beta"}]}},
        "channels": {"mem": {"type": "memory", "capacity": "16MiB"}},
        "sinks": {"out": {"channel": "mem", **sink}},
    }


@pytest.fixture
def running(tmp_path, logflume_proc):
    """A real collector and an agent tailing two files (a.log: Alpha, tag team=x; b.log: Beta) into it."""
    (tmp_path / "logs").mkdir()
    files = [tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"]
    cport, cmetrics, ametrics = free_port(), free_port(), free_port()
    ccfg = tmp_path / "collector.yaml"
    ccfg.write_text(yaml.safe_dump({
        "collector": {"name": "c", "listen": f"127.0.0.1:{cport}", "metrics": f"127.0.0.1:{cmetrics}",
                      "tap_token": TOKEN, "data_dir": str(tmp_path / "cdata"), "shutdown_timeout": "5s"},
        "store": {"type": "seqfile", "url": str(tmp_path / "store")}}))
    acfg = tmp_path / "agent.yaml"
    acfg.write_text(yaml.safe_dump(_agent_cfg(tmp_path, ametrics, {
        "type": "collector", "collectors": [f"127.0.0.1:{cport}"], "cooldown": "500ms"})))
    collector = logflume_proc(["collector", "-c", ccfg], name="collector")
    agent = logflume_proc(["agent", "-c", acfg], name="agent")
    wait_for(lambda: (tmp_path / "cdata" / "collector.pid").exists() or not collector.alive(), 60,
             message="collector ready")
    wait_for(lambda: (tmp_path / "adata" / "agent.pid").exists() or not agent.alive(), 60, message="agent ready")
    assert agent.alive() and collector.alive(), agent.log() + collector.log()
    writer = Writer(files)
    writer.start()
    yield {"agent": agent, "collector": collector, "agent_addr": f"127.0.0.1:{ametrics}",
           "collector_addr": f"127.0.0.1:{cmetrics}", "files": files, "cfg": acfg, "tmp": tmp_path}
    writer.stop.set()
    writer.join(5)


def _take(events, n: int, seconds: float = 60.0) -> tuple[list[dict], list[dict]]:
    """(chunk events, heartbeats) until ``n`` chunk events or ``seconds`` passed."""
    chunks, beats = [], []
    deadline = time.monotonic() + seconds
    for e in events:
        (chunks if e["type"] == "chunk" else beats).append(e)
        if len(chunks) >= n or time.monotonic() > deadline:
            break
    return chunks, beats


def test_tap_prints_metadata_and_records_of_each_component_with_filters(running):
    addr = running["agent_addr"]
    # the CLI: sample records of the source, as text; address and token from the agent's config
    out = subprocess.run([sys.executable, "-m", "logflume", "tap", "-c", str(running["cfg"]), "--component", "logs",
                          "--records", "2", "--count", "3", "--datatype", "Alpha"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "# tapping source:logs" in out.stderr
    heads = [line for line in out.stdout.splitlines() if not line.startswith("    ")]
    samples = [line.strip() for line in out.stdout.splitlines() if line.startswith("    ")]
    assert len(heads) == 3 and all("source:logs tapped" in h and " Alpha " in h and "team=x" in h for h in heads)
    assert samples and all(s.startswith("a line ") for s in samples), samples

    # channel and sink see the same chunks, filtered by stream glob and by tag
    for component in ("mem", "out"):
        chunks, _ = _take(stream(addr, component, stream_glob="*/b.log", rate=100, token=TOKEN), 5)
        assert len(chunks) == 5 and {c["datatype"] for c in chunks} == {"Beta"}, chunks
        assert {c["kind"] for c in chunks} == {"channel" if component == "mem" else "sink"}
    chunks, _ = _take(stream(addr, "out", tags={"team": "x"}, rate=100, records=1, token=TOKEN), 5)
    assert {c["stream"] for c in chunks} == {str(running["files"][0])} and all(c["records"] for c in chunks)

    # the collector's store: what was made durable there
    chunks, _ = _take(stream(running["collector_addr"], "store", datatype="Beta", rate=100, records=1, token=TOKEN), 3)
    assert len(chunks) == 3 and all(c["source"] == "tapped" and c["records"][0].startswith("b line")
                                    for c in chunks), chunks

    # a name that is not a component: one line naming the components there are
    bad = subprocess.run([sys.executable, "-m", "logflume", "tap", addr, "--component", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "LOGFLUME_TAP_TOKEN": TOKEN})
    assert bad.returncode == 1 and "source:logs" in bad.stderr and "sink:out" in bad.stderr, bad.stderr


def test_tap_rate_limit_counts_what_it_skips(running):
    # up to ~20 chunks/s pass the source (two files, flush every 100 ms); at most 1 a second is shown
    events = stream(running["agent_addr"], "logs", rate=1, token=TOKEN)
    t0 = time.monotonic()
    chunks, beats = [], []
    for e in events:
        (chunks if e["type"] == "chunk" else beats).append(e)
        if time.monotonic() - t0 > 5 and beats:
            break
    elapsed = time.monotonic() - t0
    assert 0 < len(chunks) <= elapsed + 1, (len(chunks), elapsed)
    assert beats[-1]["rate_limited"] >= len(chunks), beats[-1]


def test_tap_follows_its_component_through_a_reload(running):
    """A reload that replaces the tapped source hands the tap to the new one; the tap keeps printing."""
    tmp, addr = running["tmp"], running["agent_addr"]
    events = stream(addr, "logs", rate=100, token=TOKEN)
    chunks, _ = _take(events, 2)
    assert len(chunks) == 2
    cfg = yaml.safe_load(running["cfg"].read_text())
    cfg["sources"]["logs"]["flush_interval"] = "150ms"
    running["cfg"].write_text(yaml.safe_dump(cfg))
    before = json.loads((tmp / "adata" / "reload.json").read_text())["generation"] \
        if (tmp / "adata" / "reload.json").exists() else 0
    running["agent"].signal(signal.SIGHUP)
    outcome = wait_for(lambda: (p := tmp / "adata" / "reload.json").exists()
                       and (o := json.loads(p.read_text()))["generation"] > before and o, 60, message="reload")
    assert outcome["ok"] and "start sources logs" in outcome["changes"], outcome
    t_reload = time.time()
    deadline = time.monotonic() + 30
    for e in events:
        if e["type"] == "chunk" and e["time"] > t_reload + 0.5:
            break
        assert time.monotonic() < deadline, "the tap went silent after the reload"

    # a reload that removes the tapped component ends the tap with a "gone" line; the CLI exits 1
    token_file = tmp / "tap.token"
    token_file.write_text(TOKEN + "\n")
    tap = subprocess.Popen([sys.executable, "-m", "logflume", "tap", addr, "--component", "logs", "--token-file",
                            str(token_file)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = tap.stderr.readline()  # printed once attached
        assert "# tapping source:logs" in first, first
        cfg["sources"]["renamed"] = cfg["sources"].pop("logs")
        running["cfg"].write_text(yaml.safe_dump(cfg))
        running["agent"].signal(signal.SIGHUP)
        assert tap.wait(60) == 1
        err = tap.stderr.read()
        assert "source:logs was removed by a reload" in err, err
    finally:
        tap.kill()


def test_tap_is_refused_without_the_daemons_token(running):
    """It shows the records themselves: any local user (or anyone, beyond loopback) would read every log."""
    for token in (None, "not-" + TOKEN, TOKEN[:-1]):
        with pytest.raises(ConnectionError, match="HTTP 401: tap needs the daemon's tap_token"):
            next(stream(running["agent_addr"], "logs", records=1, token=token))
    with pytest.raises(ConnectionError, match="HTTP 401"):
        next(stream(running["collector_addr"], "store", records=1))
    out = subprocess.run([sys.executable, "-m", "logflume", "tap", running["agent_addr"], "--component", "logs",
                          "--count", "1"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "LOGFLUME_TAP_TOKEN"})
    assert out.returncode == 1 and "HTTP 401" in out.stderr and not out.stdout, out.stderr


def test_a_reload_rotates_the_tap_token(running):
    tmp = running["tmp"]
    cfg = yaml.safe_load(running["cfg"].read_text())
    new_token = "0a1b2c3d" * 5
    cfg["agent"]["tap_token"] = new_token
    running["cfg"].write_text(yaml.safe_dump(cfg))
    running["agent"].signal(signal.SIGHUP)
    outcome = wait_for(lambda: (p := tmp / "adata" / "reload.json").exists() and json.loads(p.read_text()), 60,
                       message="reload")
    assert outcome["ok"] and not outcome["needs_restart"], outcome
    with pytest.raises(ConnectionError, match="HTTP 401"):
        next(stream(running["agent_addr"], "logs", token=TOKEN))
    chunks, _ = _take(stream(running["agent_addr"], "logs", rate=100, token=new_token), 1)
    assert len(chunks) == 1
