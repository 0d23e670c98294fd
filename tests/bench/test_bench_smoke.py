"""Keeps the end-to-end benchmark harness working: a tiny real run, plus its verifier's own checks.

The run is the real thing at 8 MiB: generated logs, the loopback limit copy, a real agent and
collector process (memory channel, store sync on), rsyslog and syslog-ng when installed, and
every contender's output verified line by line by the harness.  Peers that are not installed are
left out (CI machines get them from bench/setup_peers.sh; the test never installs anything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.e2e.generator import LINE_SIZE, generate, make_line
from bench.e2e.measure import Result, SeqVerifier
from bench.e2e.peers import Rsyslog, SyslogNg
from bench.e2e.report import machine, write_results
from bench.run import interleave

REPO = Path(__file__).resolve().parents[2]


def _bench(args: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "bench", *args, "--work-dir", str(tmp / "work"),
                           "--results-dir", str(tmp / "results"), "--no-setup"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(200)
def test_tiny_run_verifies_every_line(tmp_path: Path) -> None:
    only = ["limit", "logflume"]
    only += [p.name for p in (Rsyslog(), SyslogNg()) if p.available() is None]
    proc = _bench(["--size-mb", "8", "--only", ",".join(only), "--variants", "single",
                   "--channels", "memory", "--sync", "on"], tmp_path, 180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results" / "latest.json").read_text())
    runs = [r for r in doc["results"] if not (r["contender"] == "limit-socat" and r["error"] == "socat not installed")]
    order = [r["contender"] for r in runs if r["contender"] != "limit-socat"]
    # Three limit runs, interleaved: one first, one last, one between the contenders.
    assert order[0] == order[-1] == "limit" and order.count("limit") == 3, order
    assert order[1] != "limit" and order[-2] != "limit", order
    assert [r["limit_run"] for r in runs if r["contender"] == "limit"] == [0, 1, 2]
    results = {r["contender"]: r for r in runs}
    assert set(results) - {"limit-socat"} == {"limit", "logflume-memory-syncon", *only[2:]}
    # Every run started after dirty pages were written back, and says what it found.
    for r in doc["results"]:
        assert {"dirty_before", "dirty_after", "settled", "settle_seconds"} <= set(r["settle"]), r
        assert r["loadavg_1m_before"] >= 0
    lim = doc["limits"]["single"]
    speeds = sorted(r["mb_s"] for r in runs if r["contender"] == "limit")
    assert lim["best"] == speeds[-1] and lim["median"] == speeds[1]
    assert doc["valid"] == (not doc["invalid_reasons"])
    assert doc["valid"] == all(r["mb_s"] <= lim["best"] for r in runs if not r["contender"].startswith("limit"))
    expected_lines = (8 << 20) // LINE_SIZE
    for name, r in results.items():
        assert r["error"] is None, (name, r["error"])
        assert r["lines"] == expected_lines
        assert r["lines_lost"] == 0, (name, r["notes"])
        assert r["mb_s"] > 0 and r["cpu_s_per_gb"] > 0
        assert r["peak_rss_bytes"] and all(v > 0 for v in r["peak_rss_bytes"].values()), name
    lf = results["logflume-memory-syncon"]
    assert lf["stored_data_bytes"] == expected_lines * LINE_SIZE
    assert lf["in_progress_files"] == 0 and lf["sink_files"] >= 1
    assert set(lf["peak_rss_bytes"]) == {"agent", "collector"}
    ratio = doc["ratios"]["logflume-memory-syncon/single"]
    assert ratio["limit"] == pytest.approx(lf["mb_s"] / lim["best"])
    assert ratio["limit_median"] == pytest.approx(lf["mb_s"] / lim["median"])
    md = (tmp_path / "results" / "latest.md").read_text()
    assert "| single | logflume-memory-syncon |" in md and "CPU s/GB" in md
    assert "| single | limit (run 3) |" in md and "| variant | limit runs MB/s" in md
    assert ("INVALID RUN" in md) == (not doc["valid"])
    # Scratch data of the run is cleaned up; only the cached inputs stay.
    assert not list((tmp_path / "work").glob("run-*/watch/*"))


@pytest.mark.timeout(200)
def test_small_event_and_latency_cases_run_and_verify(tmp_path: Path) -> None:
    proc = _bench(["--size-mb", "4", "--only", "events,latency", "--events", "20000", "--latency-rate", "2000",
                   "--latency-seconds", "2"], tmp_path, 180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results" / "latest.json").read_text())
    peers = {p.name for p in (Rsyslog(), SyslogNg()) if p.available() is None}
    events = {r["case"]: r for r in doc["events"]["rows"]}
    # The default (compiled scanner where it was built) and the pure-Python path, in the same run; the same
    # messages through the forward and http sources.
    assert set(events) == {"logflume", "logflume-pure-python", "logflume-forward", "logflume-http", *peers}
    assert "pure Python" in events["logflume-pure-python"]["contender"]
    for name, r in events.items():
        assert "error" not in r, (name, r)
        assert r["events"] == 20000 and r["lines_lost"] == 0 and r["events_s"] > 0, (name, r)
    latency = doc["latency"]["rows"]
    # tail: defaults; quiet_flush 5ms; flush_interval 500ms, 200ms, 50ms, both off; syslog: defaults, before
    assert len(latency) == 5 + len(peers) + 2
    for r in latency:
        assert "error" not in r, r
        assert r["lines"] == 4000 and r["lines_lost"] == 0, r
        assert 0 < r["p50_s"] <= r["p99_s"] <= r["max_s"] < 10, r
    for label in ("flush_interval 200ms, caught_up_flush 0s",
                  "flush_interval 500ms, caught_up_flush 20ms, quiet_flush 0s", "quiet_flush 5ms",
                  "syslog source over TCP (defaults"):
        fast = next(r for r in latency if label in r["contender"])
        assert fast["p99_s"] < 1.0, fast  # a line is at the collector well within a second
    md = (tmp_path / "results" / "latest.md").read_text()
    assert "Small events" in md and "Latency at a fixed rate" in md
    if "rsyslog" in peers:  # each source as installed is held to rsyslog's rate, met or missed
        for case in ("logflume", "logflume-forward", "logflume-http"):
            assert f"- {events[case]['contender']}: " in md and "× rsyslog" in md, case


def test_a_contender_faster_than_the_limit_marks_the_run_invalid(tmp_path: Path) -> None:
    def run(contender: str, mb_s: float, k: int | None = None) -> Result:
        r = Result(contender, "single", int(mb_s * 1e6), 1000, seconds=1.0, lines_lost=0, duplicates=0)
        if k is not None:
            r.extra["limit_run"] = k
        return r

    meta = {"date": "d", "machine": machine(), "size_bytes": 1 << 20, "line_size": LINE_SIZE, "wall_seconds": 1.0,
            "loadavg_at_start": [0.0], "loadavg_at_end": [0.0]}
    honest = [run("limit", 2000, 0), run("logflume-memory-syncoff", 650), run("limit", 2400, 1),
              run("rsyslog", 65), run("limit", 2200, 2)]
    md, js = write_results(tmp_path / "ok", honest, meta)
    doc = json.loads(js.read_text())
    assert doc["valid"] is True and doc["invalid_reasons"] == []
    assert doc["limits"]["single"]["best"] == pytest.approx(2400) and doc["limits"]["single"]["median"] == 2200
    assert doc["ratios"]["logflume-memory-syncoff/single"]["limit"] == pytest.approx(650 / 2400)
    assert "INVALID" not in md.read_text()
    # The old limit: write-back made it slower than the shipper it was meant to bound.
    beaten = [run("limit", 425, 0), run("logflume-memory-syncoff", 658), run("limit", 430, 1), run("limit", 420, 2)]
    md, js = write_results(tmp_path / "bad", beaten, meta)
    doc = json.loads(js.read_text())
    assert doc["valid"] is False
    assert doc["invalid_reasons"] == ["logflume-memory-syncoff/single moved 658 MB/s, more than the best limit run "
                                      "(430 MB/s)"]
    text = md.read_text()
    assert "**INVALID RUN" in text and "**beats the limit: run invalid**" in text


@pytest.mark.parametrize(("contenders", "runs", "expected"), [
    (4, 3, "L C C L C C L"), (5, 3, "L C C L C C C L"), (1, 3, "L L C L"), (0, 3, "L L L"),
    (6, 4, "L C C L C C L C C L"),
])
def test_limit_runs_are_spread_over_the_contenders(contenders: int, runs: int, expected: str) -> None:
    order = [f() for f in interleave([lambda: "C"] * contenders, lambda k: "L", runs)]
    assert " ".join(order) == expected


@pytest.mark.timeout(200)
def test_udp_burst_case_reports_loss_and_the_granted_buffer(tmp_path: Path) -> None:
    proc = _bench(["--only", "udp", "--udp-datagrams", "500", "--udp-rounds", "1"], tmp_path, 180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results" / "latest.json").read_text())
    rows = {r["contender"]: r for r in doc["udp"]["rows"]}
    assert {"logflume (default 8MiB)", "logflume (udp_receive_buffer null)"} <= set(rows)
    ours = rows["logflume (default 8MiB)"]
    with open("/proc/sys/net/core/rmem_max") as f:
        granted = 2 * min(8 << 20, int(f.read()))
    assert ours["rcvbuf_bytes"] == ours["granted_gauge"] == granted
    assert len(ours["received"]) == 1
    if granted >= 500 * 2048:  # the burst fits the grant (a small datagram takes up to ~2 KiB of it)
        assert ours["received"] == [500] and ours["lost_median"] == 0, ours
    if Rsyslog().available() is None:
        assert rows["rsyslog (defaults)"]["rcvbuf_bytes"] > 0
    assert "UDP bursts" in (tmp_path / "results" / "latest.md").read_text()


@pytest.mark.timeout(200)
def test_udp_rate_case_counts_each_step_at_the_far_end(tmp_path: Path) -> None:
    proc = _bench(["--only", "udp-rate", "--udp-rates", "2000", "--udp-rate-seconds", "0.5"], tmp_path, 180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results" / "latest.json").read_text())
    rows = {r["case"]: r for r in doc["udp-rate"]["rows"]}
    ours = rows["logflume"]
    assert "error" not in ours, ours
    [step] = ours["steps"]
    assert step["sent"] == 1000 and 0 < step["received"] <= 1000  # through agent, collector, store, by number
    with open("/proc/sys/net/core/rmem_max") as f:
        granted = 2 * min(8 << 20, int(f.read()))
    if granted >= 1000 * 2048:  # the whole step fits the socket's buffer: nothing may be lost
        assert step["received"] == 1000 and ours["events_s"] == step["sent_rate"] > 0, ours
    if Rsyslog().available() is None:
        assert 0 < rows["rsyslog"]["steps"][0]["received"] <= 1000
    assert "UDP sustained rate" in (tmp_path / "results" / "latest.md").read_text()


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    proc = _bench(["--only", "limit,bogus"], tmp_path, 60)
    assert proc.returncode == 2
    assert "--only: unknown bogus" in proc.stderr
    proc = _bench(["--size-mb", "0"], tmp_path, 60)
    assert proc.returncode == 2 and "--size-mb must be at least 1" in proc.stderr
    proc = _bench(["--channels", "disk"], tmp_path, 60)
    assert proc.returncode == 2 and "--channels: unknown 'disk'" in proc.stderr
    proc = _bench(["--limit-runs", "0"], tmp_path, 60)
    assert proc.returncode == 2 and "--limit-runs must be at least 1" in proc.stderr


def test_verifier_counts_lost_duplicated_and_foreign_lines(tmp_path: Path) -> None:
    v = SeqVerifier(10)
    out = tmp_path / "out.log"
    # Lines 0..9 but 3 and 7 missing, 5 twice, one sequence number outside the data set, and a
    # peer-style header in front of every line (verification must not depend on the format).
    lines = [b"<13>Nov 25 host app: " + make_line(s) for s in (0, 1, 2, 4, 5, 5, 6, 8, 9, 12)]
    out.write_bytes(b"".join(lines))
    v.feed_file(out, block=300)  # blocks smaller than a line: cuts must never split a number
    assert v.lost == 2 and v.first_missing() == [3, 7]
    assert v.duplicates == 1 and v.foreign == 1 and v.present == 8


def test_generated_lines_are_fixed_size_and_unique(tmp_path: Path) -> None:
    ds = generate(tmp_path, 3 * LINE_SIZE * 10 + 5, files=3)
    assert ds.counts == [10, 10, 10] and ds.first_seqs == [0, 10, 20]
    v = SeqVerifier(ds.total_lines)
    for f in ds.files:
        data = Path(f).read_bytes()
        assert len(data) == 10 * LINE_SIZE and data.count(b"\n") == 10
        v.feed(data)
    assert v.lost == 0 and v.duplicates == 0
    again = generate(tmp_path, 3 * LINE_SIZE * 10 + 5, files=3)  # cached: same files, not rewritten
    assert again == ds
