"""The ``syslog`` source: RFC 3164 / RFC 5424 messages over TCP (optionally TLS) and UDP.

Each message becomes one record (the message bytes plus a ``\\n``; ``record_ends``
marks the boundaries, so multi-line messages sent with octet counting stay
whole).  Records are grouped per stream — a template over header fields such
as ``syslog:{app}`` — into chunks cut at ``chunk_size``, ``flush_interval``, or ``caught_up_flush``
when the source keeps up with its senders.

Back-pressure: a TCP connection's thread delivers what it read before reading
more, so a full channel stops the reads and the senders slow down.  UDP cannot
be slowed: a receiver thread always drains the socket into a bounded queue;
what does not fit is dropped, counted in ``dropped_messages``/``dropped_bytes``
and logged, never lost silently.  The socket asks for a large ``SO_RCVBUF`` by
default (the kernel's ~208 KiB held ~800 of a 2,000-datagram burst) and is
read in batches, so the kernel itself drops as little as it can.  Messages over ``max_message_size`` are cut,
counted and the chunk flagged ``truncated``.
"""

from __future__ import annotations

import collections
import socket
import string
import threading
import time
from typing import ClassVar

from agent.sources.syslog.framing import (
    FrameDecoder,
    Group,
    Messages,
    parse_header,
    recv_datagrams,
    scan_datagrams,
    scan_tcp,
)
from logflume.chunk import FLAG_TRUNCATED
from logflume.chunking import CAUGHT_UP_FLUSH, OVERFLOW_STREAM_SUFFIX, EventStreams, RecordBlock
from logflume.errors import ChannelClosed, ConfigError, StartupError
from logflume.settings import Duration, HostPort, Int, Optional, Setting, Size, Str
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

STREAM_CACHE_SIZE = 4096
TEMPLATE_FIELDS = ("app", "host", "facility", "severity", "procid", "msgid", "format", "transport", "peer")
_UDP_MAX = 65535
_UDP_BATCH = 512  # datagrams taken off the socket per lock round trip
_UDP_SLOTS = 64  # datagrams per recvmmsg (recv_datagrams); a slot of _UDP_MAX bytes each


