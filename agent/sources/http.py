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
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from agent.sources.record_batcher import OVERFLOW_STREAM_SUFFIX, EventStreams, SourceBusy
from logflume.errors import ChannelClosed, ChannelFull, ConfigError, StartupError
from logflume.settings import Duration, Enum, HostPort, Int, ListOf, Optional, Secret, Setting, Size, Str
from logflume.source import Source, SourceOutput

STREAM_MAX = 256
DISCARD_MAX = 64 << 20


class BadRequest(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


class HttpSource(Source):
    settings: ClassVar[dict[str, Setting]] = {
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
        self.datatype = c.datatype or ("JSON" if c.format == "ndjson" else "Raw")
        self.requests = self.metrics.counter("http_requests", "HTTP requests received")
        self.status = {code: self.metrics.counter("http_responses", "HTTP responses by status", status=str(code))
                       for code in (200, 400, 401, 404, 405, 411, 413, 429, 503)}
        self.records_in = self.metrics.counter("records_in", "Records received")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def reads(self) -> list[str]:
        return ["http:{}:{}".format(*self.config.listen)]

    @property
    def address(self) -> tuple[str, int] | None:
        return self._server.server_address[:2] if self._server else None  # type: ignore[return-value]

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        c = self.config
        self.output = output
        # Each request is delivered whole before it is answered: no flush_interval to wait for.
        self.streams = EventStreams.for_source(self, self._deliver, datatype=self.datatype, flush_interval=0.0)
        self._overflow = c.stream_prefix + OVERFLOW_STREAM_SUFFIX
        handler = type("Handler", (_Handler,), {"source": self, "timeout": c.read_timeout})
        host, port = c.listen
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._server = server_cls((host, port), handler)
        except OSError as exc:
            raise StartupError(f"source {self.name}: cannot listen on http {host}:{port}: {exc.strerror or exc}") \
                from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.25},
                                        name=f"source-{self.name}-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

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

    def split_records(self, body: bytes) -> list[memoryview]:
        """Records as views of ``body`` (each with its ``\\n``); NDJSON lines are validated."""
        mv = memoryview(body)
        out: list[memoryview] = []
        ndjson = self.config.format == "ndjson"
        start = 0
        lineno = 0
        n = len(body)
        while start < n:
            nl = body.find(b"\n", start)
            end = n if nl < 0 else nl
            lineno += 1
            line = mv[start:end]
            stripped = bytes(line).strip() if ndjson else None
            if ndjson and not stripped:
                start = end + 1
                continue
            if ndjson:
                try:
                    json.loads(stripped)
                except ValueError as exc:
                    raise BadRequest(400, f"line {lineno}: not JSON: {exc}") from None
            if nl < 0:
                out.append(memoryview(bytes(line) + b"\n"))
            else:
                out.append(mv[start:nl + 1])
            start = end + 1
        return out

    def accept(self, stream: str, records: list[memoryview]) -> None:
        """Commit the records; raises SourceBusy/ChannelFull when the channel stays full."""
        self.records_in.inc(len(records))
        self.metrics.bytes_in.inc(sum(len(r) for r in records))
        self.streams.deliver_now([(stream, records)], lock_timeout=self.config.full_wait)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    source: HttpSource
    protocol_version = "HTTP/1.1"
    server_version = "logflume"
    sys_version = ""

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
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            self._reply(411, {"error": "Content-Length required"})
            return
        size = int(length)
        if size > src.config.max_body_size:
            self.close_connection = True
            self._discard(size)
            self._reply(413, {"error": f"body of {size} bytes over max_body_size ({src.config.max_body_size})"})
            return
        try:
            body = self.rfile.read(size)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if len(body) < size:
            self.close_connection = True
            return
        if not src.authorized(self.headers):
            self._reply(401, {"error": "missing or wrong token"}, {"WWW-Authenticate": "Bearer"})
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
