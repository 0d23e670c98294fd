"""The README's first command: quickstart runs agent + collector on loopback and every line arrives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from logflume.sequencefile import SequenceFileReader

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "logflume", "quickstart", "--data-dir", str(tmp_path), "--seconds", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "missing: 0" in res.stdout
    written = (tmp_path / "logs" / "access.log").read_bytes().splitlines(keepends=True)
    stored = []
    for path in sorted((tmp_path / "store").rglob("*.seq")):
        assert not path.name.startswith((".", "_")), "quickstart stops gracefully: no in-progress files left"
        with open(path, "rb") as f:
            for chunk in SequenceFileReader(f).iter_chunks():
                assert chunk.source == "quickstart-agent" and chunk.datatype == "NginxAccess"
                stored.extend(bytes(r) for r in chunk.records())
    assert len(written) == 20000
    assert sorted(set(stored)) == sorted(set(written))
    # the configs it wrote are valid for `logflume check`
    for name in ("agent.yaml", "collector.yaml"):
        chk = subprocess.run([sys.executable, "-m", "logflume", "check", "-c", str(tmp_path / name)],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        assert chk.returncode == 0, chk.stderr
