"""State and buffered data are owner-only: directories 0700, files 0600, whatever the umask.

A umask of 022 (the usual default) is set for each test, so a file created without an
explicit mode would come out 0644 and a directory 0755.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store import BufferStore
from logflume.component import Context
from logflume.errors import DeliveryError
from sinks.seqfile import SeqFileSink
from tests.conftest import free_port, wait_for
from tests.store.conftest import ChunkMaker, make_sink

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """Relative path -> octal permission bits of ``root`` and everything below it."""
    out = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = oct(stat.S_IMODE(p.lstat().st_mode))
    return out


def assert_private(root: Path) -> dict[str, str]:
    found = modes(root)
    wrong = {rel: mode for rel, mode in found.items()
             if mode != ("0o700" if (root / rel).is_dir() else "0o600")}
    assert not wrong, f"not owner-only under {root}: {wrong}"
    return found


def test_agent_state_dirs_channel_segments_and_checkpoints(tmp_path, logflume_proc):
    """A real agent: tail positions, file channel segments, lock and checkpoint."""
    logs, data = tmp_path / "logs", tmp_path / "data"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(1000)))
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"agent: {{name: a1, data_dir: {data}, shutdown_timeout: 2s}}\n"  # no collector: no draining to wait for
        f"sources: {{logs: {{type: tail, paths: ['{logs}/*.log'], channels: [disk], flush_interval: 100ms}}}}\n"
        "channels: {disk: {type: file, capacity: 64MiB}}\n"
        f"sinks: {{up: {{type: collector, channel: disk, collectors: ['127.0.0.1:{free_port()}'], timeout: 1s}}}}\n"
    )
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    positions = data / "source" / "logs" / "positions.json"
    wait_for(lambda: positions.exists() or not agent.alive(), timeout=60, message="tail positions on disk")
    assert agent.alive(), agent.log()[-3000:]
    assert agent.terminate() == 0, agent.log()[-3000:]
    found = assert_private(data)
    assert any(rel.startswith("channel/disk/log-") and rel.endswith(".seg") for rel in found), found
    for rel in ("channel/disk/lock", "channel/disk/checkpoint", "source/logs/positions.json"):
        assert rel in found, found


def test_collector_secondary_is_private(tmp_path):
    """Primary down: batches go to the secondary, which is buffered private logs."""
    context = Context(agent_name="coll1", data_dir=tmp_path / "state")
    raw = {
        "primary": {"type": "seqfile", "url": f"sftp://nobody@127.0.0.1:{free_port()}/x", "timeout": "2s"},
        "secondary": {"dir": str(tmp_path / "collector" / "secondary")},
    }
    store = make_sink(BufferStore, "store", raw, context)
    store.start()
    try:
        store.deliver(ChunkMaker().batch(6))
    finally:
        store.stop()
    found = assert_private(tmp_path / "collector" / "secondary")
    assert any(rel.endswith(".seq") for rel in found), found


def test_staged_files_are_private_and_local_store_follows_umask(tmp_path):
    context = Context(agent_name="coll1", data_dir=tmp_path / "state")
    staging = tmp_path / "staging" / "s"
    sink = make_sink(SeqFileSink, "s", {"url": f"memory://modes{os.getpid()}/x", "staging_dir": str(staging)},
                     context)
    sink.start()
    try:
        sink.deliver(ChunkMaker().batch(3))  # the open file stays in staging until it rolls
        assert_private(staging)
        assert any(rel.endswith(".inprogress") for rel in modes(staging))
    finally:
        sink.stop()
    # the store's product is read by jobs, maybe as another user: the umask decides (systemd units set 0077)
    store = tmp_path / "store"
    local = make_sink(SeqFileSink, "l", {"url": str(store)}, context)
    local.start()
    try:
        local.deliver(ChunkMaker().batch(3))
    finally:
        local.stop()
    files = [p for p in store.rglob("*.seq")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)


def test_state_dir_parents_are_created_private(tmp_path):
    context = Context(agent_name="a", data_dir=tmp_path / "deep" / "data")
    path = context.state_dir("source", "tail1")
    for level in (tmp_path / "deep", tmp_path / "deep" / "data", path.parent, path):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    Context(agent_name="a", data_dir=existing).state_dir("sink", "x")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # the operator's directory is left alone


def test_refused_primary_does_not_leak_into_delivery_error(tmp_path):
    """DeliveryError and StartupError texts never carry a URL password."""
    context = Context(agent_name="coll1", data_dir=tmp_path / "state")
    sink = make_sink(SeqFileSink, "s", {"url": f"sftp://u:pw-Hx81@127.0.0.1:{free_port()}/x", "timeout": "2s"},
                     context)
    with pytest.raises(Exception) as info:
        sink.start()
    assert "pw-Hx81" not in str(info.value) and "u:***@" in str(info.value)
    with pytest.raises(DeliveryError) as info:
        sink.deliver(ChunkMaker().batch(1))
    assert "pw-Hx81" not in str(info.value)
