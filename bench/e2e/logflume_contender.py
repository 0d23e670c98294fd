"""logflume end to end, as a user runs it: an agent process and a collector process on loopback.

``tail`` source -> ``memory`` or ``file`` channel -> ``collector`` sink -> collector daemon ->
``seqfile`` store on local disk, with the store's ``sync`` on (``every_batch``: fsync before each
ack) or off (``none``).  The clock starts when the input appears in the watched directory and
stops when the collector, asked to stop once the agent's sink has had every byte acknowledged,
has closed and renamed its sink files: every byte is then in finished sink files.  The sink files
are then read back with the SequenceFile reader and every line's sequence number checked.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.e2e.measure import Proc, ProcGroup, Result, SeqVerifier, wait_until
from bench.e2e.peers import free_port, port_open
from bench.e2e.variants import Variant, clear_dir

SINK_NAME = "fwd"
#: The agent's tap_token for `--tap on` (a throwaway value, on loopback).
TAP_TOKEN = secrets.token_hex(20)


@dataclass
class LogflumeOptions:
    """What varies between logflume contenders."""

    channel: str = "memory"  # memory | file
    sync: str = "every_batch"  # every_batch | none
    chunk_size: int = 64 << 20
    flush_interval: str = "500ms"
    #: The tail's caught_up_flush ("20ms", its default; "0s": off, as before issue 20).
    caught_up_flush: str = "20ms"
    #: The tail's quiet_flush ("0s": off, its default).
    quiet_flush: str = "0s"
    #: Run with ``logflume tap`` attached to the tail source (records sampled), to measure what tapping costs.
    tap: bool = False
    #: The collector store's direct_io ("auto", its default: O_DIRECT with sync every_batch; "on"; "off").
    direct_io: str = "auto"

    @property
    def name(self) -> str:
        return (f"logflume-{self.channel}-sync{'on' if self.sync != 'none' else 'off'}"
                + ("-tapped" if self.tap else "") + (f"-quiet{self.quiet_flush}" if self.quiet_flush != "0s" else "")
                + (f"-caughtup{self.caught_up_flush}" if self.caught_up_flush != "20ms" else "")
                + (f"-direct{self.direct_io}" if self.direct_io != "auto" else ""))

    @property
    def tail_label(self) -> str:
        """The tail's flush settings, as a latency row names them."""
        return (f"flush_interval {self.flush_interval}, caught_up_flush {self.caught_up_flush}, "
                f"quiet_flush {self.quiet_flush}")


def agent_config(opts: LogflumeOptions, work: Path, paths: list[str], collector_port: int,
                 metrics_port: int) -> dict:
    channel: dict = {"type": opts.channel}
    if opts.channel == "memory":
        # One chunk: the agent then holds at most the chunk being built and the chunk being sent
        # (the RSS target is 2 x chunk_size + 64 MiB).  ChannelOutput splits bigger batches.
        channel["capacity"] = opts.chunk_size
    else:
        channel["dir"] = str(work / "agent" / "channel")
        channel["capacity"] = max(4 * opts.chunk_size, 256 << 20)
    return {
        "agent": {"name": "bench", "data_dir": str(work / "agent"), "metrics": f"127.0.0.1:{metrics_port}",
                  "tap_token": TAP_TOKEN, "log_level": "WARNING", "shutdown_timeout": "10s"},
        "sources": {"logs": {"type": "tail", "paths": paths, "channels": ["buf"], "start_at": "beginning",
                             "chunk_size": opts.chunk_size, "flush_interval": opts.flush_interval,
                             "quiet_flush": opts.quiet_flush, "caught_up_flush": opts.caught_up_flush}},
        "channels": {"buf": channel},
        "sinks": {SINK_NAME: {"type": "collector", "channel": "buf", "collectors": [f"127.0.0.1:{collector_port}"]}},
    }


def collector_config(opts: LogflumeOptions, work: Path, port: int) -> dict:
    return {
        "collector": {"name": "bench-collector", "listen": f"127.0.0.1:{port}", "data_dir": str(work / "collector"),
                      "log_level": "WARNING"},
        "store": {"type": "seqfile", "url": str(work / "collector" / "sink"), "sync": opts.sync,
                  "direct_io": opts.direct_io},
    }


