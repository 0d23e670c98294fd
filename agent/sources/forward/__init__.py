"""The ``forward`` source: receives events from Fluentd / Fluent Bit / fluent-logger clients.

Speaks the Forward protocol v1 over TCP or TLS (see :mod:`agent.sources.forward.protocol`),
with the ``shared_key`` handshake (HELO/PING/PONG) when a key is set.
The tag names the stream (``stream`` template, ``{tag}`` by default); each event
becomes one JSON line (the record plus its time under ``time_key``).

Acks: a message carrying the ``chunk`` option is delivered at once and
answered ``{"ack": chunk}`` only after ``output.deliver`` returned, i.e. after
the channel committed it.  Messages without it are batched per stream and
cut by ``chunk_size``/``flush_interval`` like syslog.  Either way a
connection's thread delivers before it reads on, so a full channel stops the
reads and the client waits (TCP back-pressure).
"""

from __future__ import annotations

import collections
import os
import string
import threading
import time
from typing import ClassVar

import msgpack

from agent.sources.forward.protocol import (
    MAX_PING_SIZE,
    Budget,
    ProtocolError,
    ack,
    check_ping,
    container_budget,
    decode_message,
    event_json,
    helo,
    new_unpacker,
    packed_records,
    pong,
)
from logflume.chunking import CAUGHT_UP_FLUSH, OVERFLOW_STREAM_SUFFIX, EventStreams
from logflume.errors import ChannelClosed, ConfigError
from logflume.settings import Duration, HostPort, Int, Optional, Secret, Setting, Size, Str
from logflume.source import Source, SourceOutput
from logflume.wire.connection import Connection
from logflume.wire.server import (
    LISTENER_SETTINGS,
    ConnectionClosing,
    TcpServer,
    client_cert_required,
    receive,
    refuse_exposed,
    server_for,
)

STREAM_MAX = 256
#: Events converted and buffered at a time while a large message is decoded.
EVENT_BATCH = 1024
#: How long sending an ack or handshake answer may take.
SEND_TIMEOUT = 30.0


