"""One chaos run: deploy, write and inject faults for ``duration`` seconds, drain, archive, verify, summarize."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.chaos.deployment import AGENTS, COLLECTORS, REPO, Deployment, die_with_parent
from tests.chaos.faults import Injector, schedule
from tests.chaos.report import Summary
from tests.chaos.verify import count_lines, judge, sink_files

WRITERS_PER_AGENT = 2
FILES_PER_WRITER = 3


def run(*, duration: float, seed: int, workdir: Path | None = None, drain_timeout: float = 300.0,
        rate: float = 30.0, keep: bool = False, log=print) -> Summary:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"logflume-chaos-{seed}-"))
    root.mkdir(parents=True, exist_ok=True)
    log(f"chaos: seed {seed}, {duration:.0f}s of faults, working in {root}")
    dep = Deployment(root)
    writers: list[subprocess.Popen] = []
    problems: list[str] = []
    injector = Injector(dep, seed, log)
    try:
        dep.start()
        for agent in AGENTS:
            for i in range(WRITERS_PER_AGENT):
                prefix = f"{agent}-w{i}"
                writers.append(subprocess.Popen(
                    [sys.executable, "-m", "tests.chaos.writers", "--dir", str(dep.logs(agent)), "--prefix", prefix,
                     "--files", str(FILES_PER_WRITER), "--seed", str(seed), "--rate", str(rate),
                     "--positions", str(dep.positions(agent)), "--ledger", str(root / f"ledger-{prefix}.json")],
                    cwd=REPO, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL,
                    stderr=open(root / f"writer-{prefix}.log", "ab")))
        started = time.monotonic()
        injector.run(schedule(seed, duration), started, lambda: False)
        while time.monotonic() - started < duration:
            time.sleep(0.2)
        log(f"chaos: {len(injector.done)} faults injected; healing, stopping writers, draining")
        dep.heal()
        for w in writers:
            w.send_signal(signal.SIGTERM)
        for w in writers:
            if w.wait(60) != 0:
                problems.append(f"writer pid {w.pid} exited {w.returncode}")
        drain_start = time.monotonic()
        streak, why = 0, ""
        while streak < 2:
            if time.monotonic() - drain_start > drain_timeout:
                problems.append(f"not drained after {drain_timeout:.0f}s: {why}")
                break
            for name in (*AGENTS, *COLLECTORS):
                if not dep.procs[name].alive():
                    problems.append(f"{name} died during drain (exit {dep.procs[name].proc.returncode}): "
                                    f"{dep.procs[name].log_tail(500)}")
            dep.heal()
            ok, why = dep.drained()
            streak = streak + 1 if ok else 0
            time.sleep(1.0)
        drain_seconds = time.monotonic() - drain_start
        log(f"chaos: drained in {drain_seconds:.1f}s; stopping the deployment")
        for name, code in dep.stop().items():
            if code != 0:
                problems.append(f"{name} did not stop cleanly on SIGTERM (exit {code}): "
                                f"{dep.procs[name].log_tail(800)}")
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        dep.close()

    for name in COLLECTORS:
        sec = root / name / "secondary"
        left = [p.name for p in sec.rglob("*") if p.is_file() and p.suffix in (".seq", ".inprogress")] \
            if sec.exists() else []
        if left:
            problems.append(f"{name}: secondary not empty after drain: {left[:5]}")
        if (sec / "corrupt").exists():
            problems.append(f"{name}: secondary files set aside as corrupt: {list((sec / 'corrupt').iterdir())}")
    hidden = [str(p.relative_to(dep.primary)) for p in dep.primary.rglob("*") if p.name.endswith(".inprogress")]
    if hidden:
        problems.append(f"in-progress sink files left in the primary after SIGTERM: {hidden[:5]}")

    ledgers = {}
    rotations: Counter = Counter()
    for agent in AGENTS:
        written: dict[str, int] = {}
        windows: list[list] = []
        for i in range(WRITERS_PER_AGENT):
            doc = json.loads((root / f"ledger-{agent}-w{i}.json").read_text())
            written.update(doc["files"])
            rotations.update(doc["rotations"])
            windows += doc["windows"]
        ledgers[agent] = (written, windows)

    before = count_lines(sink_files(dep.primary))
    log(f"chaos: primary holds {before.files} sink files, {before.chunks} chunks; archiving")
    archive = root / "archive"
    proc = subprocess.run([sys.executable, "-m", "logflume", "archive", "--input", str(dep.primary),
                           "--output", str(archive), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=1800)
    log(f"chaos: {proc.stdout.strip()}")
    if proc.returncode != 0:
        problems.append(f"archive exited {proc.returncode}: {proc.stderr[-1000:]}")
    after = count_lines(sink_files(archive))

    v = judge(*ledgers["afile"], after.seen.get("afile", Counter()), after.corrupt.get("afile", 0))
    vb = judge(*ledgers["afile"], before.seen.get("afile", Counter()), before.corrupt.get("afile", 0))
    vm = judge(*ledgers["amem"], after.seen.get("amem", Counter()), after.corrupt.get("amem", 0))
    mem_killed = sum(1 for f in injector.done if f.kind == "kill_agent" and f.target == "amem")
    if v.lost:
        problems.append(f"file channel: {v.lost} lines lost; first missing: file {v.first_missing[0]}.log "
                        f"line {v.first_missing[1]}")
    if v.duplicated:
        problems.append(f"file channel: {v.duplicated} duplicate lines after archive")
    for name, verdict in (("file channel", v), ("memory channel", vm)):
        if verdict.corrupt:
            problems.append(f"{name}: {verdict.corrupt} damaged or partial lines in the archive")
        if verdict.unknown:
            problems.append(f"{name}: {verdict.unknown} lines in the archive that were never written")
    if vm.duplicated:
        problems.append(f"memory channel: {vm.duplicated} duplicate lines after archive")
    if vm.lost and not mem_killed:
        problems.append(f"memory channel: {vm.lost} lines lost although its agent was never killed; first missing: "
                        f"{vm.first_missing}")
    summary = Summary(
        seed=seed, duration=duration, faults=len(injector.done),
        fault_kinds=dict(Counter(f.kind for f in injector.done)), lines=v.written, lost=v.lost,
        duplicated_after_archive=v.duplicated, duplicates_before_archive=vb.duplicated,
        drain_seconds=round(drain_seconds, 1), corrupt=v.corrupt + vm.corrupt,
        ct_window=v.lost_in_ct_window, mem_lines=vm.written, mem_lost=vm.lost + vm.lost_in_ct_window,
        mem_duplicated_after_archive=vm.duplicated, mem_killed=mem_killed,
        try_later=dep.count_in_logs(AGENTS, "TRY_LATER"), rotations=dict(rotations),
        first_missing=f"{v.first_missing[0]}.log line {v.first_missing[1]}" if v.first_missing else None,
        peak_rss_mib=dep.peaks_mib(), problems=problems,
    )
    summary.write(root / "summary.json")
    for p in problems:
        log(f"chaos: PROBLEM: {p}")
    if summary.passed and not keep:
        shutil.rmtree(root / "archive", ignore_errors=True)
        shutil.rmtree(root / "primary", ignore_errors=True)
        shutil.rmtree(root / "logs", ignore_errors=True)
        for agent in AGENTS:
            shutil.rmtree(root / agent / "channel", ignore_errors=True)
    return summary
