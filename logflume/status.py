"""What a running agent or collector tells operators: ``/health``, ``/ready``, ``/status``, ``/tap``, ``/metrics``.

The status document is built from the process's own metrics registry (every
component's counters and gauges), each component's ``describe()`` and its
optional ``status()`` hook, so a new plugin shows up without code here.  It is
cached (at least :data:`CACHE_SECONDS`, and at least ten times as long as it
took to build) and the stream list is capped, so polling it every second from
many consoles costs the daemon at most about a tenth of a core.

Readiness ("it is delivering") fails, with the reasons in the body, when

* the oldest byte a source or channel accepted and has not handed on is older
  than ``max_age`` (a stuck sink, a full channel);
* every collector of a collector sink is cooling down;
* a buffer store's primary is down and its secondary is nearly full (the
  default store's, a route's, a group member's: any of them refusing
  chunks means a part of the traffic is not delivered).

The age of the oldest uncommitted byte comes from :class:`BacklogAge`, which
samples each component's cumulative ``bytes_in``/``bytes_out`` counters once a
second: FIFO order means the oldest uncommitted byte is byte number
``bytes_out``, and it arrived when ``bytes_in`` first went past that number.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from logflume import __version__
from logflume.secrets import check_secret, is_loopback
from logflume.settings import Invalid, parse_duration
from logflume.stopflag import StopFlag, serve_until

log = logging.getLogger("logflume.status")

#: A status document is rebuilt at most this often, however often it is asked for.
CACHE_SECONDS = 0.5
#: How often the sampler feeds :class:`BacklogAge`.
SAMPLE_SECONDS = 1.0
#: Readiness defaults, overridable per probe: ``/ready?max_age=2m&secondary_full=0.8``.
DEFAULT_MAX_AGE = 300.0
DEFAULT_SECONDARY_FULL = 0.9
#: Streams listed by default and at most (``/status?streams=N``); the most lagging come first.
DEFAULT_STREAMS = 1000
MAX_STREAMS = 20000
#: Connections the endpoint serves at once; more are closed at once.
MAX_CONNECTIONS = 32
#: A client that sends nothing for this long is dropped.
REQUEST_TIMEOUT = 10.0
#: Per-stream gauges: metric name -> label that names the stream.
STREAM_LAG_METRICS = {"logflume_tail_file_lag_bytes": "path"}


class BacklogAge:
    """Age of the oldest byte a component accepted and has not handed on, from its cumulative counters.

    Marks are ``(time, bytes_in)`` taken whenever ``bytes_in`` grew; marks the
    output has passed are dropped, and past ``max_marks`` every other mark is
    thinned out (the age can then read younger, never older, than it is).
    """

    def __init__(self, max_marks: int = 512) -> None:
        self.max_marks = max_marks
        self._marks: deque[tuple[float, float]] = deque()

    def observe(self, now: float, bytes_in: float, bytes_out: float) -> None:
        if bytes_in > (self._marks[-1][1] if self._marks else bytes_out):
            self._marks.append((now, bytes_in))
        while self._marks and self._marks[0][1] <= bytes_out:
            self._marks.popleft()
        if len(self._marks) > self.max_marks:
            self._marks = deque(list(self._marks)[::2])

    def age(self, now: float) -> float:
        """Seconds since the oldest uncommitted byte arrived (0 when nothing is uncommitted)."""
        return max(0.0, now - self._marks[0][0]) if self._marks else 0.0


class ReadyQuery:
    """Readiness thresholds of one probe (query parameters, defaults above)."""

    def __init__(self, max_age: float = DEFAULT_MAX_AGE, secondary_full: float = DEFAULT_SECONDARY_FULL) -> None:
        self.max_age = max_age
        self.secondary_full = secondary_full

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> ReadyQuery:
        """Raises ValueError with the parameter named."""
        out = cls()
        if "max_age" in query:
            try:
                out.max_age = parse_duration(query["max_age"][0])
            except (Invalid, ValueError):
                shown = query["max_age"][0]
                raise ValueError(f"max_age: expected a duration such as 30s or 5m, got {shown!r}") from None
        if "secondary_full" in query:
            try:
                out.secondary_full = float(query["secondary_full"][0])
            except ValueError:
                out.secondary_full = -1.0
            if not 0 < out.secondary_full <= 1:
                raise ValueError("secondary_full: expected a fraction in (0, 1]")
        return out


def _samples(registry: Any) -> tuple[dict[tuple[str, str, str], float], list[tuple[str, str, float]]]:
    """One pass over the registry: per-component values, and per-stream lag rows."""
    values: dict[tuple[str, str, str], float] = {}
    lags: list[tuple[str, str, float]] = []
    for family in registry.collect():
        for s in family.samples:
            labels = s.labels
            component = labels.get("component")
            if component is None:
                continue
            stream_label = STREAM_LAG_METRICS.get(s.name)
            if stream_label is not None:
                lags.append((component, labels.get(stream_label, ""), s.value))
            elif len(labels) == 2:
                values[(s.name, labels.get("kind", ""), component)] = s.value
    return values, lags


def _sink_value(values: dict[tuple[str, str, str], float], sink: str, metric: str) -> float | None:
    """One of a sink's samples (``metric`` without the ``logflume_`` prefix); None if it has none."""
    return values.get(("logflume_" + metric, "sink", sink))


