"""`logflume quickstart` starts HICC beside the agent and collector and prints its URL."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.timeout(240)


def test_quickstart_prints_the_console_url_and_runs_it(tmp_path):
    res = subprocess.run([sys.executable, "-m", "logflume", "quickstart", "--data-dir", str(tmp_path),
                          "--seconds", "1"], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"console \(HICC\): http://127\.0\.0\.1:\d+/", res.stdout), res.stdout
    assert "hicc ready: http://127.0.0.1:" in (tmp_path / "hicc.log").read_text()
    chk = subprocess.run([sys.executable, "-m", "logflume", "check", "-c", str(tmp_path / "hicc.yaml")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert chk.returncode == 0, chk.stderr


def test_keep_running_serves_the_console_until_interrupted(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "logflume", "quickstart", "--data-dir", str(tmp_path),
                             "--seconds", "1", "--keep-running"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO)
    try:
        lines: list[str] = []

        def running():
            line = proc.stdout.readline()
            lines.append(line)
            return line.startswith("running: open ") or proc.poll() is not None

        wait_for(running, 180, interval=0, message="quickstart running")
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[-1]).group(0)
        with urllib.request.urlopen(url + "records?text=GET", timeout=30) as resp:
            page = resp.read().decode()
        assert "matching record(s)" in page and "quickstart-agent" in page, "archive and demux ran"
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        assert proc.wait(60) == 0
        assert time.monotonic() - t0 < 60
    finally:
        if proc.poll() is None:
            proc.kill()
