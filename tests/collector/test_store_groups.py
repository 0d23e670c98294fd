"""Store groups (``store: {type: group, ...}``) through a real collector: failover, load balance, config errors.

Failover members are plain ``seqfile`` stores (a ``buffer`` store never fails: it has its own secondary), one
writing over SFTP to an OpenSSH sshd the test stops and starts again.  Every byte is checked exactly once after
``logflume archive`` over every member's files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from logflume.chunk import Chunk
from logflume.cli import main
from logflume.component import Context
from logflume.settings import parse_settings
from sinks.to_collector import CollectorSink
from tests.conftest import REPO, free_port, wait_for
from tests.routing.helpers import (
    archive,
    drained,
    metric,
    read_chunks,
    status,
    tail_agent_config,
    wait_ready,
    write_yaml,
)
from tests.store.conftest import SSHD, Sshd

pytestmark = pytest.mark.timeout(180)

needs_sshd = pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH sshd is not installed (openssh-server)")


def lines(first: int, n: int) -> bytes:
    return b"".join(f"{i:06d} line {'z' * 70}\n".encode() for i in range(first, first + n))


def numbers(root: Path) -> set[int]:
    return {int(bytes(r)[:6]) for c in read_chunks(root) for r in c.records()}


def sftp_member(sshd: Sshd, root: Path) -> dict:
    return {"type": "seqfile", "url": sshd.url(root), "storage_options": sshd.storage_options(), "timeout": "5s"}


def collector_yaml(tmp: Path, store: dict) -> tuple[Path, int, int]:
    port, mport = free_port(), free_port()
    cfg = {"collector": {"name": "c1", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp / "cdata"),
                         "metrics": f"127.0.0.1:{mport}", "shutdown_timeout": "20s"},
           "store": store}
    return write_yaml(tmp / "collector.yaml", cfg), port, mport


def agent_yaml(tmp: Path, log: Path, port: int, metrics: int) -> Path:
    return tail_agent_config(tmp, log, metrics, {"up": {
        "type": "collector", "channel": "disk", "collectors": [f"127.0.0.1:{port}"], "timeout": "10s",
        "cooldown": "200ms", "batch_chunks": 4, "retry_initial": "50ms", "retry_max": "500ms"}})


def group_status(mport: int) -> dict[str, dict]:
    """The default store's members as /status shows them, by member key."""
    comp = next(c for c in status(mport)["components"] if c["name"] == "store")
    return {row["name"].rsplit(".", 1)[-1]: row for row in comp["status"]["sinks"]}


def member_bytes(mport: int, key: str) -> float:
    return metric(mport, "logflume_bytes_out_total", kind="sink", component=f"store.sinks.{key}")


def assert_exactly_once(tmp: Path, log: Path) -> dict:
    """``logflume archive`` over every member's files holds each byte of ``log`` once, at its offset."""
    summary = archive(tmp / "store", tmp / "archive")
    got = sorted((c.seq_id - len(c.data), bytes(c.data)) for c in read_chunks(tmp / "archive"))
    data = log.read_bytes()
    assert b"".join(d for _s, d in got) == data, "archive holds every byte of the file once"
    assert all(data[s:s + len(d)] == d for s, d in got)
    assert summary["conflicts"] == 0, summary
    return summary


