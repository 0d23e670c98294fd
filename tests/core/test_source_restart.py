"""A ThreadedSource whose ``run`` raises is started again, with a backoff, instead of going silent."""

from __future__ import annotations

import time

import logflume.source
from tests.conftest import wait_for
from tests.sources.pipeline import metric, pipeline


def test_a_failed_source_runs_again_and_delivers(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(logflume.source, "RESTART_FIRST", 0.2)
    with pipeline(tmp_path, {"type": "tests.core.plugins:FailingSource", "failures": 2}) as agent:
        sink = agent.sinks["out"]
        wait_for(lambda: len(sink.chunks) == 3, 15, message="three runs' chunks")
        src = agent.sources["src"]
        assert src.runs == 3
        assert [bytes(c.data) for c in sink.chunks] == [b"run 1\n", b"run 2\n", b"run 3\n"]
        assert metric(agent, "errors") == 2
    assert "source src failed; starting it again in 0s" in caplog.text
    assert "RuntimeError: failure 2" in caplog.text


def test_a_source_that_keeps_failing_backs_off_and_stops_promptly(tmp_path, monkeypatch):
    monkeypatch.setattr(logflume.source, "RESTART_FIRST", 0.1)
    monkeypatch.setattr(logflume.source, "RESTART_MAX", 0.4)
    with pipeline(tmp_path, {"type": "tests.core.plugins:FailingSource", "failures": 10**6}) as agent:
        src = agent.sources["src"]
        time.sleep(2.0)
        # 0.1 + 0.2 + 0.4 + 0.4 ... : a few runs in 2 s, not a busy loop
        assert 3 <= src.runs <= 8, src.runs
        started = time.monotonic()
    assert time.monotonic() - started < 5  # stopping ends the wait between runs
    assert not src.alive