_BYTES_OUT = re.compile(r"^logflume_bytes_out_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def start_logflume(group: ProcGroup, opts: LogflumeOptions, work: Path, agent_cfg: dict, cport: int, mport: int,
                   python: str, env: dict[str, str], ready: tuple[Callable[[], bool], str] | None = None,
                   ) -> tuple[Proc, Proc]:
    """Write ``work``/agent.yaml (``agent_cfg``) and collector.yaml, start the collector and then the agent;
    return (collector, agent) once the collector listens on ``cport`` and the agent's metrics on ``mport``
    answer (and ``ready``'s check holds, named by its text)."""
    (work / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))
    (work / "collector.yaml").write_text(yaml.safe_dump(collector_config(opts, work, cport)))
    coll = group.start("collector", [python, "-m", "logflume", "collector", "-c", str(work / "collector.yaml")],
                       work / "collector.log", env=env)
    wait_until(lambda: port_open(cport), 30, "the collector listening", group)
    agent = group.start("agent", [python, "-m", "logflume", "agent", "-c", str(work / "agent.yaml")],
                        work / "agent.log", env=env)
    check, what = ready or ((lambda: True), "the agent's metrics endpoint")
    wait_until(lambda: acked_bytes(mport) >= 0 and check(), 30, what, group)
    return coll, agent


def acked_bytes(metrics_port: int) -> int:
    """Bytes the agent's collector sink has had acknowledged (its ``bytes_out`` counter)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1
    for labels, value in _BYTES_OUT.findall(text):
        if 'kind="sink"' in labels and f'component="{SINK_NAME}"' in labels:
            return int(float(value))
    return 0


def sink_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(finished, in-progress) SequenceFiles under the store root."""
    finished, partial = [], []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            (partial if p.name.startswith(("_", ".")) else finished).append(p)
    return finished, partial


def verify_store(root: Path, v: SeqVerifier) -> dict:
    """Feed every chunk of every finished sink file to ``v``; count chunks and duplicate chunks."""
    from logflume.sequencefile import SequenceFileReader

    finished, partial = sink_files(root)
    seen: set[tuple] = set()
    chunks = dup_chunks = 0
    stored = 0
    for p in finished:
        with open(p, "rb") as f:
            for c in SequenceFileReader(f).iter_chunks():
                chunks += 1
                ident = (c.source, c.stream, c.epoch, c.seq_id, len(c.data))
                if ident in seen:
                    dup_chunks += 1
                    continue
                seen.add(ident)
                stored += len(c.data)
                v.feed(c.data)
    return {"sink_files": len(finished), "in_progress_files": len(partial), "chunks": chunks,
            "duplicate_chunks": dup_chunks, "stored_data_bytes": stored,
            "sink_file_bytes": sum(p.stat().st_size for p in finished)}


def run_logflume(opts: LogflumeOptions, variant: Variant, work: Path, python: str, env: dict[str, str],
                 stall_timeout: float = 30.0, max_seconds: float = 900.0) -> Result:
    ds = variant.dataset
    res = Result(opts.name, variant.name, ds.total_bytes, ds.total_lines)
    res.extra["chunk_size"] = opts.chunk_size
    clear_dir(work)
    watch = work / "watch"
    watch.mkdir()
    cport, mport = free_port(), free_port()
    group = ProcGroup()
    writer = None
    ok = False
    try:
        coll, agent = start_logflume(group, opts, work, agent_config(opts, work, [str(watch / variant.pattern)], cport,
                                                                     mport), cport, mport, python, env)
        if opts.tap:
            group.start("tap", [python, "-m", "logflume", "tap", f"127.0.0.1:{mport}", "--component", "logs",
                                "--records", "5", "--rate", "1000", "--json"], work / "tap.log",
                        env={**env, "LOGFLUME_TAP_TOKEN": TAP_TOKEN})
            wait_until(lambda: "# tapping" in (work / "tap.log").read_text(), 30, "the tap attached", group)
        group.mark_start()
        t0, writer = variant.feed(watch, python, env, work)
        total = ds.total_bytes
        last, last_change = 0, time.monotonic()
        while True:
            n = acked_bytes(mport)
            now = time.monotonic()
            if n > last:
                last, last_change = n, now
            if n >= total:
                break
            group.sample()
            group.check_alive()
            writer_done = writer is None or not writer.alive()
            if writer_done and now - last_change > stall_timeout:
                res.notes.append(f"acks stalled at {last} of {total} bytes for {stall_timeout:.0f}s")
                break
            if now - t0 > max_seconds:
                res.notes.append(f"gave up after {max_seconds:.0f}s at {last} of {total} bytes acked")
                break
            time.sleep(0.05)
        t_acked = time.monotonic()
        group.sample()
        coll.stop(120)  # SIGTERM: finish in-flight batches, flush, close and rename sink files
        t_end = time.monotonic()
        res.seconds = t_end - t0
        res.extra["acked_seconds"] = t_acked - t0
        if coll.usage and coll.usage.exit_code not in (0, None):
            res.notes.append(f"collector exited with {coll.usage.exit_code}: {coll.log_tail(300)}")
        if writer is not None:
            writer.wait(120)
        agent.stop(30)
        res.add_usage(group.usages())
        if opts.tap:
            res.extra["tap_events"] = sum(1 for line in (work / "tap.log").read_text().splitlines()
                                          if '"type": "chunk"' in line)
        v = SeqVerifier(ds.total_lines)
        res.extra.update(verify_store(work / "collector" / "sink", v))
        res.lines_lost, res.duplicates = v.lost, v.duplicates
        if v.foreign:
            res.notes.append(f"{v.foreign} lines with sequence numbers outside the data set")
        if v.lost:
            res.notes.append(f"first missing sequence numbers: {v.first_missing()}")
        ok = not res.lines_lost
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        res.error = str(exc)[-500:]
        res.seconds = None
    finally:
        if writer is not None:
            writer.stop(5)
        group.stop_all(20)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for big in (watch, work / "collector" / "sink", work / "agent" / "channel"):
                shutil.rmtree(big, ignore_errors=True)  # keep configs and logs for a look
    return res


