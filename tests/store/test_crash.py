"""SIGKILL of a process writing sink files: a restart recovers the in-progress file; nothing acked is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.store import BufferStore
from logflume.component import Context
from sinks.seqfile import SeqFileSink

from .conftest import final_files, make_sink, read_chunks, run_until_acked, wait_for

pytestmark = pytest.mark.timeout(120)



@pytest.mark.parametrize("settings", [
    {"roll_size": "200KiB"},  # sync every_batch: written with O_DIRECT (direct_io auto)
    {"roll_size": "200KiB", "direct_io": "off"},
    {"roll_size": "8KiB", "compression": "BLOCK", "codec": "deflate"},
], ids=["none", "none-page-cache", "block-deflate"])
def test_sigkill_mid_file_then_restart_recovers_every_acked_chunk(tmp_path: Path, settings: dict) -> None:
    root = tmp_path / "store"
    cfg = {"type": "seqfile", "agent_name": "coll1", "data_dir": str(tmp_path / "state"),
           "settings": {"url": str(root), **settings}}
    acked = run_until_acked("tests.store.crash_writer", [json.dumps(cfg)], tmp_path, acks_before_kill=400)
    inprogress = list(root.glob("*/.*.inprogress"))
    assert len(inprogress) == 1, "the kill left a file in progress"
    assert final_files(root), "earlier files were rolled"

    context = Context(agent_name="coll1", data_dir=tmp_path / "state")
    sink = make_sink(SeqFileSink, "store", cfg["settings"], context)
    sink.start()
    sink.stop()
    assert not list(root.glob("*/.*")), "recovered on start"
    got = {(c.stream, c.seq_id) for c in read_chunks(final_files(root))}
    missing = acked - got
    assert not missing, f"{len(missing)} acknowledged chunks lost, e.g. {sorted(missing)[:3]}"
    assert context.metrics.value("seqfile_files_recovered_total", kind="sink", component="store") == 1


def test_sigkill_while_buffering_then_restart_replays_the_secondary(tmp_path: Path) -> None:
    secondary = tmp_path / "secondary"
    down = {"type": "buffer", "agent_name": "coll1", "data_dir": str(tmp_path / "state"), "settings": {
        # nothing listens on port 1 of loopback: the primary is down from the start
        "primary": {"url": "sftp://nobody@127.0.0.1:1/x", "timeout": "2s"},
        "secondary": {"dir": str(secondary), "file_size": "100KiB"},
        "retry_interval": "1h",
    }}
    acked = run_until_acked("tests.store.crash_writer", [json.dumps(down)], tmp_path, acks_before_kill=300)
    assert list(secondary.glob(".*.inprogress")), "the kill left a secondary file in progress"

    primary = tmp_path / "primary"
    context = Context(agent_name="coll1", data_dir=tmp_path / "state")
    store = make_sink(BufferStore, "store", {"primary": str(primary), "secondary": str(secondary),
                                             "retry_interval": "100ms"}, context)
    store.start()
    try:
        wait_for(lambda: store.primary_up, 30, message="replay of the recovered secondary")
    finally:
        store.stop()
    got = {(c.stream, c.seq_id) for c in read_chunks(final_files(primary))}
    missing = acked - got
    assert not missing, f"{len(missing)} acknowledged chunks lost, e.g. {sorted(missing)[:3]}"
