"""Collector reload (SIGHUP, ``logflume reload``): re-validate the config, apply what can change live.

The listeners keep their sockets, so an agent never meets a refused
connection during a reload.  Applied live: who may connect (``identities``,
``tokens``, ``token_sources``), admission limits (``max_pending_bytes``,
``max_pending_bytes_per_peer``), ``shutdown_timeout``, ``log_level`` and ``tap_token``.
When a credential is removed or narrowed, every open connection is asked to
reconnect (its read side is shut after the frame in progress has been
answered), so a revoked token stops working at once rather than at the
agent's next reconnect.  Anything else (addresses, TLS, timeouts, the store
and routes) is reported in ``needs_restart`` and keeps its running value.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.config import CollectorConfig, load_collector_config
from logflume.errors import ConfigError
from logflume.reload_files import PID_FILES, RELOAD_FILE
from logflume.secrets import redact_text
from logflume.settings import Values
from logflume.statefile import write_atomic

log = logging.getLogger("logflume.collector")

PID_FILE = PID_FILES["collector"]
#: ``collector`` settings a reload applies; a change of any other needs a restart.
LIVE_SETTINGS = ("identities", "tokens", "token_sources", "insecure", "max_pending_bytes",
                 "max_pending_bytes_per_peer", "shutdown_timeout", "log_level", "tap_token")


@dataclass
class CollectorReload:
    """What one reload changed (``applied``) and what it could not (``needs_restart``), as key paths."""

    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    #: Open connections asked to reconnect because a credential was removed or narrowed.
    reconnected: int = 0

    def summary(self) -> str:
        parts = [f"applied {', '.join(self.applied)}" if self.applied else "nothing applied"]
        if self.reconnected:
            parts.append(f"{self.reconnected} connection(s) asked to re-authenticate")
        return "; ".join(parts)


def plan(old: CollectorConfig, new: CollectorConfig) -> CollectorReload:
    """Compare two validated configs key by key."""
    out = CollectorReload()
    for key in old.collector:
        if old.collector[key] != new.collector[key]:
            (out.applied if key in LIVE_SETTINGS else out.needs_restart).append(f"collector.{key}")
    if (old.store_type, old.store_values) != (new.store_type, new.store_values):
        out.needs_restart.append("store")
    old_routes = [(r.name, r.match.render() if r.match else {}, r.store_type, r.store_values) for r in old.routes]
    new_routes = [(r.name, r.match.render() if r.match else {}, r.store_type, r.store_values) for r in new.routes]
    if old_routes != new_routes:
        out.needs_restart.append("routes")
    return out


def apply(collector: Any, new: CollectorConfig) -> CollectorReload:
    """Move a running :class:`collector.receiver.Collector` to ``new`` as far as that can be done live."""
    running = collector.config
    change = plan(running, new)
    auth, fresh = running.authenticator, new.authenticator
    revoked = bool(set(auth.credentials) - set(fresh.credentials)) or (auth.open and not fresh.open) \
        or (fresh.require_certificate and not auth.require_certificate)
    auth.credentials = list(fresh.credentials)  # endpoints hold this object: new handshakes see the new set
    auth.require_certificate = fresh.require_certificate
    values = dict(running.collector)
    values.update({k: new.collector[k] for k in LIVE_SETTINGS})
    running.collector = Values(values)
    collector.writer.max_pending_bytes = values["max_pending_bytes"]
    collector.writer.max_pending_bytes_per_peer = values["max_pending_bytes_per_peer"]
    logging.getLogger().setLevel(values["log_level"])
    running.context.metrics.set_tap_token(values["tap_token"])
    if revoked:
        change.reconnected = sum(_ask_to_reconnect(server) for server in collector.servers)
    return change


def _ask_to_reconnect(server: Any) -> int:
    """Shut the read side of every open connection of a listener: the frame being answered still gets
    its answer, then the endpoint reads end-of-stream and closes, and the peer handshakes again."""
    with server._lock:  # the server's table of open connections; read only
        conns = list(server._conns.values())
    count = 0
    for conn in conns:
        sock = getattr(conn, "sock", conn)
        try:
            socket.socket.shutdown(sock, socket.SHUT_RD)  # not SSLSocket.shutdown: that drops the TLS state
            count += 1
        except OSError:
            pass  # already closed
    return count


class Reloader:
    """Runs reloads for the daemon and records each outcome in ``<data_dir>/reload.json``."""

    def __init__(self, collector: Any, config_file: str) -> None:
        self.collector = collector
        self.config_file = config_file
        self.generation = 0

    @property
    def data_dir(self) -> Path:
        return Path(self.collector.config.collector.data_dir)

    def reload(self) -> CollectorReload | None:
        """Re-read and validate the file, then apply it; None when it was refused (logged and recorded)."""
        try:
            new = load_collector_config(self.config_file)
        except ConfigError as exc:
            log.error("reload refused, the running collector is unchanged: %s", redact_text(str(exc)))
            self._record(False, redact_text(str(exc)), None)
            return None
        for warning in new.warnings:
            log.warning("%s", warning)
        try:
            change = apply(self.collector, new)
        except Exception as exc:  # noqa: BLE001 - a failed reload must not stop a running collector
            log.exception("reload failed")
            self._record(False, f"{type(exc).__name__}: {exc}", None)
            return None
        for key in change.needs_restart:
            log.warning("reload: %s changed; it needs a restart (the running value is kept)", key)
        log.info("reload: %s", change.summary())
        self._record(True, None, change)
        return change

    def _record(self, ok: bool, error: str | None, change: CollectorReload | None) -> None:
        self.generation += 1
        doc = {"generation": self.generation, "ok": ok, "error": error, "time": round(time.time(), 3),
               "changes": change.summary() if change else None,
               "needs_restart": change.needs_restart if change else []}
        try:
            write_atomic(self.data_dir / RELOAD_FILE, json.dumps(doc).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", RELOAD_FILE, exc.strerror or exc)

    def write_pid(self, pid: int) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.data_dir / PID_FILE, f"{pid}\n".encode())
        except OSError as exc:
            log.warning("cannot write %s (logflume reload needs --pid): %s", PID_FILE, exc.strerror or exc)

    def remove_pid(self) -> None:
        try:
            (self.data_dir / PID_FILE).unlink()
        except OSError:
            pass
