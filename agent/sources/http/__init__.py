"""The ``http`` source: applications POST NDJSON or plain lines.

``POST /any/path`` with a body of records (one per line; NDJSON lines are
checked to be JSON), optionally ``Content-Encoding: gzip``.  The stream comes
from the URL path or a header.  The answer is sent only after the records were
committed to the channel, so ``200`` means accepted (durably, when the
channel is durable):

* ``200 {"accepted": N}``: committed;
* ``400`` with the reason: malformed body (bad JSON line, bad gzip, no stream header);
* ``401``: missing or wrong token;
* ``411``/``413``: no Content-Length / body over ``max_body_size`` (also after decompression);
* ``429`` with ``Retry-After``: the channel is full (another request is
  already waiting for room for longer than ``full_wait``) -- try again later.

``GET /health`` answers ``200 ok`` for load balancers.

Bodies are cut into lines, and NDJSON lines checked, by the compiled ``_lines.c`` where it was built
(``LOGFLUME_PURE_PYTHON=1`` turns it off); what it does not take goes line by line through orjson and
``json.loads``, which decide.

It runs on the shared :class:`~logflume.wire.server.TcpServer` (TLS,
connection caps, handshake deadline); the token is checked before a byte of
the body is read (also before ``100 Continue``), and a request's headers
(at most ``MAX_HEADER_BYTES``) must arrive within ``read_timeout`` of its first
byte and its body within ``read_timeout`` plus its size at ``MIN_RATE``, so a
trickling client cannot hold a connection for long.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import orjson

from logflume.chunking import OVERFLOW_STREAM_SUFFIX, EventStreams, Record, RecordBlock, SourceBusy
from logflume.errors import ChannelClosed, ChannelFull, ConfigError
from logflume.settings import Duration, Enum, HostPort, Int, ListOf, Optional, Secret, Setting, Size, Str
from logflume.source import Source, SourceOutput
from logflume.wire.connection import MIN_RATE, Connection
from logflume.wire.server import (
    LISTENER_SETTINGS,
    ConnectionClosing,
    TcpServer,
    client_cert_required,
    refuse_exposed,
    server_for,
)

try:
    from agent.sources.http._lines import split_lines
except ImportError:  # built without a C compiler: split_records does it line by line
    split_lines = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":
    split_lines = None

STREAM_MAX = 256
#: A refused body (413) up to this size is read and dropped, so the client sees the answer.
DISCARD_MAX = 64 << 20
#: An unauthenticated body (401) up to this size is read and dropped; a bigger one closes the connection.
UNAUTHORIZED_DISCARD_MAX = 64 << 10
#: Request line plus headers of one request (the standard library alone would allow 100 x 64 KiB).
MAX_HEADER_BYTES = 64 << 10
#: Read-ahead of the request reader.
READ_BUFFER = 8192


class BadRequest(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


class HttpSource(Source):
    settings: ClassVar[dict[str, Setting]] = {
        **{k: v for k, v in LISTENER_SETTINGS.items() if k != "idle_timeout"},  # read_timeout plays that part
        "datatype": Setting(Optional(Str()), None, "Datatype of every chunk (default: JSON for ndjson, Raw for lines)"),
        "listen": Setting(HostPort(), "127.0.0.1:8080", "HOST:PORT to serve HTTP on"),
        "format": Setting(Enum("ndjson", "lines"), "ndjson", "Body format: ndjson (each line checked) or raw lines"),
        "stream_from": Setting(Enum("path", "header"), "path", "Take the stream name from the URL path or a header"),
        "stream_header": Setting(Str(), "X-Logflume-Stream", "Header naming the stream (stream_from: header)"),
        "stream_prefix": Setting(Str(), "http:", "Prefix of every stream name"),
        "tokens": Setting(ListOf(Secret()), [], "Accepted bearer tokens (Authorization: Bearer T); empty: no auth"),
        "max_body_size": Setting(Size(min=1024), "10MiB", "Larger bodies (also after gunzip) get 413"),
        "chunk_size": Setting(Size(min=1024), "1MiB", "Cut chunks at this many bytes"),
        "full_wait": Setting(Duration(), "1s", "Wait this long for a full channel before answering 429"),
        "retry_after": Setting(Int(min=1), 1, "Seconds sent in Retry-After with 429"),
        "read_timeout": Setting(Duration(), "30s", "Drop a client that sends nothing for this long"),
        "max_streams": Setting(Int(min=1), 1000, "Distinct streams; more go to the _other stream"),
    }

    def configure(self) -> None:
        c = self.config
        if c.stream_from == "header" and not c.stream_header.strip():
            raise ConfigError(self.context.config_file, f"sources.{self.name}.stream_header",
                              "expected a header name")
        refuse_exposed(c.listen[0], authenticated=bool(c.tokens) or client_cert_required(c.tls),
                       insecure=c.insecure, file=self.context.config_file, key=f"sources.{self.name}.listen",
                       auth="tokens (or tls with client_ca and require_client_cert)")
        self.datatype = c.datatype or ("JSON" if c.format == "ndjson" else "Raw")
        self.requests = self.metrics.counter("http_requests", "HTTP requests received")
        self.status = {code: self.metrics.counter("http_responses", "HTTP responses by status", status=str(code))
                       for code in (200, 400, 401, 404, 405, 411, 413, 429, 503)}
        self.records_in = self.metrics.counter("records_in", "Records received")
        self._server: TcpServer | None = None

    def reads(self) -> list[str]:
        return ["http:{}:{}".format(*self.config.listen)]

    @property
    def address(self) -> tuple[str, int] | None:
        return self._server.address if self._server else None

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        c = self.config
        self.output = output
        # Each request is delivered whole before it is answered: no flush_interval to wait for.
        self.streams = EventStreams.for_source(self, self._deliver, datatype=self.datatype, flush_interval=0.0)
        self._overflow = c.stream_prefix + OVERFLOW_STREAM_SUFFIX
        self._server = server_for(self, _HttpEndpoint(self), c.listen)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=2.0)
            self._server = None

    def _deliver(self, chunks) -> None:
        self.output.deliver(chunks, timeout=self.config.full_wait)

    # -- request handling (one thread per connection) ----------------------
    def authorized(self, headers) -> bool:
        if not self.config.tokens:
            return True
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        return any(hmac.compare_digest(given, t.encode()) for t in self.config.tokens)

    def stream_of(self, path: str, headers) -> str:
        if self.config.stream_from == "header":
            name = headers.get(self.config.stream_header)
            if not name:
                raise BadRequest(400, f"missing header {self.config.stream_header} naming the stream")
        else:
            name = path.split("?", 1)[0].strip("/") or "default"
        if any(ord(ch) < 32 for ch in name):
            raise BadRequest(400, "stream name has control characters")
        return self.streams.admit(self.config.stream_prefix + name[:STREAM_MAX], self._overflow)

    def decode_body(self, body: bytes, encoding: str) -> bytes:
        limit = self.config.max_body_size
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "x-gzip"):
            raise BadRequest(400, f"unsupported Content-Encoding {encoding!r}; expected gzip or none")
        out = bytearray()
        data = body
        while data:
            d = zlib.decompressobj(wbits=31)
            try:
                out += d.decompress(data, limit + 1 - len(out))
            except zlib.error as exc:
                raise BadRequest(400, f"bad gzip body: {exc}") from None
            if len(out) > limit:
                raise BadRequest(413, f"body over max_body_size ({limit} bytes) after gunzip")
            if not d.eof:
                raise BadRequest(400, "bad gzip body: truncated")
            data = d.unused_data
        return bytes(out)

    def split_records(self, body: bytes) -> RecordBlock | list[memoryview]:
        """Records (each with its ``\\n``) of ``body``; NDJSON lines are validated.

        The compiled splitter takes a body whose every line is strict JSON (or any body, for the
        lines format) at once.  Otherwise each line goes to orjson and, where it refuses, to the
        standard library, so the lines accepted are exactly those orjson or ``json.loads`` accepts
        (NaN, a byte order mark and lone surrogates included) and blank lines are skipped.
        """
        ndjson = self.config.format == "ndjson"
        if split_lines is not None and body:
            data = body if body.endswith(b"\n") else body + b"\n"
            ends = split_lines(data, ndjson)
            if ends is not None:
                return RecordBlock(data, ends)
        mv = memoryview(body)
        out: list[memoryview] = []
        start = 0
        lineno = 0
        n = len(body)
        while start < n:
            nl = body.find(b"\n", start)
            end = n if nl < 0 else nl
            lineno += 1
            line = mv[start:end]
            if ndjson:
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    stripped = bytes(line).strip()
                    if not stripped:
                        start = end + 1
                        continue
                    try:
                        json.loads(stripped)
                    except ValueError as exc:
                        raise BadRequest(400, f"line {lineno}: not JSON: {exc}") from None
                    except RecursionError:  # json.loads recurses per level: a hostile line must not kill the request
                        raise BadRequest(400, f"line {lineno}: nested too deeply") from None
            if nl < 0:
                out.append(memoryview(bytes(line) + b"\n"))
            else:
                out.append(mv[start:nl + 1])
            start = end + 1
        return out

    def accept(self, stream: str, records: RecordBlock | list[Record]) -> None:
        """Commit the records; raises SourceBusy/ChannelFull when the channel stays full."""
        self.records_in.inc(len(records))
        nbytes = len(records.data) if isinstance(records, RecordBlock) else sum(len(r) for r in records)
        self.metrics.bytes_in.inc(nbytes)
        self.streams.deliver_now([(stream, records)], lock_timeout=self.config.full_wait)


class _HttpEndpoint:
    """Runs HTTP/1.1 (the standard library's request parsing) on each connection of the server."""

    def __init__(self, source: HttpSource) -> None:
        self.source = source
        self.name = source.name

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        _Handler(conn.sock, (conn.peer_host, 0), self.source, stopping)


class _RequestReader(io.RawIOBase):
    """The socket as the handler reads it: every recv bounded by ``timeout``, a request by a deadline
    and a byte budget (headers first, then the announced body)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.deadline: float | None = None
        self.budget = MAX_HEADER_BYTES + READ_BUFFER

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        """Between requests: wait up to ``timeout`` for the next one; its headers start the clock."""
        self.deadline = None
        self.budget = MAX_HEADER_BYTES + READ_BUFFER

    def expect_body(self, size: int) -> None:
        self.deadline = time.monotonic() + self.timeout + size / MIN_RATE
        self.budget += size

    def readinto(self, b) -> int:
        if self.budget <= 0:
            raise ConnectionClosing(f"request headers over {MAX_HEADER_BYTES} bytes")
        timeout = self.timeout
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("request not complete within read_timeout")
        self.sock.settimeout(timeout)
        view = memoryview(b)
        n = self.sock.recv_into(view[:min(len(view), self.budget)])
        self.budget -= n
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
        return n


class _SocketWriter(io.RawIOBase):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sock.sendall(b)
        return len(b)


class _Handler(BaseHTTPRequestHandler):
    source: HttpSource
    protocol_version = "HTTP/1.1"
    server_version = "logflume"
    sys_version = ""

    def __init__(self, sock: socket.socket, address: tuple[str, int], source: HttpSource,
                 stopping: threading.Event) -> None:
        self.source = source
        self.stopping = stopping
        super().__init__(sock, address, None)

    def setup(self) -> None:
        self.connection = self.request
        self.reader = _RequestReader(self.request, self.source.config.read_timeout)
        self.rfile = io.BufferedReader(self.reader, READ_BUFFER)
        self.wfile = _SocketWriter(self.request)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and not self.stopping.is_set():
            self.reader.next_request()
            self.handle_one_request()

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: only an authorized client is asked for its body."""
        if not self.source.authorized(self.headers):
            self._unauthorized(0)
            return False
        return super().handle_expect_100()

    def _unauthorized(self, size: int) -> None:
        self.close_connection = True
        if 0 < size <= UNAUTHORIZED_DISCARD_MAX:
            self.reader.expect_body(size)
            self._discard(size)
        self._reply(401, {"error": "missing or wrong token"}, {"WWW-Authenticate": "Bearer"})

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        self.source.log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        counter = self.source.status.get(status)
        if counter is not None:
            counter.inc()

    def _discard(self, size: int) -> None:
        """Read (and drop) a refused body of sane size so the client sees the answer, not a reset."""
        if size > DISCARD_MAX:
            return
        try:
            while size > 0:
                got = self.rfile.read(min(size, 65536))
                if not got:
                    return
                size -= len(got)
        except OSError:
            return

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.split("?", 1)[0] == "/health":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(405, {"error": "use POST to send records"}, {"Allow": "POST"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        src = self.source
        src.requests.inc()
        length = self.headers.get("Content-Length")
        size = int(length) if length is not None and length.strip().isdigit() else 0
        if not src.authorized(self.headers):  # before a byte of the body is read
            self._unauthorized(size)
            return
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            self._reply(411, {"error": "Content-Length required"})
            return
        if size > src.config.max_body_size:
            self.close_connection = True
            self.reader.expect_body(min(size, DISCARD_MAX))
            self._discard(size)
            self._reply(413, {"error": f"body of {size} bytes over max_body_size ({src.config.max_body_size})"})
            return
        self.reader.expect_body(size)
        try:
            body = self.rfile.read(size)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if len(body) < size:
            self.close_connection = True
            return
        try:
            stream = src.stream_of(self.path, self.headers)
            data = src.decode_body(body, self.headers.get("Content-Encoding", ""))
            records = src.split_records(data)
            if records:
                src.accept(stream, records)
        except BadRequest as exc:
            if exc.status == 413:
                self.close_connection = True
            self._reply(exc.status, {"error": str(exc)})
            return
        except (SourceBusy, ChannelFull):
            self._reply(429, {"error": "channel full, retry later"}, {"Retry-After": str(src.config.retry_after)})
            return
        except ChannelClosed:
            self.close_connection = True
            self._reply(503, {"error": "shutting down"})
            return
        self._reply(200, {"accepted": len(records)})
