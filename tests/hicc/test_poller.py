"""The poller: targets from the config and from files (re-read when they change), down targets and their errors."""

from __future__ import annotations

import os

from hicc.config import build_hicc_config
from hicc.poller import Poller
from hicc.timeseries import TimeSeries
from tests.conftest import free_port


def test_targets_file_is_reread_and_a_bad_file_keeps_the_known_targets(tmp_path):
    targets = tmp_path / "agents"
    targets.write_text("# agents\n127.0.0.1:9001\n[::1]:9002  # v6\n")
    port = free_port()  # nothing listens there
    cfg = build_hicc_config({"hicc": {"data_dir": str(tmp_path), "agents": [f"127.0.0.1:{port}"],
                                      "agents_file": str(targets), "poll_timeout": "1s"}}).values
    series = TimeSeries(str(tmp_path / "t.sqlite"), 3600, 64 * 1024 * 1024)
    poller = Poller(cfg, series)
    assert {t.address for t in poller.snapshot("agent")} == {"127.0.0.1:9001", f"127.0.0.1:{port}", "[::1]:9002"}
    targets.write_text("127.0.0.1:9003\n")
    os.utime(targets, (1, 1))
    poller.poll_once()
    assert {t.address for t in poller.snapshot("agent")} == {f"127.0.0.1:{port}", "127.0.0.1:9003"}
    down = next(t for t in poller.snapshot() if t.address == f"127.0.0.1:{port}")
    assert down.state == "down" and down.error.startswith("unreachable") and down.last_ok is None
    targets.write_text("not a target\n")
    os.utime(targets, (2, 2))
    poller.poll_once()
    assert {t.address for t in poller.snapshot("agent")} == {f"127.0.0.1:{port}", "127.0.0.1:9003"}
    assert series.rows() == 2 * 2
