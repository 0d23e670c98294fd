"""The files through which ``logflume reload`` talks to a running daemon, in the daemon's ``data_dir``.

The daemon writes its pid to ``PID_FILES[role]`` when it starts (and removes it when it stops) and the
outcome of every reload to :data:`RELOAD_FILE` (``generation``, ``ok``, ``error``, ``changes``,
``needs_restart``); the client signals the pid and waits for a new outcome.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RELOAD_FILE = "reload.json"
PID_FILES = {"agent": "agent.pid", "collector": "collector.pid"}


def read_outcome(data_dir: Path) -> dict[str, Any] | None:
    """The last reload's outcome; None when there is none yet (or it cannot be read)."""
    try:
        return json.loads((data_dir / RELOAD_FILE).read_bytes())
    except (OSError, ValueError):
        return None
