"""An in-process agent (real channel, runner and sink) around one source under test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.agent import Agent
from logflume.component import Context
from logflume.metrics import Metrics
from logflume.topology import build_topology


@contextlib.contextmanager
def pipeline(tmp_path: Path, source: dict[str, Any], *, capacity: str = "64MiB", gate: Path | None = None,
             name: str = "src", data_dir: Path | None = None) -> Iterator[Agent]:
    """Start ``source`` -> memory channel -> RecordingSink; stop everything on exit."""
    raw = {
        "sources": {name: {**source, "channels": ["ch"]}},
        "channels": {"ch": {"type": "memory", "capacity": capacity}},
        "sinks": {"out": {"type": "logflume.testing.recording_sink:RecordingSink", "channel": "ch",
                          "gate": str(gate) if gate else None, "batch_timeout": "10ms"}},
    }
    ctx = Context(agent_name="testhost", data_dir=data_dir or tmp_path / "data", metrics=Metrics())
    agent = Agent(build_topology(raw, None, ctx))
    agent.start()
    try:
        yield agent
    finally:
        if gate is not None:
            gate.touch()
        agent.stop(timeout=10)


def metric(agent: Agent, name: str, component: str = "src") -> float:
    return agent.context.metrics.value(name + "_total", kind="source", component=component)