class SyslogSource(Source):
    settings: ClassVar[dict[str, Setting]] = {
        "datatype": Setting(Str(), "SysLog", "Datatype set on every chunk"),
        **LISTENER_SETTINGS,
        "tcp": Setting(Optional(HostPort()), None, "Listen for TCP (and TLS, with tls) on HOST:PORT"),
        "udp": Setting(Optional(HostPort()), None, "Listen for UDP datagrams on HOST:PORT"),
        "stream": Setting(Str(), "syslog:{app}",
                          "Stream template; fields: " + ", ".join(TEMPLATE_FIELDS)),
        "chunk_size": Setting(Size(min=1024), "1MiB", "Cut a stream's chunk at this many bytes"),
        "flush_interval": Setting(Duration(), "500ms", "Cut a stream's chunk when its oldest record waited this long"),
        "caught_up_flush": CAUGHT_UP_FLUSH,
        "max_message_size": Setting(Size(min=64), "64KiB", "Longer messages are truncated (and flagged)"),
        "max_streams": Setting(Int(min=1), 1000,
                               "Distinct streams; messages for more go to the stream with every field _other"),
        "udp_queue_size": Setting(Size(min=65536), "16MiB",
                                  "UDP bytes buffered while the channel is full; beyond, datagrams are dropped"),
        "udp_receive_buffer": Setting(Optional(Size(min=4096)), "8MiB",
                                      "SO_RCVBUF asked for the UDP socket (capped by net.core.rmem_max); "
                                      "null keeps the kernel's default"),
    }

    def configure(self) -> None:
        c = self.config
        where = f"sources.{self.name}"
        file = self.context.config_file
        if c.tcp is None and c.udp is None:
            raise ConfigError(file, where, "expected at least one of tcp: HOST:PORT or udp: HOST:PORT")
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(c.stream) if f is not None]
        except ValueError as exc:
            raise ConfigError(file, f"{where}.stream", f"bad template {c.stream!r}: {exc}") from None
        for f in names:
            if f not in TEMPLATE_FIELDS:
                raise ConfigError(file, f"{where}.stream",
                                  f"unknown field {{{f}}}; expected one of: {', '.join(TEMPLATE_FIELDS)}")
        if c.max_message_size + 1 > c.chunk_size:
            raise ConfigError(file, f"{where}.max_message_size", "expected a size smaller than chunk_size")
        if c.tls is not None and c.tcp is None:
            raise ConfigError(file, f"{where}.tcp", "tls needs a tcp listener")
        # Syslog has no authentication of its own: beyond loopback only mutual TLS identifies a sender.
        if c.tcp is not None:
            refuse_exposed(c.tcp[0], authenticated=client_cert_required(c.tls), insecure=c.insecure, file=file,
                           key=f"{where}.tcp", auth="tls with client_ca and require_client_cert")
        if c.udp is not None:
            refuse_exposed(c.udp[0], authenticated=False, insecure=c.insecure, file=file, key=f"{where}.udp",
                           auth="tcp with mutual TLS instead (UDP cannot authenticate)")
        self._overflow = c.stream.format_map(collections.defaultdict(lambda: OVERFLOW_STREAM_SUFFIX))
        self._template = c.stream
        self._header_fields = tuple(f for f in dict.fromkeys(names) if f not in ("transport", "peer"))
        self._stream_cache: dict[tuple[str, ...], str] = {}
        self.dropped_messages = self.metrics.counter("dropped_messages", "UDP messages dropped: channel full")
        self.dropped_bytes = self.metrics.counter("dropped_bytes", "UDP bytes dropped: channel full")
        self.truncated = self.metrics.counter("truncated_messages", "Messages cut at max_message_size")
        self.rejected = self.metrics.counter("rejected_connections", "TCP connections closed at max_connections")
        self.messages = self.metrics.counter("messages_in", "Syslog messages received")
        self.udp_buffer = self.metrics.gauge("udp_receive_buffer_bytes",
                                             "SO_RCVBUF the kernel granted the UDP socket (as getsockopt reports it)")
        self._tcp: TcpServer | None = None
        self._udp_sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self._udp_queue: collections.deque[tuple[list[bytes], str]] = collections.deque()
        self._udp_queued = 0
        self._udp_cond = threading.Condition()
        self._last_drop_log = 0.0
        self._drops_since_log = 0

    # -- config-visible facts ----------------------------------------------
    def reads(self) -> list[str]:
        out = []
        if self.config.tcp is not None:
            out.append("tcp:{}:{}".format(*self.config.tcp))
        if self.config.udp is not None:
            out.append("udp:{}:{}".format(*self.config.udp))
        return out

    # -- lifecycle -----------------------------------------------------------
    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        c = self.config
        self.output = output
        self.stopping.clear()
        self.streams = EventStreams.for_source(self, output.deliver)
        try:
            if c.tcp is not None:
                self._tcp = server_for(self, self, c.tcp, on_refuse=self.rejected.inc)
                self._tcp.start()
            if c.udp is not None:
                self._start_udp()
        except BaseException:
            self.stop()
            raise
        self._spawn(self._flush_loop, "flush")

    def _start_udp(self) -> None:
        host, port = self.config.udp
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        asked = self.config.udp_receive_buffer
        if asked:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, asked)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"source {self.name}: cannot listen on udp {host}:{port}: {exc.strerror or exc}") \
                from None
        # Linux doubles the request (bookkeeping overhead) after capping it at net.core.rmem_max.
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.udp_buffer.set(granted)
        if asked and granted < asked:
            self.log.warning("source %s: asked for a %d-byte UDP receive buffer, the kernel granted %d "
                             "(raise net.core.rmem_max to allow more)", self.name, asked, granted)
        sock.settimeout(0.25)
        self._udp_sock = sock
        self._spawn(self._udp_receive, "udp-recv")
        self._spawn(self._udp_deliver, "udp")

    def _spawn(self, target, what: str) -> None:
        t = threading.Thread(target=self._guard, args=(target,), name=f"source-{self.name}-{what}", daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, target) -> None:
        try:
            target()
        except ChannelClosed:
            pass
        except Exception:
            self.metrics.errors.inc()
            self.log.exception("source %s: thread failed", self.name)

    def stop(self) -> None:
        self.stopping.set()
        with self._udp_cond:
            self._udp_cond.notify_all()
        if self._tcp is not None:
            self._tcp.stop(timeout=5.0)
        if self._udp_sock is not None:
            self._udp_sock.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)
        self._threads.clear()
        streams = getattr(self, "streams", None)
        if streams is not None:
            streams.flush_within(10.0, self.log)

    # -- work ------------------------------------------------------------------
    def _stream_of(self, values: tuple[str, ...], transport: str, peer: str) -> str:
        # Per message or group of messages: a cache keyed by the fields the template uses (formatting
        # and admitting each message's stream was a fifth of the source's time at 100k messages/s).
        key = (transport, peer, *values)
        stream = self._stream_cache.get(key)
        if stream is None:
            fields = dict(zip(self._header_fields, values, strict=True))
            stream = self.streams.admit(self._template.format(transport=transport, peer=peer, **fields),
                                        self._overflow)
            if len(self._stream_cache) >= STREAM_CACHE_SIZE:
                self._stream_cache.clear()
            self._stream_cache[key] = stream
        return stream

    def _accept(self, messages: Messages, transport: str, peer: str) -> None:
        """Messages of one read in: pick their streams and buffer them (may block on a full channel)."""
        if not messages:
            return
        items = []
        nbytes = truncated = 0
        fields = self._header_fields
        for msg, cut in messages:
            header = parse_header(msg)
            stream = self._stream_of(tuple(getattr(header, f) for f in fields), transport, peer)
            nbytes += len(msg) + 1
            if cut:
                truncated += 1
                items.append((stream, msg, (FLAG_TRUNCATED,)))
            else:
                items.append((stream, msg, ()))
        self.messages.inc(len(items))
        self.metrics.bytes_in.inc(nbytes)
        if truncated:
            self.truncated.inc(truncated)
        self.streams.add_many(items, terminator=b"\n")

    def _accept_groups(self, groups: list[Group], messages: int, nbytes: int, transport: str, peer: str) -> None:
        """What :func:`scan_tcp` took from one read: whole groups of records, one stream each."""
        if not messages:
            return
        self.messages.inc(messages)
        self.metrics.bytes_in.inc(nbytes)
        self.streams.add_blocks([(self._stream_of(values, transport, peer), RecordBlock(records, ends))
                                 for values, records, ends in groups])

    def _take_read(self, decoder: FrameDecoder, data: bytearray, n: int, transport: str, peer: str) -> None:
        """One TCP read's ``data[:n]`` in: whole frames through the compiled scanner, the others (a frame
        spanning reads, a message cut at max_message_size) through ``decoder``, in order."""
        if scan_tcp is None:
            self._accept(decoder.feed(data, n), transport, peer)
            return
        i = 0
        while i < n:
            if decoder.idle:
                i, groups, messages, nbytes = scan_tcp(data, i, n, self.config.max_message_size, self._header_fields)
                self._accept_groups(groups, messages, nbytes, transport, peer)
                if i >= n:
                    return
            decoded, i = decoder.feed_frame(data, i, n)
            self._accept(decoded, transport, peer)

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        """One TCP (or TLS) connection, run by the server's thread for it."""
        transport = "tls" if self.config.tls is not None else "tcp"
        peer = conn.peer_host
        decoder = FrameDecoder(self.config.max_message_size)
        buf = bytearray(max(65536, min(self.config.max_message_size, 1 << 20)))
        while True:
            try:
                n = receive(conn, buf, stopping, self.config.idle_timeout)
            except ConnectionClosing:
                n = 0
            if n == 0:
                self._accept(decoder.finish(), transport, peer)
                return
            if n == len(buf):
                self.streams.behind()
            self._take_read(decoder, buf, n, transport, peer)

    def _udp_receive(self) -> None:
        """Drain the socket always; queue up to udp_queue_size bytes, drop (counted) beyond.

        After a blocking read it takes whatever else is waiting without blocking
        (up to _UDP_BATCH datagrams) and queues that batch under one lock.
        """
        sock = self._udp_sock
        assert sock is not None
        if recv_datagrams is not None:
            self._udp_receive_batches(sock)
            return
        buf = bytearray(_UDP_MAX)
        view = memoryview(buf)
        nonblocking = socket.MSG_DONTWAIT
        while not self.stopping.is_set():
            try:
                n, addr = sock.recvfrom_into(buf)
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            batch = [(bytes(view[:n]), addr[0])]
            while len(batch) < _UDP_BATCH:
                try:
                    n, addr = sock.recvfrom_into(buf, 0, nonblocking)
                except (BlockingIOError, TimeoutError):
                    break
                except OSError:
                    if self.stopping.is_set():
                        return
                    raise
                batch.append((bytes(view[:n]), addr[0]))
            if len(batch) == _UDP_BATCH:
                self.streams.behind()
            self._queue_udp([(peer, [data]) for data, peer in batch])

    def _udp_receive_batches(self, sock: socket.socket) -> None:
        """:meth:`_udp_receive` by recvmmsg (``recv_datagrams``): up to _UDP_SLOTS datagrams a system
        call, read with the GIL released, and up to _UDP_BATCH queued at a time."""
        fd = sock.fileno()
        scratch = bytearray(_UDP_SLOTS * _UDP_MAX)  # pages the kernel never writes are never resident
        while not self.stopping.is_set():
            try:
                runs = recv_datagrams(fd, scratch, _UDP_MAX, 250)
                taken = sum(len(ds) for _, ds in runs)
                while runs and taken < _UDP_BATCH and taken % _UDP_SLOTS == 0:  # full reads: more is waiting
                    more = recv_datagrams(fd, scratch, _UDP_MAX, 0)
                    if not more:
                        break
                    runs += more
                    taken += sum(len(ds) for _, ds in more)
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            if not runs:
                continue
            if taken >= _UDP_BATCH:
                self.streams.behind()
            self._queue_udp(runs)

    def _queue_udp(self, runs: list[tuple[str, list[bytes]]]) -> None:
        """Queue runs of one peer's datagrams, up to udp_queue_size bytes; drop (counted) beyond."""
        limit = self.config.udp_queue_size
        with self._udp_cond:
            dropped = dropped_bytes = taken = 0
            for peer, datagrams in runs:
                for data in datagrams:
                    n = len(data)
                    if self._udp_queued + n > limit:
                        dropped += 1
                        dropped_bytes += n
                        continue
                    if self._udp_queue and self._udp_queue[-1][1] == peer:
                        self._udp_queue[-1][0].append(data)
                    else:
                        self._udp_queue.append(([data], peer))
                    self._udp_queued += n
                    taken += 1
            if taken:
                self._udp_cond.notify()
            if dropped:
                self.dropped_messages.inc(dropped)
                self.dropped_bytes.inc(dropped_bytes)
                self._drops_since_log += dropped
                now = time.monotonic()
                if now - self._last_drop_log >= 10:
                    self.log.warning("source %s: channel full, dropped %d UDP message(s) (see dropped_messages)",
                                     self.name, self._drops_since_log)
                    self._last_drop_log = now
                    self._drops_since_log = 0

    def _udp_deliver(self) -> None:
        """Hand everything queued to the streams, one run of one peer's datagrams at a time."""
        while True:
            with self._udp_cond:
                while not self._udp_queue:
                    if self.stopping.is_set():
                        return
                    self._udp_cond.wait(0.25)
                runs = list(self._udp_queue)
                self._udp_queue.clear()
            try:
                for datagrams, peer in runs:
                    self._take_datagrams(datagrams, peer)
            finally:
                with self._udp_cond:
                    self._udp_queued -= sum(len(d) for ds, _ in runs for d in ds)

    def _take_datagrams(self, datagrams: list[bytes], peer: str) -> None:
        """One peer's run of datagrams in, through the compiled scanner where it is built."""
        if scan_datagrams is None:
            self._accept(self._datagram_messages(datagrams), "udp", peer)
            return
        i = 0
        while i < len(datagrams):
            i, groups, messages, nbytes = scan_datagrams(datagrams, i, self.config.max_message_size,
                                                         self._header_fields)
            self._accept_groups(groups, messages, nbytes, "udp", peer)
            if i < len(datagrams):  # longer than max_message_size: cut and flagged here
                self._accept(self._datagram_messages(datagrams[i:i + 1]), "udp", peer)
                i += 1

    def _datagram_messages(self, datagrams: list[bytes]) -> Messages:
        """One message per datagram, its trailing line ends stripped, cut at max_message_size."""
        limit = self.config.max_message_size
        messages: Messages = []
        for data in datagrams:
            msg: bytes | memoryview = data
            while msg and msg[-1] in (10, 13, 0):
                msg = msg[:-1]
            if len(msg) > limit:
                messages.append((memoryview(msg)[:limit], True))
            elif msg:
                messages.append((msg, False))
        return messages

    def _flush_loop(self) -> None:
        self.streams.poll_until(self.stopping)