@needs_sshd
def test_failover_to_the_next_member_while_sftp_is_down_and_back_after_the_penalty(tmp_path, logflume_proc):
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    try:
        nas, local = tmp_path / "store" / "nas", tmp_path / "store" / "local"
        cfg, port, mport = collector_yaml(tmp_path, {
            "type": "group", "processor": "failover", "priority": {"nas": 10, "local": 5}, "penalty": "2s",
            "sinks": {"local": {"type": "seqfile", "url": str(local)}, "nas": sftp_member(sshd, nas)}})
        collector = logflume_proc(["collector", "-c", cfg], name="collector")
        wait_ready(collector)
        log, ametrics = tmp_path / "app.log", free_port()
        log.touch()
        agent = logflume_proc(["agent", "-c", agent_yaml(tmp_path, log, port, ametrics)], name="agent")

        def ship(first: int, n: int) -> None:
            with open(log, "ab") as f:
                f.write(lines(first, n))
            wait_for(lambda: drained(ametrics, [log]) or not agent.alive() or not collector.alive(), 90,
                     interval=0.2, message=f"lines {first}..{first + n} acked")
            assert agent.alive() and collector.alive(), agent.log()[-2000:] + collector.log()[-3000:]

        ship(0, 1000)                      # both up: every batch to nas (priority 10)
        assert member_bytes(mport, "nas") > 0 and member_bytes(mport, "local") == 0
        sshd.stop()                        # nas down: the same batches go to local at once
        ship(1000, 1000)
        assert member_bytes(mport, "local") > 0
        assert group_status(mport)["nas"]["failures"] >= 1
        assert metric(mport, "logflume_sink_failures_total", component="store") >= 1
        sshd.start()
        wait_for(lambda: group_status(mport)["nas"]["penalized_for"] == 0, 30, interval=0.2,
                 message="nas's penalty over")
        ship(2000, 1000)                   # nas is first again
        assert agent.terminate(60) == 0, agent.log()[-3000:]
        assert collector.terminate(60) == 0, collector.log()[-3000:]
    finally:
        sshd.close()
    on_nas, on_local = numbers(nas), numbers(local)
    assert on_nas | on_local == set(range(3000)), f"missing: {sorted(set(range(3000)) - on_nas - on_local)[:10]}"
    assert set(range(1000)) <= on_nas and not on_local & set(range(1000)), "both up: only the first priority"
    assert set(range(1000, 2000)) <= on_local and not on_nas & set(range(1000, 2000)), "nas was down: all to local"
    assert set(range(2000, 3000)) <= on_nas and not on_local & set(range(2000, 3000)), "after the penalty: nas"
    assert_exactly_once(tmp_path, log)


@needs_sshd
def test_a_member_away_at_start_sits_out_and_is_started_after_its_penalty(tmp_path, logflume_proc):
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")  # not started yet: nas cannot start with the collector
    try:
        nas, local = tmp_path / "store" / "nas", tmp_path / "store" / "local"
        cfg, port, mport = collector_yaml(tmp_path, {
            "type": "group", "processor": "failover", "priority": {"nas": 10, "local": 5}, "penalty": "2s",
            "sinks": {"nas": sftp_member(sshd, nas), "local": {"type": "seqfile", "url": str(local)}}})
        collector = logflume_proc(["collector", "-c", cfg], name="collector")
        wait_ready(collector)
        assert "member store.sinks.nas cannot start" in collector.log()
        log, ametrics = tmp_path / "app.log", free_port()
        log.write_bytes(lines(0, 500))
        agent = logflume_proc(["agent", "-c", agent_yaml(tmp_path, log, port, ametrics)], name="agent")
        wait_for(lambda: drained(ametrics, [log]), 60, interval=0.2, message="the first lines acked (by local)")
        assert group_status(mport)["nas"]["started"] is False
        sshd.start()
        wait_for(lambda: group_status(mport)["nas"]["penalized_for"] == 0, 30, interval=0.2,
                 message="nas's penalty over")
        with open(log, "ab") as f:
            f.write(lines(500, 500))
        wait_for(lambda: drained(ametrics, [log]), 60, interval=0.2, message="the next lines acked")
        wait_for(lambda: group_status(mport)["nas"]["started"] is True, 10, interval=0.2,
                 message="/status: nas started")  # (the status document is cached for 0.5 s)
        assert agent.terminate(60) == 0, agent.log()[-3000:]
        assert collector.terminate(60) == 0, collector.log()[-3000:]
    finally:
        sshd.close()
    assert numbers(local) == set(range(500)) and numbers(nas) == set(range(500, 1000))
    assert_exactly_once(tmp_path, log)


@needs_sshd
def test_every_member_down_the_batch_is_not_acked_and_the_agent_sends_it_again(tmp_path, logflume_proc):
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    try:
        cfg, port, mport = collector_yaml(tmp_path, {
            "type": "group", "processor": "failover", "penalty": "1s",
            "sinks": {"nas1": sftp_member(sshd, tmp_path / "store" / "nas1"),
                      "nas2": sftp_member(sshd, tmp_path / "store" / "nas2")}})
        collector = logflume_proc(["collector", "-c", cfg], name="collector")
        wait_ready(collector)
        log, ametrics = tmp_path / "app.log", free_port()
        log.write_bytes(lines(0, 500))
        agent = logflume_proc(["agent", "-c", agent_yaml(tmp_path, log, port, ametrics)], name="agent")
        wait_for(lambda: drained(ametrics, [log]), 60, interval=0.2, message="the first lines acked")
        sshd.stop()                        # both members down
        with open(log, "ab") as f:
            f.write(lines(500, 500))
        wait_for(lambda: metric(mport, "logflume_errors_total", kind="sink", component="store") >= 3, 60,
                 interval=0.2, message="the group failing batch after batch")
        assert not drained(ametrics, [log]), "a batch no member holds must not be acked"
        assert metric(ametrics, "logflume_retries_total", component="up") > 0, "the agent sends it again"
        sshd.start()
        wait_for(lambda: drained(ametrics, [log]) or not agent.alive(), 90, interval=0.2,
                 message="every line acked once a member is back")
        assert agent.terminate(60) == 0, agent.log()[-3000:]
        assert collector.terminate(60) == 0, collector.log()[-3000:]
    finally:
        sshd.close()
    assert_exactly_once(tmp_path, log)


