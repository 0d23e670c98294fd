"""The ``forward`` source: receives events from Fluentd / Fluent Bit / fluent-logger clients.

Speaks the Forward protocol v1 over TCP (see :mod:`agent.sources.forward_protocol`).
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
import socket
import string
import threading
from typing import ClassVar

import msgpack

from agent.sources.forward_protocol import ProtocolError, ack, decode_message, event_json, new_unpacker
from agent.sources.record_batcher import OVERFLOW_STREAM_SUFFIX, EventStreams
from agent.sources.tcp_listener import ConnectionClosing, TcpListener, recv_loop
from logflume.errors import ChannelClosed, ConfigError
from logflume.settings import Duration, HostPort, Int, Optional, Setting, Size, Str
from logflume.source import Source, SourceOutput

STREAM_MAX = 256


class ForwardSource(Source):
    settings: ClassVar[dict[str, Setting]] = {
        "datatype": Setting(Str(), "JSON", "Datatype set on every chunk"),
        "listen": Setting(HostPort(), "127.0.0.1:24224", "TCP HOST:PORT to listen on"),
        "stream": Setting(Str(), "{tag}", "Stream template; field: {tag}"),
        "time_key": Setting(Optional(Str()), "time", "Add the event time (seconds, float) under this key; null: don't"),
        "chunk_size": Setting(Size(min=1024), "1MiB", "Cut a stream's chunk at this many bytes"),
        "flush_interval": Setting(Duration(), "500ms", "Cut a stream's chunk when its oldest record waited this long"),
        "max_message_size": Setting(Size(min=1024), "64MiB",
                                    "Largest Forward message (after decompression); larger drops the connection"),
        "max_connections": Setting(Int(min=1), 256, "Connections served at once; more are closed"),
        "idle_timeout": Setting(Duration(), "5m", "Close a connection silent for this long"),
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
        self._overflow = c.stream.format_map(collections.defaultdict(lambda: OVERFLOW_STREAM_SUFFIX))
        self.events = self.metrics.counter("events_in", "Events received")
        self.acks = self.metrics.counter("acks_sent", "Acks sent after commit")
        self.protocol_errors = self.metrics.counter("protocol_errors", "Connections dropped for bad input")
        self.rejected = self.metrics.counter("rejected_connections", "Connections closed at max_connections")
        self.stopping = threading.Event()
        self._listener: TcpListener | None = None
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
        self._listener = TcpListener(c.listen, self._serve, name=self.name, max_connections=c.max_connections,
                                     idle_timeout=c.idle_timeout, on_reject=self.rejected.inc)
        self._listener.start()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"source-{self.name}-flush", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._listener is not None:
            self._listener.stop()
        if self._flusher is not None:
            self._flusher.join(5)
        streams = getattr(self, "streams", None)
        if streams is not None:
            streams.flush_within(10.0, self.log)

    def _flush_loop(self) -> None:
        self.streams.poll_until(self.stopping)

    def _serve(self, conn: socket.socket, peer: str) -> None:
        max_size = self.config.max_message_size
        unpacker = new_unpacker(max_size)
        buf = bytearray(256 * 1024)
        read = recv_loop(conn, buf, self.stopping, self.config.idle_timeout, 0.25)
        while True:
            n = read()
            if n == 0:
                return
            pending: list = []
            try:
                unpacker.feed(memoryview(buf)[:n])
                for obj in unpacker:
                    self._handle(conn, obj, max_size, pending)
                self._buffer(pending)
            except ChannelClosed:
                raise ConnectionClosing("shutting down") from None
            except (ProtocolError, ValueError, msgpack.UnpackException) as exc:
                # BufferFull, ExtraData, FormatError, StackError and over-long lengths all land here.
                self._buffer(pending)  # what came before the bad bytes is kept
                self.protocol_errors.inc()
                self.log.warning("source %s: dropping connection from %s: %s: %s",
                                 self.name, peer, type(exc).__name__, exc)
                return

    def _buffer(self, pending: list) -> None:
        if pending:
            self.events.inc(len(pending))
            self.metrics.bytes_in.inc(sum(len(r) for _, r, _ in pending))
            self.streams.add_many(pending)
            pending.clear()

    def _handle(self, conn: socket.socket, obj, max_size: int, pending: list) -> None:
        """One message: without ``chunk`` its events join ``pending`` (buffered per read);
        with it, they are committed first and then acked."""
        msg = decode_message(obj, max_size)
        stream = self.config.stream.format(tag=msg.tag[:STREAM_MAX])
        stream = self.streams.admit(stream, self._overflow)
        time_key = self.config.time_key
        records = [event_json(t, record, time_key) + b"\n" for t, record in msg.events]
        if msg.chunk_id is None:
            pending.extend((stream, record, ()) for record in records)
            return
        self._buffer(pending)  # keep the order of the connection's events
        self.events.inc(len(records))
        self.metrics.bytes_in.inc(sum(len(r) for r in records))
        self.streams.deliver_now([(stream, records)])
        payload = ack(msg.chunk_id)
        conn.settimeout(30)
        conn.sendall(payload)
        conn.settimeout(0.25)
        self.acks.inc()
