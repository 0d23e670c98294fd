"""End-to-end benchmark: logflume against the physical limit, rsyslog and syslog-ng, in one run.

    python -m bench [--size-mb 1024] [--only limit,logflume,rsyslog,syslog-ng,fanin,events,latency,udp,udp-rate]
                    [--variants single,multi,rotate] [--limit-runs 3] [--tap off,on]

Every contender moves the same generated log lines (``bench/e2e/generator.py``) from files on
this machine over loopback TCP into files, and is timed until every byte is written (durable in
finished sink files, for logflume), then verified line by line.  Before each run the harness
syncs and waits for dirty pages to be written back; the limit runs several times, interleaved with
the contenders, and a run where a contender beats the limit is marked invalid.  Results go to
``bench/results/latest.{md,json}`` (and dated copies).  See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.e2e.generator import LINE_SIZE, warm_page_cache
from bench.e2e.latency import run_latency_cases
from bench.e2e.limit import run_limit, run_socat
from bench.e2e.logflume_contender import LogflumeOptions, python_env, run_fanin, run_logflume
from bench.e2e.measure import Result
from bench.e2e.peers import PEERS, run_peer
from bench.e2e.report import machine, write_results
from bench.e2e.settle import settle
from bench.e2e.small_events import run_event_cases, syslog_latency_cases
from bench.e2e.udp_burst import run_udp_cases
from bench.e2e.udp_rate import RATES as UDP_RATES
from bench.e2e.udp_rate import run_udp_rate_cases
from bench.e2e.variants import make_variants

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CONTENDERS = ("limit", "logflume", "rsyslog", "syslog-ng", "fanin")
CASES = ("events", "latency", "udp", "udp-rate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="MiB of log lines per variant (default 1024)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(CONTENDERS + CASES))
    ap.add_argument("--variants", default="single,multi,rotate", help="comma-separated: single, multi, rotate")
    ap.add_argument("--channels", default="memory,file", help="logflume channel variants (memory, file)")
    ap.add_argument("--sync", default="on,off", help="collector store sync variants: on (every_batch), off (none)")
    ap.add_argument("--tap", default="off", help="logflume with a tap attached to its source: off, on, or off,on "
                                                  "(both in the same run, to measure what tapping costs)")
    ap.add_argument("--chunk-size-mb", type=int, default=64, help="tail source chunk_size in MiB (default 64)")
    ap.add_argument("--flush-interval", default="500ms",
                    help="tail source flush_interval (default 500ms, its default)")
    ap.add_argument("--caught-up-flush", default="20ms",
                    help="tail source caught_up_flush values, comma-separated: each logflume contender runs once per "
                         "value (default 20ms, its default; 0s: off, as before issue 20)")
    ap.add_argument("--quiet-flush", default="0s",
                    help="tail source quiet_flush values, comma-separated: each logflume contender runs once per "
                         "value (default 0s: off, its default)")
    ap.add_argument("--direct-io", default="auto",
                    help="collector store direct_io values (auto, on, off), comma-separated: each logflume "
                         "contender runs once per value (default auto: O_DIRECT with sync on)")
    ap.add_argument("--rotate-seconds", type=float, default=0.25,
                    help="rotation variant: rename the file and create a new one this often (default 0.25)")
    ap.add_argument("--rotate-rate-mb", type=float, default=0.0,
                    help="rotation variant: writer rate in MB/s (default 0: as fast as it can)")
    ap.add_argument("--events", type=int, default=1_000_000,
                    help="small-event case: syslog messages to send (capped at size/200; default 1,000,000)")
    ap.add_argument("--latency-rate", type=int, default=10_000, help="latency case: lines/s (default 10,000)")
    ap.add_argument("--latency-seconds", type=float, default=15.0, help="latency case: seconds per contender")
    ap.add_argument("--latency-flush", default="500ms,200ms,50ms",
                    help="latency case: tail flush_interval values for logflume with caught_up_flush and quiet_flush "
                         "off (as before issue 20), besides logflume at its defaults and with quiet_flush 5ms "
                         "(default 500ms,200ms,50ms)")
    ap.add_argument("--limit-runs", type=int, default=3,
                    help="runs of the limit per variant, interleaved with the contenders (default 3)")
    ap.add_argument("--udp-datagrams", type=int, default=2000, help="UDP burst case: datagrams per burst")
    ap.add_argument("--udp-rounds", type=int, default=3, help="UDP burst case: bursts per contender")
    ap.add_argument("--udp-rate-seconds", type=float, default=2.0,
                    help="UDP sustained-rate case: seconds each offered rate is sent")
    ap.add_argument("--udp-rates", type=lambda v: tuple(int(x) for x in v.split(",")), default=UDP_RATES,
                    help="UDP sustained-rate case: offered rates, datagrams a second, comma-separated "
                         f"(default {','.join(map(str, UDP_RATES))})")
    ap.add_argument("--work-dir", default=str(BENCH / "work"), help="scratch space (inputs are cached here)")
    ap.add_argument("--results-dir", default=str(BENCH / "results"), help="where latest.md/latest.json go")
    ap.add_argument("--no-setup", action="store_true", help="do not run setup_peers.sh when a peer is missing")
    args = ap.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x] or list(CONTENDERS + CASES)
    unknown = set(args.only) - set(CONTENDERS + CASES)
    if unknown:
        ap.error(f"--only: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(CONTENDERS + CASES)}")
    args.variants = [x for x in args.variants.split(",") if x]
    args.channels = [x for x in args.channels.split(",") if x]
    args.sync = [x for x in args.sync.split(",") if x]
    for c in args.channels:
        if c not in ("memory", "file"):
            ap.error(f"--channels: unknown {c!r}; expected memory or file")
    for s in args.sync:
        if s not in ("on", "off"):
            ap.error(f"--sync: unknown {s!r}; expected on or off")
    args.tap = [x for x in args.tap.split(",") if x]
    for t in args.tap:
        if t not in ("on", "off"):
            ap.error(f"--tap: unknown {t!r}; expected on or off")
    if args.size_mb < 1:
        ap.error("--size-mb must be at least 1")
    if args.limit_runs < 1:
        ap.error("--limit-runs must be at least 1 (3 or more for a best and a median)")
    args.latency_flush = [x for x in args.latency_flush.split(",") if x]
    args.quiet_flush = [x for x in args.quiet_flush.split(",") if x] or ["0s"]
    args.caught_up_flush = [x for x in args.caught_up_flush.split(",") if x] or ["20ms"]
    args.direct_io = [x for x in args.direct_io.split(",") if x] or ["auto"]
    for d in args.direct_io:
        if d not in ("auto", "on", "off"):
            ap.error(f"--direct-io: unknown {d!r}; expected auto, on or off")
    return args


def peer_versions() -> dict[str, str]:
    out = {}
    for name, cls in PEERS.items():
        peer = cls()
        if peer.available():
            continue
        try:
            text = subprocess.run([peer.binary, "-v" if name == "rsyslog" else "--version"], capture_output=True,
                                  text=True, timeout=10, env=peer.env()).stdout
            first = text.splitlines()[0] if text else ""
            out[name] = first.split()[1].rstrip(",") if name == "rsyslog" else first.split()[-1].strip("()")
        except (OSError, subprocess.SubprocessError, IndexError):
            out[name] = "?"
    return out


def ensure_peers(wanted: list[str], allow_setup: bool) -> None:
    missing = [n for n in wanted if n in PEERS and PEERS[n]().available()]
    if missing and allow_setup:
        print(f"bench: {', '.join(missing)} missing: running bench/setup_peers.sh", flush=True)
        subprocess.run(["bash", str(BENCH / "setup_peers.sh")], check=False)


def logflume_options(args: argparse.Namespace) -> list[LogflumeOptions]:
    return [LogflumeOptions(channel=c, sync="every_batch" if s == "on" else "none",
                            chunk_size=args.chunk_size_mb << 20, flush_interval=args.flush_interval, tap=t == "on",
                            quiet_flush=q, caught_up_flush=u, direct_io=d)
            for c in args.channels for s in args.sync for t in args.tap for q in args.quiet_flush
            for u in args.caught_up_flush for d in args.direct_io]


def interleave(contenders: list, limit: Callable[[int], Any], runs: int) -> list:
    """``runs`` limit runs spread over the contenders: one first, one last, the rest between."""
    n = len(contenders)
    at = [round(i * n / (runs - 1)) for i in range(runs)] if runs > 1 else [0]
    out: list = []
    k = 0
    for i in range(n + 1):
        while k < runs and at[k] == i:
            out.append(lambda k=k: limit(k))
            k += 1
        if i < n:
            out.append(contenders[i])
    return out


def measured(run: Callable[[], Result]) -> Result:
    """Write back dirty pages first (so a run never pays for the one before), note the load, run."""
    st = settle()
    load = os.getloadavg()[0]
    r = run()
    r.extra["loadavg_1m_before"] = load
    r.extra["settle"] = st
    if not st["settled"]:
        r.notes.append(f"dirty pages did not settle before the run ({(st['dirty_after'] + st['writeback_after']) >> 20}"
                       f" MiB dirty after {st['settle_seconds']:.0f} s)")
    return r


def print_result(r: Result) -> None:
    if r.error:
        print(f"  {r.contender:28s} {r.variant:7s} not measured: {r.error.splitlines()[-1][:160]}", flush=True)
        return
    rss = " ".join(f"{k}={v >> 20}MiB" for k, v in r.peak_rss.items())
    print(f"  {r.contender:28s} {r.variant:7s} {r.mb_s:9.1f} MB/s {r.lines_s:12,.0f} lines/s "
          f"{r.cpu_s_per_gb:6.1f} CPU s/GB  lost {r.lines_lost}  dups {r.duplicates}  {rss}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Contenders run in their own sessions; SIGTERM must unwind through the runs' cleanup
    # (which stops every process they started) instead of leaving them behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    load_start = list(os.getloadavg())
    work = Path(args.work_dir)
    python = sys.executable
    env = python_env(REPO)
    size = args.size_mb << 20
    ensure_peers(args.only, not args.no_setup)
    print(f"bench: generating {args.size_mb} MiB per variant in {work / 'data'}", flush=True)
    variants = make_variants(work / "data", size, args.variants, args.rotate_seconds, args.rotate_rate_mb * 1e6)
    results: list[Result] = []
    extra: dict = {}
    for v in variants:
        print(f"bench: variant {v.name}: {v.description}", flush=True)
        warm_page_cache(v.dataset)
        runs = []
        if "logflume" in args.only:
            for o in logflume_options(args):
                runs.append(lambda v=v, o=o: run_logflume(o, v, work / "run-logflume", python, env))
        if "fanin" in args.only and v.name == "multi":
            o = LogflumeOptions(channel="memory", sync="every_batch", chunk_size=args.chunk_size_mb << 20)
            runs.append(lambda v=v, o=o: run_fanin(o, v, work / "run-fanin", python, env))
        for name in ("rsyslog", "syslog-ng"):
            if name in args.only:
                runs.append(lambda v=v, name=name: run_peer(PEERS[name](), v, work / f"run-{name}", python, env))
        if "limit" in args.only and not v.rotating:
            def limit(k: int, v=v) -> list[Result]:
                ds = v.dataset
                out = [measured(lambda: run_limit(ds.files, ds.total_lines, ds.total_bytes, v.name,
                                                  work / "run-limit", python, env))]
                out[0].extra["limit_run"] = k
                if k == 0 or shutil.which("socat"):  # "not installed" is reported once
                    out.append(measured(lambda: run_socat(ds.files, ds.total_lines, ds.total_bytes, v.name,
                                                          work / "run-socat", python, env)))
                return out
            runs = [lambda r=r: measured(r) for r in runs]
            runs = interleave(runs, limit, args.limit_runs)
        else:
            runs = [lambda r=r: measured(r) for r in runs]
        for run in runs:
            got = run()
            for r in got if isinstance(got, list) else [got]:
                print_result(r)
                results.append(r)
    tables: list[str] = []
    if "events" in args.only:
        print("bench: small events: syslog, forward and http over TCP", flush=True)
        events = max(10_000, min(args.events, size // 200))
        extra["events"] = run_event_cases(work, events, python, env)
        tables += extra["events"]["tables"]
    if "latency" in args.only:
        print(f"bench: latency at {args.latency_rate:,} lines/s for {args.latency_seconds:.0f} s", flush=True)
        extra["latency"] = run_latency_cases(args, work, python, env, args.latency_rate, args.latency_seconds,
                                             more=syslog_latency_cases(python, env))
        tables += extra["latency"]["tables"]
    if "udp" in args.only:
        print(f"bench: UDP bursts of {args.udp_datagrams:,} datagrams, {args.udp_rounds} rounds", flush=True)
        extra["udp"] = run_udp_cases(work, args.udp_datagrams, args.udp_rounds, python, env)
        tables += extra["udp"]["tables"]
    if "udp-rate" in args.only:
        print(f"bench: UDP sustained rate, {args.udp_rate_seconds:g} s per offered rate", flush=True)
        extra["udp-rate"] = run_udp_rate_cases(work, args.udp_rate_seconds, python, env, args.udp_rates)
        tables += extra["udp-rate"]["tables"]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "size_bytes": size, "line_size": LINE_SIZE, "peer_versions": peer_versions(),
        "variants": {v.name: v.description for v in variants},
        "args": {k: v for k, v in vars(args).items()},
        "wall_seconds": time.monotonic() - t_start,
        "loadavg_at_start": load_start, "loadavg_at_end": list(os.getloadavg()),
    }
    md, js = write_results(Path(args.results_dir), results, meta, extra, tables)
    print(f"bench: results in {md} and {js}", flush=True)
    print(md.read_text())
    json.loads(js.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
