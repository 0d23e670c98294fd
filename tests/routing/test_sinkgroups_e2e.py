"""Sink groups with real collectors going down: failover by priority (and back), load balance with backoff."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import free_port, wait_for
from tests.routing.helpers import (
    collector_config,
    collector_sink,
    drained,
    read_chunks,
    tail_agent_config,
    wait_ready,
)

pytestmark = pytest.mark.timeout(300)


def append(log, first: int, n: int) -> None:
    with open(log, "ab") as f:
        f.write(b"".join(f"{i:06d} line {'y' * 80}\n".encode() for i in range(first, first + n)))


def numbers(store) -> list[int]:
    return [int(bytes(r)[:6]) for c in read_chunks(store) for r in c.records()]


def agent_config(tmp, log, metrics: int, ports: list[int], group: dict):
    sinks = {f"k{i + 1}": collector_sink(p) for i, p in enumerate(ports)}
    return tail_agent_config(tmp, log, metrics, sinks, sinkgroups={"up": {
        "sinks": sorted(sinks), "batch_chunks": 2, "retry_initial": "50ms", "retry_max": "500ms", **group}})


def start_collectors(tmp, logflume_proc, names):
    out = {}
    for name in names:
        cfg, port = collector_config(tmp, name)
        proc = logflume_proc(["collector", "-c", cfg], name=name)
        out[name] = (cfg, port, proc)
    for _cfg, _port, proc in out.values():
        wait_ready(proc)
    return out


def agent_and_two_collectors(tmp_path, logflume_proc, group: dict):
    """Collectors c1 and c2, and an agent tailing app.log to them through sink group ``group`` (sinks k1, k2):
    returns (log, collectors, metrics port, agent)."""
    log = tmp_path / "app.log"
    log.touch()
    cs = start_collectors(tmp_path, logflume_proc, ["c1", "c2"])
    metrics = free_port()
    cfg = agent_config(tmp_path, log, metrics, [cs["c1"][1], cs["c2"][1]], group)
    return log, cs, metrics, logflume_proc(["agent", "-c", cfg], name="agent")


def test_failover_moves_to_the_next_priority_when_a_collector_dies_and_back_after_the_penalty(tmp_path, logflume_proc):
    log, cs, metrics, agent = agent_and_two_collectors(
        tmp_path, logflume_proc, {"processor": "failover", "priority": {"k1": 10, "k2": 5}, "penalty": "2s"})

    def ship(first: int, n: int) -> None:
        append(log, first, n)
        wait_for(lambda: drained(metrics, [log]) or not agent.alive(), 90, interval=0.2,
                 message=f"lines {first}..{first + n} shipped")
        assert agent.alive(), agent.log()[-3000:]

    ship(0, 1000)                          # both up: all to k1 (priority 10)
    cs["c1"][2].signal(signal.SIGKILL)
    cs["c1"][2].wait(10)
    ship(1000, 1000)                       # c1 dead: to k2
    c1 = logflume_proc(["collector", "-c", cs["c1"][0]], name="c1-again")
    wait_ready(c1)
    time.sleep(2.5)                        # the penalty (at most 2s) is over: k1 is tried first again
    ship(2000, 1000)
    assert agent.terminate(60) == 0
    for p in (c1, cs["c2"][2]):
        assert p.terminate(60) == 0
    on1, on2 = set(numbers(tmp_path / "store" / "c1")), set(numbers(tmp_path / "store" / "c2"))
    assert on1 | on2 == set(range(3000)), f"missing: {sorted(set(range(3000)) - on1 - on2)[:10]}"
    assert set(range(1000)) <= on1 and not on2 & set(range(1000)), "with both up only the first priority gets data"
    assert set(range(1000, 2000)) <= on2 and not on1 & set(range(1000, 2000)), "c1 was down: all went to k2"
    assert set(range(2000, 3000)) <= on1 and not on2 & set(range(2000, 3000)), "after the penalty k1 is back"
    assert "sink group up: sink k1 failed" in agent.log()


def test_load_balance_spreads_batches_and_backs_off_a_dead_collector(tmp_path, logflume_proc):
    log, cs, metrics, agent = agent_and_two_collectors(
        tmp_path, logflume_proc, {"processor": "load_balance", "selector": "round_robin", "max_backoff": "5s"})
    for first in range(0, 2000, 200):      # bursts of 200 lines (~18 KiB, several 4 KiB chunks)
        append(log, first, 200)
        time.sleep(0.15)
    wait_for(lambda: drained(metrics, [log]) or not agent.alive(), 90, interval=0.2, message="first half shipped")
    cs["c2"][2].signal(signal.SIGKILL)
    cs["c2"][2].wait(10)
    for first in range(2000, 4000, 200):
        append(log, first, 200)
        time.sleep(0.15)
    wait_for(lambda: drained(metrics, [log]) or not agent.alive(), 90, interval=0.2, message="second half shipped")
    assert agent.alive(), agent.log()[-3000:]
    assert agent.terminate(60) == 0
    assert cs["c1"][2].terminate(60) == 0
    on1 = set(numbers(tmp_path / "store" / "c1"))
    c2 = logflume_proc(["collector", "-c", cs["c2"][0]], name="c2-again")  # finishes what it had durable
    wait_ready(c2)
    assert c2.terminate(60) == 0
    on2 = set(numbers(tmp_path / "store" / "c2"))
    assert on1 | on2 == set(range(4000)), f"missing: {sorted(set(range(4000)) - on1 - on2)[:10]}"
    assert on1 & set(range(2000)) and on2 & set(range(2000)), "round robin used both collectors"
    assert set(range(2000, 4000)) <= on1, "with c2 dead everything went to c1"
    failures = agent.log().count("sink group up: sink k2 failed")
    assert 1 <= failures < 20, f"k2 backed off exponentially instead of being tried per batch ({failures} failures)"