class PipelineStatus:
    """The status document and readiness of one process (an agent or a collector)."""

    def __init__(self, role: str, name: str, metrics: Any, components: Sequence[Any],
                 store: Any = None, pending_bytes: Callable[[], int] | None = None,
                 buffers: Sequence[Any] = ()) -> None:
        self.role = role
        self.name = name
        self.metrics = metrics
        self.components = list(components)
        self.store = store
        #: Every buffer store (the default store's, routes', groups' members), for readiness and /status.
        self.buffers = list(buffers)
        self.pending_bytes = pending_bytes
        self.started = time.time()
        self._ages: dict[tuple[str, str], BacklogAge] = {}
        self._lock = threading.Lock()
        self._cache: tuple[float, int, dict[str, Any]] | None = None
        self._build_seconds = 0.0

    @classmethod
    def for_agent(cls, topology: Any) -> PipelineStatus:
        ctx = topology.context
        comps = [s.component for specs in (topology.sources, topology.channels, topology.sinks)
                 for s in specs.values()]
        return cls("agent", ctx.agent_name, ctx.metrics, comps)

    # -- sampling -------------------------------------------------------------

    def sample(self, now: float | None = None) -> None:
        """Feed every source's and channel's backlog clock (called once a second by the endpoint)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for comp in self.components:
                if comp.kind not in ("source", "channel"):
                    continue
                key = (comp.kind, comp.name)
                clock = self._ages.setdefault(key, BacklogAge())
                labels = {"kind": comp.kind, "component": comp.name}
                clock.observe(now, self.metrics.value("bytes_in_total", **labels),
                              self.metrics.value("bytes_out_total", **labels))

    def _age(self, kind: str, name: str, now: float) -> float:
        clock = self._ages.get((kind, name))
        return clock.age(now) if clock is not None else 0.0

    # -- the document -----------------------------------------------------------

    def document(self, streams: int = DEFAULT_STREAMS) -> dict[str, Any]:
        """The ``/status`` JSON (cached per stream limit; see the time-to-live below)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache
            # Rebuilt at most every CACHE_SECONDS, and never more than a tenth of the time: a process with
            # 10,000 streams (about 0.1 s a build) spends at most 10% of a core however often it is asked.
            ttl = max(CACHE_SECONDS, 10 * self._build_seconds)
            if cached is not None and now - cached[0] < ttl and cached[1] == streams:
                return cached[2]
            doc = self._build(now, streams)
            reasons = self._reasons(doc, ReadyQuery(), now)
            doc["ready"] = {"ok": not reasons, "reasons": reasons}
            self._build_seconds = time.monotonic() - now
            self._cache = (now, streams, doc)
            return doc

    def _build(self, now: float, stream_limit: int) -> dict[str, Any]:
        values, lags = _samples(self.metrics.registry)

        def v(name: str, kind: str, comp: str) -> float:
            return values.get(("logflume_" + name, kind, comp), 0.0)

        components, channels, collectors, hooked_streams = [], [], [], []
        for comp in self.components:
            kind, name = comp.kind, comp.name
            entry: dict[str, Any] = {
                "kind": kind, "name": name, "type": type(comp).__name__,
                **{k: v(k + "_total", kind, name) for k in ("bytes_in", "bytes_out", "chunks_in", "chunks_out",
                                                          "retries", "errors")},
            }
            extra = dict(comp.status() or {}) if hasattr(comp, "status") else {}
            if extra:
                hooked_streams.extend({"source": name, **s} for s in extra.pop("streams", []))
                entry["status"] = extra
            if kind == "source":
                entry["oldest_uncommitted_s"] = round(self._age(kind, name, now), 1)
            components.append(entry)
            if kind == "channel":
                capacity = v("channel_capacity_bytes", kind, name) or float(comp.config.capacity)
                fill = v("channel_fill_bytes", kind, name)
                channels.append({
                    "name": name, "type": type(comp).__name__, "durable": bool(getattr(comp, "durable", False)),
                    "fill_bytes": fill, "fill_chunks": v("channel_fill_chunks", kind, name),
                    "capacity_bytes": capacity, "fill_ratio": round(fill / capacity, 4) if capacity else 0.0,
                    "oldest_uncommitted_s": round(self._age(kind, name, now), 1),
                })
            if kind == "sink" and "collectors" in comp.config:
                addresses = [f"{h}:{p}" for h, p in comp.config.collectors]
                per = (extra or {}).get("collectors")
                if per:  # the sink's own view (status() hook): every collector with its cool-down left
                    addresses = [c["address"] for c in per]
                    healthy: int | None = sum(1 for c in per if c["cooldown_left_s"] <= 0)
                    all_cooling = healthy == 0
                else:  # from metrics: the gauge the last delivery attempt set
                    tried = v("retries_total", kind, name) > 0 or v("chunks_out_total", kind, name) > 0
                    gauge = v("healthy_collectors", kind, name)
                    healthy = int(gauge) if tried else None
                    all_cooling = bool(tried and gauge == 0 and v("retries_total", kind, name) > 0)
                collectors.append({
                    "sink": name, "collectors": addresses, "cooldowns": per or [],
                    "collectors_file": comp.config.collectors_file,
                    "healthy": healthy,
                    "all_cooling_down": all_cooling,
                    "cooldown_s": comp.config.cooldown, "failovers": v("failovers_total", kind, name),
                    "try_later": v("try_later_total", kind, name),
                })
        if hooked_streams:
            rows = hooked_streams
        else:
            rows = [{"source": comp, "stream": stream, "lag_bytes": lag} for comp, stream, lag in lags]
        rows.sort(key=lambda r: (-(r.get("lag_bytes") or 0), r["source"], r["stream"]))
        doc: dict[str, Any] = {
            "role": self.role, "name": self.name, "version": __version__, "pid": os.getpid(),
            "started": round(self.started, 3), "time": round(time.time(), 3),
            "totals": {
                "bytes_in": sum(c["bytes_in"] for c in components if c["kind"] == "source"),
                "bytes_out": sum(c["bytes_out"] for c in components if c["kind"] == "sink"),
                "lag_bytes": sum(r.get("lag_bytes") or 0 for r in rows),
                "streams": len(rows),
            },
            "components": components,
            "channels": channels,
            "collectors": collectors,
            "streams": rows[:stream_limit],
            "streams_truncated": len(rows) > stream_limit,
        }
        if self.store is not None:
            doc["store"] = self._store(values)
        if self.buffers:
            doc["buffers"] = [self._buffer(b, values) for b in self.buffers]
        if self.pending_bytes is not None:
            doc["totals"]["pending_bytes"] = self.pending_bytes()
            doc["totals"]["bytes_in"] = v("bytes_in_total", "collector", self.name)
            doc["totals"]["try_later"] = v("try_later_total", "collector", self.name)
        return doc

    def _buffer(self, store: Any, values: dict[tuple[str, str, str], float]) -> dict[str, Any]:
        """A store's name, type and counters; a buffer store's primary state and secondary fill."""
        name = store.name

        def v(metric: str) -> float | None:
            return _sink_value(values, name, metric)

        out: dict[str, Any] = {"name": name, "type": type(store).__name__,
                               "bytes_in": v("bytes_in_total") or 0.0, "bytes_out": v("bytes_out_total") or 0.0}
        up = v("primary_up")
        out["primary_up"] = None if up is None else bool(up)
        out["backlog_bytes"] = v("backlog_bytes") or 0.0
        secondary = store.config.get("secondary") if hasattr(store.config, "get") else None
        max_bytes = getattr(secondary, "max_bytes", None) if secondary is not None else None
        out["secondary_max_bytes"] = max_bytes
        out["secondary_fill"] = round(out["backlog_bytes"] / max_bytes, 4) if max_bytes else None
        return out

    def _store(self, values: dict[tuple[str, str, str], float]) -> dict[str, Any]:
        store = self.store
        out = self._buffer(store, values)

        def v(metric: str) -> float | None:
            return _sink_value(values, store.name, metric)

        out["failovers"] = v("failovers_total") or 0.0
        out["secondary_full_refusals"] = v("secondary_full_total") or 0.0
        files = []
        for part_name in ("primary", "secondary"):
            part = getattr(store, part_name, None)
            part = part if part is not None else (store if part_name == "primary" else None)
            if part is None or not hasattr(part, "open_file_bytes"):
                continue
            url = getattr(part.config, "url", "") if hasattr(part, "config") else ""
            files.append({"part": part_name, "url": url, "open_file_bytes": part.open_file_bytes,
                          "files_closed": values.get(("logflume_seqfile_files_closed_total", "sink", part.name), 0.0)})
        out["files"] = files
        return out

    # -- readiness ------------------------------------------------------------------

    def not_ready(self, query: ReadyQuery) -> list[str]:
        """Reasons this process is not delivering; empty when it is ready."""
        doc = self.document()
        with self._lock:
            return self._reasons(doc, query, time.monotonic())

    def _reasons(self, doc: dict[str, Any], query: ReadyQuery, now: float) -> list[str]:
        reasons = []
        for comp in self.components:
            if comp.kind in ("source", "channel"):
                age = self._age(comp.kind, comp.name, now)
                if age > query.max_age:
                    reasons.append(f"{comp.kind} {comp.name}: oldest uncommitted byte is {age:.0f}s old "
                                   f"(limit {query.max_age:g}s)")
        for c in doc["collectors"]:
            if c["all_cooling_down"]:
                n = len(c["collectors"]) or "all"
                reasons.append(f"sink {c['sink']}: every collector ({n}) is cooling down")
        for store in doc.get("buffers") or ([doc["store"]] if doc.get("store") else []):
            if store["primary_up"] is False and store["secondary_fill"] is not None \
                    and store["secondary_fill"] >= query.secondary_full:
                reasons.append(f"store {store['name']}: primary down and secondary {store['secondary_fill']:.0%} "
                               f"full ({store['backlog_bytes']:.0f} of {store['secondary_max_bytes']} bytes; "
                               f"limit {query.secondary_full:.0%})")
        return reasons


