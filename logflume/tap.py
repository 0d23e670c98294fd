"""Live observation of the chunks passing one component (``logflume tap``).

Tapping is observation, never back-pressure.  A component's ``tap`` attribute
is None while nobody taps, and the hot path (``ChannelOutput.deliver``,
``SinkRunner``) pays one attribute check for it.  While someone taps, each
chunk is filtered, rate-limited and rendered to a small dict (metadata and at
most a few truncated sample records) into a bounded queue; when the tapper
is slow, events are dropped and counted instead of waiting.

The status endpoint serves a tap as ``GET /tap?component=NAME`` (newline-
delimited JSON, one event per line and a ``heartbeat`` line every second
carrying the drop counts) to requests bearing the daemon's ``tap_token``
(it shows the records themselves; without a token configured it is off);
:func:`stream` is its client.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from logflume.chunk import Chunk

#: Taps one process serves at once (each holds one of the endpoint's connections).
MAX_TAPS = 4
#: Events a tap queues for its reader before dropping.
QUEUE_EVENTS = 1000
#: Limits of a tap's query: events per second, sample records per chunk, bytes per sample record.
MAX_RATE = 1000.0
MAX_RECORDS = 20
SAMPLE_BYTES = 512
#: How long a filter value may be.
MAX_FILTER_CHARS = 256


class TapFilter:
    """Which chunks a tap wants: datatype (exact), stream (glob) and tags (all must match)."""

    def __init__(self, datatype: str | None = None, stream: str | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.datatype = datatype
        self.stream = stream
        self.tags = dict(tags or {})

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> TapFilter:
        """From query parameters ``datatype``, ``stream`` and ``tag=K=V`` (repeatable); ValueError names the bad one."""
        for key in ("datatype", "stream", "tag"):
            for value in query.get(key, []):
                if len(value) > MAX_FILTER_CHARS:
                    raise ValueError(f"{key}: longer than {MAX_FILTER_CHARS} characters")
        tags = {}
        for item in query.get("tag", []):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"tag: expected KEY=VALUE, got {item!r}")
            tags[key] = value
        return cls(query.get("datatype", [None])[0], query.get("stream", [None])[0], tags)

    def matches(self, chunk: Chunk) -> bool:
        if self.datatype is not None and chunk.datatype != self.datatype:
            return False
        if self.stream is not None and not fnmatch.fnmatchcase(chunk.stream, self.stream):
            return False
        return all(chunk.tags.get(k) == v for k, v in self.tags.items())


def render(chunk: Chunk, kind: str, component: str, records: int) -> dict[str, Any]:
    """One tap event: the chunk's metadata and up to ``records`` sample records (truncated, as text)."""
    event: dict[str, Any] = {
        "type": "chunk", "time": round(time.time(), 3), "kind": kind, "component": component,
        "source": chunk.source, "stream": chunk.stream, "datatype": chunk.datatype, "seq_id": chunk.seq_id,
        "bytes": len(chunk), "tags": dict(chunk.tags),
    }
    if records:
        samples = []
        for record in chunk.records():
            if len(samples) >= records:
                break
            samples.append(bytes(record[:SAMPLE_BYTES]).decode("utf-8", "replace"))
        event["records"] = samples
    return event