def test_load_balance_round_robin_alternates_batches_over_two_members(tmp_path, logflume_proc):
    a, b = tmp_path / "store" / "a", tmp_path / "store" / "b"
    cfg, port, mport = collector_yaml(tmp_path, {
        "type": "group", "processor": "load_balance", "selector": "round_robin",
        "sinks": {"a": {"type": "seqfile", "url": str(a)}, "b": {"type": "seqfile", "url": str(b)}}})
    collector = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_ready(collector)
    values = parse_settings(CollectorSink.schema(), {"channel": "c", "collectors": [f"127.0.0.1:{port}"]},
                            "sinks.fwd", "agent.yaml")
    sink = CollectorSink("fwd", values, Context(agent_name="a1", data_dir=tmp_path / "adata"))
    sink.start()
    try:
        for i in range(10):  # one batch at a time: each is one store call, acked before the next is sent
            sink.deliver([Chunk(source="a1", stream="s", datatype="Raw", seq_id=(i + 1) * 100, epoch="e",
                                data=f"{i:06d} {'b' * 92}\n".encode())])
    finally:
        sink.stop()
    assert member_bytes(mport, "a") == member_bytes(mport, "b") == 5 * 100
    assert collector.terminate(60) == 0, collector.log()[-3000:]
    assert numbers(a) == {0, 2, 4, 6, 8} and numbers(b) == {1, 3, 5, 7, 9}, "batches in turn"


def test_a_bad_member_key_is_a_config_error_naming_the_file_and_key_path(tmp_path):
    cfg = write_yaml(tmp_path / "collector.yaml", {
        "collector": {"data_dir": str(tmp_path)},
        "routes": {"audit": {"match": {"stream": "audit.*"}, "store": {
            "type": "group", "processor": "failover",
            "sinks": {"nas": {"type": "buffer", "primary": {"ur": "sftp://nas/logs"}, "secondary": str(tmp_path / "s")},
                      "local": {"type": "seqfile", "url": str(tmp_path / "local")}}}}}})
    for command in (["check", "-c", str(cfg)], ["collector", "-c", str(cfg)]):
        done = subprocess.run([sys.executable, "-m", "logflume", *command], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"{cfg}: routes.audit.store.sinks.nas.primary.ur: unknown key (did you mean 'url'?)" in done.stderr


def test_check_prints_each_group_under_its_route_with_its_members_in_the_order_tried(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOGFLUME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOSTNAME", "c1")
    assert main(["check", "-c", str(REPO / "configs" / "collector-routes-groups.yaml")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if ln.startswith("#   ")] == [
        "#   audit: stream=audit.* -> group failover (penalty up to 30s)",
        "#     nas (priority 10): seqfile (sftp://logs@nas.example.com:22/data/audit/{date} as c1)",
        f"#     local (priority 5): seqfile ({tmp_path}/audit-local/{{date}} as c1)",
        "#   default: everything else -> group load_balance round_robin (backoff up to 30s)",
        f"#     disk1: buffer ({tmp_path}/disk1/{{date}} as c1, secondary {tmp_path}/disk1-secondary)",
        f"#     disk2: buffer ({tmp_path}/disk2/{{date}} as c1, secondary {tmp_path}/disk2-secondary)",
    ]
    resolved = yaml.safe_load(out)
    group = resolved["routes"]["audit"]["store"]
    assert group["priority"] == {"nas": 10, "local": 5} and list(group["sinks"]) == ["nas", "local"]
    assert group["sinks"]["nas"]["roll_size"] == "1GiB"  # members resolved with every default
    assert resolved["store"]["processor"] == "load_balance" and resolved["store"]["sinks"]["disk2"]["type"] == "buffer"