def tap_refusal(token: str | None, authorization: str | None) -> tuple[HTTPStatus, dict[str, str]] | None:
    """Why ``/tap`` is refused, or None.  It shows the records themselves, so it is off unless the daemon has a
    ``tap_token``, and then open only to requests bearing it (``Authorization: Bearer TOKEN``)."""
    if not token:
        return HTTPStatus.FORBIDDEN, {"error": "tap is off: set tap_token in the agent (or collector) section to "
                                               "allow it (it shows the records passing)"}
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return HTTPStatus.UNAUTHORIZED, {"error": "tap needs the daemon's tap_token (Authorization: Bearer TOKEN)"}
    return None


def tap_token_warnings(token: str | None, metrics: tuple[str, int] | None, file: str | None,
                       path: str, strength: bool = True) -> list[str]:
    """A weak tap token (a ConfigError when the endpoint binds beyond loopback; ``strength=False`` where the
    section's secrets are checked already), and a token that would travel in clear: the status endpoint
    speaks plain HTTP."""
    if not token:
        return []
    out = [w] if strength and (w := check_secret(token, file=file, path=path, bind=metrics)) else []
    if metrics is not None and not is_loopback(metrics[0]):
        out.append(f"{path}: the status endpoint {metrics[0]}:{metrics[1]} speaks plain HTTP beyond loopback: the "
                   "tap token and the records it shows travel in clear; expected a loopback address (tap over ssh)")
    return out


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    server_version = f"logflume/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query, max_num_fields=8)
        status = self.server.metrics.status
        if url.path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif url.path == "/health":
            self._json(HTTPStatus.OK, {"status": "alive", "pid": os.getpid()})
        elif url.path == "/ready":
            try:
                ready_query = ReadyQuery.parse(query)
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            reasons = status.not_ready(ready_query) if status is not None else []
            code = HTTPStatus.SERVICE_UNAVAILABLE if reasons else HTTPStatus.OK
            self._json(code, {"ready": not reasons, "reasons": reasons})
        elif url.path == "/tap" and status is not None:
            refusal = tap_refusal(self.server.tap_token, self.headers.get("Authorization"))
            if refusal is not None:
                self._json(*refusal)
                return
            self._tap(status, query)
        elif url.path == "/status" and status is not None:
            try:
                limit = min(MAX_STREAMS, max(0, int(query.get("streams", [DEFAULT_STREAMS])[0])))
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "streams: expected an integer"})
                return
            self._json(HTTPStatus.OK, status.document(limit))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found; try /health, /ready, /status, /tap or /metrics"})

    def _tap(self, status: PipelineStatus, query: dict[str, list[str]]) -> None:
        """Stream the chunks passing one component as NDJSON until the client goes away (``logflume tap``)."""
        from logflume.tap import MAX_RATE, MAX_RECORDS, TapFilter

        name = query.get("component", [""])[0]
        matching = [c for c in status.components if c.name == name]
        if len(matching) != 1:
            known = ", ".join(sorted(f"{c.kind}:{c.name}" for c in status.components))
            what = "several components (use a unique name)" if matching else "no component"
            self._json(HTTPStatus.NOT_FOUND, {"error": f"component: {what} named {name!r}; expected one of: {known}"})
            return
        try:
            flt = TapFilter.parse(query)
            rate = float(query.get("rate", ["10"])[0])
            records = int(query.get("records", ["0"])[0])
            if not 0 < rate <= MAX_RATE:
                raise ValueError(f"rate: expected events per second in (0, {MAX_RATE:g}]")
            if not 0 <= records <= MAX_RECORDS:
                raise ValueError(f"records: expected 0 to {MAX_RECORDS}")
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        component = matching[0]
        try:
            sub = self.server.taps.attach(component, flt, rate, records)
        except OverflowError as exc:
            self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": str(exc)})
            return
        self.close_connection = True
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(json.dumps({"type": "attached", "kind": component.kind, "component": component.name,
                                         "rate": rate, "records": records}).encode() + b"\n")
            self.wfile.flush()
            while not self.server.stopping.is_set():
                lines = [json.dumps(e, separators=(",", ":")) for e in sub.get(timeout=1.0)]
                lines.append(json.dumps({"type": "heartbeat", "dropped": sub.dropped,
                                         "rate_limited": sub.rate_limited}))
                gone = sub.point is not None and not any(h in status.components for h in sub.point.holders)
                if gone:  # a reload removed it (a replaced component hands its tap on: tap.carry)
                    lines.append(json.dumps({"type": "gone", "kind": component.kind, "component": component.name}))
                self.wfile.write(("\n".join(lines) + "\n").encode())
                self.wfile.flush()
                if gone:
                    break
        except OSError:
            pass  # the tapper went away
        finally:
            self.server.taps.detach(sub)

    def _json(self, code: HTTPStatus, body: dict[str, Any]) -> None:
        self._send(code, json.dumps(body, separators=(",", ":")).encode(), "application/json")

    def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class StatusServer(ThreadingHTTPServer):
    """The HTTP endpoint: ``/metrics``, ``/health``, ``/ready``, ``/status``; a sampler thread feeds the clocks."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str, port: int, metrics: Any, tap_token: str | None = None) -> None:
        from logflume.tap import TapHub

        self.metrics = metrics
        self.tap_token = tap_token
        self.taps = TapHub()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stop = StopFlag()
        super().__init__((host, port), _Handler)
        self._workers = [threading.Thread(target=serve_until, args=(self, self._stop), name="status-http",
                                          daemon=True),
                         threading.Thread(target=self._sample_loop, name="status-sampler", daemon=True)]
        for t in self._workers:
            t.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            status = self.metrics.status
            if status is not None:
                try:
                    status.sample()
                except Exception:  # noqa: BLE001 - a bad plugin hook must not stop the endpoint
                    log.exception("status sampler failed")

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def close(self) -> None:
        self._stop.set()
        self._workers[0].join(timeout=10)
        self.server_close()


def probe(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET a status URL; (HTTP code, JSON body).  For HICC and tests."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")

