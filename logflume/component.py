"""What every plugin is: a named, configured component with a start/stop lifecycle.

Lifecycle: the runtime validates the YAML section against the class's
``settings`` schema, constructs the component (``__init__`` then
``configure()``), calls ``start()`` and, at shutdown, ``stop()``.  A component
never reads raw YAML: it reads ``self.config`` (parsed, with defaults filled).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from logflume.metrics import ComponentMetrics, Metrics
from logflume.settings import Setting, Values
from logflume.statefile import make_state_dir


@dataclass
class Context:
    """Process-wide facts a component may need: who we are and where state lives."""

    agent_name: str = field(default_factory=socket.gethostname)
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("LOGFLUME_DATA_DIR", "./logflume-data")))
    metrics: Metrics = field(default_factory=Metrics)
    config_file: str | None = None

    def state_dir(self, kind: str, name: str) -> Path:
        """A private directory for one component's durable state (checkpoints, segments)."""
        return make_state_dir(self.data_dir / kind / name)


class Component:
    #: "source", "channel", "sink" or "processor"; set by the base classes.
    kind: ClassVar[str] = "component"
    #: Declared settings; merged along the class hierarchy by :meth:`schema`.
    settings: ClassVar[dict[str, Setting]] = {}
    #: A ``logflume.tap.TapPoint`` while someone taps this component (``logflume tap``), else None.
    tap: Any = None

    def __init__(self, name: str, config: Values, context: Context | None = None) -> None:
        self.name = name
        self.config = config
        self.context = context or Context()
        self.log = logging.getLogger(f"logflume.{self.kind}.{name}")
        self.metrics: ComponentMetrics = self.context.metrics.component(self.kind, name)
        self.configure()

    @classmethod
    def schema(cls) -> dict[str, Setting]:
        merged: dict[str, Setting] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "settings", {}) or {})
        return merged

    def configure(self) -> None:
        """Derive state from ``self.config``; raise ConfigError for cross-field problems."""

    def start(self) -> None:
        """Acquire resources (files, sockets, threads)."""

    def stop(self) -> None:
        """Release resources; must be safe to call twice and after a failed start."""

    # Resources for loop detection in `check` (e.g. "file:/var/log/app.log", "tcp:127.0.0.1:1463").
    def reads(self) -> list[str]:
        """What outside resources this component reads from (sources)."""
        return []

    def writes(self) -> list[str]:
        """What outside resources this component writes to (sinks)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__}

    def status(self) -> dict[str, Any]:
        """Live state for ``/status`` beyond the component's metrics (cheap: it may be asked every second).

        Optional.  A source may return ``{"streams": [{"stream": ..., "lag_bytes": ..., "bytes_read": ...,
        "bytes_acked": ..., "last_rotation": epoch seconds}, ...]}`` to replace the rows built from its
        per-stream lag gauges.
        """
        return {}
