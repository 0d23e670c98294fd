"""``logflume reload -c FILE``: validate a config, SIGHUP the daemon running it and read its verdict.

The daemon (agent or collector) tells its pid and every reload's outcome through the files
of :mod:`logflume.reload_files`.  Validating here first means a typo is reported to whoever
typed it, before any signal.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from logflume.config import load_yaml
from logflume.reload_files import PID_FILES, read_outcome


class ReloadError(Exception):
    """The daemon could not be reached (no pid file, no such process)."""


def _validated_data_dir(config: str) -> tuple[str, Path]:
    """(role, data_dir) of a config, which must be valid (raises ConfigError naming the key)."""
    raw = load_yaml(config)
    if "collector" in raw or "store" in raw:
        from collector.config import load_collector_config

        return "collector", Path(load_collector_config(config).collector.data_dir)
    from logflume.topology import build_topology

    return "agent", Path(build_topology(raw, config).agent.data_dir)


def request_reload(config: str, pid: int | None = None, wait: float = 60.0) -> dict[str, Any] | None:
    """Validate, signal, and return the daemon's verdict (None if none came within ``wait`` seconds)."""
    role, data_dir = _validated_data_dir(config)
    if pid is None:
        pid_file = data_dir / PID_FILES[role]
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ReloadError(f"cannot read the {role}'s pid from {pid_file} ({exc}); is it running? "
                              f"(or give --pid)") from None
    before = read_outcome(data_dir)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadError(f"no process {pid} (a stale pid file?)") from None
    except PermissionError:
        raise ReloadError(f"not allowed to signal process {pid}") from None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        outcome = read_outcome(data_dir)
        if outcome is not None and outcome != before:
            return outcome
        time.sleep(0.1)
    return None
