"""Real agent and collector processes on loopback: failover, outages, back-pressure, shutdown."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.collector.conftest import (
    agent_config,
    collector_config,
    exec_source,
    numbers,
    stop_all,
    wait_all,
)
from tests.collector.store_plugin import read_store
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(180)


def store_bytes(d) -> int:
    return sum(p.stat().st_size for p in d.glob("*.seq")) if d.exists() else 0


def test_sigkill_one_of_two_collectors_mid_transfer_loses_nothing(tmp_path, start_collector, start_agent):
    n = 200_000  # 40 MB in 200-byte records
    cfg_a, port_a, store_a = collector_config(tmp_path, "a")
    cfg_b, port_b, store_b = collector_config(tmp_path, "b")
    ca, cb = start_collector(cfg_a, "ca"), start_collector(cfg_b, "cb")
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors": [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"],
                                                      "batch_bytes": "1MiB"},
                                     sources={"gen": exec_source(n, pause_every=2000, pause=0.05)}))
    wait_for(lambda: store_bytes(store_a) > 2_000_000, 60, message="collector a storing data")
    ca.kill()  # SIGKILL mid-transfer
    wait_all([store_a, store_b], n, 90, procs=[agent, cb])
    counts = Counter(numbers([store_a, store_b]))
    assert set(counts) == set(range(n))
    dups = sum(c - 1 for c in counts.values())
    # duplicates only from what was in flight to the killed collector (at most a couple of 1 MiB batches)
    assert dups <= 3 * (1 << 20) // 200, dups
    assert "cooling down" in agent.log()
    assert agent.terminate(30) == 0
    assert cb.terminate(30) == 0


def test_all_collectors_down_then_back_nothing_lost(tmp_path, start_collector, start_agent):
    n = 50_000
    cfg_a, port_a, store_a = collector_config(tmp_path, "a")
    cfg_b, port_b, store_b = collector_config(tmp_path, "b")
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors": [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"]},
                                     sources={"gen": exec_source(n)}))
    wait_for(lambda: "cannot connect" in agent.log(), 30, message="agent failing to connect")
    time.sleep(2.0)  # an outage: the channel absorbs everything meanwhile
    assert not store_a.exists() and not store_b.exists()
    ca, cb = start_collector(cfg_a, "ca"), start_collector(cfg_b, "cb")
    wait_all([store_a, store_b], n, 60, procs=[agent, ca, cb])
    assert Counter(numbers([store_a, store_b])) == Counter(range(n))  # nothing was acked twice either
    for p in (agent, ca, cb):
        assert p.terminate(30) == 0


def test_try_later_back_pressure_slows_agents_without_loss(tmp_path, start_collector, start_agent):
    n = 40_000  # 8 MB per agent
    mport = free_port()
    cfg, port, store = collector_config(tmp_path, "slow", store={"delay": "150ms"}, max_pending_bytes="256KiB",
                                        metrics=f"127.0.0.1:{mport}")
    col = start_collector(cfg, "col")
    agents = []
    for i in range(3):
        sink = {"collectors": [f"127.0.0.1:{port}"], "batch_bytes": "256KiB"}
        src = exec_source(n, width=200, pause_every=1_000_000)
        src["stream"] = f"gen{i}"
        agents.append(start_agent(agent_config(tmp_path, f"ag{i}", sink, sources={"gen": src}), name=f"ag{i}"))

    def complete() -> bool:
        per: dict[str, set[int]] = {}
        for c in read_store(store):
            per.setdefault(c.stream, set()).update(int(bytes(r)[:9]) for r in c.records())
        return len(per) == 3 and all(s >= set(range(n)) for s in per.values())

    wait_for(complete, 120, interval=0.5, message="every agent's records stored")
    logs = "".join(a.log() for a in agents)
    assert "TRY_LATER" in logs, "the collector never pushed back"
    import urllib.request

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
    samples = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("logflume_") and 'kind="collector"' in line}
    assert samples["logflume_try_later_total"] > 0
    assert samples["logflume_bytes_in_total"] >= 3 * n * 200
    for p in [*agents, col]:
        assert p.terminate(30) == 0


def test_sigterm_collector_finishes_in_flight_and_closes_files(tmp_path, start_collector, start_agent):
    n = 100_000
    port = free_port()
    cfg, _, store = collector_config(tmp_path, "c", port=port, store={"delay": "20ms"})
    col = start_collector(cfg, "c1")
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors": [f"127.0.0.1:{port}"], "batch_bytes": "1MiB"},
                                     sources={"gen": exec_source(n, pause_every=2000, pause=0.05)}))
    wait_for(lambda: store_bytes(store) > 1_000_000, 60, message="collector storing data")
    t0 = time.monotonic()
    assert col.terminate(30) == 0, col.log()
    assert time.monotonic() - t0 < 20
    assert "stopped" in col.log()
    for path in store.glob("*.seq"):  # closed cleanly: every file reads to its end without a torn record
        from logflume.sequencefile import SequenceFileReader

        with open(path, "rb") as f:
            list(SequenceFileReader(f).iter_chunks())
    col2 = start_collector(cfg, "c2")
    wait_all([store], n, 90, procs=[agent, col2])
    for p in (agent, col2):
        assert p.terminate(30) == 0


def test_collectors_file_is_reread(tmp_path, start_collector, start_agent):
    n = 20_000
    cfg_a, port_a, store_a = collector_config(tmp_path, "a")
    cfg_b, port_b, store_b = collector_config(tmp_path, "b")
    ca = start_collector(cfg_a, "ca")
    cb = start_collector(cfg_b, "cb")
    listing = tmp_path / "collectors"
    listing.write_text(f"# Chukwa-style list\nhttp://127.0.0.1:{port_a}/\n")
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors_file": str(listing), "batch_bytes": "256KiB"},
                                     sources={"gen": exec_source(n, pause_every=500, pause=0.1)}))
    wait_for(lambda: store_bytes(store_a) > 100_000, 60, message="data at collector a")
    assert read_store(store_b) == []
    listing.write_text(f"127.0.0.1:{port_b}\n")
    os.utime(listing, (time.time() + 5, time.time() + 5))
    wait_all([store_a, store_b], n, 60, procs=[agent])
    before = store_bytes(store_a)
    assert read_store(store_b)
    time.sleep(0.5)
    assert store_bytes(store_a) == before  # a is no longer used
    for p in (agent, ca, cb):
        p.signal(signal.SIGTERM)
    for p in (agent, ca, cb):
        assert p.wait(30) == 0


def test_default_buffer_store_receives_everything(tmp_path, start_collector, start_agent):
    """No ``store:`` section: the collector writes through the default BufferStore into SeqFileSink files."""
    from logflume.sequencefile import SequenceFileReader
    from tests.collector.conftest import write_yaml

    n = 20_000
    port = free_port()
    data_dir = tmp_path / "cdata"
    cfg = write_yaml(tmp_path / "collector.yaml", {"collector": {
        "name": "c-default", "listen": f"127.0.0.1:{port}", "data_dir": str(data_dir), "shutdown_timeout": "20s"}})
    col = start_collector(cfg)
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors": [f"127.0.0.1:{port}"]},
                                     sources={"gen": exec_source(n)}))

    def stored() -> list[int]:
        out = []
        for path in (data_dir / "sink").rglob("*.seq"):
            with open(path, "rb") as f:
                out += [int(bytes(r)[:9]) for c in SequenceFileReader(f).iter_chunks() for r in c.records()]
        return out

    wait_for(lambda: "started" in agent.log(), 20, message="agent started")
    time.sleep(2.0)  # the generator is done within a second; SIGTERM then drains the channel
    assert agent.terminate(30) == 0  # drains its channel into the collector first
    assert col.terminate(30) == 0  # flushes and closes the sink files (final names)
    assert set(stored()) == set(range(n)), agent.log()[-2000:] + col.log()[-2000:]


@pytest.mark.slow
def test_64mib_chunks_survive_sigkill_of_a_collector(tmp_path, start_collector, start_agent):
    """The big-chunk variant of the SIGKILL test: ~320 MB in 64 MiB chunks, each chunk alone in its batch and
    sent as 16 MiB frames (``frame_bytes``), two on the way at once: a kill finds frames in flight."""
    n = 320_000  # 1000-byte records
    cfg_a, port_a, store_a = collector_config(tmp_path, "a")
    cfg_b, port_b, store_b = collector_config(tmp_path, "b")
    ca, cb = start_collector(cfg_a, "ca"), start_collector(cfg_b, "cb")
    src = exec_source(n, width=1000, pause_every=20_000, pause=0.2)
    # Chunks cut at 64 MiB, not by time: a generator slowed by a busy machine wrote < 32 MiB in a 1 s flush_interval.
    src.update(chunk_size="64MiB", flush_interval="10s", caught_up_flush="0s")
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors": [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"],
                                                      "batch_bytes": "64MiB"},
                                     sources={"gen": src}))
    # kill a while a 64 MiB frame is on its way: once it holds one chunk, or as soon as it holds anything
    wait_for(lambda: store_bytes(store_a) > 1000 or store_bytes(store_b) > 64 << 20, 120,
             message="first 64 MiB chunk stored")
    ca.kill()
    wait_all([store_a, store_b], n, 150, procs=[agent, cb])
    sizes = [len(c.data) for c in read_store(store_a) + read_store(store_b)]
    assert max(sizes) > 12 << 20  # big frames really went over the wire (16 MiB pieces of 64 MiB chunks)
    assert stop_all([agent, cb]) == [0, 0]
