"""CollectorSink (``type: collector``): forwards batches to logflume collectors, with failover.

The sending side of a hop (an agent, or a relay collector's store primary);
the receiving side is ``collector/receiver.py`` in the collector daemon.

Each batch goes to a randomly chosen healthy collector over the logflume wire
protocol (``logflume/wire``); ``deliver`` returns only once that collector
answered OK, i.e. the batch is durable in its store.  A connection error,
timeout, TRY_LATER or ERROR puts that collector in cool-down and the batch
fails over to another one after a short capped, jittered exponential backoff
(tenacity).  When every collector failed or is cooling down, ``deliver``
raises (TryLater when they asked for it) and the runtime rolls the channel
transaction back and retries later: the channel absorbs the outage.

A chunk whose metadata is out of bounds (``Chunk.metadata_error``) can never
be stored, so it must neither block the channel nor vanish: it is written to
``<data_dir>/quarantine/<sink>/`` (one file: its metadata as a JSON line, then
its bytes), logged as an error naming it, counted in ``quarantined_chunks``,
and the rest of the batch goes on.  A legitimate source cannot produce one
(its ``datatype`` and ``tags`` are checked against the same bounds when the
config is loaded); the sink checks before sending, and quarantines a chunk
the collector answers REFUSED for.  A batch refused because this agent's
identity may not send its source is retried after ``cooldown`` with the
collector's reason logged: the collector's config is what must change.

The collector list is inline (``collectors``) or a file with one
``HOST:PORT`` per line (``collectors_file``, Chukwa's collectors file), which
is re-read whenever it changes.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from logflume.chunk import Chunk, runs_within
from logflume.errors import ConfigError, DeliveryError, TryLater
from logflume.settings import Duration, Enum, HostPort, Int, ListOf, Obj, Optional, Secret, Setting, Size, Str
from logflume.sink import Sink
from logflume.statefile import make_state_dir, write_atomic
from logflume.wire.client import RefusedError, WireClient
from logflume.wire.idl import Status
from logflume.wire.tls import client_context

#: Room left in a frame for the Thrift header when a batch is split to fit the collector's max_frame_size.
HEADER_ROOM = 1024 * 1024

TLS_SETTINGS: dict[str, Setting] = {
    "ca": Setting(Optional(Str()), None, "PEM CA bundle that signs the collectors' certificates (null: system roots)"),
    "cert": Setting(Optional(Str()), None, "PEM client certificate, for collectors that require one (mutual TLS)"),
    "key": Setting(Optional(Str()), None, "PEM private key of the client certificate"),
    "server_name": Setting(Optional(Str()), None, "Name to verify in the collector's certificate (default: its host)"),
}

_LINE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(\[[^\]]+\]|[^/:\s]+):(\d+)(?:/.*)?$", re.IGNORECASE)


def parse_collectors_file(text: str, file: str | None = None) -> list[tuple[str, int]]:
    """``HOST:PORT`` per line (``http://HOST:PORT/`` as in Chukwa is accepted); ``#`` starts a comment."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m or not 0 < int(m.group(2)) <= 65535:
            raise ConfigError(file, f"line {n}", f"expected HOST:PORT, got {line!r}")
        out.append((m.group(1).strip("[]"), int(m.group(2))))
    return out


@dataclass
class _Collector:
    host: str
    port: int
    client: WireClient
    cool_until: float = 0.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class _Failed(Exception):
    """One attempt against one collector failed; carries what it said."""

    def __init__(self, address: str, reason: str, delay: float | None = None) -> None:
        super().__init__(f"{address}: {reason}")
        self.delay = delay


class CollectorSink(Sink):
    """Forwards chunks to collectors (logflume protocol), failing over between them; at-least-once."""

    settings: ClassVar[dict[str, Setting]] = {
        "collectors": Setting(ListOf(HostPort()), [], "Collectors as HOST:PORT (or use collectors_file)"),
        "collectors_file": Setting(Optional(Str()), None, "File with one HOST:PORT per line; re-read when it changes"),
        "timeout": Setting(Duration(), "60s", "Connect / send / ack timeout per attempt"),
        "cooldown": Setting(Duration(), "10s", "After a failure, leave that collector alone this long"),
        "compression": Setting(Enum("none", "zstd", "lz4"), "none", "Compress chunk bodies on the wire"),
        "tls": Setting(Optional(Obj(TLS_SETTINGS)), None, "TLS to the collectors (null: plain TCP)"),
        "token": Setting(Optional(Secret()), None, "Auth token the collectors expect"),
        "frame_bytes": Setting(Size(min=64 * 1024), "16MiB",
                               "Largest frame sent; bigger chunks are cut after records into several frames"),
        "frames_in_flight": Setting(Int(min=1, max=16), 2,
                                    "Frames sent before the first is answered (the collector stores one while it "
                                    "receives the next; 1: wait for each answer)"),
    }

    def configure(self) -> None:
        cfg = self.config
        if not cfg.collectors and not cfg.collectors_file:
            raise ConfigError(self.context.config_file, f"sinks.{self.name}.collectors",
                              "no collectors: expected a list of HOST:PORT or collectors_file")
        tls = cfg.tls
        if tls is not None and bool(tls.cert) != bool(tls.key):
            raise ConfigError(self.context.config_file, f"sinks.{self.name}.tls", "cert and key go together")
        self._ssl: Any = None
        self._lock = threading.Lock()
        self._collectors: dict[tuple[str, int], _Collector] = {}
        self._file_stamp: tuple[float, int] | None = None
        self._file_list: list[tuple[str, int]] = []
        self._stopping = threading.Event()
        self.failovers = self.metrics.counter("failovers", "Batches moved to another collector after a failure")
        self.quarantined = self.metrics.counter("quarantined_chunks",
                                                "Chunks set aside in the quarantine directory (metadata refused)")
        self.healthy = self.metrics.gauge("healthy_collectors", "Collectors not cooling down")

    def start(self) -> None:
        tls = self.config.tls
        if tls is not None:
            self._ssl = client_context(tls.ca, tls.cert, tls.key)
        self._stopping.clear()
        self._refresh()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for c in self._collectors.values():
                c.client.close()

    def status(self) -> dict[str, Any]:
        """Each collector and the seconds left of its cool-down (for the agent's ``/status``)."""
        now = time.monotonic()
        with self._lock:
            return {"collectors": [{"address": c.address, "cooldown_left_s": round(max(0.0, c.cool_until - now), 1)}
                                   for c in self._collectors.values()]}

    def writes(self) -> list[str]:
        addrs = list(self.config.collectors)
        if self.config.collectors_file:
            try:
                with open(self.config.collectors_file, encoding="utf-8") as f:
                    addrs += parse_collectors_file(f.read(), self.config.collectors_file)
            except (OSError, ConfigError):
                pass
        return [f"tcp:{h}:{p}" for h, p in addrs]

    # -- the collector list ------------------------------------------------

    def _read_file(self) -> list[tuple[str, int]]:
        path = self.config.collectors_file
        try:
            st = os.stat(path)
        except OSError as exc:
            if self._file_stamp is not None or not self._file_list:
                self.log.warning("collectors_file %s unreadable (%s); keeping %d known collectors",
                                 path, exc.strerror, len(self._file_list))
            self._file_stamp = None
            return self._file_list
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._file_stamp:
            try:
                with open(path, encoding="utf-8") as f:
                    self._file_list = parse_collectors_file(f.read(), path)
                self.log.info("collectors_file %s: %d collectors", path, len(self._file_list))
            except (OSError, ConfigError) as exc:
                self.log.error("collectors_file %s not used: %s", path, exc)
            self._file_stamp = stamp
        return self._file_list

    def _refresh(self) -> list[_Collector]:
        from_file = self._read_file() if self.config.collectors_file else []
        wanted = list(dict.fromkeys(list(self.config.collectors) + from_file))
        with self._lock:
            for addr in list(self._collectors):
                if addr not in wanted:
                    self._collectors.pop(addr).client.close()
            for host, port in wanted:
                if (host, port) not in self._collectors:
                    tls = self.config.tls
                    self._collectors[(host, port)] = _Collector(host, port, WireClient(
                        host, port, timeout=self.config.timeout, ssl_context=self._ssl,
                        server_name=(tls.server_name if tls is not None else None) or host,
                        token=self.config.token, sender=f"{self.context.agent_name}/{self.name}",
                        compression=self.config.compression,
                    ))
            return list(self._collectors.values())

    # -- delivery ---------------------------------------------------------------

    def quarantine(self, chunk: Chunk, reason: str) -> Path:
        """Keep a chunk that can never be delivered, durably, where an operator finds it; log and count it."""
        directory = make_state_dir(self.context.data_dir / "quarantine" / self.name)
        meta = chunk.metadata_json()
        path = directory / f"{time.time_ns()}-{hashlib.sha256(meta).hexdigest()[:16]}.chunk"
        write_atomic(path, meta + b"\n" + bytes(chunk.data))
        self.quarantined.inc()
        self.log.error("chunk of source %r stream %r (seq_id %d, %d bytes) cannot be delivered: %s; kept in %s",
                       chunk.source[:80], chunk.stream[:200], chunk.seq_id, len(chunk.data), reason, path)
        return path

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        sendable = []
        for c in chunks:
            problem = c.metadata_error()
            if problem is None:
                sendable.append(c)
            else:
                self.quarantine(c, problem)
        chunks = sendable
        if not chunks:
            return
        collectors = self._refresh()
        if not collectors:
            raise DeliveryError("no collectors configured (collectors_file empty or unreadable)")
        now = time.monotonic()
        healthy = [c for c in collectors if c.cool_until <= now]
        self.healthy.set(len(healthy))
        if not healthy:
            wait = min(c.cool_until for c in collectors) - now
            raise TryLater(f"all {len(collectors)} collectors cooling down", max(wait, 0.05))
        random.shuffle(healthy)
        order = iter(healthy)
        failures: list[_Failed] = []

        def attempt() -> None:
            if self._stopping.is_set():
                raise DeliveryError("sink stopping")
            target = next(order)
            if failures:
                self.failovers.inc()
            try:
                self._send(target, chunks)
            except _Failed as exc:
                failures.append(exc)
                raise

        retrying = Retrying(
            stop=stop_after_attempt(len(healthy)),
            wait=wait_exponential_jitter(multiplier=self.config.retry_initial, max=min(self.config.retry_max, 5.0),
                                         jitter=self.config.retry_initial),
            retry=retry_if_exception_type(_Failed),
            sleep=self._sleep,
        )
        try:
            retrying(attempt)
        except RetryError:
            delays = [f.delay for f in failures if f.delay is not None]
            summary = "; ".join(str(f) for f in failures)
            if failures and len(delays) == len(failures):
                raise TryLater(f"collectors asked to try later: {summary}", min(delays)) from None
            raise DeliveryError(f"no collector took the batch: {summary}") from None

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise DeliveryError("sink stopping")

    def _send(self, target: _Collector, chunks: Sequence[Chunk]) -> None:
        """Deliver to one collector; _Failed with cool-down on any failure.

        The batch goes as frames of at most ``frame_bytes`` (chunks cut after records where
        they are bigger), up to ``frames_in_flight`` of them sent before the first is
        answered: the collector stores one frame while it receives the next.  The batch is
        delivered once every frame was answered OK; a frame answered otherwise is handled
        once the frames behind it are answered (those answered OK are stored, and a retry
        of the batch sends them again, which archive de-duplicates).
        """
        client = target.client
        try:
            if client.conn is None:
                client.connect()
            limit = max(min(self.config.frame_bytes, client.max_frame_size - HEADER_ROOM), 1)
            frames = runs_within([piece for c in chunks for piece in c.cut(limit)], limit)
            sent: deque[Sequence[Chunk]] = deque()
            for frame in frames:
                if len(sent) >= self.config.frames_in_flight:
                    self._answered(target, sent)
                client.send(frame)
                sent.append(frame)
            while sent:
                self._answered(target, sent)
        except RefusedError as exc:
            target.cool_until = time.monotonic() + self.config.cooldown
            self.metrics.errors.inc()
            self.log.error("%s", exc)
            raise _Failed(target.address, str(exc)) from None
        except DeliveryError as exc:
            client.close()
            target.cool_until = time.monotonic() + self.config.cooldown
            self.log.warning("%s; cooling down for %.1fs", exc, self.config.cooldown)
            raise _Failed(target.address, str(exc)) from None

    def _answered(self, target: _Collector, sent: deque[Sequence[Chunk]]) -> None:
        """Read the answer to the oldest frame in ``sent``; anything but OK is handled as for a lone frame."""
        client = target.client
        oldest = sent.popleft()
        first = client.ack(len(oldest))
        if first.ok:
            return
        later = [(g, client.ack(len(g))) for g in sent]  # the connection is quiet again once these are read
        sent.clear()
        for group, ack in [(oldest, first), *later]:
            while ack.status == Status.REFUSED and ack.chunk is not None:
                group = list(group)
                self.quarantine(group.pop(ack.chunk), f"collector {target.address} refused it: {ack.reason}")
                if not group:
                    break
                ack = client.deliver(group)
            if not group or ack.ok:
                continue
            if ack.status == Status.REFUSED:
                target.cool_until = time.monotonic() + self.config.cooldown
                self.metrics.errors.inc()
                self.log.error("collector %s refused the batch: %s", target.address, ack.reason)
                raise _Failed(target.address, f"REFUSED ({ack.reason})")
            if ack.status == Status.TRY_LATER:
                target.cool_until = time.monotonic() + max(ack.delay, 0.05)
                self.metrics.counter("try_later", "Batches a collector answered TRY_LATER").inc()
                raise _Failed(target.address, f"TRY_LATER ({ack.reason})", ack.delay)
            target.cool_until = time.monotonic() + self.config.cooldown
            self.log.warning("collector %s answered ERROR: %s", target.address, ack.reason)
            raise _Failed(target.address, f"ERROR ({ack.reason})")