class Subscription:
    """One tapper: filter, token-bucket rate limit and a bounded queue of rendered events."""

    def __init__(self, kind: str, component: str, flt: TapFilter, rate: float, records: int) -> None:
        self.kind = kind
        self.component = component
        self.filter = flt
        self.rate = rate
        self.records = records
        self.dropped = 0        # the queue was full: the reader is slower than the rate
        self.rate_limited = 0   # over the rate
        self._tokens = rate
        self._last = time.monotonic()
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.point: TapPoint | None = None  # set by TapHub.attach

    def offer(self, chunks: Sequence[Chunk]) -> None:
        """Called on the pipeline's thread: never blocks, never raises into the pipeline."""
        for chunk in chunks:
            if not self.filter.matches(chunk):
                continue
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens < 1:
                    self.rate_limited += 1
                    continue
                self._tokens -= 1
                if len(self._queue) >= QUEUE_EVENTS:
                    self.dropped += 1
                    continue
            try:
                event = render(chunk, self.kind, self.component, self.records)
            except Exception:  # noqa: BLE001 - a chunk that does not render is skipped, not the pipeline's problem
                continue
            with self._lock:
                self._queue.append(event)
            self._ready.set()

    def get(self, timeout: float) -> list[dict[str, Any]]:
        """Every queued event, waiting up to ``timeout`` for the first."""
        self._ready.wait(timeout)
        with self._lock:
            events = list(self._queue)
            self._queue.clear()
            self._ready.clear()
        return events


class TapPoint:
    """The subscriptions of one component; set as ``component.tap`` while it has any.

    ``holders`` are the components it is set on: a component replaced by a reload hands its
    point to its successor (:func:`carry`), so a tap outlives the reload and is cleared from
    both when its last tapper leaves.
    """

    def __init__(self) -> None:
        self.subscriptions: tuple[Subscription, ...] = ()
        self.holders: list[Any] = []

    def offer(self, chunks: Sequence[Chunk]) -> None:
        for sub in self.subscriptions:
            sub.offer(chunks)


class TapHub:
    """Attaches and detaches subscriptions to a process's components (one hub per status endpoint)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def attach(self, component: Any, flt: TapFilter, rate: float, records: int) -> Subscription:
        """Raises OverflowError when :data:`MAX_TAPS` taps are attached already."""
        with self._lock:
            if self.active >= MAX_TAPS:
                raise OverflowError(f"{MAX_TAPS} taps are attached already")
            sub = Subscription(component.kind, component.name, flt, rate, records)
            point = component.tap if isinstance(component.tap, TapPoint) else TapPoint()
            point.subscriptions = (*point.subscriptions, sub)
            if component not in point.holders:
                point.holders.append(component)
            component.tap = point
            sub.point = point
            self.active += 1
            return sub

    def detach(self, sub: Subscription) -> None:
        with self._lock:
            point = sub.point
            if point is None or sub not in point.subscriptions:
                return
            point.subscriptions = tuple(s for s in point.subscriptions if s is not sub)
            self.active -= 1
            if not point.subscriptions:
                for holder in point.holders:
                    if holder.tap is point:
                        holder.tap = None
                point.holders.clear()


def carry(old: Any, new: Any) -> None:
    """Hand ``old``'s taps to ``new``, its replacement after a reload (same kind and name)."""
    point = old.tap
    if isinstance(point, TapPoint) and point.subscriptions:
        point.holders.append(new)
        new.tap = point


def stream(address: str, component: str, *, datatype: str | None = None, stream_glob: str | None = None,
           tags: dict[str, str] | None = None, rate: float = 10.0, records: int = 0,
           timeout: float = 10.0, token: str | None = None) -> Iterator[dict[str, Any]]:
    """Events (and heartbeats) of a running process's tap, from its status address ``HOST:PORT``, with the
    daemon's ``tap_token``."""
    import urllib.error
    import urllib.request

    params: list[tuple[str, str]] = [("component", component), ("rate", f"{rate:g}"), ("records", str(records))]
    if datatype:
        params.append(("datatype", datatype))
    if stream_glob:
        params.append(("stream", stream_glob))
    params += [("tag", f"{k}={v}") for k, v in (tags or {}).items()]
    base = address if "://" in address else f"http://{address}"
    url = f"{base.rstrip('/')}/tap?{urlencode(params)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - an operator-given address
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read() or b"{}").get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise ConnectionError(f"{url}: HTTP {exc.code}: {reason}") from None
    with resp:
        for line in resp:
            if line.strip():
                yield json.loads(line)
