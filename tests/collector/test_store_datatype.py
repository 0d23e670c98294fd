"""``{datatype}`` in a route's store path, through a real collector: each chunk lands in its datatype's directory.

Chunks are sent with the agent's own collector sink (each batch acked before the next is sent).  The buffer
store's secondary is one backlog for every datatype; replaying it through the primary sorts each chunk into
its datatype's file there, checked with an SFTP primary (OpenSSH sshd) the test stops and starts again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings
from sinks.to_collector import CollectorSink
from tests.conftest import free_port, sink_file_order, wait_for
from tests.routing.helpers import metric, wait_ready, write_yaml
from tests.sinks.conftest import DIRS, TypedChunkMaker
from tests.store.conftest import SSHD, Sshd, check_delivery, read_chunks

pytestmark = pytest.mark.timeout(180)

ROUTE = "routes.apps.store"


def collector_yaml(tmp: Path, route_store: dict) -> tuple[Path, int, int]:
    """A collector whose ``apps`` route (tag env=test) has ``route_store``; the rest goes to ``tmp/default``."""
    port, mport = free_port(), free_port()
    cfg = {"collector": {"name": "c1", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp / "cdata"),
                         "metrics": f"127.0.0.1:{mport}", "shutdown_timeout": "20s"},
           "routes": {"apps": {"match": {"tags": {"env": "test"}}, "store": route_store}},
           "store": {"type": "seqfile", "url": str(tmp / "default")}}
    return write_yaml(tmp / "collector.yaml", cfg), port, mport


def sender(tmp: Path, port: int) -> CollectorSink:
    values = parse_settings(CollectorSink.schema(), {"channel": "c", "collectors": [f"127.0.0.1:{port}"],
                                                     "timeout": "20s"}, "sinks.fwd", "agent.yaml")
    sink = CollectorSink("fwd", values, Context(agent_name="a1", data_dir=tmp / "adata"))
    sink.start()
    return sink


def by_datatype(root: Path) -> dict[str, list[Chunk]]:
    """Chunks in the finished files of each datatype directory (``<root>/<datatype>/<date>/*.seq``)."""
    out = {}
    for d in sorted(p.name for p in root.iterdir() if p.is_dir()):
        files = sorted((root / d).glob("*/*.seq"), key=lambda p: sink_file_order(p.name))
        out[d] = read_chunks(files)
    return out


def test_a_route_with_datatype_in_its_path_writes_each_datatype_under_its_directory(tmp_path, logflume_proc):
    primary = tmp_path / "apps"
    cfg, port, _ = collector_yaml(tmp_path, {
        "type": "buffer", "primary": {"url": str(primary), "path": "{datatype}/{date}", "roll_size": "16KiB"},
        "secondary": {"dir": str(tmp_path / "secondary")}})
    collector = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_ready(collector)
    maker, sent = TypedChunkMaker(size=3000), []
    sink = sender(tmp_path, port)
    try:
        for _ in range(8):
            batch = maker.batch(6)  # two chunks of each of the three datatypes
            sink.deliver(batch)
            sent += batch
        other = Chunk("a1", "other.log", "Raw", 3, "e", b"x\n")  # no env tag: the default store
        sink.deliver([other])
    finally:
        sink.stop()
    assert collector.terminate(60) == 0, collector.log()[-3000:]
    got = by_datatype(primary)
    assert sorted(got) == sorted(DIRS.values()), f"one directory per datatype: {sorted(got)}"
    for dt, d in DIRS.items():
        assert {c.datatype for c in got[d]} == {dt}, f"{d} holds only {dt}"
        check_delivery([c for c in sent if c.datatype == dt], got[d], max_duplicates=0)
    assert len(list((primary / "Nginx").glob("*/*.seq"))) >= 2, "each datatype's file rolls on its own size"
    assert [bytes(c.data) for c in read_chunks(sorted((tmp_path / "default").glob("*/*.seq")))] == [b"x\n"]


@pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH sshd is not installed (openssh-server)")
def test_failover_and_replay_sort_the_one_backlog_into_each_datatype_directory(tmp_path, logflume_proc):
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    primary, secondary = tmp_path / "primary", tmp_path / "secondary"
    try:
        cfg, port, mport = collector_yaml(tmp_path, {
            "type": "buffer",
            "primary": {"url": sshd.url(primary), "storage_options": sshd.storage_options(), "timeout": "5s",
                        "path": "{datatype}/{date}", "roll_size": "32KiB"},
            "secondary": {"dir": str(secondary), "file_size": "16KiB"},
            "retry_interval": "300ms"})
        collector = logflume_proc(["collector", "-c", cfg], name="collector")
        wait_ready(collector)
        maker, sent = TypedChunkMaker(size=2000), []
        sink = sender(tmp_path, port)

        def send(n: int) -> None:
            for _ in range(n):
                batch = maker.batch(6)
                sink.deliver(batch)  # acked: on the primary, or on the secondary once it failed
                sent.extend(batch)

        def up() -> float:
            return metric(mport, "logflume_primary_up", kind="sink", component=ROUTE)

        try:
            send(4)
            assert up() == 1
            sshd.stop()  # the primary's three open files (one per datatype) are cut off
            send(8)
            assert up() == 0
            assert metric(mport, "logflume_backlog_bytes", kind="sink", component=ROUTE) > 8 * 6 * 2000 * 0.9
            buffered = sorted(secondary.glob("*.seq"))
            assert len(buffered) >= 2, "the one backlog rolled into several files"
            assert {c.datatype for c in read_chunks(buffered)} == set(DIRS), "one backlog for every datatype"
            sshd.start()
            wait_for(lambda: up() == 1 or not collector.alive(), 60, interval=0.2, message="backlog replayed")
            assert collector.alive(), collector.log()[-3000:]
            assert metric(mport, "logflume_replayed_files_total", kind="sink", component=ROUTE) >= len(buffered)
            send(4)  # straight to the primary again
        finally:
            sink.stop()
        assert collector.terminate(60) == 0, collector.log()[-3000:]
    finally:
        sshd.close()
    assert not list(secondary.glob("*.seq")) and not list(secondary.glob(".*.inprogress")), "backlog drained"
    assert not list(primary.glob("*/*/.*")), "cut-off files recovered, none left in progress"
    got = by_datatype(primary)
    assert sorted(got) == sorted(DIRS.values())
    for dt, d in DIRS.items():
        assert {c.datatype for c in got[d]} == {dt}, f"{d} holds only {dt}"
        # every chunk once, in the order sent: before the outage, replayed, and after
        check_delivery([c for c in sent if c.datatype == dt], got[d], max_duplicates=0)


def _build(tmp: Path, routes: dict, store: dict | None = None):
    from collector.config import build_collector_config

    raw = {"collector": {"data_dir": str(tmp / "d")}, "routes": routes,
           "store": store or {"type": "seqfile", "url": str(tmp / "default")}}
    return build_collector_config(raw, "c.yaml")


@pytest.mark.parametrize(("routes", "store", "path", "message"), [
    ({"a": {"match": {"datatype": "A*"}, "store": {"type": "seqfile", "url": "/s", "path": "{foo}/{date}"}}},
     None, "routes.a.store.path", "unknown field {foo}: expected {date}, {hour} or {datatype}"),
    ({"a": {"match": {"datatype": "A*"}, "store": {"type": "buffer", "primary": {"url": "/s", "path": "{dt}"},
                                                    "secondary": "/b"}}},
     None, "routes.a.store.primary.path", "unknown field {dt}"),
    ({"a": {"match": {"datatype": "A*"}, "store": {"type": "buffer", "primary": {"url": "/s", "path": "{datatype}"},
                                                    "secondary": "/b/{datatype}"}}},
     None, "routes.a.store.secondary.dir", "one backlog for every datatype"),
    # the default store's {date} directories fit the route's {datatype}: each would recover the other's files
    ({"a": {"match": {"datatype": "A*"}, "store": {"type": "seqfile", "url": "/s", "path": "{datatype}"}}},
     {"type": "seqfile", "url": "/s"}, "store.path", "may name the same directories as routes.a.store's"),
    ({"a": {"match": {"datatype": "A*"}, "store": {"type": "seqfile", "url": "/s", "path": "audit/{date}"}}},
     {"type": "buffer", "primary": {"url": "/s", "path": "{datatype}/{date}"}, "secondary": "/b"},
     "store.primary.path", "'{datatype}/{date}' may name the same directories"),
])
def test_config_errors_name_file_key_and_what_is_expected(tmp_path, routes, store, path, message):
    from logflume.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _build(tmp_path, routes, store)
    assert (err.value.file, err.value.path) == ("c.yaml", path)
    assert message in err.value.message


def test_datatype_layouts_that_cannot_meet_share_a_root(tmp_path):
    cfg = _build(tmp_path, {
        "a": {"match": {"datatype": "A*"}, "store": {"type": "seqfile", "url": "/s", "path": "by-type/{datatype}"}},
        "b": {"match": {"datatype": "B*"}, "store": {"type": "seqfile", "url": "/s", "path": "b/{date}/{hour}"}},
    }, {"type": "seqfile", "url": "/s"})
    assert cfg.render()["routes"]["a"]["store"]["path"] == "by-type/{datatype}"
    assert cfg.render()["routes"]["a"]["store"]["max_open_files"] == 64