class ForwardSource(Source):
    settings: ClassVar[dict[str, Setting]] = {
        **LISTENER_SETTINGS,
        "datatype": Setting(Str(), "JSON", "Datatype set on every chunk"),
        "listen": Setting(HostPort(), "127.0.0.1:24224", "TCP HOST:PORT to listen on"),
        "stream": Setting(Str(), "{tag}", "Stream template; field: {tag}"),
        "time_key": Setting(Optional(Str()), "time", "Add the event time (seconds, float) under this key; null: don't"),
        "chunk_size": Setting(Size(min=1024), "1MiB", "Cut a stream's chunk at this many bytes"),
        "flush_interval": Setting(Duration(), "500ms", "Cut a stream's chunk when its oldest record waited this long"),
        "caught_up_flush": CAUGHT_UP_FLUSH,
        "max_message_size": Setting(Size(min=1024), "6MiB",
                                    "Largest Forward message (after decompression); larger drops the connection"),
        "shared_key": Setting(Optional(Secret()), None,
                              "Require the Forward HELO/PING/PONG handshake with this key (in_forward's shared_key)"),
        "self_hostname": Setting(Optional(Str()), None, "Hostname sent in PONG (default: the agent name)"),
        "max_streams": Setting(Int(min=1), 1000, "Distinct streams; events for more go to the _other stream"),
    }

    def configure(self) -> None:
        c = self.config
        file = self.context.config_file
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(c.stream) if f is not None]
        except ValueError as exc:
            raise ConfigError(file, f"sources.{self.name}.stream", f"bad template {c.stream!r}: {exc}") from None
        if any(f != "tag" for f in names):
            raise ConfigError(file, f"sources.{self.name}.stream", "unknown field; expected only {tag}")
        refuse_exposed(c.listen[0], authenticated=bool(c.shared_key) or client_cert_required(c.tls),
                       insecure=c.insecure, file=file, key=f"sources.{self.name}.listen",
                       auth="shared_key (or tls with client_ca and require_client_cert)")
        self._overflow = c.stream.format_map(collections.defaultdict(lambda: OVERFLOW_STREAM_SUFFIX))
        self.events = self.metrics.counter("events_in", "Events received")
        self.acks = self.metrics.counter("acks_sent", "Acks sent after commit")
        self.protocol_errors = self.metrics.counter("protocol_errors", "Connections dropped for bad input")
        self.rejected = self.metrics.counter("rejected_connections", "Connections closed at max_connections")
        self.auth_failures = self.metrics.counter("auth_failures", "Handshakes refused: missing or wrong shared_key")
        self.stopping = threading.Event()
        self._listener: TcpServer | None = None
        self._flusher: threading.Thread | None = None

    def reads(self) -> list[str]:
        return ["tcp:{}:{}".format(*self.config.listen)]

    @property
    def address(self) -> tuple[str, int] | None:
        return self._listener.address if self._listener else None

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        c = self.config
        self.output = output
        self.stopping.clear()
        self.streams = EventStreams.for_source(self, output.deliver)
        # With a shared_key the server speaks first (HELO); serve() then enforces handshake_timeout itself.
        self._listener = server_for(self, self, c.listen, on_refuse=self.rejected.inc,
                                    wait_first_byte=not c.shared_key)
        self._listener.start()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"source-{self.name}-flush", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._listener is not None:
            self._listener.stop(timeout=5.0)
        if self._flusher is not None:
            self._flusher.join(5)
        streams = getattr(self, "streams", None)
        if streams is not None:
            streams.flush_within(10.0, self.log)

    def _flush_loop(self) -> None:
        self.streams.poll_until(self.stopping)

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        """One connection, run by the server's thread for it: handshake, then messages until EOF."""
        if self.config.shared_key and not self._handshake(conn):
            return
        max_size = self.config.max_message_size
        budget = Budget(container_budget(max_size))
        unpacker = new_unpacker(max_size, budget)
        buf = bytearray(256 * 1024)
        while True:
            n = receive(conn, buf, stopping, self.config.idle_timeout)
            if n == 0:
                return
            if n == len(buf):
                self.streams.behind()
            pending: list = []
            try:
                unpacker.feed(memoryview(buf)[:n])
                for obj in unpacker:
                    self._handle(conn, obj, max_size, budget, pending)
                    budget.used = 0  # the next message starts afresh
                self._buffer(pending)
            except ChannelClosed:
                raise ConnectionClosing("shutting down") from None
            except (ProtocolError, ValueError, TypeError, msgpack.UnpackException) as exc:
                # BufferFull, ExtraData, FormatError, StackError and over-long lengths all land here.
                self._buffer(pending)  # what came before the bad bytes is kept
                self.protocol_errors.inc()
                self.log.warning("source %s: dropping connection from %s: %s: %s",
                                 self.name, conn.peer, type(exc).__name__, exc)
                return

    def _handshake(self, conn: Connection) -> bool:
        """HELO, then a PING of at most MAX_PING_SIZE bytes within handshake_timeout, then PONG."""
        c = self.config
        nonce = os.urandom(16)
        conn.sendall(helo(nonce), timeout=SEND_TIMEOUT)
        deadline = time.monotonic() + c.handshake_timeout
        unpacker = msgpack.Unpacker(max_buffer_size=MAX_PING_SIZE, raw=False, unicode_errors="surrogateescape")
        buf = bytearray(MAX_PING_SIZE)
        ping = None
        try:
            while ping is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProtocolError(f"no PING within handshake_timeout ({c.handshake_timeout:.0f}s)")
                conn.sock.settimeout(left)
                try:
                    n = conn.sock.recv_into(buf)
                except TimeoutError:
                    continue
                if n == 0:
                    return False
                unpacker.feed(memoryview(buf)[:n])
                try:
                    ping = unpacker.unpack()
                except msgpack.OutOfData:
                    continue
        except (ProtocolError, ValueError, msgpack.UnpackException) as exc:
            self.auth_failures.inc()
            self.log.warning("source %s: refusing %s: bad handshake: %s", self.name, conn.peer, exc)
            return False
        reason, salt = check_ping(ping, nonce, c.shared_key)
        hostname = c.self_hostname or self.context.agent_name
        conn.sendall(pong(not reason, reason, hostname, salt, nonce, c.shared_key), timeout=SEND_TIMEOUT)
        if reason:
            self.auth_failures.inc()
            self.log.warning("source %s: refusing %s: %s", self.name, conn.peer, reason)
            return False
        return True

    def _buffer(self, pending: list) -> None:
        if pending:
            self.events.inc(len(pending))
            self.metrics.bytes_in.inc(sum(len(r) for _, r, _ in pending))
            self.streams.add_many(pending)
            pending.clear()

    def _handle(self, conn: Connection, obj, max_size: int, budget: Budget, pending: list) -> None:
        """One message: without ``chunk`` its events join ``pending`` (buffered per read, and every
        EVENT_BATCH events); with it, they are committed first and then acked.  A PackedForward
        message the compiled transcoder takes is handed over as one block of records."""
        msg = decode_message(obj, max_size, budget)
        stream = self.config.stream.format(tag=msg.tag[:STREAM_MAX])
        stream = self.streams.admit(stream, self._overflow)
        time_key = self.config.time_key
        block = packed_records(msg, time_key, budget)
        if block is not None:
            self._buffer(pending)  # keep the order of the connection's events
            self.events.inc(len(block))
            self.metrics.bytes_in.inc(len(block.data))
            if msg.chunk_id is None:
                if block:
                    self.streams.add_blocks([(stream, block)])
                return
            self.streams.deliver_now([(stream, block)])
        elif msg.chunk_id is None:
            for t, record in msg.events:
                pending.append((stream, event_json(t, record, time_key) + b"\n", ()))
                if len(pending) >= EVENT_BATCH:
                    self._buffer(pending)
            return
        else:
            records = [event_json(t, record, time_key) + b"\n" for t, record in msg.events]
            self._buffer(pending)  # keep the order of the connection's events
            self.events.inc(len(records))
            self.metrics.bytes_in.inc(sum(len(r) for r in records))
            self.streams.deliver_now([(stream, records)])
        conn.sendall(ack(msg.chunk_id), timeout=SEND_TIMEOUT)
        self.acks.inc()
