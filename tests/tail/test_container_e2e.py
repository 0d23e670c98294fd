"""Container logs through a real agent and collector: the kubelet's layout, 16 KiB pieces, rotation by rename + create,
pod identity from the path (the ``kubernetes`` interceptor).

The agent follows ``containers/*.log`` (symbolic links, as the kubelet makes them) and the ``pods/`` files they
point to, with ``format: cri`` or ``docker``.  The test writes the runtime's lines (pieces of long messages,
the other stream's lines between two pieces, a message whose last piece comes well after its first ones),
rotates the file the kubelet's way, and checks in the collector's store that every epoch holds exactly its
file's bytes, that the records, read back, are every message exactly once, whole, and that every chunk
carries the pod's namespace, name, uid and container.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from tests.collector.conftest import agent_config, collector_config, wait_ready
from tests.collector.store_plugin import read_store
from tests.conftest import wait_for
from tests.tail.container_lines import lines, messages
from tests.tail.harness import by_epoch, epoch_bytes
from tests.tail.test_container_format import _records

pytestmark = pytest.mark.timeout(180)

UID = "5e4b2a6c-0b3f-4c7e-9a51-2f6d8e1c7a90"
CONTAINER_ID = "3f" * 32


def kubelet_layout(root: Path) -> tuple[Path, Path]:
    """``pods/<ns>_<pod>_<uid>/<container>/0.log`` and its link ``containers/<pod>_<ns>_<container>-<id>.log``."""
    pod_dir = root / "pods" / f"shop_web-7d9f8_{UID}" / "app"
    pod_dir.mkdir(parents=True)
    (root / "containers").mkdir()
    log = pod_dir / "0.log"
    log.write_bytes(b"")
    link = root / "containers" / f"web-7d9f8_shop_app-{CONTAINER_ID}.log"
    link.symlink_to(log)  # absolute, as the kubelet makes it
    return log, link


class Runtime:
    """Writes one container's output the way containerd (cri) or dockerd (json-file) does."""

    def __init__(self, fmt: str, path: Path) -> None:
        self.fmt, self.path, self.expected = fmt, path, []
        self.n = 0

    def write(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)

    def message(self, size: int, stream: str = "stdout", interleave: bool = False) -> None:
        self.n += 1
        msg = (f"{self.n:05d} ".encode() + b"x" * size)[:max(size, 6)]
        pieces = lines(self.fmt, stream, msg)
        if interleave and len(pieces) > 1:
            other = f"err {self.n:05d}".encode()
            pieces[1:1] = lines(self.fmt, "stderr", other)
            self.expected.append(("stderr", other))
        self.expected.append((stream, msg))
        self.write(b"".join(pieces))

    def slow_message(self, size: int, pause: float) -> None:
        """Every piece but the last, a pause (the agent reads them and flushes what is complete), then the last."""
        self.n += 1
        msg = f"{self.n:05d} ".encode() + b"s" * size
        pieces = lines(self.fmt, "stdout", msg)
        self.write(b"".join(pieces[:-1]))
        time.sleep(pause)
        self.write(pieces[-1])
        self.expected.append(("stdout", msg))

    def burst(self, seed: int) -> None:
        for i in range(40):
            self.message([30, 200, 3000][(i + seed) % 3])
        self.message(40_000, interleave=True)  # three pieces, a stderr line between the first two
        self.message(150_000)  # longer than the agent's chunk_size: a record split across chunks
        self.message(20_000, stream="stderr", interleave=False)


