"""kill -9 of a running `logflume archive` at random points, then a re-run: the same archive, byte for byte."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.jobs.conftest import ROOT, cli_command, make_sink_set
from tests.jobs.test_archive import archive_files, check_exactly_once


def _committed_batches(out: Path) -> int:
    try:
        return json.loads((out / "_manifest" / "manifest.json").read_text())["batches"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _kill_and_rerun(tmp_path: Path, kills: int, seed: int) -> None:
    sinks = make_sink_set(tmp_path / "sink", seed=seed, n_streams=12, lines=1500, collectors=3,
                          files_per_collector=8)
    args = ["archive", "--input", str(sinks.root), "--batch-size", "1", "--no-progress"]
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    done = subprocess.run(cli_command(*args, "--output", str(ref)), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # 24 batches take ~25 s idle, > 120 s at load 29
    duration = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    total = _committed_batches(ref)
    assert total == 24
    expected = archive_files(ref)

    rng = random.Random(seed)
    out = tmp_path / "crashed"
    mid_run = 0
    finished = False
    per_batch = duration / total / 2  # the run time includes interpreter start-up
    for _ in range(kills):
        # a random batch to reach, then a random moment inside the next one: kills land anywhere
        target = min(_committed_batches(out) + rng.randint(0, 2), total - 1)
        proc = subprocess.Popen(cli_command(*args, "--output", str(out)), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and _committed_batches(out) < target and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, per_batch))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == 0:
            finished = True
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        if 0 < _committed_batches(out) < total:
            mid_run += 1
    if not finished:
        again = subprocess.run(cli_command(*args, "--output", str(out)), cwd=ROOT, capture_output=True, text=True,
                               timeout=600)  # 24 batches take ~25 s idle, > 120 s at load 29
        assert again.returncode == 0, again.stderr
    print(f"kills landing mid-run: {mid_run}")
    assert mid_run >= 1, "no kill landed between two commits; the test proved nothing"
    assert archive_files(out) == expected
    assert not (out / "_manifest" / "pending.json").exists()
    check_exactly_once(sinks, out)


@pytest.mark.timeout(900)  # ~55 s idle; the runs it times out itself allow for a busy machine
def test_kill_9_at_random_points_then_rerun_gives_identical_archive(tmp_path: Path) -> None:
    _kill_and_rerun(tmp_path, kills=6, seed=11)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_many_kills(tmp_path: Path, seed: int) -> None:
    _kill_and_rerun(tmp_path, kills=30, seed=seed)