def python_env(repo: Path) -> dict[str, str]:
    """Environment for the repo's own processes: the repo importable, no output buffering."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_fanin(opts: LogflumeOptions, variant: Variant, work: Path, python: str, env: dict[str, str],
              stall_timeout: float = 30.0, max_seconds: float = 900.0) -> Result:
    """One collector, one agent per input file of ``variant`` (10 for ``multi``), all sending at once.

    Reports the collector's peak RSS while every agent sends, total MB/s, and verifies every line.
    """
    ds = variant.dataset
    res = Result(f"{opts.name}-{len(ds.files)}agents", variant.name, ds.total_bytes, ds.total_lines)
    res.extra["chunk_size"] = opts.chunk_size
    res.extra["agents"] = len(ds.files)
    clear_dir(work)
    watch = work / "watch"
    watch.mkdir()
    cport = free_port()
    (work / "collector.yaml").write_text(yaml.safe_dump(collector_config(opts, work, cport)))
    group = ProcGroup()
    ok = False
    try:
        coll = group.start("collector", [python, "-m", "logflume", "collector", "-c", str(work / "collector.yaml")],
                           work / "collector.log", env=env)
        wait_until(lambda: port_open(cport), 30, "the collector listening", group)
        mports = []
        for i, f in enumerate(ds.files):
            mport = free_port()
            aw = work / f"agent{i}"
            aw.mkdir()
            cfg = agent_config(opts, aw, [str(watch / Path(f).name)], cport, mport)
            cfg["agent"]["name"] = f"bench{i}"
            (aw / "agent.yaml").write_text(yaml.safe_dump(cfg))
            group.start(f"agent{i}", [python, "-m", "logflume", "agent", "-c", str(aw / "agent.yaml")],
                        aw / "agent.log", env=env)
            mports.append(mport)
        for m in mports:
            wait_until(lambda m=m: acked_bytes(m) >= 0, 60, "every agent's metrics endpoint", group)
        group.mark_start()
        t0, _ = variant.feed(watch, python, env, work)
        total = ds.total_bytes
        last, last_change = 0, time.monotonic()
        while True:
            n = sum(max(0, acked_bytes(m)) for m in mports)
            now = time.monotonic()
            if n > last:
                last, last_change = n, now
            if n >= total:
                break
            group.sample()
            group.check_alive()
            if now - last_change > stall_timeout:
                res.notes.append(f"acks stalled at {last} of {total} bytes for {stall_timeout:.0f}s")
                break
            if now - t0 > max_seconds:
                res.notes.append(f"gave up after {max_seconds:.0f}s at {last} of {total} bytes acked")
                break
            time.sleep(0.1)
        group.sample()
        coll.stop(120)
        res.seconds = time.monotonic() - t0
        group.stop_all(30)
        res.add_usage(group.usages())
        v = SeqVerifier(ds.total_lines)
        res.extra.update(verify_store(work / "collector" / "sink", v))
        res.lines_lost, res.duplicates = v.lost, v.duplicates
        if v.lost:
            res.notes.append(f"first missing sequence numbers: {v.first_missing()}")
        ok = not res.lines_lost
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        res.error = str(exc)[-500:]
        res.seconds = None
    finally:
        group.stop_all(20)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for big in (watch, work / "collector" / "sink"):
                shutil.rmtree(big, ignore_errors=True)
    return res