@pytest.mark.parametrize("fmt", ["cri", "docker"])
def test_container_logs_through_agent_and_collector(tmp_path, logflume_proc, fmt):
    root = tmp_path / "var-log"
    log, link = kubelet_layout(root)
    cfg, port, store = collector_config(tmp_path, "c")
    collector = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_ready(collector)
    source = {
        "type": "tail", "format": fmt, "datatype": "CRI" if fmt == "cri" else "DockerJSON",
        "paths": [str(root / "containers" / "*.log"), str(root / "pods" / "*" / "*" / "*.log")],
        "follow_symlinks": True, "chunk_size": "64KiB", "flush_interval": "20ms", "partial_timeout": "10s",
        "scan_interval": "200ms", "rotate_wait": "500ms", "interceptors": [{"type": "kubernetes"}],
    }
    agent = logflume_proc(["agent", "-c", agent_config(tmp_path, "node-1", {"collectors": [f"127.0.0.1:{port}"]},
                                                       sources={"pods": source})], name="agent")
    positions = tmp_path / "agent-node-1" / "source" / "pods" / "positions.json"
    runtime = Runtime(fmt, log)
    runtime.burst(0)
    wait_for(lambda: positions.exists() and str(log) in positions.read_text() or not agent.alive(), timeout=30,
             message="the agent follows the container's log")
    assert agent.alive(), agent.log()
    runtime.slow_message(40_000, pause=0.6)  # its last piece comes long after flush_interval
    runtime.burst(1)
    # The kubelet rotates: rename 0.log to 0.log.<time>, the runtime reopens 0.log (a new file at the old path).
    rotated = log.with_name("0.log.20261205-190102")
    os.rename(log, rotated)
    runtime.write(b"")
    runtime.burst(2)
    runtime.slow_message(20_000, pause=0.6)
    files = [rotated, log]
    total = sum(f.stat().st_size for f in files)

    def collected():
        chunks = read_store(store)
        groups = {}
        for stream in {c.stream for c in chunks}:
            groups.update(by_epoch(chunks, stream))
        return chunks, groups

    wait_for(lambda: sum(len(epoch_bytes(g)) for g in collected()[1].values()) >= total, timeout=90,
             interval=0.3, message=f"all {total} bytes in the collector's store\n{agent.log()[-3000:]}")
    chunks, epochs = collected()
    # exact bytes: one epoch per file, holding exactly that file's bytes, records in the file's order
    assert len(epochs) == 2, sorted(epochs)
    by_inode = {f"{f.stat().st_dev}:{f.stat().st_ino}:": f for f in files}
    got = []
    for epoch, group in sorted(epochs.items(), key=lambda kv: by_inode[kv[0].rsplit(":", 1)[0] + ":"] != rotated):
        assert epoch_bytes(group) == by_inode[epoch.rsplit(":", 1)[0] + ":"].read_bytes()
        ordered = sorted({c.seq_id: c for c in group}.values(), key=lambda c: c.seq_id)  # duplicates once
        assert all(c.record_ends is not None for c in ordered)  # records are described, not guessed from newlines
        for rec in _records(ordered):
            msgs, still_open = messages(fmt, rec)
            assert msgs and not still_open, rec[:200]  # no record ends inside a message
            got += msgs
    assert got == runtime.expected
    assert {c.stream for c in chunks} <= {str(link), str(log)}
    assert {c.datatype for c in chunks} == {source["datatype"]}
    # the kubernetes interceptor named the pod on every chunk, whichever path the stream is
    assert {tuple(sorted(c.tags.items())) for c in chunks} == {
        (("container", "app"), ("namespace", "shop"), ("pod", "web-7d9f8"), ("pod_uid", UID))}
    assert agent.terminate() == 0, agent.log()
    assert collector.terminate(30) == 0


def test_daemonset_configmap_ships_pod_logs_with_their_identity(tmp_path, logflume_proc, monkeypatch):
    """The shipped ConfigMap, pointed at a kubelet layout under tmp_path: whole records with the pod's tags.

    Its globs once named only /var/log/containers/*.log, links the tail source does not follow by default:
    that config shipped nothing.
    """
    manifest = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "agent-daemonset.yaml"
    raw = yaml.safe_load(next(yaml.safe_load_all(manifest.read_text()))["data"]["agent.yaml"])
    root = tmp_path / "var-log"
    log, link = kubelet_layout(root)
    cfg, port, store = collector_config(tmp_path, "c")
    collector = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_ready(collector)
    source = raw["sources"]["containers"]
    source["paths"] = [p.replace("/var/log/", f"{root}/") for p in source["paths"]]
    source.update(flush_interval="20ms", scan_interval="200ms")
    raw["agent"].update(name="node-1", data_dir=str(tmp_path / "agent-data"))
    raw["agent"].pop("metrics", None)
    raw["sinks"]["upstream"]["collectors"] = [f"127.0.0.1:{port}"]
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(raw))
    agent = logflume_proc(["agent", "-c", tmp_path / "agent.yaml"], name="agent")
    runtime = Runtime("cri", log)
    runtime.burst(0)
    size = log.stat().st_size
    wait_for(lambda: sum(len(c) for c in read_store(store)) >= size or not agent.alive(), timeout=60, interval=0.3,
             message=f"the container's log in the collector's store\n{agent.log()[-3000:]}")
    assert agent.alive(), agent.log()
    chunks = sorted(read_store(store), key=lambda c: c.seq_id)
    assert b"".join(bytes(c.data) for c in chunks) == log.read_bytes()
    got = [m for rec in _records(chunks) for m in messages("cri", rec)[0]]
    assert got == runtime.expected
    assert {c.tags["pod"] for c in chunks} == {"web-7d9f8"} and {c.tags["pod_uid"] for c in chunks} == {UID}
    assert agent.terminate() == 0, agent.log()
    assert collector.terminate(30) == 0
