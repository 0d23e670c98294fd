"""Polls every watched agent's and collector's ``/status`` and keeps the latest answer of each.

One thread runs the rounds; each round asks all targets at once (a bounded
thread pool, a timeout per request), so a hung target costs one timeout, not
one per target.  A target that does not answer is shown down with the error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hicc.timeseries import Sample, TimeSeries
from logflume.errors import ConfigError

log = logging.getLogger("logflume.hicc.poller")

#: Streams asked of each target (the most lagging first); the Streams page pages through them.
STREAMS_PER_TARGET = 10000
#: Largest /status answer read from a target.
MAX_STATUS_BYTES = 32 * 1024 * 1024


@dataclass
class Target:
    role: str  # "agent" or "collector"
    address: str  # HOST:PORT of its metrics endpoint
    up: bool = False
    error: str = "not polled yet"
    last_ok: float | None = None
    last_poll: float | None = None
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.doc.get("name") or self.address

    @property
    def ready(self) -> dict[str, Any]:
        return self.doc.get("ready") or {"ok": False, "reasons": []}

    @property
    def state(self) -> str:
        """``down``, ``not ready`` or ``up``: what the pages colour."""
        if not self.up:
            return "down"
        return "up" if self.ready.get("ok") else "not ready"


def address(host: str, port: int) -> str:
    """``HOST:PORT`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_targets_file(path: str) -> list[str]:
    """One HOST:PORT per line, ``#`` comments; the collectors-file format."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            host, sep, port = line.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(path, f"line {n}", f"expected HOST:PORT, got {line!r}")
            out.append(address(host.strip("[]"), int(port)))
    return out


class Poller:
    def __init__(self, config: Any, series: TimeSeries) -> None:
        self.config = config
        self.series = series
        self.targets: dict[tuple[str, str], Target] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hicc-poller", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="hicc-poll")
        self._files: dict[str, tuple[float, list[str]]] = {}
        self.rounds = 0
        self._refresh_targets()

    def _listed(self, role: str) -> list[str]:
        cfg = self.config
        addrs = [address(h, p) for h, p in (cfg.agents if role == "agent" else cfg.collectors)]
        path = cfg.agents_file if role == "agent" else cfg.collectors_file
        if path:
            try:
                mtime = os.stat(path).st_mtime
                cached = self._files.get(path)
                if cached is None or cached[0] != mtime:
                    self._files[path] = (mtime, read_targets_file(path))
                addrs += self._files[path][1]
            except (OSError, ConfigError) as exc:
                log.warning("%s_file %s: %s; keeping the targets known", role, path, exc)
                addrs += self._files.get(path, (0, []))[1]
        return list(dict.fromkeys(addrs))

    def _refresh_targets(self) -> None:
        wanted = {(role, a) for role in ("agent", "collector") for a in self._listed(role)}
        with self._lock:
            for key in list(self.targets):
                if key not in wanted:
                    del self.targets[key]
            for role, addr in sorted(wanted):
                self.targets.setdefault((role, addr), Target(role, addr))

    def snapshot(self, role: str | None = None) -> list[Target]:
        with self._lock:
            return [t for (r, _), t in sorted(self.targets.items()) if role is None or r == role]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the console keeps polling through a bad round
                log.exception("poll round failed")
            self._stop.wait(max(0.0, self.config.poll_interval - (time.monotonic() - started)))

    def poll_once(self) -> None:
        self._refresh_targets()
        targets = self.snapshot()
        now = time.time()
        for target, result in zip(targets, self._pool.map(self._fetch, targets), strict=True):
            target.last_poll = now
            if isinstance(result, dict):
                target.up, target.error, target.last_ok, target.doc = True, "", now, result
            else:
                target.up, target.error = False, result
        self.series.append([_sample(t) for t in targets], now)
        self.rounds += 1

    def _fetch(self, target: Target) -> dict[str, Any] | str:
        url = f"http://{target.address}/status?streams={STREAMS_PER_TARGET}"
        try:
            with urllib.request.urlopen(url, timeout=self.config.poll_timeout) as resp:
                body = resp.read(MAX_STATUS_BYTES + 1)
            if len(body) > MAX_STATUS_BYTES:
                return f"status larger than {MAX_STATUS_BYTES} bytes"
            doc = json.loads(body)
            return doc if isinstance(doc, dict) else "status is not a JSON object"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return f"unreachable: {reason}"


def _sample(t: Target) -> Sample:
    if not t.up:
        return Sample(t.address, False)
    totals = t.doc.get("totals", {})
    store = t.doc.get("store") or {}
    fill = max((c.get("fill_ratio", 0.0) for c in t.doc.get("channels", [])), default=0.0)
    out = totals.get("bytes_out", 0.0) if t.role == "agent" else totals.get("bytes_in", 0.0)
    return Sample(t.address, True, totals.get("bytes_in", 0.0), out, totals.get("lag_bytes", 0.0), fill,
                  store.get("backlog_bytes", 0.0))
